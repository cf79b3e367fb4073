"""The monitoring artifacts: render them, write them, check generated or deployed ones.

The files are rendered from alert thresholds (:class:`metrics.thresholds.AlertThresholds`;
its defaults give the committed files) and from the metric names defined in
``metrics/``. ``streamlearn metrics generate|check`` (:mod:`cli.metrics`) runs these
functions with the thresholds of a streamlearn configuration.

Examples
--------
>>> t = AlertThresholds(psi_critical=0.4)
>>> deployed = parse_rules(rules_yaml(AlertThresholds()))
>>> for line in compare_rules(t, deployed):
...     print(line.replace(" where the configuration has", ", config"))
StreamlearnFeatureDriftPSI (warning): expr has 0.25, config 0.4 (psi_critical)
StreamlearnPredictionDriftPSI (critical): expr has 0.25, config 0.4 (psi_critical)
>>> compare_rules(t, parse_rules(rules_yaml(t)))
[]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

from streamlearn.metrics.alert_files import (
    ALERTMANAGER_COMPOSE_PATH,
    ALERTMANAGER_PATH,
    COMPOSE_WEBHOOK_URL,
    RULE_TESTS_PATH,
    RULES_PATH,
    alertmanager_config,
    rule_tests_yaml,
    rules_yaml,
)
from streamlearn.metrics.alerts import alert_rules, recording_rules
from streamlearn.metrics.dashboard import (
    DASHBOARD_PATH,
    DASHBOARD_PROVIDER_PATH,
    DATASOURCE_PATH,
    dashboard_json,
    dashboard_provider_yaml,
    datasource_yaml,
)
from streamlearn.metrics.thresholds import AlertThresholds, duration_seconds

__all__ = [
    "REPO_ROOT",
    "artifacts",
    "check",
    "check_rules",
    "compare_rules",
    "generate",
    "parse_rules",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

#: A rule's identity in a rule file: ``(alert or record name, severity)``.
RuleKey = tuple[str, str]


def artifacts(thresholds: AlertThresholds | None = None) -> dict[str, str]:
    """Every generated file: repository-relative path to content."""
    t = thresholds or AlertThresholds()
    renderers: dict[str, Callable[[], str]] = {
        RULES_PATH: lambda: rules_yaml(t),
        RULE_TESTS_PATH: lambda: rule_tests_yaml(t),
        ALERTMANAGER_PATH: alertmanager_config,
        ALERTMANAGER_COMPOSE_PATH: lambda: alertmanager_config(COMPOSE_WEBHOOK_URL),
        DASHBOARD_PATH: lambda: dashboard_json(t),
        DATASOURCE_PATH: datasource_yaml,
        DASHBOARD_PROVIDER_PATH: dashboard_provider_yaml,
    }
    return {path: render() for path, render in renderers.items()}


def generate(root: Path = REPO_ROOT, thresholds: AlertThresholds | None = None) -> list[str]:
    """Write the artifacts under ``root``; return the paths whose content changed."""
    changed = []
    for rel, content in artifacts(thresholds).items():
        path = root / rel
        if path.is_file() and path.read_text(encoding="utf-8") == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        changed.append(rel)
    return changed


def check(root: Path = REPO_ROOT, thresholds: AlertThresholds | None = None) -> list[str]:
    """The artifacts under ``root`` that are missing or differ from a fresh rendering."""
    stale = []
    for rel, content in artifacts(thresholds).items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            stale.append(rel)
    return stale


def parse_rules(text: str, source: str = "rules") -> dict[RuleKey, dict[str, str]]:
    """The streamlearn rules of a Prometheus rule file, by ``(name, severity)``.

    Each value holds the rule's ``expr`` and ``for`` (``"0s"`` when absent).
    Rules whose name does not start with ``Streamlearn`` or ``streamlearn:`` are
    ignored: a deployment may keep its own rules beside ours.

    Raises
    ------
    ValueError
        When ``text`` is not a Prometheus rule file.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("groups", []), list):
        raise ValueError(f"{source}: not a Prometheus rule file (no list of groups)")
    rules: dict[RuleKey, dict[str, str]] = {}
    for group in doc.get("groups") or []:
        if not isinstance(group, dict) or not isinstance(group.get("rules", []), list):
            raise ValueError(f"{source}: a group without a list of rules")
        for rule in group.get("rules") or []:
            if not isinstance(rule, dict):
                raise ValueError(f"{source}: a rule that is not a mapping")
            name = str(rule.get("alert") or rule.get("record") or "")
            if not (name.startswith("Streamlearn") or name.startswith("streamlearn:")):
                continue
            given = rule.get("labels")
            labels = given if isinstance(given, dict) else {}
            key = (name, str(labels.get("severity", "")))
            rules[key] = {"expr": str(rule.get("expr", "")), "for": str(rule.get("for", "0s"))}
    return rules


