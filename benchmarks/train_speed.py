"""Training throughput: the native trainer against the sentence-transformers Trainer, side by side, on
the machine named beside the table (CPU model, SIMD flags, torch's dispatch level, threads, bf16).

Same model, data, batch size and number of optimiser steps; medians of interleaved repeats (each round
starts one row later). Every measured run is a fresh child process (``--one``), so no state leaks from
one row into the next and the ISA emulation switches are in place before torch loads.

Rows. The reference is the sentence-transformers Trainer at its fastest setting on this machine: fused
AdamW always, fp32, and bf16 only where bf16 is native (AVX512-BF16/AMX CPU, bf16 GPU; emulated bf16 is
slower, so it is skipped with a note). "native (defaults)" is what a user gets: ``precision = "auto"``,
labelled with what auto resolved to. Ablations: the defaults with one speed switch changed at a time.
Utilisation = model FLOP/s on real (non-padding) tokens over the measured matmul peak of the precision.

Final numbers (quiet machine; --threads sets torch/OpenMP/MKL threads for every row):

    python benchmarks/train_speed.py --model minilm --steps 40 --repeats 3 --threads 2
    python benchmarks/train_speed.py --model bert-base --steps 10 --repeats 3 --quick --threads 2
    python benchmarks/train_speed.py --model minilm --steps 40 --repeats 3 --threads 2 --isa avx2 --data snli3200
    python benchmarks/train_speed.py --model bert-base --steps 10 --repeats 3 --threads 2 --isa avx2 --data snli3200 --quick

Smoke check (seconds): ``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/train_speed.py --steps 3 --repeats 1 --quick``.
GPU: ``--device cuda`` (rows: reference fp32/bf16 and native defaults; see gpu_speed.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import (ISA_ENV, child_env, describe_features, hardware_features, interleaved, isa_label, matmul_peak,
                    median, model_path, run_child, table, train_files, verify_isa, write_json)

SWITCHES_OFF = {"group_by_length": False, "group_premises": False, "dedup_batch": False, "split_padding_cost": 0,
                "fused_adamw": False, "embedding_grad_buffer": False, "reuse_host_memory": False, "padding_free": False,
                "fast_dropout": False}


def flops_per_token(model_dir: str, seq_len: float) -> float:
    """Training FLOPs per token of a BERT encoder: 3 x (2 x dense params + attention scores)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    d, layers, ff = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    dense = layers * (4 * d * d + 2 * d * ff)
    attention = layers * 2 * seq_len * d  # QK^T and AV per token
    return 3 * (2 * dense + 2 * attention)


# --------------------------------------------------------------------------- one measured run (child)
def run(model: str, files: list[str], engine: str, steps: int, batch: int, device: str, overrides: dict) -> dict:
    """One training run in this process; the CLI's process-wide host-memory switch applies as in
    ``sbert-nli train`` (native engine on CPU, unless the row turns it off)."""
    import tempfile

    from sbert_nli.config import resolve
    from sbert_nli.engines.st import train_st
    from sbert_nli.train import train

    model_keys = {k: overrides.pop(k) for k in list(overrides) if k in ("attn_implementation",)}
    config = resolve(None, None, {
        "model": {"name": model, "max_seq_length": 128, **model_keys},
        "data": {"train": files},
        "train": {"max_steps": steps, "batch_size": batch, "log_every": steps, "device": device, **overrides},
    })
    if engine == "native" and device == "cpu" and config.train.reuse_host_memory:
        from sbert_nli.host_memory import keep_freed_memory

        keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "st":
            return train_st(config, tmp + "/o", progress=False)
        return train(config, tmp + "/o", progress=False)


def child(args) -> None:
    """``--one KIND``: print one JSON line. KIND: features (this process's machine view and what
    precision auto resolves to), peaks (matmul GFLOP/s), or a run (``--engine``, ``--overrides``)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.isa and torch.backends.cpu.get_cpu_capability() != args.isa.upper():
        sys.exit(f"error: --isa {args.isa} asked for, but torch dispatches {torch.backends.cpu.get_cpu_capability()}")
    if args.one == "features":
        from sbert_nli.precision import resolve_precision

        auto = resolve_precision("auto", torch.device(args.device))
        out = {"features": hardware_features(args.device), "auto_precision": auto}
    elif args.one == "peaks":
        from sbert_nli.precision import cpu_has_native_bf16

        # Emulated bf16 has no meaningful peak, and a 2048^3 emulated bf16 matmul takes minutes (AVX2).
        names = (("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)) if args.device == "cpu" else ("fp32", "bf16", "fp16")
        out = {p: matmul_peak(p, size=2048 if args.device == "cpu" else 8192, device=args.device) for p in names}
    else:
        result = run(model_path(args.model), train_files(args.data), args.engine, args.steps, args.batch_size,
                     args.device, json.loads(args.overrides))
        out = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
        out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out))


# --------------------------------------------------------------------------- the rows (parent)
def variants(device: str, bf16_native: bool, auto: str, quick: bool) -> dict:
    """Row name -> (engine, overrides). The reference's rows are its fastest settings here."""
    reference = {"sentence-transformers fp32 (fused AdamW)": ("st", {"precision": "fp32", "fused_adamw": True})}
    if bf16_native:
        reference["sentence-transformers bf16 (fused AdamW)"] = ("st", {"precision": "bf16", "fused_adamw": True})
    ours = {"precision": "auto"}
    other = "fp32" if auto != "fp32" else "bf16"
    rows = {**reference, f"native (defaults, auto = {auto})": ("native", ours)}
    if quick:  # the headline ratio, and the two switches of issue 18's second and third rounds
        best = list(reference)[-1]
        return {best: reference[best], **{k: v for k, v in rows.items() if k.startswith("native")},
                "native, padding_free off": ("native", {**ours, "padding_free": False}),
                "native, fast_dropout off": ("native", {**ours, "fast_dropout": False})}
    emulated = " (emulated)" if other == "bf16" and not bf16_native else ""
    rows.update({
        f"native, precision {other}{emulated}": ("native", {**ours, "precision": other}),
        "native, group_by_length off": ("native", {**ours, "group_by_length": False}),
        "native, group_premises on (faster, costs quality)": ("native", {**ours, "group_premises": True}),
        "native, dedup_batch off": ("native", {**ours, "dedup_batch": False}),
        "native, split_padding off": ("native", {**ours, "split_padding_cost": 0}),
        "native, fused_adamw off": ("native", {**ours, "fused_adamw": False}),
        "native, embedding_grad_buffer off": ("native", {**ours, "embedding_grad_buffer": False}),
        "native, padding_free off": ("native", {**ours, "padding_free": False}),
        "native, fast_dropout off": ("native", {**ours, "fast_dropout": False}),
        "native, every switch off (plain loop)": ("native", {**ours, **SWITCHES_OFF}),
        # issue 18's levers, each on alone (off by default until they pay)
        "native, bucketing on (pad_to_multiple_of 8)": ("native", {**ours, "pad_to_multiple_of": 8}),
        "native, attention eager (not sdpa)": ("native", {**ours, "attn_implementation": "eager"}),
    })
    if device == "cpu":
        rows["native, reuse_host_memory off"] = ("native", {**ours, "reuse_host_memory": False})
    return rows


