"""Historical files as records: JSON lines, CSV and Parquet, one JSON object per record.

JSON lines pass through byte for byte (a bad line stays bad, to be dead-lettered
downstream). CSV and Parquet rows are mapped to the event schema: the schema's
columns keep their names, ``context.NAME`` columns go into ``context``, every
other non-empty column into ``features``; a row without ``user_id`` but with a
``label`` is a label record. A row with neither keeps every column at the top
level, so the record that the worker refuses (``missing_field``) still carries
the row's content.

A row that cannot be written as JSON at all becomes a :class:`BadRow`: one of
the reasons of :mod:`features.schema` (``not_finite`` for ``nan``/``inf`` or a
number that overflows a double, ``too_large`` for an integer beyond 64 bits,
``timestamp_out_of_range`` for such an integer as the event time, ``not_utf8``,
``invalid_value`` for a row with more cells than the header has columns,
``wrong_type`` for a Parquet value JSON cannot hold), a detail naming the line
and column, and the row's content as JSON. A problem of the whole file (an
unknown suffix, a file that is not Parquet, a header with a column twice, a
Parquet ``timestamp`` column without a time zone) raises :class:`SourceError`
with what to fix, before any record is read.

A CSV file is read as UTF-8; a byte-order mark at its start is skipped.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> (folder / "s.csv").write_text(
...     "event_id,timestamp,user_id,item_id,context.device,len,label\\n"
...     "e1,1000,u,i,ios,3.5,\\n"
...     "e1,2000,,,,,1\\n"
...     "e2,3000,u,i,ios,nan,\\n")
116
>>> records = list(read_records(folder / "s.csv"))
>>> [orjson.loads(r) for r in records[:2]]  # doctest: +NORMALIZE_WHITESPACE
[{'event_id': 'e1', 'timestamp': 1000, 'user_id': 'u', 'item_id': 'i',
  'context': {'device': 'ios'}, 'features': {'len': 3.5}},
 {'event_id': 'e1', 'timestamp': 2000, 'label': 1}]
>>> records[2].reason, records[2].detail
('not_finite', "line 4, column 'len': 'nan' is not a finite number")
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from features.schema import is_event_record

__all__ = [
    "FORMATS",
    "BadRow",
    "SourceError",
    "format_of",
    "read_records",
    "row_to_record",
]

FORMATS = ("jsonl", "csv", "parquet")
_TOP_LEVEL = ("event_id", "timestamp", "user_id", "item_id", "author_id", "label", "weight")
_IDS = ("event_id", "user_id", "item_id", "author_id")
#: The integers JSON records carry exactly (orjson's range: int64 and uint64).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
#: The key under which the cells of a CSV row beyond the header's columns are kept.
EXTRA_CELLS = "(cells without a column)"


class SourceError(ValueError):
    """A problem of a whole file (not of one row); the message says what to fix."""


class RowError(ValueError):
    """Why one row cannot be a record: a :data:`features.schema.REASONS` reason and a detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot be written as a record: why, where, and its content.

    ``value`` is the row as a JSON object of its cells (as read, made printable),
    to be dead-lettered with ``reason`` and ``detail``; ``line`` is the row's line
    in a CSV file (1 is the header) or its row number in a Parquet file (from 1).
    """

    reason: str
    detail: str
    value: bytes
    line: int


def format_of(path: Path) -> str:
    """The file's format from its suffix; ``.json``/``.ndjson`` are JSON lines.

    >>> format_of(Path("a.ndjson")), format_of(Path("b.CSV"))
    ('jsonl', 'csv')
    >>> format_of(Path("c.xlsx"))
    Traceback (most recent call last):
    ...
    stream.sources.SourceError: c.xlsx: unknown format 'xlsx'; use .jsonl, .csv or .parquet
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "json", "ndjson"):
        return "jsonl"
    if suffix in ("csv", "parquet"):
        return suffix
    raise SourceError(f"{path}: unknown format {suffix!r}; use .jsonl, .csv or .parquet")


# ---------------------------------------------------------------------- rows


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _text(column: str, value: str) -> str:
    """A text cell, refused when it holds bytes that were not UTF-8 (read as surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as bad:
        raise RowError(
            "not_utf8", f"column {column!r}: not UTF-8 text (invalid byte at {bad.start})"
        ) from None
    return value


def _number(column: str, value: str) -> Any:
    """A cell's text as an int, a float, or itself; non-finite and oversize numbers refused."""
    try:
        number: int | float = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            return value
        if not math.isfinite(number):
            raise RowError(
                "not_finite", f"column {column!r}: {_short(value)} is not a finite number"
            ) from None
        return number
    if not _INT_MIN <= number <= _INT_MAX:
        reason = "timestamp_out_of_range" if column == "timestamp" else "too_large"
        raise RowError(
            reason,
            f"column {column!r}: the integer {_short(value)} ({len(value.lstrip('+-'))} digits)"
            " is beyond the 64-bit range",
        )
    return number


