"""River's bundled data sets and synthetic generators as event files, no download needed.

Each sample ``(x, y)`` becomes one event with ``features = x`` and ``label = y``,
one second apart in event time, so a backtest with ``--features raw`` sees
exactly River's ``x``.

Examples
--------
>>> events = list(dataset_events("phishing", limit=2))
>>> events[0]["event_id"], events[0]["label"], sorted(events[0]["features"])[:2]
('phishing-0', True, ['age_of_domain', 'anchor_from_other_domain'])
>>> sorted(DATASETS)[:3]
['agrawal', 'agrawal_drift', 'bananas']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from river import datasets
from river.datasets import synth

__all__ = ["DATASETS", "dataset_events", "river_dataset"]

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _agrawal_drift(seed: int) -> Iterable[tuple[dict[str, Any], Any]]:
    return synth.ConceptDriftStream(
        stream=synth.Agrawal(classification_function=0, seed=seed),
        drift_stream=synth.Agrawal(classification_function=4, seed=seed),
        seed=seed,
        position=5000,
        width=200,
    )


def _sea_drift(seed: int) -> Iterable[tuple[dict[str, Any], Any]]:
    return synth.ConceptDriftStream(
        stream=synth.SEA(variant=0, seed=seed),
        drift_stream=synth.SEA(variant=3, seed=seed),
        seed=seed,
        position=5000,
        width=100,
    )


#: Name -> (factory taking a seed, default number of samples, description).
DATASETS: dict[str, tuple[Callable[[int], Iterable[tuple[dict[str, Any], Any]]], int, str]] = {
    "phishing": (lambda seed: datasets.Phishing(), 1250, "River's bundled phishing web pages"),
    "bananas": (
        lambda seed: datasets.Bananas(),  # type: ignore[no-untyped-call]  # unannotated in River
        5300,
        "River's bundled two-moons-like data",
    ),
    "agrawal": (
        lambda seed: synth.Agrawal(classification_function=0, seed=seed),
        10_000,
        "Agrawal loan generator, function 0",
    ),
    "agrawal_drift": (_agrawal_drift, 10_000, "Agrawal with a concept drift at sample 5000"),
    "sea": (lambda seed: synth.SEA(variant=0, seed=seed), 10_000, "SEA concepts, variant 0"),
    "sea_drift": (_sea_drift, 10_000, "SEA with a concept drift at sample 5000"),
}


def river_dataset(
    name: str, seed: int = 42, limit: int | None = None
) -> Iterator[tuple[dict[str, Any], Any]]:
    """The ``(x, y)`` samples of a named data set, as River yields them."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; use one of {', '.join(sorted(DATASETS))}")
    factory, default_size, _ = DATASETS[name]
    return islice(iter(factory(seed)), limit if limit is not None else default_size)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def dataset_events(name: str, seed: int = 42, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Events of a named data set: one per sample, inline label, one second apart."""
    for i, (x, y) in enumerate(river_dataset(name, seed, limit)):
        label = bool(y) if not isinstance(y, str) else y in ("1", "true", "True")
        yield {
            "event_id": f"{name}-{i}",
            "timestamp": START_MS + i * 1000,
            "user_id": "user",
            "item_id": name,
            "features": {str(k): _jsonable(v) for k, v in x.items()},
            "label": label,
        }
