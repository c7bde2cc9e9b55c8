"""Read local tabular files (.jsonl, .json, .csv, .tsv, .txt, .parquet) into columns of Python values.

Every reader returns a :class:`Table`: column name -> list of values, plus the 1-based line number
of each row in the file (for error messages). A data file is only ever parsed, never evaluated, and
text comes back exactly as written (no stripping, no quote removal the file does not ask for).
Every problem a user can cause (missing file, bad UTF-8, broken line, missing columns) raises
:class:`SbertNliError` naming the file and, where there is one, the line.

Delimited files (``.csv`` comma; ``.tsv`` and ``.txt`` tab, with a header line) come in two kinds:
quoted (pandas / Python ``csv`` writers: ``"`` wraps a field, ``""`` escapes a quote) and unquoted
(the SNLI 1.0 / MultiNLI 1.0 ``.txt`` releases, SICK.txt, sentence-transformers' AllNLI.tsv: a
``"`` is just a character). ``quoting="auto"`` (:func:`read_delimited`) decides per file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from sbert_nli.errors import SbertNliError

log = logging.getLogger("sbert_nli")

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")
QUOTING = ("auto", "csv", "none")


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


def is_missing_text(value) -> bool:
    """The one missing-text rule of every reader: null/None, NaN, and empty or whitespace-only
    strings are missing. (Readers of training/evaluation pairs drop and count such pairs; ``encode``
    encodes them as the empty string.)"""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def layout_roles(table: Table, layouts: list[tuple[str, dict[str, str]]], columns: dict[str, str] | None) -> dict[str, str]:
    """role -> column for ``table``: the first of ``layouts`` (``(name, role -> column)``, the default
    first) whose columns the table has, logged by name unless it is the default; ``columns``
    (``--columns``) overrides it role by role."""
    found = next(((name, roles) for name, roles in layouts if all(c in table.columns for c in roles.values())), None)
    if found and found[1] is not layouts[0][1] and not (columns and set(columns) >= set(layouts[0][1])):
        log.info("%s: recognised layout %s", table.path, found[0])
    return {**(found[1] if found else layouts[0][1]), **(columns or {})}


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


def split_lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only (U+2028, U+0085, form feed are text), one trailing ``\\r`` removed
    (CRLF files); a final newline ends the last line instead of starting an empty one."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_table(path: str | Path, quoting: str = "auto") -> Table:
    """Read any supported table. ``quoting`` applies to .csv/.tsv/.txt: ``auto``, ``csv`` or ``none``
    (see :func:`read_delimited`)."""
    if quoting not in QUOTING:
        raise SbertNliError(f"quoting must be one of {', '.join(QUOTING)}, got {quoting!r}")
    path = check_file(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = _read_parquet(path)
    elif suffix == ".jsonl":
        table = _read_jsonl(path)
    elif suffix == ".json":
        table = _read_json(path)
    else:
        table = read_delimited(path, "," if suffix == ".csv" else "\t", quoting)
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
    if any(pa.types.is_temporal(field.type) for field in table.schema):  # Arrow turns date-like text into dates
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


def read_sentences(path: str | Path, field: str = "text", quoting: str = "auto") -> list[str]:
    """The sentences to encode, exactly one per input line (``.txt``: split on ``\n`` only, one
    trailing ``\r`` dropped) or per table row (column ``field``), in input order. Nothing is dropped:
    an empty line stays an empty sentence, a missing value (null, NaN) becomes ``""``.
    Raises SbertNliError for a missing column, a non-text value (naming its line) or an empty file."""
    source = check_file(path)
    if source.suffix.lower() == ".txt":
        sentences, lines = split_lines(decode_text(source)), None
    else:
        table = read_table(source, quoting)
        if field not in table.columns:
            raise SbertNliError(f"{source}: no '{field}' column (found {', '.join(table.columns)}); pass --field NAME")
        sentences, lines = [], table.lines
        for value, line in zip(table.columns[field], table.lines):
            if not isinstance(value, str) and not is_missing_text(value):
                raise SbertNliError(f"{source}:{line}: '{field}' is {type(value).__name__} {value!r}, not text")
            sentences.append(value if isinstance(value, str) else "")
    if not sentences:
        raise SbertNliError(f"{source} has no sentences")
    empty = [i for i, text in enumerate(sentences) if not text.strip()]
    if empty:
        where = "line" if lines is None else "row at line"
        log.info("%s: %d empty or missing sentence(s) (first: %s %d) encoded as the empty sentence, one row each",
                 source, len(empty), where, empty[0] + 1 if lines is None else lines[empty[0]])
    return sentences


# --------------------------------------------------------------------------- delimited files
@dataclass
class _Parse:
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    raw: list[str] | None = None  # the raw line of each row (unquoted parses only)


class _ParseError(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line


def _shown(delimiter: str) -> str:
    return "\\t" if delimiter == "\t" else delimiter


def _keep(fields: list[str], width: int) -> bool:
    """Blank lines separate nothing in a multi-column file; in a one-column file they are empty rows."""
    return width == 1 or not (len(fields) <= 1 and not "".join(fields).strip())


def _parse_unquoted(text: str, delimiter: str) -> _Parse:
    """Split on ``\\n`` (one trailing ``\\r`` dropped), then on the delimiter: ``"`` is plain text."""
    lines = split_lines(text)
    if not lines:
        raise _ParseError(1, "no header line")
    header = lines[0].split(delimiter)
    out = _Parse(header, [], [], [])
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split(delimiter)
        if not _keep(fields, len(header)):
            continue
        if len(fields) != len(header):
            raise _ParseError(number, f"{len(fields)} fields, but the header has {len(header)}")
        out.rows.append(fields)
        out.lines.append(number)
        out.raw.append(line)
    return out


