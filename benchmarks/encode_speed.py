"""Encoding throughput: `SentenceEncoder.encode` (what `sbert-nli encode` runs) against
`SentenceTransformer.encode` on 10,000 distinct sentences, same model, precision and batch size.

    python benchmarks/encode_speed.py --model minilm --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import data_dir, interleaved, median, model_path, table, write_json


def sentences(n: int) -> list[str]:
    from sbert_nli.data.nli import read_nli_file
    from sbert_nli.data.sts import read_sts

    seen: dict[str, None] = {}
    for name in ("sts-train.csv", "sts-dev.csv", "sts-test.csv"):
        sts = read_sts(str(data_dir() / "stsbenchmark" / name))
        seen.update(dict.fromkeys(sts.sentence1 + sts.sentence2))
    for name in ("snli_dev.jsonl", "mnli_dev_matched.jsonl"):
        nli = read_nli_file(str(data_dir() / "nli" / "normalized" / name))
        seen.update(dict.fromkeys(nli.premise + nli.hypothesis))
    texts = list(seen)
    rng = np.random.default_rng(0)
    return [texts[i] for i in rng.permutation(len(texts))[:n]]


def main() -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from sbert_nli.model import SentenceEncoder

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    path = model_path(args.model)
    texts = sentences(args.sentences)
    ours = SentenceEncoder.load(path)
    theirs = SentenceTransformer(path, device="cpu")
    dtype = {"fp32": None, "bf16": torch.bfloat16}

    def timed(fn):
        started = time.perf_counter()
        emb = fn()
        return {"sentences_per_s": len(texts) / (time.perf_counter() - started), "emb": emb}

    variants = {}
    for precision in args.precisions.split(","):
        def st_run(p=precision):
            with torch.autocast("cpu", dtype=dtype[p]) if dtype[p] else torch.inference_mode():
                return theirs.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)

        variants[f"sentence-transformers {precision}"] = lambda f=st_run: timed(f)
        variants[f"sbert-nli {precision}"] = lambda p=precision: timed(
            lambda: ours.encode(texts, batch_size=args.batch_size, precision=p))
    raw = interleaved(variants, args.repeats)
    rows = []
    for precision in args.precisions.split(","):
        st = median([r["sentences_per_s"] for r in raw[f"sentence-transformers {precision}"]])
        us = median([r["sentences_per_s"] for r in raw[f"sbert-nli {precision}"]])
        diff = float(np.abs(raw[f"sentence-transformers {precision}"][0]["emb"] - raw[f"sbert-nli {precision}"][0]["emb"]).max())
        rows.append({"precision": precision, "sentence-transformers sent/s": st, "sbert-nli sent/s": us,
                     "ratio": us / st, "max abs diff": f"{diff:.1e}"})
    print(f"\nencode speed, {args.model}, {len(texts)} sentences, batch {args.batch_size}, median of {args.repeats}")
    print(table(rows, ["precision", "sentence-transformers sent/s", "sbert-nli sent/s", "ratio", "max abs diff"]))
    write_json(f"encode_speed_{args.model}.json", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
