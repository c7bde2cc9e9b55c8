"""The native engine: ``setup`` builds a :class:`Run`, :func:`loop` advances a :class:`TrainState`.

Shape (nanoGPT / torchtune recipes)::

    run = setup(config, output, overwrite, resume)          # data, model, loss, optimiser, schedule, DDP
    state = TrainState(...) or restore(run)      # ALL mutable loop state; the checkpoint stores it
    loop(run, state, hooks)                      # for each global batch:
        result = run.optimiser_step(run, index)  #   forward/backward over micro-batches, clip, step
        for hook in hooks: hook(run, state, result, record)   # one place where everything attaches
    finish(run, state)                           # final evaluation, finite check, model save

The hooks, in order: :class:`Evaluation` (dev STS on its own cadence, best model), :class:`MetricsLog`
(loss, lr, speed; the finite check of the losses), :class:`Checkpoints` (every ``save_every``), and
:class:`Interrupt` (Ctrl-C agreed across ranks -> checkpoint -> exit 130). Every save, checkpoint
or model, is preceded by :func:`check_finite`, so no saved file holds non-finite weights.

Batch semantics: ``batch_size`` is per device; one optimiser step consumes a global batch of
``batch_size x world_size x grad_accum`` examples drawn by one sampler that every rank computes
identically from (seed, epoch). Micro-batch (rank r, accumulation k) is slice ``k*world + r`` of it,
and each micro-loss is weighted by its share of the global batch, so for a loss that is a mean over
independent examples (softmax, cosine) the update equals a single process's update on the global
batch. MNR and CoSENT couple the examples of a batch (in-batch negatives, one ranking), so with
``grad_accum`` K > 1 they use :func:`cached_optimiser_step` instead: each rank's K micro-batches are
encoded as K chunks of one batch (GradCache, ``gradcache.py``), which gives exactly the update of the
K-times larger batch. The schedule counts optimiser steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sbert_nli import checkpoint as ckpt
from sbert_nli.config import RunConfig, to_toml
from sbert_nli.distributed import Dist, barrier, init_distributed
from sbert_nli.errors import DivergedError, Interrupted, SbertNliError

log = logging.getLogger("sbert_nli")


# --------------------------------------------------------------------------- state and run
@dataclass
class TrainState:
    """All mutable loop state. It *is* the resume point: a checkpoint's ``state.json`` holds it.

    ``batch_in_epoch`` counts the batches of ``epoch`` already trained on; ``pairs``/``tokens`` count
    examples and real (non-padding) tokens of this rank since step 0; ``best`` is the best dev score."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    world_size: int = 1
    global_batch: int = 0
    pairs: int = 0
    tokens: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


@dataclass
class StepResult:
    """What one optimiser step reports: this rank's share of the global mean loss (a 0-dim tensor, not
    synced to the host) and the examples and real tokens it consumed on this rank."""

    loss: torch.Tensor
    pairs: int
    tokens: int


