"""Kafka's jars for the local stack: resolved once with Maven into a cache outside the
repository, from the pom that names the broker's version (``deploy/kafka/pom.xml``).

The other services are Debian binaries that ``scripts/bootstrap`` installs;
:mod:`stack.supervisor` runs them all, and raises :class:`StackError` when one cannot be
prepared, started or stopped.

Examples
--------
>>> KAFKA_POM.relative_to(REPO_ROOT).as_posix()
'deploy/kafka/pom.xml'
>>> default_jar_cache("4.1.1").name
'kafka-4.1.1'
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = [
    "KAFKA_POM",
    "REPO_ROOT",
    "StackError",
    "default_jar_cache",
    "ensure_kafka_jars",
    "jars_resolved",
    "kafka_version",
]

#: Repository checkout this module belongs to (when installed editable or run from source).
REPO_ROOT: Path = Path(__file__).resolve().parents[1]
#: Maven project that resolves the Kafka broker and its runtime dependencies.
KAFKA_POM: Path = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
_MARKER = ".complete"


class StackError(RuntimeError):
    """A service of the local stack could not be prepared, started or stopped."""


def kafka_version(pom: Path = KAFKA_POM) -> str:
    """Read the ``kafka.version`` property of the runtime pom.

    Raises
    ------
    StackError
        When the pom is missing (the stack needs a repository checkout) or has no version.
    """
    if not pom.is_file():
        raise StackError(
            f"Kafka runtime pom not found at {pom}: the local stack runs from a checkout of "
            "the streamlearn repository (pip install -e .), not from an installed wheel."
        )
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)  # noqa: S314
    if node is None or not (node.text or "").strip():
        raise StackError(f"{pom} defines no <kafka.version> property")
    return (node.text or "").strip()


def default_jar_cache(version: str) -> Path:
    """Return ``$XDG_CACHE_HOME/streamlearn/kafka-<version>`` (``~/.cache`` by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "streamlearn" / f"kafka-{version}"


def jars_resolved(cache: Path) -> bool:
    """True when ``cache`` holds the jars of a Maven run that finished."""
    return (cache / _MARKER).is_file()


def ensure_kafka_jars(
    cache_dir: Path | None = None,
    *,
    pom: Path = KAFKA_POM,
    maven_repo: Path | None = None,
) -> Path:
    """Resolve the Kafka broker jars with Maven once; later calls reuse them offline.

    Jars are copied into a temporary sibling folder which is renamed into place, and a
    marker file is written only after Maven succeeded, so an interrupted run is retried.

    Parameters
    ----------
    cache_dir
        Destination folder; default :func:`default_jar_cache` of the pom's Kafka version.
    pom
        Maven project listing the runtime dependencies.
    maven_repo
        Maven local repository (``-Dmaven.repo.local``); default Maven's own (``~/.m2``).

    Returns
    -------
    Path
        The folder holding the jars (use it as ``-cp 'DIR/*'``).

    Raises
    ------
    StackError
        When Maven is missing or fails; the message carries the command and its output.
    """
    cache = cache_dir or default_jar_cache(kafka_version(pom))
    if jars_resolved(cache):
        return cache
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is not installed: run scripts/bootstrap first.")
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f"{cache.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    if maven_repo is not None:
        cmd.append(f"-Dmaven.repo.local={maven_repo}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    jars = sorted(p.name for p in partial.glob("*.jar"))
    if proc.returncode != 0 or not jars:
        shutil.rmtree(partial, ignore_errors=True)
        out = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
        raise StackError(
            f"kafka jars: Maven failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(out)
        )
    (partial / _MARKER).write_text("\n".join(jars) + "\n")
    shutil.rmtree(cache, ignore_errors=True)
    try:
        partial.rename(cache)
    except OSError:  # a concurrent run finished first
        shutil.rmtree(partial, ignore_errors=True)
        if not jars_resolved(cache):
            raise
    return cache
