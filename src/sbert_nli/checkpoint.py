"""Output folders, atomic saves and resumable checkpoints.

Nothing is ever half-written: every save goes to a temporary folder beside its target, is flushed
to disk, and only then renamed into place (a rename within one file system is atomic). A crash, a
full disk or Ctrl-C during a save leaves the previous model or checkpoint as it was.

Checkpoint folder ``checkpoints/step-00000100/``::

    encoder.safetensors   transformer weights       head.safetensors  loss head (if any)
    optimizer.pt          optimizer + scheduler + scaler (loaded with weights_only=True)
    rng.pt                every rank's torch (and CUDA) RNG state, in rank order
    state.json            the TrainState (step, epoch, batch within epoch, best dev score, world size,
                          global batch, counters) and the resolved config
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from sbert_nli.errors import SbertNliError

CHECKPOINTS = "checkpoints"


def prepare_output(output: str | Path, overwrite: bool, resume: bool) -> Path:
    """Check the output folder before any work: refuse a non-empty folder unless told otherwise."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise SbertNliError(f"--output {output} is a file; pass a folder")
    if output.is_dir() and any(p for p in output.iterdir() if not p.name.startswith(".tmp-")) and not (overwrite or resume):
        raise SbertNliError(
            f"output folder {output} exists and is not empty; pass --overwrite to replace the model in it "
            "(other files are kept) or --resume to continue its run"
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".tmp-write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SbertNliError(f"cannot write to output folder {output}: {exc.strerror or exc}") from None
    return output


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def atomic_folder(target: Path, write) -> None:
    """Call ``write(tmp_folder)``, then swap ``tmp_folder`` in as ``target`` (previous kept until then)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        _fsync_tree(tmp)
        old = None
        if target.exists():
            old = target.parent / f".tmp-old-{target.name}-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SbertNliError(f"could not save to {target}: {exc.strerror or exc}; the previous version is unchanged") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_merge(output: Path, write) -> None:
    """Write files with ``write(tmp)`` and move each top-level entry into ``output``.

    The slow part (serialising weights) happens in the temporary folder; what follows is a handful of
    renames, each atomic, with the weights moved last so a reader never sees new configs with old weights
    missing. Files in ``output`` that we did not write are left alone."""
    tmp = output / f".tmp-save-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        _fsync_tree(tmp)
        entries = sorted(tmp.iterdir(), key=lambda p: p.suffix == ".safetensors")
        for entry in entries:
            target = output / entry.name
            if entry.is_dir() and target.exists():
                old = output / f".tmp-old-{entry.name}-{uuid.uuid4().hex[:8]}"
                os.replace(target, old)
                os.replace(entry, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(entry, target)
    except OSError as exc:
        raise SbertNliError(f"could not save the model to {output}: {exc.strerror or exc}; the previous model is unchanged") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- resumable checkpoints
def save_checkpoint(output: Path, step: int, encoder, head, optimizer, scheduler, scaler, state: dict,
                    keep: int, rng_states: list | None = None) -> Path:
    """Write ``checkpoints/step-NNNNNNNN`` atomically and keep the newest ``keep``. ``rng_states``: every
    rank's RNG state in rank order (default: this process's), restored per rank by load_checkpoint."""
    from safetensors.torch import save_file

    def write(folder: Path) -> None:
        save_file({k: v.detach().contiguous() for k, v in encoder.transformer.state_dict().items()},
                  str(folder / "encoder.safetensors"))
        if head is not None and len(head.state_dict()):
            save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(folder / "head.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None}, folder / "optimizer.pt")
        torch.save({"ranks": rng_states or [_rng_state()]}, folder / "rng.pt")
        write_json(folder / "state.json", {**state, "step": step})

    target = output / CHECKPOINTS / f"step-{step:08d}"
    atomic_folder(target, write)
    for stale in list_checkpoints(output)[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return target


def _rng_state() -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def list_checkpoints(output: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted saves are ignored)."""
    folder = output / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.json").is_file())


def find_resume_checkpoint(output: Path, resume: str | bool) -> Path:
    if isinstance(resume, str) and resume not in ("", "latest"):
        path = Path(resume)
        if not (path / "state.json").is_file():
            raise SbertNliError(f"--resume {path} is not a checkpoint folder (no state.json)")
        return path
    found = list_checkpoints(output)
    if not found:
        raise SbertNliError(f"--resume: no checkpoint in {output / CHECKPOINTS}; train with --save-every N to write some")
    return found[-1]


def load_checkpoint(path: Path, encoder, head, optimizer, scheduler, scaler, rank: int = 0) -> dict:
    """Load weights, optimiser, schedule, scaler and this ``rank``'s RNG state; return state.json.
    Checkpoints written before per-rank RNG states (one state for all) restore that one everywhere."""
    from safetensors.torch import load_file

    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        encoder.transformer.load_state_dict(load_file(str(path / "encoder.safetensors")))
        if head is not None and (path / "head.safetensors").is_file():
            head.load_state_dict(load_file(str(path / "head.safetensors")))
        opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        if scaler is not None and opt.get("scaler"):
            scaler.load_state_dict(opt["scaler"])
        rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
        rng = rng["ranks"][rank] if "ranks" in rng else rng
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except (OSError, KeyError, IndexError, ValueError, RuntimeError) as exc:
        raise SbertNliError(f"checkpoint {path} is unreadable ({type(exc).__name__}); resume from an older one with --resume PATH") from None
    return state
