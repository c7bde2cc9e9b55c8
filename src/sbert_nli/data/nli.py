"""NLI pairs (premise, hypothesis, label) from the hub (SNLI, MultiNLI) or local files.

Labels follow the Hugging Face ``snli``/``glue`` convention: 0 entailment, 1 neutral,
2 contradiction. Files may use those integers or the label names; ``-1`` and ``-`` (no gold label)
rows are dropped and counted. (The original SBERT script used contradiction=0, entailment=1,
neutral=2: we never use that mapping.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from sbert_nli.data.tables import MEMORY_PREFIX, is_missing_text, layout_roles, read_table, table_from_memory
from sbert_nli.errors import SbertNliError

log = logging.getLogger("sbert_nli")

LABELS = ("entailment", "neutral", "contradiction")
LABEL_IDS = {name: i for i, name in enumerate(LABELS)}
NO_GOLD = object()  # marker returned by parse_label for rows to drop
HUB_SOURCES = {"snli": ("stanfordnlp/snli", None), "mnli": ("nyu-mll/glue", "mnli")}
DEFAULT_COLUMNS = {"premise": "premise", "hypothesis": "hypothesis", "label": "label"}
# Well-known release layouts, recognised by their column names (first match wins; --columns wins over all).
LAYOUTS = [
    ("premise/hypothesis/label (Hugging Face snli, glue/mnli)", DEFAULT_COLUMNS),
    ("SNLI 1.0 / MultiNLI 1.0 / GLUE MNLI (gold_label, sentence1, sentence2)",
     {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}),
    ("sentence-transformers AllNLI.tsv / GLUE-style (sentence1, sentence2, label)",
     {"premise": "sentence1", "hypothesis": "sentence2", "label": "label"}),
    ("SICK (sentence_A, sentence_B, entailment_label)",
     {"premise": "sentence_A", "hypothesis": "sentence_B", "label": "entailment_label"}),
    ("SICK SemEval-2014 (sentence_A, sentence_B, entailment_judgment)",
     {"premise": "sentence_A", "hypothesis": "sentence_B", "label": "entailment_judgment"}),
]


@dataclass
class SourceReport:
    name: str
    rows: int = 0
    dropped_no_gold: int = 0
    dropped_empty: int = 0
    kept: int = 0


@dataclass
class NLIData:
    premise: list[str]
    hypothesis: list[str]
    label: np.ndarray  # int64, 0/1/2
    sources: list[SourceReport] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.label)

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(self.label, minlength=3)
        return {name: int(counts[i]) for i, name in enumerate(LABELS)}

    def subset(self, index: np.ndarray) -> NLIData:
        return NLIData([self.premise[i] for i in index], [self.hypothesis[i] for i in index],
                       self.label[index], self.sources)

    def report(self) -> str:
        parts = [
            f"{s.name}: {s.rows} rows, kept {s.kept}, dropped {s.dropped_no_gold} without gold label"
            + (f" and {s.dropped_empty} with an empty sentence" if s.dropped_empty else "")
            for s in self.sources
        ]
        counts = ", ".join(f"{k} {v}" for k, v in self.label_counts().items())
        return "; ".join(parts) + f" | total {len(self)} pairs ({counts})"


def parse_label(value):
    """Return 0/1/2, ``NO_GOLD`` for -1/'-', or None when the value is not a label at all."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value if value in (0, 1, 2) else NO_GOLD if value == -1 else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LABEL_IDS:
            return LABEL_IDS[text]
        if text in ("-", "-1"):
            return NO_GOLD
        if text in ("0", "1", "2"):
            return int(text)
    return None


def _label_kind(value) -> str | None:
    """'int' for integer encodings, 'name' for label names, None for no-gold markers and non-labels."""
    if parse_label(value) in (None, NO_GOLD):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("-", "-1"):
            return None
        return "name" if text in LABEL_IDS else "int"
    return None if value == -1 else "int"


