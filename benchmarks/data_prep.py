"""Data preparation at full scale: 942k NLI pairs shaped like SNLI + MultiNLI train -> tokenised,
cached, ready to train; against the seed's way (an InputExample per row, then tokenising every pair
per batch as its collate does). Each stage runs in a fresh process so its peak RSS is its own.

The 942k pairs are the local SNLI dev + MNLI dev-matched pairs (19,657 pairs, 6,653 premises with
about three hypotheses each) copied 48 times with a deterministic rewrite that makes every copy's
premise and every hypothesis distinct, so no cache or dedup trick can exploit fake duplicates.

    python benchmarks/data_prep.py            # builds benchmarks/out/nli_942k.jsonl once
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time

from common import OUT, median, minilm_path, nli_files, table, write_json

PAIRS = 942_000
SOURCE = OUT / "nli_942k.jsonl"
CACHE = OUT / "data_prep_cache"


def build_source() -> None:
    rows = [json.loads(line) for f in nli_files() for line in open(f, encoding="utf-8")]
    written = 0
    with open(SOURCE, "w", encoding="utf-8") as out:
        for copy in range(PAIRS // len(rows) + 1):
            for j, row in enumerate(rows):
                if written == PAIRS:
                    return
                out.write(json.dumps({"premise": f"{row['premise']} ({copy})",
                                      "hypothesis": f"{row['hypothesis']} ({copy}.{j})", "label": row["label"]}) + "\n")
                written += 1


def stage_ours() -> dict:
    from sbert_nli.config import resolve
    from sbert_nli.prepare import build_encoder, cached_examples

    config = resolve(None, None, {"model": {"name": minilm_path()}, "data": {"train": [str(SOURCE)], "cache_dir": str(CACHE)}})
    encoder = build_encoder(config)  # loading the model is not data preparation: not timed
    started = time.perf_counter()
    examples, data, _ = cached_examples(config, encoder, log_progress=False)
    return {"seconds": time.perf_counter() - started, "pairs": len(examples), "sentences": len(examples.store),
            "premises": int(len(set(examples.roles["a"].tolist())))}


def stage_seed() -> dict:
    """The seed's route: load rows, build an InputExample per row, then tokenise per batch of 16."""
    from sentence_transformers import InputExample
    from transformers import AutoTokenizer

    rows = [json.loads(line) for line in open(SOURCE, encoding="utf-8")]
    premise = [r["premise"] for r in rows]
    hypothesis = [r["hypothesis"] for r in rows]
    label = [{"entailment": 0, "neutral": 1, "contradiction": 2}[r["label"]] for r in rows]
    del rows
    started = time.perf_counter()
    examples = [InputExample(texts=[premise[i], hypothesis[i]], label=label[i]) for i in range(len(label))]
    loop = time.perf_counter() - started
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    started = time.perf_counter()
    for i in range(0, len(examples), 16):
        batch = examples[i : i + 16]
        for column in range(2):
            tokenizer([e.texts[column] for e in batch], padding=True, truncation="longest_first", max_length=128,
                      return_tensors="pt")
    return {"seconds": loop + time.perf_counter() - started, "loop_s": loop,
            "tokenise_s": time.perf_counter() - started}


def run_stage(name: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--stage", name], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=["ours", "seed"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-seed", action="store_true")
    args = parser.parse_args()
    if args.stage:
        result = stage_ours() if args.stage == "ours" else stage_seed()
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(result))
        return
    if not SOURCE.is_file():
        build_source()
    cold, warm = [], []
    for _ in range(args.repeats):
        shutil.rmtree(CACHE, ignore_errors=True)
        cold.append(run_stage("ours"))
        warm.append(run_stage("ours"))
        print(f"  cold {cold[-1]['seconds']:.1f} s, warm {warm[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    seed = None if args.skip_seed else run_stage("seed")
    rows = [
        {"route": "sbert-nli, first run (read, tokenise, cache)", "seconds": median([c["seconds"] for c in cold]),
         "peak RSS GiB": max(c["peak_rss_gib"] for c in cold)},
        {"route": "sbert-nli, second run (cache hit)", "seconds": median([w["seconds"] for w in warm]),
         "peak RSS GiB": max(w["peak_rss_gib"] for w in warm)},
    ]
    if seed:
        rows.append({"route": "seed: InputExample loop + per-batch tokenising", "seconds": seed["seconds"],
                     "peak RSS GiB": seed["peak_rss_gib"],
                     "note": f"loop {seed['loop_s']:.1f} s + tokenise {seed['tokenise_s']:.1f} s"})
        for row in rows:
            row["speed-up vs seed"] = seed["seconds"] / row["seconds"]
    print(f"\ndata preparation, {cold[0]['pairs']} pairs, {cold[0]['premises']} premises, "
          f"{cold[0]['sentences']} distinct sentences, MiniLM tokenizer, max 128 tokens")
    print(table(rows, ["route", "seconds", "peak RSS GiB", "speed-up vs seed", "note"]))
    write_json("data_prep.json", {"rows": rows, "cold": cold, "warm": warm, "seed": seed})


if __name__ == "__main__":
    main()
