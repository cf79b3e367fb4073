"""What the supervisor knows of each service: its log, URL, binary and readiness probe,
and the records it keeps of the processes it started.

Functions of a :class:`~stack.config.StackConfig` and a service name; the
:class:`~stack.supervisor.Stack` starts and stops the processes.

Examples
--------
>>> from streamlearn.stack.config import StackConfig
>>> config = StackConfig(root="/tmp/s")
>>> log_path(config, "redis").as_posix()
'/tmp/s/redis/redis.log'
>>> service_url(config, "alerts")
'http://127.0.0.1:9095/alerts'
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from streamlearn.stack.config import ServiceName, StackConfig
from streamlearn.stack.install import StackError

__all__ = [
    "Record",
    "Spec",
    "check_binaries",
    "http_ok",
    "kafka_ready",
    "log_path",
    "port_open",
    "probe",
    "read_record",
    "redis_ready",
    "run_checked",
    "service_url",
    "stop_processes",
    "tail",
    "terminate",
    "write_record",
]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(host: str, port: int, path: str, method: str = "GET", timeout: float = 2.0) -> bool:
    """Whether ``method path`` on ``host:port`` answers 200."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, or ``(no log)``."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Record:
    """Content of ``run/<service>.json``: enough to recognise our process later."""

    pid: int
    create_time: float
    marker: str
    ports: tuple[int, ...]
    argv: tuple[str, ...]

    def process(self) -> psutil.Process | None:
        """Return the live process if it is still the one we started, else None."""
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if self.marker not in " ".join(proc.cmdline()):
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None


def read_record(path: Path) -> Record | None:
    """The :class:`Record` of a pid file, or None when it is missing or unreadable."""
    try:
        raw = json.loads(path.read_text())
        return Record(
            pid=int(raw["pid"]),
            create_time=float(raw["create_time"]),
            marker=str(raw["marker"]),
            ports=tuple(raw["ports"]),
            argv=tuple(raw["argv"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(
    path: Path, pid: int, marker: str, ports: Iterable[int], argv: Iterable[str]
) -> None:
    """Write the pid file of a process just started (:class:`Record`): its start time
    and ``marker`` in its command line recognise it later, whatever reused its pid."""
    try:
        create_time = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        create_time = time.time()
    record = {
        "pid": pid,
        "create_time": create_time,
        "marker": marker,
        "ports": list(ports),
        "argv": list(argv),
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


def terminate(
    name: str, record: Record | None, report: Callable[[str], None]
) -> psutil.Process | None:
    """Send SIGTERM to the process of ``record`` if it is still ours; the process, if so."""
    proc = record.process() if record else None
    if proc is None:
        return None
    report(f"{name}: stopping pid {proc.pid}")
    try:
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return None
    return proc


def stop_processes(
    victims: Sequence[tuple[str, psutil.Process]],
    timeout_s: float,
    report: Callable[[str], None],
) -> None:
    """Wait for ``victims`` (sent SIGTERM) until ``timeout_s`` has passed in all, then
    SIGKILL each one left."""
    deadline = time.monotonic() + timeout_s
    for name, proc in victims:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except psutil.TimeoutExpired:
            report(f"{name}: did not exit after SIGTERM, killing")
            proc.kill()
            proc.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass


@dataclass(frozen=True)
class Spec:
    """How to run and probe one service."""

    name: ServiceName
    argv: tuple[str, ...]
    marker: str
    log: Path
    console: Path
    ready: Callable[[], bool]
    env: Mapping[str, str] | None = None


def log_path(config: StackConfig, name: ServiceName) -> Path:
    """The log file of a service under the stack root."""
    root = config.root
    return {
        "kafka": root / "kafka" / "logs" / "server.log",
        "redis": root / "redis" / "redis.log",
        "prometheus": root / "prometheus" / "prometheus.log",
        "alertmanager": root / "alertmanager" / "alertmanager.log",
        "alerts": root / "alerts" / "alerts.log",
    }[name]


def service_url(config: StackConfig, name: ServiceName) -> str:
    """Where a client reaches a service."""
    return {
        "kafka": config.kafka_bootstrap,
        "redis": config.redis_url,
        "prometheus": config.prometheus_url,
        "alertmanager": config.alertmanager_url,
        "alerts": config.alerts_url,
    }[name]


def check_binaries(services: Iterable[ServiceName]) -> None:
    """Raise :class:`StackError` naming the binaries of ``services`` that are not installed."""
    need = {
        "kafka": "java",
        "redis": "redis-server",
        "prometheus": "prometheus",
        "alertmanager": "prometheus-alertmanager",
        "alerts": sys.executable,
    }
    missing = [need[s] for s in services if shutil.which(need[s]) is None]
    if missing:
        raise StackError(f"not installed: {', '.join(missing)}; run scripts/bootstrap first")


def probe(config: StackConfig, name: ServiceName) -> Callable[[], bool]:
    """A function that tells whether the service answers as ready."""
    if name == "kafka":
        return lambda: kafka_ready(config)
    if name == "redis":
        return lambda: redis_ready(config)
    if name == "alerts":
        return lambda: http_ok(config.host, config.alerts_port, "/healthz")
    port = config.prometheus_port if name == "prometheus" else config.alertmanager_port
    return lambda: http_ok(config.host, port, "/-/ready")


def redis_ready(config: StackConfig) -> bool:
    """Whether the stack's Redis answers PING."""
    import redis

    client = redis.Redis(
        host=config.host,
        port=config.redis_port,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def kafka_ready(config: StackConfig) -> bool:
    """Whether the stack's broker has started and lists its topics."""
    if not port_open(config.host, config.kafka_port):
        return False
    try:
        if "Kafka Server started" not in log_path(config, "kafka").read_text(errors="replace"):
            return False
    except OSError:
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=config.kafka_bootstrap,
            client_id="streamlearn-stack-probe",
            request_timeout_ms=5000,
            bootstrap_timeout_ms=5000,
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def run_checked(name: str, cmd: list[str]) -> str:
    """Run a one-off command of a service; its output, or :class:`StackError` with its tail."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        last = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise StackError(f"{name} failed (exit {proc.returncode}): {' '.join(cmd)}\n{last}")
    return proc.stdout
