"""The local stack's service configs: Kafka's ``server.properties`` and log4j2 file,
``prometheus.yml``, a default Alertmanager config and Prometheus ``file_sd`` targets.

Pure renderings of a :class:`stack.config.StackConfig` (and one atomic file write);
:class:`stack.supervisor.Stack` writes them under its root before it starts each service.

Examples
--------
>>> from streamlearn.stack.config import StackConfig
>>> "process.roles=broker,controller" in kafka_server_properties(StackConfig(root="/tmp/s"))
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from streamlearn.stack.config import StackConfig

__all__ = [
    "alertmanager_stack_config",
    "kafka_log4j2_config",
    "kafka_server_properties",
    "prometheus_config",
    "write_scrape_target",
]


def kafka_server_properties(config: StackConfig) -> str:
    """Render ``server.properties`` of a single combined KRaft node.

    Parameters
    ----------
    config
        Stack configuration (ports, host, root).

    Returns
    -------
    str
        The properties file content.

    Examples
    --------
    >>> from streamlearn.stack.config import StackConfig
    >>> text = kafka_server_properties(StackConfig(root="/tmp/s", kafka_port=29092))
    >>> "listeners=PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:9093" in text
    True
    """
    h, p, c = config.host, config.kafka_port, config.kafka_controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{h}:{c}",
        "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
        "advertised.listeners": f"PLAINTEXT://{h}:{p}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(config.root / "kafka" / "data"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        # Fewer internal partitions than the default 50: faster first group/transaction.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    if config.kafka_sasl_port:
        s = config.kafka_sasl_port
        props["listeners"] += f",SASL_PLAINTEXT://{h}:{s}"
        props["advertised.listeners"] += f",SASL_PLAINTEXT://{h}:{s}"
        props["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
        props["sasl.enabled.mechanisms"] = "PLAIN,SCRAM-SHA-256"
        users = " ".join(f'user_{name}="{password}"' for name, password in config.kafka_sasl_users)
        props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
        )
        props["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    return "".join(f"{k}={v}\n" for k, v in props.items())


def kafka_log4j2_config(log_file: Path) -> str:
    """Render a log4j2 YAML config writing the broker log to ``log_file`` (truncated on start).

    Examples
    --------
    >>> "fileName: /tmp/server.log" in kafka_log4j2_config(Path("/tmp/server.log"))
    True
    """
    doc = {
        "Configuration": {
            "Appenders": {
                "File": {
                    "name": "FILE",
                    "fileName": str(log_file),
                    "append": False,
                    "PatternLayout": {"pattern": "[%d] %p %m (%c)%n"},
                }
            },
            "Loggers": {
                "Root": {"level": "INFO", "AppenderRef": [{"ref": "FILE"}]},
                "Logger": [
                    {"name": "kafka", "level": "INFO"},
                    {"name": "org.apache.kafka", "level": "WARN"},
                    {"name": "state.change.logger", "level": "WARN"},
                ],
            },
        }
    }
    return yaml.safe_dump(doc, sort_keys=False)


def prometheus_config(config: StackConfig, *, alertmanager: bool) -> str:
    """Render ``prometheus.yml`` for the stack.

    The ``streamlearn`` job discovers worker targets from ``targets/*.json`` (``file_sd``),
    rule files come from ``config.rules_dir`` and alerts go to the stack's Alertmanager
    when ``alertmanager`` is true.

    Examples
    --------
    >>> from streamlearn.stack.config import StackConfig
    >>> doc = yaml.safe_load(prometheus_config(StackConfig(root="/r"), alertmanager=False))
    >>> doc["scrape_configs"][1]["file_sd_configs"][0]["files"]
    ['/r/prometheus/targets/*.json']
    """
    doc: dict[str, object] = {
        "global": {
            "scrape_interval": config.scrape_interval,
            "evaluation_interval": config.evaluation_interval,
        },
        "rule_files": [str(config.rules_dir / "*.yml")],
        "scrape_configs": [
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"{config.host}:{config.prometheus_port}"]}],
            },
            {
                "job_name": "streamlearn",
                "file_sd_configs": [
                    {
                        "files": [str(config.targets_dir / "*.json")],
                        "refresh_interval": config.scrape_interval,
                    }
                ],
            },
        ],
    }
    if alertmanager:
        doc["alerting"] = {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"{config.host}:{config.alertmanager_port}"]}]}
            ]
        }
    return yaml.safe_dump(doc, sort_keys=False)


def alertmanager_stack_config(config: StackConfig) -> str:
    """Render the stack's Alertmanager config: every alert to the stack's alert receiver.

    The same routing as the committed ``deploy/alertmanager/alertmanager.yml``
    (:func:`metrics.alert_files.alertmanager_config`), sent to ``config.alerts_url``.

    Examples
    --------
    >>> from streamlearn.stack.config import StackConfig
    >>> doc = yaml.safe_load(alertmanager_stack_config(StackConfig(root="/r", alerts_port=29095)))
    >>> doc["receivers"][0]["webhook_configs"][0]["url"]
    'http://127.0.0.1:29095/alerts'
    """
    from streamlearn.metrics.alert_files import alertmanager_config

    return alertmanager_config(config.alerts_url)


def write_scrape_target(
    targets_dir: Path, name: str, address: str, labels: Mapping[str, str] | None = None
) -> Path:
    """Write a Prometheus ``file_sd`` target file ``<targets_dir>/<name>.json`` atomically.

    Prometheus watches the folder and starts scraping within seconds.

    Parameters
    ----------
    targets_dir
        The folder the ``streamlearn`` job's ``file_sd_configs`` glob points at.
    name
        File stem, ``[A-Za-z0-9_.-]+``; also the ``target`` label of the scraped series.
    address
        ``host:port`` serving ``/metrics``.
    labels
        Extra target labels.

    Returns
    -------
    Path
        The target file written.

    Examples
    --------
    >>> import tempfile
    >>> path = write_scrape_target(Path(tempfile.mkdtemp()), "worker-1", "127.0.0.1:8000")
    >>> json.loads(path.read_text())[0]["targets"]
    ['127.0.0.1:8000']
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"target name must match [A-Za-z0-9_.-]+, got {name!r}")
    if not re.fullmatch(r"[^\s:/]+:\d{1,5}", address):
        raise ValueError(f"target address must be host:port, got {address!r}")
    targets_dir.mkdir(parents=True, exist_ok=True)
    doc = [{"targets": [address], "labels": {"target": name, **(labels or {})}}]
    path = targets_dir / f"{name}.json"
    tmp = targets_dir / f".{name}.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path
