"""The capacity model: counts from the CPU per event, and the costs from a bench run."""

from __future__ import annotations

import json

import pytest

from bench.capacity import Assumptions, Costs, capacity, costs_from_bench, main

COSTS = Costs(worker_us=500.0, broker_us=50.0, redis_us=100.0)


def test_each_process_runs_at_the_utilisation_of_its_core():
    plan = capacity(10_000, COSTS, Assumptions(utilisation=0.5))
    # 10,000 events/s at 500 µs: 5 cores of worker, 10 workers at half a core each
    assert (plan.workers, plan.partitions) == (10, 20)
    # Redis: 1 core of work, 2 shards at half; each replica costs 40 % of its master
    assert (plan.redis_masters, plan.redis_replicas) == (2, 2)
    assert plan.redis_cores == pytest.approx(2 * 1.4)
    # brokers: 0.5 core per replica, 3 replicas, 8 cores at half: the replication floor
    assert plan.brokers == 3 and plan.broker_cores == pytest.approx(3.0)
    assert plan.cores == pytest.approx(10 + 2.8 + 3.0)


def test_counts_grow_with_the_rate_and_never_fall_below_one_process():
    small = capacity(1, COSTS, Assumptions())
    assert (small.workers, small.redis_masters, small.brokers) == (1, 1, 3)
    plans = [capacity(rate, COSTS, Assumptions()) for rate in (1e4, 1e5, 1e6)]
    assert [p.workers for p in plans] == [10, 100, 1000]
    assert plans[-1].brokers == 38  # 1e6 × 50 µs × 3 = 150 cores, 4 usable per broker


def test_a_rate_or_utilisation_out_of_range_is_refused():
    with pytest.raises(ValueError, match="rate"):
        capacity(0, COSTS, Assumptions())
    with pytest.raises(ValueError, match="utilisation"):
        capacity(1000, COSTS, Assumptions(utilisation=1.5))


def test_the_costs_are_each_process_cpu_over_the_events_of_the_bench_worker_run(tmp_path):
    cpu = {"w0": {"cpu_s": 5.4}, "kafka": {"cpu_s": 0.76}, "redis": {"cpu_s": 2.22},
           "other": {"cpu_s": 9.0}}  # fmt: skip
    results = {"worker": {"transactions": {"events": 10_000, "cpu": cpu}}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"results": results, "machine": {"date": "2026-12-02"}}))
    costs = costs_from_bench(path)
    assert (costs.worker_us, costs.broker_us, costs.redis_us) == pytest.approx((540, 76, 222))
    assert "2026-12-02" in costs.source
    with pytest.raises(ValueError, match="no worker scenario"):
        costs_from_bench(path, "off")


def test_the_command_prints_every_rate_with_the_costs_given(capsys):
    main(["--rate", "1000", "--rate", "2000", "--redis-us", "45", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert [p["rate"] for p in out["plans"]] == [1000, 2000]
    assert out["costs"]["redis_us"] == 45 and out["costs"]["worker_us"] == 540