def _expected_rules(t: AlertThresholds) -> dict[RuleKey, dict[str, str]]:
    expected = {(r["record"], ""): {"expr": r["expr"], "for": "0s"} for r in recording_rules()}
    for rule in alert_rules(t):
        expected[(rule.alert, rule.severity)] = {"expr": rule.expr, "for": rule.for_}
    return expected


#: A duration (``15m``) or a number (``0.25``, ``1e-05``) in a rule's expression.
_TOKEN = re.compile(
    r"(?<![\w.])(?:[0-9]+(?:ms|s|m|h|d|w|y))+(?![\w.])|[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?"
)


def _threshold_names(t: AlertThresholds, token: str) -> list[str]:
    """Names of the thresholds whose value is written ``token`` in a rule."""
    names = []
    for name, value in t.model_dump().items():
        if isinstance(value, str):
            if value == token:
                names.append(name)
            continue
        try:
            if float(token) == float(value):
                names.append(name)
        except ValueError:
            continue
    return names


def _describe(key: RuleKey, field: str, deployed: str, wanted: str, t: AlertThresholds) -> str:
    name = f"{key[0]} ({key[1]})" if key[1] else key[0]
    have, want = _TOKEN.findall(deployed), _TOKEN.findall(wanted)
    if len(have) == len(want) and _TOKEN.sub("#", deployed) == _TOKEN.sub("#", wanted):
        diffs = [(a, b) for a, b in zip(have, want, strict=True) if a != b]
        parts = []
        for a, b in diffs:
            named = ", ".join(_threshold_names(t, b))
            parts.append(f"{a} where the configuration has {b}" + (f" ({named})" if named else ""))
        return f"{name}: {field} has " + "; ".join(parts)
    return f"{name}: {field} is {deployed!r}, the configuration gives {wanted!r}"


def compare_rules(t: AlertThresholds, deployed: dict[RuleKey, dict[str, str]]) -> list[str]:
    """One line per rule whose deployed form disagrees with thresholds ``t``; empty when equal.

    A missing rule, a rule that is not ours to deploy any more, and each
    differing ``expr`` or ``for`` are named, with the thresholds involved.
    """
    expected = _expected_rules(t)
    problems = []
    for key in sorted(set(expected) | set(deployed)):
        name = f"{key[0]} ({key[1]})" if key[1] else key[0]
        if key not in deployed:
            problems.append(f"{name}: missing from the deployed rules")
            continue
        if key not in expected:
            problems.append(f"{name}: deployed but not generated from the configuration")
            continue
        for field in ("expr", "for"):
            have, want = deployed[key][field], expected[key][field]
            if field == "for":
                try:
                    if duration_seconds(have) == duration_seconds(want):
                        continue
                except ValueError:
                    pass
            if have != want:
                problems.append(_describe(key, field, have, want, t))
    return problems


def check_rules(t: AlertThresholds, rules_dir: Path) -> list[str]:
    """:func:`compare_rules` for the ``*.yml`` and ``*.yaml`` rule files of ``rules_dir``.

    Raises
    ------
    ValueError
        When the folder holds no rule file or a file that is not a rule file.
    """
    if not rules_dir.is_dir():
        raise ValueError(f"{rules_dir} is not a folder of rule files")
    files = sorted([*rules_dir.glob("*.yml"), *rules_dir.glob("*.yaml")])
    if not files:
        raise ValueError(f"no rule files (*.yml, *.yaml) in {rules_dir}")
    deployed: dict[RuleKey, dict[str, str]] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot be read: {exc}") from None
        deployed.update(parse_rules(text, str(path)))
    return compare_rules(t, deployed)
