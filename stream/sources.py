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

A row becomes a record in :mod:`stream.source_rows`; this module reads the files.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from streamlearn.stream.source_rows import (
    EXTRA_CELLS,
    BadRow,
    RowError,
    encode_row,
    printable,
    row_json,
    row_to_record,
)

__all__ = [
    "EXTRA_CELLS",
    "FORMATS",
    "BadRow",
    "RowError",
    "SourceError",
    "format_of",
    "read_records",
    "row_to_record",
]

FORMATS = ("jsonl", "csv", "parquet")


class SourceError(ValueError):
    """A problem of a whole file (not of one row); the message says what to fix."""


def format_of(path: Path) -> str:
    """The file's format from its suffix; ``.json``/``.ndjson`` are JSON lines.

    >>> format_of(Path("a.ndjson")), format_of(Path("b.CSV"))
    ('jsonl', 'csv')
    >>> format_of(Path("c.xlsx"))
    Traceback (most recent call last):
    ...
    streamlearn.stream.sources.SourceError: c.xlsx: unknown format 'xlsx'; use .jsonl, .csv or .parquet
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "json", "ndjson"):
        return "jsonl"
    if suffix in ("csv", "parquet"):
        return suffix
    raise SourceError(f"{path}: unknown format {suffix!r}; use .jsonl, .csv or .parquet")


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


def _open_csv(path: Path) -> TextIO:
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

    def __init__(self, handle: TextIO) -> None:
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
                cells: dict[str, Any] = {"text": printable(text[:_MAX_ROW_TEXT])}
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
        import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type information
        import pyarrow.parquet as pq  # type: ignore[import-untyped]  # idem
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
                    yield BadRow(problem.reason, detail, row_json(row), number)
                    continue
                if unit is not None and row.get("timestamp") is not None:
                    times, per = unit
                    row["timestamp"] = row["timestamp"] * times // per
                yield encode_row(row, number, where="row")
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"{path}: unreadable after row {number}: {error}") from None


def _batch_rows(batch: Any) -> Iterator[tuple[dict[str | None, Any], RowError | None]]:
    """The batch's rows; a value Python cannot hold (a date past 9999) fails its row only."""
    try:
        rows = batch.to_pylist()
    except (ValueError, OverflowError):
        pass
    else:
        for whole in rows:
            yield whole, None
        return
    columns = list(zip(batch.schema.names, batch.columns, strict=True))
    for index in range(batch.num_rows):
        row: dict[str | None, Any] = {}
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
