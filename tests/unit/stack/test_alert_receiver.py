"""The alert receiver: Alertmanager's webhook payload in, one JSON line per alert out,
bad bodies refused with 400 and counted, a bounded log, and ``alerts list``."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.stack.alert_receiver import (
    AlertLog,
    AlertReceiver,
    parse_notification,
    parse_since,
)

runner = CliRunner()


def notification(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) as Alertmanager sends it."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="StreamlearnConceptDrift"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "streamlearn-alerts",
        "groupLabels": {"alertname": "StreamlearnConceptDrift"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9094",
        "alerts": list(alerts),
    }


def alert(name: str = "StreamlearnConceptDrift", status: str = "firing") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "warning", "instance": "w:1", "job": "j"},
        "annotations": {"summary": "Concept drift detected", "description": "d"},
        "startsAt": "2026-01-01T00:00:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T00:10:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "0123456789abcdef",
    }


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[AlertReceiver]:
    r = AlertReceiver(AlertLog(tmp_path / "alerts.jsonl"), port=0)
    r.start()
    yield r
    r.stop()


def post(r: AlertReceiver, body: bytes, path: str = "/alerts") -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def get(r: AlertReceiver, path: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_each_alert_of_a_notification_becomes_one_logged_line(
    receiver: AlertReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="streamlearn.alerts")
    body = notification(alert("A"), alert("B", status="resolved"))
    assert post(receiver, json.dumps(body).encode()) == (200, {"received": 2})
    lines = receiver.alert_log.path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["status"] == "firing"
    assert first["labels"]["alertname"] == "A"
    assert first["annotations"]["summary"] == "Concept drift detected"
    assert first["startsAt"] == "2026-01-01T00:00:00.000Z"
    assert first["endsAt"] == "0001-01-01T00:00:00Z"
    assert abs(parse_since(first["received"]) - time.time()) < 60
    assert json.loads(lines[1])["status"] == "resolved"
    logged = [r.getMessage() for r in caplog.records if r.name == "streamlearn.alerts"]
    assert any(m.startswith("alert firing A severity=warning instance=w:1") for m in logged)
    assert any(m.startswith("alert resolved B") for m in logged)
    assert get(receiver, "/healthz")[1]["received"] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (b"[]", "body must be a JSON object"),
        (json.dumps({"version": "3", "alerts": []}).encode(), 'version must be "4"'),
        (json.dumps({"version": "4"}).encode(), "alerts must be a list"),
        (json.dumps({"version": "4", "alerts": [1]}).encode(), "alerts[0] must be an object"),
        (
            json.dumps(notification({**alert(), "status": "pending"})).encode(),
            "alerts[0].status must be firing or resolved",
        ),
        (
            json.dumps(notification({**alert(), "labels": {"a": 1}})).encode(),
            "alerts[0].labels must be an object of strings",
        ),
        (
            json.dumps(notification({**alert(), "startsAt": None})).encode(),
            "alerts[0].startsAt must be a timestamp string",
        ),
    ],
)
def test_a_bad_body_is_refused_with_400_a_message_and_a_count(
    receiver: AlertReceiver, body: bytes, message: str
) -> None:
    status, answer = post(receiver, body)
    assert status == 400
    assert message in answer["error"]
    assert not receiver.alert_log.path.exists()
    assert get(receiver, "/healthz")[1] == {
        "status": "ok",
        "received": 0,
        "rejected": 1,
        "log": str(receiver.alert_log.path),
    }
    # the receiver goes on serving
    assert post(receiver, json.dumps(notification(alert())).encode())[0] == 200


def test_unknown_paths_are_404_and_healthz_answers(receiver: AlertReceiver) -> None:
    assert post(receiver, b"{}", path="/other")[0] == 404
    assert get(receiver, "/alerts")[0] == 404
    assert get(receiver, "/healthz")[0] == 200


def test_the_log_rotates_at_its_size_and_keeps_its_newest_alerts(tmp_path: Path) -> None:
    log = AlertLog(tmp_path / "alerts.jsonl", max_bytes=4096, backups=2)
    for i in range(200):
        log.append([{**alert(f"A{i}")}])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    names = [r["labels"]["alertname"] for r in log.read()]
    assert names[-1] == "A199"
    assert names == [f"A{i}" for i in range(200 - len(names), 200)]  # newest kept, in order


def test_a_torn_line_in_the_log_is_skipped(tmp_path: Path) -> None:
    log = AlertLog(tmp_path / "alerts.jsonl")
    log.append([alert("A")])
    with open(log.path, "a") as out:
        out.write('{"received": "2026-01-0\n[1, 2]\n')
    log.append([alert("B")])
    assert [r["labels"]["alertname"] for r in log.read()] == ["A", "B"]


def test_alerts_list_prints_json_lines_a_table_and_filters_by_since(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    log = AlertLog(path)
    log.append([alert("Old")], received=time.time() - 7200)
    log.append([alert("New", status="resolved")])
    result = runner.invoke(app, ["alerts", "list", "--log", str(path), "--json"])
    assert result.exit_code == 0, result.output
    listed = [json.loads(line) for line in result.output.splitlines()]
    assert [a["labels"]["alertname"] for a in listed] == ["Old", "New"]
    assert set(listed[0]) >= {"received", "status", "labels", "annotations", "startsAt", "endsAt"}
    result = runner.invoke(app, ["alerts", "list", "--log", str(path), "--json", "--since", "1h"])
    assert [json.loads(line)["labels"]["alertname"] for line in result.output.splitlines()] == [
        "New"
    ]
    result = runner.invoke(app, ["alerts", "list", "--log", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Old" in result.output and "New" in result.output and "resolved" in result.output
    result = runner.invoke(app, ["alerts", "list", "--log", str(path), "--since", "soon"])
    assert result.exit_code == 2
    assert "--since takes a duration" in result.output


def test_parse_notification_keeps_only_the_alert_fields() -> None:
    (parsed,) = parse_notification(json.dumps(notification(alert())).encode())
    assert set(parsed) == {
        "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint",
    }  # fmt: skip
