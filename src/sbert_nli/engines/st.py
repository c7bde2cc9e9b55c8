"""The sentence-transformers engine: the same config, data, hyper-parameters and output folder,
trained by ``SentenceTransformerTrainer`` with the library's loss of the same name as ours:
``SoftmaxLoss``, ``MultipleNegativesRankingLoss`` (``CachedMultipleNegativesRankingLoss`` with
``grad_accum`` > 1: one batch of ``batch_size x grad_accum``, as our GradCache step),
``CosineSimilarityLoss`` or ``CoSENTLoss`` (current API, not the deprecated ``model.fit``).

Everything the library would otherwise choose silently is set from our config: learning rate,
warm-up, weight decay, gradient clipping, batch size, seed, precision, scheduler. The model starts
from exactly our initial weights (we build it, save it, and load that folder), the softmax head from
our seeded initialisation, and the trained head is kept in ``nli_head/`` so ``predict`` works for
both engines. The output folder is written by our own saver, so both engines produce the same layout.
Dev evaluation (``eval_every``) and best-model keeping (``keep_best``) are the Trainer's own
``eval_strategy`` / ``load_best_model_at_end``, with our STS evaluator so both engines report the
same dev number at the same steps (``metrics.jsonl``, ``results.json``).

Differences that remain by design (and that the parity test removes): the library samples batches
with its own samplers (random, or no-duplicates for MNR) where we group premises and lengths; it
encodes premises and hypotheses in two forward passes where we encode each distinct sentence once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from sbert_nli import checkpoint as ckpt
from sbert_nli.config import RunConfig, to_toml
from sbert_nli.errors import SbertNliError

log = logging.getLogger("sbert_nli")
CANONICAL = ("u", "v", "|u-v|", "u*v")  # the only order sentence-transformers' SoftmaxLoss concatenates in


class _FixedOrderBatchSampler:
    """Serves precomputed batches (our sampler's) to the HF DataLoader: used to compare engines step by step."""

    def __init__(self, batches_for_epoch):
        self.batches_for_epoch = batches_for_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        for batch in self.batches_for_epoch(self.epoch):
            yield [int(i) for i in batch]

    def __len__(self) -> int:
        return len(self.batches_for_epoch(self.epoch))


def _st_dataset(examples_kind: str, data):
    import datasets

    from sbert_nli.data.shapes import data_shape, describe_shape

    if data_shape(data) != "pair-class":  # pairs, triplets, scored pairs: the library's own column layouts
        columns = dict(data.texts)
        if data.score is not None:
            columns["score"] = data.score.astype("float32").tolist()
        return datasets.Dataset.from_dict(columns), f"{len(data)} {describe_shape(data.shape)}"
    if examples_kind == "softmax":
        return datasets.Dataset.from_dict({"premise": data.premise, "hypothesis": data.hypothesis,
                                           "label": data.label.tolist()}), f"{len(data)} pairs"
    from sbert_nli.data.examples import mnr_triplets

    anchors, positives, negatives = mnr_triplets(data.premise, data.hypothesis, data.label.tolist())
    keep = [i for i, n in enumerate(negatives) if n is not None]
    dropped = len(anchors) - len(keep)
    return datasets.Dataset.from_dict({
        "anchor": [anchors[i] for i in keep], "positive": [positives[i] for i in keep],
        "negative": [negatives[i] for i in keep]}), (
        f"{len(keep)} triplets ({dropped} anchor-positive pairs without a hard negative dropped: "
        "the library needs the same columns in every row)")


# What this engine does with each run option (README "Engines"); anything marked refused ends the
# run before any work with one `error:` line naming --engine native.
FEATURES = {
    "save_every": "refused (the library's checkpoints cannot resume our exact batch order)",
    "eval_every": "yes: the Trainer's eval_strategy='steps' with our STS dev evaluator, every N steps and the last",
    "resume": "refused",
    "keep_best": "yes: the Trainer's load_best_model_at_end on the dev Spearman (checkpoints in a temporary folder)",
    "eval_sts": "yes: the native engine's dev number (cosine Spearman x100, our evaluate_sts)",
    "DDP (--nproc)": "the library's own; files written by rank 0 only",
    "report_to": "yes: our tracker as a Trainer callback (the native engine's tags)",
}


def refuse_unsupported(config: RunConfig, resume) -> None:
    """One actionable line for each option this engine would otherwise ignore silently."""
    t = config.train
    asked = [("--save-every", t.save_every), ("--resume", resume)]
    for flag, value in asked:
        if value:
            raise SbertNliError(f"{flag} is not supported by --engine sentence-transformers (it would be ignored); "
                                f"use --engine native, which supports it")


def train_st(config: RunConfig, output: str | Path, overwrite: bool = False, progress: bool = True,
             batch_order: str = "library", resume: str | bool = False, pairs=None) -> dict:
    """Train with sentence-transformers. ``batch_order="native"`` feeds it our sampler's batches
    (no premise/length grouping) so per-step losses can be compared with the native trainer.
    ``pairs`` (``NLIData``) replaces reading ``config.data.train`` (in-memory data from the Python API).
    Raises SbertNliError for options this engine does not support (see FEATURES)."""
    from sbert_nli.tracking import open_tracker

    refuse_unsupported(config, resume)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes files
    # The library warns that 'hypothesis' is not its first column: meaningless for SoftmaxLoss pairs.
    quiet = logging.getLogger("sentence_transformers.base.data_collator")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with open_tracker(config.train.report_to, output, config.to_dict(), main_rank) as tracker:
            return _train_st(config, output, overwrite, progress, batch_order, pairs, tracker, main_rank)
    finally:
        quiet.setLevel(level)  # a library leaves the process's logging as it found it


def _train_st(config: RunConfig, output, overwrite: bool, progress: bool, batch_order: str, pairs, tracker,
              main_rank: bool) -> dict:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    from sbert_nli.losses import SoftmaxLoss
    from sbert_nli.model import set_attention
    from sbert_nli.precision import resolve_device, resolve_precision
    from sbert_nli.prepare import build_encoder, load_training_data

    t = config.train
    if t.loss == "cosent" and t.grad_accum > 1:
        raise SbertNliError("the sentence-transformers engine has no cached CoSENT, so --grad-accum would split the "
                            "batch's ranking into smaller ones; use --engine native (GradCache) or --grad-accum 1")
    features = tuple(t.head_features)
    if t.loss == "softmax" and (features != tuple(f for f in CANONICAL if f in features) or ("u" in features) != ("v" in features)):
        raise SbertNliError(f"the sentence-transformers engine concatenates (u, v, |u-v|, u*v) in that order with u and v "
                            f"together; train.head_features {list(features)} needs --engine native")
    device = resolve_device(t.device)
    precision = resolve_precision(t.precision, device)
    out = ckpt.prepare_output(output, overwrite, resume=False) if main_rank else Path(output)
    torch.manual_seed(t.seed)

    data, heldout = load_training_data(config, pairs)
    sts_dev = None
    if config.data.eval_sts:
        from sbert_nli.data.sts import read_sts

        sts_dev = read_sts(config.data.eval_sts)
    encoder = build_encoder(config, data)
    with tempfile.TemporaryDirectory() as tmp:
        start_folder = Path(tmp) / "start"
        start_folder.mkdir()
        encoder.save(start_folder)
        model = SentenceTransformer(str(start_folder), device=str(device))
        model.max_seq_length = encoder.max_seq_length
        # The library fills its own model card's "widget examples" behind a progress bar that disable_tqdm
        # does not reach; we write our own card, so skip that work (and keep --no-progress silent).
        model.model_card_data.widget = [{"text": "unused: sbert-nli writes its own model card"}]
        if config.model.attn_implementation:
            set_attention(model[0].auto_model, config.model.attn_implementation)
        if config.model.dropout is not None:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = config.model.dropout
        dataset, note = _st_dataset(t.loss, data)
        loss, sampler = _st_loss(t, model, encoder.dim, device)
        if batch_order == "native":
            from sbert_nli.data.batching import epoch_batches

            n = len(dataset)
            sampler = lambda *a, **k: _FixedOrderBatchSampler(  # noqa: E731
                lambda epoch: epoch_batches(n, t.batch_size, t.seed, epoch))
        evaluating = sts_dev is not None and t.eval_every > 0
        args = _training_args(t, Path(tmp) / "trainer", precision, device, progress, sampler, evaluating)
        evaluator = _dev_evaluator(sts_dev, encoder, device, precision) if evaluating else None
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                             evaluator=evaluator)
        head_copies = _HeadCopies.add_to(trainer, loss) if t.loss == "softmax" and args.load_best_model_at_end else None
        from sbert_nli.tracking import trainer_callback

        # Our tracker as a Trainer callback (not report_to="tensorboard"): the same tags and names as the native engine.
        trainer.add_callback(trainer_callback(tracker, t.batch_size * t.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))))
        if not progress:
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
        started = time.perf_counter()
        trainer.train()  # with keep_best it ends by loading the best dev checkpoint's weights
        wall = time.perf_counter() - started
        if head_copies is not None:
            head_copies.load_best(trainer.state)

    # The trained (or best dev) transformer, in our output layout (same as the native engine).
    trained = _as_encoder(model, encoder)
    head = None
    if t.loss == "softmax":
        head = SoftmaxLoss(encoder.dim, features=features)
        head.classifier.load_state_dict(loss.classifier.state_dict())
    steps = trainer.state.global_step
    history = _history(trainer.state.log_history)
    pairs_seen = min(steps * t.batch_size * t.grad_accum, len(dataset) * t.epochs)
    results: dict = {"steps": steps, "train_pairs": len(data), "examples": note, "engine": "sentence-transformers",
                     "wall_s": wall, "pairs_per_s": pairs_seen / wall, "precision": precision,
                     "pooling": encoder.pooling, "max_seq_length": encoder.max_seq_length,
                     "gradient_clipping": "encoder only (the library's HF Trainer; train.clip_head is native-only)"}
    if main_rank:
        _finish(config, out, data, heldout, sts_dev, trained, head, history, results, device)
        tracker.log_final(results, steps)
    return results


