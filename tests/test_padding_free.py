"""Padding-free training (train.padding_free, issue 18): the dense layers run on real tokens only,
attention per sentence. It must be the same function as the padded forward (embeddings, a fixed
batch's loss and every gradient, to float rounding), switch itself off for models it cannot pack,
and leave the saved model exactly as a padded run would."""

import copy
import json
import logging

import numpy as np
import pytest
import torch

from sbert_nli import padding_free
from sbert_nli.model import build_tiny_bert


def _no_dropout(encoder):
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return encoder


def _padded_batch(encoder, texts):
    batch = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    assert not bool(batch["attention_mask"].all())  # really padded
    return batch["input_ids"], batch["attention_mask"]


def _projection(emb):
    # A fixed random direction: not invariant under Normalize (a sum of squares of unit rows is).
    weights = torch.randn(emb.shape, generator=torch.Generator().manual_seed(0))
    return (emb * weights).sum()


def _both_ways(encoder, ids, mask, loss_of=_projection):
    """(embeddings, loss, gradients) padded, then padding-free, of the same weights in train mode;
    asserts the second pass really ran the packed attention (once per layer)."""
    out = []
    for packed in (False, True):
        enc = copy.deepcopy(encoder)
        if packed:
            assert padding_free.enable(enc)
        enc.train()
        calls = []
        real = padding_free.Packing.to_heads
        padding_free.Packing.to_heads = lambda self, x: calls.append(1) or real(self, x)
        try:
            emb = enc(ids, mask)
        finally:
            padding_free.Packing.to_heads = real
        assert len(calls) == (3 * enc.transformer.config.num_hidden_layers if packed else 0)
        loss = loss_of(emb)
        loss.backward()
        out.append((emb.detach(), loss.detach(), {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}))
    return out


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_sqrt_len"])
def test_packed_forward_is_the_padded_function(tiny_texts, pooling):
    base = _no_dropout(build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32))
    base.pooling = pooling
    ids, mask = _padded_batch(base, tiny_texts[:12])
    (e1, l1, g1), (e2, l2, g2) = _both_ways(base, ids, mask)
    assert torch.allclose(e1, e2, atol=1e-5)
    assert set(g1) == set(g2) and len(g1) > 20
    for name in g1:  # includes the word, position and token-type embeddings
        assert torch.allclose(g1[name], g2[name], atol=1e-5, rtol=1e-4), name


