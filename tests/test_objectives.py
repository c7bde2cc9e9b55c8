"""Training with every objective end to end (tiny BERT, CPU, fp32, dropout off): gradient accumulation
with MNR/CoSENT equals the K-times larger batch (GradCache); scored pairs train, evaluate, keep the
best dev model and resume exactly; the sentence-transformers engine takes the new objectives."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sbert_nli.cli import main

BASE = ["--model", "builtin:tiny-bert", "--set", "model.dropout=0", "--precision", "fp32", "--device", "cpu",
        "--lr", "1e-3", "--set", "train.log_every=1", "--no-progress"]


@pytest.fixture(scope="module")
def nli_shapes(tmp_path_factory):
    """pairs.jsonl, triplets.jsonl from the built-in synthetic NLI (premise, entailment, contradiction)."""
    from sbert_nli.data.examples import mnr_triplets
    from sbert_nli.data.synthetic import synthetic_nli

    d = synthetic_nli(900, seed=0)
    anchors, positives, negatives = mnr_triplets(d.premise, d.hypothesis, d.label.tolist())
    folder = tmp_path_factory.mktemp("shapes")
    rows = [(a, p, n) for a, p, n in zip(anchors, positives, negatives) if n is not None]
    (folder / "pairs.jsonl").write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p, _ in rows))
    (folder / "triplets.jsonl").write_text(
        "".join(json.dumps({"anchor": a, "positive": p, "negative": n}) + "\n" for a, p, n in rows))
    return folder


@pytest.fixture(scope="module")
def sts_small(data, tmp_path_factory):
    """The first 400 rows of the STS benchmark train file, as released."""
    path = tmp_path_factory.mktemp("sts") / "sts-train.csv"
    path.write_text("\n".join((data / "stsbenchmark" / "sts-train.csv").read_text().split("\n")[:400]) + "\n")
    return path


def _losses(folder):
    return np.array([json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()])


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def _assert_same(a, b, atol=1e-5):
    wa, wb = _weights(a), _weights(b)
    for key in wb:
        assert torch.allclose(wa[key], wb[key], atol=atol, rtol=0), (key, (wa[key] - wb[key]).abs().max())


@pytest.mark.parametrize("shape", ["pairs", "triplets"])
def test_mnr_accumulation_equals_the_larger_batch(tmp_path, nli_shapes, shape):
    """--batch-size 8 --grad-accum 4 gives the update of --batch-size 32: every example of the 32 is a
    negative for every anchor (before GradCache each micro-batch of 8 had only its own)."""
    args = [*BASE, "--train", str(nli_shapes / f"{shape}.jsonl"), "--loss", "mnr", "--max-steps", "6"]
    assert main(["-q", "train", *args, "--batch-size", "32", "--output", str(tmp_path / "big")]) == 0
    assert main(["-q", "train", *args, "--batch-size", "8", "--grad-accum", "4", "--output", str(tmp_path / "acc")]) == 0
    big, acc = _losses(tmp_path / "big"), _losses(tmp_path / "acc")
    assert len(big) == 6 and np.abs(big - acc).max() <= 1e-5, (big, acc)
    assert big[0] > np.log(16)  # 32 candidates (plus hard negatives) at random init: the loss of the big batch
    _assert_same(tmp_path / "acc", tmp_path / "big")


def test_cosent_accumulation_equals_the_larger_batch(tmp_path, sts_small):
    """CoSENT ranks every pair of the batch: accumulation must not split the ranking either."""
    args = [*BASE, "--train", str(sts_small), "--loss", "cosent", "--max-steps", "4"]
    assert main(["-q", "train", *args, "--batch-size", "32", "--output", str(tmp_path / "big")]) == 0
    assert main(["-q", "train", *args, "--batch-size", "8", "--grad-accum", "4", "--output", str(tmp_path / "acc")]) == 0
    assert np.abs(_losses(tmp_path / "big") - _losses(tmp_path / "acc")).max() <= 1e-5
    _assert_same(tmp_path / "acc", tmp_path / "big")


@pytest.mark.parametrize("loss", ["cosine", "cosent"])
def test_scored_pairs_train_evaluate_keep_best_and_resume_exactly(tmp_path, sts_small, loss):
    args = [*BASE, "--train", str(sts_small), "--loss", loss, "--max-steps", "12", "--batch-size", "16",
            "--eval-sts", str(sts_small), "--eval-every", "4", "--save-every", "6"]
    full = tmp_path / "full"
    assert main(["-q", "train", *args, "--output", str(full)]) == 0
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    dev = {r["step"]: r["dev_spearman"] for r in records if "dev_spearman" in r}
    assert sorted(dev) == [4, 8, 12]
    results = json.loads((full / "results.json").read_text())
    assert results["dev_spearman"] == pytest.approx(max(dev.values()), abs=1e-6)  # the best dev model is the one kept
    assert _losses(full)[-3:].mean() < _losses(full)[:3].mean()  # it learns
    card = (full / "README.md").read_text()
    assert "scored pairs (pair-score)" in card and "normalised to 0-1" in card
    # resume from the step-6 checkpoint of a copy: the same weights as the uninterrupted run
    copy = tmp_path / "copy"
    shutil.copytree(full, copy)
    for f in ("model.safetensors", "results.json"):
        (copy / f).unlink()
    assert main(["-q", "train", *args, "--output", str(copy), "--resume", str(copy / "checkpoints" / "step-00000006")]) == 0
    _assert_same(copy, full, atol=1e-6)
    assert [r["step"] for r in map(json.loads, (copy / "metrics.jsonl").read_text().splitlines())] == list(range(1, 13))


def test_library_engine_takes_scored_pairs_step_by_step(tmp_path, sts_small):
    """The same per-step cosine-regression losses as the library's CosineSimilarityLoss, on our batches."""
    from sbert_nli.config import resolve
    from sbert_nli.engines.st import train_st
    from sbert_nli.prepare import prepare_data_and_model  # noqa: F401  (both engines share data preparation)

    overrides = {"model": {"name": "builtin:tiny-bert", "dropout": 0.0, "max_seq_length": 32},
                 "data": {"train": [str(sts_small)]},
                 "train": {"loss": "cosine", "max_steps": 12, "batch_size": 16, "lr": 1e-3, "log_every": 1,
                           "max_grad_norm": 0.05, "clip_head": False, "group_by_length": False,
                           "precision": "fp32", "device": "cpu"}}
    config = resolve(None, None, overrides)
    assert main(["-q", "train", "--config", _write_config(tmp_path, config), "--output", str(tmp_path / "native")]) == 0
    train_st(config, tmp_path / "st", progress=False, batch_order="native")
    native, library = _losses(tmp_path / "native"), _losses(tmp_path / "st")
    assert len(native) == len(library) == 12
    assert np.abs(native - library).max() <= 2e-4, (native, library)


def _write_config(tmp_path, config) -> str:
    from sbert_nli.config import to_toml

    path = tmp_path / "config.toml"
    path.write_text(to_toml(config.to_dict()))
    return str(path)


def test_library_engine_refuses_accumulated_cosent(tmp_path, sts_small, capsys):
    code = main(["-q", "train", *BASE, "--train", str(sts_small), "--loss", "cosent", "--engine", "sentence-transformers",
                 "--grad-accum", "2", "--output", str(tmp_path / "x")])
    assert code == 2 and "no cached CoSENT" in capsys.readouterr().err
