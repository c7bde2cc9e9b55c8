"""Dev evaluation and best-model keeping in the sentence-transformers engine: the Trainer's own
eval_strategy / load_best_model_at_end, driven by train.eval_every / keep_best, reporting the native
engine's dev number at the native engine's steps. Every test here failed before (the engine refused
--eval-every)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.torch import load_file

from sbert_nli.cli import main

ST = ["--engine", "sentence-transformers", "--device", "cpu", "--precision", "fp32", "--no-progress"]
SMALL = ["--preset", "smoke", "--set", "data.synthetic_pairs=900", "--batch-size", "8", *ST]


@pytest.fixture(scope="module")
def sts_files(data, tmp_path_factory):
    """The first 400 rows of STS benchmark train and 200 of dev, as released."""
    folder = tmp_path_factory.mktemp("sts")
    for name, rows in (("sts-train.csv", 400), ("sts-dev.csv", 200)):
        lines = (data / "stsbenchmark" / name).read_text(encoding="utf-8").split("\n")[:rows]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return SimpleNamespace(train=folder / "sts-train.csv", dev=folder / "sts-dev.csv")


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _dev(folder) -> dict[int, float]:
    return {r["step"]: r["dev_spearman"] for r in _records(folder) if "dev_spearman" in r}


def _native_dev_number(folder, sts_path) -> float:
    """The native engine's own dev evaluation (``engines.native.evaluate_dev``) of a saved model."""
    import torch

    from sbert_nli.data.sts import read_sts
    from sbert_nli.engines.native import evaluate_dev
    from sbert_nli.model import SentenceEncoder

    run = SimpleNamespace(encoder=SentenceEncoder.load(str(folder)), sts_dev=read_sts(str(sts_path)),
                          device=torch.device("cpu"), precision="fp32")
    return evaluate_dev(run)


def test_dev_evaluation_runs_on_the_native_cadence(sts_files, tmp_path):
    """The same steps as the native engine (test_loop_holes): every eval_every and the last."""
    out = tmp_path / "st"
    assert main(["-q", "train", *SMALL, "--max-steps", "10", "--set", "train.log_every=4", "--eval-every", "3",
                 "--eval-sts", str(sts_files.dev), "--output", str(out)]) == 0
    records = _records(out)
    assert [r["step"] for r in records if "dev_spearman" in r] == [3, 6, 9, 10]
    assert [r["step"] for r in records if "loss" in r] == [4, 8]  # the library logs the loss every log_every only
    assert all(isinstance(r["dev_spearman"], float) for r in records if "dev_spearman" in r)
    assert not list(out.rglob("checkpoint-*"))  # the Trainer's checkpoints stay in its temporary folder


def test_the_saved_model_is_the_best_dev_checkpoint_not_the_last(minilm, sts_files, tmp_path):
    """MiniLM (dev ~80) trained at lr 1e-3 on synthetic NLI loses its STS quality step after step: the
    best dev model is an early one, and that one (encoder and softmax head) is saved."""
    args = [*SMALL, "--model", minilm, "--lr", "1e-3", "--max-steps", "6", "--eval-every", "2",
            "--eval-sts", str(sts_files.dev)]
    best, last = tmp_path / "best", tmp_path / "last"
    assert main(["-q", "train", *args, "--output", str(best)]) == 0
    assert main(["-q", "train", *args, "--set", "train.keep_best=false", "--output", str(last)]) == 0
    dev = _dev(best)
    assert sorted(dev) == [2, 4, 6] and dev == pytest.approx(_dev(last), abs=1e-9)  # same run up to the end
    best_step = max(dev, key=dev.get)
    assert best_step != 6 and dev[best_step] > dev[6] + 1.0, dev  # the case really has best != last
    results = json.loads((best / "results.json").read_text())
    assert results["dev_spearman"] == pytest.approx(dev[best_step], abs=1e-6)
    assert _native_dev_number(best, sts_files.dev) == pytest.approx(dev[best_step], abs=1e-6)
    assert _native_dev_number(last, sts_files.dev) == pytest.approx(dev[6], abs=1e-6)
    # The head comes from the best step too (the library's checkpoints do not hold it): not the last one.
    head_best, head_last = load_file(str(best / "nli_head/head.safetensors")), load_file(str(last / "nli_head/head.safetensors"))
    assert any(not np.allclose(head_best[k].numpy(), head_last[k].numpy()) for k in head_best)


