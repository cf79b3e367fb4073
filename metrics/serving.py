"""Prometheus instruments of the HTTP scoring and ranking API (``streamlearn serve``).

Created once per process on a registry given by the caller. Labels come from fixed
sets: the endpoint (:data:`ENDPOINTS`), the reason of an error (the event schema's
reasons, plus the API's own in :data:`API_REASONS`; anything else is counted as
``other``) and the served arm (the configured experiment's arms, or :data:`CHAMPION`
without one; any other arm is not recorded), so no request can add a series.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> m = ServeMetrics(registry)
>>> m.observe("/score", 0.004)
>>> registry.get_sample_value("streamlearn_serve_request_seconds_count", {"endpoint": "/score"})
1.0
>>> m.error("/rank", "too_many_candidates")
>>> m.error("/rank", "made-up reason")
>>> registry.get_sample_value(
...     "streamlearn_serve_errors_total", {"endpoint": "/rank", "reason": "other"})
1.0
>>> registry = CollectorRegistry()
>>> m = ServeMetrics(registry, arms=("control", "treatment"))
>>> m.served("treatment", 12.5, "7")
>>> m.served("made-up arm", 1.0, "8")
>>> [registry.get_sample_value("streamlearn_serve_model_age_seconds", {"arm": arm})
...  for arm in ("control", "treatment", "made-up arm")]
[0.0, 12.5, None]
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from streamlearn.features.schema import REASONS
from streamlearn.metrics.instruments import counter, gauge, histogram

__all__ = ["API_REASONS", "CHAMPION", "ENDPOINTS", "ServeMetrics"]

#: The endpoints measured; any other path is ``other``.
ENDPOINTS: tuple[str, ...] = ("/score", "/rank", "/healthz", "/readyz", "/metrics", "other")

#: Reasons of the API's own refusals, beside the event schema's.
API_REASONS: tuple[str, ...] = (
    "body_too_large",
    "too_many_candidates",
    "no_candidates",
    "wrong_method",
    "not_found",
    "redis_unavailable",
    "model_not_finite",
    "other",
)

#: The ``arm`` label of the served model without an experiment.
CHAMPION = "champion"

_REASONS = frozenset(REASONS) | frozenset(API_REASONS)
_ENDPOINTS = frozenset(ENDPOINTS)


class ServeMetrics:
    """Latency per endpoint, errors by reason, candidates per request, the served models.

    ``arms``: the arms whose model is served (the experiment's, in order), the only
    values of the served model's ``arm`` label; their series exist from the start.
    """

    def __init__(self, registry: CollectorRegistry, arms: Sequence[str] = (CHAMPION,)) -> None:
        self.arms = tuple(arms)
        self.latency = histogram(
            registry,
            "streamlearn_serve_request_seconds",
            "Time to answer an API request, from its first byte read to its response.",
            ("endpoint",),
        )
        self.errors = counter(
            registry,
            "streamlearn_serve_errors_total",
            "API requests refused or failed, by endpoint and reason.",
            ("endpoint", "reason"),
        )
        self.candidates = histogram(
            registry,
            "streamlearn_serve_rank_candidates",
            "Candidates per /rank request.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 10000),
        )
        self.model_age = gauge(
            registry,
            "streamlearn_serve_model_age_seconds",
            "Age of the snapshot served for an arm (0 while an untrained model is served).",
            ("arm",),
        )
        self.model_version = gauge(
            registry,
            "streamlearn_serve_model_version",
            "Registry version served for an arm (0: a configured spec, untrained).",
            ("arm",),
        )
        for arm in self.arms:
            self.served(arm, 0.0, "0")
        self.model_loads = counter(
            registry,
            "streamlearn_serve_model_loads_total",
            "Model versions loaded from the registry.",
        )
        self.refresh_failures = counter(
            registry,
            "streamlearn_serve_refresh_failures_total",
            "Refreshes of the served model that failed (Redis away, a refused snapshot).",
        )

    def served(self, arm: str, age_s: float, version: str) -> None:
        """The model served for ``arm``: its age in seconds and registry version."""
        if arm in self.arms:
            self.model_age.labels(arm=arm).set(age_s)
            self.model_version.labels(arm=arm).set(int(version))

    @staticmethod
    def endpoint(path: str) -> str:
        """The endpoint label of a request path."""
        return path if path in _ENDPOINTS else "other"

    def observe(self, endpoint: str, seconds: float) -> None:
        self.latency.labels(endpoint=self.endpoint(endpoint)).observe(seconds)

    def error(self, endpoint: str, reason: str) -> None:
        reason = reason if reason in _REASONS else "other"
        self.errors.labels(endpoint=self.endpoint(endpoint), reason=reason).inc()
