"""Experiment tracking: the training curves where people look for them, TensorBoard or Weights & Biases.

``train.report_to`` (``--report-to``) picks the tracker: ``none`` (default), ``tensorboard`` (event
files in ``<output>/tensorboard/``, written by ``torch.utils.tensorboard.SummaryWriter``) or ``wandb``
(the ``wandb`` client, when installed). Only rank 0 opens one; every other rank gets the no-op
:class:`Tracker`. The trainer hands it each record it also writes to ``metrics.jsonl``, so both
always hold the same numbers at the same optimiser steps.

Tags (the same for both engines)::

    train/loss          mean training loss over the log interval
    train/lr            learning rate after the step
    train/pairs_per_s   training pairs per second over the log interval
    eval/dev_spearman   STS dev Spearman x100 (cosine), at evaluation steps
    final/<metric>      the run's final results (dev_spearman, heldout_accuracy), at the last step
    config (text)       the resolved config as TOML; also as TensorBoard hparams / wandb config

Example::

    with open_tracker("tensorboard", "runs/x", config.to_dict()) as tracker:
        tracker.log({"step": 10, "loss": 0.93, "lr": 2e-5, "pairs_per_s": 310.0})
"""

from __future__ import annotations

import os
from pathlib import Path

SCALARS = {"loss": "train/loss", "lr": "train/lr", "pairs_per_s": "train/pairs_per_s",
           "dev_spearman": "eval/dev_spearman"}
FINAL = ("dev_spearman", "heldout_accuracy")
TENSORBOARD_DIR = "tensorboard"


def defined(values: dict, names) -> dict[str, float]:
    """``{name: float}`` for the ``names`` present in ``values`` with a defined number. An undefined
    score (``None``/NaN: e.g. a dev Spearman over constant similarities) is left out: a tracker has no
    "undefined", and 0 would be a wrong value; ``metrics.jsonl`` keeps the ``null``."""
    out = {}
    for name in names:
        value = values.get(name)
        if value is not None and float(value) == float(value):
            out[name] = float(value)
    return out


class Tracker:
    """No tracking: ``report_to = "none"``, or a rank other than 0. Subclasses write somewhere.

    Writers open on the first record, so a run that fails before its first step leaves no files.
    A resumed run sets ``start_step`` (the checkpoint's step) before its first record."""

    start_step = 0

    def log(self, record: dict) -> None:
        """Record the scalars of one ``metrics.jsonl`` record (keys of :data:`SCALARS`) at ``record["step"]``."""

    def log_final(self, results: dict, step: int) -> None:
        """Record the run's final metrics (``final/<name>``) at optimiser step ``step``."""

    def close(self) -> None:
        """Flush and release files and connections; idempotent."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorBoardTracker(Tracker):
    """Event files through ``torch.utils.tensorboard.SummaryWriter`` (read them with ``tensorboard --logdir``).

    Like ``metrics.jsonl``, the curves hold one value per step: a fresh run in a reused folder hides the
    old files' events, a resumed run (``start_step`` > 0) those after its checkpoint."""

    def __init__(self, folder: Path, config: dict):
        self.folder, self.config, self.writer = folder, config, None

    def _open(self):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams

            from sbert_nli.config import to_toml

            # purge_step: TensorBoard hides older files' events from this step on (all of them for a fresh
            # run in a reused folder, those after the checkpoint for a resumed one).
            self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=self.start_step + 1 if self.start_step else 0)
            # Markdown: a 4-space indent keeps the TOML verbatim in TensorBoard's text tab.
            text = "\n".join("    " + line for line in to_toml(self.config).splitlines())
            self.writer.add_text("config", text, self.start_step)
            for summary in hparams(_flat_hparams(self.config), {}):  # in this run's own file, not a new sub-run
                self.writer.file_writer.add_summary(summary)
        return self.writer

    def log(self, record: dict) -> None:
        writer = self._open()
        for key, value in defined(record, SCALARS).items():
            writer.add_scalar(SCALARS[key], value, record["step"])
        writer.flush()  # one flush per log interval: the curve is live in TensorBoard

    def log_final(self, results: dict, step: int) -> None:
        writer = self._open()
        for key, value in defined(results, FINAL).items():
            writer.add_scalar(f"final/{key}", value, step)
        writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbTracker(Tracker):
    """A Weights & Biases run (project ``$WANDB_PROJECT`` or ``sbert-nli``, named after the output
    folder, files under it); the resolved config is the run's config."""

    def __init__(self, folder: Path, config: dict):
        self.folder, self.config, self.run = folder, config, None

    def _open(self):
        if self.run is None:
            import wandb

            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sbert-nli"), name=self.folder.name,
                                  dir=str(self.folder), config=self.config, resume="allow" if self.start_step else None)
        return self.run

    def log(self, record: dict) -> None:
        self._open().log({SCALARS[k]: v for k, v in defined(record, SCALARS).items()}, step=record["step"])

    def log_final(self, results: dict, step: int) -> None:
        final = {f"final/{k}": v for k, v in defined(results, FINAL).items()}
        if final:
            self._open().log(final, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def open_tracker(kind: str, output: str | Path, config: dict, main: bool = True) -> Tracker:
    """The tracker for ``train.report_to = kind`` writing under ``output``; a no-op one when ``kind`` is
    "none" or on ranks other than the main one (``main=False``). ``config`` is the resolved config as
    ``RunConfig.to_dict()``. Package availability is checked earlier, by ``config.validate``."""
    if kind == "none" or not main:
        return Tracker()
    if kind == "tensorboard":
        return TensorBoardTracker(Path(output) / TENSORBOARD_DIR, config)
    if kind == "wandb":
        return WandbTracker(Path(output), config)
    raise ValueError(f"unknown tracker {kind!r}")  # config.validate refuses it first: a bug if reached


def trainer_callback(tracker: Tracker, pairs_per_step: int):
    """A ``transformers.TrainerCallback`` that hands the Hugging Face Trainer's logs (sentence-transformers
    engine) to ``tracker`` under the native engine's names (loss, lr, pairs_per_s over the log interval).
    ``pairs_per_step``: training pairs per optimiser step over all ranks (batch x grad_accum x world)."""
    import time

    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def __init__(self):
            self.last = (0, time.perf_counter())

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = (state.global_step, time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            dev = (logs or {}).get("eval_dev_spearman")  # the engine's dev evaluator; NaN = undefined, not logged
            if dev is not None and dev == dev and state.is_world_process_zero:
                tracker.log({"step": state.global_step, "dev_spearman": float(dev)})
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            step, now = state.global_step, time.perf_counter()
            record = {"step": step, "epoch": logs.get("epoch"), "loss": float(logs["loss"]),
                      "lr": float(logs.get("learning_rate", 0.0)),
                      "pairs_per_s": (step - self.last[0]) * pairs_per_step / max(now - self.last[1], 1e-9)}
            self.last = (step, now)
            tracker.log(record)

    return _Callback()


def _flat_hparams(config: dict) -> dict:
    """``{"train.lr": 2e-05, ...}``: TensorBoard hparams take scalars and strings only."""
    flat = {}
    for section, values in config.items():
        for key, value in values.items():
            if value is None:
                continue
            flat[f"{section}.{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat
