"""The local Redis Cluster of ``streamlearn stack up --redis-cluster N``: real processes.

Up: every node says ``cluster_state:ok``, each master has a replica, and a cluster
client reaches keys of every slot; down: no process, no port, no file is left.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import redis
from redis.cluster import RedisCluster

from streamlearn.stack import Stack
from streamlearn.stack.config import private_stack_config
from streamlearn.stack.redis_cluster import RedisClusterNodes
from streamlearn.stack.services import port_open

pytestmark = pytest.mark.integration


def test_cluster_up_ok_and_down_leaves_nothing(tmp_path: Path) -> None:
    config = private_stack_config(tmp_path / "stack", redis_cluster=3)
    nodes = RedisClusterNodes(config)
    try:
        nodes.up()
        pids = nodes.pids()
        assert len(pids) == 6
        for port in nodes.ports:
            info = nodes.cluster_info(port)
            assert info["cluster_state"] == "ok"
            assert info["cluster_known_nodes"] == "6"
            assert info["cluster_size"] == "3"
        table = redis.Redis.from_url(nodes.url).cluster("NODES")
        flags = sorted(
            "master" if "master" in node["flags"] else "slave" for node in table.values()
        )
        assert flags == ["master"] * 3 + ["slave"] * 3
        client = RedisCluster.from_url(nodes.url)
        try:
            assert len(client.get_primaries()) == 3
            for i in range(50):
                client.set(f"k{i}", i)
            assert [int(client.get(f"k{i}")) for i in range(50)] == list(range(50))
        finally:
            client.close()
        nodes.up()  # a second up reuses the running cluster
        assert nodes.pids() == pids
    finally:
        stopped = nodes.down()
    assert sorted(stopped) == sorted(nodes.ports)
    assert not any(psutil.pid_exists(pid) and _is_redis(pid) for pid in pids.values())
    assert not any(port_open(config.host, p) for p in (*nodes.ports, *nodes.bus_ports))
    assert not (config.root / "redis-cluster").exists()
    assert not list((config.root / "run").glob("redis-cluster-*"))


def test_stack_up_starts_the_cluster_beside_redis_and_down_stops_both(tmp_path: Path) -> None:
    config = private_stack_config(tmp_path / "stack", redis_cluster=3)
    stack = Stack(config)
    nodes = RedisClusterNodes(config)
    try:
        stack.up(services=["redis"])
        assert redis.Redis.from_url(config.redis_url).ping()
        assert len(nodes.pids()) == 6
        assert nodes.cluster_info(nodes.ports[0])["cluster_state"] == "ok"
        assert redis.Redis.from_url(config.redis_cluster_url).ping()
    finally:
        stopped = stack.down()
    assert stopped == ["redis", "redis-cluster"]
    assert nodes.pids() == {}
    assert not (config.root / "redis-cluster").exists()


def _is_redis(pid: int) -> bool:
    try:
        return "redis-server" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
