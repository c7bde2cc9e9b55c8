"""The five holes of the first trainer (issue 12), one test each; every test here failed on b52f52a."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sbert_nli.checkpoint import list_checkpoints
from sbert_nli.cli import main

SMALL = ["--preset", "smoke", "--set", "data.synthetic_pairs=900", "--batch-size", "8", "--no-progress"]


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


# 1. evaluation on its own cadence ------------------------------------------------------------------
def test_dev_evaluation_runs_on_its_own_cadence_and_at_the_last_step(data, tmp_path):
    out = tmp_path / "run"
    sts = str(data / "stsbenchmark/sts-dev.csv")
    assert main(["-q", "train", *SMALL, "--max-steps", "10", "--set", "train.log_every=4", "--set", "train.eval_every=3",
                 "--set", f"data.eval_sts={sts}", "--output", str(out)]) == 0
    records = _records(out)
    assert [r["step"] for r in records if "dev_spearman" in r] == [3, 6, 9, 10]
    assert [r["step"] for r in records if "loss" in r] == [4, 8, 10]


# 2. finite check before every save -----------------------------------------------------------------
def _finite(folder: Path) -> bool:
    tensors = [t for f in folder.rglob("*.safetensors") for t in load_file(str(f)).values()]
    return bool(tensors) and all(torch.isfinite(t).all() for t in tensors)


def test_a_diverged_run_leaves_no_non_finite_checkpoint_and_names_a_good_one(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["-q", "train", *SMALL, "--lr", "1e6", "--max-steps", "30", "--save-every", "1",
                 "--set", "train.keep_checkpoints=50", "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 3, err  # its own exit code: diverged, not "bad input"
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "--precision fp32" not in err  # this run already is fp32
    saved = list_checkpoints(out)
    assert all(_finite(c) for c in saved), [c.name for c in saved if not _finite(c)]
    if saved:
        assert str(saved[-1]) in err
    assert not (out / "model.safetensors").exists()


# 3. world size, per-rank RNG, interrupt agreed across ranks ----------------------------------------
def _torchrun(nproc, args, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "sbert_nli", "-q", "train", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_ddp_checkpoint_restores_each_ranks_rng_and_refuses_another_world_size(tmp_path, capsys):
    # Dropout on: each rank draws its own masks, so resuming is exact only with each rank's own RNG.
    args = [*SMALL, "--max-steps", "8", "--save-every", "4", "--device", "cpu"]
    full = _torchrun(2, [*args, "--output", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-3000:]
    state = json.loads((tmp_path / "full/checkpoints/step-00000004/state.json").read_text())
    assert state["world_size"] == 2 and state["global_batch"] == 16
    resumed = _torchrun(2, [*args, "--output", str(tmp_path / "b"), "--resume",
                            str(tmp_path / "full/checkpoints/step-00000004")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_file(str(tmp_path / "full/model.safetensors")), load_file(str(tmp_path / "b/model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    code = main(["-q", "train", *args, "--output", str(tmp_path / "c"), "--resume",
                 str(tmp_path / "full/checkpoints/step-00000004")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "2 process" in err and len(err.splitlines()) == 1, err


INTERRUPT_SCRIPT = r"""
import os, signal, sys, torch.distributed as dist
sys.path.insert(0, {src!r})
from sbert_nli.distributed import init_distributed
from sbert_nli.engines.native import Interrupt
d = init_distributed()
with Interrupt(d) as interrupt:
    if d.rank == 1:
        os.kill(os.getpid(), signal.SIGINT)  # only rank 1 is told
    sys.stdout.write(f"{{d.rank}} {{interrupt.agreed()}}\n")  # one write: print() may interleave with the other rank's
    sys.stdout.flush()
