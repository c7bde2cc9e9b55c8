"""GradCache (gradcache.cached_backward): a batch of B*K examples encoded in K chunks gives exactly
the loss, gradients and (after several AdamW steps) weights of one uncached pass over B*K; dropout
masks are replayed exactly in the second pass; peak memory stays near one chunk's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sbert_nli import gradcache
from sbert_nli.data.batching import collate, no_duplicate_batches
from sbert_nli.losses import CoSENTLoss, MultipleNegativesRankingLoss

B, K = 8, 4


@pytest.fixture(scope="module")
def examples(tiny_texts):
    from sbert_nli.data.examples import mnr_examples
    from sbert_nli.data.synthetic import synthetic_nli
    from sbert_nli.model import build_tiny_bert

    enc = build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32, seed=0)
    return mnr_examples(synthetic_nli(600, seed=0), enc.tokenizer, 32)


def _encoder(tiny_texts, dropout: float, rng: str = "torch"):
    """``rng`` "pcg64": the masks of train.fast_dropout (sbert_nli.dropout), seeded from torch's generator."""
    from sbert_nli import dropout as fast_dropout
    from sbert_nli.model import build_tiny_bert

    enc = build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32, seed=0)
    enc = enc.double()  # exact comparisons: float64 leaves only summation-order noise far below 1e-5
    for module in enc.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    if rng == "pcg64":
        assert fast_dropout.enable(enc) > 0
    return enc.train()


def _batches(examples, shape: str, steps: int):
    roles = examples.roles
    with_negative = np.flatnonzero(roles["negative"] >= 0)
    columns = [roles["anchor"][with_negative], roles["positive"][with_negative], roles["negative"][with_negative]]
    batches = no_duplicate_batches(columns, B * K, seed=0, epoch=0)[:steps]
    out = []
    for batch in batches:
        assert len(batch) == B * K
        cols = [c[batch] for c in columns]
        out.append(cols if shape == "triplet" else cols[:2])
    return out


def _step_inputs(examples, cols, n_chunks):
    chunks, positions = collate(examples.store, cols, dedup=True, n_chunks=n_chunks)
    chunks = [(torch.from_numpy(i), torch.from_numpy(m)) for i, m in chunks]
    positions = [torch.from_numpy(p) for p in positions]
    if len(positions) == 2:
        positions.append(torch.zeros(0, dtype=torch.long))
    return chunks, positions


def _train(encoder, examples, batches, cached: bool):
    """Several AdamW steps; returns (losses, first step's gradients, final weights)."""
    loss_fn = MultipleNegativesRankingLoss(20.0)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-3)
    losses, first_grads = [], None
    for cols in batches:
        chunks, positions = _step_inputs(examples, cols, K if cached else 1)
        if cached:
            loss = gradcache.cached_backward(lambda c: encoder(*c), chunks, lambda emb: loss_fn(emb, *positions))
        else:
            emb = torch.cat([encoder(*c) for c in chunks])
            loss = loss_fn(emb, *positions)
            loss.backward()
        losses.append(loss.item())
        if first_grads is None:
            first_grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad()
    return losses, first_grads, {n: p.detach().clone() for n, p in encoder.named_parameters()}


@pytest.mark.parametrize("shape", ["pair", "triplet"])
def test_cached_k_chunks_equals_one_batch_of_b_times_k(tiny_texts, examples, shape):
    batches = _batches(examples, shape, steps=3)
    base = _encoder(tiny_texts, dropout=0.0)
    big = _train(copy.deepcopy(base), examples, batches, cached=False)
    cached = _train(copy.deepcopy(base), examples, batches, cached=True)
    assert np.allclose(big[0], cached[0], atol=1e-5, rtol=0), (big[0], cached[0])
    assert big[1].keys() == cached[1].keys() and len(big[1]) > 10
    for name, grad in big[1].items():
        assert torch.allclose(grad, cached[1][name], atol=1e-5, rtol=0), name
    for name, weight in big[2].items():
        assert torch.allclose(weight, cached[2][name], atol=1e-5, rtol=0), name
    assert any(not torch.equal(w, base.state_dict()[n]) for n, w in big[2].items())  # training moved the weights


