"""The sections that say where the servers are: ``kafka`` (with its ``topics``) and ``redis``.

Examples
--------
>>> KafkaConfig().topics.events, RedisConfig().url
('events', 'redis://127.0.0.1:6390/0')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

__all__ = ["FROZEN", "KafkaConfig", "RedisConfig", "TopicsConfig"]

#: Every section is immutable, refuses unknown settings and NaN or infinite numbers.
FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

_TOPIC = r"^[A-Za-z0-9._-]+$"


class TopicsConfig(BaseModel):
    model_config = FROZEN

    events: str = Field(default="events", min_length=1, max_length=200, pattern=_TOPIC)
    labels: str = Field(default="labels", min_length=1, max_length=200, pattern=_TOPIC)
    predictions: str = Field(default="predictions", min_length=1, max_length=200, pattern=_TOPIC)
    dead_letter: str = Field(default="dead-letter", min_length=1, max_length=200, pattern=_TOPIC)
    examples: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=_TOPIC,
        description="The training log: every learned label with the features the model saw,"
        " keyed by event_id (unset: not published).",
    )
    partitions: int = Field(default=4, ge=1, le=1024, description="Partitions of created topics.")
    create: bool = Field(default=True, description="Create missing topics at start.")

    @model_validator(mode="after")
    def _distinct(self) -> TopicsConfig:
        names = {
            role: getattr(self, role)
            for role in ("events", "labels", "predictions", "dead_letter", "examples")
            if getattr(self, role) is not None
        }
        for role, name in names.items():
            if name in (".", ".."):
                raise ValueError(f"{role}: {name!r} is not a valid Kafka topic name")
            shared = [other for other, same in names.items() if same == name and other != role]
            if shared:
                raise ValueError(
                    f"{role} and {', '.join(shared)} are the same topic {name!r}: each role needs"
                    " its own (a worker would read its own outputs as input)"
                )
        return self


class KafkaConfig(BaseModel):
    model_config = FROZEN

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
        default=10_000,
        ge=1000,
        le=1_800_000,
        description="How soon the group notices a dead worker.",
    )
    commit_interval_s: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Without checkpoints: commit offsets at most this often (at-least-once).",
    )
    metadata_max_age_ms: int = Field(
        default=10_000,
        ge=1000,
        le=3_600_000,
        description="How often clients refresh cluster metadata.",
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
    linger_ms: int = Field(default=5, ge=0, le=60_000)
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
        le=3_600_000,
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
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: SecretStr | None = Field(default=None, description="Environment only.")
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        if any(not server.strip() for server in value.split(",")):
            raise ValueError("a comma-separated list of host:port without empty entries")
        return value

    @model_validator(mode="after")
    def _security(self) -> KafkaConfig:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism"
                " (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        if not sasl:
            stray = [
                name
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is not None
            ]
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} set but security_protocol is {self.security_protocol}:"
                    " use SASL_PLAINTEXT or SASL_SSL"
                )
        elif self.sasl_username is None or self.sasl_password is None:
            raise ValueError(
                f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password"
                " (STREAMLEARN_KAFKA__SASL_PASSWORD)"
            )
        tls = [
            name
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
            if getattr(self, name) is not None
        ]
        if tls and self.security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(
                f"{', '.join(tls)} set but security_protocol is {self.security_protocol}:"
                " use SSL or SASL_SSL"
            )
        return self

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
    model_config = FROZEN

    url: str = Field(default="redis://127.0.0.1:6390/0", pattern=r"^rediss?://")
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = Field(default=None, description="Environment only.")
    ssl_ca_certs: Path | None = None
    socket_timeout_s: float = Field(default=5.0, gt=0, le=3600)
    cluster: bool = Field(
        default=False,
        description="The url is a node of a Redis Cluster: interaction state shards over it"
        " (features.cluster_store.ClusterStore, which runs on a single Redis too).",
    )

    @model_validator(mode="after")
    def _tls(self) -> RedisConfig:
        if self.ssl_ca_certs is not None and not self.url.startswith("rediss://"):
            raise ValueError("ssl_ca_certs set but the url is not rediss:// (TLS)")
        return self

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"socket_timeout": self.socket_timeout_s}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password.get_secret_value()
        if self.ssl_ca_certs:
            options["ssl_ca_certs"] = str(self.ssl_ca_certs)
        return options
