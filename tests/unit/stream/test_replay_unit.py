"""Replay without Kafka: ordering, time range, pacing schedule, plan and summary."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from streamlearn.stream.produce import route
from streamlearn.stream.replay import (
    Line,
    ReplaySummary,
    gap_notice,
    in_range,
    merge,
    pace,
    parse_speed,
    parse_time,
    plan_replay,
    record_time,
    send_offsets,
    timed_lines,
)


def event(event_id: str, ts: object, **extra: object) -> bytes:
    return orjson.dumps({"event_id": event_id, "timestamp": ts, "user_id": "u", "item_id": "i"})


def label(event_id: str, ts: object, value: bool = True) -> bytes:
    return orjson.dumps({"event_id": event_id, "timestamp": ts, "label": value})


class FakeClock:
    """A clock that only moves when slept on (or when told to lag)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# ---------------------------------------------------------------------- ordering


def test_record_time_accepts_epoch_ms_and_iso_and_rejects_the_rest():
    assert record_time(event("e", 1500)) == 1500
    assert record_time(event("e", 1500.9)) == 1500
    assert record_time(event("e", "2026-01-01T00:00:00+00:00")) == 1_767_225_600_000
    for bad in (b"{oops", b"[]", b'"text"', event("e", None), event("e", True), event("e", "now")):
        assert record_time(bad) is None
    assert record_time(event("e", "2026-01-01T00:00:00")) is None  # no time zone


def test_events_and_labels_of_one_file_merge_by_their_own_times():
    lines = [event("a", 3000), label("a", 9000), event("b", 1000), label("b", 2000)]
    ordered = merge(timed_lines(lines))
    assert [(x.time_ms, x.kind) for x in ordered] == [
        (1000, "events"),
        (2000, "labels"),
        (3000, "events"),
        (9000, "labels"),
    ]
    assert [x.value for x in ordered] == [lines[2], lines[3], lines[0], lines[1]]


def test_equal_times_keep_file_order_and_the_events_file_goes_first():
    events = [event("a", 1000), event("b", 1000), event("c", 500)]
    labels = [label("z", 1000), label("y", 1000), label("x", 500)]
    ordered = merge(timed_lines(events), timed_lines(labels, kind="labels"))
    assert [x.value for x in ordered] == [
        events[2],
        labels[2],
        events[0],
        events[1],
        labels[0],
        labels[1],
    ]


def test_a_bad_line_is_sent_right_after_the_line_before_it_in_its_file():
    lines = [event("a", 5000), b"{oops", event("b", 1000), event("c", 5000), event("d", 7000)]
    ordered = merge(timed_lines(lines))
    assert [x.value for x in ordered] == [lines[2], lines[0], lines[1], lines[3], lines[4]]
    assert [x.parsed for x in ordered] == [True, True, False, True, True]
    assert ordered[2].kind == "events"


def test_bad_lines_at_the_top_of_a_file_go_just_before_its_first_record():
    events = [event("a", 2000), event("b", 3000)]
    labels = [b"not json", label("x", "bad time"), label("a", 2500)]
    ordered = merge(timed_lines(events), timed_lines(labels, kind="labels"))
    assert [x.value for x in ordered] == [events[0], labels[0], labels[1], labels[2], events[1]]
    assert [x.kind for x in ordered] == ["events", "labels", "labels", "labels", "events"]


def test_a_file_without_any_usable_time_is_still_sent_first():
    ordered = merge(timed_lines([event("a", 10)]), timed_lines([b"x", b"y"], kind="labels"))
    assert [(x.value, x.time_ms) for x in ordered] == [
        (b"x", None),
        (b"y", None),
        (ordered[2].value, 10),
    ]


def test_a_label_file_forces_the_labels_topic_even_for_bad_lines():
    lines = timed_lines([b"{oops", label("a", 1)], kind="labels")
    assert [x.kind for x in lines] == ["labels", "labels"]
    assert [x.kind for x in timed_lines([b"{oops", label("a", 1)])] == ["events", "labels"]


# ---------------------------------------------------------------------- time range


