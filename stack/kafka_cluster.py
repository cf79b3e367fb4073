"""A local Kafka cluster of several KRaft nodes: ``streamlearn stack up --kafka-brokers 3``.

Every node is a combined broker and controller, and the controllers form one quorum
of all the nodes (``controller.quorum.voters``), so with three nodes the loss of any
one (the active controller included) leaves a quorum and brokers for every partition:
three processes, and no controller whose loss stops the cluster, where three brokers
and one controller would take four JVMs and still fall with the controller.

Topics streamlearn creates on it get three replicas and ``min.insync.replicas=2``
(:func:`stream.topics.replication_for`), and so do the brokers' internal topics
(consumer offsets, transaction state) and topics created without a replication factor.

Node ``n`` lives under ``<root>/kafka-<n>/`` (``server.properties``, ``log4j2.yaml``,
``data/``, ``logs/server.log``), its pid file is ``run/kafka-<n>.json``, and every node
is formatted with the cluster id kept in ``<root>/kafka-1/cluster_id``.
:class:`stack.supervisor.Stack` starts, shows and stops the nodes with the other
services when ``StackConfig.kafka_brokers`` is above one; :class:`KafkaCluster` also
kills one node (:meth:`KafkaCluster.kill`), for tests of a broker lost mid-stream.

Examples
--------
>>> from streamlearn.stack.config import StackConfig
>>> config = StackConfig(root="/tmp/c", kafka_brokers=3)
>>> [(n.name, n.port, n.controller_port) for n in cluster_nodes(config)]
[('kafka-1', 9092, 9093), ('kafka-2', 9192, 9193), ('kafka-3', 9292, 9293)]
>>> props = node_properties(config, cluster_nodes(config)[1])
>>> props["node.id"], props["controller.quorum.voters"]
('2', '1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293')
>>> props["offsets.topic.replication.factor"], props["min.insync.replicas"]
('3', '2')
"""

from __future__ import annotations

import base64
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from streamlearn.stack.config import ServiceStatus, StackConfig, free_ports, private_stack_config
from streamlearn.stack.files import kafka_log4j2_config, kafka_server_properties
from streamlearn.stack.install import StackError
from streamlearn.stack.services import (
    Record,
    port_open,
    read_record,
    stop_processes,
    tail,
    terminate,
    write_record,
)
from streamlearn.stream.topics import replication_for

__all__ = [
    "KafkaCluster",
    "KafkaNode",
    "cluster_nodes",
    "cluster_stack_config",
    "new_cluster_id",
    "node_properties",
]

_POLL = 0.2


@dataclass(frozen=True)
class KafkaNode:
    """One node of the cluster: its id, ports and folder."""

    node_id: int
    port: int
    controller_port: int
    folder: Path

    @property
    def name(self) -> str:
        """``kafka-<id>``: the service name in ``stack status`` and the pid file."""
        return f"kafka-{self.node_id}"

    @property
    def log(self) -> Path:
        """The node's server log."""
        return self.folder / "logs" / "server.log"

    @property
    def properties(self) -> Path:
        """The node's ``server.properties`` (also what marks its process)."""
        return self.folder / "server.properties"


def cluster_nodes(config: StackConfig) -> list[KafkaNode]:
    """The nodes of ``config``'s cluster, node 1 first (:attr:`StackConfig.kafka_nodes`)."""
    return [
        KafkaNode(i, port, controller, config.root / f"kafka-{i}")
        for i, (port, controller) in enumerate(config.kafka_nodes, start=1)
    ]


def node_properties(config: StackConfig, node: KafkaNode) -> dict[str, str]:
    """``server.properties`` of one node: the single node's, with its id, ports, voters
    and replication of the internal topics following the cluster's size."""
    h = config.host
    base = kafka_server_properties(config.model_copy(update={"kafka_sasl_port": None}))
    props = dict(line.split("=", 1) for line in base.splitlines() if "=" in line)
    factor, topic_configs = replication_for(config.kafka_brokers)
    min_isr = topic_configs.get("min.insync.replicas", "1")
    voters = ",".join(f"{n.node_id}@{h}:{n.controller_port}" for n in cluster_nodes(config))
    props.update(
        {
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{h}:{node.port},CONTROLLER://{h}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{h}:{node.port}",
            "log.dirs": str(node.folder / "data"),
            "default.replication.factor": str(factor),
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": str(factor),
            "transaction.state.log.replication.factor": str(factor),
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": str(factor),
            "share.coordinator.state.topic.min.isr": min_isr,
            # A lost node leaves the ISRs (fenced) within seconds, not the default 9 s.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "6000",
        }
    )
    return props


