"""Nothing is lost or half-written: killed and failing saves leave the previous model intact."""

import errno
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sbert_nli.checkpoint import atomic_merge
from sbert_nli.errors import SbertNliError
from sbert_nli.model import SentenceEncoder

TEXTS = ["A man plays a guitar.", "A dog runs on the beach.", "Someone cooks dinner."]


@pytest.fixture()
def saved_model(tiny_encoder, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    tiny_encoder.save(out)
    return out, SentenceEncoder.load(str(out)).encode(TEXTS)


def test_killed_save_leaves_previous_model_loadable(saved_model):
    out, before = saved_model
    script = textwrap.dedent(f"""
        import os, sys, time, torch
        from pathlib import Path
        from sbert_nli.checkpoint import atomic_merge
        from sbert_nli.model import SentenceEncoder
        enc = SentenceEncoder.load({str(out)!r})
        with torch.no_grad():
            for p in enc.parameters():
                p.add_(1.0)  # a different model, so a mixed folder would show
        def write(tmp):
            enc.save(tmp)
            weights = tmp / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # half-written weights
            print("midway", flush=True)
            time.sleep(120)
        atomic_merge(Path({str(out)!r}), write)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "midway"
    finally:
        proc.kill()  # SIGKILL: no cleanup handler runs
        proc.wait()
    after = SentenceEncoder.load(str(out)).encode(TEXTS)
    assert np.array_equal(before, after)


def test_disk_full_while_saving_keeps_previous_model(saved_model, monkeypatch):
    out, before = saved_model
    enc = SentenceEncoder.load(str(out))

    def failing_write(tmp):
        enc.save(tmp)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SbertNliError, match="No space left on device.*previous model is unchanged"):
        atomic_merge(out, failing_write)
    assert not list(out.glob(".tmp-*"))  # the staging folder is cleaned up
    assert np.array_equal(SentenceEncoder.load(str(out)).encode(TEXTS), before)


def test_data_files_are_never_executed(tmp_path):
    """A data 'file' holding Python or YAML tags is read as text, never evaluated."""
    from sbert_nli.data.nli import read_nli_file

    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    path = tmp_path / "evil.jsonl"
    path.write_text('{"premise": "%s", "hypothesis": "!!python/object:os.system", "label": 0}\n' % payload.replace('"', "'"))
    data = read_nli_file(str(path))
    assert data.premise[0].startswith("__import__") and not marker.exists()
