"""Alerting rules on the pipeline itself, each with its promtool scenario.

Latency, consumer lag, dead letters, a worker or a dependency down, undelivered
outputs, stale labels; :func:`metrics.alerts.alert_rules` lists them with the
model's rules.

Examples
--------
>>> from streamlearn.metrics.thresholds import AlertThresholds
>>> [r.alert for r in delivery_rules(AlertThresholds())]
['StreamlearnPredictionsUndelivered', 'StreamlearnLabelsStale']
"""

from __future__ import annotations

from streamlearn.metrics.alert_rule import (
    AFTER,
    BEFORE,
    INSTANCE,
    VALUE0,
    VALUE3,
    AlertRule,
    Scenario,
    abnormal_seconds,
    counter_values,
    gauge_scenario,
    gauge_values,
    selector,
    steps,
)
from streamlearn.metrics.instruments import (
    CONSUMER_LAG,
    DEAD_LETTERS,
    DEPENDENCY_RETRIES,
    DEPENDENCY_UP,
    EVENT_TO_PREDICTION,
    JOB,
    LABELS_LEARNED,
    LAST_EVENT_TIMESTAMP,
    LAST_LABEL_EVENT_TIMESTAMP,
    LATENCY_BUCKETS,
    RECORDS_CONSUMED,
    UNDELIVERED,
)
from streamlearn.metrics.thresholds import AlertThresholds, duration_seconds

__all__ = ["UNDELIVERED_WINDOW", "delivery_rules", "serving_rules"]

#: Window of ``increase()`` over the undelivered-records counter.
UNDELIVERED_WINDOW = "5m"


def serving_rules(t: AlertThresholds) -> list[AlertRule]:
    """Latency, consumer lag, dead letters, a worker or a dependency down."""
    latency_expr = (
        f"histogram_quantile(0.99, sum by (le) (rate({EVENT_TO_PREDICTION}_bucket[1m])))"
        f" > {t.p99_latency_seconds!r}"
    )
    dead_ratio = f"sum(rate({DEAD_LETTERS}[5m])) / sum(rate({RECORDS_CONSUMED}[5m]))"
    return [
        AlertRule(
            alert="StreamlearnLatencyP99High",
            group="streamlearn-serving",
            expr=latency_expr,
            for_=t.latency_for,
            severity="critical",
            summary=f"Event-to-prediction P99 is {VALUE3}s",
            description=(
                f"P99 of the event-to-prediction latency is {VALUE3}s, above the "
                f"{t.p99_latency_seconds!r}s guardrail for {t.latency_for}."
            ),
            scenarios=(_latency_scenario(t),),
        ),
        AlertRule(
            alert="StreamlearnConsumerLagHigh",
            group="streamlearn-serving",
            expr=f"sum by (topic) ({CONSUMER_LAG}) > {t.consumer_lag_records}",
            for_=t.consumer_lag_for,
            severity="warning",
            summary=f"Consumer lag on {{{{ $labels.topic }}}} is {VALUE0} records",
            description=(
                f"The workers are {VALUE0} records behind the end of topic "
                f"{{{{ $labels.topic }}}}, above {t.consumer_lag_records} for "
                f"{t.consumer_lag_for}. Add workers or partitions, or look for a slow stage."
            ),
            scenarios=(_lag_scenario(t),),
        ),
        AlertRule(
            alert="StreamlearnDeadLetterRatioHigh",
            group="streamlearn-serving",
            expr=f"{dead_ratio} > {t.dead_letter_ratio!r}",
            for_=t.dead_letter_for,
            severity="warning",
            summary=f"{VALUE3} of consumed records go to the dead-letter topic",
            description=(
                f"Dead letters per consumed record over 5m is {VALUE3}, above "
                f"{t.dead_letter_ratio!r} for {t.dead_letter_for}. See "
                f"{DEAD_LETTERS} by reason."
            ),
            scenarios=(_dead_letter_scenario(t),),
        ),
        AlertRule(
            alert="StreamlearnWorkerDown",
            group="streamlearn-serving",
            expr=f'up{{job="{JOB}"}} == 0',
            for_=t.worker_down_for,
            severity="critical",
            summary="Worker {{ $labels.instance }} is down",
            description=(
                f"Prometheus cannot scrape {{{{ $labels.instance }}}} (job {JOB}) for "
                f"{t.worker_down_for}: no predictions and no learning there."
            ),
            scenarios=(gauge_scenario("up", 1.0, 0.0, t.worker_down_for),),
        ),
        AlertRule(
            alert="StreamlearnDependencyDown",
            group="streamlearn-serving",
            expr=f"{DEPENDENCY_UP} == 0",
            for_=t.dependency_down_for,
            severity="critical",
            summary="Worker {{ $labels.instance }} cannot reach {{ $labels.dependency }}",
            description=(
                "The last call of {{ $labels.instance }} to {{ $labels.dependency }} failed and "
                f"none has succeeded for {t.dependency_down_for}. The worker waits and retries "
                "with backoff, so it scores and learns nothing until the service is back: check "
                f"the service, then {DEPENDENCY_RETRIES}."
            ),
            scenarios=(
                gauge_scenario(
                    DEPENDENCY_UP, 1.0, 0.0, t.dependency_down_for, labels={"dependency": "redis"}
                ),
            ),
        ),
    ]


