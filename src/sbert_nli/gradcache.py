"""Gradient caching: the exact gradient of a loss over a large batch at the memory of one chunk.

In-batch-negative losses (MNR) and batch-wide rankings (CoSENT) couple every example of the batch,
so splitting a batch into accumulated micro-batches changes the loss (each micro-batch sees only
its own negatives). GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup", arXiv 2101.06983) separates the two costs:

1. encode every chunk without a graph (only the ``[N, D]`` embeddings are kept), recording the RNG
   state before each chunk;
2. compute the loss on the full embedding matrix and its gradient with respect to the embeddings;
3. re-encode each chunk with a graph, under its recorded RNG state so dropout draws the same masks,
   and backpropagate that chunk's slice of the cached gradient into the encoder.

The encoder gradient is then exactly the gradient of the loss of the whole batch (tested against one
uncached pass, and for dropout against a graph-keeping reference with the same masks). The RNG replay
follows sentence-transformers' ``RandContext`` (``base/losses/gradcache.py``): snapshot the CPU and
CUDA generators, and replay inside ``torch.random.fork_rng`` so the outer random stream is untouched.

Composition: ``loss_of`` may itself gather candidates from other ranks (``distributed.gather_candidates``,
whose backward sums every rank's gradient for this rank's rows), so the cached gradient already holds
the cross-rank terms; ``sync(last)`` lets DDP all-reduce parameter gradients only after the last
chunk's backward (``model.no_sync()`` before it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch


class RngState:
    """The CPU generator's state (and ``device``'s, when it is a CUDA device) at construction.

    ``with state:`` runs its body from that state inside ``torch.random.fork_rng``, so replaying a
    chunk neither depends on nor advances the random stream outside the block."""

    def __init__(self, device: torch.device | None = None):
        self.cpu = torch.get_rng_state()
        self.cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device is not None and device.type == "cuda" else []
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.cuda_devices]
        self._fork = None

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=self.cuda_devices)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu)
        for index, state in zip(self.cuda_devices, self.cuda):
            torch.cuda.set_rng_state(state, index)
        return self

    def __exit__(self, *exc):
        fork, self._fork = self._fork, None
        return fork.__exit__(*exc)


def _device_of(chunk) -> torch.device | None:
    """The device of the first tensor in ``chunk`` (a tensor, or a tuple/list/dict of them)."""
    if isinstance(chunk, torch.Tensor):
        return chunk.device
    values = chunk.values() if isinstance(chunk, dict) else chunk if isinstance(chunk, (tuple, list)) else ()
    for value in values:
        found = _device_of(value)
        if found is not None:
            return found
    return None


def cached_backward(encode: Callable[[object], torch.Tensor], chunks: Sequence, loss_of: Callable[[torch.Tensor], torch.Tensor],
                    backward: Callable[[torch.Tensor], None] | None = None,
                    sync: Callable[[bool], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
    """Backpropagate ``loss_of(cat([encode(c) for c in chunks]))`` into the encoder, one chunk at a time.

    Args:
        encode: chunk -> ``[n_k, D]`` embeddings (float, any autocast dtype); called twice per chunk,
            first under ``torch.no_grad()``, then with a graph under the same RNG state.
        chunks: the batch's inputs in row order (e.g. ``(input_ids, attention_mask)`` pairs); the
            batch's embedding matrix is the concatenation of their embeddings, ``[N, D]``.
        loss_of: ``[N, D]`` embeddings -> scalar loss of the whole batch (it may hold parameters of its
            own, e.g. a head: they receive their gradients directly).
        backward: how to backpropagate the scalar (default ``loss.backward()``); pass e.g.
            ``lambda l: scaler.scale(l * weight).backward()`` for fp16 or an accumulation weight: the
            cached gradient carries that factor into the encoder.
        sync: ``sync(is_last_chunk)`` -> context manager around each chunk's backward (DDP: ``no_sync``
            for all but the last chunk); default none.

    Returns:
        The loss, detached (a 0-dim tensor on the loss's device).
    """
    if not chunks:
        raise ValueError("cached_backward needs at least one chunk")
    states, parts = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RngState(_device_of(chunk)))
            parts.append(encode(chunk))
    sizes = [part.shape[0] for part in parts]
    embeddings = torch.cat(parts).detach().requires_grad_(True)
    del parts
    loss = loss_of(embeddings)
    (backward or torch.Tensor.backward)(loss)
    if embeddings.grad is None:  # the loss does not depend on the embeddings (cannot happen for our losses)
        return loss.detach()
    grads = embeddings.grad.split(sizes)
    for index, (chunk, state, grad) in enumerate(zip(chunks, states, grads)):
        context = sync(index == len(chunks) - 1) if sync is not None else contextlib.nullcontext()
        with state, context:
            encode(chunk).backward(grad)
    return loss.detach()



def peak_allocated_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes that torch held allocated on the CPU while ``fn()`` ran, above what it held before.

    CPU tensors have no ``max_memory_allocated``; the profiler's memory events (one per allocation
    and free, with signed sizes) give it: the running sum's maximum. Used by the GradCache memory
    test and ``benchmarks/gradcache_memory.py``; on CUDA use ``torch.cuda.max_memory_allocated``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        if event.device_type() == 0 or str(event.device_type()).endswith("CPU"):
            current += event.nbytes()
            peak = max(peak, current)
    return peak
