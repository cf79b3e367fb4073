"""When a triggered retraining runs: an alert firing in Prometheus, and no recent retraining.

The guide's triggered retraining ("retrain when drift exceeds a threshold or online
metrics degrade") on top of the alerts the project already defines (feature drift,
concept drift, prediction drift, quality): ``model train --from-log --if-alert NAME``
asks Prometheus' alerts API which alerts are firing and trains only when one of the
named ones is (:func:`firing`). An alert keeps firing while the drift lasts, so a
``--cooldown`` skips the run when the registry's audit log holds a retraining newer than it
(:func:`last_retrain_age_s`): run the command every few minutes from cron or a systemd
timer, it retrains once per episode.

Examples
--------
>>> doc = {"status": "success", "data": {"alerts": [
...     {"labels": {"alertname": "StreamlearnConceptDrift"}, "state": "firing"},
...     {"labels": {"alertname": "StreamlearnFeatureDriftPSI"}, "state": "pending"}]}}
>>> firing(doc, ["StreamlearnFeatureDriftPSI", "StreamlearnConceptDrift"])
['StreamlearnConceptDrift']
>>> firing(doc, ["StreamlearnFeatureDriftPSI"])
[]
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

__all__ = ["TriggerError", "alerts_document", "firing", "last_retrain_age_s"]


class TriggerError(RuntimeError):
    """Prometheus could not tell which alerts fire."""


def firing(document: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The alerts of ``names`` that fire in a ``/api/v1/alerts`` answer (pending ones do not)."""
    wanted = set(names)
    data = document.get("data")
    alerts = data.get("alerts", []) if isinstance(data, Mapping) else []
    found = set()
    for alert in alerts if isinstance(alerts, list) else []:
        if not isinstance(alert, Mapping) or alert.get("state") != "firing":
            continue
        labels = alert.get("labels")
        name = labels.get("alertname") if isinstance(labels, Mapping) else None
        if name in wanted:
            found.add(name)
    return sorted(found)


def alerts_document(prometheus_url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Prometheus' ``/api/v1/alerts`` answer."""
    url = prometheus_url.rstrip("/") + "/api/v1/alerts"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - a configured URL
            document = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise TriggerError(
            f"cannot ask Prometheus at {prometheus_url} for its alerts: {error}"
        ) from None
    if not isinstance(document, dict) or document.get("status") != "success":
        raise TriggerError(f"Prometheus at {prometheus_url} answered {str(document)[:200]}")
    return document


def last_retrain_age_s(records: Iterable[Mapping[str, Any]], now: datetime) -> float | None:
    """Seconds since the newest retraining in the registry's audit log (None: none).

    >>> from datetime import UTC
    >>> log = [{"source": "retrain", "action": "challenger_request",
    ...         "time": "2026-01-02T00:00:00Z"},
    ...        {"source": "experiment", "action": "revert", "time": "2026-01-02T00:00:00Z"},
    ...        {"source": "retrain", "action": "retrain", "time": "2026-01-01T23:00:00Z"}]
    >>> last_retrain_age_s(log, datetime(2026, 1, 2, 1, tzinfo=UTC))
    7200.0
    >>> last_retrain_age_s([], datetime(2026, 1, 2, tzinfo=UTC)) is None
    True
    """
    for record in records:
        stamp = record.get("time")
        if record.get("source") == record.get("action") == "retrain" and isinstance(stamp, str):
            return (now - datetime.fromisoformat(stamp)).total_seconds()
    return None
