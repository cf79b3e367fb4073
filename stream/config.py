"""The one configuration of streamlearn: a frozen pydantic settings model.

Values come, highest priority first, from keyword arguments, ``STREAMLEARN_*``
environment variables (nested with ``__``, e.g. ``STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS``),
a YAML file, and the defaults below. Secrets (passwords) are accepted from the
environment only and never printed.

Examples
--------
>>> settings = Settings(model={"spec": "hoeffding_tree"})
>>> settings.model.spec, settings.kafka.topics.events
('hoeffding_tree', 'events')
>>> load_settings(kafka={"max_poll_records": 0})
Traceback (most recent call last):
...
stream.config.ConfigError: kafka.max_poll_records: Input should be greater than 0 (got 0)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from features.schema import Limits
from features.store import StoreConfig
from features.vector import FeatureConfig
from metrics.thresholds import MonitoringConfig

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "KafkaConfig",
    "MetricsConfig",
    "ModelConfig",
    "RedisConfig",
    "Settings",
    "TopicsConfig",
    "describe_error",
    "load_settings",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TopicsConfig(BaseModel):
    model_config = _FROZEN

    events: str = Field(default="events", min_length=1, max_length=200)
    labels: str = Field(default="labels", min_length=1, max_length=200)
    predictions: str = Field(default="predictions", min_length=1, max_length=200)
    dead_letter: str = Field(default="dead-letter", min_length=1, max_length=200)
    examples: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The training log: every learned label with the features the model saw,"
        " keyed by event_id (unset: not published).",
    )
    partitions: int = Field(default=4, ge=1, le=1024, description="Partitions of created topics.")
    create: bool = Field(default=True, description="Create missing topics at start.")


class KafkaConfig(BaseModel):
    model_config = _FROZEN

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    group_id: str = Field(default="streamlearn", min_length=1)
    client_id: str = Field(default="streamlearn")
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    max_poll_records: int = Field(default=500, gt=0, le=100_000)
    poll_timeout_ms: int = Field(default=100, ge=0, le=60_000)
    fetch_max_wait_ms: int = Field(
        default=25,
        ge=0,
        le=60_000,
        description=(
            "Longest time the broker holds a fetch waiting for data. A fetch names only the"
            " partitions with nothing buffered, so a record arriving in another one waits"
            " up to this long: keep it small for low latency (Kafka's default is 500)."
        ),
    )
    fetch_min_bytes: int = Field(
        default=1,
        ge=1,
        le=16 * 1024 * 1024,
        description=(
            "Bytes the broker waits for (up to fetch_max_wait_ms) before answering a fetch."
            " Larger: fewer, fuller fetches, less CPU per event, a higher median latency."
        ),
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(
        default=10_000, ge=1000, description="How soon the group notices a dead worker."
    )
    commit_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="Without checkpoints: commit offsets at most this often (at-least-once).",
    )
    metadata_max_age_ms: int = Field(
        default=10_000, ge=1000, description="How often clients refresh cluster metadata."
    )
    static_membership: bool = Field(
        default=False,
        description="Join as a static member named after the worker (`--name`, unique per "
        "group): a restarted worker gets its partitions back without a rebalance.",
    )
    transactions: bool = Field(
        default=False,
        description="Publish predictions and commit offsets in one Kafka transaction.",
    )
    client: Literal["kafka-python", "librdkafka"] = Field(
        default="kafka-python",
        description=(
            "The worker's Kafka client: kafka-python, or librdkafka (confluent-kafka), which"
            " fetches and sends in C threads for a fraction of the CPU per record. With"
            " transactions keep kafka-python: librdkafka's send_offsets_to_transaction can"
            " block past its timeout when the broker restarts (confluentinc/librdkafka#5456)."
        ),
    )
    linger_ms: int = Field(default=5, ge=0)
    batch_size: int = Field(
        default=256 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description=(
            "Bytes per producer batch and partition. A worker's batch of predictions fits in"
            " one: with several batches queued, kafka-python wakes its network thread on every"
            " record."
        ),
    )
    max_block_ms: int = Field(
        default=30_000,
        ge=1000,
        description=(
            "Longest wait of a producer call (metadata, a transaction step, the last flush);"
            " past it the worker reconnects and resumes from its checkpoint."
        ),
    )
    dead_letter_max_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description=(
            "Largest dead letter: a record whose dead letter would be larger is truncated"
            " (its size and SHA-256 digest kept). The dead-letter topic's own"
            " max.message.bytes, read at start, lowers it when smaller."
        ),
    )
    max_delivery_attempts: int = Field(
        default=3,
        ge=1,
        le=1000,
        description=(
            "Times an output the broker refuses for itself (too large, invalid) is sent"
            " before it is dropped, logged with its source record and counted in"
            " streamlearn_dropped_outputs_total; the worker then goes on. Outputs the"
            " broker did not answer (Kafka away) are retried without a limit."
        ),
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(default=None, description="Environment only.")
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def client_options(self) -> dict[str, Any]:
        """Connection and security options shared by every kafka-python client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value is not None:
                options[name] = str(value)
        return options


