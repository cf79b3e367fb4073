"""No module imports a layer above its own.

The packages are layered, each importing only its own layer and those below it:

0. ``features``: the event schema and the feature math, with their Redis store.
1. ``learners`` and ``metrics``: models, registry and checkpoints; Prometheus series,
   drift and quality statistics, alert rules and dashboards. Both stand on ``features``.
2. ``stream``: the streaming runtime (Kafka I/O, the processor, the worker, the HTTP
   scoring API) and the offline tools (replay, backtest, report), built from the above.
3. ``stack``: operations tooling, the local stack of Kafka, Redis, Prometheus and
   Alertmanager run as local processes, the alert receiver and the demo.
4. ``cli``: the ``streamlearn`` command line, the one layer that may import every other.

Every ``import`` and ``from ... import`` counts, at module level or inside a function
(a deferred import is still a dependency), read from the source with :mod:`ast`.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Package -> its layer; a module may import packages of its layer or a lower one.
LAYERS: dict[str, int] = {
    "features": 0,
    "learners": 1,
    "metrics": 1,
    "stream": 2,
    "stack": 3,
    "cli": 4,
}


def imported_packages(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import in ``tree``, however nested.

    >>> imported_packages(ast.parse("import stream.worker\\ndef f():\\n    from cli import app"))
    [(1, 'stream'), (3, 'cli')]
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return sorted(found)


def upward_imports(root: Path) -> list[str]:
    """``path:line: package (layer) imports package (layer)`` for each import upwards."""
    problems = []
    for package, layer in LAYERS.items():
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, imported in imported_packages(tree):
                if LAYERS.get(imported, -1) > layer:
                    problems.append(
                        f"{path.relative_to(root).as_posix()}:{line}: {package} (layer {layer})"
                        f" imports {imported} (layer {LAYERS[imported]})"
                    )
    return problems


def test_every_layer_is_a_package_of_the_repository() -> None:
    missing = [name for name in LAYERS if not (REPO / name / "__init__.py").is_file()]
    assert missing == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    problems = upward_imports(REPO)
    assert problems == [], "imports of a layer above:\n" + "\n".join(problems)


def test_an_upward_import_inside_a_function_is_found(tmp_path: Path) -> None:
    for package in LAYERS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "learners" / "tool.py").write_text(
        "from features.schema import Event\n\n\ndef main():\n    from stream.config import X\n"
    )
    (tmp_path / "stream" / "runner.py").write_text("import cli.app\n")
    assert upward_imports(tmp_path) == [
        "learners/tool.py:5: learners (layer 1) imports stream (layer 2)",
        "stream/runner.py:1: stream (layer 2) imports cli (layer 4)",
    ]
