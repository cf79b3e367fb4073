"""What the processor does when its champion drifts: start afresh, or start a challenger.

The champion's monitor says when its loss (concept drift) or its inputs
(feature drift) moved; ``monitoring.concept_action`` (none, reset or
challenger) and ``monitoring.feature_action`` (alert or challenger) say what
follows. A reset gives the champion a fresh clone and a new reference window;
a challenger is a fresh clone of the champion that learns beside it in the
shadow under the name ``<champion>/challenger`` (a later drift starts it again).

Examples
--------
>>> from streamlearn.learners.models import build_model
>>> from streamlearn.metrics.monitor import Monitor
>>> from streamlearn.metrics.thresholds import MonitoringConfig
>>> from streamlearn.stream.model_guard import ModelSlot
>>> champion = ModelSlot("m", build_model("logistic"),
...                      monitor=Monitor(MonitoringConfig(concept_action="challenger")))
>>> slots = on_drift([champion], champion, 0, "concept", threshold=0.5)
>>> [slot.name for slot in slots]
['m', 'm/challenger']
>>> [slot.name for slot in on_drift(slots, champion, 1, "concept", threshold=0.5)]
['m', 'm/challenger']
"""

from __future__ import annotations

import logging

from streamlearn.metrics.monitor import Monitor
from streamlearn.metrics.scorecard import Scorecard
from streamlearn.stream.model_guard import ModelSlot

__all__ = ["on_drift"]

log = logging.getLogger(__name__)


def on_drift(
    slots: list[ModelSlot], champion: ModelSlot, event_time_ms: int, kind: str, threshold: float
) -> list[ModelSlot]:
    """The slots after the configured action on a drift of the champion.

    ``kind``: ``concept`` (``monitoring.concept_action``: none, reset or
    challenger) or ``feature`` (``monitoring.feature_action``: alert or
    challenger). A reset changes the champion in place and gives ``slots``
    back; a challenger gives a new list, without the challenger it replaces.
    """
    assert champion.monitor is not None
    config = champion.monitor.config
    action = config.concept_action if kind == "concept" else config.feature_action
    if action == "reset":
        log.warning(
            "concept drift at event time %d: %s starts afresh", event_time_ms, champion.name
        )
        champion.model = champion.model.clone()
        champion.monitor.reset_reference()
    elif action == "challenger":
        name = champion.name + "/challenger"
        slots = [slot for slot in slots if slot.name != name]
        log.warning("%s drift at event time %d: %s starts learning", kind, event_time_ms, name)
        monitor = Monitor(champion.monitor.config, threshold=threshold)
        scorecard = Scorecard(threshold) if champion.scorecard is not None else None
        slots.append(
            ModelSlot(
                name, champion.model.clone(), champion.spec, monitor=monitor, scorecard=scorecard
            )
        )
    return slots
