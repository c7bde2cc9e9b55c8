"""Training data shapes beyond NLI: (anchor, positive) pairs, (anchor, positive, negative) triplets and
scored pairs (sentence1, sentence2, score); which loss takes which shape.

=============  =====================================  =====================================
shape          roles (default column names)           losses (``LOSS_SHAPES``)
=============  =====================================  =====================================
pair-class     premise, hypothesis, label (NLI)       softmax, mnr (triplets built from labels)
pair           anchor, positive                       mnr
triplet        anchor, positive, negative             mnr
pair-score     sentence1, sentence2, score            cosine, cosent
=============  =====================================  =====================================

Sources: local .jsonl/.json/.csv/.tsv/.parquet files (the shape is detected from the column names,
after a ``--columns role=column`` mapping, or declared with ``data.shape``); the STS benchmark file
as released (``sts-train.csv``: tab-separated, no header) read as scored pairs; and hub datasets in
sentence-transformers' published layouts: ``all-nli:pair``, ``all-nli:triplet``,
``all-nli:pair-class``, ``all-nli:pair-score`` (``sentence-transformers/all-nli``), ``stsb:train``
(``sentence-transformers/stsb``), or any ``owner/name[:subset]`` with those column names.

Scores are normalised to [0, 1] by their range: declared (``data.score_range = [0, 5]``) or detected
(all within [0, 1]: kept; all within [0, 5]: divided by 5, as sentence-transformers'
``training_stsbenchmark.py`` does); the log and the data report state which. NLI (pair-class) data
is read by ``data.nli`` exactly as before. This module knows no model and no torch.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbert_nli.errors import SbertNliError

log = logging.getLogger("sbert_nli")

SHAPES = {
    "pair-class": ("premise", "hypothesis", "label"),
    "pair": ("anchor", "positive"),
    "triplet": ("anchor", "positive", "negative"),
    "pair-score": ("sentence1", "sentence2", "score"),
}
# The first shape of each loss is the one assumed when a file's columns match no shape.
LOSS_SHAPES = {
    "softmax": ("pair-class",),
    "mnr": ("pair-class", "pair", "triplet"),
    "cosine": ("pair-score",),
    "cosent": ("pair-score",),
}
# Detection order: a triplet file also has the pair columns.
DETECT_ORDER = ("pair-score", "pair-class", "triplet", "pair")
HUB_LAYOUTS = {
    "all-nli:pair": ("sentence-transformers/all-nli", "pair"),
    "all-nli:triplet": ("sentence-transformers/all-nli", "triplet"),
    "all-nli:pair-class": ("sentence-transformers/all-nli", "pair-class"),
    "all-nli:pair-score": ("sentence-transformers/all-nli", "pair-score"),
    "stsb:train": ("sentence-transformers/stsb", None),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")
KNOWN_SCORE_RANGES = ((0.0, 1.0), (0.0, 5.0))


def check_loss_shape(loss: str, shape: str, source: str = "the training data") -> None:
    """Raise :class:`SbertNliError` (one line) when ``loss`` cannot train on data of ``shape``."""
    accepted = LOSS_SHAPES[loss]
    if shape not in accepted:
        takes = sorted(name for name, shapes in LOSS_SHAPES.items() if shape in shapes)
        raise SbertNliError(
            f"--loss {loss} trains on {' / '.join(accepted)} data, but {source} is {shape}; "
            f"use --loss {' or --loss '.join(takes)} for {shape} data, or other data")


def is_hub_source(source: str, base: Path = Path(".")) -> bool:
    """A hub dataset name (``all-nli:pair``, ``stsb:train``, ``owner/name[:subset]``), not a file
    (relative to ``base``) and not a name with a data-file suffix."""
    if source in HUB_LAYOUTS:
        return True
    return bool(HUB_ID.match(source)) and not (base / source).exists() and \
        Path(source.split(":")[0]).suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")


@dataclass
class ShapeReport:
    """What one source gave: rows read, rows kept, rows dropped per reason, and how scores were read."""

    name: str
    shape: str
    rows: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    note: str = ""

    # The same fields as data.nli.SourceReport, so reports and model cards treat both alike.
    @property
    def dropped_empty(self) -> int:
        return self.dropped.get("an empty sentence", 0)

    @property
    def dropped_no_gold(self) -> int:
        return self.dropped.get("no score", 0)


@dataclass
class TextData:
    """Training examples of one shape: per role a list of texts, and for ``pair-score`` the scores."""

    shape: str
    texts: dict[str, list[str]]  # roles of SHAPES[shape] except "score", in order
    score: np.ndarray | None = None  # float64 in [0, 1], pair-score only
    sources: list[ShapeReport] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.texts.values())))

    def subset(self, index: np.ndarray) -> TextData:
        return TextData(self.shape, {r: [t[i] for i in index] for r, t in self.texts.items()},
                        None if self.score is None else self.score[index], self.sources)

    def report(self) -> str:
        parts = []
        for s in self.sources:
            dropped = ", ".join(f"{n} with {why}" for why, n in s.dropped.items() if n) or "none"
            parts.append(f"{s.name}: {s.shape}, {s.rows} rows, kept {s.kept}, dropped {dropped}"
                         + (f"; {s.note}" if s.note else ""))
        return "; ".join(parts) + f" | total {len(self)} {describe_shape(self.shape)}"


def describe_shape(shape: str) -> str:
    return {"pair": "(anchor, positive) pairs", "triplet": "(anchor, positive, negative) triplets",
            "pair-score": "scored pairs", "pair-class": "NLI pairs"}[shape]


def data_shape(data) -> str:
    """``pair-class`` for ``data.nli.NLIData``, else the shape of a :class:`TextData`."""
    return getattr(data, "shape", "pair-class")


def describe(data) -> str:
    """One line for logs and model cards: size, shape and (NLI) label counts."""
    if data_shape(data) == "pair-class":
        counts = ", ".join(f"{k} {v}" for k, v in data.label_counts().items())
        return f"{len(data)} NLI pairs (pair-class: {counts})"
    return f"{len(data)} {describe_shape(data.shape)} ({data.shape})"


# --------------------------------------------------------------------------- reading
def detect_shape(available: list[str], columns: dict[str, str]) -> str | None:
    """The first shape of :data:`DETECT_ORDER` whose roles all name an available column."""
    for shape in DETECT_ORDER:
        if all(columns.get(role, role) in available for role in SHAPES[shape]):
            return shape
    return None


def normalise_scores(raw: np.ndarray, declared: list[float] | None, name: str) -> tuple[np.ndarray, str]:
    """Scores mapped to [0, 1] and the sentence saying how. ``declared``: [low, high] or None (detect)."""
    low, high = float(raw.min()), float(raw.max())
    if declared:
        lo, hi = float(declared[0]), float(declared[1])
        if low < lo or high > hi:
            raise SbertNliError(f"{name}: scores span [{low:g}, {high:g}], outside the declared data.score_range "
                                f"[{lo:g}, {hi:g}]; fix the range or the file")
        how = "declared"
    else:
        found = next(((lo, hi) for lo, hi in KNOWN_SCORE_RANGES if lo <= low and high <= hi), None)
        if found is None:
            raise SbertNliError(f"{name}: scores span [{low:g}, {high:g}], neither 0-1 nor 0-5; declare their range, "
                                "e.g. --set data.score_range=-1,1")
        lo, hi = found
        how = "detected"
    note = f"scores {lo:g}-{hi:g} ({how})" + (" kept as they are" if (lo, hi) == (0.0, 1.0)
                                                else f" normalised to 0-1 as (score - {lo:g}) / {hi - lo:g}")
    return (raw - lo) / (hi - lo), note


def rows_to_shape(name: str, shape: str, values: dict[str, list], lines: list[int],
                  score_range: list[float] | None = None) -> TextData:
    """Clean one source's role columns: drop rows with an empty sentence or no score (counted), refuse
    non-text sentences and non-numeric scores (one error naming the line)."""
    roles = [r for r in SHAPES[shape] if r != "score"]
    report = ShapeReport(name=name, shape=shape, rows=len(lines))
    keep_texts: dict[str, list[str]] = {r: [] for r in roles}
    scores: list[float] = []
    empty = no_score = 0
    for i, line in enumerate(lines):
        texts = [values[r][i] for r in roles]
        for text in texts:
            if text is not None and not isinstance(text, str):
                raise SbertNliError(f"{name}:{line}: sentences must be text, got {text!r}")
        if any(t is None or not t.strip() for t in texts):
            empty += 1
            continue
        if shape == "pair-score":
            raw = values["score"][i]
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                no_score += 1
                continue
            scores.append(_number(raw, name, line))
        for role, text in zip(roles, texts):
            keep_texts[role].append(text)
    report.dropped = {"an empty sentence": empty, **({"no score": no_score} if shape == "pair-score" else {})}
    report.kept = len(keep_texts[roles[0]])
    if report.kept == 0:
        raise SbertNliError(f"{name}: no usable {describe_shape(shape)} ({empty} with an empty sentence"
                            + (f", {no_score} without a score" if shape == "pair-score" else "") + ")")
    if empty or no_score:
        log.warning("%s: dropped %d row(s) with an empty sentence%s", name, empty,
                    f" and {no_score} without a score" if no_score else "")
    score = None
    if shape == "pair-score":
        score, report.note = normalise_scores(np.asarray(scores, dtype=np.float64), score_range, name)
        if np.ptp(score) == 0:
            raise SbertNliError(f"{name}: every score is the same; a similarity objective needs different scores")
    return TextData(shape, keep_texts, score, [report])


def _number(value, name: str, line: int) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SbertNliError(f"{name}:{line}: score {value!r} is not a number") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise SbertNliError(f"{name}:{line}: score {value!r} is not a finite number")
    return number


def load_hub_columns(source: str, split: str = "train") -> tuple[str, dict[str, list]]:
    """(display name, columns) of a hub dataset in sentence-transformers' layout (``datasets`` 5
    returns lazy columns: they are listed here)."""
    from sbert_nli.hub import require_hub

    repo, subset = HUB_LAYOUTS.get(source) or (source.split(":")[0], source.split(":", 1)[1] if ":" in source else None)
    name = repo + (f":{subset}" if subset else "")
    require_hub(name, "pass local files instead, e.g. --train pairs.jsonl")
    import datasets

    try:
        ds = datasets.load_dataset(repo, subset, split=split)
    except Exception as exc:  # network, auth, cache and missing-subset errors all mean "check the name or use files"
        raise SbertNliError(f"could not load {name} ({split} split) from the hub ({type(exc).__name__}); "
                            "check the name or pass local files with --train FILE") from None
    return name, {column: list(ds[column]) for column in ds.column_names}


def _read_source(source: str, columns: dict[str, str], declared: str, fallback: str, score_range,
                 quoting: str = "auto"):
    """One non-NLI-hub source as (shape, NLIData or TextData). ``fallback``: the shape assumed when the
    columns match no shape (pair-class: the NLI reader then reads the file, with its own layouts)."""
    from sbert_nli.data import nli, sts
    from sbert_nli.data.tables import check_file, decode_text, read_table

    if is_hub_source(source):
        name, values = load_hub_columns(source)
        lines = list(range(1, len(next(iter(values.values()), [])) + 1))
    else:
        path = check_file(source)
        if path.suffix.lower() in (".csv", ".tsv", ".txt") and not columns and declared in ("auto", "pair-score"):
            text = decode_text(path)
            if sts._is_stsbenchmark(text):  # the STS benchmark as released: no header, score in field 5
                data = sts.read_stsbenchmark(path, text)
                rows = sum(1 for line in text.split("\n") if line.strip())
                values = {"sentence1": data.sentence1, "sentence2": data.sentence2, "score": list(data.score)}
                out = rows_to_shape(str(path), "pair-score", values, list(range(1, len(data) + 1)), score_range)
                out.sources[0].rows = rows
                out.sources[0].dropped["an empty sentence"] = rows - len(data)
                return "pair-score", out
        table = read_table(path, quoting)
        name, values, lines = str(table.path), table.columns, table.lines
    shape = declared if declared != "auto" else detect_shape(list(values), columns)
    if shape is None and fallback == "pair-class" and not is_hub_source(source):
        return "pair-class", nli.read_nli_file(source, columns, quoting)  # the NLI reader knows further NLI layouts
    shape = shape or fallback
    roles = {role: columns.get(role, role) for role in SHAPES[shape]}
    missing = [c for c in roles.values() if c not in values]
    if missing:
        raise SbertNliError(
            f"{name}: missing column(s) {', '.join(missing)}; columns found: {', '.join(values) or 'none'}; "
            f"map them with --columns {','.join(f'{r}=COLUMN' for r in roles)} ({shape} data"
            + (", assumed from --loss" if declared == "auto" else "") + ")")
    picked = {role: values[column] for role, column in roles.items()}
    if shape == "pair-class":
        p, h, labels, report = nli.pairs_from_columns(name, picked["premise"], picked["hypothesis"], picked["label"], lines)
        return shape, nli.NLIData(p, h, np.asarray(labels, dtype=np.int64), [report])
    return shape, rows_to_shape(name, shape, picked, lines, score_range)


def load_training_data(sources: list[str], columns: dict[str, str] | None = None, shape: str = "auto",
                       loss: str = "softmax", score_range: list[float] | None = None, synthetic_pairs: int = 6000,
                       seed: int = 0, quoting: str = "auto"):
    """Every source read and combined: ``data.nli.NLIData`` for NLI (pair-class) data, else a
    :class:`TextData`. All sources must have one shape; ``loss`` must accept it (checked here, before
    any tokenising or model loading). When a file's columns match no shape, ``loss``'s first shape
    (``LOSS_SHAPES``) is assumed and its missing columns reported."""
    from sbert_nli.data import nli

    columns = columns or {}
    nli_names = [s for s in sources if s in nli.HUB_SOURCES or s.startswith("builtin:")]
    parts = [("pair-class", nli.load_nli(nli_names, columns, synthetic_pairs, seed))] if nli_names else []
    for source in sources:
        if source not in nli_names:
            parts.append(_read_source(source, columns, shape, LOSS_SHAPES[loss][0], score_range, quoting))
    shapes = {s for s, _ in parts}
    if len(shapes) > 1:
        found = "; ".join(f"{d.sources[0].name if d.sources else '?'} is {s}" for s, d in parts)
        raise SbertNliError(f"the training sources have different shapes ({found}); train on one shape at a time")
    found_shape = shapes.pop()
    if shape != "auto" and found_shape != shape:
        raise SbertNliError(f"data.shape is {shape}, but the training data is {found_shape}")
    check_loss_shape(loss, found_shape)
    datas = [d for _, d in parts]
    if len(datas) == 1:
        return datas[0]
    if found_shape == "pair-class":
        return nli.NLIData([p for d in datas for p in d.premise], [h for d in datas for h in d.hypothesis],
                           np.concatenate([d.label for d in datas]), [s for d in datas for s in d.sources])
    return TextData(found_shape, {r: [t for d in datas for t in d.texts[r]] for r in datas[0].texts},
                    None if datas[0].score is None else np.concatenate([d.score for d in datas]),
                    [s for d in datas for s in d.sources])
