"""Historical files as records: JSON lines, CSV and Parquet, one JSON object per record.

JSON lines pass through byte for byte (a bad line stays bad, to be dead-lettered
downstream). CSV and Parquet rows are mapped to the event schema: the schema's
columns keep their names, ``context.NAME`` columns go into ``context``, every
other non-empty column into ``features``; a row without ``user_id`` but with a
``label`` is a label record.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> (folder / "s.csv").write_text(
...     "event_id,timestamp,user_id,item_id,context.device,len,label\\n"
...     "e1,1000,u,i,ios,3.5,\\n"
...     "e1,2000,,,,,1\\n")
95
>>> [orjson.loads(r) for r in read_records(folder / "s.csv")]  # doctest: +NORMALIZE_WHITESPACE
[{'event_id': 'e1', 'timestamp': 1000, 'user_id': 'u', 'item_id': 'i',
  'context': {'device': 'ios'}, 'features': {'len': 3.5}},
 {'event_id': 'e1', 'timestamp': 2000, 'label': 1}]
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = ["FORMATS", "format_of", "read_records", "row_to_record"]

FORMATS = ("jsonl", "csv", "parquet")
_TOP_LEVEL = ("event_id", "timestamp", "user_id", "item_id", "author_id", "label", "weight")


def format_of(path: Path) -> str:
    """The file's format from its suffix; ``.json``/``.ndjson`` are JSON lines."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "json", "ndjson"):
        return "jsonl"
    if suffix in ("csv", "parquet"):
        return suffix
    raise ValueError(f"{path}: unknown format {suffix!r}; use .jsonl, .csv or .parquet")


def _number(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def row_to_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A flat table row as an event or label record (empty cells are absent)."""
    record: dict[str, Any] = {}
    context: dict[str, Any] = {}
    features: dict[str, Any] = {}
    for column, raw in row.items():
        if raw is None or raw == "":
            continue
        value = _number(raw)
        if column in ("event_id", "user_id", "item_id", "author_id"):
            record[column] = str(raw)
        elif column in _TOP_LEVEL:
            record[column] = value
        elif column.startswith("context."):
            context[column.removeprefix("context.")] = value
        else:
            features[column] = value
    if "user_id" in record:
        record["context"] = context
        record["features"] = features
    return record


def read_records(path: Path) -> Iterator[bytes]:
    """Every record of the file, in file order, as JSON bytes."""
    kind = format_of(path)
    if kind == "jsonl":
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip(b"\r\n")
    elif kind == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                yield orjson.dumps(row_to_record(row))
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ValueError(
                "reading Parquet needs pyarrow: pip install 'streamlearn[parquet]'"
            ) from exc
        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                yield orjson.dumps(row_to_record(row))