def cluster_stack_config(root: Path, brokers: int = 3) -> StackConfig:
    """A stack config of ``brokers`` nodes under ``root`` on free ports (the tests' cluster).

    >>> config = cluster_stack_config(Path("/tmp/cluster"))
    >>> config.kafka_brokers, len(set(config.kafka_bootstrap.split(",")))
    (3, 3)
    """
    ports = free_ports(2 * (brokers - 1))
    nodes = tuple(zip(ports[::2], ports[1::2], strict=True))
    return private_stack_config(root, kafka_brokers=brokers, kafka_node_ports=nodes)


class KafkaCluster:
    """Start, inspect, kill and stop the Kafka nodes of a :class:`StackConfig`.

    Parameters
    ----------
    config
        The stack configuration; ``kafka_brokers`` nodes.
    reporter
        Called with short progress messages (``"kafka-2: starting"``).

    Examples
    --------
    >>> from streamlearn.stack.config import StackConfig
    >>> cluster = KafkaCluster(StackConfig(root="/tmp/streamlearn-doc-cluster", kafka_brokers=3))
    >>> [(row.service, row.state) for row in cluster.status()]
    [('kafka-1', 'down'), ('kafka-2', 'down'), ('kafka-3', 'down')]
    """

    def __init__(self, config: StackConfig, reporter: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.nodes = cluster_nodes(config)
        self._report = reporter or (lambda _msg: None)
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ public API

    def launch(self, jars: Path, heap: str | None = None) -> list[KafkaNode]:
        """Format and start the nodes not running yet (without waiting); the started ones.

        Raises
        ------
        StackError
            A node's port is taken by a process that is not ours, or formatting failed.
        """
        if self.config.kafka_sasl_port:
            raise StackError("kafka: the SASL listener is only offered with one broker")
        started = []
        for node in self.nodes:
            record = self._record(node)
            if record is not None and record.process() is not None:
                self._report(f"{node.name}: reusing pid {record.pid}")
                continue
            for port in (node.port, node.controller_port):
                if port_open(self.config.host, port):
                    raise StackError(
                        f"{node.name}: port {self.config.host}:{port} is already in use by a "
                        f"process not started from {self.config.root}; stop it or choose another"
                    )
            started.append(node)
        self._format(started, jars)  # all at once: a JVM each
        for node in started:
            self._start(node, jars, heap or self.config.kafka_heap)
        return started

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until every node has started and the cluster lists them all as brokers."""
        deadline = time.monotonic() + (timeout_s or self.config.startup_timeout)
        for node in self.nodes:
            self._report(f"{node.name}: waiting until ready")
            while not self._node_ready(node):
                record = self._record(node)
                if record is None or not self._alive(record):
                    self._fail(node, "exited before it was ready")
                if time.monotonic() > deadline:
                    self._fail(node, "not ready in time")
                time.sleep(_POLL)
        self._report("kafka: waiting for every broker to register")
        while len(self.brokers()) < len(self.nodes):
            if time.monotonic() > deadline:
                raise StackError(f"kafka: {len(self.brokers())} of {len(self.nodes)} brokers up")
            time.sleep(_POLL)
        self._report("kafka: ready")

    def brokers(self) -> list[int]:
        """The ids of the brokers the cluster lists now (empty when none answers)."""
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
            return []
        try:
            return sorted(int(b["broker_id"]) for b in admin.describe_cluster()["brokers"])
        except KafkaError:
            return []
        finally:
            admin.close()

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` (SIGKILL by default) to node ``node_id`` and wait for it; its pid."""
        node = self.nodes[node_id - 1]
        record = self._record(node)
        proc = record.process() if record else None
        if record is None or proc is None:
            raise StackError(f"{node.name} is not running")
        self._report(f"{node.name}: sending signal {sig} to pid {proc.pid}")
        proc.send_signal(sig)
        proc.wait(timeout=self.config.stop_timeout)
        child = self._children.pop(proc.pid, None)
        if child is not None:
            child.poll()
        self._pidfile(node).unlink(missing_ok=True)
        return record.pid

    def down(self) -> list[str]:
        """Stop every node of this root (whatever its size now): SIGTERM, then SIGKILL.

        Returns the names of the nodes stopped.
        """
        victims: list[tuple[str, psutil.Process]] = []
        for pidfile in sorted((self.config.root / "run").glob("kafka-*.json")):
            node_id = pidfile.stem.removeprefix("kafka-")
            record = read_record(pidfile) if node_id.isdigit() else None
            proc = terminate(pidfile.stem, record, self._report)
            if proc is not None:
                victims.append((pidfile.stem, proc))
            pidfile.unlink(missing_ok=True)
        stop_processes(victims, self.config.stop_timeout, self._report)
        for _, proc in victims:
            child = self._children.pop(proc.pid, None)
            if child is not None:
                child.poll()
        return [name for name, _ in victims]

    def status(self) -> list[ServiceStatus]:
        """One row per node: ``up`` (serving), ``starting`` or ``down``."""
        rows = []
        for node in self.nodes:
            record = self._record(node)
            proc = record.process() if record else None
            state: Literal["up", "starting", "down"] = "down"
            if proc is not None:
                state = "up" if self._node_ready(node) else "starting"
            rows.append(
                ServiceStatus(
                    service=node.name,
                    pid=proc.pid if proc else None,
                    port=node.port,
                    state=state,
                    url=f"{self.config.host}:{node.port}",
                    log=node.log,
                )
            )
        return rows

    # ---------------------------------------------------------------- internals

    def _pidfile(self, node: KafkaNode) -> Path:
        return self.config.root / "run" / f"{node.name}.json"

    def _record(self, node: KafkaNode) -> Record | None:
        return read_record(self._pidfile(node))

    def _node_ready(self, node: KafkaNode) -> bool:
        if not port_open(self.config.host, node.port):
            return False
        try:
            return "Kafka Server started" in node.log.read_text(errors="replace")
        except OSError:
            return False

    def _alive(self, record: Record) -> bool:
        child = self._children.get(record.pid)
        if child is not None:
            return child.poll() is None
        return record.process() is not None

    def _start(self, node: KafkaNode, jars: Path, heap: str) -> None:
        log4j = node.folder / "log4j2.yaml"
        log4j.write_text(kafka_log4j2_config(node.log))
        node.log.parent.mkdir(parents=True, exist_ok=True)
        argv = (
            "java",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            str(node.properties),
        )
        self._report(f"{node.name}: starting")
        (self.config.root / "run").mkdir(parents=True, exist_ok=True)
        with open(node.folder / "console.log", "ab") as out:
            child = subprocess.Popen(  # noqa: S603
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=node.folder,
                start_new_session=True,
            )
        self._children[child.pid] = child
        ports = (node.port, node.controller_port)
        write_record(self._pidfile(node), child.pid, str(node.properties), ports, argv)

    def _format(self, nodes: list[KafkaNode], jars: Path) -> None:
        """Write each node's properties and format the storage of those not formatted yet,
        in parallel, with the cluster id every node shares."""
        id_file = self.nodes[0].folder / "cluster_id"
        id_file.parent.mkdir(parents=True, exist_ok=True)
        if not id_file.is_file():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        running: list[tuple[KafkaNode, subprocess.Popen[str], list[str]]] = []
        for node in nodes:
            node.folder.mkdir(parents=True, exist_ok=True)
            props = node_properties(self.config, node)
            node.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            if (node.folder / "data" / "meta.properties").is_file():
                continue
            self._report(f"{node.name}: formatting storage")
            cmd = ["java", "-cp", f"{jars}/*", "kafka.tools.StorageTool", "format"]
            cmd += ["-t", cluster_id, "-c", str(node.properties)]
            proc = subprocess.Popen(  # noqa: S603
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            running.append((node, proc, cmd))
        for node, proc, cmd in running:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                last = "\n".join(out.strip().splitlines()[-25:])
                raise StackError(f"{node.name}: formatting failed: {' '.join(cmd)}\n{last}")

    def _fail(self, node: KafkaNode, why: str) -> None:
        parts = [f"{node.name} {why}"]
        for log in (node.log, node.folder / "console.log"):
            parts.append(f"log: {log}\n{tail(log)}")
        raise StackError("\n".join(parts))


def new_cluster_id() -> str:
    """A random KRaft cluster id, as ``kafka-storage random-uuid`` prints it (no JVM).

    >>> len(new_cluster_id()), new_cluster_id() != new_cluster_id()
    (22, True)
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text
