"""The one configuration of streamlearn: a frozen pydantic settings model.

Values come, highest priority first, from keyword arguments, ``STREAMLEARN_*``
environment variables (nested with ``__``, e.g. ``STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS``),
a YAML file, and the defaults below. Secrets (passwords) are accepted from the
environment only and never printed; a URL's password is masked wherever it is shown
(:func:`mask_url`).

Every section refuses a setting it does not know, at every nesting level and from every
source, naming its dotted path and the nearest valid name. From the environment, a
``STREAMLEARN_*`` variable with the ``__`` delimiter is a setting: one naming an unknown
field of a section, or an unknown section, is refused too. A variable without ``__``
(``STREAMLEARN_CONFIG``, ``STREAMLEARN_MODEL_KEY``, the test fixtures' variables) is
not a setting and is left alone. Every number has its valid range and no setting is NaN
or infinite.

Examples
--------
>>> settings = Settings(model={"spec": "hoeffding_tree"})
>>> settings.model.spec, settings.kafka.topics.events
('hoeffding_tree', 'events')
>>> load_settings(kafka={"max_poll_records": 0})
Traceback (most recent call last):
...
stream.config.ConfigError: kafka.max_poll_records: Input should be greater than 0 (got 0)
>>> load_settings(store={"key_prefx": "team-a"})
Traceback (most recent call last):
...
stream.config.ConfigError: store.key_prefx: unknown setting; did you mean store.key_prefix?
>>> Settings(redis={"url": "redis://app:hunter2@cache:6379/0"}).redacted()["redis"]["url"]
'redis://app:***@cache:6379/0'
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from river.base import Classifier

from features.limits import Limits
from features.store import StoreConfig
from features.vector import FeatureConfig
from learners.models import DEFAULT_BUCKETS, DEFAULT_MAX_CATEGORIES, build_model
from metrics.thresholds import MonitoringConfig

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "KafkaConfig",
    "MaskingFormatter",
    "MetricsConfig",
    "ModelConfig",
    "RedisConfig",
    "ServeConfig",
    "Settings",
    "TopicsConfig",
    "describe_error",
    "load_settings",
    "mask_url",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

_MASK = "***"
#: ``scheme://userinfo@``: the userinfo runs to the last ``@`` before the path.
_SCHEME_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][\w+.\-]*://)(?P<userinfo>[^\s/?#]*)@")
#: ``user:password@host`` without a scheme (a Kafka bootstrap server, say).
_BARE_USERINFO = re.compile(
    r"(?<![\w.:/@%+\-])(?P<user>[\w.%+\-]+):(?P<password>[^\s/?#,'\"]*)@(?=[\w\[])"
)
#: A secret passed as a query parameter (``redis://host/0?password=...``).
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|pass|secret|token|access_token|api_key|apikey)=)"
    r"[^&#\s'\"]*",
    re.IGNORECASE,
)


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it masked.

    ``text`` is a URL, a comma-separated list of servers (Kafka's
    ``bootstrap_servers``) or a message quoting them. ``user:password@`` becomes
    ``user:***@``, a lone ``token@`` after a scheme becomes ``***@``, and a
    ``password=`` (or ``token=``, ``secret=``) query parameter loses its value.
    The rest is unchanged. Use it on every URL or server list that is printed,
    logged or put in an error message.

    Examples
    --------
    >>> mask_url("redis://user:secret@host:6379/0")
    'redis://user:***@host:6379/0'
    >>> mask_url("rediss://:s3cret@cache.internal:6380/1?password=again&db=1")
    'rediss://:***@cache.internal:6380/1?password=***&db=1'
    >>> mask_url("alice:pw@b1:9093,bob:p@ss@b2:9093")
    'alice:***@b1:9093,bob:***@b2:9093'
    >>> mask_url("SASL_SSL://alice:pw@b1:9093,SASL_SSL://bob:pw@b2:9093")
    'SASL_SSL://alice:***@b1:9093,SASL_SSL://bob:***@b2:9093'
    >>> mask_url("Redis at redis://default:tok3n@h:6379/0 failed: timeout")
    'Redis at redis://default:***@h:6379/0 failed: timeout'
    >>> mask_url("https://ghp_token@example.com/repo")
    'https://***@example.com/repo'
    >>> mask_url("redis://127.0.0.1:6390/0, broker-1:9092, ops@example.com")
    'redis://127.0.0.1:6390/0, broker-1:9092, ops@example.com'
    """

    def scheme(match: re.Match[str]) -> str:
        userinfo = match["userinfo"]
        if not userinfo:
            return match[0]
        user, colon, _ = userinfo.partition(":")
        return f"{match['scheme']}{user}{colon}{_MASK}@" if colon else f"{match['scheme']}{_MASK}@"

    text = _SCHEME_USERINFO.sub(scheme, text)
    text = _BARE_USERINFO.sub(lambda match: f"{match['user']}:{_MASK}@", text)
    return _SECRET_QUERY.sub(lambda match: f"{match['key']}{_MASK}", text)


class MaskingFormatter(logging.Formatter):
    """A log formatter that passes every line, tracebacks included, through :func:`mask_url`.

    A client library's message (a connection error quoting its URL, say) is masked
    as well as streamlearn's own.

    Examples
    --------
    >>> record = logging.LogRecord(
    ...     "redis", logging.WARNING, __file__, 1, "cannot reach %s", ("redis://u:pw@h/0",), None
    ... )
    >>> MaskingFormatter("%(levelname)s %(message)s").format(record)
    'WARNING cannot reach redis://u:***@h/0'
    """

    def format(self, record: logging.LogRecord) -> str:
        return mask_url(super().format(record))


#: A Kafka topic name: ASCII letters, digits, ``.``, ``_`` and ``-``.
_TOPIC = r"^[A-Za-z0-9._-]+$"


class TopicsConfig(BaseModel):
    model_config = _FROZEN

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
    model_config = _FROZEN

    url: str = Field(default="redis://127.0.0.1:6390/0", pattern=r"^rediss?://")
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = Field(default=None, description="Environment only.")
    ssl_ca_certs: Path | None = None
    socket_timeout_s: float = Field(default=5.0, gt=0, le=3600)

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


class ModelConfig(BaseModel):
    model_config = _FROZEN

    spec: str = Field(
        default="logistic",
        min_length=1,
        description="A preset (logistic, hoeffding_tree, arf) or package.module:function.",
    )
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Decision threshold.")
    max_categories: int = Field(
        default=DEFAULT_MAX_CATEGORIES,
        ge=0,
        le=1_000_000,
        description=(
            "Values of each string feature a preset model keeps apart; later values share "
            "category_buckets buckets (0: no bound)."
        ),
    )
    category_buckets: int = Field(
        default=DEFAULT_BUCKETS,
        ge=1,
        le=65_536,
        description="Buckets per string feature for the values beyond max_categories.",
    )

    def build(self, spec: str | None = None) -> Classifier:
        """A fresh model for ``spec`` (default: ``self.spec``) with this vocabulary bound.

        >>> ModelConfig(max_categories=8).build().__class__.__name__
        'Pipeline'
        """
        return build_model(spec or self.spec, self.max_categories, self.category_buckets)


class CheckpointConfig(BaseModel):
    model_config = _FROZEN

    enabled: bool = Field(
        default=True,
        description="Snapshot the model with its offsets (needs STREAMLEARN_MODEL_KEY).",
    )
    every_labels: int = Field(
        default=5000, gt=0, le=100_000_000, description="Checkpoint after this many labels."
    )
    every_seconds: float = Field(
        default=30.0, gt=0, le=86_400, description="... or this many seconds."
    )
    keep_versions: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="Checkpoint snapshots of a worker kept in the registry.",
    )
    registry_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="How often to look for a promoted or rolled-back model.",
    )


class MetricsConfig(BaseModel):
    model_config = _FROZEN

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=9108, ge=0, le=65535, description="0: no /metrics server.")


class ServeConfig(BaseModel):
    """The HTTP scoring and ranking API (``streamlearn serve``).

    >>> ServeConfig().max_candidates, ServeConfig().refresh_seconds
    (1000, 5.0)
    """

    model_config = _FROZEN

    host: str = Field(default="127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes.")
    max_candidates: int = Field(
        default=1000, ge=1, le=100_000, description="Most candidates in one /rank request."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=67_108_864,
        description="Largest request body; a larger one is refused with 413.",
    )
    refresh_seconds: float = Field(
        default=5.0,
        ge=0.05,
        le=3600,
        description="How often to look for a promoted model or a newer worker checkpoint.",
    )


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
    serve: ServeConfig = Field(default_factory=ServeConfig)

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
        sources: tuple[PydanticBaseSettingsSource, ...] = (
            init_settings,
            env_settings,
            _UnknownSections(settings_cls),
        )
        if path is not None:
            sources += (YamlConfigSettingsSource(settings_cls, yaml_file=path),)
        return sources

    def redacted(self) -> dict[str, Any]:
        """The effective configuration: secrets shown as ``**********``, URL passwords masked.

        Examples
        --------
        >>> settings = Settings(kafka={"bootstrap_servers": "svc:pw@broker:9092"})
        >>> settings.redacted()["kafka"]["bootstrap_servers"]
        'svc:***@broker:9092'
        """
        tree = self.model_dump(mode="json")
        for section, name in _URL_FIELDS:
            tree[section][name] = mask_url(tree[section][name])
        return tree