def test_plain_accumulation_is_not_the_large_batch(tiny_texts, examples):
    """The bug GradCache fixes: K micro-batches each with only their own negatives give another loss."""
    cols = _batches(examples, "triplet", steps=1)[0]
    enc = _encoder(tiny_texts, 0.0)
    loss_fn = MultipleNegativesRankingLoss(20.0)
    chunks, positions = _step_inputs(examples, cols, 1)
    big = loss_fn(torch.cat([enc(*c) for c in chunks]), *positions).item()
    micro = []
    for k in range(K):
        part = [c[k * B:(k + 1) * B] for c in cols]
        chunks, positions = _step_inputs(examples, part, 1)
        micro.append(loss_fn(torch.cat([enc(*c) for c in chunks]), *positions).item())
    assert big - np.mean(micro) > 0.5  # 4x the candidates: a clearly larger loss (log 4 ~ 1.4 for random init)


def _dropout_outputs(encoder):
    """Record every dropout module's output in call order."""
    seen: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
               for m in encoder.modules() if isinstance(m, torch.nn.Dropout)]
    return seen, handles


@pytest.mark.parametrize("rng", ["torch", "pcg64"])
def test_dropout_masks_are_replayed_exactly(tiny_texts, examples, rng):
    cols = _batches(examples, "triplet", steps=1)[0]
    enc = _encoder(tiny_texts, dropout=0.3, rng=rng)
    chunks, positions = _step_inputs(examples, cols, K)
    seen, handles = _dropout_outputs(enc)
    torch.manual_seed(7)
    gradcache.cached_backward(lambda c: enc(*c), chunks, lambda emb: MultipleNegativesRankingLoss()(emb, *positions))
    for h in handles:
        h.remove()
    half = len(seen) // 2
    first, second = seen[:half], seen[half:]
    assert half > 0 and len(seen) == 2 * half
    for a, b in zip(first, second):
        assert torch.equal(a == 0, b == 0)  # the same mask ...
        assert torch.equal(a, b)  # ... hence the same activations
    assert any(bool((a == 0).any()) for a in first)  # dropout really dropped something


