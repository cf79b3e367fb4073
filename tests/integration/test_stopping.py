"""A worker process stops when asked, whatever it waits for, and says what to fix when refused.

Each test runs ``streamlearn run`` as a process, makes it wait for a dependency
(Redis at an address nothing listens on, Kafka unreachable at start), sends
SIGTERM once the log shows the wait and measures the time from the signal to the
process's exit. Wrong Redis credentials end the worker at once with exit code 1
and a message naming the settings, without a signal and without a traceback.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamlearn.stack import Stack, fast_stack_config, free_ports
from streamlearn.stream.harness import lines_of, produce, settings_for, worker_process, write_config
from streamlearn.stream.synthetic import WorldConfig, generate_world

from .pipeline import exit_code, wait_for, worker_state

pytestmark = pytest.mark.integration

KEY = "stopping-test-signing-key-0123456789"
#: From SIGTERM to the process's exit, however long the dependency has been away.
STOP_WITHIN_S = 2.0


def _wait_for_log(process: subprocess.Popen, log: Path, pattern: str, timeout: float) -> str:
    """The first log line matching ``pattern``; fails if the worker exits or it never comes."""

    def found() -> str | None:
        if process.poll() is not None:
            raise AssertionError(worker_state(process, log))
        match = re.search(pattern, log.read_text(errors="replace"))
        return match.group(0) if match else None

    return wait_for(
        found, timeout, f"a log line matching {pattern!r}", 0.05, lambda: worker_state(process, log)
    )


def _seconds_to_stop(process: subprocess.Popen, log: Path) -> float:
    """SIGTERM the worker; the seconds until it exited (it must exit with code 0)."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = exit_code(process, log, 60)
    elapsed = time.monotonic() - sent
    assert code == 0, worker_state(process, log)
    print(f"exited {elapsed:.2f} s after SIGTERM")
    return elapsed


@pytest.mark.parametrize("signing_key", [False, True], ids=["store-batch", "checkpoint-recovery"])
def test_sigterm_while_redis_is_unreachable_stops_the_worker_within_two_seconds(
    kafka_bootstrap, unique_prefix, tmp_path, signing_key
):
    """Redis away: the store's batch call (store thread) or the checkpoint recovery at
    start (main thread) retries; the log says which address since when; SIGTERM ends it."""
    (port,) = free_ports(1)  # nothing listens there
    url = f"redis://:pw-Secret-9@127.0.0.1:{port}/0"
    settings = settings_for(kafka_bootstrap, url, unique_prefix, partitions=1)
    produce(settings, lines_of(generate_world(WorldConfig(events=50, seed=5))))
    config = write_config(settings, tmp_path / "worker.yaml")
    log = tmp_path / "worker.log"
    env = {"STREAMLEARN_MODEL_KEY": KEY} if signing_key else {}
    process = worker_process(config, env=env)

    masked = re.escape(f"redis://:***@127.0.0.1:{port}/0")
    line = _wait_for_log(
        process, log, rf"Redis at {masked} unreachable since \S+ \(\d+ s\): .*", 120
    )
    assert "ConnectionError" in line, line
    # two more attempts, so the worker is deep in its backoff when the signal comes
    time.sleep(1.0)
    assert _seconds_to_stop(process, log) < STOP_WITHIN_S
    text = log.read_text(errors="replace")
    assert f"stopped while waiting for Redis at redis://:***@127.0.0.1:{port}/0" in text
    assert "pw-Secret-9" not in text
    assert "Traceback" not in text


@pytest.mark.parametrize("when", ["during-a-connection-attempt", "after-failed-attempts"])
def test_sigterm_while_kafka_is_unreachable_at_start_stops_the_worker_within_two_seconds(
    redis_url, unique_prefix, tmp_path, when
):
    """Kafka out of reach at start: the worker keeps trying, says since when, and stops
    at once on SIGTERM, in the middle of a client's bootstrap or between attempts."""
    (port,) = free_ports(1)
    settings = settings_for(f"127.0.0.1:{port}", redis_url, unique_prefix, partitions=1)
    config = write_config(settings, tmp_path / "worker.yaml")
    log = tmp_path / "worker.log"
    process = worker_process(config, env={"STREAMLEARN_MODEL_KEY": KEY})

    if when == "during-a-connection-attempt":
        # kafka-python logs each refused connection of its bootstrap, which lasts 5 s
        _wait_for_log(process, log, r"kafka\.net\.\w+: .*ECONNREFUSED", 120)
    else:
        line = _wait_for_log(
            process, log, rf"Kafka at 127\.0\.0\.1:{port} unreachable since \S+ \(\d+ s\): .*", 120
        )
        assert "ECONNREFUSED" in line or "Connection" in line, line
        time.sleep(0.5)
    assert _seconds_to_stop(process, log) < STOP_WITHIN_S
    text = log.read_text(errors="replace")
    assert f"stopped while waiting for Kafka at 127.0.0.1:{port}" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("refusal", ["wrong-password", "no-permission"])