def _training_args(t, folder: Path, precision: str, device, progress: bool, sampler, evaluating: bool):
    """Every setting the HF Trainer would otherwise choose silently, from our config. ``evaluating``
    (an STS dev set and ``eval_every`` > 0): see :func:`_evaluation_args`."""
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    # MNR with accumulation: the library's cached MNR over the whole batch of batch_size x grad_accum.
    per_device, accumulation = (t.batch_size * t.grad_accum, 1) if _cached_mnr(t) else (t.batch_size, t.grad_accum)
    return SentenceTransformerTrainingArguments(
        output_dir=str(folder), num_train_epochs=t.epochs, max_steps=t.max_steps or -1,
        per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation,
        learning_rate=t.lr, lr_scheduler_type="linear", warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm if t.max_grad_norm > 0 else 1e9,
        seed=t.seed, data_seed=t.seed, bf16=precision == "bf16", fp16=precision == "fp16",
        optim="adamw_torch_fused" if t.fused_adamw else "adamw_torch",
        logging_steps=t.log_every, report_to="none", disable_tqdm=not progress,
        batch_sampler=sampler, use_cpu=device.type == "cpu", dataloader_drop_last=False,
        **_evaluation_args(t, evaluating),
    )


DEV_METRIC = "eval_dev_spearman"  # our evaluator's "dev_spearman", prefixed by the Trainer