@pytest.mark.parametrize("rng", ["torch", "pcg64"])
@pytest.mark.parametrize("loss_name", ["mnr", "cosent"])
def test_with_dropout_the_gradient_is_that_of_the_masks_drawn(tiny_texts, examples, monkeypatch, loss_name, rng):
    """Reference: the same chunks encoded once with a graph from the same seed (the same masks), one
    backward. Without the RNG replay the cached gradient is wrong, and this test sees it."""
    cols = _batches(examples, "triplet", steps=1)[0]
    chunks, positions = _step_inputs(examples, cols, K)
    if loss_name == "mnr":
        loss_of = lambda emb: MultipleNegativesRankingLoss()(emb, *positions)  # noqa: E731
    else:
        scores = torch.rand(len(positions[0]), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        loss_of = lambda emb: CoSENTLoss()(emb, positions[0], positions[1], scores)  # noqa: E731

    def grads(replay: bool):
        enc = _encoder(tiny_texts, dropout=0.3, rng=rng)
        torch.manual_seed(11)
        if replay is None:
            loss_of(torch.cat([enc(*c) for c in chunks])).backward()
        else:
            if not replay:
                monkeypatch.setattr(gradcache, "RngState", lambda device=None: _NoReplay())
            gradcache.cached_backward(lambda c: enc(*c), chunks, loss_of)
            monkeypatch.undo()
        return torch.cat([p.grad.flatten() for p in enc.parameters() if p.grad is not None])

    reference, cached, unreplayed = grads(None), grads(True), grads(False)
    assert torch.allclose(reference, cached, atol=1e-8, rtol=1e-6)
    assert not torch.allclose(reference, unreplayed, atol=1e-3, rtol=1e-2)


class _NoReplay:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_replay_leaves_the_outer_random_stream_alone():
    torch.manual_seed(0)
    state = gradcache.RngState()
    expected = torch.rand(3)
    after = torch.rand(1)
    torch.manual_seed(0)
    state2 = gradcache.RngState()
    torch.rand(3)
    with state2:
        assert torch.equal(torch.rand(3), expected)  # replays from the snapshot
    assert torch.equal(torch.rand(1), after)  # and the outer stream continues where it was
    del state


def test_loss_scaling_reaches_the_encoder(tiny_texts, examples):
    """``backward`` may scale the loss (accumulation weight, fp16 scaler): the cached gradient carries it."""
    cols = _batches(examples, "pair", steps=1)[0]
    chunks, positions = _step_inputs(examples, cols, K)
    loss_fn = MultipleNegativesRankingLoss()
    grads = []
    for factor in (1.0, 0.25):
        enc = _encoder(tiny_texts, 0.0)
        gradcache.cached_backward(lambda c: enc(*c), chunks, lambda emb: loss_fn(emb, *positions),
                                  backward=lambda loss: (loss * factor).backward())
        grads.append(torch.cat([p.grad.flatten() for p in enc.parameters() if p.grad is not None]))
    assert torch.allclose(grads[1], grads[0] * 0.25, atol=1e-12, rtol=1e-9)


def test_peak_memory_is_near_one_chunk(tiny_texts, examples):
    """Peak bytes torch allocates during one step (profiler memory events): the cached B*K step stays
    close to a B step and well below the uncached B*K step."""
    from sbert_nli.gradcache import peak_allocated_bytes

    cols = _batches(examples, "triplet", steps=1)[0]
    loss_fn = MultipleNegativesRankingLoss()
    enc = _encoder(tiny_texts, 0.0)

    def step(cols_, n_chunks, cached):
        chunks, positions = _step_inputs(examples, cols_, n_chunks)

        def run():
            if cached:
                gradcache.cached_backward(lambda c: enc(*c), chunks, lambda emb: loss_fn(emb, *positions))
            else:
                loss_fn(torch.cat([enc(*c) for c in chunks]), *positions).backward()
            enc.zero_grad(set_to_none=True)
        return peak_allocated_bytes(run)

    small = step([c[:B] for c in cols], 1, cached=False)
    big = step(cols, 1, cached=False)
    cached = step(cols, K, cached=True)
    print("peak bytes: batch B", small, "cached B*K", cached, "uncached B*K", big)
    assert cached < 0.6 * big, (small, cached, big)
    assert cached < 1.6 * small, (small, cached, big)


DDP_SCRIPT = r"""
import contextlib, sys, torch, torch.distributed as dist
sys.path.insert(0, {src!r})
from sbert_nli.distributed import gather_candidates
from sbert_nli.gradcache import cached_backward
from sbert_nli.losses import MultipleNegativesRankingLoss

class Enc(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bag, self.out = torch.nn.EmbeddingBag(60, 8, mode="mean"), torch.nn.Linear(8, 8)
    def forward(self, ids):
        return self.out(torch.tanh(self.bag(ids)))

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
enc, ids = Enc().double(), torch.randint(0, 60, (24, 5))  # the same on both ranks: 8 (anchor, positive, negative) examples
reference = [p.detach().clone() for p in enc.parameters()]
mine = ids.view(3, 8, 5)[:, rank * 4:(rank + 1) * 4].reshape(12, 5)  # this rank's 4 anchors, positives, negatives
roles = [torch.arange(0, 4), torch.arange(4, 8), torch.arange(8, 12)]
model = torch.nn.parallel.DistributedDataParallel(enc)
loss_fn = MultipleNegativesRankingLoss()
chunks = list(mine.split(4))  # 3 chunks per rank, encoded one at a time
loss = cached_backward(model, chunks, lambda emb: loss_fn(emb, *roles, gather=gather_candidates),
                       sync=lambda last: contextlib.nullcontext() if last else model.no_sync())
value = loss.clone()
dist.all_reduce(value)
if rank == 0:  # one process, no cache, the whole batch of 8
    ref_enc = Enc().double()
    with torch.no_grad():
        for p, r in zip(ref_enc.parameters(), reference):
            p.copy_(r)
    ref = loss_fn(ref_enc(ids), torch.arange(0, 8), torch.arange(8, 16), torch.arange(16, 24))
    ref.backward()
    assert abs(value.item() / 2 - ref.item()) < 1e-10, (value.item() / 2, ref.item())
    for p, q in zip(enc.parameters(), ref_enc.parameters()):  # DDP averaged the ranks' gradients
        assert torch.allclose(p.grad, q.grad, atol=1e-10, rtol=0), (p.grad - q.grad).abs().max()
    print("ok", flush=True)
dist.barrier()
dist.destroy_process_group()
"""


def test_cached_under_ddp_with_cross_rank_candidates_equals_one_process(tmp_path):
    """Two ranks x 3 cached chunks, candidates gathered across ranks, DDP syncing after the last chunk:
    the loss and gradients of one uncached process on the whole batch."""
    import os
    import subprocess
    import sys

    src = os.path.join(os.path.dirname(__file__), "..", "src")
    script = tmp_path / "ddp_cache.py"
    script.write_text(DDP_SCRIPT.format(src=os.path.abspath(src)))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ok") == 1