@dataclass
class Run:
    """Everything :func:`setup` builds; fixed for the whole run (the loop mutates only TrainState and
    the modules' weights). ``optimiser_step`` is the step function; replace it for another step."""

    config: RunConfig
    dist: Dist
    device: torch.device
    precision: str
    out: Path
    encoder: torch.nn.Module
    loss_fn: torch.nn.Module
    model: torch.nn.Module  # Objective, DDP-wrapped under several processes
    examples: object
    data: object
    heldout: object
    sts_dev: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    clipped: list
    total_steps: int
    global_batch: int
    grad_buffer: object = None
    optimiser_step: Callable = None
    _epoch_batches: dict = field(default_factory=dict)

    @property
    def head(self):
        """The trained head saved with the model and checkpoints (softmax), else None."""
        return self.loss_fn if self.config.train.loss == "softmax" else None

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of ``epoch``: a pure function of (seed, epoch); the latest is cached."""
        if epoch not in self._epoch_batches:
            t = self.config.train
            self._epoch_batches = {epoch: self.examples.batches(
                self.global_batch, t.seed, epoch, t.group_by_length, t.group_premises, drop_last=self.dist.world > 1)}
        return self._epoch_batches[epoch]


# --------------------------------------------------------------------------- the loop
def loop(run: Run, state: TrainState, hooks: list) -> None:
    """Train until ``state.step == run.total_steps``; after each optimiser step call every hook as
    ``hook(run, state, result, record)`` (``record`` collects this step's metrics line)."""
    run.model.train()
    while state.step < run.total_steps:
        batches = run.batches(state.epoch)
        while state.batch_in_epoch < len(batches) and state.step < run.total_steps:
            result = run.optimiser_step(run, batches[state.batch_in_epoch])
            state.step += 1
            state.batch_in_epoch += 1
            state.pairs += result.pairs
            state.tokens += result.tokens
            record: dict = {}
            for hook in hooks:
                hook(run, state, result, record)
        if state.batch_in_epoch >= len(batches):
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0


def optimiser_step(run: Run, index: np.ndarray) -> StepResult:
    """One optimiser step on the global batch ``index`` (example indices): forward and backward over
    this rank's micro-batches, each loss weighted by its share of the global batch (gradients are
    synced by DDP on the last one), then unscale (fp16), clip, step, schedule, zero."""
    from sbert_nli.precision import autocast

    t, d = run.config.train, run.dist
    micro = np.array_split(index, t.grad_accum * d.world)
    step_loss, tokens = torch.zeros((), device=run.device), 0
    for k in range(t.grad_accum):
        part = micro[k * d.world + d.rank]
        weight = len(part) * d.world / len(index)
        chunks, positions, labels, n_tokens = make_batch(run.examples, part, t.dedup_batch, run.device,
                                                         split_cost(run), pad_multiple=t.pad_to_multiple_of)
        tokens += n_tokens
        last = k == t.grad_accum - 1
        with run.model.no_sync() if (d.world > 1 and not last) else contextlib.nullcontext():
            with autocast(run.device.type, run.precision):
                loss = run.model(chunks, positions, labels)
            scaled = loss.float() * weight
            run.scaler.scale(scaled).backward()
        step_loss += scaled.detach() / d.world  # this rank's share of the global mean
    _apply_gradients(run)
    return StepResult(step_loss, sum(len(p) for p in micro[d.rank::d.world]), tokens)


BATCH_COUPLED_LOSSES = ("mnr", "cosent")  # a batch's examples enter each other's loss terms


def cached_optimiser_step(run: Run, index: np.ndarray) -> StepResult:
    """One optimiser step for a batch-coupled loss with ``grad_accum`` K > 1 (GradCache): this rank's
    share of the global batch (``batch_size x K`` examples) is one batch, its distinct sentences
    encoded in K chunks; the loss sees every example of it (MNR: all of them are candidates; with
    ``mnr_gather_across_ranks`` every rank's too), at the activation memory of one chunk. Same
    update as ``grad_accum`` 1 with a K-times larger ``batch_size`` (tested)."""
    from sbert_nli.gradcache import cached_backward
    from sbert_nli.precision import autocast

    t, d = run.config.train, run.dist
    part = np.array_split(index, d.world)[d.rank]
    weight = len(part) * d.world / len(index)
    chunks, positions, labels, tokens = make_batch(run.examples, part, t.dedup_batch, run.device,
                                                   split_cost(run, t.grad_accum), n_chunks=t.grad_accum,
                                                   pad_multiple=t.pad_to_multiple_of)
    objective = run.model.module if d.world > 1 else run.model

    def encode(chunk):  # through the (DDP-wrapped) module, so DDP sees each chunk's backward
        with autocast(run.device.type, run.precision):
            return run.model([chunk])

    def backward(loss):
        run.scaler.scale(loss.float() * weight).backward()

    def sync(last: bool):  # DDP all-reduces once, after the last chunk
        return contextlib.nullcontext() if last or d.world == 1 else run.model.no_sync()

    loss = cached_backward(encode, chunks, lambda emb: objective.loss_of(emb, positions, labels), backward, sync)
    _apply_gradients(run)
    return StepResult(loss.float() * weight / d.world, len(part), tokens)


def split_cost(run: Run, n_chunks: int = 1) -> int:
    """The ``split_cost`` for ``collate``: ``train.split_padding_cost`` when training padded. Padding-
    free, a step's rows are not split (splitting saves padded rows of the linear layers, which the
    packed forward never computes, and each extra chunk costs its own kernel calls, dropout draws and
    weight-gradient sums: one chunk measured +4.5 % on MiniLM, RESULTS.md §8); the K chunks of a
    GradCache step (``n_chunks`` > 1) are still cut from length-sorted rows (a cost no split can
    pay for sorts and never cuts), so each chunk's attention pads to its own longest row."""
    if not run.encoder.padding_free:
        return run.config.train.split_padding_cost
    return 0 if n_chunks == 1 else 2 ** 40


def _apply_gradients(run: Run) -> None:
    """After the backward passes: unscale (fp16), clip, step, schedule, zero."""
    t = run.config.train
    run.scaler.unscale_(run.optimizer)
    if t.max_grad_norm > 0:
        clip_gradients(run.clipped, t.max_grad_norm, run.device)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.grad_buffer is not None:
        run.grad_buffer.reset()


def clip_gradients(params: list, max_norm: float, device: torch.device) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (global L2 norm, coefficient ``max_norm / (norm + 1e-6)``
    clamped to 1): same norm, same gradients, bit for bit (tested) for any finite norm. Torch always
    multiplies, by 1 when the norm is within bounds, to avoid a device-to-host sync on accelerators;
    on the CPU there is no sync to avoid, so the no-op multiply over every gradient (~100 tensors) is
    skipped there. A NaN norm is not multiplied in (torch would turn every gradient NaN); the run
    stops on it either way (check_finite)."""
    if device.type != "cpu":
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if float(max_norm / (norm + 1e-6)) < 1.0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


# --------------------------------------------------------------------------- entry point
def train(config: RunConfig, output: str | Path, overwrite: bool = False, resume: str | bool = False,
          progress: bool = True, pairs=None) -> dict:
    """Train, evaluate and save into ``output``; returns the final metrics (see :func:`finish`).

    Raises SbertNliError (bad input, exit 2), DivergedError (non-finite loss or weights, exit 3),
    Interrupted (Ctrl-C/SIGTERM after a checkpoint, exit 130). A run that fails before writing
    anything leaves no output folder behind. Leaves the process as it found it: signal handlers,
    torch's thread count, default dtype and grad mode (and glibc's allocator: see speed_switches).
    ``pairs`` (``NLIData``) replaces reading ``config.data.train`` (in-memory data from the Python API)."""
    created = not Path(output).exists() and os.environ.get("RANK", "0") == "0"
    try:
        with _process_state_restored():
            return _train(config, output, overwrite, resume, progress, pairs)
    except BaseException:
        folder = Path(output)
        if created and folder.is_dir() and not any(p for p in folder.iterdir() if not p.name.startswith(".tmp-")):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _train(config: RunConfig, output, overwrite: bool, resume, progress: bool, pairs=None) -> dict:
    run = setup(config, output, overwrite, resume, pairs)
    state = restore(run, resume) if resume else TrainState(world_size=run.dist.world, global_batch=run.global_batch)
    if resume and run.dist.main:
        _truncate_metrics(run.out / "metrics.jsonl", state.step)
    started, start_pairs = time.perf_counter(), state.pairs
    metrics = MetricsLog(run, state, progress, append=bool(resume))
    with contextlib.closing(metrics):
        evaluation = Evaluation()
        with Interrupt(run.dist) as interrupt, speed_switches(run):
            loop(run, state, [evaluation, metrics, Checkpoints(), interrupt])
        results = finish(run, state, time.perf_counter() - started, state.pairs - start_pairs, evaluation)
        metrics.tracker.log_final(results, state.step)
    return results


@contextlib.contextmanager
def _process_state_restored():
    """Process-wide settings torch or a library may change during a run, put back afterwards."""
    threads, dtype, grad = torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)


@contextlib.contextmanager
def speed_switches(run: Run):
    """The per-step speed switches that need a context: the word-embedding gradient buffer (single
    process: DDP must see every parameter's gradient hook). ``reuse_host_memory`` is process-wide and
    irreversible in glibc, so the CLI applies it (see host_memory.py), never the library."""
    with run.grad_buffer or contextlib.nullcontext():
        yield


# --------------------------------------------------------------------------- setup
def setup(config: RunConfig, output: str | Path, overwrite: bool = False, resume: str | bool = False,
          pairs=None) -> Run:
    """Device, output folder, data, model, loss, DDP wrapping, optimiser and schedule."""
    from sbert_nli.data.sts import read_sts
    from sbert_nli.precision import resolve_device, resolve_precision
    from sbert_nli.prepare import prepare_data_and_model

    t = config.train
    dist_info = init_distributed()
    device = resolve_device(t.device)
    if dist_info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    precision = resolve_precision(t.precision, device)
    out = ckpt.prepare_output(output, overwrite, bool(resume)) if dist_info.main else Path(output)
    barrier(dist_info)
    torch.manual_seed(t.seed)
    sts_dev = read_sts(config.data.eval_sts) if config.data.eval_sts else None
    encoder, examples, data, heldout = prepare_data_and_model(config, log_progress=dist_info.main, pairs=pairs)
    encoder.to(device)
    if t.padding_free:  # dense layers on real tokens only, when the model can be packed (logged if not)
        from sbert_nli.padding_free import enable

        enable(encoder)
    if fast_dropout_applies(t, device):
        from sbert_nli import dropout

        if dropout.enable(encoder) and dist_info.main:
            log.info("dropout masks from numpy's PCG64 (train.fast_dropout=false for torch's generator)")
    elif t.fast_dropout and dist_info.main:
        log.info("fast dropout off: %s (torch's dropout)", "compiled" if t.compile else f"device {device.type}")
    loss_fn, model = _build_objective(config, encoder, device, dist_info)
    if dist_info.main:
        log.info("examples: %s; %d sentence(s) truncated to %d tokens", examples.note, examples.store.truncated,
                 encoder.max_seq_length)
    global_batch = t.batch_size * dist_info.world * t.grad_accum
    cached = t.grad_accum > 1 and t.loss in BATCH_COUPLED_LOSSES
    run = Run(config, dist_info, device, precision, out, encoder, loss_fn, model, examples, data, heldout, sts_dev,
              None, None, None, [], 0, global_batch, optimiser_step=cached_optimiser_step if cached else optimiser_step)
    steps_per_epoch = len(run.batches(0))  # epoch 0's batches count the steps and are then trained on
    if steps_per_epoch == 0:
        raise SbertNliError(f"{len(examples)} training examples is less than one global batch of {global_batch}")
    run.total_steps = steps_per_epoch * t.epochs
    if t.max_steps:
        run.total_steps = min(run.total_steps, t.max_steps)
    _build_optimiser(run)
    return run


def fast_dropout_applies(t, device: torch.device) -> bool:
    """Whether ``train.fast_dropout`` (PCG64 masks, sbert_nli.dropout) is used: on CPU, uncompiled.
    On a GPU torch's fused dropout kernel is already fast; compiled code draws its own masks
    (inductor's Philox), and a numpy call inside the graph would only break it."""
    return t.fast_dropout and device.type == "cpu" and not t.compile


def _build_objective(config: RunConfig, encoder, device: torch.device, dist_info: Dist):
    """The loss module (seeded head for softmax) and the module the loop calls (DDP-wrapped if needed)."""
    from sbert_nli.losses import build_loss

    t = config.train
    torch.manual_seed(t.seed)  # the softmax head's init depends on the seed only (both engines share it)
    loss_fn = build_loss(t.loss, encoder.dim, t.head_features, t.mnr_scale, t.mnr_symmetric, t.cosent_scale)
    loss_fn.to(device)
    gather = None
    if t.loss == "mnr" and t.mnr_gather_across_ranks and dist_info.world > 1:
        from sbert_nli.distributed import gather_candidates

        gather = gather_candidates
    model = Objective(encoder, loss_fn, "mnr" if t.loss == "mnr" else "pairs", gather)
    if dist_info.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        encoder.transformer.compile(dynamic=True)  # in place: parameter names (and saved files) unchanged
    return loss_fn, model


def _build_optimiser(run: Run) -> None:
    """AdamW (BERT's weight-decay groups), linear warm-up/decay per optimiser step, the fp16 scaler
    (a no-op object otherwise), the clipped parameters and the embedding-gradient buffer."""
    t = run.config.train
    modules = [run.encoder, run.loss_fn]
    run.clipped = [p for m in (modules if t.clip_head else modules[:1]) for p in m.parameters() if p.requires_grad]
    fused = t.fused_adamw and run.device.type in ("cuda", "cpu")
    run.optimizer = torch.optim.AdamW(param_groups(modules, t.weight_decay), lr=t.lr, fused=fused or None)
    warmup = math.ceil(run.total_steps * t.warmup_ratio)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, _Schedule(run.total_steps, warmup))
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.precision == "fp16")  # bf16 needs none
    if t.embedding_grad_buffer and run.dist.world == 1:
        from sbert_nli.embedding_grad import for_transformer

        run.grad_buffer = for_transformer(run.encoder.transformer)