def test_padding_free_keeps_the_loss_of_a_fixed_batch(tiny_texts):
    """The softmax objective (u, v, |u-v|) on a fixed NLI-shaped batch: same loss."""
    from sbert_nli.losses import build_loss

    base = _no_dropout(build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32))
    ids, mask = _padded_batch(base, tiny_texts[:16])
    torch.manual_seed(0)
    head = build_loss("softmax", base.dim, ["u", "v", "|u-v|"], 20.0, False, 20.0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    rows = torch.arange(16)

    def loss_of(emb):
        head.zero_grad()
        return head(emb, rows[:8], rows[8:], labels)

    (_, l1, _), (_, l2, _) = _both_ways(base, ids, mask, loss_of)
    assert abs(float(l1) - float(l2)) < 1e-6


def test_minilm_packed_equals_padded_on_real_sentences(minilm, data):
    from sbert_nli.data.sts import read_sts
    from sbert_nli.model import SentenceEncoder

    sts = read_sts(str(data / "stsbenchmark" / "sts-dev.csv"))
    encoder = _no_dropout(SentenceEncoder.load(minilm))
    ids, mask = _padded_batch(encoder, sts.sentence1[:24])
    (e1, _, g1), (e2, _, g2) = _both_ways(encoder, ids, mask)
    assert float((e1 - e2).abs().max()) < 1e-5
    for name in g1:  # atol: the key biases' gradient is 0 in exact arithmetic (softmax shift), ~1e-8 here
        assert float((g1[name] - g2[name]).abs().max()) <= 1e-4 * float(g1[name].abs().max()) + 1e-6, name


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_packed_attention_draws_the_same_attention_dropout(dropout):
    """Attention-probability dropout keeps the padded [B, h, L, L] layout: with the same seed the
    packed attention equals transformers' SDPA attention on the padded batch exactly, dropout on."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    packing = padding_free.Packing(mask)
    q, k, v = (torch.randn(3, 5, 2, 4) for _ in range(3))  # [B, L, h, d]
    module = torch.nn.Module().train()
    module.is_causal = False
    torch.manual_seed(1)
    padded, _ = sdpa_attention_forward(module, *(x.transpose(1, 2) for x in (q, k, v)), packing.key_mask,
                                       dropout=dropout, scaling=0.5)  # [B, L, h, d]
    torch.manual_seed(1)
    packed, _ = padding_free.packed_attention(module, *(packing.unpad(x).unsqueeze(0).transpose(1, 2) for x in (q, k, v)),
                                              None, scaling=0.5, dropout=dropout, packing=packing)
    assert torch.equal(packing.unpad(padded), packed[0]) or torch.allclose(packing.unpad(padded), packed[0], atol=1e-6)


def test_roberta_family_positions_start_after_the_padding_index(tiny_texts):
    """RoBERTa numbers positions from padding_idx + 1: packing must give each token that id."""
    from transformers import RobertaConfig, RobertaModel

    from sbert_nli.model import SentenceEncoder

    tiny = build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tiny.tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=40, pad_token_id=tiny.tokenizer.pad_token_id)
    encoder = _no_dropout(SentenceEncoder(RobertaModel(config, add_pooling_layer=False), tiny.tokenizer, max_seq_length=32))
    ids, mask = _padded_batch(encoder, tiny_texts[:10])
    (e1, _, _), (e2, _, _) = _both_ways(encoder, ids, mask)
    assert torch.allclose(e1, e2, atol=1e-5)


def test_unpackable_models_train_padded(tiny_texts, monkeypatch, caplog):
    """Not packed (and said why): another attention kernel, an unknown model family, or a probe
    batch whose packed output differs (here: BERT given RoBERTa's position offset)."""
    from sbert_nli.model import set_attention

    base = build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32)
    caplog.set_level(logging.INFO, logger="sbert_nli")
    eager = copy.deepcopy(base)
    set_attention(eager.transformer, "eager")
    assert not padding_free.enable(eager) and not eager.padding_free
    assert "attention is 'eager'" in caplog.text
    other = copy.deepcopy(base)
    other.transformer.config.model_type = "mpnet"
    assert not padding_free.enable(other) and "model type 'mpnet'" in caplog.text
    monkeypatch.setitem(padding_free.POSITION_OFFSET, "bert", lambda config: 1)
    wrong = copy.deepcopy(base)
    assert not padding_free.enable(wrong) and not wrong.padding_free
    assert "differ by" in caplog.text
    assert wrong.transformer.config._attn_implementation == "sdpa"  # restored
    monkeypatch.setattr(padding_free, "_probe", lambda encoder: 1 / 0)  # e.g. remote code that cannot be packed
    failing = copy.deepcopy(base)
    assert not padding_free.enable(failing) and "preparing it failed (ZeroDivisionError" in caplog.text
    assert failing.transformer.config._attn_implementation == "sdpa"


def test_token_embeddings_refuses_an_unprepared_model(tiny_texts):
    """Without our attention, packing would let every sentence attend to the whole packed row."""
    base = build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32)
    ids, mask = _padded_batch(base, tiny_texts[:4])
    with pytest.raises(RuntimeError, match="prepared by padding_free.enable"):
        padding_free.token_embeddings(base.transformer, ids, mask)


def test_a_padding_free_run_saves_the_same_kind_of_model(tmp_path, caplog):
    """results.json says it was on; the saved config names no attention of ours, so any
    transformers/sentence-transformers loads the folder as a plain BERT."""
    from sbert_nli.config import resolve
    from sbert_nli.model import SentenceEncoder
    from sbert_nli.train import train

    config = resolve("smoke", None, {"train": {"max_steps": 3, "device": "cpu", "precision": "fp32"},
                                     "data": {"synthetic_pairs": 300}})
    caplog.set_level(logging.INFO, logger="sbert_nli")
    results = train(config, tmp_path / "run", progress=False)
    assert results["padding_free"] is True
    assert "padding-free training: linear layers on real tokens only" in caplog.text
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["padding_free"] is True
    assert padding_free.ATTENTION_NAME not in (tmp_path / "run" / "config.json").read_text()
    model = SentenceEncoder.load(str(tmp_path / "run"))
    assert model.transformer.config._attn_implementation == "sdpa" and not model.padding_free
    emb = model.encode(["a man is playing a guitar.", "a dog runs"])
    assert emb.shape[0] == 2 and np.isfinite(emb).all()
