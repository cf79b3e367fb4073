"""File readers: every bad row becomes a reason with its content, every bad file a message."""

from __future__ import annotations

import decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamlearn.features.decode import decode_event, decode_label
from streamlearn.features.limits import Limits
from streamlearn.features.schema import DecodeError, is_label_record
from streamlearn.stream.sources import BadRow, SourceError, read_records

HEADER = "event_id,timestamp,user_id,item_id"
NOW_MS = 1_767_225_600_000  # 2026-01-01


def csv_file(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def outcome(item: bytes | BadRow) -> str:
    """What the worker makes of a record: ``ok`` or the reason it is refused."""
    if isinstance(item, BadRow):
        return item.reason
    obj = orjson.loads(item) if item[:1] == b"{" else None
    decode = decode_label if is_label_record(obj) else decode_event
    try:
        decode(item, Limits(), now_ms=NOW_MS)
    except DecodeError as error:
        return error.reason
    return "ok"


# ---------------------------------------------------------------------- CSV


def test_a_csv_row_with_more_cells_than_columns_is_refused_with_its_cells(tmp_path):
    path = csv_file(tmp_path, f"{HEADER}\ne1,{NOW_MS},u,i,oops,more\ne2,{NOW_MS},u,i\n")
    bad, good = list(read_records(path))
    assert isinstance(bad, BadRow) and bad.reason == "invalid_value" and bad.line == 2
    assert "line 2" in bad.detail and "2 more cell(s)" in bad.detail
    assert orjson.loads(bad.value)["(cells without a column)"] == ["oops", "more"]
    assert orjson.loads(bad.value)["event_id"] == "e1"
    assert outcome(good) == "ok"


@pytest.mark.parametrize(
    ("column", "cell", "reason"),
    [
        ("len", "123456789012345678901234567890", "too_large"),
        ("len", "-9223372036854775809", "too_large"),
        ("timestamp", "99999999999999999999999", "timestamp_out_of_range"),
    ],
)
def test_csv_integers_beyond_64_bits_are_refused_not_a_traceback(tmp_path, column, cell, reason):
    cells = {"event_id": "e1", "timestamp": str(NOW_MS), "user_id": "u", "item_id": "i"}
    cells[column] = cell
    path = csv_file(tmp_path, ",".join(cells) + "\n" + ",".join(cells.values()) + "\n")
    (bad,) = read_records(path)
    assert isinstance(bad, BadRow) and bad.reason == reason
    assert cell in bad.detail and orjson.loads(bad.value)[column] == cell


def test_the_largest_64_bit_integers_still_pass(tmp_path):
    path = csv_file(tmp_path, f"{HEADER},a,b\ne1,{NOW_MS},u,i,{2**64 - 1},{-(2**63)}\n")
    (record,) = read_records(path)
    assert orjson.loads(record)["features"] == {"a": 2**64 - 1, "b": -(2**63)}


def test_a_csv_with_a_byte_order_mark_keeps_its_first_column(tmp_path):
    path = csv_file(tmp_path, b"\xef\xbb\xbf" + f"{HEADER}\ne1,{NOW_MS},u,i\n".encode())
    (record,) = read_records(path)
    assert orjson.loads(record)["event_id"] == "e1"
    assert outcome(record) == "ok"


def test_a_row_without_the_schema_columns_carries_its_content(tmp_path):
    path = csv_file(tmp_path, "colour,size\nred,3\n")
    (record,) = read_records(path)
    assert orjson.loads(record) == {"colour": "red", "size": 3}
    assert outcome(record) == "missing_field"


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_non_finite_csv_numbers_are_not_finite_not_null(tmp_path, cell):
    path = csv_file(tmp_path, f"{HEADER},x\ne1,{NOW_MS},u,i,{cell}\n")
    (bad,) = read_records(path)
    assert isinstance(bad, BadRow) and bad.reason == "not_finite"
    assert "column 'x'" in bad.detail and orjson.loads(bad.value)["x"] == cell


def test_a_csv_cell_that_is_not_utf8_is_refused_and_the_next_rows_are_read(tmp_path):
    body = (
        f"{HEADER},x\ne1,{NOW_MS},u,i,".encode() + b"caf\xe9\n" + f"e2,{NOW_MS},u,i,ok\n".encode()
    )
    bad, good = read_records(csv_file(tmp_path, body))
    assert isinstance(bad, BadRow) and bad.reason == "not_utf8"
    assert outcome(good) == "ok"


def test_a_csv_header_with_a_column_twice_is_one_message(tmp_path):
    with pytest.raises(SourceError, match="'event_id' more than once"):
        read_records(csv_file(tmp_path, "event_id,timestamp,event_id\n1,2,3\n"))


def test_an_unknown_suffix_is_one_message(tmp_path):
    with pytest.raises(SourceError, match=r"use \.jsonl, \.csv or \.parquet"):
        read_records(csv_file(tmp_path, "x", name="f.xlsx"))


# ---------------------------------------------------------------------- Parquet


def parquet_file(tmp_path: Path, columns: dict[str, pa.Array]) -> Path:
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def base_columns(n: int, timestamps: pa.Array | None = None) -> dict[str, pa.Array]:
    return {
        "event_id": pa.array([f"e{k}" for k in range(n)]),
        "timestamp": timestamps
        if timestamps is not None
        else pa.array([NOW_MS + k for k in range(n)], pa.timestamp("ms", tz="UTC")),
        "user_id": pa.array(["u"] * n),
        "item_id": pa.array(["i"] * n),
    }


def test_parquet_decimal_and_binary_columns_become_numbers_and_text(tmp_path):
    columns = base_columns(2)
    columns["price"] = pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2))
    columns["tag"] = pa.array([b"blue", b"\xff\xfe"], pa.binary())
    good, bad = read_records(parquet_file(tmp_path, columns))
    assert orjson.loads(good)["features"] == {"price": 1.5, "tag": "blue"}
    assert orjson.loads(good)["timestamp"] == NOW_MS
    assert outcome(good) == "ok"
    assert isinstance(bad, BadRow) and bad.reason == "not_utf8" and "row 2" in bad.detail
    assert orjson.loads(bad.value)["tag"] == "0xfffe"


