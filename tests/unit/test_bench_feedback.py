"""``python -m bench.feedback``: the feedback loop degrades recall, a holdout keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from bench import feedback
from streamlearn.stream.datasets import dataset_events


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mail") / "mail.jsonl"
    feedback._write(path, feedback.spam_world(6000, seed=2))
    return path


def test_without_holdout_recall_on_the_truth_falls_and_with_it_holds(mail: Path) -> None:
    looped = feedback.feedback_run(mail, "filter", windows=5, live_after=1200)
    held = feedback.feedback_run(mail, "filter + holdout", windows=5, live_after=1200)
    assert looped["labels_dropped"] > 0 and held["labels_dropped"] > 0
    # the loop bites once the filter is live: the last window's recall is well below
    # the one the model had when it went live, and well below the holdout's
    assert looped["timeline"][-1] < looped["timeline"][0] - 0.2
    assert held["timeline"][-1] > looped["timeline"][-1] + 0.2


def test_precision_at_least_keeps_its_promise_on_the_truth(tmp_path: Path) -> None:
    path = tmp_path / "sea.jsonl"
    truth = feedback._write(path, dataset_events("sea", 1, 16_000))
    result = feedback.precision_run(path, truth, windows=10)
    assert len(result["windows"]) >= 2  # windows of 4,000 decided events
    assert result["min_precision"] is not None and result["min_precision"] >= 0.995
    assert 0 < result["recall"] <= result["hindsight_recall"]


def test_a_tiny_study_writes_its_reports(tmp_path: Path) -> None:
    report = feedback.run(1, 3000, 3, tmp_path, Console(file=None, quiet=True))
    assert set(report["feedback"]) == set(feedback.ARMS)
    assert (tmp_path / "feedback_recall.png").stat().st_size > 0
    assert "| filter + holdout |" in (tmp_path / "feedback.md").read_text()
    assert json.loads((tmp_path / "feedback.json").read_text())["meta"]["events"] == 3000
