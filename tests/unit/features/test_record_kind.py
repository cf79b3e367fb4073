"""One rule decides whether a record is a label: every reader of files and lines uses it."""

from __future__ import annotations

import orjson
import pytest

from streamlearn.features.schema import is_label_record, line_kind, record_kind
from streamlearn.stream.backtest import file_records
from streamlearn.stream.produce import route
from streamlearn.stream.replay import timed_lines
from streamlearn.stream.sources import row_to_record

RECORDS = [
    ({"event_id": "e", "timestamp": 1, "user_id": "u", "item_id": "i"}, "events"),
    ({"event_id": "e", "timestamp": 1, "label": True}, "labels"),
    ({"event_id": "e", "timestamp": 1, "label": None}, "labels"),
    ({"event_id": "e", "timestamp": 1, "user_id": "u", "item_id": "i", "label": 1}, "events"),
    ({"event_id": "e", "timestamp": 1}, "events"),
    ({"label": 1}, "labels"),
]


@pytest.mark.parametrize(("record", "kind"), RECORDS)
def test_a_label_record_has_a_label_and_no_user_id(record, kind):
    assert record_kind(record) == kind
    assert is_label_record(record) is (kind == "labels")


def test_what_is_not_a_json_object_goes_with_the_events():
    assert [line_kind(line) for line in (b"{oops", b"[]", b"3", b'"label"', b"\xff")] == [
        "events"
    ] * 5
    assert record_kind([{"label": 1}]) == "events"


def test_the_produce_command_replay_and_backtest_route_lines_alike():
    lines = [orjson.dumps(record) for record, _ in RECORDS] + [b"{oops", b"[]"]
    expected = [line_kind(line) for line in lines]
    assert [route(line) for line in lines] == expected
    assert [line.kind for line in timed_lines(lines)] == expected
    assert [record.kind for record in file_records(lines)] == expected


def test_a_table_row_is_nested_as_an_event_only_when_it_is_one():
    event = row_to_record({"event_id": "e", "user_id": "u", "item_id": "i", "context.d": "x"})
    label = row_to_record({"event_id": "e", "label": "1", "context.d": "x"})
    assert record_kind(event) == "events" and event["context"] == {"d": "x"}
    assert record_kind(label) == "labels" and label["context.d"] == "x"