def _parse_quoted(text: str, delimiter: str) -> _Parse:
    """Python's csv reader (pandas-style quoting: ``""`` escapes a quote inside a quoted field) in
    strict mode, so a broken quote is an error instead of a silently merged row."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise _ParseError(1, "no header line") from None
    except csv.Error as exc:
        raise _ParseError(1, f"broken header ({exc})") from None
    out = _Parse(header, [], [])
    try:
        for fields in reader:
            if not _keep(fields, len(header)):
                continue
            fields = fields or [""]
            if len(fields) != len(header):
                raise _ParseError(reader.line_num, f"{len(fields)} fields, but the header has {len(header)}")
            out.rows.append(fields)
            out.lines.append(reader.line_num)
    except csv.Error as exc:
        raise _ParseError(reader.line_num, f"broken quoting ({exc})") from None
    return out


def _written_by_csv(fields: list[str], raw: str, delimiter: str) -> bool:
    """True when a standard CSV writer (minimal or all-field quoting) writes ``fields`` as ``raw``."""
    for quoting in (csv.QUOTE_MINIMAL, csv.QUOTE_ALL):
        buffer = io.StringIO()
        # The writer quotes the characters of its line terminator: give it "\r\n" so CR and LF both count.
        csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n", quoting=quoting).writerow(fields)
        if buffer.getvalue()[:-2] == raw:
            return True
    return False


def read_delimited(path: Path, delimiter: str, quoting: str = "auto") -> Table:
    """A delimited file with a header line. ``quoting``: ``csv`` (quoted fields, ``""`` escapes),
    ``none`` (every character is text), or ``auto``:

    - no ``"`` in the file, or only one of the two parses fits the header on every line: that one;
    - both fit and agree: either;
    - both fit: a ``.txt`` file is unquoted (the SNLI/MultiNLI 1.0 and SICK releases are); otherwise
      the rows where the two differ decide. If a standard CSV writer would write each such row
      exactly as it stands (every quote a real quoting), the file is quoted; if none would (e.g. a
      sentence that merely starts and ends with ``"``), it is unquoted; a mix is ambiguous: error.
    Errors name the line, the cause and the delimiter (a tab shown as ``\\t``)."""
    text = decode_text(path)
    if quoting == "none" or (quoting == "auto" and '"' not in text):
        parse = _try(_parse_unquoted, text, delimiter, path, "without quoting" if quoting == "none" else "")
    elif quoting == "csv":
        parse = _try(_parse_quoted, text, delimiter, path, "with csv quoting")
    else:
        parse = _auto(path, text, delimiter)
    return _to_table(path, parse)


def _try(parser, text: str, delimiter: str, path: Path, how: str) -> _Parse:
    try:
        return parser(text, delimiter)
    except _ParseError as exc:
        how = f" {how}" if how else ""
        raise SbertNliError(f"{path}:{exc.line}: cannot read{how} (delimiter '{_shown(delimiter)}'): "
                            f"{str(exc).split(': ', 1)[1]}; check the delimiter and quoting") from None


def _auto(path: Path, text: str, delimiter: str) -> _Parse:
    parses, errors = {}, {}
    for name, parser in (("quoted", _parse_quoted), ("unquoted", _parse_unquoted)):
        try:
            parses[name] = parser(text, delimiter)
        except _ParseError as exc:
            errors[name] = str(exc)
    if not parses:
        raise SbertNliError(
            f"{path}: cannot read with delimiter '{_shown(delimiter)}': with csv quoting {errors['quoted']}; "
            f"without quoting {errors['unquoted']}; fix the file (or pass --quoting csv / --quoting none "
            "to see one reading's error)")
    if len(parses) == 1:
        (name, parse), = parses.items()
        other = "quoted" if name == "unquoted" else "unquoted"
        log.info("%s: read %s (the %s reading fails at %s)", path, "as csv with quoting" if name == "quoted"
                 else "without quoting (a \" is text)", other, errors[other])
        return parse
    quoted, unquoted = parses["quoted"], parses["unquoted"]
    if path.suffix.lower() == ".txt":  # the .txt releases (SNLI/MultiNLI 1.0, SICK) are unquoted
        if (quoted.header, quoted.rows) != (unquoted.header, unquoted.rows):
            log.info("%s: read without quoting (a \" is text), as the .txt releases are written; pass --quoting "
                     "csv for a quoted file", path)
        return unquoted
    if len(quoted.rows) != len(unquoted.rows):
        raise SbertNliError(f"{path}: ambiguous quoting: the quoted and unquoted readings give {len(quoted.rows)} and "
                            f"{len(unquoted.rows)} rows (delimiter '{_shown(delimiter)}'); pass --quoting csv or --quoting none")
    rows = [(quoted.header, unquoted.header, 1)] + list(zip(quoted.rows, unquoted.rows, unquoted.lines))
    standard, plain = [], []
    raw = dict(zip(unquoted.lines, unquoted.raw))
    raw[1] = split_lines(text)[0]
    for q, u, line in rows:
        if q != u:
            (standard if _written_by_csv(q, raw[line], delimiter) else plain).append(line)
    if not standard and not plain:
        return unquoted
    if standard and plain:
        raise SbertNliError(
            f"{path}: ambiguous quoting (delimiter '{_shown(delimiter)}'): line {standard[0]} reads as csv quoting "
            f"(\"\" escapes), but line {plain[0]} has a field wrapped in \" that a csv writer would not quote; "
            "pass --quoting csv (strip the quotes) or --quoting none (keep every \" as text)")
    if plain:
        log.info("%s: read without quoting (a \" is text; %d line(s) such as line %d keep their quotes); "
                 "pass --quoting csv to strip them", path, len(plain), plain[0])
        return unquoted
    log.info("%s: read as csv with quoting (%d line(s) such as line %d use \"\" escapes); "
             "pass --quoting none to keep every \" as text", path, len(standard), standard[0])
    return quoted


def _to_table(path: Path, parse: _Parse) -> Table:
    header = [name.strip() for name in parse.header]
    # pandas writes its index as an unnamed first column.
    names = [name or f"column_{i}" for i, name in enumerate(header)]
    columns = {name: [row[i] for row in parse.rows] for i, name in enumerate(names)}
    return Table(path, columns, parse.lines)


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
