"""Every module of the packages (and of the benchmarks) stays under 500 lines.

A module that grows past it is split by what its code is, so a newcomer finds
each thing in a room of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("features", "learners", "metrics", "stream", "stack", "cli", "bench")
LIMIT = 500
MODULES = sorted(
    path.relative_to(REPO)
    for folder in FOLDERS
    for path in (REPO / folder).rglob("*.py")
    if "__pycache__" not in path.parts
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.as_posix())
def test_module_is_under_the_size_limit(path: Path) -> None:
    lines = len((REPO / path).read_text(encoding="utf-8").splitlines())
    assert lines < LIMIT, f"{path.as_posix()} has {lines} lines: split it by what the code is"