def _decoded(column: str, raw: bytes | bytearray) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as bad:
        raise RowError(
            "not_utf8",
            f"column {column!r}: bytes that are not UTF-8 text (invalid byte at {bad.start})",
        ) from None


def _value(column: str, raw: Any) -> Any:
    """A cell as a JSON value (None for an empty cell), or :class:`RowError`."""
    if isinstance(raw, bytes | bytearray):
        raw = _decoded(column, raw)
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        return _number(column, _text(column, raw))
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        return _number(column, str(raw))
    if isinstance(raw, float | Decimal):
        number = float(raw)
        if not math.isfinite(number):
            raise RowError("not_finite", f"column {column!r}: {raw} is not a finite number")
        return number
    if isinstance(raw, datetime | date | time | list | dict):
        try:
            orjson.dumps(raw)
        except TypeError:
            pass
        else:
            return raw
    raise RowError(
        "wrong_type", f"column {column!r}: a {type(raw).__name__} value, which JSON cannot hold"
    )


def _id(column: str, raw: Any) -> str | None:
    """An id cell as text (a number in an id column is its text)."""
    if isinstance(raw, bytes | bytearray):
        raw = _decoded(column, raw)
    if raw is None or raw == "":
        return None
    return _text(column, str(raw))


def row_to_record(row: Mapping[str | None, Any]) -> dict[str, Any]:
    """A flat table row as an event or label record (empty cells are absent).

    Raises :class:`RowError` for a row that cannot be a JSON record.

    >>> row_to_record({"event_id": "e", "timestamp": "5", "label": "1"})
    {'event_id': 'e', 'timestamp': 5, 'label': 1}
    >>> row_to_record({"a": "1", "b": "x"})  # no schema column: kept as it is
    {'a': 1, 'b': 'x'}
    >>> row_to_record({"event_id": "e", "x": "1e999"})
    Traceback (most recent call last):
    ...
    stream.sources.RowError: not_finite: column 'x': '1e999' is not a finite number
    """
    record: dict[str, Any] = {}
    context: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for column, raw in row.items():
        if column is None:
            cells = list(raw) if isinstance(raw, list) else [raw]
            raise RowError(
                "invalid_value",
                f"{len(cells)} more cell(s) than the header has columns"
                f" ({_short(','.join(map(str, cells)))}); a value that holds a comma"
                " needs double quotes",
            )
        if column in _IDS:
            text = _id(column, raw)
            if text is not None:
                record[column] = text
            continue
        value = _value(column, raw)
        if value is None:
            continue
        if column in _TOP_LEVEL:
            record[column] = value
        elif column.startswith("context."):
            context[column.removeprefix("context.")] = value
        else:
            other[column] = value
    if is_event_record(record):
        record["context"] = context
        record["features"] = other
    else:
        # A label, or a row that is neither: every cell stays, so a refused
        # record carries the row's content.
        record.update({f"context.{k}": v for k, v in context.items()})
        record.update(other)
    return record


def _printable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value).hex()
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        return str(value)
    return value


def _row_json(row: Mapping[str | None, Any]) -> bytes:
    """The row's cells as a JSON object, whatever they hold (for a dead letter)."""
    cells = {EXTRA_CELLS if k is None else str(k): _printable(v) for k, v in row.items()}
    return orjson.dumps(cells, default=str)


def encode_row(row: Mapping[str | None, Any], line: int, where: str = "line") -> bytes | BadRow:
    """A row as JSON record bytes, or a :class:`BadRow` saying why it cannot be one.

    >>> encode_row({"event_id": "e", "timestamp": "1"}, 2)
    b'{"event_id":"e","timestamp":1}'
    >>> encode_row({"event_id": "e", None: ["x"]}, 3).reason
    'invalid_value'
    """
    try:
        return orjson.dumps(row_to_record(row))
    except RowError as error:
        return BadRow(error.reason, f"{where} {line}, {error.detail}", _row_json(row), line)


# ---------------------------------------------------------------------- files


def read_records(path: Path) -> Iterator[bytes | BadRow]:
    """Every record of the file, in file order, as JSON bytes (or a :class:`BadRow`).

    Whole-file problems raise :class:`SourceError` here, before the first record.
    """
    kind = format_of(path)
    if kind == "jsonl":
        _check_readable(path)
        return _jsonl(path)
    if kind == "csv":
        _csv_header(path)
        return _csv(path)
    parquet = _open_parquet(path)
    return _parquet(path, parquet)


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise SourceError(f"{path}: cannot be read: {error.strerror or error}") from None


