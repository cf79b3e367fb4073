"""Batch scoring (``learners/batch.py``) gives the numbers of one ``predict_proba_one``
per input, for any learned ``logistic`` preset, and falls back to it for any other model."""

from __future__ import annotations

import math
import random

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import compose, linear_model, optim, preprocessing

from streamlearn.features.interactions import EntityState, InteractionConfig
from streamlearn.features.limits import Limits
from streamlearn.features.memory_store import MemoryStore
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig, features_of
from streamlearn.learners.batch import LogisticScorer, batch_scorer, score_many
from streamlearn.learners.models import (
    BoundedCategories,
    Numbers,
    Strings,
    build_model,
    learn,
    score,
)
from streamlearn.stream.harness import learn_world
from streamlearn.stream.processor import ModelSlot, Processor
from streamlearn.stream.serve import kinds, parse_rank, score_events
from streamlearn.stream.synthetic import World, WorldConfig, feed_requests

RELATIVE = 1e-12

#: Numeric names, two of them named like one-hot columns of the string features
#: ("s" = "x" is the column "s_x", "t" = "y_z" and "t_y" = "z" are both "t_y_z").
NUMBER_NAMES = ["a", "b", "c", "constant", "s_x", "t_y_z"]
STRING_NAMES = ["s", "t", "t_y"]
VALUES = ["x", "y", "z", "w", "v", "u", "y_z", "é", "\ud800"]

numbers = st.one_of(
    st.floats(-1e9, 1e9, allow_nan=False),
    st.integers(-1000, 1000),
    st.booleans(),
    st.sampled_from([0.0, 1e-9, 1e9, -1e9, 0.5]),
    st.sampled_from([2**53 + 1, 2**60 + 3, 2**70]),  # rounded to a float, or past int64
)


@st.composite
def feature_dicts(draw, number_names=NUMBER_NAMES, string_names=STRING_NAMES):
    """A feature dict: any subset of the names (missing features), in any order."""
    x: dict = {}
    for name in draw(st.permutations(number_names + string_names)):
        if draw(st.booleans()):
            continue
        if name == "constant":
            x[name] = 3.0
        elif name in string_names:
            x[name] = draw(st.sampled_from(VALUES))
        else:
            x[name] = draw(numbers)
    if draw(st.booleans()):  # a feature the model never saw
        x[draw(st.sampled_from(["new", "s_new"]))] = draw(st.one_of(numbers, st.just("x")))
    return x


def same(a: float, b: float) -> bool:
    """Equal within :data:`RELATIVE`, and of one type (River's clamped 0 and 1 are ints)."""
    return type(a) is type(b) and math.isclose(a, b, rel_tol=RELATIVE, abs_tol=0.0)


@st.composite
def learned_models(draw):
    """A ``logistic`` preset that learned 0 to 40 random examples."""
    model = build_model(
        "logistic", draw(st.sampled_from([0, 1, 2, 3, 64])), draw(st.integers(1, 4))
    )
    examples = st.tuples(
        feature_dicts(number_names=["a", "b", "c", "constant"]),
        st.booleans(),
        st.sampled_from([1.0, 0.5, 3.0]),
    )
    for x, label, weight in draw(st.lists(examples, max_size=40)):
        learn(model, x, float(label), weight)
    if draw(st.booleans()):  # numbers named like one-hot columns, learned as numbers
        learn(model, {"s_x": 2.0, "t_y_z": -1.0, "s": "x"}, 1.0, 1.0)
    return model


