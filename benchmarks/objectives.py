"""Quality checks of the objectives on real data with the offline all-MiniLM-L6-v2 (base: 82.03 STSb test).

    python benchmarks/objectives.py stage2 [--max-steps N]   # SBERT stage 2 (cosine regression) and its CoSENT variant,
                                                      # native and sentence-transformers engines, 1 epoch
    python benchmarks/objectives.py mnr-cached [--examples N] [--lr-scaling none sqrt linear]
                                                      # MNR on NLI: batch 32 vs cached 256 = 32 x 8, same examples

Every run goes through the command line exactly as a user types it (printed before it runs); each
model is then scored on the STS benchmark test split with `sbert-nli evaluate`. Results print as a
Markdown table (STSb test cosine Spearman x 100) and are stored in benchmarks/out/objectives-*.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import OUT, data_dir, minilm_path, nli_files


def run(argv: list[str]) -> float:
    print("$ sbert-nli " + " ".join(argv), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sbert_nli", "-q", *argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def sts_test(model: str) -> float:
    out = OUT / f"objectives-eval-{Path(model).name}.json"
    run(["evaluate", model, "--sts", str(data_dir() / "stsbenchmark" / "sts-test.csv"), "--json", str(out),
         "--device", "cpu"])
    metrics = json.loads(out.read_text())
    return float(next(iter(metrics["sts"].values()))["cosine_spearman"])


def stage2(epochs: int, presets: list[str], max_steps: int) -> list[dict]:
    sts = data_dir() / "stsbenchmark"
    rows = []
    for preset in presets:
        for engine in ("native", "sentence-transformers"):
            folder = OUT / f"objectives-{preset}-{engine}"
            seconds = run(["train", "--preset", preset, "--model", minilm_path(), "--train", str(sts / "sts-train.csv"),
                           "--eval-sts", str(sts / "sts-dev.csv"), "--epochs", str(epochs), "--engine", engine,
                           # the preset as written: dev every 100 steps, best model kept (both engines)
                           "--max-steps", str(max_steps),
                           "--device", "cpu", "--output", str(folder), "--overwrite", "--no-progress"])
            results = json.loads((folder / "results.json").read_text())
            rows.append({"run": f"{preset} ({engine})", "stsb_test": sts_test(str(folder)),
                         "dev": results.get("dev_spearman"), "steps": results.get("steps"), "seconds": seconds})
    return rows


def mnr_cached(seed: int, examples: int, lr_scaling: list[str]) -> list[dict]:
    """Batch 32 at lr 2e-5 against the cached batch of 256 (8x fewer optimiser steps on the same
    examples) at lr 2e-5 scaled by each rule in ``lr_scaling``: none, sqrt (x sqrt 8, Krizhevsky 2014;
    Hoffer et al. 2017) or linear (x 8, Goyal et al. 2017)."""
    factors = {"none": 1.0, "sqrt": 8 ** 0.5, "linear": 8.0}
    plan = [("batch 32", 32, 1, 2e-5)] + [(f"batch 256 cached = 32 x 8, lr {rule} ({2e-5 * factors[rule]:.2g})", 32, 8,
                                          2e-5 * factors[rule]) for rule in lr_scaling]
    rows = []
    for name, batch, accum, lr in plan:
        folder = OUT / f"objectives-mnr-{batch}x{accum}-lr{lr:.2g}"
        seconds = run(["train", "--model", minilm_path(), "--train", *nli_files(), "--loss", "mnr", "--lr", f"{lr:.6g}",
                       "--batch-size", str(batch), "--grad-accum", str(accum), "--epochs", "1", "--seed", str(seed),
                       "--max-steps", str(examples // (batch * accum) if examples else 0),
                       "--device", "cpu", "--output", str(folder), "--overwrite", "--no-progress"])
        results = json.loads((folder / "results.json").read_text())
        rows.append({"run": name, "stsb_test": sts_test(str(folder)), "steps": results.get("steps"),
                     "examples": results.get("examples"), "seconds": seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["stage2", "mnr-cached"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--presets", nargs="+", default=["sbert-stage2", "sbert-stage2-cosent"])
    parser.add_argument("--max-steps", type=int, default=0, help="stage2: stop after N steps (0 = the epochs)")
    parser.add_argument("--examples", type=int, default=0, help="mnr-cached: train on N examples (0 = one epoch)")
    parser.add_argument("--lr-scaling", nargs="+", default=["none", "sqrt", "linear"], choices=["none", "sqrt", "linear"],
                        help="mnr-cached: learning-rate rules for the 8x larger batch")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = [{"run": "all-MiniLM-L6-v2 (base)", "stsb_test": sts_test(minilm_path())}]
    rows += stage2(args.epochs, args.presets, args.max_steps) if args.what == "stage2" else mnr_cached(args.seed, args.examples, args.lr_scaling)
    name = args.what if args.what != "stage2" else "-".join(["stage2", *args.presets])
    (OUT / f"objectives-{name}.json").write_text(json.dumps(rows, indent=2))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.2f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
