"""Read local tabular files (.jsonl, .json, .csv, .tsv, .parquet) into columns of Python values.

Every reader returns a :class:`Table`: column name -> list of values, plus the 1-based line number
of each row in the file (for error messages). A data file is only ever parsed, never evaluated.
Every problem a user can cause (missing file, bad UTF-8, broken line, missing columns) raises
:class:`SbertNliError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from sbert_nli.errors import SbertNliError

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


@dataclass
class Table:
    path: Path
    columns: dict[str, list]
    lines: list[int]  # file line (or row number for parquet/json) of each row

    def __len__(self) -> int:
        return len(self.lines)

    def select(self, roles: dict[str, str], source_hint: str) -> dict[str, list]:
        """Return ``{role: column values}``; a missing column gets an error that shows the mapping."""
        missing = [column for column in roles.values() if column not in self.columns]
        if missing:
            found = ", ".join(self.columns) or "none"
            example = ",".join(f"{role}=COLUMN" for role in roles)
            raise SbertNliError(
                f"{self.path}: missing column(s) {', '.join(missing)}; columns found: {found}; "
                f"map them with {source_hint} {example}"
            )
        return {role: self.columns[column] for role, column in roles.items()}


def check_file(path: str | Path, suffixes=TABLE_SUFFIXES) -> Path:
    path = Path(path)
    if path.is_dir():
        raise SbertNliError(f"{path} is a directory; expected a data file ({', '.join(suffixes)})")
    if not path.exists():
        raise SbertNliError(f"data file {path} does not exist")
    if path.suffix.lower() not in suffixes:
        raise SbertNliError(
            f"{path}: unknown file type '{path.suffix or '(none)'}'; use one of {', '.join(suffixes)}"
        )
    if path.stat().st_size == 0:
        raise SbertNliError(f"data file {path} is empty")
    return path


def decode_text(path: Path) -> str:
    """Read a file as UTF-8; on bad bytes name the line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SbertNliError(f"{path}:{line}: not valid UTF-8 ({exc.reason}); re-save the file as UTF-8") from None


