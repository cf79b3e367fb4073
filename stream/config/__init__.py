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

Import everything from here: :class:`Settings`, :func:`load_settings` and
:class:`ConfigError` are defined in this module, the sections in
:mod:`stream.config.connections` (``kafka``, ``redis``) and :mod:`stream.config.sections`
(``model``, ``checkpoint``, ``metrics``, ``serve``; the others beside the code they
configure), and the masking of passwords in :mod:`stream.config.masking`.

Examples
--------
>>> settings = Settings(model={"spec": "hoeffding_tree"})
>>> settings.model.spec, settings.kafka.topics.events
('hoeffding_tree', 'events')
>>> try:
...     load_settings(kafka={"max_poll_records": 0})
... except ConfigError as error:
...     print(error)
kafka.max_poll_records: Input should be greater than 0 (got 0)
>>> try:
...     load_settings(store={"key_prefx": "team-a"})
... except ConfigError as error:
...     print(error)
store.key_prefx: unknown setting; did you mean store.key_prefix?
>>> Settings(redis={"url": "redis://app:hunter2@cache:6379/0"}).redacted()["redis"]["url"]
'redis://app:***@cache:6379/0'
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from streamlearn.features.limits import Limits
from streamlearn.features.store import StoreConfig
from streamlearn.features.vector import FeatureConfig
from streamlearn.learners.calibration import CalibrationConfig
from streamlearn.learners.decision_policy import DecisionConfig
from streamlearn.metrics.thresholds import MonitoringConfig
from streamlearn.stream.config.connections import KafkaConfig, RedisConfig, TopicsConfig
from streamlearn.stream.config.experiment import ExperimentSettings, RollbackSettings
from streamlearn.stream.config.identity import WorkerConfig
from streamlearn.stream.config.masking import MaskingFormatter, mask_url
from streamlearn.stream.config.sections import (
    CheckpointConfig,
    MetricsConfig,
    ModelConfig,
    ServeConfig,
)

__all__ = [
    "CheckpointConfig",
    "CalibrationConfig",
    "ConfigError",
    "DecisionConfig",
    "ExperimentSettings",
    "KafkaConfig",
    "MaskingFormatter",
    "MetricsConfig",
    "ModelConfig",
    "RedisConfig",
    "RollbackSettings",
    "ServeConfig",
    "Settings",
    "TopicsConfig",
    "WorkerConfig",
    "describe_error",
    "load_settings",
    "mask_url",
]


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
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    experiment: ExperimentSettings | None = None
    rollback: RollbackSettings | None = None

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
