"""Readers for the STS sets of the papers' table: STS12-16 (SentEval layout), SICK-R test, hub copies.

- STS12-STS16: SentEval's ``data/downstream/STS`` layout, one folder per year (``STS12-en-test`` ...)
  holding ``STS.input.<subset>.txt`` (``sentence1<TAB>sentence2``) and ``STS.gs.<subset>.txt`` (one
  gold score per line). Empty gold lines mark pairs outside the official test set (STS15, STS16):
  they are skipped, as SentEval's ``STSEval.loadFile`` does. The subsets are SentEval's lists
  (``senteval/sts.py``; STS13 without the licensed SMT file). Text is kept as is (U+FFFD, C1
  control characters, trailing spaces): the tokenizer sees what SentEval's batcher would.
- SICK-R test: the final release ``SICK.txt`` (tab-separated, header, CRLF, 12 columns; the rows
  whose ``SemEval_set`` is ``TEST``, 4,906 pairs) or the SemEval-2014 file SentEval reads,
  ``SICK_test_annotated.txt`` (header ``pair_ID sentence_A sentence_B relatedness_score
  entailment_judgment``, 4,927 pairs). Columns are found by their header names.
- Hub copies (``mteb/sts12-sts`` ... ``mteb/sts16-sts``, ``mteb/sickr-sts``, test split) for users
  without local files; they carry no sub-file names, so a year read from the hub is one subset.
  MTEB's SICK-R holds all 9,927 SICK pairs, not the test set: its source line says so.

Every reader returns a :class:`SuiteSet`: the set's paper name, where it was read from, and its
scored pairs per subset (:class:`sbert_nli.data.sts.STSData`, scores float64 on the 0-5 scale).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_nli.data.sts import STSData
from sbert_nli.data.tables import decode_text
from sbert_nli.errors import SbertNliError

# SentEval's subsets per year (facebookresearch/SentEval senteval/sts.py, STS1xEval.datasets).
SENTEVAL_SUBSETS = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
HUB_IDS = {"STS12": "mteb/sts12-sts", "STS13": "mteb/sts13-sts", "STS14": "mteb/sts14-sts",
           "STS15": "mteb/sts15-sts", "STS16": "mteb/sts16-sts", "SICK-R": "mteb/sickr-sts"}
SICK_FILES = ("SICK_test_annotated.txt", "SICK.txt")  # SentEval's file first


@dataclass
class SuiteSet:
    """One column of the paper's table: ``name`` (STS12 ... SICK-R), ``source`` (what was read, in
    words), and ``subsets``: one :class:`STSData` per sub-file, named by the sub-file."""

    name: str
    source: str
    subsets: list[STSData]
    # False for a hub copy of a year: one table without sub-file names, so only "all" is defined.
    has_subfiles: bool = True

    @property
    def pairs(self) -> int:
        return sum(len(s) for s in self.subsets)


def year_folder(senteval_dir: str | Path, year: str) -> Path:
    """``<dir>/STS12-en-test``; raise if the folder is not there."""
    folder = Path(senteval_dir) / f"{year}-en-test"
    if not folder.is_dir():
        raise SbertNliError(f"{folder} does not exist: --senteval-dir must hold SentEval's "
                            f"STS12-en-test ... STS16-en-test folders (data/downstream/STS)")
    return folder


def read_senteval_year(senteval_dir: str | Path, year: str) -> SuiteSet:
    """All SentEval subsets of ``year`` (``"STS12"`` ... ``"STS16"``) from a SentEval-layout folder.

    Raises SbertNliError for a missing file, input/gold line counts that differ, an input line
    without exactly two tab-separated sentences, or a gold value that is not a finite number.
    """
    folder = year_folder(senteval_dir, year)
    subsets = [read_senteval_subset(folder, name) for name in SENTEVAL_SUBSETS[year]]
    pairs = sum(len(s) for s in subsets)
    return SuiteSet(year, f"{folder} (SentEval layout, {len(subsets)} sub-files, {pairs} pairs)", subsets)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise SbertNliError(f"{path} does not exist (SentEval reads it; is the folder complete?)")
    text = decode_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the final newline ends the last line, it does not start one
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_senteval_subset(folder: Path, name: str) -> STSData:
    """The scored pairs of ``STS.input.<name>.txt`` / ``STS.gs.<name>.txt``; empty gold lines skipped."""
    inputs, golds = folder / f"STS.input.{name}.txt", folder / f"STS.gs.{name}.txt"
    pairs, gold = _lines(inputs), _lines(golds)
    if len(pairs) != len(gold):
        raise SbertNliError(f"{inputs} has {len(pairs)} lines but {golds} has {len(gold)}; they must pair up")
    s1, s2, scores = [], [], []
    for number, (pair, value) in enumerate(zip(pairs, gold), start=1):
        if not value.strip():
            continue  # unscored pair (outside the official test subset)
        fields = pair.split("\t")
        if len(fields) != 2:
            raise SbertNliError(f"{inputs}:{number}: {len(fields)} tab-separated fields, expected sentence1<TAB>sentence2")
        s1.append(fields[0])
        s2.append(fields[1])
        scores.append(_gold(value, golds, number))
    if len(scores) < 2:
        raise SbertNliError(f"{golds}: {len(scores)} scored pair(s); a correlation needs at least 2")
    return STSData(name, s1, s2, np.asarray(scores, dtype=np.float64))


def _gold(value: str, path, line: int) -> float:
    try:
        score = float(value)
    except ValueError:
        raise SbertNliError(f"{path}:{line}: gold score {value!r} is not a number") from None
    if not math.isfinite(score):
        raise SbertNliError(f"{path}:{line}: gold score {value!r} is not a finite number")
    return score


def read_sick(path: str | Path) -> SuiteSet:
    """SICK-R test pairs from ``SICK.txt`` (TEST rows) or ``SICK_test_annotated.txt`` (all rows).

    The file is tab-separated with a header; ``sentence_A``, ``sentence_B`` and
    ``relatedness_score`` are found by name, and a ``SemEval_set`` column selects the TEST rows.
    ``source`` says which of the two distributions was read.
    """
    path = Path(path)
    if path.is_dir():
        raise SbertNliError(f"--sick {path} is a folder; pass the file (one of {', '.join(SICK_FILES)})")
    if not path.is_file():
        raise SbertNliError(f"--sick {path} does not exist; pass {' or '.join(SICK_FILES)}")
    lines = _lines(path)
    header = lines[0].split("\t") if lines else []
    needed = ("sentence_A", "sentence_B", "relatedness_score")
    missing = [c for c in needed if c not in header]
    if missing:
        raise SbertNliError(f"{path}: header lacks {', '.join(missing)}; expected SICK.txt or SICK_test_annotated.txt "
                            f"(tab-separated, header with {', '.join(needed)})")
    a, b, score = (header.index(c) for c in needed)
    split = header.index("SemEval_set") if "SemEval_set" in header else None
    s1, s2, scores = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise SbertNliError(f"{path}:{number}: {len(fields)} tab-separated fields, the header has {len(header)}")
        if split is not None and fields[split].strip() != "TEST":
            continue
        s1.append(fields[a])
        s2.append(fields[b])
        scores.append(_gold(fields[score], path, number))
    kind = "final release SICK.txt, SemEval_set == TEST" if split is not None else "SemEval-2014 test file"
    if len(scores) < 2:
        raise SbertNliError(f"{path}: {len(scores)} test pair(s) ({kind}); a correlation needs at least 2")
    return SuiteSet("SICK-R", f"{path} ({kind}, {len(scores)} pairs)",
                    [STSData("test", s1, s2, np.asarray(scores, dtype=np.float64))])


def find_sick(folder: Path) -> Path | None:
    """The SICK test file under ``folder`` or its ``SICK``/``sick`` subfolder, SentEval's file first."""
    for sub in (folder, folder / "SICK", folder / "sick"):
        for name in SICK_FILES:
            if (sub / name).is_file():
                return sub / name
    return None


