"""The registry refuses a model with non-finite numbers before it writes anything."""

from __future__ import annotations

import math

import pytest
import redis

from streamlearn.learners.models import build_model, learn
from streamlearn.learners.registry import ModelRegistry, NonFiniteModelError

KEY = b"unit test key of 32 bytes......."


def unreachable_registry() -> ModelRegistry:
    """A registry whose Redis does not exist: any call to it would raise ConnectionError."""
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    return ModelRegistry(client, "unit", KEY)


def save(model: object) -> None:
    unreachable_registry().save(
        model,
        name="logistic",
        parent="3",
        events_scored=10,
        labels_learned=10,
        offsets={"events:0": 10},
        metrics={},
    )


@pytest.mark.parametrize(
    "poison",
    [
        lambda m: learn(m, {"clicks": 1e300, "device": "ios"}, 1.0, 1.0),
        lambda m: setattr(m.steps["LogisticRegression"], "intercept", math.inf),
    ],
    ids=["overflowed_by_a_huge_feature", "infinite_intercept"],
)
def test_save_refuses_a_non_finite_model_before_any_redis_call(poison) -> None:
    model = build_model("logistic")
    learn(model, {"clicks": 1.0, "device": "ios"}, 1.0, 1.0)
    poison(model)
    with pytest.raises(NonFiniteModelError, match="model 'logistic' \\(parent v3\\) has NaN"):
        save(model)


def test_save_of_a_finite_model_goes_on_to_redis() -> None:
    model = build_model("logistic")
    learn(model, {"clicks": 1.0, "device": "ios"}, 1.0, 1.0)
    with pytest.raises(redis.ConnectionError):
        save(model)
