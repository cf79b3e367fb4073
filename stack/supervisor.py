"""The local stack: Kafka (KRaft), Redis, Prometheus, Alertmanager and the alert receiver.

One module runs the services for the README, the tests and CI, without Docker. Each
service is a plain child process started in its own session, tracked by a pid file
under the stack root, so :meth:`Stack.down` stops exactly the processes that
:meth:`Stack.up` started and nothing else. Kafka runs from jars resolved once with Maven
(:mod:`stack.install`), the other services are Debian binaries; their config files
come from :mod:`stack.files`, where the stack lives and listens from :mod:`stack.config`
(its root folder's layout is described there), and what is known of each service
(log, URL, probe) from :mod:`stack.services`.

Examples
--------
>>> stack = Stack(StackConfig(root="/tmp/streamlearn-doc-stack"))
>>> stack.config.kafka_bootstrap
'127.0.0.1:9092'
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Literal

import psutil

from streamlearn.stack.config import (
    ALL_SERVICES,
    CORE_SERVICES,
    ServiceName,
    ServiceStatus,
    StackConfig,
    default_root,
)
from streamlearn.stack.files import (
    alertmanager_stack_config,
    kafka_log4j2_config,
    kafka_server_properties,
    prometheus_config,
    write_scrape_target,
)
from streamlearn.stack.install import (
    REPO_ROOT,
    StackError,
    default_jar_cache,
    ensure_kafka_jars,
    jars_resolved,
    kafka_version,
)
from streamlearn.stack.kafka_cluster import KafkaCluster
from streamlearn.stack.redis_cluster import RedisClusterNodes
from streamlearn.stack.services import (
    Record,
    Spec,
    check_binaries,
    http_ok,
    log_path,
    port_open,
    probe,
    read_record,
    run_checked,
    service_url,
    stop_processes,
    tail,
    terminate,
    write_record,
)

__all__ = ["Stack"]

_POLL = 0.2


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
        check_binaries(order)
        cfg = self.config
        (cfg.root / "run").mkdir(parents=True, exist_ok=True)
        (cfg.root / "stack.json").write_text(cfg.model_dump_json(indent=2) + "\n")
        jars = self._ensure_jars() if "kafka" in wanted else None
        cluster = self._cluster() if jars and cfg.kafka_brokers > 1 else None
        if cluster is not None and jars:  # several nodes: stack.kafka_cluster
            order.remove("kafka")
            cluster.launch(jars)
        specs: list[tuple[Spec, bool]] = []
        # Quick services first, so they start while Kafka formats its storage.
        for name in sorted(order, key=lambda s: s == "kafka"):
            spec = self._prepare(name, alertmanager_on="alertmanager" in wanted)
            started = self._launch(spec)
            specs.append((spec, started))
        for spec, started in sorted(specs, key=lambda item: ALL_SERVICES.index(item[0].name)):
            self._wait_ready(spec, started)
        if cluster is not None:
            cluster.wait_ready()
        if cfg.redis_cluster:
            RedisClusterNodes(cfg, reporter=self._report).up()

    def down(self) -> list[str]:
        """Stop the processes this root's pid files name: SIGTERM, then SIGKILL after a timeout.

        A pid whose process is gone or is no longer the command we started is only forgotten.

        Returns
        -------
        list of str
            Names of the services that were stopped.
        """
        victims: list[tuple[str, psutil.Process]] = []
        nodes = self._cluster().down()
        for name in reversed(ALL_SERVICES):
            proc = terminate(name, self._record(name), self._report)
            if proc is not None:
                victims.append((name, proc))
            self._pidfile(name).unlink(missing_ok=True)
        stop_processes(victims, self.config.stop_timeout, self._report)
        for _, proc in victims:
            child = self._children.pop(proc.pid, None)
            if child is not None:
                child.poll()
        redis_nodes = RedisClusterNodes(self.config, reporter=self._report).down()
        return [name for name, _ in victims] + nodes + (["redis-cluster"] if redis_nodes else [])

    def status(self) -> list[ServiceStatus]:
        """Return one :class:`ServiceStatus` per known service (per node of a cluster)."""
        rows = []
        for name in ALL_SERVICES:
            if name == "kafka" and self.config.kafka_brokers > 1:
                rows.extend(self._cluster().status())
                continue
            record = self._record(name)
            proc = record.process() if record else None
            state: Literal["up", "starting", "down"] = "down"
            if proc is not None:
                state = "up" if probe(self.config, name)() else "starting"
            rows.append(
                ServiceStatus(
                    service=name,
                    pid=proc.pid if proc else None,
                    port=self.config.ports(name)[0],
                    state=state,
                    url=service_url(self.config, name),
                    log=log_path(self.config, name),
                )
            )
        return rows

    def reload_prometheus(self) -> bool:
        """Ask our running Prometheus to reload its config and rule files; False if none."""
        if not self._is_ours("prometheus"):
            return False
        self._report("prometheus: reloading its rules")
        return http_ok(self.config.host, self.config.prometheus_port, "/-/reload", method="POST")

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

    def _cluster(self) -> KafkaCluster:
        return KafkaCluster(self.config, self._report)

    def _pidfile(self, name: str) -> Path:
        return self.config.root / "run" / f"{name}.json"

    def _record(self, name: str) -> Record | None:
        return read_record(self._pidfile(name))

    def _ensure_jars(self) -> Path:
        if self.config.kafka_jars is not None:
            return self.config.kafka_jars
        cache = default_jar_cache(kafka_version())
        if not jars_resolved(cache):
            self._report("kafka: resolving jars with Maven (first run only)")
        return ensure_kafka_jars(cache)

    def _prepare(self, name: ServiceName, *, alertmanager_on: bool) -> Spec:
        """Write the service's config files and return how to run it (no process started)."""
        cfg, log = self.config, log_path(self.config, name)
        log.parent.mkdir(parents=True, exist_ok=True)
        folder = cfg.root / name
        console = folder / "console.log"
        argv: tuple[str, ...]
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
            return Spec(name, argv, "kafka.Kafka", log, console, probe(self.config, name))
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
            return Spec(name, argv, "redis-server", log, console, probe(self.config, name))
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
                http_ok(cfg.host, cfg.prometheus_port, "/-/reload", method="POST")
            argv = (
                "prometheus",
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={cfg.host}:{cfg.prometheus_port}",
                "--web.enable-lifecycle",
            )
            return Spec(name, argv, "prometheus", log, log, probe(self.config, name))
        if name == "alerts":
            argv = (
                sys.executable,
                "-m",
                "streamlearn.cli",
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
            return Spec(name, argv, "alerts serve", log, log, probe(self.config, name), env)
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
        return Spec(name, argv, "alertmanager", log, log, probe(self.config, name))

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

    def _launch(self, spec: Spec) -> bool:
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
            if port_open(self.config.host, port):
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
        write_record(self._pidfile(spec.name), child.pid, spec.marker, ports, spec.argv)
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
            out = run_checked("kafka", [*base, "random-uuid"])
            id_file.write_text(out.strip().splitlines()[-1].strip() + "\n")
        self._report("kafka: formatting storage")
        run_checked(
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

    def _wait_ready(self, spec: Spec, started: bool) -> None:
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

    def _alive(self, record: Record) -> bool:
        """Whether the service process lives; a child we just forked may not have exec'd yet."""
        child = self._children.get(record.pid)
        if child is not None:
            return child.poll() is None
        return record.process() is not None

    def _fail(self, spec: Spec, why: str) -> None:
        logs = dict.fromkeys([spec.log, spec.console])
        parts = [f"{spec.name} {why}", f"command: {' '.join(spec.argv)}"]
        for log in logs:
            parts.append(f"log: {log}\n{tail(log)}")
        raise StackError("\n".join(parts))