def test_time_range_is_half_open_and_counts_what_it_skips():
    lines = [Line(t, "events", str(t).encode(), True) for t in (0, 999, 1000, 1500, 2000, 3000)]
    kept, skipped = in_range(lines, since_ms=1000, until_ms=2000)
    assert [x.time_ms for x in kept] == [1000, 1500]
    assert skipped == 4
    assert in_range(lines, since_ms=1500) == (lines[3:], 3)
    assert in_range(lines, until_ms=1000) == (lines[:2], 4)
    assert in_range(lines) == (lines, 0)


def test_lines_without_any_time_survive_the_range():
    lines = [Line(None, "events", b"x", False), Line(5, "events", b"y", True)]
    assert in_range(lines, since_ms=10) == ([lines[0]], 1)


def test_parse_time_and_speed():
    assert parse_time("1767225600000") == 1_767_225_600_000
    assert parse_time("2026-01-01T01:00:00+01:00") == 1_767_225_600_000
    assert parse_time("2026-01-01T00:00:00.250Z") == 1_767_225_600_250
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")
    assert parse_speed("MAX") is None
    assert parse_speed("1") == 1.0
    for bad in ("-1", "0", "fast", "inf", "nan"):
        with pytest.raises(ValueError, match="positive number"):
            parse_speed(bad)


# ---------------------------------------------------------------------- pacing


def test_send_offsets_are_event_time_gaps_divided_by_speed():
    times = [60_000, 60_000, 61_000, 120_000, 180_000]
    assert send_offsets(times, 60.0) == [0.0, 0.0, 1 / 60, 1.0, 2.0]
    assert send_offsets(times, 1.0) == [0.0, 0.0, 1.0, 60.0, 120.0]
    assert send_offsets(times, None) == [0.0] * 5
    assert send_offsets([None, 1000, 3000], 2.0) == [0.0, 0.0, 1.0]
    assert send_offsets([None, None], 2.0) == [0.0, 0.0]
    assert send_offsets([], 2.0) == []


def test_pace_sends_at_absolute_deadlines():
    clock = FakeClock()
    sent: list[tuple[int, float]] = []
    start = pace(
        [0.0, 0.0, 0.25, 1.0, 3.0], lambda i: sent.append((i, clock())), clock, clock.sleep
    )
    assert start == 100.0
    assert sent == [(0, 100.0), (1, 100.0), (2, 100.25), (3, 101.0), (4, 103.0)]


def test_pace_does_not_accumulate_lateness():
    """A slow send eats into the next gap instead of pushing every later send back."""
    clock = FakeClock(0.0)
    sent: list[tuple[int, float]] = []

    def slow_send(index: int) -> None:
        sent.append((index, clock()))
        clock.now += 0.3  # each send takes 0.3 s

    pace([0.0, 1.0, 2.0, 2.1, 2.2], slow_send, clock, clock.sleep)
    assert [round(t, 6) for _, t in sent] == [0.0, 1.0, 2.0, 2.3, 2.6]
    assert [round(s, 6) for s in clock.sleeps] == [0.7, 0.7]  # never a sleep once late


def test_pace_at_max_never_sleeps():
    clock = FakeClock()
    sent: list[int] = []
    pace(send_offsets([0, 10_000, 3_600_000], None), sent.append, clock, clock.sleep)
    assert sent == [0, 1, 2]
    assert clock.sleeps == []


# ---------------------------------------------------------------------- plan and summary


def test_plan_replay_merges_a_labels_file_and_filters(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([event("a", 1000), event("b", 4000), b"{oops", event("c", 9000)]))
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["event_id", "timestamp", "label"])
        writer.writerows([["a", 2000, 1], ["b", 5000, 0], ["c", 9500, 1]])
    plan = plan_replay(events, labels, since_ms=1500, until_ms=9000)
    assert [(x.time_ms, x.kind) for x in plan.lines] == [
        (2000, "labels"),
        (4000, "events"),
        (4000, "events"),
        (5000, "labels"),
    ]
    assert plan.skipped == 3
    assert plan.unparseable == 1
    assert (plan.first_ms, plan.last_ms) == (2000, 5000)


