"""STS pairs with gold similarity scores.

Sources:
- the original STS benchmark files ``sts-{train,dev,test}.csv``: tab-separated, no header, no
  quoting (sentences hold bare ``"``), 7 or 9 fields ``genre file year id score s1 s2 [license...]``;
  recognised by content, so never parsed with a quote-aware CSV reader;
- any .csv/.tsv/.txt/.jsonl/.json/.parquet in a recognised layout (:data:`LAYOUTS`: ``sentence1,
  sentence2, score``; SICK's ``sentence_A, sentence_B, relatedness_score``; GLUE STS-B's
  ``sentence1, sentence2, label``) or with a mapping (``--columns sentence1=A,sentence2=B,score=C``);
- ``stsb`` (test split), ``stsb:validation`` or ``stsb:train``: the hub copy ``sentence-transformers/stsb``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_nli.data.tables import (check_file, decode_text, is_missing_text, layout_roles, read_table, split_lines,
                                   table_from_memory)
from sbert_nli.errors import SbertNliError

log = logging.getLogger("sbert_nli")
DEFAULT_COLUMNS = {"sentence1": "sentence1", "sentence2": "sentence2", "score": "score"}
LAYOUTS = [
    ("sentence1/sentence2/score (STS benchmark, sentence-transformers/stsb)", DEFAULT_COLUMNS),
    ("SICK (sentence_A, sentence_B, relatedness_score)",
     {"sentence1": "sentence_A", "sentence2": "sentence_B", "score": "relatedness_score"}),
    ("GLUE STS-B (sentence1, sentence2, label)", {"sentence1": "sentence1", "sentence2": "sentence2", "score": "label"}),
]
HUB_SPLITS = {"stsb": "test", "stsb:test": "test", "stsb:validation": "validation", "stsb:dev": "validation",
              "stsb:train": "train"}


@dataclass
class STSData:
    name: str
    sentence1: list[str]
    sentence2: list[str]
    score: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.sentence1)


def _is_stsbenchmark(text: str) -> bool:
    first = text.split("\n", 1)[0].split("\t")
    if len(first) < 7:
        return False
    try:
        float(first[4])
    except ValueError:
        return False
    return True


def read_stsbenchmark(path: Path, text: str) -> STSData:
    s1, s2, scores = [], [], []
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise SbertNliError(f"{path}:{number}: {len(fields)} tab-separated fields, the STS benchmark format has 7 or 9")
        s1.append(fields[5])
        s2.append(fields[6])
        scores.append(_score(fields[4], path, number))
    return _finish(str(path), s1, s2, scores)


def _score(value, path, line) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise SbertNliError(f"{path}:{line}: score {value!r} is not a number") from None
    if not math.isfinite(score):
        raise SbertNliError(f"{path}:{line}: score {value!r} is not a finite number")
    return score


def _finish(name: str, s1: list, s2: list, scores: list) -> STSData:
    # The missing-text rule of every reader (null, NaN, empty, whitespace-only): drop and count.
    keep = [i for i in range(len(s1)) if not is_missing_text(s1[i]) and not is_missing_text(s2[i])]
    bad = next((i for i in keep if not isinstance(s1[i], str) or not isinstance(s2[i], str)), None)
    if bad is not None:
        raise SbertNliError(f"{name}: row {bad + 1}: sentences must be text, got {s1[bad]!r} / {s2[bad]!r}")
    if len(keep) < 2:
        raise SbertNliError(f"{name}: {len(keep)} usable sentence pair(s); STS correlations need at least 2")
    if len(keep) < len(s1):
        log.warning("%s: dropped %d pair(s) with a missing sentence (null, NaN, empty or whitespace-only)",
                    name, len(s1) - len(keep))
    scores = np.asarray([scores[i] for i in keep], dtype=np.float64)
    if np.ptp(scores) == 0:
        raise SbertNliError(f"{name}: every gold score is {scores[0]}; correlations are undefined")
    return STSData(name, [s1[i] for i in keep], [s2[i] for i in keep], scores)


def read_sts(source: str, columns: dict[str, str] | None = None, quoting: str = "auto") -> STSData:
    """STS pairs from a hub name or a local file (formats and ``quoting``: :mod:`sbert_nli.data.tables`)."""
    if source in HUB_SPLITS:
        return load_hub_stsb(HUB_SPLITS[source])
    path = check_file(source)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        text = decode_text(path)
        if _is_stsbenchmark(text) and not columns:
            log.info("%s: recognised layout STS benchmark release (tab-separated, no header, no quoting)", path)
            return read_stsbenchmark(path, text)
    return sts_from_table(read_table(path, quoting), columns)


def sts_from_memory(data, columns: dict[str, str] | None = None) -> STSData:
    """STS pairs from data held in Python (a ``datasets.Dataset`` such as the hub's stsb split, a
    DataFrame, a dict of columns or a list of rows), checked as a file is."""
    roles = {**DEFAULT_COLUMNS, **(columns or {})}
    return sts_from_table(table_from_memory(data, list(roles.values())), columns, "columns")


def sts_from_table(table, columns: dict[str, str] | None = None, hint: str = "--columns") -> STSData:
    cols = table.select(layout_roles(table, LAYOUTS, columns), hint)
    scores = [_score(v, table.path, line) for v, line in zip(cols["score"], table.lines)]
    return _finish(str(table.path), cols["sentence1"], cols["sentence2"], scores)


def load_hub_stsb(split: str) -> STSData:
    from sbert_nli.hub import require_hub

    require_hub("sentence-transformers/stsb", "pass a local STS file instead (e.g. sts-test.csv)")
    import datasets

    try:
        ds = datasets.load_dataset("sentence-transformers/stsb", split=split)
    except Exception as exc:
        raise SbertNliError(
            f"could not load sentence-transformers/stsb from the hub ({type(exc).__name__}); pass a local STS file"
        ) from None
    return _finish(f"stsb:{split}", list(ds["sentence1"]), list(ds["sentence2"]), list(ds["score"]))
