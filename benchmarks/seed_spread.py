"""Seed spread of the parity recipe: the same engine and settings with another seed. A parity gap
between engines is only meaningful against this spread.

    python benchmarks/seed_spread.py --seeds 43 [--max-steps N] [--precision bf16]
"""

from __future__ import annotations

import argparse
import tempfile

from common import data_dir, parity_recipe, table, write_json


def main() -> None:
    from sbert_nli.data.sts import read_sts
    from sbert_nli.evaluate import evaluate_sts
    from sbert_nli.model import SentenceEncoder
    from sbert_nli.train import train

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="43")
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="fp32: the recipe of the recorded spread; bf16/auto: to check a CPU with native bf16")
    args = parser.parse_args()
    sts_test = read_sts(str(data_dir() / "stsbenchmark" / "sts-test.csv"))
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        config = parity_recipe(seed=seed, precision=args.precision, max_steps=args.max_steps)
        with tempfile.TemporaryDirectory() as tmp:
            results = train(config, tmp + "/out", progress=False)
            rows.append({"engine": f"native {results['precision']}, seed {seed}", "STSb test Spearman":
                         evaluate_sts(SentenceEncoder.load(tmp + "/out"), sts_test)["cosine_spearman"],
                         "held-out NLI accuracy": results["heldout_accuracy"] * 100, "steps": results["steps"]})
    print(table(rows, ["engine", "STSb test Spearman", "held-out NLI accuracy", "steps"]))
    write_json("seed_spread.json", rows)


if __name__ == "__main__":
    main()