def _evaluation_args(t, evaluating: bool) -> dict:
    """``train.eval_every`` / ``keep_best`` as the Trainer's own machinery: evaluate every N steps (the
    Trainer adds the last step, as the native engine does); with keep_best, save a checkpoint at each
    new best dev Spearman (weights only, one kept, in the engine's temporary folder) and load the best
    at the end. A NaN score (undefined) never compares greater, so it is never the best."""
    if not evaluating:
        return {"eval_strategy": "no", "save_strategy": "no"}
    args = {"eval_strategy": "steps", "eval_steps": t.eval_every, "save_strategy": "no"}
    if t.keep_best:
        args.update(save_strategy="best", metric_for_best_model=DEV_METRIC, greater_is_better=True,
                    load_best_model_at_end=True, save_total_limit=1, save_only_model=True)
    return args


def _as_encoder(model, like):
    """Our ``SentenceEncoder`` over the library model's transformer (shared weights, no copy), with
    ``like``'s tokenizer, pooling and length: what the native engine encodes and saves."""
    from sbert_nli.model import SentenceEncoder

    return SentenceEncoder(model[0].auto_model, like.tokenizer, like.pooling, like.max_seq_length, like.normalize,
                           like.do_lower_case)


def _dev_evaluator(sts_dev, like, device, precision: str):
    """A sentence-transformers evaluator that reports the native engine's dev number: our
    :func:`sbert_nli.evaluate.evaluate_sts` cosine Spearman x100 (the native ``evaluate_dev``), so
    the two engines' dev scores are the same number for the same weights. Returns
    ``{"dev_spearman": float}``, NaN where the correlation is undefined."""
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    from sbert_nli.evaluate import evaluate_sts

    class DevSpearman(BaseEvaluator):
        def __init__(self):
            super().__init__()
            self.primary_metric = "dev_spearman"

        def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict:
            was_training = model.training
            score = evaluate_sts(_as_encoder(model, like), sts_dev, device=device, precision=precision)["cosine_spearman"]
            model.train(was_training)
            return {"dev_spearman": math.nan if score is None else score}

    return DevSpearman()