_CONFIG_FILE: ContextVar[Path | None] = ContextVar("streamlearn_config_file", default=None)
_SECRET_FIELDS = {("kafka", "sasl_password"), ("redis", "password")}
_URL_FIELDS = (("kafka", "bootstrap_servers"), ("redis", "url"))
_ENV_PREFIX = "STREAMLEARN_"
_ENV_DELIMITER = "__"


class _UnknownSections(PydanticBaseSettingsSource):
    """``STREAMLEARN_X__...`` variables whose section ``x`` does not exist.

    pydantic-settings reads a variable only when its first part names a field, so
    ``STREAMLEARN_STOER__KEY_PREFIX`` would be dropped without a word. This source
    hands such variables to the model as they are, which refuses them as unknown
    settings. A variable without the ``__`` delimiter is not a setting and is not read.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        found: dict[str, Any] = {}
        for variable, value in os.environ.items():
            name = variable.upper()
            if not name.startswith(_ENV_PREFIX) or _ENV_DELIMITER not in name:
                continue
            parts = name.removeprefix(_ENV_PREFIX).lower().split(_ENV_DELIMITER)
            if parts[0] in fields or not all(parts):
                continue
            node = found
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):  # both STREAMLEARN_X__A and STREAMLEARN_X__A__B
                    break
            else:
                node[parts[-1]] = value
        return found


class ConfigError(ValueError):
    """A configuration that cannot be used, with what to fix."""


@contextmanager
def _config_file(path: Path | None) -> Iterator[None]:
    token = _CONFIG_FILE.set(path)
    try:
        yield
    finally:
        _CONFIG_FILE.reset(token)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's annotation (``X``, ``X | None``, ``tuple[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, tuple, list, dict):
        for arg in get_args(annotation):
            model = _section_model(arg)
            if model is not None:
                return model
    return None


def _unknown_setting(loc: tuple[str | int, ...]) -> str:
    """``a.b.c: unknown setting; did you mean a.b.d?``, and the variable it came from."""
    where = ".".join(str(part) for part in loc)
    model: type[BaseModel] | None = Settings
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _section_model(field.annotation) if field is not None else None
    message = f"{where}: unknown setting"
    if model is not None:
        known = list(model.model_fields)
        parent = ".".join(str(part) for part in loc[:-1] if not isinstance(part, int))
        close = difflib.get_close_matches(str(loc[-1]).lower(), known, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {'.'.join(filter(None, (parent, close[0])))}?"
        else:
            message += f"; valid: {', '.join(known)}"
    variable = _ENV_PREFIX + _ENV_DELIMITER.join(str(part) for part in loc).upper()
    sources = sorted(
        name
        for name in os.environ
        if name.upper() == variable or name.upper().startswith(variable + _ENV_DELIMITER)
    )
    if sources:
        message += f" (from the environment: {', '.join(sources)})"
    return message


def _is_secret(loc: tuple[str | int, ...]) -> bool:
    """Whether ``loc`` is a secret field (or inside one), whose value is never shown."""
    return any(tuple(loc[:2]) == secret for secret in _SECRET_FIELDS)


def describe_error(error: ValidationError) -> str:
    """One line per problem: the field's dotted path and what is allowed.

    An unknown setting gets the nearest valid name. The offending value is shown
    with any URL password masked; a whole section (a check across its fields) is
    not shown, since it may hold secrets.

    Examples
    --------
    >>> try:
    ...     Settings(redis={"url": "http://app:hunter2@cache:6379"})
    ... except ValidationError as error:
    ...     print(describe_error(error))
    redis.url: String should match pattern '^rediss?://' (got 'http://app:***@cache:6379')
    """
    lines = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(_unknown_setting(loc))
            continue
        where = ".".join(str(part) for part in loc) or "settings"
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        if isinstance(value, Mapping | BaseModel | SecretStr) or _is_secret(loc):
            lines.append(f"{where}: {message}")
        else:
            shown = mask_url(repr(value))
            shown = shown if len(shown) <= 200 else shown[:200] + "..."
            lines.append(f"{where}: {message} (got {shown})")
    return "\n".join(lines)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (YAML), the environment and ``overrides``; raises ConfigError."""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
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
