"""``model train``: the challenger's experiment section and the comparison table."""

from __future__ import annotations

import pytest
from rich.console import Console

from streamlearn.cli.retrain import challenger_section
from streamlearn.cli.retrain_report import comparison_table
from streamlearn.learners.models import build_model
from streamlearn.learners.retrain import LoggedExample, retrain
from streamlearn.stream.config import ExperimentSettings


def test_the_section_keeps_the_configured_control_and_settings_and_names_the_version():
    base = ExperimentSettings(
        id="old", arms={"live": 0.5, "other": 0.5}, primary="log_loss", min_labels_per_arm=200
    )
    section = challenger_section("retrained", "12", 0.2, base, None)
    assert section["arms"] == {"live": 0.8, "retrained": 0.2}
    assert section["primary"] == "log_loss" and section["id"] == "retrain-v12"
    assert section["models"] == {"retrained": "version:12"}
    assert challenger_section("r", "3", 0.1, None, "brier")["primary"] == "brier"


@pytest.mark.parametrize(
    ("arm", "share", "message"),
    [("champion", 0.1, "named like the control"), ("r", 1.0, "--share"), ("r", 0.0, "--share")],
)
def test_a_section_the_workers_would_refuse_is_refused_here(arm, share, message):
    with pytest.raises(ValueError, match=message):
        challenger_section(arm, "3", share, None, None)


def test_the_table_sets_the_new_model_beside_the_current_one_and_the_scores_served():
    log = [
        LoggedExample(f"e{i}", {"x": float(i % 2)}, float(i % 2), 1.0, 1_000 * i, score=0.4)
        for i in range(50)
    ]
    _, result = retrain(log, 3600.0, current=build_model("logistic"), current_version="3")
    console = Console(width=200, record=True)
    console.print(comparison_table(result))
    text = console.export_text()
    assert "new (logistic)" in text and "current v3" in text and "served then" in text
    assert "log loss" in text and "ROC AUC" in text and "trained on 40 examples" in text
