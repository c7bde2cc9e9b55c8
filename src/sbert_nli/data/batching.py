"""Pre-tokenised text, batch samplers and collation. Works on token ids only: no model, no torch.

Speed comes from doing text work once:
- :func:`intern` maps every distinct sentence to one integer, so SNLI's premises (each repeated for
  three hypotheses) are tokenised and stored once;
- :class:`TokenStore` holds all token ids in one flat int32 array (tokenised by the Rust tokenizer
  in parallel, before training), so a batch is a gather plus dynamic padding;
- :func:`collate` can encode each distinct sentence of a batch once (``dedup``); the sampler can keep
  a premise's hypotheses in one batch (``group_premises``) and group similar lengths
  (``group_by_length``) while still shuffling. None of these change the loss of a given batch.

Every sampler is a pure function of (seed, epoch): the batches of an epoch can be rebuilt exactly on
resume and on every DDP rank without communication.
"""

from __future__ import annotations

from collections import deque
from itertools import chain
from dataclasses import dataclass

import numpy as np

MEGABATCH_FACTOR = 50  # length grouping sorts windows of 50 batches, then shuffles the batches


def intern(*columns: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """Distinct texts (first-seen order) and, per column, each row's index into them."""
    index: dict[str, int] = {}
    out = []
    for column in columns:
        setdefault = index.setdefault
        out.append(np.fromiter((setdefault(t, len(index)) for t in column), dtype=np.int64, count=len(column)))
    return list(index), out


@dataclass
class TokenStore:
    """Token ids of N texts in one flat array; text i is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, N + 1
    pad_id: int
    truncated: int = 0  # texts cut to max_len

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def build(cls, texts: list[str], tokenizer, max_len: int, batch_size: int = 100_000) -> TokenStore:
        """Tokenise with the fast (Rust) tokenizer, in parallel, truncating to ``max_len`` tokens
        exactly as ``tokenizer(..., truncation=True, max_length=max_len)`` would."""
        from tokenizers import Tokenizer

        # A private copy: enable_truncation must not leak into the user's tokenizer.
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        # One token more than allowed tells us which texts were too long.
        backend.enable_truncation(max_len + 1)
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        flat_parts, length_parts = [], []
        truncated = 0
        for start in range(0, len(texts), batch_size):
            # Chunked, and converted to numpy per chunk, so peak memory stays near the final arrays.
            encodings = encode([t.strip() for t in texts[start : start + batch_size]], add_special_tokens=True)
            ids_lists = [e.ids for e in encodings]
            del encodings
            lengths = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(ids_lists))
            flat = np.fromiter(chain.from_iterable(ids_lists), dtype=np.int32, count=int(lengths.sum()))
            del ids_lists
            too_long = lengths > max_len
            if too_long.any():
                truncated += int(too_long.sum())
                flat, lengths = _truncate(flat, lengths, max_len)
            flat_parts.append(flat)
            length_parts.append(lengths)
        lengths = np.concatenate(length_parts) if length_parts else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(flat_parts) if flat_parts else np.zeros(0, dtype=np.int32)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(flat, offsets, int(pad_id), truncated)

    def pad(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) as int64 arrays padded to the longest row (dynamic padding)."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        width = int(lengths.max()) if len(rows) else 0
        mask = np.arange(width)[None, :] < lengths[:, None]
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        input_ids[mask] = np.concatenate([self.ids[s:e] for s, e in zip(starts, ends)])
        return input_ids, mask.astype(np.int64)


def _truncate(flat: np.ndarray, lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut rows longer than ``max_len`` to their first ``max_len - 1`` ids plus their last (closing
    special token), exactly as the tokenizer's own truncation would."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    new_lengths = np.minimum(lengths, max_len)
    keep = np.ones(len(flat), dtype=bool)
    for start, length in zip(starts[lengths > max_len], lengths[lengths > max_len]):
        keep[start + max_len - 1 : start + length - 1] = False
    return flat[keep], new_lengths


def collate(store: TokenStore, columns: list[np.ndarray], dedup: bool = True):
    """Token rows for the texts of ``columns`` (text ids) and, per column, each entry's row.

    With ``dedup`` a text that occurs several times in the batch (a premise with its three
    hypotheses, a sentence that is both anchor and negative) is encoded once."""
    every = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    if dedup:
        rows, inverse = np.unique(every, return_inverse=True)
    else:
        rows, inverse = every, np.arange(len(every))
    positions, start = [], 0
    for column in columns:
        positions.append(inverse[start : start + len(column)])
        start += len(column)
    input_ids, attention_mask = store.pad(rows)
    return input_ids, attention_mask, positions


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def _units(n: int, groups: np.ndarray | None, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled units of examples: single examples, or all examples sharing a group id."""
    if groups is None:
        return list(rng.permutation(n)[:, None])
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    units = np.split(order, bounds)
    return [rng.permutation(units[i]) for i in rng.permutation(len(units))]


def _length_sorted(units: list[np.ndarray], lengths: np.ndarray, window: int) -> list[np.ndarray]:
    """Sort units by length inside windows of ``window`` examples (the order of windows stays random)."""
    out, current, size = [], [], 0
    for unit in units + [None]:
        if unit is None or size >= window:
            current.sort(key=lambda u: -int(lengths[u].max()))
            out += current
            current, size = [], 0
        if unit is not None:
            current.append(unit)
            size += len(unit)
    return out


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths: np.ndarray | None = None,
                  groups: np.ndarray | None = None, drop_last: bool = False) -> list[np.ndarray]:
    """The batches (arrays of example indices) of one epoch: every example exactly once.

    ``lengths``: per-example token length; given, batches are length-grouped (then shuffled).
    ``groups``: per-example group id (the premise); given, a group's examples stay together.
    """
    rng = _rng(seed, epoch)
    units = _units(n, groups, rng)
    if lengths is not None:
        units = _length_sorted(units, lengths, batch_size * MEGABATCH_FACTOR)
    order = np.concatenate(units) if units else np.zeros(0, dtype=np.int64)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    # The incomplete batch (if any) stays last, so dropping it (drop_last, DDP) changes no other batch.
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches + ([] if drop_last else tail)


def no_duplicate_batches(texts: list[np.ndarray], batch_size: int, seed: int, epoch: int,
                         lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Batches in which no text occurs twice across examples (for in-batch-negative losses a
    duplicate is a false negative). Every example appears exactly once per epoch; an example that
    conflicts with the current batch waits for a later one, so the last batches may be smaller.

    ``texts``: per role (anchor, positive, negative), each example's text id (-1 = none)."""
    n = len(texts[0])
    rng = _rng(seed, epoch)
    units = [np.array([i]) for i in rng.permutation(n)]
    if lengths is not None:
        units = _length_sorted(units, lengths, batch_size * MEGABATCH_FACTOR)
    ids = np.stack(texts, axis=1)
    pending = deque(int(u[0]) for u in units)
    batches = []
    while pending:
        # Fill one batch from the front of the queue; conflicting examples keep their place in line.
        batch, seen, deferred = [], set(), []
        while pending and len(batch) < batch_size:
            i = pending.popleft()
            own = {int(t) for t in ids[i] if t >= 0}
            if own & seen:
                deferred.append(i)
            else:
                batch.append(i)
                seen |= own
        pending.extendleft(reversed(deferred))
        batches.append(np.asarray(batch, dtype=np.int64))
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
