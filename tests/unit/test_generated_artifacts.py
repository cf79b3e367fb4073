"""The committed monitoring artifacts equal what ``streamlearn metrics generate`` writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamlearn.cli.metrics import main
from streamlearn.metrics.artifacts import REPO_ROOT, artifacts, check, generate

REPO = Path(__file__).resolve().parents[2]


def test_committed_artifacts_are_up_to_date() -> None:
    assert REPO_ROOT == REPO
    stale = check(REPO)
    assert stale == [], f"stale generated files {stale}: run `streamlearn metrics generate`"


def test_generate_then_check_round_trip(tmp_path: Path) -> None:
    assert check(tmp_path) == list(artifacts())
    assert generate(tmp_path) == list(artifacts())
    assert check(tmp_path) == []
    assert generate(tmp_path) == []
    (tmp_path / next(iter(artifacts()))).write_text("edited by hand\n")
    assert main(["check", "--root", str(tmp_path)]) == 1
    assert main(["generate", "--root", str(tmp_path)]) == 0
    assert main(["check", "--root", str(tmp_path)]) == 0


def test_module_entry_point_checks_the_repository() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamlearn.cli", "metrics", "check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
