"""Prometheus instruments of the HTTP scoring and ranking API (``streamlearn serve``).

Created once per process on a registry given by the caller. Labels come from fixed
sets: the endpoint (:data:`ENDPOINTS`) and the reason of an error (the event schema's
reasons, plus the API's own in :data:`API_REASONS`); anything else is counted as
``other``, so no request can add a series.

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
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streamlearn.features.schema import REASONS
from streamlearn.metrics.instruments import counter, gauge, histogram

__all__ = ["API_REASONS", "ENDPOINTS", "ServeMetrics"]

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

_REASONS = frozenset(REASONS) | frozenset(API_REASONS)
_ENDPOINTS = frozenset(ENDPOINTS)


class ServeMetrics:
    """Latency per endpoint, errors by reason, candidates per request, the served model."""

    def __init__(self, registry: CollectorRegistry) -> None:
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
            "Age of the served model snapshot (0 while the untrained model is served).",
        )
        self.model_version = gauge(
            registry,
            "streamlearn_serve_model_version",
            "Registry version of the served model (0: the configured spec, untrained).",
        )
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

    @staticmethod
    def endpoint(path: str) -> str:
        """The endpoint label of a request path."""
        return path if path in _ENDPOINTS else "other"

    def observe(self, endpoint: str, seconds: float) -> None:
        self.latency.labels(endpoint=self.endpoint(endpoint)).observe(seconds)

    def error(self, endpoint: str, reason: str) -> None:
        reason = reason if reason in _REASONS else "other"
        self.errors.labels(endpoint=self.endpoint(endpoint), reason=reason).inc()
