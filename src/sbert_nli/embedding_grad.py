"""The word-embedding gradient, accumulated in place (``train.embedding_grad_buffer``).

A batch of 16 pairs touches a few hundred of the 30,522 vocabulary rows, yet autograd's embedding
backward allocates and zero-fills a dense [vocab, hidden] tensor for every forward chunk (94 MB on
bert-base, 47 MB on MiniLM) and then adds it into ``.grad``. On CPU the fresh allocation also pays a
page fault per 4 KiB page, so this costs as much as several encoder layers (7 % of a MiniLM step,
benchmarks/RESULTS.md). Here the rows a chunk used are ``index_add_``-ed straight into one persistent
``.grad`` buffer, and after each optimiser step only those rows are zeroed again.

The gradient is the same dense tensor the optimiser always saw (rows summed in another order, so
equal to float rounding); AdamW still updates every row. Single process only: DDP watches each
parameter's autograd hook, which this bypasses, so the trainer leaves it off when world size > 1.
"""

from __future__ import annotations

import torch


class _LookupIntoBuffer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids: torch.Tensor, weight: torch.Tensor, owner: EmbeddingGradBuffer) -> torch.Tensor:
        ctx.owner = owner
        ctx.save_for_backward(ids)
        return torch.nn.functional.embedding(ids, weight, owner.padding_idx)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (ids,) = ctx.saved_tensors
        ctx.owner.accumulate(ids, grad_out)
        return None, None, None


class EmbeddingGradBuffer:
    """Install on an ``nn.Embedding`` for the duration of training (a context manager)."""

    def __init__(self, embedding: torch.nn.Embedding):
        self.embedding = embedding
        self.padding_idx = embedding.padding_idx
        weight = embedding.weight
        self.buffer = torch.zeros_like(weight, memory_format=torch.contiguous_format)
        self.touched: list[torch.Tensor] = []

    def __enter__(self) -> EmbeddingGradBuffer:
        embedding, owner = self.embedding, self

        def forward(ids: torch.Tensor) -> torch.Tensor:
            if not (torch.is_grad_enabled() and embedding.weight.requires_grad):
                return torch.nn.functional.embedding(ids, embedding.weight, owner.padding_idx)
            return _LookupIntoBuffer.apply(ids, embedding.weight, owner)

        embedding.forward = forward
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        del self.embedding.forward  # back to the class's forward
        self.embedding.weight.grad = None

    def accumulate(self, ids: torch.Tensor, grad_out: torch.Tensor) -> None:
        flat = ids.reshape(-1)
        rows = grad_out.reshape(-1, grad_out.shape[-1]).to(self.buffer.dtype)
        if self.padding_idx is not None:  # the padding row never receives a gradient (as nn.Embedding)
            keep = flat != self.padding_idx
            flat, rows = flat[keep], rows[keep]
        self.buffer.index_add_(0, flat, rows)
        self.touched.append(flat)
        if self.embedding.weight.grad is not self.buffer:
            self.embedding.weight.grad = self.buffer

    def reset(self) -> None:
        """Zero the rows used since the last reset and make the buffer ``.grad`` again (call after
        ``optimizer.zero_grad``)."""
        if self.touched:
            self.buffer.index_fill_(0, torch.cat(self.touched), 0.0)
            self.touched = []
        self.embedding.weight.grad = self.buffer


def for_transformer(transformer: torch.nn.Module) -> EmbeddingGradBuffer | None:
    """The buffer for a transformer's input embedding, or None where it does not apply (no plain
    ``nn.Embedding``, frozen, sparse/max-norm, or its weight shared with another module: rows added
    there would not be tracked)."""
    embedding = transformer.get_input_embeddings() if hasattr(transformer, "get_input_embeddings") else None
    if type(embedding) is not torch.nn.Embedding or not embedding.weight.requires_grad:
        return None
    if embedding.sparse or embedding.max_norm is not None:
        return None
    uses = sum(1 for _, p in transformer.named_parameters(remove_duplicate=False) if p is embedding.weight)
    return EmbeddingGradBuffer(embedding) if uses == 1 else None
