"""Training examples at the token level: text -> interned, pre-tokenised examples + batches.

Softmax: one example per (premise, hypothesis, label) pair.
MNR on NLI: one example per (premise, entailed hypothesis); its hard negative is a contradicting
hypothesis of the same premise when one exists (round-robin over them), else none.
MNR on pairs / triplets: one example per row (anchor, positive[, negative]).
Score (cosine, CoSENT): one example per scored pair, the score in ``labels`` (float32, 0-1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sbert_nli.data.batching import TokenStore, epoch_batches, intern, no_duplicate_batches
from sbert_nli.data.nli import NLIData
from sbert_nli.data.shapes import TextData, data_shape
from sbert_nli.errors import SbertNliError

log = logging.getLogger("sbert_nli")


def check_mnr_negatives(batches: list[np.ndarray], negative: np.ndarray) -> None:
    """MNR ranks each anchor's positive against the batch's other positives and the hard negatives:
    a batch of one pair without a hard negative has no candidate but its positive, so its loss is
    exactly 0 and it teaches nothing. Refuse when every batch is like that; warn when some are."""
    alone = sum(1 for b in batches if len(b) == 1 and negative[b[0]] < 0)
    if alone and alone == len(batches):
        raise SbertNliError("MNR loss: every batch holds one (anchor, positive) pair and no hard negative, so the loss "
                            "is exactly 0 and nothing is learnt; use a global batch of 2 or more pairs "
                            "(--batch-size / --grad-accum)")
    if alone:
        log.warning("MNR loss: %d of %d batches hold one pair without a hard negative (loss 0 on those steps)",
                    alone, len(batches))


@dataclass
class Examples:
    kind: str  # "softmax", "mnr" or "score"
    store: TokenStore
    roles: dict[str, np.ndarray]  # softmax, score: a, b; mnr: anchor, positive, negative (-1 = none)
    labels: np.ndarray | None = None
    note: str = ""

    def __len__(self) -> int:
        return len(next(iter(self.roles.values())))

    def example_lengths(self) -> np.ndarray:
        """Longest text of each example (what its padded width depends on)."""
        lengths = self.store.lengths
        return np.max(np.stack([np.where(r >= 0, lengths[np.maximum(r, 0)], 0) for r in self.roles.values()]), axis=0)

    def batches(self, batch_size: int, seed: int, epoch: int, group_by_length: bool = True,
                group_premises: bool = True, drop_last: bool = False) -> list[np.ndarray]:
        lengths = self.example_lengths() if group_by_length else None
        if self.kind == "mnr":
            batches = no_duplicate_batches(list(self.roles.values()), batch_size, seed, epoch, lengths)
            if epoch == 0:
                check_mnr_negatives(batches, self.roles["negative"])
            return [b for b in batches if len(b) == batch_size] if drop_last else batches
        groups = self.roles["a"] if group_premises else None
        return epoch_batches(len(self), batch_size, seed, epoch, lengths=lengths, groups=groups, drop_last=drop_last)


def softmax_examples(data: NLIData, tokenizer, max_len: int) -> Examples:
    texts, (a, b) = intern(data.premise, data.hypothesis)
    store = TokenStore.build(texts, tokenizer, max_len)
    note = f"{len(a)} pairs over {len(texts)} distinct sentences"
    return Examples("softmax", store, {"a": a, "b": b}, data.label.copy(), note)


def mnr_triplets(premise: list, hypothesis: list, labels: list) -> tuple[list, list, list]:
    """(anchor, positive, negative or None) per entailed pair; the negative is a contradicting
    hypothesis of the same premise, taken round-robin when a premise has several."""
    entail: dict = {}
    contra: dict = {}
    for p, h, label in zip(premise, hypothesis, labels):
        if label == 0:
            entail.setdefault(p, []).append(h)
        elif label == 2:
            contra.setdefault(p, []).append(h)
    anchors, positives, negatives = [], [], []
    for p, hyps in entail.items():
        negs = contra.get(p, [])
        for k, h in enumerate(hyps):
            anchors.append(p)
            positives.append(h)
            negatives.append(negs[k % len(negs)] if negs else None)
    return anchors, positives, negatives


def mnr_examples(data: NLIData | TextData, tokenizer, max_len: int) -> Examples:
    """MNR examples from NLI pairs (triplets built from the labels) or from pairs / triplets."""
    if data_shape(data) == "pair-class":
        texts, (premise, hypothesis) = intern(data.premise, data.hypothesis)
        anchors, positives, negatives = mnr_triplets(premise.tolist(), hypothesis.tolist(), data.label.tolist())
        negatives = [-1 if n is None else n for n in negatives]
    else:
        texts, ids = intern(*data.texts.values())
        anchors, positives = ids[0], ids[1]
        negatives = ids[2] if len(ids) > 2 else np.full(len(anchors), -1, dtype=np.int64)
    negatives_arr = np.asarray(negatives, dtype=np.int64)
    # Only the texts MNR uses are tokenised.
    used = np.unique(np.concatenate([anchors, positives, negatives_arr[negatives_arr >= 0]]).astype(np.int64))
    remap = np.full(len(texts), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    store = TokenStore.build([texts[i] for i in used], tokenizer, max_len)
    roles = {
        "anchor": remap[np.asarray(anchors, dtype=np.int64)],
        "positive": remap[np.asarray(positives, dtype=np.int64)],
        "negative": np.where(negatives_arr >= 0, remap[np.maximum(negatives_arr, 0)], -1),
    }
    without = int((negatives_arr < 0).sum())
    note = (f"{len(anchors)} (anchor, positive) examples: {len(anchors) - without} triplets with a hard negative, "
            f"{without} pairs without one")
    return Examples("mnr", store, roles, None, note)


def score_examples(data: TextData, tokenizer, max_len: int) -> Examples:
    """One example per scored pair (sentence1, sentence2); the normalised score is its label."""
    texts, (a, b) = intern(data.texts["sentence1"], data.texts["sentence2"])
    store = TokenStore.build(texts, tokenizer, max_len)
    note = f"{len(a)} scored pairs over {len(texts)} distinct sentences"
    return Examples("score", store, {"a": a, "b": b}, data.score.astype(np.float32), note)


def build_examples(data: NLIData | TextData, loss: str, tokenizer, max_len: int) -> Examples:
    """The examples ``loss`` trains on (``data.shapes.check_loss_shape`` has accepted the shape)."""
    if loss == "softmax":
        return softmax_examples(data, tokenizer, max_len)
    if loss == "mnr":
        return mnr_examples(data, tokenizer, max_len)
    return score_examples(data, tokenizer, max_len)