@st.composite
def candidates(draw):
    """The inputs of one ranking request: mostly alike (the same features in the same
    order and of the same types, values differing), with a few odd ones."""
    names = draw(st.permutations(NUMBER_NAMES + STRING_NAMES))
    kept = [name for name in names if draw(st.booleans())]
    strings = {name for name in kept if name in STRING_NAMES or draw(st.integers(0, 9)) == 0}
    xs = []
    for _ in range(draw(st.integers(8, 40))):
        x: dict = {}
        for name in kept:
            if name in strings:
                x[name] = draw(st.sampled_from(VALUES))
            elif name == "constant":
                x[name] = 3.0
            else:
                x[name] = draw(numbers)
        xs.append(x)
    if kept and draw(st.booleans()):  # one input where a feature changes kind
        x = draw(st.sampled_from(xs))
        name = draw(st.sampled_from(kept))
        x[name] = draw(numbers) if name in strings else draw(st.sampled_from(VALUES))
    for _ in range(draw(st.integers(0, 3))):
        xs.insert(draw(st.integers(0, len(xs))), draw(feature_dicts()))
    return xs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=learned_models(), xs=st.lists(feature_dicts(), min_size=1, max_size=20))
def test_batch_scores_equal_predict_proba_one_for_any_learned_logistic(model, xs):
    scorer = batch_scorer(model)
    assert scorer is not None
    batch = [scorer.score(x) for x in xs]
    expected = [score(model, x) for x in xs]
    assert all(same(a, b) for a, b in zip(batch, expected, strict=True)), (batch, expected)
    assert score_many(model, xs) == batch


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=learned_models(), xs=candidates())
def test_alike_candidates_scored_together_equal_predict_proba_one(model, xs):
    batch = batch_scorer(model).score_many(xs)
    expected = [score(model, x) for x in xs]
    assert all(same(a, b) for a, b in zip(batch, expected, strict=True)), (batch, expected)


def test_a_model_that_learned_nothing_scores_one_half():
    xs = [{}, {"a": 1.0, "s": "x"}, {"a": True}]
    assert batch_scorer(build_model("logistic")).score_many(xs) == [0.5, 0.5, 0.5]


def test_values_past_the_vocabulary_are_scored_in_their_bucket():
    model = build_model("logistic", max_categories=2, category_buckets=3)
    for n, device in enumerate(["ios", "web", "tv", "car", "ios", "fridge"]):
        learn(model, {"device": device, "n": float(n)}, float(n % 2), 1.0)
    xs = [{"device": d, "n": 1.0} for d in ["ios", "web", "tv", "car", "fridge", "watch"]]
    assert batch_scorer(model).score_many(xs) == [score(model, x) for x in xs]
    # bucketed values do score differently from each other (not all the unknown column)
    assert len({score(model, x) for x in xs[2:]}) > 1


def test_saturated_scores_are_river_clamped_sigmoid():
    model = build_model("logistic")
    for _ in range(300):
        learn(model, {"n": 1.0, "s": "a"}, 1.0, 1.0)
        learn(model, {"n": -1.0, "s": "b"}, 0.0, 1.0)
    xs = [{"n": 1e9, "s": "a"}, {"n": -1e9, "s": "b"}]
    assert batch_scorer(model).score_many(xs) == [score(model, x) for x in xs] == [1.0, 0.0]


def test_scores_match_on_a_model_trained_on_the_synthetic_world():
    """The served case: the worker's features of ranking candidates, as `/rank` scores them."""
    config = FeatureConfig()
    settings_ = {"max_categories": 64}
    world_config = WorldConfig(events=1500, users=60, items=120, seed=11)
    world = World.create(world_config)
    model = build_model("logistic", **settings_)
    store = MemoryStore(StoreConfig(), config.interactions)
    processor = Processor([ModelSlot("champion", model)], store, config, Limits(), 0.5)
    last = learn_world(processor, world_config, world, 250)
    assert batch_scorer(model) is not None
    rng = random.Random(3)
    for feed in feed_requests(world, last, 5, 100):
        events = parse_rank(orjson.dumps(feed.body()), Limits(), 1000)
        states = [
            [(kind, _state(rng, config.interactions)) for kind in kinds(event)] for event in events
        ]
        expected = [
            score(model, features_of(event, list(state), config))
            for event, state in zip(events, states, strict=True)
        ]
        assert score_events(model, events, states, config) == expected
        assert len(set(expected)) > 10


