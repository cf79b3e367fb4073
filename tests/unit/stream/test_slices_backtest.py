"""Slices and the fairness gap in backtests of the synthetic world; the feature drift action."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from streamlearn.stream.report import write_report
from streamlearn.stream.synthetic import WorldConfig, generate_world

SLICES = {"slices": ["context.group", "author_id"], "slice_top_k": 5}


def _world(path: Path, **kw: object) -> Path:
    config = WorldConfig(events=10_000, seed=3, **kw)  # type: ignore[arg-type]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in generate_world(config)))
    return path


@pytest.mark.parametrize("effect", [0.0, 1.5])
def test_a_group_scored_higher_shows_a_fairness_gap_and_an_even_one_does_not(
    tmp_path: Path, effect: float
) -> None:
    path = _world(tmp_path / "world.jsonl", group_share=0.3, group_effect=effect)
    settings = Settings(monitoring=SLICES)

    result = backtest(path, settings)
    write_report(result, tmp_path / "report")

    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    model = summary["models"]["logistic"]
    low, high = model["fairness_band"]
    assert (low, high) == (0.8, 1.25)
    group = {s["slice"]: s for s in model["slices"] if s["slice_key"] == "context.group"}
    assert set(group) == {"a", "b"}
    # The labels reached their events' slices (from the labels topic, not inline).
    assert all(s["n_labels"] > 500 for s in group.values())
    authors = [s for s in model["slices"] if s["slice_key"] == "author_id"]
    assert len(authors) == 6 and authors[-1]["slice"] == "other"
    gaps = [e for e in model["alerts"] if e["kind"] == "fairness"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Slices" in text and "| `context.group` | `b` |" in text
    b_row = next(line for line in text.splitlines() if line.startswith("| `context.group` | `b`"))
    if effect:
        assert group["b"]["score_ratio"] > high
        assert group["a"]["score_ratio"] < low
        assert group["b"]["positive_label_rate"] > group["a"]["positive_label_rate"]
        assert {"context.group=b:score_ratio", "context.group=a:score_ratio"} <= {
            e["name"] for e in gaps
        }
        assert all(e["alert"] == "StreamlearnFairnessGap" for e in gaps)
        assert "⚠" in b_row
    else:
        assert low < group["b"]["score_ratio"] < high
        assert low < group["a"]["score_ratio"] < high
        assert not [e for e in gaps if e["name"].startswith("context.group=")]
        assert "⚠" not in b_row


@pytest.mark.parametrize("action", ["alert", "challenger"])
def test_feature_drift_starts_a_challenger_when_configured(tmp_path: Path, action: str) -> None:
    path = _world(tmp_path / "shift.jsonl", feature_shift_at=6000, shift_mean=6.0)
    settings = Settings(features={"mode": "raw"}, monitoring={"feature_action": action})

    summary = backtest(path, settings).summary()["models"]

    drifts = [d for d in summary["logistic"]["drift"] if d["kind"] == "feature"]
    assert [d["name"] for d in drifts][:1] == ["quality_hint"]
    assert drifts[0]["event_index"] >= 6000
    assert summary["logistic"]["feature_drift"]["top"]["quality_hint"]["psi"] is not None
    if action == "challenger":
        assert "logistic/challenger" in summary
        assert summary["logistic/challenger"]["events_scored"] < 10_000 - 6000
    else:
        assert list(summary) == ["logistic"]
