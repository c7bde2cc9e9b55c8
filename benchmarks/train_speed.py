"""Training throughput: the native trainer against the sentence-transformers Trainer, side by side.

Same model, data (SNLI dev + MNLI dev-matched), batch size and number of optimiser steps; medians of
interleaved repeats. Rows: the library in fp32 and bf16, our defaults, and our defaults with one
speed switch off at a time (each switch's separate effect). Utilisation = model FLOP/s on real
(non-padding) tokens over the measured matmul peak of the precision.

    python benchmarks/train_speed.py --model minilm --steps 40 --repeats 3
    python benchmarks/train_speed.py --model bert-base --steps 10 --repeats 3 --quick
"""

from __future__ import annotations

import argparse
import sys

from common import interleaved, matmul_peak, median, model_path, nli_files, table, write_json


def flops_per_token(model_dir: str, seq_len: float) -> float:
    """Training FLOPs per token of a BERT encoder: 3 x (2 x dense params + attention scores)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    d, layers, ff = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    dense = layers * (4 * d * d + 2 * d * ff)
    attention = layers * 2 * seq_len * d  # QK^T and AV per token
    return 3 * (2 * dense + 2 * attention)


def run(model: str, engine: str, steps: int, batch: int, overrides: dict) -> dict:
    from sbert_nli.config import resolve
    from sbert_nli.engines.st import train_st
    from sbert_nli.train import train

    import tempfile

    config = resolve(None, None, {
        "model": {"name": model, "max_seq_length": 128},
        "data": {"train": nli_files()},
        "train": {"max_steps": steps, "batch_size": batch, "log_every": steps, "device": "cpu", **overrides},
    })
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "st":
            return train_st(config, tmp + "/o", progress=False)
        return train(config, tmp + "/o", progress=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only the library's best, our defaults and the two memory switches")
    args = parser.parse_args()
    model = model_path(args.model)
    # As the CLI does: glibc's host-memory switch is process-wide and one-way (host_memory.py), so it is
    # on for every row here; its own effect needs separate processes (RESULTS.md).
    from sbert_nli.host_memory import keep_freed_memory

    keep_freed_memory()
    ours = {"precision": "bf16"}  # the defaults on this CPU (precision auto = bf16)
    off = {"group_by_length": False, "group_premises": False, "dedup_batch": False, "split_padding_cost": 0,
           "fused_adamw": False, "embedding_grad_buffer": False, "reuse_host_memory": False}
    variants = {
        "sentence-transformers fp32": ("st", {"precision": "fp32"}),
        "sentence-transformers bf16": ("st", {"precision": "bf16"}),
        "native (defaults, bf16)": ("native", ours),
        "native fp32": ("native", {**ours, "precision": "fp32"}),
        "native, group_by_length off": ("native", {**ours, "group_by_length": False}),
        "native, group_premises on (faster, costs quality)": ("native", {**ours, "group_premises": True}),
        "native, dedup_batch off": ("native", {**ours, "dedup_batch": False}),
        "native, split_padding off": ("native", {**ours, "split_padding_cost": 0}),
        "native, fused_adamw off": ("native", {**ours, "fused_adamw": False}),
        "native, embedding_grad_buffer off": ("native", {**ours, "embedding_grad_buffer": False}),
        "native, every switch off (plain loop, bf16)": ("native", {**ours, **off}),
    }
    if args.quick:  # the headline ratio, and the two per-step memory switches at this model size
        keep = ("sentence-transformers bf16", "native (defaults, bf16)", "native, embedding_grad_buffer off")
        variants = {name: variants[name] for name in keep}
    raw = interleaved({name: (lambda e=e, o=o: run(model, e, args.steps, args.batch_size, o)) for name, (e, o) in variants.items()},
                      args.repeats)
    peaks = {p: matmul_peak(p) for p in ("fp32", "bf16")}
    best_st = max(median([r["pairs_per_s"] for r in raw[n]]) for n in raw if n.startswith("sentence"))
    rows = []
    for name, results in raw.items():
        pps = median([r["pairs_per_s"] for r in results])
        row = {"setting": name, "pairs/s": pps, "vs best sentence-transformers": pps / best_st}
        if "tokens" in results[0]:
            tokens_per_s = median([r["tokens"] / r["wall_s"] for r in results])
            seq = results[0]["tokens"] / max(1, results[0]["steps"] * args.batch_size * 2)
            achieved = tokens_per_s * flops_per_token(model, seq) / 1e9
            precision = variants[name][1]["precision"]
            row["GFLOP/s"] = achieved
            row["utilisation"] = f"{achieved / peaks[precision]:.0%} of {peaks[precision]:.0f} ({precision})"
        rows.append(row)
    print(f"\ntrain speed, {args.model}, batch {args.batch_size}, {args.steps} steps, median of {args.repeats} interleaved runs")
    print(table(rows, ["setting", "pairs/s", "vs best sentence-transformers", "GFLOP/s", "utilisation"]))
    path = write_json(f"train_speed_{args.model}.json", {"args": vars(args), "peaks_gflops": peaks, "rows": rows,
                                                          "raw": {k: [{kk: vv for kk, vv in r.items() if kk != "heldout_nli"}
                                                                      for r in v] for k, v in raw.items()}})
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