def _state(rng: random.Random, interactions: InteractionConfig) -> EntityState:
    if rng.random() < 0.3:
        return EntityState.empty(interactions)
    count = rng.randrange(1, 50)
    return EntityState(
        count=count,
        positives=float(rng.randrange(count + 1)),
        labelled=float(count),
        last_ms=1_767_225_600_000 - rng.randrange(10**9),
        decay_ref_ms=1_767_225_600_000 - rng.randrange(10**9),
        decayed=[rng.random() * count for _ in interactions.half_lives_s],
    )


def _logistic_with(scaler=None, encoder=None, regression=None) -> compose.Pipeline:
    numeric = Numbers() | (scaler or preprocessing.StandardScaler())
    categorical = Strings() | BoundedCategories(8, 4) | (encoder or preprocessing.OneHotEncoder())
    return (numeric + categorical) | (
        regression or linear_model.LogisticRegression(optimizer=optim.SGD(0.003))
    )


@pytest.mark.parametrize(
    "model",
    [
        build_model("hoeffding_tree"),
        build_model("arf"),
        build_model("river.linear_model:LogisticRegression"),
        Numbers() | preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        _logistic_with(scaler=preprocessing.StandardScaler(with_std=False)),
        _logistic_with(scaler=preprocessing.MinMaxScaler()),
        _logistic_with(encoder=preprocessing.OneHotEncoder(drop_zeros=True)),
        _logistic_with(regression=linear_model.LogisticRegression(loss=optim.losses.Hinge())),
        _logistic_with(regression=linear_model.PAClassifier()),
    ],
    ids=[
        "hoeffding_tree",
        "arf",
        "factory",
        "no_strings",
        "no_std",
        "minmax",
        "drop_zeros",
        "hinge",
        "pa",
    ],
)
def test_other_models_are_not_recognised_and_score_one_at_a_time(model):
    strings = not isinstance(model, linear_model.LogisticRegression)  # it takes numbers only
    xs = [{"a": float(n), **({"s": "xy"[n % 2]} if strings else {})} for n in range(30)]
    for n, x in enumerate(xs):
        learn(model, x, float(n % 2), 1.0)
    assert batch_scorer(model) is None
    assert score_many(model, xs) == [score(model, x) for x in xs]


def test_the_preset_as_built_is_recognised():
    assert isinstance(batch_scorer(_logistic_with()), LogisticScorer)
    assert isinstance(batch_scorer(build_model("logistic", 0, 1)), LogisticScorer)


def test_a_model_with_a_non_finite_number_is_scored_by_the_model():
    model = build_model("logistic")
    learn(model, {"a": 1.0, "s": "x"}, 1.0, 1.0)
    learn(model, {"a": 1e300, "s": "x"}, 0.0, 1.0)
    assert batch_scorer(model) is None
    xs = [{"a": 1.0, "s": "x"}]
    assert [repr(s) for s in score_many(model, xs)] == [repr(score(model, x)) for x in xs]


def test_learning_during_prediction_is_left_to_the_model():
    model = build_model("logistic")
    learn(model, {"a": 1.0, "s": "x"}, 1.0, 1.0)
    with compose.learn_during_predict():
        assert batch_scorer(model) is None
    assert batch_scorer(model) is not None


def test_a_number_named_like_a_one_hot_column_is_scored_by_the_model():
    model = build_model("logistic")
    for n in range(10):
        learn(model, {"s_x": float(n), "s": "xy"[n % 2], "a": float(n % 3)}, float(n % 2), 1.0)
    scorer = batch_scorer(model)
    xs = [{"s": "x", "s_x": 4.0}, {"s": "y", "s_x": 1.0, "a": 2.0}, {"s": "z", "s_z": 1.0}]
    assert scorer.score_many(xs) == [score(model, x) for x in xs]
