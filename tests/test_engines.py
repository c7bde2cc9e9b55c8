"""The native trainer against the sentence-transformers engine."""

import json

import numpy as np
import pytest

from sbert_nli.cli import main
from sbert_nli.config import resolve
from sbert_nli.engines.st import train_st
from sbert_nli.train import train

# Differences removed for the step-by-step comparison, each explained:
# - batch order: the library's RandomSampler vs our premise/length-grouped sampler -> the library is
#   fed our sampler's batches, with grouping off (batch_order="native");
# - dropout: the two engines draw dropout masks in a different order (we encode the distinct
#   sentences of a batch in one pass, the library premises then hypotheses) -> dropout 0;
# - gradient clipping: the HF Trainer clips the model's parameters only, not the loss head's; we clip
#   both together by default (SBERT's original fit) -> native clip_head = false. Clipping stays on, at
#   a norm small enough that it scales every step, so the test shows the two clip the same vector.
PARITY = {"model": {"dropout": 0.0, "max_seq_length": 32},
          "data": {"synthetic_pairs": 600, "holdout_fraction": 0.0},
          "train": {"max_steps": 30, "batch_size": 8, "lr": 1e-3, "log_every": 1, "max_grad_norm": 0.05,
                    "clip_head": False,
                    "group_by_length": False, "group_premises": False, "precision": "fp32", "device": "cpu"}}


def _losses(folder):
    return np.array([json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()])


def test_per_step_losses_match_the_library(tmp_path):
    config = resolve("smoke", None, PARITY)
    train(config, tmp_path / "native", progress=False)
    train_st(config, tmp_path / "st", progress=False, batch_order="native")
    native, library = _losses(tmp_path / "native"), _losses(tmp_path / "st")
    assert len(native) == len(library) == 30
    assert np.abs(native[:10] - library[:10]).max() <= 1e-4  # the library logs losses rounded to 4 decimals
    assert np.abs(native - library).max() <= 1e-3
    assert native[-10:].mean() < native[:10].mean() - 0.02  # and they are learning, not both stuck
    # With the head inside the clipped vector (our default) the trajectories part: the test can tell.
    train(resolve("smoke", None, {**PARITY, "train": {**PARITY["train"], "clip_head": True}}), tmp_path / "both",
          progress=False)
    assert np.abs(_losses(tmp_path / "both")[:10] - library[:10]).max() > 1e-3


def test_both_engines_outputs_load_everywhere(tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    from sbert_nli.model import SentenceEncoder

    for engine in ("native", "sentence-transformers"):
        out = tmp_path / engine
        assert main(["-q", "train", "--preset", "smoke", "--engine", engine, "--max-steps", "20",
                     "--set", "data.synthetic_pairs=600", "--output", str(out), "--no-progress"]) == 0
        texts = ["A man plays a guitar.", "A cat sleeps in a bed."]
        assert np.abs(SentenceTransformer(str(out), device="cpu").encode(texts)
                      - SentenceEncoder.load(str(out)).encode(texts)).max() <= 1e-5
        assert main(["predict", str(out), "A man plays a guitar.", "A person makes music.", "--json"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["label"] in ("entailment", "neutral", "contradiction")


def test_st_engine_refuses_a_head_order_it_cannot_express(tmp_path):
    from sbert_nli.errors import SbertNliError

    config = resolve("smoke", None, {"train": {"head_features": ["|u-v|", "u", "v"]}})
    with pytest.raises(SbertNliError, match="needs --engine native"):
        train_st(config, tmp_path / "x", progress=False)
