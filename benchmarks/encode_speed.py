"""Encoding throughput: `SentenceEncoder.encode` (what `sbert-nli encode` runs) against
`SentenceTransformer.encode` on 10,000 distinct sentences, same model, precision and batch size.

    python benchmarks/encode_speed.py --model minilm --repeats 3
    python benchmarks/encode_speed.py --precisions fp32 --onnx --st-onnx-python /path/to/python --repeats 5
    python benchmarks/encode_speed.py --device cuda --model minilm --sentences 5000   # GPU (gpu_speed.sh)
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/encode_speed.py --precisions fp32 --onnx --threads 1   # one core

The machine (CPU model, SIMD flags, torch's dispatch level, threads, bf16 native or not; the GPU with
``--device cuda``) is printed beside the table and stored in the JSON.

``--onnx`` adds our exported graphs (fp32, int8) and, with ``--st-onnx-python``, sentence-transformers'
backend="onnx" on the same export (a Python with ``sentence-transformers[onnx]``: see RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from common import OUT, data_dir, describe_features, hardware_features, interleaved, median, model_path, table, write_json


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


def st_onnx_worker(python: str, folder: str, texts: list[str], files: list[str]):
    """sentence-transformers' backend="onnx" in its own interpreter (see st_onnx_worker.py)."""
    import json
    import subprocess
    from pathlib import Path

    texts_file = write_json("encode_speed_texts.json", texts)
    worker = subprocess.Popen([python, str(Path(__file__).with_name("st_onnx_worker.py")), folder, str(texts_file), *files],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if "ready" not in json.loads(worker.stdout.readline() or "{}"):
        sys.exit(f"error: the sentence-transformers ONNX worker under {python} did not start")

    def run(file: str, batch_size: int) -> dict:
        saved = OUT / f"encode_speed_st_{Path(file).stem}.npy"
        worker.stdin.write(json.dumps({"file": file, "batch_size": batch_size, "save": str(saved)}) + "\n")
        worker.stdin.flush()
        seconds = json.loads(worker.stdout.readline())["seconds"]
        return {"sentences_per_s": len(texts) / seconds, "emb": np.load(saved)}

    return worker, run


def onnx_variants(args, path: str, texts: list[str], timed) -> dict:
    """Our ONNX graphs (fp32, int8) and, given --st-onnx-python, sentence-transformers' backend="onnx"
    on the same export: transformer-only graph + its own PyTorch pooling."""
    from sbert_nli.export import FILES, export_onnx
    from sbert_nli.onnx_backend import OnnxEncoder

    folder = OUT / f"{args.model}-onnx"
    export_onnx(path, str(folder), "int8")  # every run: an export left by an older version would be timed otherwise
    variants = {}
    if args.st_onnx_python:
        _, run = st_onnx_worker(args.st_onnx_python, str(folder), texts,
                                ["onnx/" + FILES["transformer"], "onnx/" + FILES["transformer_int8"]])
        variants["sentence-transformers onnx fp32"] = lambda: run("onnx/" + FILES["transformer"], args.batch_size)
        variants["sentence-transformers onnx int8"] = lambda: run("onnx/" + FILES["transformer_int8"], args.batch_size)
    for name, quantized in (("fp32", False), ("int8", True)):
        ours = OnnxEncoder.load(folder, quantized=quantized, threads=args.threads)
        variants[f"sbert-nli onnx {name}"] = lambda e=ours: timed(lambda: e.encode(texts, batch_size=args.batch_size))
    return variants


def main() -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from sbert_nli.model import SentenceEncoder

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16", help="PyTorch precisions")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the ONNX rows are CPU only)")
    parser.add_argument("--onnx", action="store_true", help="add the ONNX rows (needs the [onnx] extra)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch and onnxruntime (0: each library's default, one per core)")
    parser.add_argument("--st-onnx-python", default=os.environ.get("SBERT_NLI_ST_ONNX_PYTHON"),
                        help="a Python with sentence-transformers[onnx] for its backend='onnx' rows")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"error: --device {args.device}: no CUDA GPU visible to torch {torch.__version__}")
    if args.onnx and args.device != "cpu":
        sys.exit("error: --onnx rows run on CPU; use --device cpu")
    if args.threads > 0:
        if args.st_onnx_python:
            sys.exit("error: --threads does not reach the sentence-transformers ONNX worker; drop one of them")
        torch.set_num_threads(args.threads)
    path = model_path(args.model)
    texts = sentences(args.sentences)
    ours = SentenceEncoder.load(path).to(args.device)
    theirs = SentenceTransformer(path, device=args.device)
    device_type = torch.device(args.device).type
    dtype = {"fp32": None, "bf16": torch.bfloat16}

    def timed(fn):
        started = time.perf_counter()
        emb = fn()
        return {"sentences_per_s": len(texts) / (time.perf_counter() - started), "emb": emb}

    variants = {}
    classes = [(f"pytorch {p}", f"sentence-transformers {p}", f"sbert-nli {p}") for p in args.precisions.split(",")]
    for precision in args.precisions.split(","):
        def st_run(p=precision):
            with torch.autocast(device_type, dtype=dtype[p]) if dtype[p] else torch.inference_mode():
                return theirs.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)

        variants[f"sentence-transformers {precision}"] = lambda f=st_run: timed(f)
        variants[f"sbert-nli {precision}"] = lambda p=precision: timed(
            lambda: ours.encode(texts, batch_size=args.batch_size, precision=p, device=args.device))
    if args.onnx:
        variants.update(onnx_variants(args, path, texts, timed))
        classes += [(f"onnx {q}", f"sentence-transformers onnx {q}", f"sbert-nli onnx {q}") for q in ("fp32", "int8")]
    raw = interleaved(variants, args.repeats)
    speed = {name: median([r["sentences_per_s"] for r in runs]) for name, runs in raw.items()}
    base = speed.get("sentence-transformers fp32")
    reference = raw["sentence-transformers fp32"][0]["emb"] if base else None
    rows = []
    for label, st_name, our_name in classes:
        row = {"class": label, "sentence-transformers sent/s": speed.get(st_name, "not measured"),
               "sbert-nli sent/s": speed[our_name]}
        if st_name in speed:
            row["ratio (same class)"] = speed[our_name] / speed[st_name]
        if base:
            row["sbert-nli vs ST PyTorch fp32"] = speed[our_name] / base
            row["max abs diff vs ST fp32"] = f"{float(np.abs(raw[our_name][0]['emb'] - reference).max()):.1e}"
        rows.append(row)
    features = hardware_features(args.device)
    print(f"\nencode speed, {args.model}, {len(texts)} sentences, batch {args.batch_size}, median of {args.repeats} "
          f"interleaved rounds, {args.device}")
    print(describe_features(features))
    print(table(rows, ["class", "sentence-transformers sent/s", "sbert-nli sent/s", "ratio (same class)",
                       "sbert-nli vs ST PyTorch fp32", "max abs diff vs ST fp32"]))
    suffix = f"_{args.device.replace(':', '')}" if args.device != "cpu" else ""
    write_json(f"encode_speed_{args.model}{suffix}.json", {"args": vars(args), "features": features, "rows": rows,
                                                         "speed": speed})


if __name__ == "__main__":
    main()