def test_summary_table_reports_counts_times_and_achieved_speed():
    summary = ReplaySummary(
        unparseable=2,
        skipped=3,
        first_ms=1_767_225_600_000,
        last_ms=1_767_225_720_000,
        wall_seconds=2.0,
        speed=60.0,
    )
    summary.sent.update({"events": 10, "labels": 4})
    assert summary.achieved_speed == 60.0
    console = Console(width=100, record=True)
    console.print(summary.table())
    text = console.export_text()
    for expected in (
        "sent to events",
        "10",
        "sent to labels",
        "unparseable",
        "skipped",
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:02:00.000Z",
        "60x",
        "60.0x",
    ):
        assert expected in text
    assert ReplaySummary().achieved_speed is None


def test_content_routing_is_the_produce_commands_rule():
    values = [
        event("a", 1),
        label("a", 1),
        b"{oops",
        b"[]",
        orjson.dumps({"event_id": "a", "label": 1, "user_id": "u"}),
        orjson.dumps({"event_id": "a", "label": None}),
    ]
    assert [x.kind for x in timed_lines(values)] == [route(v) for v in values]


# ---------------------------------------------------------------------- hardening


def test_a_time_past_year_9999_is_no_usable_time_and_the_summary_still_prints(tmp_path: Path):
    assert record_time(event("e", 400_000_000_000_000)) is None  # year 14645
    assert record_time(event("e", 1e300)) is None
    path = tmp_path / "far.jsonl"
    path.write_bytes(b"\n".join([event("a", 1000), event("b", 400_000_000_000_000)]))
    plan = plan_replay(path)
    assert [x.time_ms for x in plan.lines] == [1000, 1000] and plan.unparseable == 1
    summary = ReplaySummary(first_ms=-(10**20), last_ms=10**20, wall_seconds=1.0, speed=1.0)
    console = Console(width=120, record=True)
    console.print(summary.table())
    assert "100000000000000000000 ms (no calendar date)" in console.export_text()


def test_a_huge_gap_in_event_time_is_shortened_to_max_gap_and_said_once():
    times = [0, 1_767_225_600_000, 1_767_225_660_000, 1_767_312_000_000]  # 1970, +1 min, +1 day
    offsets = send_offsets(times, speed=60.0, max_gap_s=60.0)
    assert offsets == [0.0, 60.0, 61.0, 121.0]
    assert send_offsets(times, speed=60.0)[1] > 29_000_000  # 340 days without the bound
    notice = gap_notice(times, speed=60.0, max_gap_s=60.0)
    assert notice is not None
    assert "56.0 years" in notice and "340.9 days" in notice  # the gap and the wait it spares
    assert "2 gaps" in notice and "--max-gap" in notice
    assert gap_notice(times, speed=None, max_gap_s=60.0) is None
    assert gap_notice(times[1:3], speed=60.0, max_gap_s=60.0) is None


def test_rows_the_reader_refuses_are_dead_letters_in_their_place(tmp_path: Path):
    path = tmp_path / "rows.csv"
    path.write_text(
        "event_id,timestamp,user_id,item_id,x\n"
        "a,2000,u,i,1\n"
        "b,1000,u,i,nan\n"
        "c,3000,u,i,1,extra\n"
        "d,1500,u,i,2\n"
    )
    plan = plan_replay(path)
    assert [(x.time_ms, x.kind, x.refused) for x in plan.lines] == [
        (1500, "events", None),
        (2000, "events", None),
        (2000, "dead_letter", "not_finite"),
        (2000, "dead_letter", "invalid_value"),
    ]
    assert plan.refused == {"not_finite": 1, "invalid_value": 1} and plan.unparseable == 0
    letter = orjson.loads(plan.lines[2].value)
    assert letter["reason"] == "not_finite" and letter["topic"] == "rows.csv"
    assert letter["offset"] == 3 and "line 3, column 'x'" in letter["detail"]
    assert orjson.loads(letter["value"])["event_id"] == "b"


def test_replay_of_a_file_with_a_whole_file_problem_exits_1_with_a_message(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from streamlearn.cli.app import app

    path = tmp_path / "naive.parquet"
    table = pa.table(
        {
            "event_id": ["a"],
            "timestamp": pa.array([1_767_225_600_000], pa.timestamp("ms")),
            "user_id": ["u"],
            "item_id": ["i"],
        }
    )
    pq.write_table(table, path)
    result = CliRunner().invoke(app, ["replay", str(path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "without a time zone (timestamp[ms])" in " ".join(result.output.split())