def load_hub_set(name: str) -> SuiteSet:
    """``name`` (STS12 ... STS16, SICK-R) from its MTEB hub copy, test split, as one subset."""
    from sbert_nli.hub import require_hub

    hub_id = HUB_IDS[name]
    hint = "pass --senteval-dir DIR (SentEval's STS12-en-test ... folders)" if name.startswith("STS1") \
        else "pass --sick SICK_test_annotated.txt (or SICK.txt)"
    require_hub(hub_id, hint)
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, split="test")
    except Exception as exc:
        raise SbertNliError(f"could not load {hub_id} from the hub ({type(exc).__name__}); {hint}") from None
    scores = np.asarray([float(v) for v in ds["score"]], dtype=np.float64)
    note = "no sub-file names"
    if name == "SICK-R":  # MTEB's SICK-R is every SICK pair (9,927), not the test set the papers score
        note = "MTEB's SICK-R: all SICK pairs, not the paper's test set; pass --sick for that"
        logging.getLogger("sbert_nli").warning("SICK-R from %s: %d pairs, %s", hub_id, len(scores), note)
    return SuiteSet(name, f"{hub_id} (hub, test split, {len(scores)} pairs; {note})",
                    [STSData(hub_id, list(ds["sentence1"]), list(ds["sentence2"]), scores)],
                    has_subfiles=name == "SICK-R")
