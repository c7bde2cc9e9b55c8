"""Property-based tests: random rows and random bytes fed to every loader raise only SbertNliError."""

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbert_nli.data.nli import read_nli_file
from sbert_nli.data.sts import read_sts
from sbert_nli.errors import SbertNliError

SUFFIXES = [".jsonl", ".json", ".csv", ".tsv", ".parquet"]
values = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True), st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
                   st.sampled_from(["entailment", "neutral", "contradiction", "-", "-1", "0", "2", "5.0", " "]))
keys = st.sampled_from(["premise", "hypothesis", "label", "sentence1", "sentence2", "score", "other", ""])
rows = st.lists(st.dictionaries(keys, values, max_size=6), max_size=8)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _loaders(path: str):
    yield lambda: read_nli_file(path)
    yield lambda: read_sts(path)


def _check(path: Path) -> None:
    for load in _loaders(str(path)):
        try:
            load()
        except SbertNliError:
            pass


def _write_rows(path: Path, data: list[dict]) -> None:
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    elif suffix == ".json":
        path.write_text(json.dumps(data))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = sorted({k for r in data for k in r})
        columns = {n: [None if r.get(n) is None else str(r.get(n)) for r in data] for n in names}
        pq.write_table(pa.table(columns) if names else pa.table({"x": []}), path)
    else:
        names = sorted({k for r in data for k in r}) or ["x"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t" if suffix == ".tsv" else ",")
        writer.writerow(names)
        for r in data:
            writer.writerow(["" if r.get(n) is None else r.get(n) for n in names])
        path.write_text(buffer.getvalue())


@SETTINGS
@given(data=rows, suffix=st.sampled_from(SUFFIXES))
def test_random_rows_raise_only_our_error(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"rows{suffix}"
        _write_rows(path, data)
        _check(path)


@SETTINGS
@given(blob=st.binary(max_size=300), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_raise_only_our_error(blob, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"bytes{suffix}"
        path.write_bytes(blob)
        _check(path)


@SETTINGS
@given(lines=st.lists(st.lists(st.text(alphabet=st.characters(blacklist_characters="\t\n\r", blacklist_categories=("Cs",)), max_size=8),
                               min_size=1, max_size=9), max_size=6))
def test_random_stsbenchmark_lines_raise_only_our_error(lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sts-x.csv"
        path.write_text("\n".join("\t".join(fields) for fields in lines))
        try:
            read_sts(str(path))
        except SbertNliError:
            pass


def test_loaders_accept_good_data_after_all(tmp_path):
    path = tmp_path / "ok.jsonl"
    _write_rows(path, [{"premise": "a", "hypothesis": "b", "label": "neutral"}])
    assert len(read_nli_file(str(path))) == 1
    with pytest.raises(SbertNliError):
        read_sts(str(path))