def pairs_from_columns(name: str, premise: list, hypothesis: list, labels: list, lines: list[int]) -> tuple:
    """Validate and clean one source's columns; return (premises, hypotheses, labels, report)."""
    report = SourceReport(name=name, rows=len(labels))
    out_p, out_h, out_l = [], [], []
    bad: list[str] = []
    kinds: dict[str, int] = {}
    parsed: dict = {}  # labels take few distinct values: parse each once
    for p, h, raw, line in zip(premise, hypothesis, labels, lines):
        try:
            key = (type(raw), raw)
            label, kind = parsed[key] if key in parsed else parsed.setdefault(key, (parse_label(raw), _label_kind(raw)))
        except TypeError:  # unhashable (a list or object where a label should be)
            label, kind = None, None
        if label is None:
            bad.append(f"line {line}: {raw!r}")
            continue
        if label is NO_GOLD:
            report.dropped_no_gold += 1
            continue
        kinds.setdefault(kind, line)
        if is_missing_text(p) or is_missing_text(h):  # null, NaN, empty or blank: one rule for every format
            report.dropped_empty += 1
            continue
        if not isinstance(p, str) or not isinstance(h, str):
            raise SbertNliError(f"{name}:{line}: premise and hypothesis must be text, got {p!r} / {h!r}")
        out_p.append(p)
        out_h.append(h)
        out_l.append(label)
    if bad:
        raise SbertNliError(
            f"{name}: {len(bad)} label(s) outside entailment/neutral/contradiction (or 0/1/2, -1, -): "
            + "; ".join(bad[:5])
        )
    if "int" in kinds and "name" in kinds:
        raise SbertNliError(
            f"{name}: mixes integer labels (line {kinds['int']}) and label names (line {kinds['name']}); "
            "use one encoding per file"
        )
    if not out_l:
        raise SbertNliError(
            f"{name}: no usable pairs ({report.dropped_no_gold} without gold label, "
            f"{report.dropped_empty} with an empty sentence); nothing to train or evaluate on"
        )
    if report.dropped_empty:
        log.warning("%s: dropped %d pair(s) with a missing sentence (null, NaN, empty or whitespace-only)",
                    name, report.dropped_empty)
    report.kept = len(out_l)
    return out_p, out_h, out_l, report


def nli_roles(table, columns: dict[str, str] | None) -> dict[str, str]:
    """role -> column: a recognised layout (logged), overridden role by role by ``columns``."""
    roles = layout_roles(table, LAYOUTS, columns)
    splits = sorted({str(v) for v in table.columns.get("split", [])}) if "split" in table.columns else []
    if len(splits) > 1:
        log.warning("%s: the file holds several splits (%s, column 'split'); every row is read: filter the file to "
                    "use one split", table.path, ", ".join(splits))
    return roles


def read_nli_file(path: str, columns: dict[str, str] | None = None, quoting: str = "auto") -> NLIData:
    """NLI pairs from a local table (see :mod:`sbert_nli.data.tables` for formats and ``quoting``).
    Columns come from a recognised layout (:data:`LAYOUTS`) unless ``columns`` maps them."""
    return nli_from_table(read_table(path, quoting), columns)


def nli_from_memory(data, columns: dict[str, str] | None = None) -> NLIData:
    """NLI pairs from data held in Python (see ``tables.table_from_memory`` for the accepted types), with
    the same checks, drops and counts as a file: e.g. the seed's merged SNLI+MNLI ``datasets.Dataset``
    (label -1 rows dropped and counted)."""
    roles = {**DEFAULT_COLUMNS, **(columns or {})}
    return nli_from_table(table_from_memory(data, list(roles.values())), columns, "columns")


def nli_from_table(table, columns: dict[str, str] | None = None, hint: str = "--columns") -> NLIData:
    cols = table.select(nli_roles(table, columns), hint)
    p, h, l, report = pairs_from_columns(str(table.path), cols["premise"], cols["hypothesis"], cols["label"], table.lines)
    return NLIData(p, h, np.asarray(l, dtype=np.int64), [report])