@pytest.mark.parametrize("loss", ["mnr", "cosine", "cosent"])
def test_every_objective_evaluates_and_keeps_the_best(sts_files, tmp_path, loss):
    train = [] if loss == "mnr" else ["--train", str(sts_files.train)]
    out = tmp_path / loss
    assert main(["-q", "train", *SMALL, *train, "--loss", loss, "--max-steps", "5", "--eval-every", "2",
                 "--eval-sts", str(sts_files.dev), "--output", str(out)]) == 0
    dev = _dev(out)
    assert sorted(dev) == [2, 4, 5]
    results = json.loads((out / "results.json").read_text())
    assert results["dev_spearman"] == pytest.approx(max(dev.values()), abs=1e-6)
    assert _native_dev_number(out, sts_files.dev) == pytest.approx(max(dev.values()), abs=1e-6)


@pytest.mark.parametrize("preset", ["sbert-stage2", "sbert-stage2-cosent"])
def test_stage2_presets_run_on_the_library_engine_as_written(sts_files, tmp_path, preset):
    """eval_every = 100 and keep_best = true from the preset, no --eval-every 0 needed."""
    out = tmp_path / preset
    assert main(["-q", "train", "--preset", preset, "--model", "builtin:tiny-bert", "--set", "model.max_seq_length=32",
                 "--train", str(sts_files.train), "--eval-sts", str(sts_files.dev), "--max-steps", "4", *ST,
                 "--output", str(out)]) == 0
    dev = _dev(out)
    assert list(dev) == [4]  # 100 steps apart, and the last step
    assert json.loads((out / "results.json").read_text())["dev_spearman"] == pytest.approx(dev[4], abs=1e-6)


def test_the_library_engine_reports_the_native_engines_dev_number(sts_files, tmp_path):
    """Without keep_best the saved model is the last step's: the number the library engine logged for
    it equals the native engine's evaluation of the same weights (and the library's own
    EmbeddingSimilarityEvaluator agrees: same similarity, same Spearman)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from sbert_nli.data.sts import read_sts

    out = tmp_path / "st"
    assert main(["-q", "train", *SMALL, "--max-steps", "4", "--eval-every", "2", "--set", "train.keep_best=false",
                 "--eval-sts", str(sts_files.dev), "--output", str(out)]) == 0
    dev = _dev(out)
    assert sorted(dev) == [2, 4]
    assert _native_dev_number(out, sts_files.dev) == pytest.approx(dev[4], abs=1e-6)
    sts = read_sts(str(sts_files.dev))
    library = EmbeddingSimilarityEvaluator(sts.sentence1, sts.sentence2, list(sts.score), similarity_fn_names=["cosine"])
    # Another implementation (its own batching and cosine in float32): two similarities within float
    # rounding of each other can swap ranks, so agreement is to 1e-4 on the x100 scale, not 1e-6
    # (measured 1.5e-5 apart in fp32 on this CPU).
    assert 100 * library(SentenceTransformer(str(out), device="cpu"))["spearman_cosine"] == pytest.approx(dev[4], abs=1e-4)


def test_an_undefined_dev_score_is_null_and_never_kept_as_best(sts_files, tmp_path):
    """sentence2 := sentence1 makes every cosine 1: no Spearman. As in the native engine, null in the
    log and results, training goes on, and the last model is saved (NaN never compares greater)."""
    rows = sts_files.dev.read_text(encoding="utf-8").splitlines()[:50]
    dev = tmp_path / "same.csv"
    dev.write_text("".join("\t".join(f[:5] + [f[5], f[5]]) + "\n" for f in (r.split("\t") for r in rows)),
                   encoding="utf-8")
    out = tmp_path / "st"
    assert main(["-q", "train", *SMALL, "--max-steps", "4", "--eval-every", "2", "--eval-sts", str(dev),
                 "--output", str(out)]) == 0
    assert _dev(out) == {2: None, 4: None}
    assert json.loads((out / "results.json").read_text())["dev_spearman"] is None
    assert (out / "model.safetensors").is_file()
