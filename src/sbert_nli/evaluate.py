"""Metrics: STS correlations (x100) for four similarity functions, NLI classification metrics.

STS follows sentence-transformers' ``EmbeddingSimilarityEvaluator``: cosine similarity, negative
euclidean and manhattan distances, and dot product, each against the gold scores with Pearson and
Spearman. All maths is float64 on fp32 embeddings, whatever precision the encoder ran in.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from sbert_nli.data.nli import LABELS, NLIData
from sbert_nli.data.sts import STSData

log = logging.getLogger("sbert_nli")
SIMILARITIES = ("cosine", "euclidean", "manhattan", "dot")
# Values whose spread is within this fraction of their magnitude are equal up to float rounding
# (fp32 embeddings give cosines that differ by ~1e-7 for identical pairs): ranking them ranks noise.
CONSTANT_RTOL = 1e-6


def similarity_scores(emb1: np.ndarray, emb2: np.ndarray) -> dict[str, np.ndarray]:
    a, b = emb1.astype(np.float64), emb2.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return {
        "cosine": (a * b).sum(1) / np.maximum(norms, 1e-12),
        "euclidean": -np.linalg.norm(a - b, axis=1),
        "manhattan": -np.abs(a - b).sum(1),
        "dot": (a * b).sum(1),
    }


def is_constant(values: np.ndarray) -> bool:
    """True when all values are equal up to float rounding (spread <= CONSTANT_RTOL x max |value|)."""
    values = np.asarray(values, dtype=np.float64)
    return bool(np.ptp(values) <= CONSTANT_RTOL * np.max(np.abs(values)))


def correlation_or_none(method: str, gold: np.ndarray, scores: np.ndarray) -> float | None:
    """Pearson or Spearman correlation x100 (``scipy.stats.pearsonr`` / ``spearmanr``), or None when
    it is undefined: fewer than 2 pairs, or gold or scores constant up to rounding (see
    :func:`is_constant`). Never returns NaN and never lets scipy's warnings reach the user."""
    from scipy.stats import pearsonr, spearmanr

    if len(gold) < 2 or is_constant(gold) or is_constant(scores):
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        value = float((pearsonr if method == "pearson" else spearmanr)(gold, scores)[0])
    return value * 100 if math.isfinite(value) else None


def sts_metrics(emb1: np.ndarray, emb2: np.ndarray, gold: np.ndarray) -> dict[str, float | None]:
    """``{similarity}_{pearson|spearman}`` x100 for the four similarities; None where undefined."""
    out = {}
    for name, scores in similarity_scores(emb1, emb2).items():
        out[f"{name}_pearson"] = correlation_or_none("pearson", gold, scores)
        out[f"{name}_spearman"] = correlation_or_none("spearman", gold, scores)
    return out


def evaluate_sts(encoder, data: STSData, batch_size: int = 64, device=None, precision: str = "fp32",
                 progress: bool = False) -> dict[str, float]:
    # One encode call over both columns: shared sentences are encoded once, batches length-sorted.
    emb = encoder.encode(data.sentence1 + data.sentence2, batch_size=batch_size, device=device,
                         precision=precision, progress=progress)
    n = len(data)
    metrics = sts_metrics(emb[:n], emb[n:], data.score)
    undefined = [name for name in SIMILARITIES if metrics[f"{name}_spearman"] is None]
    if undefined:
        cause = "the gold scores are" if is_constant(data.score) else f"{', '.join(undefined)} similarities are"
        log.warning("%s: %s constant (equal up to rounding on all %d pairs): their correlations are undefined, "
                    "reported as n/a (null in JSON)", data.name, cause, n)
    return {**metrics, "pairs": n}


def nli_metrics(predicted: np.ndarray, gold: np.ndarray) -> dict:
    confusion = np.zeros((3, 3), dtype=np.int64)
    np.add.at(confusion, (gold, predicted), 1)
    per_class, f1s = {}, []
    for i, name in enumerate(LABELS):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i].sum() if confusion[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                           "support": int(confusion[i].sum())}
        f1s.append(f1)
    return {
        "accuracy": float(np.trace(confusion) / confusion.sum()),
        "macro_f1": float(np.mean(f1s)),
        "per_class": per_class,
        "confusion": confusion.tolist(),  # rows: gold, columns: predicted (entailment, neutral, contradiction)
        "pairs": int(confusion.sum()),
    }


def predict_nli(encoder, head, premises: list[str], hypotheses: list[str], batch_size: int = 64, device=None,
                precision: str = "fp32") -> np.ndarray:
    """Class probabilities [N, 3] from the trained softmax head."""
    import torch

    emb = encoder.encode(premises + hypotheses, batch_size=batch_size, device=device, precision=precision)
    n = len(premises)
    with torch.inference_mode():
        head_device = next(head.parameters()).device
        u = torch.from_numpy(emb[:n]).to(head_device)
        v = torch.from_numpy(emb[n:]).to(head_device)
        return torch.softmax(head.float().logits(u, v), dim=-1).cpu().numpy()


def evaluate_nli(encoder, head, data: NLIData, batch_size: int = 64, device=None, precision: str = "fp32") -> dict:
    probs = predict_nli(encoder, head, data.premise, data.hypothesis, batch_size, device, precision)
    return nli_metrics(probs.argmax(1), data.label)
