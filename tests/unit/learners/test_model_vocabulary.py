"""The presets' categorical vocabulary is bounded (``model.max_categories``,
``model.category_buckets``) and leaves low-cardinality features untouched."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError
from river import forest, linear_model, optim, preprocessing, tree

from streamlearn.learners.models import (
    DEFAULT_BUCKETS,
    DEFAULT_MAX_CATEGORIES,
    BoundedCategories,
    Numbers,
    Strings,
    build_model,
    learn,
    score,
)
from streamlearn.stream.backtest import backtest
from streamlearn.stream.config import Settings
from tests.unit.stream.test_concept_actions import flipped_stream

T0 = 1_767_225_600_000
ROOT = Path(__file__).resolve().parents[3]

#: The largest pickled ``logistic`` model after 2,500 events with two context values
#: unique to each event, with the default bound (it was 245 KB without a bound).
LOGISTIC_BOUND = 20_000
#: The same for ``hoeffding_tree`` (331 KB without a bound).
TREE_BOUND = 260_000


def vocabulary_of(model) -> BoundedCategories:
    """The ``logistic`` preset's vocabulary step: numbers + (strings | vocabulary | one-hot)."""
    step = model["TransformerUnion"][1]["BoundedCategories"]
    assert isinstance(step, BoundedCategories)
    return step


def unique_context_stream(path: Path, n: int = 2500) -> Path:
    rng = random.Random(7)
    lines = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "timestamp": T0 + i * 1000,
                "user_id": f"u{rng.randrange(50)}",
                "item_id": f"i{rng.randrange(80)}",
                "context": {
                    "device": rng.choice(["ios", "android", "web"]),
                    "request": f"r-{i}",
                    "campaign": f"c{i * 7919}",
                },
                "features": {"q": rng.random()},
                "label": rng.random() < 0.2,
            }
        )
        for i in range(n)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_unique_context_values_leave_the_model_snapshot_bounded(tmp_path):
    path = unique_context_stream(tmp_path / "unique.jsonl")
    result = backtest(path, Settings(), ["logistic", "hoeffding_tree"])
    sizes = {slot.name: len(pickle.dumps(slot.model)) for slot in result.slots}
    assert sizes["logistic"] < LOGISTIC_BOUND, sizes
    assert sizes["hoeffding_tree"] < TREE_BOUND, sizes
    weights = result.slots[0].model["LogisticRegression"].weights
    for feature in ("ctx_request", "ctx_campaign"):
        columns = [name for name in weights if name.startswith(feature + "_")]
        assert len(columns) <= DEFAULT_MAX_CATEGORIES + DEFAULT_BUCKETS


def low_cardinality_examples(n: int) -> list[tuple[dict, float]]:
    rng = random.Random(11)
    examples = []
    for _ in range(n):
        device = rng.choice(["ios", "android", "web"])
        country = f"c{rng.randrange(20)}"
        x = {"q": rng.gauss(0, 1), "ctx_device": device, "ctx_country": country, "n": 1.0}
        y = float(rng.random() < (0.7 if device == "ios" else 0.2))
        examples.append((x, y))
    return examples


def unbounded_logistic():
    """The ``logistic`` preset as it was before its vocabulary had a bound."""
    numeric = Numbers() | preprocessing.StandardScaler()
    categorical = Strings() | preprocessing.OneHotEncoder()
    return (numeric + categorical) | linear_model.LogisticRegression(optimizer=optim.SGD(0.003))


@pytest.mark.parametrize(
    ("preset", "unbounded", "n"),
    [
        ("logistic", unbounded_logistic, 3000),
        ("hoeffding_tree", lambda: tree.HoeffdingTreeClassifier(grace_period=200), 3000),
        ("arf", lambda: forest.ARFClassifier(n_models=10, seed=42), 600),
    ],
)
def test_few_distinct_values_score_exactly_as_without_a_bound(preset, unbounded, n):
    bounded, plain = build_model(preset), unbounded()
    for x, y in low_cardinality_examples(n):
        assert score(bounded, x) == score(plain, x)
        learn(bounded, x, y, 1.0)
        learn(plain, x, y, 1.0)


def test_values_beyond_the_bound_share_the_buckets_and_scoring_learns_nothing():
    model = build_model("logistic", max_categories=4, category_buckets=3)
    for i in range(100):
        score(model, {"ctx_id": f"v{i}"})
    vocabulary = vocabulary_of(model)
    assert vocabulary.vocabulary == {}, "scoring does not learn values"
    for i in range(100):
        learn(model, {"ctx_id": f"v{i}"}, float(i % 2), 1.0)
    assert vocabulary.vocabulary == {"ctx_id": {"v0", "v1", "v2", "v3"}}
    columns = set(model["LogisticRegression"].weights)
    assert {"ctx_id_v0", "ctx_id_v3"} <= columns
    assert len(columns) <= 4 + 3
    unbounded = vocabulary_of(build_model("logistic", max_categories=0))
    unbounded.learn_one({"ctx_id": "x"})
    assert unbounded.transform_one({"ctx_id": "y"}) == {"ctx_id": "y"}


def test_buckets_are_the_same_in_every_process():
    values = [f"value-{i}" for i in range(50)] + ["", "é", "日本"]
    code = (
        "import sys; from learners.models import BoundedCategories as B; "
        f"print([B.bucket(v, 32) for v in {values!r}])"
    )
    seen = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(  # noqa: S603
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        seen.add(out.strip())
    assert seen == {str([BoundedCategories.bucket(v, 32) for v in values])}


def test_the_bound_is_configured_and_a_bad_value_refused():
    settings = Settings(model={"spec": "logistic", "max_categories": 5, "category_buckets": 2})
    vocabulary = vocabulary_of(settings.model.build())
    assert (vocabulary.max_categories, vocabulary.buckets) == (5, 2)
    assert (Settings().model.max_categories, Settings().model.category_buckets) == (64, 32)
    with pytest.raises(ValidationError, match="category_buckets"):
        Settings(model={"category_buckets": 0})
    with pytest.raises(ValidationError, match="max_categories"):
        Settings(model={"max_categories": -1})


def test_a_reset_after_concept_drift_keeps_the_configured_bound(tmp_path):
    path = flipped_stream(tmp_path / "flip.jsonl")
    settings = Settings(
        features={"mode": "raw"},
        model={"max_categories": 3, "category_buckets": 2},
        monitoring={"concept_action": "challenger"},
    )
    result = backtest(path, settings, ["logistic"])
    assert [slot.name for slot in result.slots] == ["logistic", "logistic/challenger"]
    for slot in result.slots:
        vocabulary = vocabulary_of(slot.model)
        assert (vocabulary.max_categories, vocabulary.buckets) == (3, 2)