def child_argv(args, one: str, engine: str = "", overrides: dict | None = None) -> list[str]:
    argv = [str(Path(__file__).resolve()), "--one", one, "--model", args.model, "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--data", args.data, "--device", args.device,
            "--engine", engine or "native", "--overrides", json.dumps(overrides or {})]
    argv += ["--threads", str(args.threads)] if args.threads else []
    return argv + (["--isa", args.isa] if args.isa else [])


def rows_of(raw: dict, rows_spec: dict, model: str, batch: int, peaks: dict) -> list[dict]:
    best = max(median([r["pairs_per_s"] for r in raw[n]]) for n in raw if rows_spec[n][0] == "st")
    rows = []
    for name, results in raw.items():
        pps = median([r["pairs_per_s"] for r in results])
        precision = results[0]["precision"]
        row = {"setting": name, "precision": precision, "pairs/s": pps, "vs best reference": pps / best}
        if "tokens" in results[0] and precision in peaks:
            tokens_per_s = median([r["tokens"] / r["wall_s"] for r in results])
            seq = results[0]["tokens"] / max(1, results[0]["steps"] * batch * 2)
            achieved = tokens_per_s * flops_per_token(model, seq) / 1e9
            row["GFLOP/s"] = achieved
            row["utilisation"] = f"{achieved / peaks[precision]:.0%} of {peaks[precision]:.0f} ({precision})"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--data", default="nli", choices=["nli", "snli3200"],
                        help="nli: SNLI dev + MNLI dev-matched; snli3200: the first 3,200 SNLI-dev pairs")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch/OpenMP/MKL threads for every row (0: inherit)")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), help="emulate a CPU with only this ISA (child processes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--quick", action="store_true", help="only the reference's best, our defaults and one switch")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="native", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return child(args)
    if args.isa and args.device != "cpu":
        sys.exit("error: --isa emulates a CPU; use it with --device cpu")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"error: --device {args.device}: no CUDA GPU visible to torch {torch.__version__}")
    checked = verify_isa(args.isa)
    env = child_env(args.isa, args.threads)
    model = model_path(args.model)
    train_files(args.data)  # derived files are written once, before any timing
    probe = run_child(child_argv(args, "features"), env)
    features, auto = probe["features"], probe["auto_precision"]
    spec = variants(args.device, features["bf16_native"], auto, args.quick)
    raw = interleaved({name: (lambda n=name, e=e, o=o: run_child(child_argv(args, n, e, o), env))
                       for name, (e, o) in spec.items()}, args.repeats, rotate=True)
    peaks = run_child(child_argv(args, "peaks"), env)
    rows = rows_of(raw, spec, model, args.batch_size, peaks)
    notes = []
    if not features["bf16_native"]:
        notes.append("reference bf16 skipped: bf16 is emulated on this machine (no AVX512-BF16/AMX), slower than fp32")
    if auto == "bf16" and not features["bf16_native"]:
        notes.append("precision auto resolved to bf16 although bf16 is not native here (emulated)")
    print(f"\ntrain speed, {args.model}, data {args.data}, batch {args.batch_size}, {args.steps} steps, "
          f"median of {args.repeats} interleaved runs, each a fresh process; {args.device}, {isa_label(args.isa)}")
    print(describe_features(features))
    print(table(rows, ["setting", "precision", "pairs/s", "vs best reference", "GFLOP/s", "utilisation"]))
    for note in notes:
        print(f"note: {note}")
    suffix = f"_{args.isa}" if args.isa else ""
    suffix += f"_{args.device.replace(':', '')}" if args.device != "cpu" else ""
    path = write_json(f"train_speed_{args.model}_{args.data}{suffix}.json", {
        "args": vars(args), "features": features, "isa": isa_label(args.isa), "isa_check": checked,
        "auto_precision": auto, "peaks_gflops": peaks, "rows": rows, "notes": notes, "raw": raw})
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
