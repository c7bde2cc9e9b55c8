"""Where a native training step's time goes: torch.profiler's per-op table (top 25 by self CPU time)
of steady-state optimiser steps (after warm-up steps), and the share of matrix multiplication.

The step is the engine's own (``run.optimiser_step`` with the speed switches, as ``sbert-nli train``
runs it), on the same model shapes as train_speed.py; precision ``auto`` unless ``--precision``.

Final tables (quiet machine; a few minutes each at 2 threads):

    python benchmarks/profile_step.py --model minilm --isa avx2 --threads 2
    python benchmarks/profile_step.py --model bert-base --isa avx2 --threads 2 --steps 3

Smoke check: ``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/profile_step.py --warmup 1 --steps 1``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

from common import ISA_ENV, child_env, describe_features, hardware_features, isa_label, model_path, train_files, \
    verify_isa, write_json

# Dense matrix products: what the model's FLOPs are (linear layers, attention scores and values).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_mkl_linear", "mkldnn::_linear_pointwise",
              "aten::mkldnn_linear", "aten::_addmm_activation", "aten::mkldnn_matmul", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def build_run(args):
    from sbert_nli.config import resolve
    from sbert_nli.engines.native import setup

    overrides = {
        "model": {"name": model_path(args.model), "max_seq_length": 128},
        "data": {"train": train_files(args.data)},
        "train": {"batch_size": args.batch_size, "precision": args.precision, "device": "cpu"},
    }
    for item in args.set:  # as the CLI's --set: SECTION.KEY=VALUE, coerced by the config's own types
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        overrides.setdefault(section, {})[name] = value
    config = resolve(None, None, overrides)
    if config.train.reuse_host_memory:  # as `sbert-nli train` does on CPU (process-wide, see host_memory.py)
        from sbert_nli.host_memory import keep_freed_memory

        keep_freed_memory()
    return setup(config, tempfile.mkdtemp(prefix="profile_step_") + "/o")


def profile(run, warmup: int, steps: int):
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from sbert_nli.engines.native import speed_switches

    batches = run.batches(0)
    run.model.train()
    with speed_switches(run):
        for index in batches[:warmup]:
            run.optimiser_step(run, index)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for index in batches[warmup:warmup + steps]:
                run.optimiser_step(run, index)
    return prof


def matmul_share(events) -> tuple[float, float]:
    """(self CPU seconds in dense matrix products, all self CPU seconds) over the profiled steps."""
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e6
    return matmul, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--data", default="nli", choices=["nli", "snli3200"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--warmup", type=int, default=3, help="steps before profiling (first-call costs)")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--threads", type=int, default=0, help="torch/OpenMP/MKL threads (0: inherit)")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), help="emulate a CPU with only this ISA (re-runs itself)")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config field, as `sbert-nli train --set` (repeatable)")
    args = parser.parse_args()
    if (args.isa or args.threads) and os.environ.get("SBERT_NLI_PROFILE_CHILD") != "1":
        verify_isa(args.isa)  # the switches must be set before torch loads: run again in a fresh process
        env = {**child_env(args.isa, args.threads), "SBERT_NLI_PROFILE_CHILD": "1"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.isa and torch.backends.cpu.get_cpu_capability() != args.isa.upper():
        sys.exit(f"error: --isa {args.isa}: torch dispatches {torch.backends.cpu.get_cpu_capability()}")
    from sbert_nli.errors import SbertNliError

    try:
        run = build_run(args)
    except (SbertNliError, ValueError) as exc:  # a bad --set: one line and exit 2, as sbert-nli train
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    prof = profile(run, args.warmup, args.steps)
    events = prof.key_averages()
    matmul, total = matmul_share(events)
    features = hardware_features()
    print(f"\nper-op profile, {args.model}, batch {args.batch_size}, precision {run.precision}, {args.steps} steps after "
          f"{args.warmup} warm-up; {isa_label(args.isa)}" + (f"; --set {' '.join(args.set)}" if args.set else ""))
    print(describe_features(features))
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))
    print(f"self CPU time per step: {total / args.steps * 1e3:.0f} ms; dense matmul ({', '.join(MATMUL_OPS[:4])}, "
          f"mkldnn/mkl linear, CPU flash attention): {matmul / total:.0%}; everything else: {1 - matmul / total:.0%}")
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.rows]
    suffix = "".join("_" + re.sub(r"[^A-Za-z0-9.]+", "-", item) for item in args.set)  # one file per switch setting
    write_json(f"profile_step_{args.model}{'_' + args.isa if args.isa else ''}{suffix}.json", {
        "args": vars(args), "features": features, "precision": run.precision, "matmul_share": matmul / total,
        "self_cpu_ms_per_step": total / args.steps * 1e3,
        "top": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in top]})


if __name__ == "__main__":
    main()
