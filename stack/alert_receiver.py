"""The alert receiver: Alertmanager's webhook notifications kept in a bounded log.

``streamlearn alerts serve`` runs :class:`AlertReceiver`, an HTTP server that
accepts Alertmanager's webhook payload (version 4) at ``POST /alerts``, appends
each alert as one JSON line to an :class:`AlertLog` (rotated at a size, so it
stays bounded), and logs one line per alert. ``GET /healthz`` answers while it
runs, with the counts of alerts received and bodies rejected. ``streamlearn
alerts list`` reads the log back (:func:`AlertLog.read`).

Examples
--------
>>> body = (
...     b'{"version": "4", "status": "firing", "receiver": "r", "alerts": [{"status": "firing",'
...     b' "labels": {"alertname": "StreamlearnWorkerDown", "severity": "critical"},'
...     b' "annotations": {"summary": "down"}, "startsAt": "2026-01-01T00:00:00Z",'
...     b' "endsAt": "0001-01-01T00:00:00Z"}]}'
... )
>>> [(a["status"], a["labels"]["alertname"]) for a in parse_notification(body)]
[('firing', 'StreamlearnWorkerDown')]
>>> parse_notification(b'{"version": "3", "alerts": []}')
Traceback (most recent call last):
...
ValueError: version must be "4" (Alertmanager's webhook payload), got '3'
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_LOG",
    "DEFAULT_PORT",
    "MAX_BODY_BYTES",
    "AlertLog",
    "AlertReceiver",
    "parse_notification",
    "parse_since",
]

log = logging.getLogger("streamlearn.alerts")

DEFAULT_HOST = "127.0.0.1"
#: The port of ``metrics.alert_files.DEFAULT_WEBHOOK_URL``.
DEFAULT_PORT = 9095
DEFAULT_LOG = Path("alerts.jsonl")
#: Largest notification body accepted (Alertmanager's are a few KiB per alert).
MAX_BODY_BYTES = 4 * 1024 * 1024
_MAX_ALERTS = 10_000
_STATUSES = ("firing", "resolved")


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{where} must be an object of strings")
    return value


def parse_notification(body: bytes) -> list[dict[str, Any]]:
    """The alerts of one Alertmanager webhook notification (payload version 4).

    Parameters
    ----------
    body
        The request body.

    Returns
    -------
    list of dict
        One dict per alert: ``status``, ``labels``, ``annotations``, ``startsAt``,
        ``endsAt``, and ``generatorURL`` and ``fingerprint`` when given.

    Raises
    ------
    ValueError
        Saying what is wrong with the body.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("body must be a JSON object (Alertmanager's webhook payload)")
    if doc.get("version") != "4":
        raise ValueError(
            f'version must be "4" (Alertmanager\'s webhook payload), got {doc.get("version")!r}'
        )
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("alerts must be a list")
    if len(alerts) > _MAX_ALERTS:
        raise ValueError(f"at most {_MAX_ALERTS} alerts per notification, got {len(alerts)}")
    out = []
    for i, alert in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(alert, dict):
            raise ValueError(f"{where} must be an object")
        status = alert.get("status")
        if status not in _STATUSES:
            raise ValueError(f"{where}.status must be firing or resolved, got {status!r}")
        entry: dict[str, Any] = {
            "status": status,
            "labels": _string_map(alert.get("labels"), f"{where}.labels"),
            "annotations": _string_map(alert.get("annotations", {}), f"{where}.annotations"),
        }
        for name in ("startsAt", "endsAt"):
            value = alert.get(name)
            if not isinstance(value, str):
                raise ValueError(f"{where}.{name} must be a timestamp string")
            entry[name] = value
        for name in ("generatorURL", "fingerprint"):
            if isinstance(alert.get(name), str):
                entry[name] = alert[name]
        out.append(entry)
    return out


