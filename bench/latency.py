"""Event-to-prediction latency under an open-loop load.

The producer sends events on a fixed schedule (event ``i`` at ``start + i / rate``,
whether or not the worker keeps up) with the labels that follow them in the
world's order sent as they come. Latency is the prediction record's Kafka
timestamp minus its event record's Kafka timestamp (both ``CreateTime``, the
producer's clock when the record was handed to Kafka, one machine, one clock).

Examples
--------
>>> lines = [b'{"event_id":"a","user_id":"u"}', b'{"event_id":"a","label":true}',
...          b'{"event_id":"b","user_id":"u"}', b'{"event_id":"b","label":false}']
>>> cut_events(lines, 1)
[b'{"event_id":"a","user_id":"u"}', b'{"event_id":"a","label":true}']
>>> latencies_ms([(b"a", 100), (b"b", 110)], [(b"a", 104), (b"a", 190)])
([4.0], 1)
>>> latencies_ms([(b"a", 100), (b"b", 110)], [(b"a", 104), (b"b", 112)], since_ms=105)
([2.0], 0)
>>> broker_settled([9.0, 6.4], 0.15), broker_settled([9.0, 6.4, 6.1], 0.15)
(False, True)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from streamlearn.stream.config import Settings
from streamlearn.stream.produce import event_key, route
from streamlearn.stream.rdkafka_io import librdkafka_options
from streamlearn.stream.topics import ensure_topics, topic_plan

__all__ = ["broker_settled", "cut_events", "kafka_hop", "latencies_ms", "open_loop"]


def cut_events(lines: Sequence[bytes], events: int) -> list[bytes]:
    """The lines up to (not including) the event after the first ``events`` events."""
    seen = 0
    for index, line in enumerate(lines):
        if route(line) == "events":
            if seen == events:
                return list(lines[:index])
            seen += 1
    return list(lines)


def open_loop(settings: Settings, lines: Sequence[bytes], rate: float) -> dict[str, Any]:
    """Send ``lines`` with events at ``rate`` per second on a fixed schedule.

    The load comes from librdkafka (confluent-kafka), which sends thousands of
    records a second for a few percent of a core, so the load generator leaves
    the machine's two cores to the worker, the broker and Redis. It batches as
    the project's producer does (``kafka.linger_ms``, acks all) and partitions
    keys with murmur2, as kafka-python and the Java client do.
    """
    from confluent_kafka import Producer

    kafka = settings.kafka
    topics = {"events": kafka.topics.events, "labels": kafka.topics.labels}
    sink = Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "linger.ms": kafka.linger_ms,
            "acks": "all",
            "partitioner": "murmur2_random",
        }
    )
    events = labels = 0
    late_max = 0.0
    started_ms = time.time() * 1000
    start = time.perf_counter()
    last = start
    for line in lines:
        kind = route(line)
        if kind == "events":
            due = start + events / rate
            now = time.perf_counter()
            if due > now:
                sink.poll(0)
                time.sleep(due - now)
            else:
                late_max = max(late_max, now - due)
            events += 1
            last = time.perf_counter()
        else:
            labels += 1
        sink.produce(topics[kind], value=line, key=event_key(line))
    unsent = sink.flush(60)
    span = last - start
    return {
        "target_rate": rate,
        "started_ms": started_ms,
        "events_sent": events,
        "labels_sent": labels,
        "unsent": unsent,
        "seconds": round(span, 3),
        "achieved_rate": (events - 1) / span if span > 0 else float("nan"),
        "max_behind_schedule_ms": round(1000 * late_max, 1),
    }


def kafka_hop(
    settings: Settings, lines: Sequence[bytes], rate: float, since_s: float
) -> dict[str, Any]:
    """The Kafka hop alone: the open-loop load of :func:`open_loop`, read by a bare consumer.

    No worker: a librdkafka consumer in a thread of this process, assigned every
    event partition before the load starts (no group to join), with the worker's
    fetch settings. Its latency is the time librdkafka hands an event record over
    minus the record's ``CreateTime``: the producer's linger, the broker's append
    and the fetch, the part of the event-to-prediction latency no worker removes.
    Events sent in the first ``since_s`` seconds are left out, as in the worker's points.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    kafka = settings.kafka
    plan = topic_plan(kafka)
    ensure_topics(kafka, plan)
    events_topic = kafka.topics.events
    consumer = Consumer(
        {
            **librdkafka_options(kafka),
            "group.id": kafka.group_id,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": kafka.fetch_max_wait_ms,
            "fetch.min.bytes": kafka.fetch_min_bytes,
        }
    )
    consumer.assign(
        [TopicPartition(events_topic, p, OFFSET_BEGINNING) for p in range(plan[events_topic])]
    )
    handed: list[tuple[float, int]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                handed.append((time.time() * 1000, message.timestamp()[1]))

    reader = threading.Thread(target=read, name="kafka-hop-reader", daemon=True)
    reader.start()
    try:
        load = open_loop(settings, lines, rate)
        deadline = time.monotonic() + 10.0
        while len(handed) < load["events_sent"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        reader.join(timeout=5.0)
        consumer.close()
    since_ms = load["started_ms"] + 1000 * since_s
    return {
        "load": load,
        "received": len(handed),
        "latencies_ms": [at - created for at, created in handed if created >= since_ms],
    }


def latencies_ms(
    events: Iterable[tuple[bytes, int]],
    predictions: Iterable[tuple[bytes, int]],
    since_ms: float = 0.0,
) -> tuple[list[float], int]:
    """Per event sent at ``since_ms`` or later, first prediction time minus event time (ms);
    and how many of those events have no prediction."""
    sent = {key: ts for key, ts in events if ts >= since_ms}
    first: dict[bytes, int] = {}
    for key, timestamp in predictions:
        if key in sent and key not in first:
            first[key] = timestamp
    out = [float(first[key] - ts) for key, ts in sent.items() if key in first]
    return out, len(sent) - len(first)


def broker_settled(cpu_per_round: Sequence[float], tolerance: float) -> bool:
    """True when the broker's CPU for the same load stopped falling between the last two rounds.

    A freshly started broker keeps its JIT compiler busy for a minute or more of live
    load (C2 at 35-60 % of a core on a 2-core machine), so its CPU per round falls
    until its live paths are compiled; within ``tolerance`` of the round before, it is warm.
    """
    if len(cpu_per_round) < 2:
        return False
    before, last = cpu_per_round[-2], cpu_per_round[-1]
    return last >= before * (1.0 - tolerance)
