"""``python -m bench.rollout`` runs small, writes its reports and its checks agree."""

from __future__ import annotations

import json
from pathlib import Path

from bench import rollout


def test_a_tiny_study_writes_its_reports(tmp_path: Path) -> None:
    code = rollout.main(
        ["--seeds", "8", "--horizon", "20000", "--rollback-horizon", "5000", "--out", str(tmp_path)]
    )
    assert code == 0
    report = json.loads((tmp_path / "rollout.json").read_text())
    scenarios = {(o["scenario"], o["test"]) for o in report["outcomes"]}
    assert ("A/A (no effect)", "naive") in scenarios
    assert ("drop 10%", "sequential") in scenarios
    assert all(c["vectorised"] == c["class"] for c in report["meta"]["cross_checks"])
    assert (
        "| A/B positive rate | A/A (no effect) | sequential |"
        in (tmp_path / "rollout.md").read_text()
    )


def test_the_noise_for_a_drop_gives_that_drop() -> None:
    assert rollout.noise_for_drop(0.0) == 0.5
    assert 0.5 < rollout.noise_for_drop(0.1) < rollout.noise_for_drop(0.2)