def test_a_naive_parquet_timestamp_column_is_one_message_saying_what_to_fix(tmp_path):
    columns = base_columns(3, pa.array([NOW_MS] * 3, pa.timestamp("ms")))
    with pytest.raises(SourceError) as refused:
        read_records(parquet_file(tmp_path, columns))
    message = str(refused.value)
    assert "without a time zone" in message and "tz_localize('UTC')" in message


def test_a_parquet_event_time_past_year_9999_is_timestamp_out_of_range(tmp_path):
    far = 253_402_300_800_000 + 1  # 10000-01-01
    columns = base_columns(2, pa.array([NOW_MS * 1000, far * 1000], pa.timestamp("us", tz="UTC")))
    good, late = read_records(parquet_file(tmp_path, columns))
    assert outcome(good) == "ok"
    assert orjson.loads(late)["timestamp"] == far
    assert outcome(late) == "timestamp_out_of_range"


def test_a_parquet_date_past_year_9999_in_a_feature_fails_its_row_only(tmp_path):
    columns = base_columns(2)
    far_us = (253_402_300_800_000 + 1) * 1000
    columns["seen"] = pa.array([NOW_MS * 1000, far_us], pa.timestamp("us", tz="UTC"))
    good, bad = read_records(parquet_file(tmp_path, columns))
    assert outcome(good) == "ok"
    assert isinstance(bad, BadRow) and bad.reason == "invalid_value" and "'seen'" in bad.detail
    assert orjson.loads(bad.value)["event_id"] == "e1"


def test_a_file_that_is_not_parquet_is_one_message(tmp_path):
    path = tmp_path / "f.parquet"
    path.write_text("hello")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        read_records(path)


def test_an_unterminated_quote_is_refused_with_its_text_instead_of_swallowing_the_rest(tmp_path):
    body = f'{HEADER},x\ne1,{NOW_MS},u,i,"open\ne2,{NOW_MS},u,i,1\n'
    (bad,) = read_records(csv_file(tmp_path, body))
    assert isinstance(bad, BadRow) and bad.reason == "invalid_value" and bad.line == 2
    assert "e2," in orjson.loads(bad.value)["text"]  # the swallowed row is in the dead letter


def test_a_field_over_the_csv_limit_is_too_large_and_the_next_row_is_read(tmp_path):
    body = f"{HEADER},x\n\ne1,{NOW_MS},u,i,{'y' * 200_000}\ne2,{NOW_MS},u,i,1\n"
    bad, good = read_records(csv_file(tmp_path, body))
    assert isinstance(bad, BadRow) and bad.reason == "too_large"
    assert bad.line == 3 and bad.detail.startswith("line 3,")  # the blank line counted
    assert orjson.loads(bad.value)["truncated_from_chars"] > 200_000
    assert orjson.loads(good)["event_id"] == "e2"
