"""The wheel built from the repository installs one package, ``streamlearn``.

The six packages are top-level folders of the repository; ``streamlearn/`` links
them under the one installed name, so nothing generic (``metrics``, ``features``)
lands at the top of site-packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("features", "learners", "metrics", "stream", "stack", "cli")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a clean copy of the sources (no stale ``build/``)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*PACKAGES, "streamlearn"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (path,) = out.glob("streamlearn-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_installs_only_streamlearn_at_the_top_level(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"streamlearn"}


def test_the_wheel_holds_every_module_and_data_file_of_the_packages(
    wheel: zipfile.ZipFile,
) -> None:
    names = set(wheel.namelist())
    expected = {
        f"streamlearn/{path.relative_to(REPO).as_posix()}"
        for package in PACKAGES
        for pattern in ("*.py", "*.lua")
        for path in (REPO / package).rglob(pattern)
        if "__pycache__" not in path.parts
    }
    assert expected - names == set()
    assert "streamlearn/__init__.py" in names


def test_the_console_script_is_the_namespaced_cli(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = (n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    assert "streamlearn = streamlearn.cli.app:app" in wheel.read(entry_points).decode()
