"""The backtest reproduces River's own progressive validation exactly."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from river import evaluate, metrics

from streamlearn.stream.backtest import backtest, delayed_labels, file_records
from streamlearn.stream.config import Settings
from streamlearn.stream.datasets import dataset_events, river_dataset
from streamlearn.stream.synthetic import WorldConfig, generate_world

from .factories import scaled_logistic

FACTORY = "tests.unit.stream.factories:scaled_logistic"


def write_lines(path: Path, records) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def river_run(delay: int | None) -> tuple[list[float], float, float]:
    """River's scores in question order, its log loss and its accuracy."""
    model = scaled_logistic()
    scores: list[float] = []
    predict = model.predict_proba_one

    def recording(x):
        proba = predict(x)
        scores.append(proba[True])
        return proba

    model.predict_proba_one = recording  # type: ignore[method-assign]
    log_loss = evaluate.progressive_val_score(
        river_dataset("phishing"), model, metrics.LogLoss(), delay=delay
    )
    accuracy = evaluate.progressive_val_score(
        river_dataset("phishing"), scaled_logistic(), metrics.Accuracy(), delay=delay
    )
    return scores, log_loss.get(), accuracy.get()


@pytest.mark.parametrize("delay_s", [None, 25])
def test_raw_backtest_scores_and_metrics_equal_river_progressive_validation(tmp_path, delay_s):
    path = write_lines(tmp_path / "phishing.jsonl", dataset_events("phishing"))
    predictions = io.BytesIO()
    result = backtest(
        path,
        Settings(features={"mode": "raw"}),
        models=[FACTORY],
        label_delay_s=delay_s,
        predictions=predictions,
    )

    ours = [orjson.loads(line)["score"] for line in predictions.getvalue().splitlines()]
    theirs, log_loss, accuracy = river_run(delay_s)
    assert len(ours) == 1250
    assert ours == theirs[: len(ours)]
    summary = result.summary()["models"][FACTORY]["metrics"]
    assert summary["log_loss"] == log_loss
    assert summary["accuracy"] == accuracy
    assert result.labels_learned == 1250


def test_delayed_labels_come_out_in_river_question_answer_order():
    events = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "timestamp": i * 1000,
                "user_id": "u",
                "item_id": "i",
                "label": i % 2 == 0,
            }
        )
        for i in range(5)
    ]
    order = [
        (r.kind, orjson.loads(r.value)["event_id"])
        for r in delayed_labels(file_records(events), delay_ms=2000)
    ]
    assert order == [
        ("events", "e0"),
        ("events", "e1"),
        ("labels", "e0"),
        ("events", "e2"),
        ("labels", "e1"),
        ("events", "e3"),
        ("labels", "e2"),
        ("events", "e4"),
        ("labels", "e3"),
        ("labels", "e4"),
    ]


def test_backtest_is_deterministic_and_counts_bad_lines(tmp_path):
    records = [orjson.dumps(r) for r in generate_world(WorldConfig(events=600, seed=1))]
    records[10:10] = [
        b"{not json",
        b'{"event_id": "x", "timestamp": 1, "user_id": "u", "item_id": "i"}',
    ]
    path = tmp_path / "world.jsonl"
    path.write_bytes(b"\n".join(records) + b"\n")

    outputs = []
    for _ in range(2):
        predictions, letters = io.BytesIO(), io.BytesIO()
        result = backtest(
            path,
            Settings(),
            models=["logistic", "hoeffding_tree"],
            predictions=predictions,
            dead_letters=letters,
        )
        outputs.append(predictions.getvalue())

    assert outputs[0] == outputs[1]
    assert result.dead_letters == {"invalid_json": 1, "timestamp_out_of_range": 1}
    assert len(letters.getvalue().splitlines()) == 2
    assert result.events == 600 and result.labels_learned == 600


def test_interaction_features_beat_the_producer_features_alone(tmp_path):
    path = write_lines(
        tmp_path / "world.jsonl", generate_world(WorldConfig(events=10_000, seed=11))
    )
    auc = {}
    for mode in ("default", "raw"):
        result = backtest(path, Settings(features={"mode": mode}), models=["logistic"])
        auc[mode] = result.summary()["models"]["logistic"]["metrics"]["roc_auc"]
    print(f"progressive ROC AUC: interactions {auc['default']:.4f}, raw {auc['raw']:.4f}")
    assert auc["default"] > auc["raw"] + 0.05


def test_rows_the_reader_refuses_are_dead_letters_with_their_reason_and_content(tmp_path):
    world = [r for r in generate_world(WorldConfig(events=50, seed=3)) if "user_id" in r]
    lines = ["event_id,timestamp,user_id,item_id,x"]
    lines += [f"{r['event_id']},{r['timestamp']},{r['user_id']},{r['item_id']},1" for r in world]
    first = world[0]
    lines.insert(3, f"bad-1,{first['timestamp']},u,i,nan")
    lines.insert(5, f"bad-2,{first['timestamp']},u,i,1,extra")
    lines.append(f"bad-3,{first['timestamp']},u,i,{2**70}")  # after the last record
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines) + "\n")

    letters = io.BytesIO()
    result = backtest(path, Settings(), ["logistic"], dead_letters=letters, batch_size=20)

    assert result.events == 50
    assert result.dead_letters == {"not_finite": 1, "invalid_value": 1, "too_large": 1}
    written = [orjson.loads(line) for line in letters.getvalue().splitlines()]
    assert [(d["reason"], orjson.loads(d["value"])["event_id"]) for d in written] == [
        ("not_finite", "bad-1"),
        ("invalid_value", "bad-2"),
        ("too_large", "bad-3"),
    ]
    assert "line 4, column 'x'" in written[0]["detail"]
    assert result.summary()["dead_letters"] == dict(sorted(result.dead_letters.items()))
