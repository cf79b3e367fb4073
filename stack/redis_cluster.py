"""A local Redis Cluster: N masters, each with one replica, as plain processes.

``streamlearn stack up --redis-cluster N`` starts ``2 N`` ``redis-server`` processes
in cluster mode under ``ROOT/redis-cluster/<port>/`` (config file ``nodes.conf``,
log ``redis.log``), joins them with ``redis-cli --cluster create ... --cluster-replicas
1 --cluster-yes``, and waits until ``CLUSTER INFO`` says ``cluster_state:ok`` on
every node and each sees every master with its replica. Each node has its client port
and its cluster bus port (``--cluster-port``), both taken from
:attr:`StackConfig.redis_cluster_ports` (client ports first, then bus ports), or
7000 + i and 17000 + i by default. Each process is
recorded in ``ROOT/run/redis-cluster-<port>.json`` like the stack's other services, so
:meth:`RedisClusterNodes.down` stops exactly the processes it started; it then removes
``ROOT/redis-cluster/``, so nothing is left: no process, no port, no file.

Examples
--------
>>> from streamlearn.stack.config import StackConfig
>>> nodes = RedisClusterNodes(StackConfig(root="/tmp/s", redis_cluster=3))
>>> nodes.ports, nodes.bus_ports[:2]
((7000, 7001, 7002, 7003, 7004, 7005), (17000, 17001))
>>> nodes.url
'redis://127.0.0.1:7000'
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psutil

from streamlearn.stack.config import StackConfig
from streamlearn.stack.install import StackError
from streamlearn.stack.services import (
    Record,
    port_open,
    read_record,
    run_checked,
    stop_processes,
    tail,
    terminate,
    write_record,
)

__all__ = ["RedisClusterNodes", "cluster_ports"]

_POLL = 0.2
_MARKER = "redis-server"


def cluster_ports(config: StackConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The client ports and the bus ports of the cluster's ``2 N`` nodes.

    >>> ports = tuple(range(1, 13))
    >>> cluster_ports(StackConfig(root="/tmp/s", redis_cluster=3, redis_cluster_ports=ports))
    ((1, 2, 3, 4, 5, 6), (7, 8, 9, 10, 11, 12))
    """
    count = 2 * config.redis_cluster
    given = config.redis_cluster_ports
    if given:
        if len(given) != 2 * count:
            raise StackError(
                f"redis_cluster_ports: {len(given)} ports for {count} nodes; give {2 * count}"
                " (the client ports, then the bus ports)"
            )
        return tuple(given[:count]), tuple(given[count:])
    return tuple(range(7000, 7000 + count)), tuple(range(17000, 17000 + count))


