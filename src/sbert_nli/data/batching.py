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

from sbert_nli.errors import SbertNliError

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
    truncated_rows: np.ndarray | None = None  # which texts (int64 indices), when any

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def build(cls, texts: list[str], tokenizer, max_len: int, batch_size: int = 100_000) -> TokenStore:
        """Tokenise with the fast (Rust) tokenizer, in parallel, truncating to ``max_len`` tokens
        exactly as ``tokenizer(..., truncation=True, max_length=max_len)`` would (tested)."""
        from tokenizers import Tokenizer

        # A private copy: truncation and padding settings must not leak into the user's tokenizer.
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        texts = [t.strip() for t in texts]
        flat, lengths = _encode_joined(backend, texts)
        if flat is None:  # the exact per-sentence route
            flat, lengths = _encode_each(backend, texts, batch_size)
        prefix, suffix = _special_tokens(backend)
        room = max_len - len(prefix) - len(suffix)
        if room < 1:  # only special tokens would remain: every text would get the same embedding
            raise SbertNliError(f"max_seq_length {max_len} leaves no room for text: the tokenizer adds "
                                f"{len(prefix) + len(suffix)} special token(s); use --max-seq-length "
                                f"{len(prefix) + len(suffix) + 1} or more")
        over = lengths > room
        truncated = int(over.sum())
        if truncated:
            flat, lengths = _truncate(flat, lengths, room)
        flat, lengths = _add_specials(flat, lengths, prefix, suffix)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(flat, offsets, int(pad_id), truncated, np.flatnonzero(over) if truncated else None)

    def pad(self, rows: np.ndarray, multiple: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) as int64 arrays [len(rows), width], padded to the longest row
        (dynamic padding), or with ``multiple`` > 0 to that length rounded up to a multiple of it
        (bucketing: a fixed set of widths, so shapes repeat for compiled kernels; the padded positions
        are masked, so the embeddings are the same)."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        width = int(lengths.max()) if len(rows) else 0
        if multiple > 0:
            width = -(-width // multiple) * multiple
        mask = np.arange(width)[None, :] < lengths[:, None]
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        input_ids[mask] = np.concatenate([self.ids[s:e] for s, e in zip(starts, ends)])
        return input_ids, mask.astype(np.int64)


def encode_batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, token_budget: int) -> list[np.ndarray]:
    """Batches over the longest-first ``order``. A batch ends early where the length changes if it is
    at least half full: most batches then hold one length only (no padding, no attention mask)."""
    batches, start = [], 0
    while start < len(order):
        width = int(lengths[order[start]])
        size = batch_size if token_budget <= 0 else max(1, token_budget // max(1, width))
        stop = min(len(order), start + size)
        same = start + int(np.searchsorted(-lengths[order[start:stop]], -width, side="right"))
        if same - start >= max(1, size // 2):
            stop = same
        batches.append(order[start:stop])
        start = stop
    return batches


JOIN_GROUP = 20  # sentences per joined string: the per-string overhead dominates short sentences
SEPARATORS = ("\u00b6", "\u00a7", "\u2021", "|")  # punctuation: BERT-style pre-tokenisers isolate it


def _encode_each(backend, texts: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Content token ids (no special tokens) of every text, one encoding per text."""
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    flat_parts, length_parts = [], []
    for start in range(0, len(texts), batch_size):
        # Chunked, and converted to numpy per chunk, so peak memory stays near the final arrays.
        ids_lists = [e.ids for e in encode(texts[start : start + batch_size], add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(ids_lists))
        flat_parts.append(np.fromiter(chain.from_iterable(ids_lists), dtype=np.int32, count=int(lengths.sum())))
        length_parts.append(lengths)
    if not length_parts:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    return np.concatenate(flat_parts), np.concatenate(length_parts)


def _encode_joined(backend, texts: list[str], group: int = JOIN_GROUP, sample: int = 2000):
    """The same ids as :func:`_encode_each`, about twice as fast: ``group`` texts are joined with a
    separator the tokenizer isolates as one token, encoded as one string, and split again. Used only
    when a separator never occurs in the texts and a sample of texts (the longest, and a spread of
    others) gives identical ids both ways; otherwise None (the caller encodes text by text)."""
    if len(texts) < 4 * group:
        return None, None
    corpus = "\n".join(texts)
    unk = backend.token_to_id(getattr(backend.model, "unk_token", None) or "")
    sep = sep_id = None
    for candidate in SEPARATORS:
        ids = backend.encode(candidate, add_special_tokens=False).ids
        if len(ids) == 1 and ids[0] != unk and candidate not in corpus:
            sep, sep_id = candidate, ids[0]
            break
    del corpus
    if sep is None:
        return None, None
    joiner = f" {sep} "
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    flat_parts, length_parts = [], []
    for start in range(0, len(texts), 50_000):
        chunk = texts[start : start + 50_000]
        docs = [joiner.join(chunk[i : i + group]) for i in range(0, len(chunk), group)]
        for doc_index, encoding in enumerate(encode(docs, add_special_tokens=False)):
            ids = np.asarray(encoding.ids, dtype=np.int32)
            cuts = np.flatnonzero(ids == sep_id)
            expected = min(group, len(chunk) - doc_index * group) - 1
            if len(cuts) != expected:
                return None, None
            bounds = np.concatenate([[-1], cuts, [len(ids)]])
            length_parts.append(np.diff(bounds) - 1)
            flat_parts.append(ids[ids != sep_id])
    flat, lengths = np.concatenate(flat_parts), np.concatenate(length_parts).astype(np.int64)
    # Verify on a sample: the longest texts and an even spread of the rest.
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    picks = np.unique(np.concatenate([np.argsort(-lengths)[: sample // 2],
                                      np.linspace(0, len(texts) - 1, sample // 2).astype(np.int64)]))
    for i, encoding in zip(picks, encode([texts[i] for i in picks], add_special_tokens=False)):
        if encoding.ids != flat[offsets[i] : offsets[i + 1]].tolist():
            return None, None
    return flat, lengths


def _special_tokens(backend) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a single sentence ([CLS] ... [SEP] for BERT)."""
    plain = backend.encode("hello", add_special_tokens=False).ids
    full = backend.encode("hello", add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def _add_specials(flat: np.ndarray, lengths: np.ndarray, prefix: list[int], suffix: list[int]):
    if not prefix and not suffix:
        return flat, lengths
    extra = len(prefix) + len(suffix)
    new_lengths = lengths + extra
    out = np.empty(int(new_lengths.sum()), dtype=np.int32)
    starts = np.cumsum(new_lengths) - new_lengths  # (an empty list of texts has no starts)
    content = np.ones(len(out), dtype=bool)
    for k, token in enumerate(prefix):
        out[starts + k] = token
        content[starts + k] = False
    ends = starts + new_lengths
    for k, token in enumerate(suffix):
        out[ends - len(suffix) + k] = token
        content[ends - len(suffix) + k] = False
    out[content] = flat
    return out, new_lengths


def _truncate(flat: np.ndarray, lengths: np.ndarray, room: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``room`` content ids of each text (the tokenizer's own truncation: the special
    tokens are added after it)."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(len(flat)) - np.repeat(starts, lengths)
    return flat[position < room], np.minimum(lengths, room)


def collate(store: TokenStore, columns: list[np.ndarray], dedup: bool = True, split_cost: int = 0,
            n_chunks: int = 1, pad_multiple: int = 0):
    """Token rows for the texts of ``columns`` (text ids) and, per column, each entry's row.

    Returns ``(chunks, positions)``: ``chunks`` is a list of padded ``(input_ids, attention_mask)``
    whose rows, concatenated, are the batch's rows; ``positions[c][i]`` is the row of column c's
    entry i. With ``dedup`` a text that occurs several times in the batch (a premise with its three
    hypotheses, a sentence that is both anchor and negative) is encoded once. With ``split_cost`` > 0
    rows are sorted by length and cut into chunks where that saves more padded tokens than
    ``split_cost`` tokens per extra chunk (a premise is often twice as long as its hypotheses, so one
    padded block wastes a third of the batch). ``n_chunks`` > 1 cuts the rows into that many
    contiguous chunks of near-equal row counts (after any length sort), each then split as above:
    the chunks a cached (GradCache) step encodes one at a time. ``pad_multiple`` > 0 rounds each
    chunk's width up to a multiple of it (``TokenStore.pad``)."""
    every = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    if dedup:
        rows, inverse = np.unique(every, return_inverse=True)
    else:
        rows, inverse = every, np.arange(len(every))
    if split_cost > 0 and len(rows) > 1:
        order = np.argsort(-store.lengths[rows], kind="stable")
        rows = rows[order]
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        inverse = rank[inverse]
    bounds = [0]
    for part in np.array_split(np.arange(len(rows)), max(1, min(n_chunks, len(rows)))):
        start = int(part[0]) if len(part) else bounds[-1]
        cuts = _split_points(store.lengths[rows[part]], split_cost) if split_cost > 0 and len(part) > 1 else [0, len(part)]
        bounds += [start + c for c in cuts[1:]]
    positions, start = [], 0
    for column in columns:
        positions.append(inverse[start : start + len(column)])
        start += len(column)
    chunks = [store.pad(rows[a:b], pad_multiple) for a, b in zip(bounds[:-1], bounds[1:])]
    return chunks, positions


def _split_points(lengths: np.ndarray, cost: int) -> list[int]:
    """Chunk boundaries over longest-first ``lengths`` minimising padded tokens + ``cost`` per chunk
    (exact dynamic programme; batches have tens of rows)."""
    n = len(lengths)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    back = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):
        starts = np.arange(end)
        totals = best[:end] + lengths[starts] * (end - starts) + cost
        back[end] = int(np.argmin(totals))
        best[end] = totals[back[end]]
    points = [n]
    while points[-1] > 0:
        points.append(int(back[points[-1]]))
    return points[::-1]


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
