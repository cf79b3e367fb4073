"""The floor: a naive worker, one Redis round trip and one Kafka send + flush per record.

Same events, same validation, same feature math (:func:`features.vector.features_of`
over :mod:`features.interactions` state) and the same ``logistic`` model as the
worker, but no batching: each record costs exactly one Redis round trip (a
plain pipeline carrying the previous record's writes, then this record's
reads: the entities' hashes for an event, the scored snapshot for a label),
and each prediction is sent and flushed on its own. No Lua, no idempotence,
no checkpoints; offsets auto-committed. Labels that arrive before their event
wait in memory.

Usage: ``python -m bench.naive --config W.yaml --records N --out result.json``;
it stops after ``N`` records and reports events/s from its first record to its
last flush.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import orjson
import redis
from kafka import KafkaConsumer, KafkaProducer

from streamlearn.features.decode import decode_event, decode_label
from streamlearn.features.interactions import EntityState, entity_ids, observe
from streamlearn.features.schema import DecodeError
from streamlearn.features.vector import features_of
from streamlearn.learners.models import learn, score
from streamlearn.stream.config import Settings, load_settings

__all__ = ["NaiveWorker", "main", "state_from_hash", "state_to_hash"]


def state_from_hash(raw: dict[bytes, bytes], n_decays: int) -> EntityState:
    """An entity's state from its Redis hash (empty when the hash is).

    >>> state = state_from_hash({b"n": b"2", b"d1": b"1.5"}, 2)
    >>> state.count, state.positives, state.last_ms, state.decayed
    (2, 0.0, -1, [1.5, 0.0])
    """
    return EntityState(
        count=int(raw.get(b"n", 0)),
        positives=float(raw.get(b"p", 0.0)),
        labelled=float(raw.get(b"l", 0.0)),
        last_ms=int(raw.get(b"t", -1)),
        decay_ref_ms=int(raw.get(b"r", 0)),
        decayed=[float(raw.get(f"d{k + 1}".encode(), 0.0)) for k in range(n_decays)],
    )


def state_to_hash(state: EntityState) -> dict[str, str]:
    """The hash fields of a state's event counters (label counters are incremented apart).

    >>> state_to_hash(EntityState(count=1, last_ms=5, decay_ref_ms=5, decayed=[1.0]))
    {'n': '1', 't': '5', 'r': '5', 'd1': '1.0'}
    """
    fields = {"n": str(state.count), "t": str(state.last_ms), "r": str(state.decay_ref_ms)}
    for k, value in enumerate(state.decayed):
        fields[f"d{k + 1}"] = repr(value)
    return fields


class NaiveWorker:
    """Scores each event and learns each label on its own, with no batching anywhere."""

    def __init__(self, settings: Settings) -> None:
        kafka = settings.kafka
        self.settings = settings
        self.prefix = settings.store.key_prefix + ":naive"
        self.redis = redis.Redis.from_url(settings.redis.url, **settings.redis.client_options())
        self.model = settings.model.build()
        self.producer = KafkaProducer(
            client_id=kafka.client_id + "-naive", acks="all", linger_ms=0, **kafka.client_options()
        )
        self.consumer = KafkaConsumer(
            kafka.topics.events,
            kafka.topics.labels,
            group_id=kafka.group_id + "-naive",
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            consumer_timeout_ms=30_000,
            **kafka.client_options(),
        )
        self.n_decays = len(settings.features.interactions.half_lives_s)
        self.ttl_ms = int(settings.store.snapshot_ttl_s * 1000)
        self.writes: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.waiting: dict[str, tuple[float, float]] = {}
        self.round_trips = self.events = self.labels = self.learned = 0

    def _round_trip(self, reads: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """One pipeline: the writes held back from the last record, then these reads."""
        pipe = self.redis.pipeline(transaction=False)
        for method, args, kwargs in self.writes:
            getattr(pipe, method)(*args, **kwargs)
        held = len(self.writes)
        self.writes = []
        for method, args in reads:
            getattr(pipe, method)(*args)
        self.round_trips += 1
        return pipe.execute()[held:]

    def _learn_label(self, keys: list[str], x: dict[str, Any], value: float, weight: float) -> None:
        learn(self.model, x, value, weight)
        self.learned += 1
        for key in keys:
            self.writes.append(("hincrbyfloat", (key, "p", value), {}))
            self.writes.append(("hincrbyfloat", (key, "l", 1.0), {}))

    def event(self, value: bytes) -> None:
        event = decode_event(value, self.settings.limits)
        entities = entity_ids(event.user_id, event.item_id, event.author_id)
        keys = [f"{self.prefix}:{kind}:{entity}" for kind, entity in entities]
        hashes = self._round_trip([("hgetall", (key,)) for key in keys])
        states = [
            (kind, state_from_hash(raw, self.n_decays))
            for (kind, _), raw in zip(entities, hashes, strict=True)
        ]
        x = features_of(event, states, self.settings.features)
        p = score(self.model, x)
        self.producer.send(
            self.settings.kafka.topics.predictions,
            key=event.event_id.encode(),
            value=orjson.dumps({"event_id": event.event_id, "score": p}),
        )
        self.producer.flush()
        self.events += 1
        config = self.settings.features.interactions
        for key, (_, state) in zip(keys, states, strict=True):
            self.writes.append(
                (
                    "hset",
                    (key,),
                    {"mapping": state_to_hash(observe(state, event.timestamp, config))},
                )
            )
        snapshot = orjson.dumps({"keys": keys, "x": x})
        self.writes.append(("set", (f"{self.prefix}:s:{event.event_id}", snapshot),
                            {"px": self.ttl_ms}))  # fmt: skip
        waiting = self.waiting.pop(event.event_id, None)
        if event.label is not None:
            self._learn_label(keys, x, event.label, 1.0)
        elif waiting is not None:
            self._learn_label(keys, x, *waiting)

    def label(self, value: bytes) -> None:
        label = decode_label(value, self.settings.limits)
        self.labels += 1
        (raw,) = self._round_trip([("get", (f"{self.prefix}:s:{label.event_id}",))])
        if raw is None:
            self.waiting[label.event_id] = (label.value, label.weight)
            return
        snapshot = orjson.loads(raw)
        self._learn_label(snapshot["keys"], snapshot["x"], label.value, label.weight)

    def run(self, records: int) -> dict[str, Any]:
        events_topic = self.settings.kafka.topics.events
        seen = 0
        started: float | None = None
        cpu0 = 0.0
        errors = 0
        for message in self.consumer:
            if started is None:
                started = time.perf_counter()
                cpu0 = _cpu()
            try:
                if message.topic == events_topic:
                    self.event(message.value)
                else:
                    self.label(message.value)
            except DecodeError:
                errors += 1
            seen += 1
            if seen >= records:
                break
        if self.writes:
            self._round_trip([])
        seconds = time.perf_counter() - (started or time.perf_counter())
        cpu = _cpu() - cpu0
        self.consumer.close()
        self.producer.close()
        return {
            "records": seen,
            "events": self.events,
            "labels": self.labels,
            "labels_learned": self.learned,
            "decode_errors": errors,
            "round_trips": self.round_trips,
            "seconds": round(seconds, 3),
            "events_per_s": self.events / seconds if seconds else None,
            "cpu_s": round(cpu, 3),
        }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--records", type=int, required=True, help="stop after this many")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = NaiveWorker(load_settings(args.config)).run(args.records)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
