"""Table rows as records: a CSV or Parquet row mapped to the event schema, as JSON.

The schema's columns keep their names, ``context.NAME`` columns go into
``context``, every other non-empty column into ``features``; a row without
``user_id`` but with a ``label`` is a label record. A row with neither keeps
every column at the top level, so the record that the worker refuses
(``missing_field``) still carries the row's content. A row that cannot be
written as JSON at all becomes a :class:`BadRow` with one of the reasons of
:mod:`features.schema`, a detail naming the line and column, and the row's
content as JSON.

Examples
--------
>>> encode_row({"event_id": "e", "timestamp": "1", "user_id": "u", "item_id": "i", "n": "2"}, 2)
b'{"event_id":"e","timestamp":1,"user_id":"u","item_id":"i","context":{},"features":{"n":2}}'
>>> encode_row({"event_id": "e", "x": "inf"}, 3).reason
'not_finite'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

from streamlearn.features.schema import is_event_record

__all__ = [
    "EXTRA_CELLS",
    "BadRow",
    "RowError",
    "encode_row",
    "printable",
    "row_json",
    "row_to_record",
]

_TOP_LEVEL = ("event_id", "timestamp", "user_id", "item_id", "author_id", "label", "weight")
_IDS = ("event_id", "user_id", "item_id", "author_id")
#: The integers JSON records carry exactly (orjson's range: int64 and uint64).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
#: The key under which the cells of a CSV row beyond the header's columns are kept.
EXTRA_CELLS = "(cells without a column)"


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
    streamlearn.stream.source_rows.RowError: not_finite: column 'x': '1e999' is not a finite number
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


def printable(value: Any) -> Any:
    """A cell as JSON can hold it: bytes as text (or hex), non-finite numbers as text."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value).hex()
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, list):
        return [printable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        return str(value)
    return value


def row_json(row: Mapping[str | None, Any]) -> bytes:
    """The row's cells as a JSON object, whatever they hold (for a dead letter)."""
    cells = {EXTRA_CELLS if k is None else str(k): printable(v) for k, v in row.items()}
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
        return BadRow(error.reason, f"{where} {line}, {error.detail}", row_json(row), line)
