"""The drift evaluation suite, small: one sudden drift found in time, stationary streams quiet.

``python -m bench.drift`` runs the whole grid (four generator families, several
seeds and positions, every detector and signal); this keeps one case of each
kind in the test command, through the same backtest.
"""

from __future__ import annotations

from pathlib import Path

from bench.drift import GOAL_DELAY, Scenario, detections_of, evaluate, run_stream
from streamlearn.stream.config import Settings

SETTINGS = Settings(features={"mode": "raw"})


def test_a_sudden_concept_change_is_detected_within_a_thousand_labels(tmp_path: Path):
    scenario = Scenario("sea", "sudden", seed=2, length=6000, position=4000, width=50)
    run = run_stream(scenario, SETTINGS, tmp_path)
    first = [d for d in run.monitor_detections if d >= scenario.start]
    assert first, "the concept change was not reported"
    assert first[0] - scenario.start <= GOAL_DELAY
    assert [d for d in run.monitor_detections if d < scenario.start] == []
    # The unbounded log loss the detector used to watch misses this change altogether.
    assert detections_of(run, "adwin", "log_loss", warmup=0) == []


def test_the_monitor_reports_what_the_suite_evaluates(tmp_path: Path):
    scenario = Scenario("stagger", "sudden", seed=2, length=4000, position=2000, width=50)
    run = run_stream(scenario, SETTINGS, tmp_path)
    warmup = SETTINGS.monitoring.concept_warmup_labels
    assert run.monitor_detections == detections_of(run, "adwin", "error", warmup)
    verdict = evaluate([run], "adwin", "error", warmup)
    assert (verdict.sudden, verdict.sudden_within_goal, verdict.false_alarms) == (1, 1, 0)


def test_a_stationary_stream_raises_no_drift_alarm_after_warm_up(tmp_path: Path):
    run = run_stream(Scenario("sea", "stationary", seed=3, length=8000), SETTINGS, tmp_path)
    assert run.monitor_detections == []
    assert run.prediction_alarms == []
    assert run.prediction_alarms_no_warmup != [], "without the warm-up the learning model alarms"
