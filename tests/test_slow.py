"""Long runs kept out of CI (`python -m pytest -m slow`): the experiments behind benchmarks/RESULTS.md."""

import json

import pytest

from sbert_nli.cli import main
from sbert_nli.data.sts import read_sts
from sbert_nli.evaluate import evaluate_sts
from sbert_nli.model import SentenceEncoder

pytestmark = pytest.mark.slow


def test_mnr_beats_softmax_at_equal_steps(minilm, data, tmp_path):
    files = [str(data / "nli/normalized/snli_dev.jsonl"), str(data / "nli/normalized/mnli_dev_matched.jsonl")]
    common = ["--model", minilm, "--train", *files, "--max-steps", "150", "--seed", "42", "--no-progress", "-q"]
    assert main(["train", *common, "--loss", "softmax", "--batch-size", "16", "--output", str(tmp_path / "softmax")]) == 0
    assert main(["train", *common, "--loss", "mnr", "--batch-size", "64", "--output", str(tmp_path / "mnr")]) == 0
    sts = read_sts(str(data / "stsbenchmark/sts-test.csv"))
    score = {name: evaluate_sts(SentenceEncoder.load(str(tmp_path / name)), sts)["cosine_spearman"] for name in ("softmax", "mnr")}
    assert score["mnr"] >= score["softmax"]


def test_smoke_preset_learns_for_several_seeds(tmp_path, capsys):
    for seed in (1, 2, 3):
        assert main(["-q", "train", "--preset", "smoke", "--seed", str(seed), "--output", str(tmp_path / str(seed))]) == 0
        assert json.loads((tmp_path / str(seed) / "results.json").read_text())["heldout_accuracy"] >= 0.8
