"""Whole-process speed: a fresh ``sbert-nli train`` process against an equivalent plain
sentence-transformers script (reference_train.py), same model, data, steps, batch size and end-of-run
STSb-dev evaluation, each timed end to end from launch to exit; medians of interleaved runs.

Ours runs with its defaults (precision auto, every speed switch); the reference at its fastest setting
here (fused AdamW; bf16 only where native). Beside the totals: where each process spends its time.
Ours is measured in separate probe runs (``--probe``) that wrap the CLI without changing it: the modules
a run imports are imported first (the list is recorded by the warm-up run) so "imports" is all Python
import time, then timers around the engine's phases (sbert_nli.engines.native: setup, read_sts,
prepare_data_and_model, loop, finish, evaluate_dev, evaluate_nli, save_model, write_training_report).
The reference times its own phases (reference_train.py). Neither probe is in the timed totals.

Final numbers (quiet machine; about 1.5 min per MiniLM round at 2 threads, plus warm-up and probe):

    python benchmarks/process_speed.py --model minilm --steps 40 --repeats 3 --threads 2
    python benchmarks/process_speed.py --model minilm --steps 40 --repeats 3 --threads 2 --isa avx2 --data snli3200

Smoke check: ``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/process_speed.py --steps 3 --repeats 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (ISA_ENV, OUT, child_env, data_dir, describe_features, features_in, interleaved, isa_label,
                    median, model_path, table, train_files, verify_isa, write_json)

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- the probe (inside our process)
def probe(modules_file: str, report_file: str, launched: float, cli_args: list[str]) -> int:
    """Run ``sbert-nli CLI_ARGS`` in this process with phase timers; write the phases to REPORT_FILE.
    With an existing MODULES_FILE, import its modules first (all import time in one phase); without,
    record the modules this run imported into it."""
    import importlib

    entered = time.time()
    preload = Path(modules_file).is_file()
    if preload:
        for name in json.loads(Path(modules_file).read_text()):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - aliases and modules importable only from their parent
                pass
    imported = time.time()
    spent: dict[str, float] = {}
    _wrap_phases(spent)
    from sbert_nli import cli

    code = cli.main(cli_args)
    done = time.time()
    if not preload:
        Path(modules_file).write_text(json.dumps([m for m in sys.modules if not m.startswith("__")]))
    Path(report_file).write_text(json.dumps({"interpreter_start": entered - launched, "imports": imported - entered,
                                             "cli_total": done - imported, "done_at": done - launched, **spent}))
    return code


def _wrap_phases(spent: dict) -> None:
    """Time the named functions where the engine looks them up (module attributes, read at call time)."""
    import functools
    import importlib

    targets = [("sbert_nli.engines.native", "setup"), ("sbert_nli.engines.native", "loop"),
               ("sbert_nli.engines.native", "finish"), ("sbert_nli.engines.native", "evaluate_dev"),
               ("sbert_nli.engines.native", "save_model"), ("sbert_nli.prepare", "prepare_data_and_model"),
               ("sbert_nli.data.sts", "read_sts"), ("sbert_nli.evaluate", "evaluate_nli"),
               ("sbert_nli.report", "write_training_report")]
    for module_name, name in targets:
        module = importlib.import_module(module_name)
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(*a, _original=original, _name=name, **k):
            started = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - started

        setattr(module, name, timed)


def our_phases(p: dict, total: float) -> dict:
    """The probe's timers as disjoint phases (seconds) that add up to the process total."""
    setup = p.get("setup", 0.0)
    finish = p.get("finish", 0.0)
    end_parts = {k: p.get(k, 0.0) for k in ("evaluate_dev", "evaluate_nli", "save_model", "write_training_report")}
    return {
        "interpreter start": p["interpreter_start"], "imports (all modules)": p["imports"],
        "config, CLI": p["cli_total"] - setup - p.get("loop", 0.0) - finish,
        "data preparation (read, tokenise, model load)": p.get("prepare_data_and_model", 0.0) + p.get("read_sts", 0.0),
        "setup rest (objective, optimiser, batches)": setup - p.get("prepare_data_and_model", 0.0) - p.get("read_sts", 0.0),
        "training loop": p.get("loop", 0.0),
        "end: STS dev evaluation": end_parts["evaluate_dev"], "end: held-out NLI": end_parts["evaluate_nli"],
        "end: save model": end_parts["save_model"], "end: report": end_parts["write_training_report"],
        "end: rest": finish - sum(end_parts.values()),
        "exit (after the CLI returned)": total - p["done_at"],
    }


