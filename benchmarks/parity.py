"""Engine parity: the native trainer and the sentence-transformers engine on the same recipe.

Offline all-MiniLM-L6-v2, the local NLI pairs (SNLI dev + MNLI dev-matched) with a fixed 10 %
of premises held out for accuracy, 1 epoch, batch 16, lr 2e-5, seed 42, fp32, softmax loss.
Reports STS benchmark test Spearman, held-out NLI accuracy (and the untrained head's), the final
training loss, wall time and pairs/s of each engine.

    python benchmarks/parity.py [--same-batches] [--also-bf16] [--max-steps N]

``--same-batches`` adds a pair of runs on identical batches (our seeded random sampler feeding
both engines): what remains between those two is the trainers themselves plus dropout draws.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from common import data_dir, minilm_path, parity_recipe, table, write_json


def main() -> None:
    import torch

    from sbert_nli.data.sts import read_sts
    from sbert_nli.engines.st import train_st
    from sbert_nli.evaluate import evaluate_nli, evaluate_sts
    from sbert_nli.losses import SoftmaxLoss
    from sbert_nli.model import SentenceEncoder
    from sbert_nli.prepare import load_training_data
    from sbert_nli.train import train

    parser = argparse.ArgumentParser()
    parser.add_argument("--max-steps", type=int, default=0, help="0 = one full epoch")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--also-bf16", action="store_true", help="add a native bf16 run (the quality of our fast default)")
    parser.add_argument("--same-batches", action="store_true",
                        help="add both engines on identical batches (our seeded random sampler, no length grouping), "
                             "and the native run on them clipping the encoder only, as the library")
    parser.add_argument("--only", action="append", default=[], help="run just this row (its label; repeatable)")
    args = parser.parse_args()
    runs = [("native", train, args.precision, {}), ("sentence-transformers", train_st, args.precision, {})]
    if args.same_batches:
        runs += [("native, random batches", train, args.precision, {"group_by_length": False}),
                 ("sentence-transformers, fed the same batches", train_st, args.precision, {"batch_order": "native"}),
                 ("native, random batches, encoder-only clipping", train, args.precision,
                  {"group_by_length": False, "clip_head": False})]
    if args.also_bf16:
        runs.append(("native", train, "bf16", {}))
    if args.only:
        runs = [r for r in runs if f"{r[0]} {r[2]}" in args.only]
        if not runs:
            parser.error(f"--only matched no row; rows are labelled like 'native, random batches {args.precision}'")
    config = parity_recipe(precision=args.precision, max_steps=args.max_steps)
    sts_test = read_sts(str(data_dir() / "stsbenchmark" / "sts-test.csv"))
    _, heldout = load_training_data(config)
    base = SentenceEncoder.load(minilm_path(), max_seq_length=128)
    torch.manual_seed(42)
    untrained = evaluate_nli(base, SoftmaxLoss(base.dim), heldout)["accuracy"]
    rows = [{"engine": "untrained (base model, seeded head)", "STSb test Spearman": evaluate_sts(base, sts_test)["cosine_spearman"],
             "held-out NLI accuracy": untrained * 100}]
    for engine, runner, precision, variant in runs:
        config.train.precision = precision
        config.train.group_by_length = variant.get("group_by_length", True)
        config.train.clip_head = variant.get("clip_head", True)
        extra = {"batch_order": variant["batch_order"]} if "batch_order" in variant else {}
        with tempfile.TemporaryDirectory() as tmp:
            results = runner(config, tmp + "/out", progress=False, **extra)
            model = SentenceEncoder.load(tmp + "/out")
            losses = [json.loads(line)["loss"] for line in open(tmp + "/out/metrics.jsonl")]
            rows.append({"engine": f"{engine} {precision}", "STSb test Spearman": evaluate_sts(model, sts_test)["cosine_spearman"],
                         "held-out NLI accuracy": results["heldout_accuracy"] * 100, "final loss": losses[-1],
                         "steps": results["steps"], "wall s": results["wall_s"], "pairs/s": results["pairs_per_s"]})
            print(rows[-1], flush=True)
    columns = ["engine", "STSb test Spearman", "held-out NLI accuracy", "final loss", "steps", "wall s", "pairs/s"]
    print(f"\nengine parity, MiniLM, {len(heldout)} held-out pairs, {args.precision}")
    print(table(rows, columns))
    write_json("parity.json", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
