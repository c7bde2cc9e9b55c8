"""The benchmark scripts' reference runs work in every precision they offer (a benchmark that crashes on
the machines it is meant to measure reports nothing)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_train.py"


def head(source: Path, target: Path, rows: int) -> str:
    target.write_text("".join(source.read_text(encoding="utf-8").splitlines(keepends=True)[:rows]), encoding="utf-8")
    return str(target)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_reference_script_trains_on_cpu_in_each_precision(precision, minilm, data, tmp_path):
    """bf16 on a CPU once failed: transformers refuses bf16 without a GPU unless ``use_cpu`` is set, so
    process_speed.py crashed on every CPU with native bf16 (where the reference picks bf16)."""
    train = head(data / "nli/normalized/snli_dev.jsonl", tmp_path / "train.jsonl", 16)
    sts = head(data / "stsbenchmark/normalized/sts-dev.jsonl", tmp_path / "sts.jsonl", 24)
    done = subprocess.run([sys.executable, str(REFERENCE), "--model", minilm, "--train", train, "--eval-sts", sts,
                           "--max-steps", "2", "--batch-size", "8", "--precision", precision,
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # the CPU path, also on a GPU host
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["precision"] == precision
    assert math.isfinite(result["dev_spearman"]) and -100 <= result["dev_spearman"] <= 100
    assert result["phases"]["training"] > 0
    assert (tmp_path / "out/final/config_sentence_transformers.json").is_file()
