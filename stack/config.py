"""Where the local stack lives and how its services listen: :class:`StackConfig`.

Layout of the root folder (``.stack/`` by default)::

    stack.json                  effective StackConfig of the last ``up``
    run/<service>.json          pid, start time and command of each started process
    kafka/                      server.properties, log4j2.yaml, cluster_id, data/, logs/
    kafka-<n>/                  the same for node n of a multi-broker cluster (kafka_brokers > 1)
    redis/                      redis.log, data files
    redis-cluster/<port>/       nodes.conf, redis.log of each Redis Cluster node (removed by down)
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

import random
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamlearn.stack.install import REPO_ROOT

__all__ = [
    "ALL_SERVICES",
    "CORE_SERVICES",
    "ServiceName",
    "ServiceStatus",
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
        Broker (PLAINTEXT) and KRaft controller listener ports (of node 1).
    kafka_brokers
        Kafka nodes (combined broker and controller, :mod:`stack.kafka_cluster`); 1 by
        default, 3 for a replicated cluster that survives the loss of a node.
    kafka_node_ports
        (broker, controller) ports of nodes 2..N; by default node n listens 100·(n-1)
        above node 1's ports.
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
    kafka_brokers: int = Field(1, ge=1, le=9)
    kafka_node_ports: tuple[tuple[int, int], ...] = ()
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
    redis_cluster: int = Field(
        0,
        ge=0,
        le=16,
        description="Masters of a local Redis Cluster, each with a replica (0: none, else 3+).",
    )
    redis_cluster_ports: tuple[int, ...] = Field(
        (), description="Its nodes' client ports, then their bus ports (default 7000+, 17000+)."
    )

    @property
    def kafka_bootstrap(self) -> str:
        """Bootstrap servers string: every broker's address, comma separated.

        >>> StackConfig(root="/tmp/s", kafka_brokers=3).kafka_bootstrap
        '127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292'
        """
        return ",".join(f"{self.host}:{broker}" for broker, _ in self.kafka_nodes)

    @property
    def kafka_nodes(self) -> tuple[tuple[int, int], ...]:
        """(broker, controller) ports of each Kafka node, node 1 first."""
        given = self.kafka_node_ports[: self.kafka_brokers - 1]
        offsets = range(len(given) + 1, self.kafka_brokers)
        implied = tuple(
            (self.kafka_port + 100 * i, self.kafka_controller_port + 100 * i) for i in offsets
        )
        return ((self.kafka_port, self.kafka_controller_port), *given, *implied)

    @property
    def redis_url(self) -> str:
        """Redis URL (database 0)."""
        return f"redis://{self.host}:{self.redis_port}/0"

    @field_validator("redis_cluster")
    @classmethod
    def _three_masters(cls, value: int) -> int:
        if 0 < value < 3:
            raise ValueError(f"redis_cluster: a Redis Cluster needs 3 masters or more, not {value}")
        return value

    @property
    def redis_cluster_url(self) -> str:
        """URL of the local Redis Cluster's first node (empty without one)."""
        if not self.redis_cluster:
            return ""
        port = self.redis_cluster_ports[0] if self.redis_cluster_ports else 7000
        return f"redis://{self.host}:{port}"

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
    if overrides.get("redis_cluster"):
        settings["redis_cluster_ports"] = tuple(free_ports(4 * overrides["redis_cluster"]))
    return StackConfig(**{**settings, **overrides})


def fast_stack_config(root: Path) -> StackConfig:
    """:func:`private_stack_config` with 1 s Prometheus intervals: the tests' and soaks' stack.

    >>> fast_stack_config(Path("/tmp/fast")).evaluation_interval
    '1s'
    """
    return private_stack_config(root, scrape_interval="1s", evaluation_interval="1s")
