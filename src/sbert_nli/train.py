"""The native trainer: one readable loop, no argument parsing.

Steps of :func:`train`: 1 data -> 2 model -> 3 loss -> 4 examples and batches -> 5 optimiser and
schedule -> 6 (resume) -> 7 loop (precision, accumulation, DDP, logging, evaluation, checkpoints)
-> 8 final evaluation and save.

Batch semantics: ``batch_size`` is per device; one optimiser step consumes a global batch of
``batch_size x world_size x grad_accum`` examples drawn by one sampler that every rank computes
identically from (seed, epoch). Micro-batch (rank r, accumulation k) is slice ``k*world + r`` of it,
and each micro-loss is weighted by its share of the global batch, so the update equals a single
process's update on the global batch. The schedule counts optimiser steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch

from sbert_nli import checkpoint as ckpt
from sbert_nli.config import RunConfig, to_toml
from sbert_nli.distributed import barrier as _barrier
from sbert_nli.distributed import init_distributed
from sbert_nli.errors import SbertNliError
from sbert_nli.prepare import prepare_data_and_model

log = logging.getLogger("sbert_nli")


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
    """Encoder + loss as one module, so DDP syncs the head's gradients with the encoder's."""

    def __init__(self, encoder, loss, kind: str, gather=None):
        super().__init__()
        self.encoder, self.loss, self.kind, self.gather = encoder, loss, kind, gather

    def forward(self, chunks, positions, labels=None):
        emb = torch.cat([self.encoder(ids, mask) for ids, mask in chunks]) if len(chunks) > 1 else self.encoder(*chunks[0])
        if self.kind == "softmax":
            return self.loss(emb, positions[0], positions[1], labels)
        return self.loss(emb, positions[0], positions[1], positions[2], gather=self.gather)


def make_batch(examples, index: np.ndarray, dedup: bool, device: torch.device, split_cost: int = 0):
    """Token chunks, per-role rows and labels for the examples ``index`` (see data.batching.collate),
    and the number of real (non-padding) tokens."""
    from sbert_nli.data.batching import collate

    roles = list(examples.roles.values())
    columns = [r[index] for r in roles]
    if examples.kind == "mnr":
        columns[2] = columns[2][columns[2] >= 0]  # every hard negative of the batch is a candidate
    chunks, positions = collate(examples.store, columns, dedup, split_cost)
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)  # noqa: E731
    labels = to(examples.labels[index]) if examples.labels is not None else None
    tokens = sum(int(mask.sum()) for _, mask in chunks)
    return [(to(ids), to(mask)) for ids, mask in chunks], [to(p) for p in positions], labels, tokens


class _Interrupt:
    """Turn Ctrl-C / SIGTERM into a flag the loop checks between steps (then it checkpoints)."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(config: RunConfig, output: str | Path, overwrite: bool = False, resume: str | bool = False,
          progress: bool = True) -> dict:
    """Train, evaluate and save into ``output``. Returns the final metrics.

    A run that fails before writing anything leaves no output folder behind."""
    created = not Path(output).exists() and os.environ.get("RANK", "0") == "0"
    try:
        return _train(config, output, overwrite, resume, progress)
    except BaseException:
        folder = Path(output)
        if created and folder.is_dir() and not any(p for p in folder.iterdir() if not p.name.startswith(".tmp-")):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _train(config: RunConfig, output: str | Path, overwrite: bool, resume: str | bool, progress: bool) -> dict:
    from sbert_nli import report
    from sbert_nli.data.sts import read_sts
    from sbert_nli.losses import MultipleNegativesRankingLoss, SoftmaxLoss
    from sbert_nli.model import SentenceEncoder
    from sbert_nli.precision import autocast, grad_scaler, resolve_device, resolve_precision

    t = config.train
    dist_info = init_distributed()
    device = resolve_device(t.device)
    if dist_info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    precision = resolve_precision(t.precision, device)
    out = ckpt.prepare_output(output, overwrite, bool(resume)) if dist_info.main else Path(output)
    _barrier(dist_info)
    torch.manual_seed(t.seed)

    # 1-2. data and model (tokenised examples come from the cache when one is configured) -----
    sts_dev = read_sts(config.data.eval_sts) if config.data.eval_sts else None
    encoder, examples, data, heldout = prepare_data_and_model(config, log_progress=dist_info.main)
    encoder.to(device)

    # 3. loss -------------------------------------------------------------------------------
    if t.loss == "softmax":
        torch.manual_seed(t.seed)  # the head's init depends on the seed only (both engines share it)
        loss_fn = SoftmaxLoss(encoder.dim, features=tuple(t.head_features))
    else:
        loss_fn = MultipleNegativesRankingLoss(t.mnr_scale, t.mnr_symmetric)
    loss_fn.to(device)
    gather = None
    if t.loss == "mnr" and t.mnr_gather_across_ranks and dist_info.world > 1:
        from sbert_nli.distributed import gather_candidates

        gather = gather_candidates
    objective = Objective(encoder, loss_fn, t.loss, gather)
    model = objective
    if dist_info.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        encoder.transformer.compile(dynamic=True)  # in place: parameter names (and saved files) unchanged
    if dist_info.main:
        log.info("examples: %s; %d sentence(s) truncated to %d tokens", examples.note, examples.store.truncated,
                 encoder.max_seq_length)

    # 4. batches ----------------------------------------------------------------------------
    global_batch = t.batch_size * dist_info.world * t.grad_accum
    batches_for = lambda epoch: examples.batches(  # noqa: E731
        global_batch, t.seed, epoch, t.group_by_length, t.group_premises, drop_last=dist_info.world > 1)
    built = {0: batches_for(0)}  # epoch 0's batches count the steps and are then trained on: build them once
    steps_per_epoch = len(built[0])
    if steps_per_epoch == 0:
        raise SbertNliError(f"{len(examples)} training examples is less than one global batch of {global_batch}")
    total_steps = steps_per_epoch * t.epochs
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    warmup_steps = math.ceil(total_steps * t.warmup_ratio)

    # 5. optimiser and schedule -------------------------------------------------------------
    groups = param_groups([encoder, loss_fn], t.weight_decay)
    clipped = [p for m in ([encoder, loss_fn] if t.clip_head else [encoder]) for p in m.parameters() if p.requires_grad]
    fused = t.fused_adamw and device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(groups, lr=t.lr, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup_steps))
    scaler = grad_scaler(precision, device)
    grad_buffer = None
    if t.embedding_grad_buffer and dist_info.world == 1:  # DDP must see every parameter's gradient hook
        from sbert_nli.embedding_grad import for_transformer

        grad_buffer = for_transformer(encoder.transformer)

    # 6. resume -----------------------------------------------------------------------------
    step, best, start_epoch, skip = 0, None, 0, 0
    if resume:
        found = ckpt.find_resume_checkpoint(out, resume)
        state = ckpt.load_checkpoint(found, encoder, loss_fn if t.loss == "softmax" else None, optimizer, scheduler, scaler)
        _check_resume_config(state.get("config", {}), config.to_dict(), found)
        step, best, start_epoch, skip = state["step"], state.get("best"), state["epoch"], state["batch_in_epoch"]
        if dist_info.main:
            _truncate_metrics(out / "metrics.jsonl", step)
            log.info("resumed from %s (step %d)", found, step)
    metrics_mode = "a" if resume else "w"  # a new run starts a fresh log at its first record

    def save_model(folder_out: Path, metrics: dict | None = None) -> None:
        def write(tmp: Path) -> None:
            encoder.save(tmp)
            if t.loss == "softmax":
                loss_fn.save(tmp / "nli_head")
            (tmp / "sbert_nli_config.toml").write_text(to_toml(config.to_dict()), encoding="utf-8")
            if metrics is not None:
                ckpt.write_json(tmp / "results.json", metrics)
        ckpt.atomic_merge(folder_out, write)

    def checkpoint(epoch: int, batch_in_epoch: int) -> None:
        if dist_info.main:
            ckpt.save_checkpoint(out, step, encoder, loss_fn if t.loss == "softmax" else None, optimizer, scheduler,
                                 scaler, {"epoch": epoch, "batch_in_epoch": batch_in_epoch, "best": best,
                                          "config": config.to_dict()}, t.keep_checkpoints)
        _barrier(dist_info)

    def evaluate_dev() -> float:
        from sbert_nli.evaluate import evaluate_sts

        score = evaluate_sts(encoder, sts_dev, device=device, precision=precision)["cosine_spearman"]
        encoder.train()
        return score

    # 7. loop -------------------------------------------------------------------------------
    metrics_file = out / "metrics.jsonl"
    bar = None
    if progress and dist_info.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    pending_losses: list[torch.Tensor] = []
    pairs_since, time_since = 0, time.perf_counter()
    epoch = start_epoch
    resume_point = (start_epoch, skip)
    loop_started, pairs_total, tokens_total = time.perf_counter(), 0, 0
    model.train()
    from sbert_nli.host_memory import reuse_freed_memory

    with _Interrupt() as interrupt, (grad_buffer or contextlib.nullcontext()), \
            reuse_freed_memory(t.reuse_host_memory and device.type == "cpu"):
        while step < total_steps:
            batches = built.pop(epoch) if epoch in built else batches_for(epoch)
            for b_index in range(skip, len(batches)):
                if step >= total_steps:
                    break
                global_index = batches[b_index]
                micro = np.array_split(global_index, t.grad_accum * dist_info.world)
                step_loss = torch.zeros((), device=device)
                for k in range(t.grad_accum):
                    part = micro[k * dist_info.world + dist_info.rank]
                    weight = len(part) * dist_info.world / len(global_index)
                    chunks, positions, labels, n_tokens = make_batch(examples, part, t.dedup_batch, device,
                                                                     t.split_padding_cost)
                    tokens_total += n_tokens
                    sync = k == t.grad_accum - 1 or dist_info.world == 1
                    ctx = model.no_sync() if (dist_info.world > 1 and not sync) else contextlib.nullcontext()
                    with ctx:
                        with autocast(device.type, precision):
                            loss = model(chunks, positions, labels)
                        scaled = loss.float() * weight
                        (scaler.scale(scaled) if scaler else scaled).backward()
                    step_loss += scaled.detach() / dist_info.world  # this rank's share of the global mean
                if scaler:
                    scaler.unscale_(optimizer)
                if t.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(clipped, t.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if grad_buffer is not None:
                    grad_buffer.reset()
                step += 1
                resume_point = (epoch, b_index + 1)
                pending_losses.append(step_loss)
                pairs_since += len(global_index)
                pairs_total += len(global_index)
                if bar is not None:
                    bar.update(1)
                last = step == total_steps
                if step % t.log_every == 0 or last:
                    # One host sync per log interval, not per step.
                    losses = torch.stack(pending_losses).float()
                    if dist_info.world > 1:  # each rank holds its share of the global mean
                        import torch.distributed as dist

                        dist.all_reduce(losses)
                    losses = losses.cpu().numpy()
                    pending_losses = []
                    if not np.all(np.isfinite(losses)):
                        raise SbertNliError(
                            f"loss became {losses[~np.isfinite(losses)][0]} at or before step {step}; lower --lr or use "
                            f"--precision fp32 (the last good checkpoint in {out / ckpt.CHECKPOINTS}, if any, is kept)")
                    elapsed = time.perf_counter() - time_since
                    record = {"step": step, "epoch": epoch, "loss": float(losses.mean()),
                              "lr": scheduler.get_last_lr()[0], "pairs_per_s": pairs_since / max(elapsed, 1e-9)}
                    pairs_since, time_since = 0, time.perf_counter()
                    if sts_dev is not None and t.eval_every and (step % t.eval_every == 0 or last):
                        if dist_info.main:
                            record["dev_spearman"] = evaluate_dev()
                            if t.keep_best and (best is None or record["dev_spearman"] > best):
                                best = record["dev_spearman"]
                                save_model(out)
                        _barrier(dist_info)
                    if dist_info.main:
                        with metrics_file.open(metrics_mode, encoding="utf-8") as handle:
                            handle.write(json.dumps(record) + "\n")
                        metrics_mode = "a"
                        if bar is not None:
                            bar.set_postfix(loss=f"{record['loss']:.4f}", pairs_s=f"{record['pairs_per_s']:.0f}")
                if t.save_every and step % t.save_every == 0 and not last:
                    checkpoint(*resume_point)
                if interrupt.signal is not None:
                    checkpoint(*resume_point)
                    raise SbertNliError(f"interrupted at step {step}; checkpoint written, continue with "
                                        f"`sbert-nli train ... --output {out} --resume`")
            else:
                epoch, skip = epoch + 1, 0
                continue
            break
    if bar is not None:
        bar.close()

    # 8. final evaluation and save -------------------------------------------------------------
    wall = time.perf_counter() - loop_started
    results: dict = {"steps": step, "train_pairs": len(data), "examples": examples.note, "engine": "native",
                     "wall_s": wall, "pairs_per_s": pairs_total / max(wall, 1e-9), "tokens": tokens_total,
                     "precision": precision, "device": str(device), "pooling": encoder.pooling,
                     "max_seq_length": encoder.max_seq_length}
    if dist_info.main:
        if sts_dev is not None:
            if t.eval_every and t.keep_best and best is not None:
                # The best dev model is on disk (the last step is always evaluated): report and keep it.
                encoder.transformer.load_state_dict(SentenceEncoder.load(str(out)).transformer.state_dict())
                if t.loss == "softmax":
                    loss_fn.load_state_dict(SoftmaxLoss.load(out / "nli_head").state_dict())
            results["dev_spearman"] = evaluate_dev()
        if heldout is not None and t.loss == "softmax":
            from sbert_nli.evaluate import evaluate_nli

            results["heldout_nli"] = evaluate_nli(encoder, loss_fn, heldout, device=device, precision=precision)
            results["heldout_accuracy"] = results["heldout_nli"]["accuracy"]
        if config.eval_suite.enabled:  # STS suite (issue 14) into results.json and the model card
            from sbert_nli.sts_suite import run_suite

            results["sts_suite"] = run_suite(encoder, config.eval_suite, device, precision)
        save_model(out, results)
        report.write_training_report(out, config, data, results)
    if t.save_every:
        checkpoint(*resume_point)
    _barrier(dist_info)
    return results


RESUME_FREE_KEYS = {"eval_every", "log_every", "save_every", "keep_checkpoints", "keep_best", "device"}


def _check_resume_config(saved: dict, current: dict, found: Path) -> None:
    """Exact resume needs the settings that shape the run: refuse a checkpoint written with others."""
    for section, values in saved.items():
        for key, value in values.items():
            if key in RESUME_FREE_KEYS:
                continue
            now = current.get(section, {}).get(key)
            if now != value:
                raise SbertNliError(f"checkpoint {found} was written with {section}.{key}={value!r}, this run has "
                                    f"{now!r}; resume with the same settings (they are in its state.json)")


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
