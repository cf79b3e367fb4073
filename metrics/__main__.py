"""Generate the monitoring artifacts, or check that the committed ones are current.

Usage::

    python -m metrics generate [--root DIR]   # write every generated file
    python -m metrics check [--root DIR]      # exit 1 and list the stale files

The files are rendered from :class:`metrics.thresholds.AlertThresholds` (its
defaults) and the metric names defined in ``metrics/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from metrics.alerts import (
    ALERTMANAGER_PATH,
    RULE_TESTS_PATH,
    RULES_PATH,
    alertmanager_config,
    rule_tests_yaml,
    rules_yaml,
)
from metrics.dashboard import (
    DASHBOARD_PATH,
    DASHBOARD_PROVIDER_PATH,
    DATASOURCE_PATH,
    dashboard_json,
    dashboard_provider_yaml,
    datasource_yaml,
)
from metrics.thresholds import AlertThresholds

__all__ = ["REPO_ROOT", "artifacts", "check", "generate", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def artifacts(thresholds: AlertThresholds | None = None) -> dict[str, str]:
    """Every generated file: repository-relative path to content."""
    t = thresholds or AlertThresholds()
    renderers: dict[str, Callable[[], str]] = {
        RULES_PATH: lambda: rules_yaml(t),
        RULE_TESTS_PATH: lambda: rule_tests_yaml(t),
        ALERTMANAGER_PATH: alertmanager_config,
        DASHBOARD_PATH: lambda: dashboard_json(t),
        DATASOURCE_PATH: datasource_yaml,
        DASHBOARD_PROVIDER_PATH: dashboard_provider_yaml,
    }
    return {path: render() for path, render in renderers.items()}


def generate(root: Path = REPO_ROOT) -> list[str]:
    """Write the artifacts under ``root``; return the paths whose content changed."""
    changed = []
    for rel, content in artifacts().items():
        path = root / rel
        if path.is_file() and path.read_text(encoding="utf-8") == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        changed.append(rel)
    return changed


def check(root: Path = REPO_ROOT) -> list[str]:
    """The artifacts under ``root`` that are missing or differ from a fresh rendering."""
    stale = []
    for rel, content in artifacts().items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            stale.append(rel)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m metrics",
        description="Generate the alert rules, promtool tests, Alertmanager config and "
        "Grafana dashboard from metrics/, or check the committed ones.",
    )
    parser.add_argument("command", choices=("generate", "check"))
    parser.add_argument(
        "--root", type=Path, default=REPO_ROOT, help="repository root (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.command == "generate":
        changed = generate(args.root)
        for rel in changed:
            print(f"wrote {rel}")
        if not changed:
            print("all generated files are up to date")
        return 0
    stale = check(args.root)
    for rel in stale:
        print(f"stale: {rel} (run `python -m metrics generate`)", file=sys.stderr)
    if not stale:
        print("all generated files are up to date")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