class RedisClusterNodes:
    """Start, wait for and stop the local Redis Cluster of a :class:`StackConfig`."""

    def __init__(
        self, config: StackConfig, *, reporter: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        self._report = reporter or (lambda _msg: None)
        self.ports, self.bus_ports = cluster_ports(config)
        self.folder = config.root / "redis-cluster"
        self._children: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The URL a cluster client starts from (any node gives it the others)."""
        return f"redis://{self.config.host}:{self.ports[0]}"

    # ------------------------------------------------------------------ public API

    def up(self) -> None:
        """Start the nodes not running yet, join them once, and wait until the cluster is ok."""
        if not self.ports:
            return
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise StackError("not installed: redis-server, redis-cli; run scripts/bootstrap first")
        (self.config.root / "run").mkdir(parents=True, exist_ok=True)
        started = [
            self._launch(port, bus) for port, bus in zip(self.ports, self.bus_ports, strict=True)
        ]
        deadline = time.monotonic() + self.config.startup_timeout
        for port in self.ports:
            self._wait(port, deadline, partial(self._ping, port))
        if not all(self._ok(port) for port in self.ports):
            if any(started) and self._info(self.ports[0]).get("cluster_known_nodes") == "1":
                self._report(f"redis-cluster: joining {len(self.ports)} nodes")
                addresses = [f"{self.config.host}:{port}" for port in self.ports]
                run_checked(
                    "redis-cluster",
                    [
                        "redis-cli",
                        "--cluster",
                        "create",
                        *addresses,
                        "--cluster-replicas",
                        "1",
                        "--cluster-yes",
                    ],
                )
            for port in self.ports:
                self._wait(port, deadline, partial(self._ok, port))
        self._report("redis-cluster: ready")

    def down(self) -> list[int]:
        """Stop the nodes this root's pid files name and remove their folder; their ports."""
        victims: list[tuple[int, psutil.Process]] = []
        for port in self.ports:
            proc = terminate(f"redis-cluster {port}", self._record(port), self._report)
            if proc is not None:
                victims.append((port, proc))
            self._pidfile(port).unlink(missing_ok=True)
        named = [(f"redis-cluster {port}", proc) for port, proc in victims]
        stop_processes(named, self.config.stop_timeout, self._report)
        for child in self._children:
            child.poll()
        self._children.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        return [port for port, _ in victims]

    def pids(self) -> dict[int, int]:
        """The pid of each running node of ours, by client port."""
        pids = {}
        for port in self.ports:
            record = self._record(port)
            proc = record.process() if record else None
            if proc is not None:
                pids[port] = proc.pid
        return pids

    def cluster_info(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` of the node on ``port`` (empty when it does not answer)."""
        return self._info(port)

    # ---------------------------------------------------------------- internals

    def _pidfile(self, port: int) -> Path:
        return self.config.root / "run" / f"redis-cluster-{port}.json"

    def _record(self, port: int) -> Record | None:
        return read_record(self._pidfile(port))

    def _launch(self, port: int, bus: int) -> bool:
        """Start the node on ``port`` unless ours runs; return True when started."""
        record = self._record(port)
        if record is not None and record.process() is not None:
            self._report(f"redis-cluster: reusing pid {record.pid} (port {port})")
            return False
        for taken in (port, bus):
            if port_open(self.config.host, taken):
                raise StackError(
                    f"redis-cluster: port {self.config.host}:{taken} is already in use by a "
                    f"process not started from {self.config.root}; choose other ports"
                )
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        argv = (
            "redis-server",
            "--bind",
            self.config.host,
            "--port",
            str(port),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(bus),
            "--cluster-config-file",
            str(folder / "nodes.conf"),
            "--cluster-node-timeout",
            "5000",
            "--appendonly",
            "no",
            "--save",
            "",
            "--dir",
            str(folder),
            "--daemonize",
            "no",
            "--logfile",
            str(folder / "redis.log"),
        )
        self._report(f"redis-cluster: starting port {port}")
        child = subprocess.Popen(  # noqa: S603
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=folder,
            start_new_session=True,
        )
        self._children.append(child)
        write_record(self._pidfile(port), child.pid, _MARKER, (port, bus), argv)
        return True

    def _wait(self, port: int, deadline: float, ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            if ready():
                return
            record = self._record(port)
            if record is None or record.process() is None:
                raise StackError(
                    f"redis-cluster: the node on port {port} exited\n"
                    f"log: {self.folder / str(port) / 'redis.log'}\n"
                    + tail(self.folder / str(port) / "redis.log")
                )
            time.sleep(_POLL)
        raise StackError(
            f"redis-cluster: the node on port {port} is not ready after "
            f"{self.config.startup_timeout:.0f}s: {self._info(port)}"
        )

    def _ping(self, port: int) -> bool:
        import redis

        client = redis.Redis(
            host=self.config.host, port=port, socket_timeout=2.0, socket_connect_timeout=1.0
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _info(self, port: int) -> dict[str, str]:
        import redis

        client = redis.Redis(
            host=self.config.host, port=port, socket_timeout=2.0, socket_connect_timeout=1.0
        )
        try:
            text = client.cluster("INFO")
        except redis.RedisError:
            return {}
        finally:
            client.close()
        if isinstance(text, bytes):
            text = text.decode()
        if isinstance(text, dict):
            return {str(k): str(v) for k, v in text.items()}
        pairs = (line.split(":", 1) for line in str(text).splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}

    def _ok(self, port: int) -> bool:
        """The node says the cluster is ok and sees every master with its replica."""
        info = self._info(port)
        known = str(len(self.ports))
        if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != known:
            return False
        return self._replicas(port) == len(self.ports) // 2

    def _replicas(self, port: int) -> int:
        """How many replicas the node on ``port`` sees in ``CLUSTER NODES``."""
        import redis

        client = redis.Redis(
            host=self.config.host, port=port, socket_timeout=2.0, socket_connect_timeout=1.0
        )
        try:
            table = client.cluster("NODES")
        except redis.RedisError:
            return -1
        finally:
            client.close()
        if not isinstance(table, dict):
            return -1
        return sum("slave" in str(node.get("flags", "")) for node in table.values())