def load_hub_nli(names: list[str], split: str = "train"):
    """SNLI + MultiNLI from the hub, merged exactly as the seed does: remove MNLI's ``idx``, cast
    SNLI's features to MNLI's so the two concatenate, then drop label -1. Returns a ``datasets.Dataset``
    and the per-source report."""
    from sbert_nli.hub import require_hub

    require_hub(", ".join(names), "pass local NLI files instead, e.g. --train snli_dev.jsonl mnli.tsv")
    import datasets

    parts, reports = [], []
    for name in names:
        repo, config = HUB_SOURCES[name]
        try:
            ds = datasets.load_dataset(repo, config, split=split)
        except Exception as exc:  # network, auth and cache errors all mean "use local files"
            raise SbertNliError(
                f"could not load {repo}{'/' + config if config else ''} from the hub ({type(exc).__name__}); "
                "pass local NLI files with --train FILE [FILE ...]"
            ) from None
        if "idx" in ds.column_names:
            ds = ds.remove_columns("idx")
        parts.append(ds)
    if len(parts) > 1:
        parts = [parts[0]] + [p.cast(parts[0].features) for p in parts[1:]]
    merged = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    for name, ds in zip(names, parts):
        labels = np.asarray(list(ds["label"]))
        kept = int((labels != -1).sum())
        reports.append(SourceReport(name=name, rows=len(labels), dropped_no_gold=len(labels) - kept, kept=kept))
    merged = merged.filter(lambda row: row["label"] != -1)
    return merged, reports


def load_nli(sources: list[str], columns: dict[str, str] | None = None, synthetic_pairs: int = 6000,
             seed: int = 0, quoting: str = "auto") -> NLIData:
    """Load and concatenate NLI sources: hub names, ``builtin:synthetic`` or local files."""
    hub = [s for s in sources if s in HUB_SOURCES]
    premise: list[str] = []
    hypothesis: list[str] = []
    labels: list[np.ndarray] = []
    reports: list[SourceReport] = []
    if hub:
        merged, hub_reports = load_hub_nli(hub)
        premise += list(merged["premise"])
        hypothesis += list(merged["hypothesis"])
        labels.append(np.asarray(list(merged["label"]), dtype=np.int64))
        reports += hub_reports
    for source in sources:
        if source in HUB_SOURCES:
            continue
        if source == "builtin:synthetic":
            from sbert_nli.data.synthetic import synthetic_nli

            data = synthetic_nli(synthetic_pairs, seed=seed)
        elif source.startswith(MEMORY_PREFIX):
            raise SbertNliError(f"data.train '{source}' was handed over from Python; pass the data again with "
                                "sbert_nli.train(train=...) or give files with --train FILE [FILE ...]")
        elif source.startswith("builtin:"):
            raise SbertNliError(f"unknown built-in data '{source}': the only one is builtin:synthetic")
        else:
            data = read_nli_file(source, columns, quoting)
        premise += data.premise
        hypothesis += data.hypothesis
        labels.append(data.label)
        reports += data.sources
    return NLIData(premise, hypothesis, np.concatenate(labels), reports)


def split_holdout(data: NLIData, fraction: float, seed: int) -> tuple[NLIData, NLIData | None]:
    """A fixed random split, grouped by premise so no held-out premise is seen in training."""
    if fraction <= 0:
        return data, None
    premises = sorted(set(data.premise))
    rng = np.random.default_rng(seed)
    held = set(np.asarray(premises, dtype=object)[rng.permutation(len(premises))[: max(1, int(len(premises) * fraction))]])
    mask = np.fromiter((p in held for p in data.premise), dtype=bool, count=len(data))
    if mask.all():
        raise SbertNliError(f"holdout fraction {fraction} of {len(premises)} distinct premise(s) leaves no training "
                            "pairs; use more data or --holdout 0")
    return data.subset(np.flatnonzero(~mask)), data.subset(np.flatnonzero(mask))