def delivery_rules(t: AlertThresholds) -> list[AlertRule]:
    """Outputs the broker does not acknowledge, labels that stopped arriving."""
    return [
        AlertRule(
            alert="StreamlearnPredictionsUndelivered",
            group="streamlearn-serving",
            expr=f"increase({UNDELIVERED}[{UNDELIVERED_WINDOW}]) > 0",
            for_=t.undelivered_for,
            severity="critical",
            summary="Worker {{ $labels.instance }} cannot deliver its predictions",
            description=(
                "The broker refused or did not acknowledge predictions or dead letters of "
                f"{{{{ $labels.instance }}}} within {UNDELIVERED_WINDOW}. The worker resumes "
                "from its last commit and sends them again, so it makes no progress until the "
                "cause is fixed (a record too large for its topic, the broker away): see its log."
            ),
            scenarios=(_undelivered_scenario(),),
        ),
        AlertRule(
            alert="StreamlearnLabelsStale",
            group="streamlearn-labels",
            expr=(
                f"{LAST_EVENT_TIMESTAMP} - {LAST_LABEL_EVENT_TIMESTAMP} > {t.label_lag_seconds!r}"
                f" and {LAST_LABEL_EVENT_TIMESTAMP} > 0"
            ),
            for_=t.label_lag_for,
            severity="warning",
            summary=f"Labels stopped arriving at {{{{ $labels.instance }}}} ({VALUE0}s behind)",
            description=(
                f"The newest event that {{{{ $labels.instance }}}} learned an explicit label for "
                f"is {VALUE0}s of event time older than its newest event, more than "
                f"{t.label_lag_seconds!r}s for {t.label_lag_for}. The model learns only implicit "
                "negatives, or nothing: check the producer of the labels topic and "
                f"{LABELS_LEARNED} by source."
            ),
            scenarios=(_label_lag_scenario(t),),
        ),
    ]


def _latency_scenario(t: AlertThresholds) -> Scenario:
    buckets = [*LATENCY_BUCKETS, float("inf")]
    fast = next(b for b in buckets if b < t.p99_latency_seconds)
    slow_index = next(i for i, b in enumerate(buckets) if b > t.p99_latency_seconds * 1.2)
    if buckets[slow_index] == float("inf"):
        raise ValueError("p99_latency_seconds is beyond the largest latency bucket")
    slow = buckets[slow_index]
    slow_lower = buckets[slow_index - 1]
    per_sample = 100.0
    during = abnormal_seconds(t.latency_for)
    after = AFTER
    series = []
    for b in buckets:
        normal = per_sample if b >= fast else 0.0
        abnormal = per_sample if b >= slow else 0.0
        le = "+Inf" if b == float("inf") else repr(b)
        series.append(
            (
                selector(f"{EVENT_TO_PREDICTION}_bucket", {**INSTANCE, "le": le}),
                counter_values([(normal, BEFORE), (abnormal, during), (normal, after)]),
            )
        )
    return Scenario(
        series=tuple(series),
        start=BEFORE,
        end=BEFORE + during,
        value=slow_lower + (slow - slow_lower) * 0.99,
        resolve_after=180.0,
    )


def _lag_scenario(t: AlertThresholds) -> Scenario:
    per_partition = float(t.consumer_lag_records * 3 // 5)
    during = abnormal_seconds(t.consumer_lag_for)
    series = tuple(
        (
            selector(CONSUMER_LAG, {**INSTANCE, "topic": "events", "partition": str(p)}),
            gauge_values(10.0, per_partition, during, AFTER),
        )
        for p in (0, 1)
    )
    return Scenario(
        series=series,
        start=BEFORE,
        end=BEFORE + during,
        value=2 * per_partition,
        labels={"topic": "events"},
    )


def _dead_letter_scenario(t: AlertThresholds) -> Scenario:
    consumed = 100.0
    dead = consumed * t.dead_letter_ratio * 4
    during = abnormal_seconds(t.dead_letter_for)
    after = AFTER
    return Scenario(
        series=(
            (
                selector(RECORDS_CONSUMED, {**INSTANCE, "kind": "events"}),
                counter_values([(consumed, BEFORE), (consumed, during), (consumed, after)]),
            ),
            (
                selector(DEAD_LETTERS, {**INSTANCE, "reason": "invalid_json"}),
                counter_values([(0.0, BEFORE), (dead, during), (0.0, after)]),
            ),
        ),
        start=BEFORE,
        end=BEFORE + during,
        value=dead / consumed,
        resolve_after=300.0 + 180.0,
    )


def _undelivered_scenario() -> Scenario:
    during = 900.0
    return Scenario(
        series=(
            (
                selector(UNDELIVERED, INSTANCE),
                counter_values([(0.0, BEFORE), (10.0, during), (0.0, AFTER)]),
            ),
        ),
        start=BEFORE,
        end=BEFORE + during,
        value=0.0,
        labels=dict(INSTANCE),
        resolve_after=duration_seconds(UNDELIVERED_WINDOW) + 180.0,
    )


def _label_lag_scenario(t: AlertThresholds) -> Scenario:
    """Events go on while the newest labelled event stays put, then labels catch up."""
    epoch = 1_767_225_600.0
    ahead = epoch + 2 * t.label_lag_seconds
    during = abnormal_seconds(t.label_lag_for)
    after = AFTER
    n_before, n_during, n_after = steps(BEFORE), steps(during), steps(after)
    return Scenario(
        series=(
            (
                selector(LAST_EVENT_TIMESTAMP, INSTANCE),
                f"{epoch!r}x{n_before - 1} {ahead!r}x{n_during + n_after - 1}",
            ),
            (
                selector(LAST_LABEL_EVENT_TIMESTAMP, INSTANCE),
                f"{epoch!r}x{n_before + n_during - 1} {ahead!r}x{n_after - 1}",
            ),
        ),
        start=BEFORE,
        end=BEFORE + during,
        value=ahead - epoch,
        labels=dict(INSTANCE),
    )
