"""Dropout with PCG64 masks (train.fast_dropout, issue 18): torch's inverted dropout with the masks
drawn by numpy's PCG64, seeded from torch's generator. It must draw Bernoulli(1 - p) masks, follow
torch's generator state (resume, GradCache replay), compute exactly what torch's dropout computes
given the masks (a fixed batch's loss and gradients, padded and padding-free), and leave the model
as it found it."""

import copy

import numpy as np
import pytest
import torch

from sbert_nli import dropout, padding_free
from sbert_nli.model import build_tiny_bert


@pytest.mark.parametrize("p", [0.01, 0.1, 0.5])
def test_keep_mask_is_bernoulli_with_the_asked_probability(p):
    torch.manual_seed(0)
    keep = dropout.keep_mask((1000, 2000), p).numpy()
    n = keep.size
    dropped = ~keep
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(dropped.mean() - p) < 6 * sigma
    # Independence of neighbours, including the two 32-bit halves of one 64-bit draw.
    flat = dropped.ravel()
    both = (flat[0::2] & flat[1::2]).mean()
    assert abs(both - p * p) < 6 * np.sqrt(p * p * (1 - p * p) / (n // 2))
    rows = dropped.mean(axis=1)  # no drift along the mask
    assert abs(rows[:500].mean() - rows[500:].mean()) < 6 * sigma * 2


def test_masks_follow_torchs_generator():
    """Same torch seed or restored torch RNG state -> same masks (what a resumed checkpoint and
    GradCache's replay rely on); the next call draws a new mask."""
    torch.manual_seed(3)
    state = torch.get_rng_state()
    a = dropout.keep_mask((64, 48), 0.3)
    b = dropout.keep_mask((64, 48), 0.3)
    torch.set_rng_state(state)
    assert torch.equal(dropout.keep_mask((64, 48), 0.3), a)
    assert not torch.equal(a, b)
    torch.manual_seed(4)
    assert not torch.equal(dropout.keep_mask((64, 48), 0.3), a)


def test_dropout_values_are_torchs():
    """Kept elements are x times the same float 1/(1 - p) torch's dropout multiplies by; dropped ones 0."""
    x = torch.randn(300, 40)
    for p in (0.1, 0.3):
        torch.manual_seed(0)
        y = dropout.dropout(x, p)
        keep = y != 0
        scale = torch.ones(()).div_(1 - p)  # torch: noise.div_(1 - p)
        assert torch.equal(y[keep], x[keep] * scale)
        ref = torch.nn.functional.dropout(x, p, training=True)
        kept = ref != 0
        assert torch.equal(ref[kept], x[kept] * scale)
        assert 0.5 * p < 1 - keep.float().mean() < 1.5 * p


def test_edge_probabilities_and_errors():
    x = torch.randn(5, 4, requires_grad=True)
    assert dropout.dropout(x, 0.0) is x
    zeros = dropout.dropout(x, 1.0)
    zeros.sum().backward()
    assert torch.equal(zeros, torch.zeros_like(x)) and torch.equal(x.grad, torch.zeros_like(x))
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout.dropout(x, 1.5)


def test_enable_and_disable_swap_the_modules_back(tiny_texts):
    enc = build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32)
    originals = [m for m in enc.modules() if type(m) is torch.nn.Dropout]
    n_modules, keys = len(list(enc.modules())), list(enc.state_dict())
    assert dropout.enable(enc) == len(originals) > 0 and dropout.active(enc)
    assert len(list(enc.modules())) == n_modules and list(enc.state_dict()) == keys  # nothing registered
    assert all(m.p == o.p for m, o in zip([m for m in enc.modules() if isinstance(m, dropout.PCG64Dropout)], originals))
    enc.eval()
    x = torch.randn(3, 4)
    assert all(m(x) is x for m in enc.modules() if isinstance(m, dropout.PCG64Dropout))  # eval: identity
    dropout.disable(enc)
    assert not dropout.active(enc)
    assert [m for m in enc.modules() if type(m) is torch.nn.Dropout] == originals
    assert not any(m.training for m in originals)  # the train/eval mode set meanwhile carries over


def _with_dropout(encoder, p=0.3):
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
    return encoder


def _torch_masks(shape, p):
    """keep_mask's contract with torch's own draw: what at::dropout draws for a float tensor."""
    return torch.empty(shape).bernoulli_(1 - p).bool()


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "padding-free"])
def test_the_same_masks_give_torchs_loss_and_gradients(tiny_texts, monkeypatch, packed):
    """With keep_mask drawing exactly what torch's dropout draws, a fixed NLI batch's softmax loss and
    every gradient equal those of the untouched model with torch's dropout (hidden states and, where
    the padding-free attention runs, attention probabilities): only the masks' source differs."""
    from sbert_nli.losses import build_loss

    base = _with_dropout(build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32))
    if packed:
        assert padding_free.enable(base)
    batch = base.tokenizer(tiny_texts[:16], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    head = build_loss("softmax", base.dim, ["u", "v", "|u-v|"], 20.0, False, 20.0)
    labels, rows = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.arange(16)
    out = []
    for fast in (False, True):
        enc, h = copy.deepcopy(base).train(), copy.deepcopy(head)
        shapes = []
        if fast:
            assert dropout.enable(enc) > 0
            monkeypatch.setattr(dropout, "keep_mask", lambda shape, p: shapes.append(len(shape)) or _torch_masks(shape, p))
        torch.manual_seed(5)
        loss = h(enc(batch["input_ids"], batch["attention_mask"]), rows[:8], rows[8:], labels)
        loss.backward()
        if fast:  # attention-probability masks [B, h, L, L] come from keep_mask exactly where packed attention runs
            assert shapes.count(4) == (enc.transformer.config.num_hidden_layers if packed else 0) and 3 in shapes
        out.append((loss.detach(), {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}))
        monkeypatch.undo()
    (l1, g1), (l2, g2) = out
    assert torch.allclose(l1, l2, atol=1e-6, rtol=0)
    assert set(g1) == set(g2) and len(g1) > 20
    for name in g1:
        assert torch.allclose(g1[name], g2[name], atol=1e-6, rtol=1e-5), name
    # ... and the real PCG64 masks are different ones (the stream changed, not the function).
    enc = copy.deepcopy(base).train()
    dropout.enable(enc)
    torch.manual_seed(5)
    loss = head(enc(batch["input_ids"], batch["attention_mask"]), rows[:8], rows[8:], labels)
    assert abs(float(loss.detach()) - float(l1)) > 1e-6


@pytest.mark.parametrize("dtype, scaling", [(torch.float32, 0.5), (torch.float32, None), (torch.bfloat16, None)])
def test_padding_free_attention_uses_pcg64_masks_only_when_enabled(monkeypatch, dtype, scaling):
    """The attention-probability dropout of the packed attention draws from keep_mask when the
    module's dropout is a PCG64Dropout (never otherwise), and equals SDPA's own given SDPA's masks,
    also for bf16 inputs under autocast (SDPA computes in fp32 there, and so must we)."""
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    packing = padding_free.Packing(mask)
    q, k, v = (packing.unpad(torch.randn(3, 5, 2, 4)).unsqueeze(0).transpose(1, 2).to(dtype) for _ in range(3))
    module = torch.nn.Module().train()
    module.dropout = torch.nn.Dropout(0.3)
    calls = []
    monkeypatch.setattr(dropout, "keep_mask", lambda shape, p: calls.append(tuple(shape)) or _torch_masks(shape, p))
    outputs = []
    for fast in (False, True):
        if fast:
            module.dropout = dropout.PCG64Dropout(0.3)
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out, _ = padding_free.packed_attention(module, q, k, v, None, scaling=scaling, dropout=0.3, packing=packing)
        assert calls == ([(3, 2, 5, 5)] if fast else [])  # [B, h, L, L]
        outputs.append(out)
    sdpa, ours = outputs
    assert ours.dtype == sdpa.dtype == dtype
    # bf16: bit for bit (autocast left on inside would give 1.6e-2 here: bf16 softmax and noise).
    assert torch.equal(ours, sdpa) if dtype == torch.bfloat16 else torch.allclose(ours, sdpa, atol=1e-6)


def test_a_run_reports_it_and_saves_torchs_modules(tmp_path):
    from sbert_nli.config import resolve
    from sbert_nli.model import SentenceEncoder
    from sbert_nli.train import train

    for fast in (True, False):
        config = resolve("smoke", None, {"train": {"max_steps": 3, "device": "cpu", "fast_dropout": fast},
                                         "data": {"synthetic_pairs": 300}})
        results = train(config, tmp_path / str(fast), progress=False)
        assert results["fast_dropout"] is fast
        model = SentenceEncoder.load(str(tmp_path / str(fast)))
        assert not dropout.active(model) and any(type(m) is torch.nn.Dropout for m in model.modules())


def test_fast_dropout_is_used_on_cpu_uncompiled_only():
    from sbert_nli.config import TrainConfig
    from sbert_nli.engines.native import fast_dropout_applies

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert fast_dropout_applies(TrainConfig(), cpu)
    assert not fast_dropout_applies(TrainConfig(fast_dropout=False), cpu)
    assert not fast_dropout_applies(TrainConfig(compile=True), cpu)
    assert not fast_dropout_applies(TrainConfig(), gpu)
