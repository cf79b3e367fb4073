"""Triggered retraining: which alerts fire, the cooldown, and the command's answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.stream.retrain_trigger import (
    TriggerError,
    alerts_document,
    firing,
    last_retrain_age_s,
)

ALERTS = {
    "status": "success",
    "data": {
        "alerts": [
            {"labels": {"alertname": "StreamlearnFeatureDriftPSI"}, "state": "pending"},
            {"labels": {"alertname": "StreamlearnLag"}, "state": "firing"},
        ]
    },
}


@pytest.fixture
def prometheus() -> Iterator[str]:
    """A local HTTP server answering ``/api/v1/alerts`` as Prometheus does."""

    class Alerts(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the handler's API
            body = json.dumps(ALERTS).encode()
            self.send_response(200 if self.path == "/api/v1/alerts" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Alerts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "document",
    [{}, {"data": None}, {"data": {"alerts": "x"}}, {"data": {"alerts": [None, {"state": 1}]}}],
)
def test_an_answer_without_alerts_fires_nothing(document):
    assert firing(document, ["StreamlearnConceptDrift"]) == []


def test_a_pending_alert_is_not_firing_and_other_alerts_do_not_count(prometheus):
    document = alerts_document(prometheus)
    assert firing(document, ["StreamlearnFeatureDriftPSI"]) == []
    assert firing(document, ["StreamlearnLag", "StreamlearnConceptDrift"]) == ["StreamlearnLag"]


def test_prometheus_away_is_a_trigger_error():
    with pytest.raises(TriggerError, match="cannot ask Prometheus"):
        alerts_document("http://127.0.0.1:9", timeout_s=2.0)


def test_the_cooldown_counts_from_the_newest_retraining():
    log = [
        {"source": "retrain", "action": "retrain", "time": "2026-01-01T12:00:00Z"},
        {"source": "retrain", "action": "retrain", "time": "2026-01-01T00:00:00Z"},
    ]
    assert last_retrain_age_s(log, datetime(2026, 1, 1, 13, tzinfo=UTC)) == 3600.0


def run(*args: str):
    return CliRunner().invoke(app, ["model", "train", *args], env={"STREAMLEARN_CONFIG": None})


def test_no_named_alert_firing_skips_the_run_and_says_why(prometheus):
    result = run(
        "--from-log", "--if-alert", "StreamlearnFeatureDriftPSI", "--prometheus", prometheus
    )
    assert result.exit_code == 0, result.output
    assert "not retraining: none of StreamlearnFeatureDriftPSI is firing" in result.output
    result = run("--from-log", "--if-alert", "StreamlearnConceptDrift", "--json",
                 "--prometheus", prometheus)  # fmt: skip
    assert json.loads(result.stdout)["skipped"] == "none of StreamlearnConceptDrift is firing"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "--from-log"),
        (["--from-log", "--since", "30 days"], 2, "a duration is a number and a unit"),
        (["--from-log", "--until", "yesterday"], 2, "is not ISO-8601"),
        (["--from-log", "--cooldown", "soon"], 2, "a duration is"),
        (["--from-log", "--if-alert", "A", "--prometheus", "http://127.0.0.1:9"], 1, "Prometheus"),
    ],
)
def test_command_line_errors_are_messages_with_exit_codes(args, code, message):
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