class RedisConfig(BaseModel):
    model_config = _FROZEN

    url: str = Field(default="redis://127.0.0.1:6390/0", pattern=r"^rediss?://")
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="Environment only.")
    ssl_ca_certs: Path | None = None
    socket_timeout_s: float = Field(default=5.0, gt=0)

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"socket_timeout": self.socket_timeout_s}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password.get_secret_value()
        if self.ssl_ca_certs:
            options["ssl_ca_certs"] = str(self.ssl_ca_certs)
        return options


class ModelConfig(BaseModel):
    model_config = _FROZEN

    spec: str = Field(
        default="logistic",
        min_length=1,
        description="A preset (logistic, hoeffding_tree, arf) or package.module:function.",
    )
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Decision threshold.")


class CheckpointConfig(BaseModel):
    model_config = _FROZEN

    enabled: bool = Field(
        default=True,
        description="Snapshot the model with its offsets (needs STREAMLEARN_MODEL_KEY).",
    )
    every_labels: int = Field(default=5000, gt=0, description="Checkpoint after this many labels.")
    every_seconds: float = Field(default=30.0, gt=0, description="... or this many seconds.")
    keep_versions: int = Field(
        default=10, ge=1, description="Checkpoint snapshots of a worker kept in the registry."
    )
    registry_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often to look for a promoted or rolled-back model."
    )


class MetricsConfig(BaseModel):
    model_config = _FROZEN

    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="0: no /metrics server.")


class Settings(BaseSettings):
    """Everything a worker, a replay or a backtest needs to know."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMLEARN_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    limits: Limits = Field(default_factory=Limits)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get()
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if path is not None:
            sources += (YamlConfigSettingsSource(settings_cls, yaml_file=path),)
        return sources

    def redacted(self) -> dict[str, Any]:
        """The effective configuration, secrets shown as ``**********``."""
        return self.model_dump(mode="json")


_CONFIG_FILE: ContextVar[Path | None] = ContextVar("streamlearn_config_file", default=None)
_SECRET_FIELDS = {("kafka", "sasl_password"), ("redis", "password")}


class ConfigError(ValueError):
    """A configuration that cannot be used, with what to fix."""


@contextmanager
def _config_file(path: Path | None) -> Iterator[None]:
    token = _CONFIG_FILE.set(path)
    try:
        yield
    finally:
        _CONFIG_FILE.reset(token)


def describe_error(error: ValidationError) -> str:
    """One line per problem: the field's dotted path and what is allowed."""
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        lines.append(f"{where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (YAML), the environment and ``overrides``; raises ConfigError."""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        for section, name in _SECRET_FIELDS:
            if isinstance(data.get(section), dict) and data[section].get(name) is not None:
                raise ConfigError(
                    f"{section}.{name} is a secret: set STREAMLEARN_{section.upper()}__"
                    f"{name.upper()} in the environment instead of the config file {path}"
                )
    try:
        with _config_file(path):
            return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None
