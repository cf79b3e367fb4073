"""What the learner does when the concept drifts: nothing, a reset, or a challenger."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings


def flipped_stream(path: Path, n: int = 6000, flip_at: int = 3000) -> Path:
    """Label = x > 0, then from ``flip_at`` on the opposite: an abrupt concept drift."""
    rng = random.Random(3)
    lines = []
    for i in range(n):
        x = rng.gauss(0, 1)
        label = (x > 0) if i < flip_at else (x <= 0)
        lines.append(
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "timestamp": 1_767_225_600_000 + i * 1000,
                    "user_id": "u",
                    "item_id": "i",
                    "features": {"x": x},
                    "label": label,
                }
            )
        )
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("action", ["none", "reset", "challenger"])
def test_concept_drift_after_the_flip_triggers_the_configured_action(tmp_path, action):
    path = flipped_stream(tmp_path / "flip.jsonl")
    settings = Settings(features={"mode": "raw"}, monitoring={"concept_action": action})

    result = backtest(path, settings, ["logistic"])

    summary = result.summary()["models"]
    detections = [d for d in summary["logistic"]["drift"] if d["kind"] == "concept"]
    assert detections, "ADWIN saw the flip"
    assert all(d["event_index"] >= 2900 for d in detections), "no detection long before the flip"
    champion = result.slots[0]
    if action == "challenger":
        assert "logistic/challenger" in summary
        assert 0 < summary["logistic/challenger"]["labels_learned"] < 3100
    else:
        assert list(summary) == ["logistic"]
    if action == "reset":
        assert champion.model is not None
        assert summary["logistic"]["metrics"]["accuracy"] > _accuracy_without_action(path)


def _accuracy_without_action(path: Path) -> float:
    result = backtest(path, Settings(features={"mode": "raw"}), ["logistic"])
    return result.summary()["models"]["logistic"]["metrics"]["accuracy"]