_DURATION = re.compile(r"^([0-9]+)(s|m|h|d)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds from a duration back from now (``30m``, ``2h``, ``7d``) or an ISO time.

    Examples
    --------
    >>> parse_since("2h", now=10_000.0)
    2800.0
    >>> parse_since("2026-01-01T00:00:00Z")
    1767225600.0
    >>> parse_since("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: --since takes a duration such as 30m, 2h, 7d or an ISO-8601 time, got 'yesterday'
    """
    match = _DURATION.match(text.strip())
    if match:
        now = time.time() if now is None else now
        return now - int(match[1]) * _SECONDS[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since takes a duration such as 30m, 2h, 7d or an ISO-8601 time, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class AlertLog:
    """A JSON-lines file of received alerts, rotated when it would pass ``max_bytes``.

    The current file is ``path``; rotation renames it ``path.1`` (and ``path.1``
    to ``path.2``, ...), keeping ``backups`` old files, so the log never holds
    more than about ``(backups + 1) * max_bytes``.

    Examples
    --------
    >>> import tempfile
    >>> alerts = AlertLog(Path(tempfile.mkdtemp()) / "alerts.jsonl", max_bytes=256, backups=1)
    >>> for i in range(6):
    ...     alerts.append([{"status": "firing", "labels": {"alertname": f"A{i}"}}])
    >>> [r["labels"]["alertname"] for r in alerts.read()]
    ['A2', 'A3', 'A4', 'A5']
    >>> sorted(p.name for p in alerts.path.parent.iterdir())
    ['alerts.jsonl', 'alerts.jsonl.1']
    """

    def __init__(self, path: Path, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 3) -> None:
        if max_bytes < 256:
            raise ValueError(f"max_bytes must be >= 256, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be >= 0, got {backups}")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        """The log's files, oldest first."""
        old = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.backups, 0, -1)]
        return [p for p in [*old, self.path] if p.is_file()]

    def append(self, alerts: list[dict[str, Any]], received: float | None = None) -> None:
        """Append each alert as one line, with its ``received`` time (epoch seconds)."""
        now = time.time() if received is None else received
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        lines = "".join(
            json.dumps({"received": stamp, **alert}, sort_keys=False, ensure_ascii=False) + "\n"
            for alert in alerts
        ).encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = self.path.stat().st_size if self.path.is_file() else 0
            if size and size + len(lines) > self.max_bytes:
                self._rotate()
            with open(self.path, "ab") as out:
                out.write(lines)

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.is_file():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def read(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """The logged alerts, oldest first; only those received at ``since`` or later if given.

        A line that is not a JSON object (a torn write) is skipped.
        """
        for path in self.files():
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:  # rotated away meanwhile
                continue
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(record, dict):
                    continue
                if since is not None:
                    try:
                        if datetime.fromisoformat(record["received"]).timestamp() < since:
                            continue
                    except (KeyError, TypeError, ValueError):
                        continue
                yield record


def _summary_line(alert: dict[str, Any]) -> str:
    labels = alert["labels"]
    extra = " ".join(
        f"{k}={labels[k]}" for k in ("severity", "instance", "topic", "feature") if k in labels
    )
    summary = alert["annotations"].get("summary", "")
    return f"alert {alert['status']} {labels.get('alertname', '?')} {extra}: {summary}".strip()


class AlertReceiver:
    """The HTTP server of ``streamlearn alerts serve``.

    Parameters
    ----------
    alert_log
        Where received alerts go.
    host, port
        Listening address; port 0 picks a free one (see :attr:`port`).

    Examples
    --------
    >>> import tempfile, urllib.request
    >>> receiver = AlertReceiver(AlertLog(Path(tempfile.mkdtemp()) / "a.jsonl"), port=0)
    >>> receiver.start()
    >>> url = f"http://127.0.0.1:{receiver.port}"
    >>> json.load(urllib.request.urlopen(url + "/healthz"))["status"]
    'ok'
    >>> receiver.stop()
    """

    def __init__(self, alert_log: AlertLog, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        self.alert_log = alert_log
        self.received = 0
        self.rejected = 0
        self._counts = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self.server.server_address[1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "streamlearn-alerts"

            def _reply(self, status: int, doc: dict[str, Any]) -> None:
                body = (json.dumps(doc) + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _reject(self, status: int, message: str) -> None:
                with receiver._counts:
                    receiver.rejected += 1
                log.warning("rejected a notification from %s: %s", self.client_address[0], message)
                self._reply(status, {"error": message})

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?", 1)[0] == "/healthz":
                    self._reply(
                        200,
                        {
                            "status": "ok",
                            "received": receiver.received,
                            "rejected": receiver.rejected,
                            "log": str(receiver.alert_log.path),
                        },
                    )
                else:
                    self._reply(404, {"error": "GET /healthz or POST /alerts"})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?", 1)[0] != "/alerts":
                    self._reply(404, {"error": "POST /alerts or GET /healthz"})
                    return
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self._reject(411, "a Content-Length header is required")
                    return
                if length < 0 or length > MAX_BODY_BYTES:
                    self._reject(413, f"body over {MAX_BODY_BYTES} bytes")
                    return
                body = self.rfile.read(length)
                try:
                    alerts = parse_notification(body)
                except ValueError as exc:
                    self._reject(400, str(exc))
                    return
                try:
                    receiver.alert_log.append(alerts)
                except OSError as exc:
                    log.error("cannot write %s: %s", receiver.alert_log.path, exc)
                    # 5xx: Alertmanager retries the notification.
                    self._reply(503, {"error": f"cannot write the alert log: {exc}"})
                    return
                with receiver._counts:
                    receiver.received += len(alerts)
                for alert in alerts:
                    log.info("%s", _summary_line(alert))
                self._reply(200, {"received": len(alerts)})

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("%s " + format, self.client_address[0], *args)

        return Handler

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="alert-receiver", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (or an interrupt)."""
        self.server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
