"""The feedback loop in a backtest: what the model blocks gets no label.

A filter decides on each event; an event it blocks is never seen by the user, so
the world gives it no explicit label (no click, no spam report, no "not spam").
With ``feedback="filter"`` the backtest replays the world that way: a label record
whose event the champion blocked (decided positive and not held out) is dropped
before the processor sees it. Every label, dropped or not, is kept as the ground
truth, so the recall on the positives can be measured over the unfiltered stream:
the share of the positive events the system blocked, window after window of events.

Records are cut into batches as usual, except that a label whose event is still in
the batch being assembled closes that batch first: its event's decision must be
known before the label is let through or dropped, whatever the batch size.

Examples
--------
>>> from streamlearn.stream.processor import Prediction
>>> loop = FeedbackLoop()
>>> loop.observe([Prediction("e1", "m", "1", 0.9, True, 0, None),
...               Prediction("e2", "m", "1", 0.8, False, 0, None, True, 0.02)])
>>> loop.admits("e1", True), loop.admits("e2", True), loop.admits("e3", False)
(False, True, True)
>>> loop.dropped, loop.recall_timeline(windows=1)[0]["recall"]
(1, 0.5)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

from streamlearn.stream.outputs import Prediction
from streamlearn.stream.processor import Record

__all__ = ["FeedbackLoop", "feedback_batches"]


class FeedbackLoop:
    """The champion's decisions, the labels they let through, and the ground truth."""

    def __init__(self, withhold: bool = True, after: int = 0) -> None:
        #: Whether blocked events' labels are withheld (False: measure only, as without a loop).
        self.withhold = withhold
        #: The events before this index keep their labels (a model trained before going live).
        self.after = after
        #: Per event id: its index in the stream, whether it was blocked, held out.
        self._events: dict[str, tuple[int, bool, bool]] = {}
        #: Per event id: its true label (every label of the file, dropped or not).
        self.truth: dict[str, bool] = {}
        self.dropped = 0

    def observe(self, predictions: Iterable[Prediction]) -> None:
        """The champion's predictions of a processed batch."""
        for p in predictions:
            self._events[p.event_id] = (len(self._events), p.decision, p.holdout)

    def admits(self, event_id: str, label: bool) -> bool:
        """Whether the world gives this label: not when its event was blocked."""
        self.truth[event_id] = label
        seen = self._events.get(event_id)
        if self.withhold and seen is not None and seen[1] and seen[0] >= self.after:
            self.dropped += 1
            return False
        return True

    def recall_timeline(self, windows: int = 20) -> list[dict[str, Any]]:
        """Per window of events (by index): the positives, the share blocked, held out."""
        n = len(self._events)
        size = max(1, -(-n // max(1, windows)))
        rows: list[dict[str, Any]] = []
        for start in range(0, n, size):
            rows.append({"event_index": start + size, "positives": 0, "blocked": 0, "held": 0})
        for event_id, (index, blocked, held) in self._events.items():
            if not self.truth.get(event_id, False):
                continue
            row = rows[index // size]
            row["positives"] += 1
            row["blocked"] += int(blocked)
            row["held"] += int(held)
        for row in rows:
            row["event_index"] = min(row["event_index"], n)
            positives = row["positives"]
            row["recall"] = row["blocked"] / positives if positives else None
        return rows

    def summary(self, windows: int = 20) -> dict[str, Any]:
        """The figures of ``summary.json``: labels dropped, recall overall and per window."""
        timeline = self.recall_timeline(windows)
        positives = sum(row["positives"] for row in timeline)
        blocked = sum(row["blocked"] for row in timeline)
        return {
            "labels_dropped": self.dropped,
            "positives": positives,
            "recall": blocked / positives if positives else None,
            "timeline": timeline,
        }


def _label_of(record: Record) -> tuple[str, bool] | None:
    if record.kind != "labels":
        return None
    try:
        obj = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("event_id"), str):
        return None
    return obj["event_id"], bool(obj.get("label"))


def _event_id(record: Record) -> str | None:
    if record.kind != "events":
        return None
    try:
        obj = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    return event_id if isinstance(event_id, str) else None


def feedback_batches(
    records: Iterable[Record], size: int, loop: FeedbackLoop
) -> Iterator[Sequence[Record]]:
    """Batches of at most ``size`` records, without the labels of blocked events.

    The caller must hand each batch's champion predictions to ``loop.observe``
    before asking for the next batch.
    """
    batch: list[Record] = []
    open_events: set[str] = set()
    for record in records:
        label = _label_of(record)
        if label is not None:
            event_id, value = label
            if event_id in open_events:
                yield batch
                batch, open_events = [], set()
            if not loop.admits(event_id, value):
                continue
        else:
            event_id_or_none = _event_id(record)
            if event_id_or_none is not None:
                open_events.add(event_id_or_none)
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch, open_events = [], set()
    if batch:
        yield batch