dist.destroy_process_group()
"""


def test_an_interrupt_on_one_rank_is_agreed_by_every_rank(tmp_path):
    src = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src"))
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_SCRIPT.format(src=src))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(result.stdout.split("\n")[:2]) == ["0 True", "1 True"], result.stdout


# 4. the sentence-transformers engine refuses what it cannot do -------------------------------------
@pytest.mark.parametrize("option", [["--save-every", "3"], ["--resume"]])
def test_st_engine_refuses_unsupported_options_with_one_line(tmp_path, capsys, option):
    out = tmp_path / "st"
    code = main(["-q", "train", *SMALL, "--engine", "sentence-transformers", "--max-steps", "4", *option,
                 "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert option[0] in err and "--engine native" in err
    assert not out.exists()


# 5. exit codes and process state -------------------------------------------------------------------
STATE_SCRIPT = r"""
import logging, signal, sys, torch
sys.path.insert(0, {src!r})

class Glibc:  # records allocator calls: glibc's mallopt cannot be undone (no getter; it switches the
    calls = []  # adaptive mmap threshold off for good), so train() must not make any
    def __getattr__(self, name):
        return lambda *args: Glibc.calls.append((name, args)) or 1

from sbert_nli import host_memory
host_memory._glibc = lambda: Glibc()

def snapshot():
    return (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), torch.get_num_threads(),
            torch.get_default_dtype(), torch.is_grad_enabled(), list(logging.getLogger("sbert_nli").handlers),
            logging.getLogger("sbert_nli").level, list(Glibc.calls))

from sbert_nli.config import resolve
from sbert_nli.train import train
config = resolve("smoke", None, {{"train": {{"max_steps": 3, "batch_size": 8, "device": "cpu",
                                               "reuse_host_memory": True}},
                                   "data": {{"synthetic_pairs": 300}}}})
before = snapshot()
train(config, sys.argv[1], progress=False)
after = snapshot()
print(before == after, before[-1] == [], after[-1] == [], flush=True)
"""


def test_train_leaves_the_process_as_it_found_it(tmp_path):
    src = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src"))
    script = tmp_path / "state.py"
    script.write_text(STATE_SCRIPT.format(src=src))
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "True", "True"], result.stdout


def test_an_undefined_dev_score_is_logged_as_null_and_never_kept_as_best(data, tmp_path):
    """A dev file whose similarities are all equal (sentence2 := sentence1) has no Spearman: the
    loop logs null, keeps training and saves the final model instead of comparing None > float."""
    rows = (data / "stsbenchmark/sts-dev.csv").read_text(encoding="utf-8").splitlines()[:50]
    dev = tmp_path / "same.csv"
    dev.write_text("".join("\t".join(f[:5] + [f[5], f[5]]) + "\n" for f in (r.split("\t") for r in rows)),
                   encoding="utf-8")
    out = tmp_path / "run"
    assert main(["-q", "train", *SMALL, "--max-steps", "4", "--set", "train.eval_every=2",
                 "--set", f"data.eval_sts={dev}", "--output", str(out)]) == 0
    records = _records(out)
    assert [r["dev_spearman"] for r in records if "dev_spearman" in r] == [None, None]
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "results.json").read_text())["dev_spearman"] is None


def test_a_defined_best_survives_a_later_undefined_dev_score(monkeypatch):
    """80.0 then None: None must neither raise (None > float) nor replace the best model."""
    from types import SimpleNamespace

    from sbert_nli.config import RunConfig
    from sbert_nli.engines import native

    scores, saved = iter([80.0, None]), []
    monkeypatch.setattr(native, "evaluate_dev", lambda run: next(scores))
    monkeypatch.setattr(native, "check_finite", lambda run, state: None)
    monkeypatch.setattr(native, "save_model", lambda run, state: saved.append(state.step))
    monkeypatch.setattr(native, "barrier", lambda dist: None)
    config = RunConfig()
    config.train.eval_every, config.train.keep_best = 1, True
    run = SimpleNamespace(config=config, sts_dev=object(), total_steps=5, dist=SimpleNamespace(main=True))
    state = native.TrainState()
    for step in (1, 2):
        state.step, record = step, {}
        native.Evaluation()(run, state, None, record)
    assert state.best == 80.0 and saved == [1] and record["dev_spearman"] is None