def reference_phases(r: dict, total: float) -> dict:
    ph = r["phases"]
    return {"imports (all modules)": ph["imports"], "data preparation (read, tokenise, model load)": ph["data"] + ph["model"],
            "training loop": ph["training"], "end: STS dev evaluation": ph["evaluation"], "end: save model": ph["save"],
            "interpreter start, exit": total - sum(ph.values())}


# --------------------------------------------------------------------------- the parent
def commands(args, out: str) -> tuple[list[str], list[str]]:
    files = train_files(args.data)
    cli = Path(sys.executable).with_name("sbert-nli")
    ours = ([str(cli)] if cli.is_file() else [sys.executable, "-m", "sbert_nli"]) + [
        "train", "--model", model_path(args.model), "--train", *files,
        "--eval-sts", str(data_dir() / "stsbenchmark" / "sts-dev.csv"), "--max-steps", str(args.steps),
        "--batch-size", str(args.batch_size), "--output", out + "/ours", "--overwrite", "--no-progress"]
    reference = [sys.executable, str(HERE / "reference_train.py"), "--model", model_path(args.model), "--train", *files,
                 "--eval-sts", str(data_dir() / "stsbenchmark" / "normalized" / "sts-dev.jsonl"),
                 "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--output", out + "/ref"]
    return ours, reference


def timed_process(argv: list[str], env: dict) -> tuple[float, str, str]:
    """(seconds from launch to exit, stdout, stderr); exits with an error line if the process failed."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        sys.exit(f"error: exit {done.returncode}: {' '.join(argv)}")
    return seconds, done.stdout, done.stderr


def direct_imports(importtime_log: str, top: int = 12) -> list[dict]:
    """The costliest imports the run itself triggered (depth 0 of ``python -X importtime``: a package
    imported by our code or the harness, with everything it pulled in), seconds, largest first."""
    found: dict[str, float] = {}
    for line in importtime_log.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative_us, name = line.split("|")
        if name[1:2] != " ":  # depth 0 is "| name"; each nesting level adds two spaces
            found[name.strip()] = found.get(name.strip(), 0.0) + int(cumulative_us) / 1e6
    ranked = sorted(found.items(), key=lambda kv: -kv[1])[:top]
    return [{"import": name, "seconds": seconds} for name, seconds in ranked]


def run_ours(argv: list[str], env: dict, out: str) -> dict:
    seconds, _, _ = timed_process(argv, env)
    results = json.loads((Path(out) / "ours" / "results.json").read_text())
    return {"total_s": seconds, "training_s": results["wall_s"], "dev_spearman": results.get("dev_spearman"),
            "precision": results["precision"]}


def run_reference(argv: list[str], env: dict) -> dict:
    seconds, stdout, _ = timed_process(argv, env)
    r = json.loads(stdout.strip().splitlines()[-1])
    return {"total_s": seconds, "training_s": r["phases"]["training"], "dev_spearman": r["dev_spearman"],
            "precision": r["precision"], "phases": r["phases"]}


def run_probe(ours_argv: list[str], env: dict, modules_file: Path, importtime: bool = False) -> dict:
    """One probe run of ours (not a timed total); ``importtime`` adds its costliest direct imports."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        report = handle.name
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), str(Path(__file__).resolve()), "--probe",
            str(modules_file), report, "--", *ours_argv[ours_argv.index("train"):]]
    launched = time.time()
    seconds, _, stderr = timed_process(argv, {**env, "SBERT_NLI_BENCH_LAUNCHED": repr(launched)})
    phases = json.loads(Path(report).read_text())
    os.unlink(report)
    return {"total_s": seconds, "probe": phases, **({"direct_imports": direct_imports(stderr)} if importtime else {})}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        dash = sys.argv.index("--")
        launched = float(os.environ["SBERT_NLI_BENCH_LAUNCHED"])
        sys.exit(probe(sys.argv[2], sys.argv[3], launched, sys.argv[dash + 1:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--data", default="nli", choices=["nli", "snli3200"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probes", type=int, default=1, help="phase-probe runs of ours (median), after the rounds")
    parser.add_argument("--threads", type=int, default=0, help="OpenMP/MKL threads for both processes (0: inherit)")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), help="emulate a CPU with only this ISA")
    args = parser.parse_args()
    checked = verify_isa(args.isa)
    env = child_env(args.isa, args.threads)
    scratch = tempfile.mkdtemp(prefix="process_speed_")
    try:
        ours_argv, reference_argv = commands(args, scratch)
        modules_file = OUT / f"process_speed_modules_{args.model}.json"
        modules_file.unlink(missing_ok=True)
        print("warm-up (not timed): one probe of ours recording its modules, one reference run", file=sys.stderr)
        imports = run_probe(ours_argv, env, modules_file, importtime=True)["direct_imports"]
        run_reference(reference_argv, env)
        raw = interleaved({"sbert-nli train": lambda: run_ours(ours_argv, env, scratch),
                           "reference script": lambda: run_reference(reference_argv, env)}, args.repeats, rotate=True)
        probes = [run_probe(ours_argv, env, modules_file) for _ in range(args.probes)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, raw, probes, imports, checked, features_in(env))