@dataclass
class _Schedule:
    total_steps: int
    warmup_steps: int

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.warmup_steps)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from 0 to 1 over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def param_groups(modules, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (as BERT and SBERT)."""
    decay, no_decay = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            lowered = name.lower()
            (no_decay if name.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Objective(torch.nn.Module):
    """Encoder + loss as one module, so DDP syncs the head's gradients with the encoder's.

    ``kind`` "mnr": the loss takes (anchor, positive, negative rows, gather); otherwise ("pairs":
    softmax, cosine, CoSENT) it takes (first rows, second rows, labels or scores). Without
    ``positions`` the module only encodes (a GradCache pass) and returns the ``[N, D]`` embeddings."""

    def __init__(self, encoder, loss, kind: str, gather=None):
        super().__init__()
        self.encoder, self.loss, self.kind, self.gather = encoder, loss, kind, gather

    def forward(self, chunks, positions=None, labels=None):
        emb = torch.cat([self.encoder(ids, mask) for ids, mask in chunks]) if len(chunks) > 1 else self.encoder(*chunks[0])
        return emb if positions is None else self.loss_of(emb, positions, labels)

    def loss_of(self, emb, positions, labels=None):
        if self.kind == "mnr":
            return self.loss(emb, positions[0], positions[1], positions[2], gather=self.gather)
        return self.loss(emb, positions[0], positions[1], labels)


def make_batch(examples, index: np.ndarray, dedup: bool, device: torch.device, split_cost: int = 0,
               n_chunks: int = 1, pad_multiple: int = 0):
    """Token chunks, per-role rows and labels for the examples ``index`` (see data.batching.collate),
    and the number of real (non-padding) tokens."""
    from sbert_nli.data.batching import collate

    roles = list(examples.roles.values())
    columns = [r[index] for r in roles]
    if examples.kind == "mnr":
        columns[2] = columns[2][columns[2] >= 0]  # every hard negative of the batch is a candidate
    chunks, positions = collate(examples.store, columns, dedup, split_cost, n_chunks, pad_multiple)
    labels = _to_device(examples.labels[index], device) if examples.labels is not None else None
    tokens = sum(int(mask.sum()) for _, mask in chunks)
    return ([(_to_device(ids, device), _to_device(mask, device)) for ids, mask in chunks],
            [_to_device(p, device) for p in positions], labels, tokens)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)


# --------------------------------------------------------------------------- resume
RESUME_FREE_KEYS = {"eval_every", "log_every", "save_every", "keep_checkpoints", "keep_best", "device"}


def restore(run: Run, resume: str | bool) -> TrainState:
    """Load the checkpoint ``resume`` names (or the newest) into the run; return its TrainState.
    Refuses (SbertNliError) a checkpoint written with other settings, world size or global batch."""
    found = ckpt.find_resume_checkpoint(run.out, resume)
    saved = ckpt.load_checkpoint(found, run.encoder, run.head, run.optimizer, run.scheduler, run.scaler,
                                 rank=run.dist.rank)
    _check_resume_config(saved.get("config", {}), run.config.to_dict(), found)
    state = TrainState.from_dict(saved)
    if "world_size" in saved and (state.world_size, state.global_batch) != (run.dist.world, run.global_batch):
        raise SbertNliError(
            f"checkpoint {found} was written by {state.world_size} process(es) with a global batch of "
            f"{state.global_batch}; this run has {run.dist.world} process(es), global batch {run.global_batch}: "
            f"resume with --nproc {state.world_size} (exact resume needs the same batches)")
    state.world_size, state.global_batch = run.dist.world, run.global_batch
    if run.dist.main:
        log.info("resumed from %s (step %d)", found, state.step)
    return state


# Settings added after checkpoints existed, whose default changed what a run computes: a checkpoint
# without the key was written with this value (the behaviour before the key).
BEFORE_THE_KEY = {("train", "padding_free"): False, ("train", "fast_dropout"): False}


def _check_resume_config(saved: dict, current: dict, found: Path) -> None:
    """Exact resume needs the settings that shape the run: refuse a checkpoint written with others
    (including one older than a setting whose default changed the run: ``BEFORE_THE_KEY``)."""
    older = [(f"{section}.{key}", old, current.get(section, {}).get(key)) for (section, key), old in BEFORE_THE_KEY.items()
             if key not in saved.get(section, {}) and current.get(section, {}).get(key) != old]
    if older:  # all of them in one message: an old checkpoint usually lacks every newer key
        ran = ", ".join(f"{name} (it ran with {json.dumps(old)}, this run has {json.dumps(now)})" for name, old, now in older)
        flags = " ".join(f"--set {name}={json.dumps(old)}" for name, old, _ in older)
        note = ""
        if saved.get("train", {}).get("padding_free") and "fast_dropout" not in saved.get("train", {}):
            note = (" (its padding-free steps ran in length-sorted chunks, this version runs one chunk: the resumed"
                    " steps draw their dropout masks differently, same function)")
        raise SbertNliError(f"checkpoint {found} predates {ran}; resume with {flags}{note}")
    for section, values in saved.items():
        for key, value in values.items():
            if key in RESUME_FREE_KEYS:
                continue
            now = current.get(section, {}).get(key)
            if now != value:
                raise SbertNliError(f"checkpoint {found} was written with {section}.{key}={json.dumps(value, default=str)}, this run "
                                    f"has {json.dumps(now, default=str)}; resume with the same settings (--set {section}.{key}="
                                    f"{json.dumps(value, default=str)}; all of them are in its state.json)")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (no duplicated steps)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line torn by the crash
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# --------------------------------------------------------------------------- finite check and saves
def check_finite(run: Run, state: TrainState, losses: np.ndarray | None = None) -> None:
    """Raise DivergedError if ``losses`` or any trained weight is non-finite. Called before every save
    (every rank holds the same weights, so every rank reaches the same verdict)."""
    bad = None
    if losses is not None and not np.all(np.isfinite(losses)):
        bad = f"loss became {losses[~np.isfinite(losses)][0]}"
    elif losses is None:
        params = [p for m in (run.encoder, run.loss_fn) for p in m.parameters()]
        if params and not bool(torch.stack([p.detach().isfinite().all() for p in params]).all()):
            bad = "weights became non-finite"
    if bad is None:
        return
    good = ckpt.list_checkpoints(run.out)
    kept = f"the last good checkpoint is {good[-1]}" if good else "no checkpoint was written"
    hint = "" if run.precision == "fp32" else " or use --precision fp32"
    raise DivergedError(f"{bad} at or before step {state.step}; lower --lr{hint} ({kept}; nothing non-finite "
                        "was saved)")


def save_checkpoint(run: Run, state: TrainState) -> None:
    """A resumable checkpoint of (weights, optimiser, schedule, scaler, every rank's RNG, TrainState),
    written by rank 0 after the finite check; every rank waits for it."""
    check_finite(run, state)
    rng = _gather_rng_states(run.dist)
    if run.dist.main:
        ckpt.save_checkpoint(run.out, state.step, run.encoder, run.head, run.optimizer, run.scheduler, run.scaler,
                             {**state.to_dict(), "config": run.config.to_dict()}, run.config.train.keep_checkpoints,
                             rng_states=rng)
    barrier(run.dist)


def _gather_rng_states(d: Dist) -> list:
    """Every rank's torch (and CUDA) RNG state, in rank order (each rank draws its own dropout masks)."""
    mine = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        mine["cuda"] = torch.cuda.get_rng_state_all()
    if d.world == 1:
        return [mine]
    import torch.distributed as dist

    states = [None] * d.world
    dist.all_gather_object(states, mine)
    return states


def save_model(run: Run, state: TrainState, metrics: dict | None = None) -> None:
    """The model folder (sentence-transformers layout + NLI head + resolved config), rank 0 only."""
    check_finite(run, state)

    def write(tmp: Path) -> None:
        run.encoder.save(tmp)
        if run.head is not None:
            run.head.save(tmp / "nli_head")
        (tmp / "sbert_nli_config.toml").write_text(to_toml(run.config.to_dict()), encoding="utf-8")
        if metrics is not None:
            ckpt.write_json(tmp / "results.json", metrics)

    ckpt.atomic_merge(run.out, write)


# --------------------------------------------------------------------------- hooks
def _due(step: int, every: int, last: bool) -> bool:
    return bool(every) and (step % every == 0 or last)


class Evaluation:
    """STS dev Spearman every ``eval_every`` steps and at the last step; keeps the best model on disk.
    ``last`` is (step, score) of the latest evaluation, so :func:`finish` need not evaluate again."""

    def __init__(self):
        self.last: tuple[int, float | None] | None = None
        self.saved: float | None = None  # the dev score of the model this process last saved as best

    def __call__(self, run: Run, state: TrainState, result: StepResult, record: dict) -> None:
        t = run.config.train
        if run.sts_dev is None or not _due(state.step, t.eval_every, state.step == run.total_steps):
            return
        if t.keep_best:
            check_finite(run, state)  # on every rank (same weights, same verdict), before rank 0 saves
        if run.dist.main:
            score = record["dev_spearman"] = evaluate_dev(run)  # None when undefined (constant similarities)
            self.last = (state.step, score)
            if t.keep_best and score is not None and (state.best is None or score > state.best):
                state.best = self.saved = score
                save_model(run, state)
        barrier(run.dist)


def evaluate_dev(run: Run) -> float | None:
    """STS dev Spearman x 100 of cosine similarities (SentEval's STS protocol, see evaluate.py);
    None where the correlation is undefined (e.g. every similarity equal)."""
    from sbert_nli.evaluate import evaluate_sts

    score = evaluate_sts(run.encoder, run.sts_dev, device=run.device, precision=run.precision)["cosine_spearman"]
    run.encoder.train()
    return score


class MetricsLog:
    """Every ``log_every`` steps and at the last: mean loss (one host sync per interval), lr and speed;
    the finite check of the losses; one ``metrics.jsonl`` line per step that has a record (rank 0),
    handed to the experiment tracker too (``train.report_to``, see tracking.py)."""

    def __init__(self, run: Run, state: TrainState, progress: bool, append: bool):
        from sbert_nli.tracking import open_tracker

        self.tracker = open_tracker(run.config.train.report_to, run.out, run.config.to_dict(), run.dist.main)
        self.tracker.start_step = state.step  # > 0 when resumed: the tracker hides the killed run's later steps
        self.pending: list[torch.Tensor] = []
        self.pairs, self.since = 0, time.perf_counter()
        self.mode = "a" if append else "w"  # a new run starts a fresh log at its first record
        self.bar = None
        if progress and run.dist.main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=run.total_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True)

    def __call__(self, run: Run, state: TrainState, result: StepResult, record: dict) -> None:
        self.pending.append(result.loss)
        self.pairs += result.pairs * run.dist.world
        if self.bar is not None:
            self.bar.update(1)
        if _due(state.step, run.config.train.log_every, state.step == run.total_steps):
            self._log(run, state, record)
        if record and run.dist.main:
            line = {"step": state.step, "epoch": state.epoch, **record}
            with (run.out / "metrics.jsonl").open(self.mode, encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
            self.mode = "a"
            self.tracker.log(line)

    def _log(self, run: Run, state: TrainState, record: dict) -> None:
        losses = torch.stack(self.pending).float()
        if run.dist.world > 1:  # each rank holds its share of the global mean
            import torch.distributed as dist

            dist.all_reduce(losses)
        losses = losses.cpu().numpy()
        self.pending = []
        check_finite(run, state, losses)
        elapsed = time.perf_counter() - self.since
        record.update(loss=float(losses.mean()), lr=run.scheduler.get_last_lr()[0],
                      pairs_per_s=self.pairs / max(elapsed, 1e-9))
        self.pairs, self.since = 0, time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", pairs_s=f"{record['pairs_per_s']:.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.tracker.close()


class Checkpoints:
    """A resumable checkpoint every ``save_every`` steps (the last step's is written by :func:`finish`)."""

    def __call__(self, run: Run, state: TrainState, result: StepResult, record: dict) -> None:
        every = run.config.train.save_every
        if every and state.step % every == 0 and state.step != run.total_steps:
            save_checkpoint(run, state)


class Interrupt:
    """Ctrl-C / SIGTERM become a flag; after each step the ranks agree on it (any rank's flag stops
    every rank, so none waits in the checkpoint barrier while another is in a gradient all-reduce),
    then all checkpoint and raise :class:`Interrupted`. A second Ctrl-C stops at once. The previous
    signal handlers are restored on exit."""

    def __init__(self, dist_info: Dist | None = None):
        self.dist = dist_info or Dist()
        self.signal = None
        self._old: dict = {}

    def __enter__(self) -> Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def agreed(self) -> bool:
        """Whether any rank was interrupted (an all-reduce of one flag under DDP; collective)."""
        if self.dist.world == 1:
            return self.signal is not None
        import torch.distributed as dist

        flag = torch.tensor([0 if self.signal is None else 1])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def __call__(self, run: Run, state: TrainState, result: StepResult, record: dict) -> None:
        if self.agreed():
            save_checkpoint(run, state)
            raise Interrupted(f"interrupted at step {state.step}; checkpoint written, continue with "
                              f"`sbert-nli train ... --output {run.out} --resume`")


# --------------------------------------------------------------------------- the end
def finish(run: Run, state: TrainState, wall: float, pairs: int, evaluation: Evaluation | None = None) -> dict:
    """Final dev evaluation (of the best model when one was kept), held-out NLI accuracy, the model,
    its report and (with ``save_every``) a last checkpoint. Returns the metrics (results.json).
    ``evaluation`` is the loop's dev-evaluation hook: when it evaluated the last step (and, with
    keep_best, saved the best model itself in this process), its score is the final one and the dev
    set is not encoded twice; otherwise (e.g. the best model was saved before a resume) the model is
    evaluated again."""
    from sbert_nli import dropout, padding_free, report

    t = run.config.train
    results: dict = {"steps": state.step, "train_pairs": len(run.data), "examples": run.examples.note,
                     "engine": "native", "wall_s": wall, "pairs_per_s": pairs * run.dist.world / max(wall, 1e-9),
                     "tokens": state.tokens, "precision": run.precision, "device": str(run.device),
                     "pooling": run.encoder.pooling, "max_seq_length": run.encoder.max_seq_length,
                     "padding_free": run.encoder.padding_free, "fast_dropout": dropout.active(run.encoder)}
    padding_free.disable(run.encoder)  # the trained model leaves as it was loaded: transformers' SDPA attention,
    dropout.disable(run.encoder)  # torch's nn.Dropout modules
    check_finite(run, state)
    if run.dist.main:
        if run.sts_dev is not None:
            kept = t.eval_every and t.keep_best and state.best is not None
            if kept:
                _load_best(run)  # the best dev model is on disk (the last step is always evaluated)
            last = evaluation.last if evaluation is not None else None
            # The loop scored these weights already: the final ones, or the kept best it saved itself.
            scored = last is not None and last[0] == state.step and (not kept or evaluation.saved == state.best)
            results["dev_spearman"] = (state.best if kept else last[1]) if scored else evaluate_dev(run)
        if run.heldout is not None and run.head is not None:
            from sbert_nli.evaluate import evaluate_nli

            results["heldout_nli"] = evaluate_nli(run.encoder, run.loss_fn, run.heldout, device=run.device,
                                                  precision=run.precision)
            results["heldout_accuracy"] = results["heldout_nli"]["accuracy"]
        if run.config.eval_suite.enabled:  # the paper's STS table, into results.json and the model card
            from sbert_nli.sts_suite import run_suite

            results["sts_suite"] = run_suite(run.encoder, run.config.eval_suite, run.device, run.precision)
        save_model(run, state, results)
        report.write_training_report(run.out, run.config, run.data, results)
    if t.save_every:
        save_checkpoint(run, state)
    barrier(run.dist)
    return results


def _load_best(run: Run) -> None:
    from sbert_nli.losses import SoftmaxLoss
    from sbert_nli.model import SentenceEncoder

    run.encoder.transformer.load_state_dict(SentenceEncoder.load(str(run.out)).transformer.state_dict())
    if run.head is not None:
        run.loss_fn.load_state_dict(SoftmaxLoss.load(run.out / "nli_head").state_dict())
