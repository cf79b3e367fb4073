"""The local stack: Kafka (KRaft), Redis, Prometheus, Alertmanager and the alert receiver.

One module runs the services for the README, the tests and CI, without Docker. Each
service is a plain child process started in its own session, tracked by a pid file
under the stack root, so :meth:`Stack.down` stops exactly the processes that
:meth:`Stack.up` started and nothing else. Kafka runs from jars resolved once with Maven
(:mod:`stream.stack_install`), the other services are Debian binaries; their config files
come from :mod:`stream.stack_files`.

Layout of the root folder (``.stack/`` by default)::

    stack.json                  effective StackConfig of the last ``up``
    run/<service>.json          pid, start time and command of each started process
    kafka/                      server.properties, log4j2.yaml, cluster_id, data/, logs/
    redis/                      redis.log, data files
    prometheus/                 prometheus.yml, targets/*.json (file_sd), data/, prometheus.log
    alertmanager/               alertmanager.yml (routes to the receiver), data/, alertmanager.log
    alerts/                     alerts.jsonl (`streamlearn alerts list`), alerts.log

Examples
--------
>>> config = StackConfig(root="/tmp/demo-stack", kafka_port=29092)
>>> config.kafka_bootstrap
'127.0.0.1:29092'
>>> config.redis_url
'redis://127.0.0.1:6390/0'
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import BaseModel, ConfigDict, Field

from stream.stack_files import (
    alertmanager_stack_config,
    kafka_log4j2_config,
    kafka_server_properties,
    prometheus_config,
    write_scrape_target,
)
from stream.stack_install import (
    REPO_ROOT,
    StackError,
    default_jar_cache,
    ensure_kafka_jars,
    jars_resolved,
    kafka_version,
)

__all__ = [
    "ALL_SERVICES",
    "CORE_SERVICES",
    "ServiceStatus",
    "Stack",
    "StackConfig",
    "default_root",
    "fast_stack_config",
    "free_ports",
    "private_stack_config",
]

ServiceName = Literal["kafka", "redis", "prometheus", "alertmanager", "alerts"]

#: Services started by a plain ``up``, in start order.
CORE_SERVICES: tuple[ServiceName, ...] = ("kafka", "redis", "prometheus")
#: Every service the stack knows, in start order; ``alerts`` (``streamlearn alerts serve``,
#: where Alertmanager sends every notification) comes with ``alertmanager``.
ALL_SERVICES: tuple[ServiceName, ...] = (*CORE_SERVICES, "alertmanager", "alerts")
_POLL = 0.2


def default_root() -> Path:
    """Return the default stack root: ``.stack/`` in the repository checkout, else in the cwd.

    Returns
    -------
    Path
        Absolute path of the root folder (not created).
    """
    base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()
    return (base / ".stack").resolve()


class StackConfig(BaseModel):
    """Where the local stack lives and how its services listen.

    Parameters
    ----------
    root
        Folder holding configs, data, logs and pid files.
    host
        Address every service binds to.
    kafka_port, kafka_controller_port
        Broker (PLAINTEXT) and KRaft controller listener ports.
    redis_port, prometheus_port, alertmanager_port
        Listener ports of the other services.
    alerts_port
        Port of the alert receiver (``streamlearn alerts serve``) that Alertmanager
        notifies.
    redis_appendonly
        Redis AOF persistence (on for the demo, off for tests).
    scrape_interval, evaluation_interval
        Prometheus global intervals, as Prometheus durations (``"5s"``).
    scrape_targets
        Static ``host:port`` worker targets of the ``streamlearn`` scrape job.
    kafka_heap
        JVM maximum heap of the broker (``-Xmx``).
    kafka_jars
        Folder of Kafka jars; ``None`` resolves them into :func:`default_jar_cache`.
    rules_dir
        Folder of Prometheus alert rule files (``*.yml``), loaded when present.
    alertmanager_config
        Alertmanager config file; by default (None) one is generated under the root
        that routes every alert to the stack's alert receiver.
    startup_timeout, stop_timeout
        Seconds to wait for a service to become ready, and to exit after SIGTERM.

    Examples
    --------
    >>> StackConfig(root="/tmp/s").prometheus_url
    'http://127.0.0.1:9090'
    >>> StackConfig(root="/tmp/s").alertmanager_url
    'http://127.0.0.1:9094'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: Path = Field(default_factory=default_root)
    host: str = "127.0.0.1"
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    redis_port: int = Field(6390, ge=1, le=65535)
    prometheus_port: int = Field(9090, ge=1, le=65535)
    alertmanager_port: int = Field(9094, ge=1, le=65535)
    alerts_port: int = Field(9095, ge=1, le=65535)
    redis_appendonly: bool = True
    scrape_interval: str = Field("5s", pattern=r"^\d+(ms|s|m|h)$")
    evaluation_interval: str = Field("5s", pattern=r"^\d+(ms|s|m|h)$")
    scrape_targets: tuple[str, ...] = ()
    kafka_sasl_port: int | None = Field(
        None, ge=1, le=65535, description="Also listen with SASL (PLAIN and SCRAM-SHA-256)."
    )
    kafka_sasl_users: tuple[tuple[str, str], ...] = Field(
        (), description="(user, password) pairs the SASL listener accepts; local stacks only."
    )
    kafka_heap: str = Field("512m", pattern=r"^\d+[kmgKMG]$")
    kafka_jars: Path | None = None
    rules_dir: Path = REPO_ROOT / "deploy" / "prometheus" / "rules"
    alertmanager_config: Path | None = None
    startup_timeout: float = Field(120.0, gt=0)
    stop_timeout: float = Field(20.0, gt=0)

    @property
    def kafka_bootstrap(self) -> str:
        """Bootstrap servers string of the broker."""
        return f"{self.host}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        """Redis URL (database 0)."""
        return f"redis://{self.host}:{self.redis_port}/0"

    @property
    def prometheus_url(self) -> str:
        """Base URL of the Prometheus HTTP API and UI."""
        return f"http://{self.host}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        """Base URL of the Alertmanager HTTP API and UI."""
        return f"http://{self.host}:{self.alertmanager_port}"

    @property
    def alerts_url(self) -> str:
        """Where Alertmanager posts its notifications (the receiver's ``/alerts``)."""
        return f"http://{self.host}:{self.alerts_port}/alerts"

    @property
    def alerts_log(self) -> Path:
        """The receiver's log of alerts (``streamlearn alerts list --log``)."""
        return self.root / "alerts" / "alerts.jsonl"

    @property
    def targets_dir(self) -> Path:
        """Folder of Prometheus ``file_sd`` target files."""
        return self.root / "prometheus" / "targets"

    def ports(self, service: ServiceName) -> tuple[int, ...]:
        """Return the ports a service listens on (the first is the client port)."""
        return {
            "kafka": (self.kafka_port, self.kafka_controller_port)
            + ((self.kafka_sasl_port,) if self.kafka_sasl_port else ()),
            "redis": (self.redis_port,),
            "prometheus": (self.prometheus_port,),
            "alertmanager": (self.alertmanager_port,),
            "alerts": (self.alerts_port,),
        }[service]


@dataclass(frozen=True)
class ServiceStatus:
    """One row of :meth:`Stack.status`.

    ``state`` is ``"up"`` (our process, answering), ``"starting"`` (our process, not
    answering yet) or ``"down"`` (no process of ours).
    """

    service: str
    pid: int | None
    port: int
    state: Literal["up", "starting", "down"]
    url: str
    log: Path


def free_ports(count: int, *, low: int = 20000, high: int = 32000) -> list[int]:
    """Pick ``count`` distinct free TCP ports on 127.0.0.1, below the ephemeral range.

    For stacks that must not collide with another one (tests, benchmarks).

    >>> ports = free_ports(3)
    >>> len(set(ports)), all(20000 <= p <= 32000 for p in ports)
    (3, True)
    """
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(low, high)  # noqa: S311 - not a secret
        if port in ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def private_stack_config(root: Path, **overrides: Any) -> StackConfig:
    """A stack under ``root`` on free ports, without Redis persistence: it collides with nothing.

    >>> config = private_stack_config(Path("/tmp/private"), scrape_interval="1s")
    >>> config.redis_appendonly, config.scrape_interval, config.kafka_port != 9092
    (False, '1s', True)
    """
    kafka, controller, redis_port, prometheus, alertmanager, alerts = free_ports(6)
    settings: dict[str, Any] = {
        "root": root,
        "kafka_port": kafka,
        "kafka_controller_port": controller,
        "redis_port": redis_port,
        "prometheus_port": prometheus,
        "alertmanager_port": alertmanager,
        "alerts_port": alerts,
        "redis_appendonly": False,
        "startup_timeout": 180.0,
    }
    return StackConfig(**{**settings, **overrides})


def fast_stack_config(root: Path) -> StackConfig:
    """:func:`private_stack_config` with 1 s Prometheus intervals: the tests' and soaks' stack.

    >>> fast_stack_config(Path("/tmp/fast")).evaluation_interval
    '1s'
    """
    return private_stack_config(root, scrape_interval="1s", evaluation_interval="1s")


# ------------------------------------------------------------------------ processes


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _http_ok(host: str, port: int, path: str, method: str = "GET", timeout: float = 2.0) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class _Record:
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


@dataclass(frozen=True)
class _Spec:
    """How to run and probe one service."""

    name: ServiceName
    argv: tuple[str, ...]
    marker: str
    log: Path
    console: Path
    ready: Callable[[], bool]
    env: Mapping[str, str] | None = None


class Stack:
    """Start, reuse, inspect and stop the local stack described by a :class:`StackConfig`.

    Parameters
    ----------
    config
        The stack configuration; default :class:`StackConfig` with its defaults.
    reporter
        Called with short progress messages (``"kafka: starting"``), e.g. for a spinner.

    Examples
    --------
    >>> stack = Stack(StackConfig(root="/tmp/streamlearn-doc-stack"))
    >>> [s.state for s in stack.status()]
    ['down', 'down', 'down', 'down', 'down']
    """

    def __init__(
        self, config: StackConfig | None = None, *, reporter: Callable[[str], None] | None = None
    ) -> None:
        self.config = config or StackConfig()
        self._report = reporter or (lambda _msg: None)
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_root(
        cls, root: Path | None = None, *, reporter: Callable[[str], None] | None = None
    ) -> Stack:
        """Build a Stack from the ``stack.json`` saved by the last ``up`` under ``root``."""
        root = (root or default_root()).resolve()
        saved = root / "stack.json"
        if saved.is_file():
            config = StackConfig.model_validate_json(saved.read_text())
        else:
            config = StackConfig(root=root)
        return cls(config, reporter=reporter)

    # ------------------------------------------------------------------ public API

    def up(
        self, *, alertmanager: bool = False, services: Collection[ServiceName] | None = None
    ) -> None:
        """Start the services that are not running yet and wait until all are ready.

        A service already started from this root and answering is reused as it is.

        Parameters
        ----------
        alertmanager
            Also start Alertmanager (and point Prometheus at it) and the alert
            receiver it notifies.
        services
            Subset of :data:`ALL_SERVICES`; default :data:`CORE_SERVICES`.

        Raises
        ------
        StackError
            Naming the service that failed, its command, its log and the log's last lines.
        """
        wanted = set(services or CORE_SERVICES) | ({"alertmanager"} if alertmanager else set())
        if "alertmanager" in wanted:
            wanted.add("alerts")
        unknown = wanted - set(ALL_SERVICES)
        if unknown:
            raise StackError(f"unknown services {sorted(unknown)}; known: {list(ALL_SERVICES)}")
        order = [s for s in ALL_SERVICES if s in wanted]
        self._check_binaries(order)
        cfg = self.config
        (cfg.root / "run").mkdir(parents=True, exist_ok=True)
        (cfg.root / "stack.json").write_text(cfg.model_dump_json(indent=2) + "\n")
        if "kafka" in wanted:
            self._ensure_jars()
        specs: list[tuple[_Spec, bool]] = []
        # Quick services first, so they start while Kafka formats its storage.
        for name in sorted(order, key=lambda s: s == "kafka"):
            spec = self._prepare(name, alertmanager_on="alertmanager" in wanted)
            started = self._launch(spec)
            specs.append((spec, started))
        for spec, started in sorted(specs, key=lambda item: ALL_SERVICES.index(item[0].name)):
            self._wait_ready(spec, started)

    def down(self) -> list[str]:
        """Stop the processes this root's pid files name: SIGTERM, then SIGKILL after a timeout.

        A pid whose process is gone or is no longer the command we started is only forgotten.

        Returns
        -------
        list of str
            Names of the services that were stopped.
        """
        victims: list[tuple[str, psutil.Process]] = []
        for name in reversed(ALL_SERVICES):
            record = self._record(name)
            proc = record.process() if record else None
            if proc is not None:
                self._report(f"{name}: stopping pid {proc.pid}")
                try:
                    proc.send_signal(signal.SIGTERM)
                    victims.append((name, proc))
                except psutil.NoSuchProcess:
                    pass
            self._pidfile(name).unlink(missing_ok=True)
        deadline = time.monotonic() + self.config.stop_timeout
        for name, proc in victims:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except psutil.TimeoutExpired:
                self._report(f"{name}: did not exit after SIGTERM, killing")
                proc.kill()
                proc.wait(timeout=10)
            except psutil.NoSuchProcess:
                pass
            child = self._children.pop(proc.pid, None)
            if child is not None:
                child.poll()
        return [name for name, _ in victims]

    def status(self) -> list[ServiceStatus]:
        """Return one :class:`ServiceStatus` per known service."""
        rows = []
        for name in ALL_SERVICES:
            record = self._record(name)
            proc = record.process() if record else None
            state: Literal["up", "starting", "down"] = "down"
            if proc is not None:
                state = "up" if self._probe(name)() else "starting"
            rows.append(
                ServiceStatus(
                    service=name,
                    pid=proc.pid if proc else None,
                    port=self.config.ports(name)[0],
                    state=state,
                    url=self._url(name),
                    log=self._log_path(name),
                )
            )
        return rows

    def reload_prometheus(self) -> bool:
        """Ask our running Prometheus to reload its config and rule files; False if none."""
        if not self._is_ours("prometheus"):
            return False
        self._report("prometheus: reloading its rules")
        return _http_ok(self.config.host, self.config.prometheus_port, "/-/reload", method="POST")

    def pids(self) -> dict[str, int]:
        """Return the pid of each running service of ours."""
        return {s.service: s.pid for s in self.status() if s.pid is not None}

    def add_scrape_target(
        self, name: str, address: str, labels: Mapping[str, str] | None = None
    ) -> Path:
        """Register ``host:port`` with the ``streamlearn`` job (:func:`write_scrape_target`)."""
        return write_scrape_target(self.config.targets_dir, name, address, labels)

    def remove_scrape_target(self, name: str) -> None:
        """Forget a target registered with :meth:`add_scrape_target`."""
        (self.config.targets_dir / f"{name}.json").unlink(missing_ok=True)

    # ---------------------------------------------------------------- internals

    def _pidfile(self, name: str) -> Path:
        return self.config.root / "run" / f"{name}.json"

    def _record(self, name: str) -> _Record | None:
        try:
            raw = json.loads(self._pidfile(name).read_text())
            return _Record(
                pid=int(raw["pid"]),
                create_time=float(raw["create_time"]),
                marker=str(raw["marker"]),
                ports=tuple(raw["ports"]),
                argv=tuple(raw["argv"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _log_path(self, name: ServiceName) -> Path:
        root = self.config.root
        return {
            "kafka": root / "kafka" / "logs" / "server.log",
            "redis": root / "redis" / "redis.log",
            "prometheus": root / "prometheus" / "prometheus.log",
            "alertmanager": root / "alertmanager" / "alertmanager.log",
            "alerts": root / "alerts" / "alerts.log",
        }[name]

    def _url(self, name: ServiceName) -> str:
        cfg = self.config
        return {
            "kafka": cfg.kafka_bootstrap,
            "redis": cfg.redis_url,
            "prometheus": cfg.prometheus_url,
            "alertmanager": cfg.alertmanager_url,
            "alerts": cfg.alerts_url,
        }[name]

    def _check_binaries(self, services: Iterable[ServiceName]) -> None:
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

    def _ensure_jars(self) -> Path:
        if self.config.kafka_jars is not None:
            return self.config.kafka_jars
        cache = default_jar_cache(kafka_version())
        if not jars_resolved(cache):
            self._report("kafka: resolving jars with Maven (first run only)")
        return ensure_kafka_jars(cache)

    def _probe(self, name: ServiceName) -> Callable[[], bool]:
        cfg = self.config
        if name == "kafka":
            return self._kafka_ready
        if name == "redis":
            return self._redis_ready
        if name == "alerts":
            return lambda: _http_ok(cfg.host, cfg.alerts_port, "/healthz")
        port = cfg.prometheus_port if name == "prometheus" else cfg.alertmanager_port
        return lambda: _http_ok(cfg.host, port, "/-/ready")

    def _redis_ready(self) -> bool:
        import redis

        client = redis.Redis(
            host=self.config.host,
            port=self.config.redis_port,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _kafka_ready(self) -> bool:
        if not _port_open(self.config.host, self.config.kafka_port):
            return False
        try:
            if "Kafka Server started" not in self._log_path("kafka").read_text(errors="replace"):
                return False
        except OSError:
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.config.kafka_bootstrap,
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

    def _prepare(self, name: ServiceName, *, alertmanager_on: bool) -> _Spec:
        """Write the service's config files and return how to run it (no process started)."""
        cfg, log = self.config, self._log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        folder = cfg.root / name
        console = folder / "console.log"
        if name == "kafka":
            props = folder / "server.properties"
            props.write_text(kafka_server_properties(cfg))
            log4j = folder / "log4j2.yaml"
            log4j.write_text(kafka_log4j2_config(log))
            jars = cfg.kafka_jars or default_jar_cache(kafka_version())
            argv = (
                "java",
                f"-Xmx{cfg.kafka_heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                f"{jars}/*",
                "kafka.Kafka",
                str(props),
            )
            return _Spec(name, argv, "kafka.Kafka", log, console, self._probe(name))
        if name == "redis":
            argv = (
                "redis-server",
                "--bind",
                cfg.host,
                "--port",
                str(cfg.redis_port),
                "--appendonly",
                "yes" if cfg.redis_appendonly else "no",
                "--save",
                "",
                "--dir",
                str(folder),
                "--daemonize",
                "no",
                "--logfile",
                str(log),
            )
            return _Spec(name, argv, "redis-server", log, console, self._probe(name))
        if name == "prometheus":
            cfg.targets_dir.mkdir(parents=True, exist_ok=True)
            for i, address in enumerate(cfg.scrape_targets):
                self.add_scrape_target(f"config-{i}", address)
            running = self._record("alertmanager")
            am = alertmanager_on or bool(running and running.process())
            text = prometheus_config(cfg, alertmanager=am)
            changed = self._write(folder / "prometheus.yml", text)
            if changed and self._is_ours(name):
                self._report("prometheus: reloading changed config")
                _http_ok(cfg.host, cfg.prometheus_port, "/-/reload", method="POST")
            argv = (
                "prometheus",
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={cfg.host}:{cfg.prometheus_port}",
                "--web.enable-lifecycle",
            )
            return _Spec(name, argv, "prometheus", log, log, self._probe(name))
        if name == "alerts":
            argv = (
                sys.executable,
                "-m",
                "stream.cli",
                "alerts",
                "serve",
                "--host",
                cfg.host,
                "--port",
                str(cfg.alerts_port),
                "--log",
                str(cfg.alerts_log),
            )
            # The receiver runs this checkout's code, whatever the environment installed.
            path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
            env = {**os.environ, "PYTHONPATH": path}
            return _Spec(name, argv, "alerts serve", log, log, self._probe(name), env)
        config_file = cfg.alertmanager_config
        if config_file is None:
            config_file = folder / "alertmanager.yml"
            self._write(config_file, alertmanager_stack_config(cfg))
        elif not config_file.is_file():
            raise StackError(f"alertmanager: config file {config_file} does not exist")
        argv = (
            "prometheus-alertmanager",
            f"--config.file={config_file}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address={cfg.host}:{cfg.alertmanager_port}",
            "--cluster.listen-address=",
        )
        return _Spec(name, argv, "alertmanager", log, log, self._probe(name))

    @staticmethod
    def _write(path: Path, text: str) -> bool:
        """Write ``text`` unless the file already holds it; return whether it changed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.read_text() == text:
            return False
        path.write_text(text)
        return True

    def _is_ours(self, name: ServiceName) -> bool:
        record = self._record(name)
        return bool(record and record.process())

    def _launch(self, spec: _Spec) -> bool:
        """Start the service unless our process already runs; return True when started."""
        ports = self.config.ports(spec.name)
        record = self._record(spec.name)
        if record is not None and record.process() is not None:
            if record.ports != ports:
                raise StackError(
                    f"{spec.name} already runs from {self.config.root} on ports {record.ports}, "
                    f"not {ports}: run `stack down` first"
                )
            self._report(f"{spec.name}: reusing pid {record.pid}")
            return False
        self._pidfile(spec.name).unlink(missing_ok=True)
        for port in ports:
            if _port_open(self.config.host, port):
                raise StackError(
                    f"{spec.name}: port {self.config.host}:{port} is already in use by a process "
                    f"not started from {self.config.root}; stop it or choose another port"
                )
        if spec.name == "kafka":
            self._format_kafka()
        self._report(f"{spec.name}: starting")
        spec.console.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.console, "ab") as out:
            child = subprocess.Popen(  # noqa: S603
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.config.root / spec.name,
                env=spec.env,
                start_new_session=True,
            )
        self._children[child.pid] = child
        try:
            create_time = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = time.time()
        self._pidfile(spec.name).write_text(
            json.dumps(
                {
                    "pid": child.pid,
                    "create_time": create_time,
                    "marker": spec.marker,
                    "ports": list(ports),
                    "argv": list(spec.argv),
                },
                indent=2,
            )
            + "\n"
        )
        return True

    def _format_kafka(self) -> None:
        """Format the KRaft storage once; the cluster id is kept in ``kafka/cluster_id``."""
        folder = self.config.root / "kafka"
        if (folder / "data" / "meta.properties").is_file():
            return
        jars = self.config.kafka_jars or default_jar_cache(kafka_version())
        base = ["java", "-cp", f"{jars}/*", "kafka.tools.StorageTool"]
        id_file = folder / "cluster_id"
        if not id_file.is_file():
            out = self._run_checked("kafka", [*base, "random-uuid"])
            id_file.write_text(out.strip().splitlines()[-1].strip() + "\n")
        self._report("kafka: formatting storage")
        self._run_checked(
            "kafka",
            [
                *base,
                "format",
                "-t",
                id_file.read_text().strip(),
                "-c",
                str(folder / "server.properties"),
                *(
                    arg
                    for name, password in self.config.kafka_sasl_users
                    for arg in ("--add-scram", f"SCRAM-SHA-256=[name={name},password={password}]")
                ),
            ],
        )

    @staticmethod
    def _run_checked(name: str, cmd: list[str]) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
            raise StackError(f"{name} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        return proc.stdout

    def _wait_ready(self, spec: _Spec, started: bool) -> None:
        self._report(f"{spec.name}: waiting until ready")
        deadline = time.monotonic() + self.config.startup_timeout
        record = self._record(spec.name)
        while time.monotonic() < deadline:
            if spec.ready():
                self._report(f"{spec.name}: ready")
                return
            if record is None or not self._alive(record):
                self._pidfile(spec.name).unlink(missing_ok=True)
                self._fail(spec, "exited before it was ready")
            time.sleep(_POLL)
        if started and record is not None and (proc := record.process()) is not None:
            proc.kill()
            self._pidfile(spec.name).unlink(missing_ok=True)
        self._fail(spec, f"not ready after {self.config.startup_timeout:.0f}s")

    def _alive(self, record: _Record) -> bool:
        """Whether the service process lives; a child we just forked may not have exec'd yet."""
        child = self._children.get(record.pid)
        if child is not None:
            return child.poll() is None
        return record.process() is not None

    def _fail(self, spec: _Spec, why: str) -> None:
        logs = dict.fromkeys([spec.log, spec.console])
        parts = [f"{spec.name} {why}", f"command: {' '.join(spec.argv)}"]
        for log in logs:
            parts.append(f"log: {log}\n{_tail(log)}")
        raise StackError("\n".join(parts))
