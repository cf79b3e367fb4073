"""Recall under the feedback loop, without and with an unfiltered holdout.

``streamlearn backtest --feedback filter`` adds to its report a comparison of three
runs of the same file and model, each measuring recall on the positives against the
unfiltered ground truth (:mod:`stream.feedback`), window after window of events:

- ``unfiltered``: every label comes (no feedback loop): the reference;
- ``filter``: the labels of blocked events are withheld, no holdout (the ``decision``
  section as configured, its holdout off);
- ``filter+holdout``: the same loop with a holdout (``decision.holdout_fraction``, or
  2 % when it is 0), labels weighted by inverse propensity, and the silence after a
  blocked event not learned as a negative.

The figures go to ``summary.json`` (``feedback_comparison``) and the curves to
``feedback_recall.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings

__all__ = ["ARMS", "compare_feedback", "feedback_figure"]

#: The runs of the comparison, in order.
ARMS = ("unfiltered", "filter", "filter+holdout")
#: The holdout of the ``filter+holdout`` run when the configuration has none.
DEFAULT_HOLDOUT = 0.02


def _arm_settings(settings: Settings, arm: str) -> Settings:
    decision = settings.decision
    if arm == "filter+holdout":
        fraction = decision.holdout_fraction or DEFAULT_HOLDOUT
        update = {
            "holdout_fraction": fraction,
            "propensity_weighting": True,
            "hides": True,
            "implicit_negatives_of_blocked": False,
        }
    else:
        update = {"holdout_fraction": 0.0}
    return settings.model_copy(update={"decision": decision.model_copy(update=update)})


def compare_feedback(
    path: Path,
    settings: Settings,
    model: str,
    label_delay_s: float | None = None,
    windows: int = 20,
) -> dict[str, Any]:
    """Run the three arms over ``path``; per arm, the recall figures and the decisions."""
    arms: dict[str, Any] = {}
    for arm in ARMS:
        result = backtest(
            path,
            _arm_settings(settings, arm),
            [model],
            label_delay_s=label_delay_s,
            feedback="none" if arm == "unfiltered" else "filter",
            measure_recall=True,
        )
        assert result.feedback is not None
        metrics = result.summary()["models"]
        arms[arm] = {
            **result.feedback.summary(windows),
            "holdout_fraction": result.decisions["holdout_fraction"],
            "threshold": result.decisions["threshold"],
            "roc_auc": next(iter(metrics.values()))["metrics"].get("roc_auc"),
        }
    return {"policy": settings.decision.policy, "model": model, "arms": arms}


def feedback_figure(comparison: dict[str, Any]) -> Figure:
    """Recall on the positives (unfiltered truth) per window of events, one line per arm."""
    figure = Figure(figsize=(9, 4.5))
    ax = figure.add_subplot()
    for arm, figures in comparison["arms"].items():
        points = [(r["event_index"], r["recall"]) for r in figures["timeline"]]
        xs = [x for x, y in points if y is not None]
        ys = [y for x, y in points if y is not None]
        recall = figures["recall"]
        label = f"{arm} (recall {recall:.3f})" if recall is not None else arm
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_xlabel("event index")
    ax.set_ylabel("recall on positives (ground truth)")
    ax.set_title(f"Feedback loop: policy {comparison['policy']}, model {comparison['model']}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    figure.tight_layout()
    return figure


def write_feedback(comparison: dict[str, Any], folder: Path) -> str:
    """Draw ``feedback_recall.png`` into ``folder``; returns its name."""
    name = "feedback_recall.png"
    feedback_figure(comparison).savefig(folder / name, dpi=100, metadata={"Software": None})
    return name