class _HeadCopies:
    """The softmax head belongs to the loss, not to the model, so the library's checkpoints leave it
    out: copy it at each checkpoint and put back the best checkpoint's copy after training."""

    def __init__(self, loss):
        self.loss, self.copies = loss, {}

    @classmethod
    def add_to(cls, trainer, loss):
        from transformers import TrainerCallback

        copies = cls(loss)

        class OnSave(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                copies.copies[state.global_step] = {k: v.detach().clone()
                                                    for k, v in loss.classifier.state_dict().items()}

        trainer.add_callback(OnSave())
        return copies

    def load_best(self, state) -> None:
        if state.best_model_checkpoint is not None:
            self.loss.classifier.load_state_dict(self.copies[int(state.best_model_checkpoint.rsplit("-", 1)[1])])


def _history(log_history: list[dict]) -> list[dict]:
    """The Trainer's log as the native engine's ``metrics.jsonl``: one record per step that logged the
    loss (``loss``, ``lr``) or evaluated the dev set (``dev_spearman``, None where undefined)."""
    records: dict[int, dict] = {}
    for h in log_history:
        if "loss" not in h and DEV_METRIC not in h:
            continue
        record = records.setdefault(h["step"], {"step": h["step"], "epoch": h.get("epoch")})
        if "loss" in h:
            record.update(loss=h["loss"], lr=h.get("learning_rate"))
        if DEV_METRIC in h:
            record["dev_spearman"] = None if math.isnan(h[DEV_METRIC]) else h[DEV_METRIC]
    return [records[step] for step in sorted(records)]


def _st_loss(t, model, dim: int, device):
    """The library's loss for our config and its batch sampler; the softmax head starts from our
    seeded initialisation, so both engines start from the same weights."""
    from sentence_transformers.sentence_transformer import losses as st_losses
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from sbert_nli.losses import SoftmaxLoss

    features = tuple(t.head_features)
    if t.loss == "softmax":
        loss = st_losses.SoftmaxLoss(model, embedding_dimension=dim, num_labels=3,
                                     concatenation_sent_rep="u" in features,
                                     concatenation_sent_difference="|u-v|" in features,
                                     concatenation_sent_multiplication="u*v" in features)
        torch.manual_seed(t.seed)  # the same head initialisation as the native trainer
        loss.classifier.load_state_dict(SoftmaxLoss(dim, features=features).classifier.state_dict())
        return loss.to(device), BatchSamplers.BATCH_SAMPLER
    if t.loss == "cosine":
        return st_losses.CosineSimilarityLoss(model), BatchSamplers.BATCH_SAMPLER
    if t.loss == "cosent":
        return st_losses.CoSENTLoss(model, scale=t.cosent_scale), BatchSamplers.BATCH_SAMPLER
    directions = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"} \
        if t.mnr_symmetric else {}
    if _cached_mnr(t):  # GradCache: chunks of batch_size sentences per column
        return (st_losses.CachedMultipleNegativesRankingLoss(model, scale=t.mnr_scale, mini_batch_size=t.batch_size,
                                                             **directions), BatchSamplers.NO_DUPLICATES)
    return st_losses.MultipleNegativesRankingLoss(model, scale=t.mnr_scale, **directions), BatchSamplers.NO_DUPLICATES


def _cached_mnr(t) -> bool:
    return t.loss == "mnr" and t.grad_accum > 1


def _finish(config, out: Path, data, heldout, sts_dev, trained, head, history, results: dict, device) -> None:
    """Rank 0: metrics log, dev and held-out evaluation, finite check, the model in our layout, report."""
    from sbert_nli import report
    from sbert_nli.errors import DivergedError

    with (out / "metrics.jsonl").open("w", encoding="utf-8") as handle:
        for record in history:
            handle.write(json.dumps(record) + "\n")
    weights = list(trained.parameters()) + (list(head.parameters()) if head is not None else [])
    if not all(bool(torch.isfinite(w).all()) for w in weights):
        raise DivergedError("weights became non-finite during training; lower --lr (nothing was saved)")
    if sts_dev is not None:
        from sbert_nli.evaluate import evaluate_sts

        results["dev_spearman"] = evaluate_sts(trained, sts_dev, device=device,
                                               precision=results["precision"])["cosine_spearman"]
    if heldout is not None and head is not None:
        from sbert_nli.evaluate import evaluate_nli

        results["heldout_nli"] = evaluate_nli(trained, head.to(device), heldout, device=device)
        results["heldout_accuracy"] = results["heldout_nli"]["accuracy"]
    if config.eval_suite.enabled:  # STS suite (issue 14) into results.json and the model card
        from sbert_nli.sts_suite import run_suite

        results["sts_suite"] = run_suite(trained, config.eval_suite, device)

    def write(tmp_out: Path) -> None:
        trained.save(tmp_out)
        if head is not None:
            head.save(tmp_out / "nli_head")
        (tmp_out / "sbert_nli_config.toml").write_text(to_toml(config.to_dict()), encoding="utf-8")
        ckpt.write_json(tmp_out / "results.json", results)

    ckpt.atomic_merge(out, write)
    report.write_training_report(out, config, data, results)