def report(args, raw: dict, probes: list[dict], imports: list[dict], checked: dict, features: dict) -> None:
    ours, ref = raw["sbert-nli train"], raw["reference script"]
    total = {k: median([r["total_s"] for r in v]) for k, v in raw.items()}
    loop = {k: median([r["training_s"] for r in v]) for k, v in raw.items()}
    rows = [{"process": name, "precision": runs[0]["precision"], "total s": total[name], "training loop s": loop[name],
             "outside the loop s": total[name] - loop[name], "STSb dev Spearman": runs[0]["dev_spearman"]}
            for name, runs in raw.items()]
    ours_phases = [our_phases(p["probe"], p["total_s"]) for p in probes]
    phase_ours = {k: median([p[k] for p in ours_phases]) for k in ours_phases[0]}
    phase_ref = {k: median([reference_phases(r, r["total_s"])[k] for r in ref]) for k in reference_phases(ref[0], 1)}
    phase_rows = [{"phase": k, "sbert-nli s": phase_ours.get(k, ""), "reference s": phase_ref.get(k, "")}
                  for k in list(phase_ours) + [k for k in phase_ref if k not in phase_ours]]
    print(f"\nwhole process, {args.model}, data {args.data}, {args.steps} steps, batch {args.batch_size}, STSb dev "
          f"evaluated at the end; median of {args.repeats} interleaved runs; {isa_label(args.isa)}")
    print(describe_features(features))
    print(table(rows, ["process", "precision", "total s", "training loop s", "outside the loop s", "STSb dev Spearman"]))
    print(f"whole-process ratio (reference / sbert-nli): {total['reference script'] / total['sbert-nli train']:.2f}x; "
          f"training loop alone: {loop['reference script'] / loop['sbert-nli train']:.2f}x")
    print(f"\nwhere the time goes (sbert-nli: median of {len(probes)} probe run(s); reference: its own timers)")
    print(table(phase_rows, ["phase", "sbert-nli s", "reference s"]))
    print("note: sbert-nli tokenises before its loop (data preparation); the reference tokenises inside its loop "
          "(the Trainer's data collator)")
    print("\nsbert-nli's costliest direct imports (python -X importtime, warm-up run; each with what it pulls in)")
    print(table(imports, ["import", "seconds"]))
    path = write_json(f"process_speed_{args.model}_{args.data}{'_' + args.isa if args.isa else ''}.json", {
        "args": vars(args), "features": features, "isa": isa_label(args.isa), "isa_check": checked, "rows": rows,
        "ratio": total["reference script"] / total["sbert-nli train"], "phases": phase_rows, "raw": raw,
        "direct_imports": imports,
        "probes": probes, "commands": dict(zip(("ours", "reference"), commands(args, "OUT")))})
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
