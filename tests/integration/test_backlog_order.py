"""A backlog of events and labels read in event-time order gives the backtest's scores.

The backlog is produced before the worker starts, on several partitions per topic,
so each client fetches whole partitions' backlogs at once; the worker must still
learn every label before the events that come after it in event time.
"""

from __future__ import annotations

import io

import orjson
import pytest

from streamlearn.stream.backtest import backtest
from streamlearn.stream.harness import drain, lines_of, produce, run_workers, settings_for
from streamlearn.stream.synthetic import WorldConfig, generate_world

pytestmark = pytest.mark.integration


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    """The probability that a positive scores above a negative (ties count a half)."""
    ranked = sorted(zip(scores, labels, strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    rank_sum, n = 0.0, 0
    while n < len(ranked):
        end = n
        while end < len(ranked) and ranked[end][0] == ranked[n][0]:
            end += 1
        mean_rank = (n + 1 + end) / 2
        rank_sum += mean_rank * sum(1 for _, label in ranked[n:end] if label)
        n = end
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_a_worker_catching_up_on_a_backlog_gives_the_backtests_scores(
    kafka_bootstrap, redis_url, unique_prefix, tmp_path, client
):
    records = list(generate_world(WorldConfig(events=3_000, seed=21)))
    # One event-time order only: no two records of a kind share a time (a label and an
    # event of the same time go label first, in the file as in the sources).
    stamps = [(r["timestamp"], "user_id" in r) for r in records]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    world = tmp_path / "world.jsonl"
    world.write_bytes(b"\n".join(lines_of(records)) + b"\n")
    settings = settings_for(
        kafka_bootstrap, redis_url, unique_prefix, partitions=4, kafka={"client": client}
    )
    assert produce(settings, lines_of(records)) == {"events": 3_000, "labels": 3_000}

    (worker,) = run_workers(settings, 1)

    published = {
        r.key.decode(): orjson.loads(r.value)["score"]
        for r in drain(kafka_bootstrap, settings.kafka.topics.predictions)
    }
    out = io.BytesIO()
    backtest(world, settings, [settings.model.spec], predictions=out)
    expected = {p["event_id"]: p["score"] for p in map(orjson.loads, out.getvalue().splitlines())}
    events = [r for r in records if "user_id" in r]
    labels = {r["event_id"]: bool(r["label"]) for r in records if "user_id" not in r}
    first = [e["event_id"] for e in events[: len(events) * 2 // 5]]
    first_auc = roc_auc([published[e] for e in first], [labels[e] for e in first])
    expected_auc = roc_auc([expected[e] for e in first], [labels[e] for e in first])
    differing = sum(1 for e, score in expected.items() if published.get(e) != score)
    assert (differing, first_auc) == (0, expected_auc), (
        f"{differing} of {len(expected)} scores differ from the backtest's; ROC AUC over the "
        f"first 40 %: {first_auc:.3f} against the backtest's {expected_auc:.3f}"
    )
    assert worker.processor.slots[0].labels_learned == len(labels)
