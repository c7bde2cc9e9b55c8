"""Checkpoints and exact resume: SIGKILL, Ctrl-C, crashes while writing, NaN losses."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from sbert_nli.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from sbert_nli.cli import main
from sbert_nli.errors import SbertNliError

STEPS = 240
ARGS = ["--preset", "smoke", "--set", "data.synthetic_pairs=1500", "--set", "train.log_every=1",
        "--max-steps", str(STEPS), "--batch-size", "8", "--save-every", "20", "--no-progress"]


def _weights(folder):
    return load_file(str(folder / "model.safetensors")), load_file(str(folder / "nli_head/head.safetensors"))


def _steps(folder):
    return [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert main(["-q", "train", *ARGS, "--output", str(out)]) == 0
    return out


def _start(out):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "sbert_nli", "-q", "train", *ARGS, "--output", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(out, proc, step):
    deadline = time.time() + 120
    while time.time() < deadline:
        if any(p.name == f"step-{step:08d}" for p in list_checkpoints(out)):
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def _assert_same_run(resumed, uninterrupted):
    (enc_a, head_a), (enc_b, head_b) = _weights(resumed), _weights(uninterrupted)
    for key in enc_b:
        assert torch.allclose(enc_a[key], enc_b[key], atol=1e-6, rtol=0), key
    assert torch.allclose(head_a["classifier.weight"], head_b["classifier.weight"], atol=1e-6, rtol=0)
    assert _steps(resumed) == list(range(1, STEPS + 1))  # no duplicated or missing steps


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_checkpoint(out, proc, 140)  # the second epoch starts at step 169
    proc.kill()
    proc.wait()
    assert main(["-q", "train", *ARGS, "--output", str(out), "--resume"]) == 0
    _assert_same_run(out, uninterrupted)


def test_ctrl_c_writes_a_checkpoint_and_resume_is_exact(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_checkpoint(out, proc, 40)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted at step" in err and "--resume" in err
    step = int(err.split("interrupted at step ")[1].split(";")[0])
    assert list_checkpoints(out)[-1].name == f"step-{step:08d}"
    assert main(["-q", "train", *ARGS, "--output", str(out), "--resume"]) == 0
    _assert_same_run(out, uninterrupted)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_encoder, monkeypatch):
    from sbert_nli.losses import SoftmaxLoss

    head = SoftmaxLoss(tiny_encoder.dim)
    optimizer = torch.optim.AdamW(list(tiny_encoder.parameters()) + list(head.parameters()))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    save_checkpoint(tmp_path, 10, tiny_encoder, head, optimizer, scheduler, None, {"epoch": 0, "batch_in_epoch": 10}, 2)
    real_save = torch.save

    def disk_full(obj, path, *a, **k):
        if str(path).endswith("rng.pt"):
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", disk_full)
    with torch.no_grad():
        next(tiny_encoder.parameters()).add_(1.0)
    with pytest.raises(SbertNliError, match="No space left"):
        save_checkpoint(tmp_path, 20, tiny_encoder, head, optimizer, scheduler, None, {"epoch": 0, "batch_in_epoch": 20}, 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000010"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    before = next(tiny_encoder.parameters()).detach().clone()
    state = load_checkpoint(list_checkpoints(tmp_path)[0], tiny_encoder, head, optimizer, scheduler, None)
    assert state["step"] == 10 and torch.allclose(next(tiny_encoder.parameters()), before - 1.0, atol=1e-6)


def test_nan_loss_stops_with_a_clear_message_and_keeps_checkpoints(tmp_path, monkeypatch, capsys):
    from sbert_nli import losses

    real = losses.SoftmaxLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        value = real(self, *args)
        return value * float("nan") if calls["n"] > 25 else value

    monkeypatch.setattr(losses.SoftmaxLoss, "forward", poisoned)
    out = tmp_path / "run"
    code = main(["-q", "train", *ARGS, "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 3 and err.startswith("error: loss became nan at or before step 26") and "lower --lr" in err
    assert [p.name for p in list_checkpoints(out)] == ["step-00000020"]
    assert len(list(out.glob("model.safetensors"))) == 0  # no model from a diverged run


def test_keep_last_k_checkpoints(uninterrupted):
    names = [p.name for p in list_checkpoints(uninterrupted)]
    assert names == [f"step-{STEPS - 20:08d}", f"step-{STEPS:08d}"]
    state = json.loads((list_checkpoints(uninterrupted)[-1] / "state.json").read_text())
    assert state["config"]["train"]["save_every"] == 20 and state["step"] == STEPS


def test_resume_refuses_different_settings(tmp_path, uninterrupted, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    args = ["16" if a == "8" else a for a in ARGS]  # the batch size, changed
    code = main(["-q", "train", *args, "--output", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "train.batch_size=8" in err and "this run has 16" in err
    code = main(["-q", "train", *ARGS, "--set", "train.padding_free=false", "--output", str(out), "--resume"])
    err = capsys.readouterr().err  # values as the command line writes them (true/false), not Python's
    assert code == 2 and "train.padding_free=true, this run has false" in err


@pytest.mark.parametrize("key", ["padding_free", "fast_dropout"])
def test_a_checkpoint_older_than_a_key_is_not_resumed_with_its_new_default(tmp_path, uninterrupted, capsys, key):
    """train.padding_free and train.fast_dropout (default true) changed what a run computes (dropout
    masks); a checkpoint written before the key existed ran without it, so resuming it with the
    default would silently change the run. Refused with the setting that resumes it exactly; that
    setting is accepted."""
    import shutil

    out = tmp_path / "old"
    shutil.copytree(uninterrupted, out)
    for state_file in out.glob("checkpoints/*/state.json"):
        state = json.loads(state_file.read_text())
        state["config"]["train"].pop(key)
        state_file.write_text(json.dumps(state))
    code = main(["-q", "train", *ARGS, "--output", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: checkpoint") and f"predates train.{key}" in err[-1]
    assert f"resume with --set train.{key}=false" in err[-1]
    # A padding-free checkpoint from before fast_dropout ran split chunks: the message says the rest
    # of the run cannot draw the same masks (one chunk now).
    assert ("this version runs one chunk" in err[-1]) is (key == "fast_dropout")
    code = main(["-q", "train", *ARGS, "--set", f"train.{key}=false", "--output", str(out), "--resume"])
    assert code == 0


def test_a_checkpoint_older_than_both_keys_names_both_settings(tmp_path, uninterrupted, capsys):
    import shutil

    out = tmp_path / "older"
    shutil.copytree(uninterrupted, out)
    for state_file in out.glob("checkpoints/*/state.json"):
        state = json.loads(state_file.read_text())
        state["config"]["train"].pop("padding_free"), state["config"]["train"].pop("fast_dropout")
        state_file.write_text(json.dumps(state))
    code = main(["-q", "train", *ARGS, "--output", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].endswith("resume with --set train.padding_free=false --set train.fast_dropout=false")
    code = main(["-q", "train", *ARGS, "--set", "train.padding_free=false", "--set", "train.fast_dropout=false",
                 "--output", str(out), "--resume"])
    assert code == 0