def read_table(path: str | Path) -> Table:
    path = check_file(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = _read_parquet(path)
    elif suffix == ".jsonl":
        table = _read_jsonl(path)
    elif suffix == ".json":
        table = _read_json(path)
    else:
        table = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    if len(table) == 0:
        raise SbertNliError(f"data file {path} has no rows")
    return table


def _rows_to_table(path: Path, rows: list[dict], lines: list[int]) -> Table:
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            names.setdefault(key, None)
    columns = {name: [row.get(name) for row in rows] for name in names}
    return Table(path, columns, lines)


def _read_jsonl(path: Path) -> Table:
    text = decode_text(path)  # validates UTF-8 with a line number first
    fast = _read_jsonl_arrow(text)
    if fast is not None:
        return Table(path, fast, list(range(1, len(next(iter(fast.values()), [])) + 1)))
    rows, lines = [], []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is text
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SbertNliError(f"{path}:{number}: broken JSON line ({exc.msg}); fix or remove the line") from None
        if not isinstance(row, dict):
            raise SbertNliError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
        lines.append(number)
    return _rows_to_table(path, rows, lines)


def _read_jsonl_arrow(text: str) -> dict[str, list] | None:
    """Arrow's multithreaded JSON-lines reader, for well-formed files without blank lines (so row i
    is line i). Anything unusual (blank lines, mixed types per column, a broken line) returns None
    and the line-by-line reader takes over, with its precise error messages."""
    if not text or "\n\n" in text or text.startswith("\n") or "\r" in text:
        return None
    try:
        import pyarrow as pa
        import pyarrow.json as pj

        table = pj.read_json(pa.BufferReader(text.encode("utf-8")))
    except Exception:  # ArrowInvalid and friends: fall back, never guess
        return None
    if table.num_rows != text.count("\n") + (0 if text.endswith("\n") else 1):
        return None
    if any(pa.types.is_nested(field.type) for field in table.schema):  # objects inside rows: keep the slow path
        return None
    return table.to_pydict()


def _read_json(path: Path) -> Table:
    try:
        data = json.loads(decode_text(path))
    except json.JSONDecodeError as exc:
        raise SbertNliError(f"{path}:{exc.lineno}: broken JSON ({exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise SbertNliError(f"{path}: columns have different lengths {sorted(lengths)}")
        return Table(path, {str(k): list(v) for k, v in data.items()}, list(range(1, lengths.pop() + 1)))
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise SbertNliError(
            f"{path}: expected a list of objects, {{\"data\": [...]}} or an object of columns"
        )
    return _rows_to_table(path, data, list(range(1, len(data) + 1)))


def _read_delimited(path: Path, delimiter: str) -> Table:
    # csv handles pandas-style quoting ("" escapes a quote inside a quoted field); strict mode turns
    # a broken quote into an error instead of a silently merged row.
    text = decode_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise SbertNliError(f"data file {path} is empty") from None
    except csv.Error as exc:
        raise SbertNliError(f"{path}:1: broken header ({exc})") from None
    header = [name.strip() for name in header]
    # pandas writes its index as an unnamed first column.
    columns: dict[str, list] = {name or f"column_{i}": [] for i, name in enumerate(header)}
    names = list(columns)
    lines: list[int] = []
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(names):
                raise SbertNliError(
                    f"{path}:{reader.line_num}: {len(fields)} fields, but the header has {len(names)}; "
                    "check the delimiter and quoting"
                )
            for name, value in zip(names, fields):
                columns[name].append(value)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise SbertNliError(f"{path}:{reader.line_num}: broken line ({exc}); check the quoting") from None
    return Table(path, columns, lines)


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(path).to_pydict()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise SbertNliError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    length = len(next(iter(data.values()))) if data else 0
    return Table(path, {str(k): v for k, v in data.items()}, list(range(1, length + 1)))


MEMORY_PREFIX = "in-memory:"  # data.train entry that stands for data handed over from Python


def table_from_memory(data, roles: list[str]) -> Table:
    """A :class:`Table` of the columns ``roles`` from data held in Python, so in-memory data goes through
    the same validation as files. Accepted: a ``datasets.Dataset``, a pandas DataFrame, a dict of
    columns, a list of dicts, a list of tuples/lists in ``roles`` order, or a list of
    sentence-transformers ``InputExample`` (``texts`` + ``label``). Row ``i`` is reported as line ``i+1``.
    Raises :class:`SbertNliError` for anything else, naming what was expected."""
    kind = _memory_kind(data)
    name = Path(f"{MEMORY_PREFIX}{kind}")
    if kind == "datasets.DatasetDict":
        raise SbertNliError(f"got a datasets.DatasetDict with splits {list(data)}; pass one split, e.g. ds['train']")
    if kind == "datasets.Dataset":  # only the needed columns; list(): datasets 5 columns are lazy
        columns = {c: _dataset_column(data, c) for c in data.column_names if c in roles}
        columns.update({c: [] for c in data.column_names if c not in roles})
    elif kind == "pandas.DataFrame":
        columns = {str(c): data[c].tolist() if c in roles else [] for c in data.columns}
    elif isinstance(data, dict):
        if not all(isinstance(v, (list, tuple)) or hasattr(v, "tolist") for v in data.values()):
            raise SbertNliError("a dict of training data must map column names to lists of values")
        columns = {str(k): list(v.tolist() if hasattr(v, "tolist") else v) for k, v in data.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise SbertNliError(f"{name}: columns have different lengths {sorted(lengths)}")
    elif isinstance(data, (list, tuple)):
        columns = _columns_from_rows(name, list(data), roles)
    else:
        raise SbertNliError(f"cannot read training data of type {type(data).__name__}: pass file paths, a "
                            "datasets.Dataset, a pandas DataFrame, a dict of columns or a list of rows")
    length = max((len(v) for c, v in columns.items() if c in roles), default=0)
    if length == 0:
        raise SbertNliError(f"{name} has no rows")
    return Table(name, columns, list(range(1, length + 1)))


def _dataset_column(data, column: str) -> list:
    """A Dataset column as Python values; ClassLabel integers become their names, because a ClassLabel
    may order its names differently from 0 entailment, 1 neutral, 2 contradiction (class_encode_column
    sorts them alphabetically). -1 (no gold label) stays -1."""
    values = list(data[column])
    feature = data.features[column]
    if type(feature).__name__ == "ClassLabel":
        values = [feature.int2str(v) if isinstance(v, int) and v >= 0 else v for v in values]
    return values


def _memory_kind(data) -> str:
    module = type(data).__module__.split(".")[0]
    if module in ("datasets", "pandas"):
        return f"{module}.{type(data).__name__}"
    return type(data).__name__


def _columns_from_rows(name: Path, rows: list, roles: list[str]) -> dict[str, list]:
    if rows and all(isinstance(r, dict) for r in rows):
        return _rows_to_table(name, rows, []).columns
    if rows and all(hasattr(r, "texts") and hasattr(r, "label") for r in rows):  # InputExample, as in the seed
        rows = [(*r.texts, r.label) for r in rows]
    widths = {len(r) for r in rows if isinstance(r, (list, tuple))}
    if len(widths) != 1 or len(rows) != sum(isinstance(r, (list, tuple)) for r in rows) or widths != {len(roles)}:
        raise SbertNliError(f"{name}: a list of training rows must hold dicts, InputExamples or "
                            f"{len(roles)}-tuples ({', '.join(roles)})")
    return {role: [r[i] for r in rows] for i, role in enumerate(roles)}