def test_refused_redis_credentials_end_the_worker_with_exit_code_1_naming_the_settings(
    kafka_bootstrap, redis_url, redis_client, unique_prefix, tmp_path, refusal
):
    """A wrong password (AuthenticationError) or an ACL without the worker's keys (NOPERM)
    is not Redis being away: the worker exits 1 at once, saying which settings to fix."""
    user, password = f"{unique_prefix}-worker", "right-Password-3"
    keys = "~elsewhere:*" if refusal == "no-permission" else f"~{unique_prefix}:*"
    redis_client.execute_command("ACL", "SETUSER", user, "on", f">{password}", keys, "+@all")
    try:
        settings = settings_for(
            kafka_bootstrap, redis_url, unique_prefix, partitions=1, redis={"username": user}
        )
        produce(settings, lines_of(generate_world(WorldConfig(events=50, seed=6))))
        config = write_config(settings, tmp_path / "worker.yaml")
        log = tmp_path / "worker.log"
        given = "not-the-password" if refusal == "wrong-password" else password
        process = worker_process(config, env={"STREAMLEARN_REDIS__PASSWORD": given})
        assert exit_code(process, log, 120) == 1, worker_state(process, log)
    finally:
        redis_client.execute_command("ACL", "DELUSER", user)
    text = log.read_text(errors="replace")
    assert "refused the worker" in text
    assert "STREAMLEARN_REDIS__PASSWORD" in text and "redis.username" in text
    if refusal == "no-permission":
        assert "NoPermissionError" in text and "ACL" in text
    else:
        assert "AuthenticationError" in text
    assert "unreachable since" not in text, "refused credentials are not retried"
    assert "Traceback" not in text
    assert given not in text


SASL_USER, SASL_PASSWORD = "alice", "alice-Secret-7"


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory) -> Iterator[str]:
    """A broker of the module's own with a SASL listener; its bootstrap address."""
    (port,) = free_ports(1)
    config = fast_stack_config(tmp_path_factory.mktemp("sasl") / "stack").model_copy(
        update={"kafka_sasl_port": port, "kafka_sasl_users": ((SASL_USER, SASL_PASSWORD),)}
    )
    stack = Stack(config)
    stack.up(services=["kafka"])
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stack.down()


def test_a_wrong_kafka_sasl_password_ends_the_worker_with_exit_code_1_naming_the_settings(
    sasl_kafka, redis_url, unique_prefix, tmp_path
):
    """Kafka refusing the SASL login is not Kafka being away: exit 1 at once, no retries."""
    settings = settings_for(
        sasl_kafka,
        redis_url,
        unique_prefix,
        partitions=1,
        kafka={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": SASL_USER,
            "sasl_password": "not-the-password",
        },
    )
    config = write_config(settings, tmp_path / "worker.yaml")
    log = tmp_path / "worker.log"
    process = worker_process(config, env={"STREAMLEARN_KAFKA__SASL_PASSWORD": "not-the-password"})
    started = time.monotonic()
    assert exit_code(process, log, 120) == 1, worker_state(process, log)
    text = log.read_text(errors="replace")
    assert f"Kafka at {sasl_kafka} refused the worker" in text
    assert "STREAMLEARN_KAFKA__SASL_PASSWORD" in text and "kafka.sasl_username" in text
    # A first attempt may time out before the broker, just started, answers the SASL
    # exchange; once it refuses the login, nothing is tried again.
    after_refusal = text[text.index(f"Kafka at {sasl_kafka} refused the worker") :]
    assert "unreachable since" not in after_refusal, "a refused login is not retried"
    assert "Traceback" not in text and "not-the-password" not in text
    assert time.monotonic() - started < 60