def _jsonl(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip(b"\r\n")


def _open_csv(path: Path) -> Any:
    try:
        return path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as error:
        raise SourceError(f"{path}: cannot be read: {error.strerror or error}") from None


def _csv_header(path: Path) -> list[str]:
    with _open_csv(path) as handle:
        try:
            header = next(csv.reader(handle), [])
        except csv.Error as error:
            raise SourceError(f"{path}: the header line is not CSV: {error}") from None
    if not header:
        return header
    try:
        for name in header:
            name.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(f"{path}: the header is not UTF-8 text; save the file as UTF-8") from None
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise SourceError(
            f"{path}: the header names {', '.join(map(repr, twice))} more than once;"
            " give every column its own name"
        )
    return header


class _Lines:
    """The file's lines as the CSV reader takes them, keeping the current row's text."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.taken: list[str] = []
        self.count = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self.handle)
        self.taken.append(line)
        self.count += 1
        return line


#: The most text of a row that is not CSV kept in its dead letter (the default record limit).
_MAX_ROW_TEXT = 64 * 1024


def _csv(path: Path) -> Iterator[bytes | BadRow]:
    with _open_csv(path) as handle:
        lines = _Lines(handle)
        # strict: an unterminated quote is an error instead of swallowing the rows after it
        reader = csv.DictReader(lines, strict=True)
        _ = reader.fieldnames  # the header, checked by _csv_header
        while True:
            lines.taken.clear()
            before = lines.count
            try:
                row = next(reader)
            except csv.Error as error:
                start = before + 1 + _blank_lines(lines.taken)
                text = "".join(lines.taken)
                cells: dict[str, Any] = {"text": _printable(text[:_MAX_ROW_TEXT])}
                if len(text) > _MAX_ROW_TEXT:
                    cells["truncated_from_chars"] = len(text)
                reason = "too_large" if "larger than field limit" in str(error) else "invalid_value"
                yield BadRow(reason, f"line {start}, not CSV: {error}", orjson.dumps(cells), start)
                continue
            except StopIteration:
                return
            yield encode_row(row, before + 1 + _blank_lines(lines.taken))


def _blank_lines(taken: list[str]) -> int:
    """How many blank lines the CSV reader skipped before the row it read."""
    return next((index for index, line in enumerate(taken) if line.strip()), 0)


def _open_parquet(path: Path) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(
            "reading Parquet needs pyarrow: pip install 'streamlearn[parquet]'"
        ) from None
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"{path}: not a readable Parquet file: {error}") from None
    schema = parquet.schema_arrow
    if "timestamp" in schema.names:
        kind = schema.field("timestamp").type
        if pa.types.is_timestamp(kind) and kind.tz is None:
            raise SourceError(
                f"{path}: column 'timestamp' is a Parquet timestamp without a time zone"
                f" ({kind}), which could be any instant; store it with its zone, e.g."
                " pyarrow.compute.assume_timezone(column, 'UTC') or pandas"
                " .dt.tz_localize('UTC'), or as epoch milliseconds (int64)"
            )
        if pa.types.is_date(kind) or pa.types.is_time(kind):
            raise SourceError(
                f"{path}: column 'timestamp' is a {kind} column, not an instant; store the"
                " event time as a timestamp with a time zone or as epoch milliseconds (int64)"
            )
    return parquet


_PER_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}


def _parquet(path: Path, parquet: Any) -> Iterator[bytes | BadRow]:
    import pyarrow as pa

    names = parquet.schema_arrow.names
    stamp = names.index("timestamp") if "timestamp" in names else None
    unit: tuple[int, int] | None = None
    if stamp is not None and pa.types.is_timestamp(parquet.schema_arrow.field(stamp).type):
        unit = _PER_MS[parquet.schema_arrow.field(stamp).type.unit]
    number = 0
    try:
        for batch in parquet.iter_batches(batch_size=10_000):
            if unit is not None:
                # The event time as epoch ms, so a time past year 9999 is a number the
                # worker refuses (timestamp_out_of_range) rather than a Python error.
                batch = batch.set_column(stamp, "timestamp", batch.column(stamp).cast(pa.int64()))
            for row, problem in _batch_rows(batch):
                number += 1
                if problem is not None:
                    detail = f"row {number}, {problem.detail}"
                    yield BadRow(problem.reason, detail, _row_json(row), number)
                    continue
                if unit is not None and row.get("timestamp") is not None:
                    times, per = unit
                    row["timestamp"] = row["timestamp"] * times // per
                yield encode_row(row, number, where="row")
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"{path}: unreadable after row {number}: {error}") from None


def _batch_rows(batch: Any) -> Iterator[tuple[dict[str, Any], RowError | None]]:
    """The batch's rows; a value Python cannot hold (a date past 9999) fails its row only."""
    try:
        rows = batch.to_pylist()
    except (ValueError, OverflowError):
        pass
    else:
        for row in rows:
            yield row, None
        return
    columns = list(zip(batch.schema.names, batch.columns, strict=True))
    for index in range(batch.num_rows):
        row: dict[str, Any] = {}
        problem: RowError | None = None
        for name, column in columns:
            try:
                row[name] = column[index].as_py()
            except (ValueError, OverflowError) as error:
                row[name] = f"<{column.type} out of range>"
                problem = problem or RowError(
                    "invalid_value",
                    f"column {name!r}: a {column.type} value out of range ({error})",
                )
        yield row, problem
