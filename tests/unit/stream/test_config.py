"""Configuration: file + environment, errors that say what to fix, secrets never shown."""

from __future__ import annotations

import logging
import math
import sys
import threading
import types
from typing import Any, Union, get_args, get_origin

import annotated_types
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.stream.config import (
    ConfigError,
    MaskingFormatter,
    Settings,
    load_settings,
    mask_url,
)

runner = CliRunner()


def test_environment_overrides_the_file_and_the_file_overrides_defaults(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  spec: arf\nkafka:\n  group_id: from-file\n")
    monkeypatch.setenv("STREAMLEARN_KAFKA__GROUP_ID", "from-env")
    settings = load_settings(path)
    assert (settings.model.spec, settings.kafka.group_id) == ("arf", "from-env")
    assert settings.kafka.max_poll_records == 500


def test_a_bad_value_names_the_field_and_what_is_allowed(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_MODEL__THRESHOLD", "1.5")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2
    assert "model.threshold" in result.output and "less than or equal to 1" in result.output


def test_an_unknown_section_in_the_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("modle:\n  spec: arf\n")
    try:
        load_settings(path)
    except ConfigError as error:
        assert "modle" in str(error)
    else:
        raise AssertionError("a misspelt section must be refused")


def test_a_config_file_that_is_not_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("store: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)


def test_secrets_come_from_the_environment_only_and_are_never_printed(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("redis:\n  password: hunter2\n")
    try:
        load_settings(path)
    except ConfigError as error:
        assert "STREAMLEARN_REDIS__PASSWORD" in str(error) and "hunter2" not in str(error)
    else:
        raise AssertionError("a password in the config file must be refused")

    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_PASSWORD", "s3cret-value")
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("STREAMLEARN_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    settings = load_settings()
    assert settings.kafka.client_options()["sasl_plain_password"] == "s3cret-value"
    assert "s3cret-value" not in repr(settings)
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0
    assert "s3cret-value" not in result.output and "**********" in result.output


# --- unknown settings ----------------------------------------------------------------


def _sections(model: type[BaseModel], path: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every section model of the settings tree, with its dotted path."""
    found = [(path or "settings", model)]
    for name, field in model.model_fields.items():
        inner = _model_in(field.annotation)
        if inner is not None:
            found += _sections(inner, f"{path}.{name}" if path else name)
    return found


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            if _model_in(arg) is not None:
                return _model_in(arg)
    return None


@pytest.mark.parametrize(("path", "section"), _sections(Settings), ids=lambda v: str(v))
def test_every_section_forbids_unknown_settings(path, section):
    assert section.model_config.get("extra") == "forbid", f"{path} ignores unknown settings"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"store": {"key_prefx": "team-a"}},
            "store.key_prefx: unknown setting; did you mean store.key_prefix?",
        ),
        (
            {"kafka": {"topics": {"evnets": "x"}}},
            "kafka.topics.evnets: unknown setting; did you mean kafka.topics.events?",
        ),
        (
            {"features": {"interactions": {"prior_strenght": 3}}},
            "features.interactions.prior_strenght: unknown setting;"
            " did you mean features.interactions.prior_strength?",
        ),
        (
            {"monitoring": {"thresholds": {"psi_warnign": 0.2}}},
            "monitoring.thresholds.psi_warnign: unknown setting;"
            " did you mean monitoring.thresholds.psi_warning?",
        ),
        ({"limits": {"max_byte": 10}}, "limits.max_byte: unknown setting; did you mean"),
        ({"features": {"mdoe": "raw"}}, "features.mdoe: unknown setting; did you mean"),
        ({"store": {"zzz": 1}}, "store.zzz: unknown setting; valid: key_prefix,"),
    ],
)
def test_an_unknown_setting_in_keyword_arguments_names_its_path_and_the_nearest_name(
    overrides, expected
):
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    assert expected in str(caught.value)


def test_a_misspelt_setting_in_the_file_is_refused_instead_of_falling_back_to_the_default(
    tmp_path,
):
    path = tmp_path / "c.yaml"
    path.write_text(
        "store:\n  key_prefx: team-a\nfeatures:\n  interactions:\n    half_live_s: [60]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "store.key_prefx: unknown setting; did you mean store.key_prefix?" in message
    assert (
        "features.interactions.half_live_s: unknown setting;"
        " did you mean features.interactions.half_lives_s?" in message
    )


def test_a_misspelt_nested_environment_variable_is_refused_and_named(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_STORE__KEY_PREFX", "team-a")
    monkeypatch.setenv("STREAMLEARN_FEATURES__INTERACTIONS__PRIOR_STRENGHT", "3")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert (
        "store.key_prefx: unknown setting; did you mean store.key_prefix?"
        " (from the environment: STREAMLEARN_STORE__KEY_PREFX)" in message
    )
    assert "did you mean features.interactions.prior_strength?" in message


def test_an_environment_variable_naming_an_unknown_section_is_refused(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_STOER__KEY_PREFIX", "team-a")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert (
        "stoer: unknown setting; did you mean store?"
        " (from the environment: STREAMLEARN_STOER__KEY_PREFIX)" in str(caught.value)
    )


def test_environment_variables_without_the_delimiter_are_not_settings(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_MODEL_KEY", "k" * 64)
    monkeypatch.setenv("STREAMLEARN_CONFIG", "/nowhere.yaml")
    monkeypatch.setenv("STREAMLEARN_TEST_REDIS", "redis://127.0.0.1:1/0")
    assert load_settings().store.key_prefix == "sl"


def test_streamlearn_config_exits_2_on_a_misspelt_setting(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_STORE__KEY_PREFX", "team-a")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2
    assert "store.key_prefx: unknown setting; did you mean store.key_prefix?" in result.output


# --- ranges ------------------------------------------------------------------------------


def _numeric_fields() -> list[tuple[str, type, dict[str, float]]]:
    """(dotted path, int or float, its bounds) of every number in the settings tree."""
    fields = []
    for path, section in _sections(Settings):
        prefix = "" if path == "settings" else path + "."
        for name, field in section.model_fields.items():
            kind = field.annotation
            if get_origin(kind) in (Union, types.UnionType):
                kinds = [arg for arg in get_args(kind) if arg is not type(None)]
                kind = kinds[0] if len(kinds) == 1 else None
            if kind not in (int, float):
                continue
            bounds = {}
            for item in field.metadata:
                for bound in ("gt", "ge", "lt", "le"):
                    if isinstance(item, getattr(annotated_types, bound.capitalize())):
                        bounds[bound] = getattr(item, bound)
            fields.append((prefix + name, kind, bounds))
    return fields


NUMERIC_FIELDS = _numeric_fields()


def _nested(path: str, value: Any) -> dict[str, Any]:
    head, *rest = path.split(".")
    return {head: _nested(".".join(rest), value) if rest else value}


def _outside(kind: type, bound: str, limit: float) -> float:
    step = 1 if kind is int else 1e-3 * max(1.0, abs(limit))
    return {"gt": limit, "lt": limit, "ge": limit - step, "le": limit + step}[bound]


def test_the_settings_tree_has_numbers_to_check():
    paths = {path for path, _, _ in NUMERIC_FIELDS}
    assert {"kafka.max_poll_records", "store.snapshot_ttl_s", "limits.max_future_ms"} <= paths
    assert "monitoring.thresholds.p99_latency_seconds" in paths
    assert len(NUMERIC_FIELDS) >= 45


@pytest.mark.parametrize(("path", "kind", "bounds"), NUMERIC_FIELDS, ids=lambda v: str(v))
def test_every_number_has_a_lower_and_an_upper_bound(path, kind, bounds):
    assert bounds.keys() & {"gt", "ge"}, f"{path} has no lower bound"
    assert bounds.keys() & {"lt", "le"}, f"{path} has no upper bound"


#: (field, a value below its range, a value above it): one row per number of the settings.
OUT_OF_RANGE = [
    ("kafka.max_poll_records", 0, 100_001),
    ("kafka.poll_timeout_ms", -1, 60_001),
    ("kafka.dead_letter_max_bytes", 1023, 67_108_865),
    ("kafka.max_delivery_attempts", 0, 1001),
    ("kafka.fetch_max_wait_ms", -1, 60_001),
    ("kafka.fetch_min_bytes", 0, 16_777_217),
    ("kafka.session_timeout_ms", 999, 1_800_001),
    ("kafka.commit_interval_s", -0.5, 3601.0),
    ("kafka.metadata_max_age_ms", 999, 3_600_001),
    ("kafka.linger_ms", -1, 60_001),
    ("kafka.batch_size", 1023, 16_777_217),
    ("kafka.max_block_ms", 999, 3_600_001),
    ("kafka.topics.partitions", 0, 1025),
    ("redis.socket_timeout_s", 0.0, 3601.0),
    ("model.max_categories", -1, 1_000_001),
    ("model.category_buckets", 0, 65_537),
    ("model.threshold", -0.001, 1.001),
    ("features.interactions.prior_rate", -0.001, 1.001),
    ("features.interactions.prior_strength", 0.0, 1_000_001.0),
    ("store.snapshot_ttl_s", 0.0, 31_536_001.0),
    ("store.state_ttl_s", -1.0, 315_360_001.0),
    ("store.pending_max_wait_s", 0.0, 31_536_001.0),
    ("store.watermark_window", 0, 10_001),
    ("store.watermark_quantile", 0.0, 1.001),
    ("store.max_snapshots", 0, 1_000_000_001),
    ("store.pending_max", 0, 100_000_001),
    ("store.pending_ttl_s", -1.0, 31_536_001.0),
    ("store.implicit_negative_after_s", -1.0, 31_536_001.0),
    ("store.sweep_max", 0, 1_000_001),
    ("limits.max_abs_value", 0.0, 1.001e15),
    ("limits.max_label_weight", 0.0, 1_000_001.0),
    ("limits.max_bytes", 0, 67_108_865),
    ("limits.max_context", 0, 10_001),
    ("limits.max_features", 0, 100_001),
    ("limits.min_timestamp_ms", -1, 4_102_444_800_001),
    ("limits.max_future_ms", -1, 31_536_000_001),
    ("metrics.port", -1, 65_536),
    ("checkpoint.every_labels", 0, 100_000_001),
    ("checkpoint.every_seconds", 0.0, 86_401.0),
    ("checkpoint.keep_versions", 0, 10_001),
    ("checkpoint.registry_poll_seconds", -1.0, 3601.0),
    ("monitoring.reference_size", 9, 1_000_001),
    ("monitoring.window_size", 9, 1_000_001),
    ("monitoring.n_bins", 1, 101),
    ("monitoring.concept_warmup_labels", -1, 1_000_001),
    ("monitoring.drift_warmup_labels", -1, 1_000_001),
    ("monitoring.evaluate_every", 0, 1_000_001),
    ("monitoring.detail_evaluate_every", 0, 1_000_001),
    ("monitoring.max_monitored_features", -1, 1001),
    ("monitoring.feature_top_k", 0, 101),
    ("monitoring.slice_top_k", 0, 101),
    ("monitoring.slice_window", 9, 1_000_001),
    ("monitoring.slice_min_count", 0, 1_000_001),
    ("monitoring.slice_min_decisions", 0, 1_000_001),
    ("monitoring.max_categories", 0, 1001),
    ("monitoring.max_detections", 0, 100_001),
    ("monitoring.max_drift_events", 0, 100_001),
    ("monitoring.quality_window", 9, 1_000_001),
    ("monitoring.precision_target", 0.0, 1.001),
    ("monitoring.thresholds.not_finite_min_predictions", -1, 1_000_000_001),
    ("monitoring.thresholds.label_lag_seconds", 0, 31_536_001),
    ("monitoring.thresholds.psi_warning", 0.0, 10.01),
    ("monitoring.thresholds.psi_critical", 0.0, 10.01),
    ("monitoring.thresholds.ks_critical", 0.0, 1.001),
    ("monitoring.thresholds.positive_rate_ratio_high", 1.0, 1001.0),
    ("monitoring.thresholds.positive_rate_ratio_low", 0.0, 1.0),
    ("monitoring.thresholds.p99_latency_seconds", 0.0, 3601.0),
    ("monitoring.thresholds.auc_drop", 0.0, 1.0),
    ("monitoring.thresholds.auc_min", -0.001, 1.001),
    ("monitoring.thresholds.ece_max", 0.0, 1.001),
    ("monitoring.thresholds.consumer_lag_records", 0, 1_000_000_000_001),
    ("monitoring.thresholds.dead_letter_ratio", 0.0, 1.001),
    ("monitoring.thresholds.fairness_ratio_low", 0.0, 1.0),
    ("monitoring.thresholds.fairness_ratio_high", 1.0, 1000.001),
    ("serve.port", 0, 65_536),
    ("serve.workers", 0, 65),
    ("serve.max_candidates", 0, 100_001),
    ("serve.max_body_bytes", 1023, 67_108_865),
    ("serve.refresh_seconds", 0.049, 3601.0),
    ("decision.precision_at_least", 0.0, 1.0),
    ("decision.confidence", 0.499, 1.0),
    ("decision.min_labels", 0, 10_000_001),
    ("decision.min_positives", 0, 10_000_001),
    ("decision.window", 9, 10_000_001),
    ("decision.update_every", 0, 1_000_001),
    ("decision.precision_window", 0, 100_000_001),
    ("decision.top_fraction", 0.0, 1.001),
    ("decision.holdout_fraction", -0.001, 0.501),
    ("decision.positive_weight", 0.0, 1000.001),
    ("decision.negative_weight", 0.0, 1000.001),
    ("decision.target_positive_share", -0.001, 1.0),
    ("decision.balance_window", 9, 10_000_001),
    ("calibration.learning_rate", 0.0, 1.001),
    ("calibration.window", 9, 10_000_001),
    ("calibration.bins", 1, 101),
    ("experiment.alpha", 0.0, 1.0),
    ("experiment.min_labels_per_arm", 1, 1_000_000_001),
    ("experiment.max_duration_s", 0.0, 31_622_401.0),
    ("experiment.mixture_sd", 0.0, 1_000_001.0),
    ("experiment.expected_relative_effect", 0.0, 100.001),
    ("experiment.log_loss_eps", 0.0, 0.5),
    ("experiment.guardrails.latency_p99_s", 0.0, 3601.0),
    ("experiment.guardrails.latency_p99_ratio", 1.0, 1000.001),
    ("experiment.guardrails.error_ratio", -0.001, 1.001),
    ("experiment.guardrails.positive_rate_shift", 0.0, 1000.001),
    ("experiment.guardrails.threshold", 0.0, 1.0),
    ("experiment.guardrails.min_predictions", 0, 1_000_000_001),
    ("rollback.drop", -0.001, 1.0),
    ("rollback.alpha", 0.0, 1.0),
    ("rollback.min_labels", 1, 1_000_000_001),
    ("rollback.min_labels_after_rollback", -1, 1_000_000_001),
    ("rollback.mixture_sd", 0.0, 1_000_001.0),
    ("rollback.log_loss_eps", 0.0, 0.5),
    ("rollback.refresh_every", 0, 1_000_000_001),
]


def test_the_out_of_range_table_has_a_row_for_every_number():
    assert sorted(path for path, _, _ in OUT_OF_RANGE) == sorted(p for p, _, _ in NUMERIC_FIELDS)


@pytest.mark.parametrize(
    ("path", "value"),
    [(path, value) for path, low, high in OUT_OF_RANGE for value in (low, high)],
    ids=lambda v: str(v),
)
def test_a_number_out_of_its_range_is_refused_naming_the_field(path, value):
    with pytest.raises(ConfigError) as caught:
        load_settings(**_nested(path, value))
    assert f"{path}: Input should be" in str(caught.value)


@pytest.mark.parametrize(("path", "kind", "bounds"), NUMERIC_FIELDS, ids=lambda v: str(v))
def test_each_bound_is_exact(path, kind, bounds):
    for bound, limit in bounds.items():
        with pytest.raises(ConfigError, match=f"{path}: Input should be"):
            load_settings(**_nested(path, _outside(kind, bound, limit)))


FLOAT_FIELDS = [path for path, kind, _ in NUMERIC_FIELDS if kind is float]


@pytest.mark.parametrize("path", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, "nan", "-inf"])
def test_no_setting_is_nan_or_infinite(path, value):
    with pytest.raises(ConfigError) as caught:
        load_settings(**_nested(path, value))
    assert f"{path}: Input should be a finite number" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # interaction features: every half-life positive, finite, named apart
        (
            {"features": {"interactions": {"half_lives_s": [3600, 0]}}},
            "features.interactions.half_lives_s.1: Input should be greater than 0",
        ),
        (
            {"features": {"interactions": {"half_lives_s": [-60]}}},
            "features.interactions.half_lives_s.0: Input should be greater than 0",
        ),
        (
            {"features": {"interactions": {"half_lives_s": [float("inf")]}}},
            "features.interactions.half_lives_s.0: Input should be a finite number",
        ),
        (
            {"features": {"interactions": {"half_lives_s": []}}},
            "features.interactions.half_lives_s: Tuple should have at least 1 item",
        ),
        (
            {"features": {"interactions": {"half_lives_s": [3600, 3600.0]}}},
            "features.interactions: half_lives_s must be distinct",
        ),
        # store: an implicit label must come before the snapshot it needs expires
        (
            {"store": {"implicit_negative_after_s": 7200, "snapshot_ttl_s": 3600}},
            "store: implicit_negative_after_s (7200) must be below snapshot_ttl_s (3600)",
        ),
        (
            {"store": {"key_prefix": "{tenant}"}},
            "store.key_prefix: String should match pattern",
        ),
        # Kafka: a protocol and its SASL and TLS settings go together
        (
            {"kafka": {"security_protocol": "SASL_SSL"}},
            "kafka: security_protocol SASL_SSL needs sasl_mechanism",
        ),
        (
            {"kafka": {"sasl_mechanism": "PLAIN", "sasl_username": "svc"}},
            "kafka: sasl_mechanism, sasl_username set but security_protocol is PLAINTEXT",
        ),
        (
            {"kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}},
            "kafka: sasl_mechanism PLAIN needs sasl_username and sasl_password",
        ),
        (
            {"kafka": {"ssl_cafile": "/etc/ca.pem"}},
            "kafka: ssl_cafile set but security_protocol is PLAINTEXT: use SSL or SASL_SSL",
        ),
        (
            {"kafka": {"bootstrap_servers": "b1:9092,,b2:9092"}},
            "kafka.bootstrap_servers: a comma-separated list of host:port without empty entries",
        ),
        ({"kafka": {"sasl_username": ""}}, "kafka.sasl_username: String should have at least 1"),
        # topics: valid Kafka names, one per role
        (
            {"kafka": {"topics": {"events": "my events"}}},
            "kafka.topics.events: String should match pattern",
        ),
        ({"kafka": {"topics": {"labels": ".."}}}, "kafka.topics: labels: '..' is not a valid"),
        (
            {"kafka": {"topics": {"predictions": "events"}}},
            "kafka.topics: events and predictions are the same topic 'events'",
        ),
        (
            {"kafka": {"topics": {"examples": "dead-letter"}}},
            "kafka.topics: dead_letter and examples are the same topic 'dead-letter'",
        ),
        # Redis: TLS settings need a TLS URL
        (
            {"redis": {"ssl_ca_certs": "/etc/ca.pem"}},
            "redis: ssl_ca_certs set but the url is not rediss://",
        ),
        ({"metrics": {"host": ""}}, "metrics.host: String should have at least 1 character"),
        # the concept drift detector's arguments (a clock of 0 panics River's ADWIN)
        (
            {"monitoring": {"concept_params": {"clock": 0}}},
            "monitoring: concept_params.clock of adwin must be an integer in [1, 1000000]",
        ),
        (
            {"monitoring": {"concept_params": {"delta": 1.5}}},
            "monitoring: concept_params.delta of adwin must be a number in (0, 1)",
        ),
        (
            {
                "monitoring": {
                    "concept_detector": "page_hinkley",
                    "concept_params": {"threshold": -1},
                }
            },
            "monitoring: concept_params.threshold of page_hinkley must be a number > 0",
        ),
        (
            {"monitoring": {"thresholds": {"psi_warning": 0.3, "psi_critical": 0.2}}},
            "monitoring.thresholds: psi_warning (0.3) must be below psi_critical (0.2)",
        ),
    ],
)
def test_an_invalid_value_or_combination_is_refused_naming_what_to_fix(overrides, expected):
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    assert expected in str(caught.value)


def test_valid_combinations_are_accepted():
    settings = load_settings(
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "svc",
            "sasl_password": "pw",
            "ssl_cafile": "/etc/ca.pem",
        },
        redis={"url": "rediss://cache:6380/0", "ssl_ca_certs": "/etc/ca.pem"},
        store={"implicit_negative_after_s": 600, "snapshot_ttl_s": 3600},
        features={"interactions": {"half_lives_s": [60, 3600, 0.5]}},
        monitoring={"concept_detector": "page_hinkley", "concept_params": {"threshold": 20}},
    )
    assert settings.features.interactions.decay_names == ("1m", "1h", "0.5s")
    assert load_settings() == Settings()


# --- secrets in URLs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:secret@host:6380/1", "rediss://:***@host:6380/1"),
        ("redis://user:p@ss@host/0", "redis://user:***@host/0"),
        ("redis://tok3n@host/0", "redis://***@host/0"),
        ("redis://host/0?password=secret&db=2", "redis://host/0?password=***&db=2"),
        ("svc:secret@b1:9092,b2:9092", "svc:***@b1:9092,b2:9092"),
        ("svc:secret@b1:9092,svc:other@b2:9092", "svc:***@b1:9092,svc:***@b2:9092"),
        ("SASL_SSL://svc:secret@b1:9093", "SASL_SSL://svc:***@b1:9093"),
        ("redis://u:secret@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
        ("b1:9092,b2:9092", "b1:9092,b2:9092"),
        (
            "Error connecting to redis://u:secret@h:1/0: refused",
            "Error connecting to redis://u:***@h:1/0: refused",
        ),
    ],
)
def test_mask_url_hides_the_password_and_keeps_the_rest(text, masked):
    assert mask_url(text) == masked


def test_streamlearn_config_masks_the_password_of_the_redis_url_and_of_kafka_servers(
    monkeypatch,
):
    monkeypatch.setenv("STREAMLEARN_REDIS__URL", "redis://user:secret@host:6379/0")
    monkeypatch.setenv("STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", "svc:hunter2@b1:9092,b2:9092")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert "secret" not in result.output and "hunter2" not in result.output
    assert "url: redis://user:***@host:6379/0" in result.output
    assert "bootstrap_servers: svc:***@b1:9092,b2:9092" in result.output
    redacted = str(load_settings().redacted())
    assert "secret" not in redacted and "hunter2" not in redacted


def test_a_url_with_a_password_in_an_error_message_is_masked(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_REDIS__URL", "http://user:secret@host:6379/0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "redis.url: String should match pattern" in message
    assert "secret" not in message and "http://user:***@host:6379/0" in message
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2 and "secret" not in result.output


def test_a_check_across_a_section_does_not_print_the_section_and_its_secrets(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("STREAMLEARN_REDIS__PASSWORD", "s3cret")
    monkeypatch.setenv("STREAMLEARN_REDIS__SSL_CA_CERTS", "/etc/ca.pem")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "kafka: sasl_password set but security_protocol is PLAINTEXT" in message
    assert "hunter2" not in message and "s3cret" not in message


def test_a_refused_secret_value_is_not_shown():
    with pytest.raises(ConfigError) as caught:
        load_settings(redis={"password": ["hunter2"]})
    assert "redis.password: Input should be a valid string" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_log_lines_and_tracebacks_are_masked():
    try:
        raise ConnectionError("cannot reach redis://app:hunter2@cache:6379/0")
    except ConnectionError:
        record = logging.LogRecord(
            "worker",
            logging.ERROR,
            __file__,
            1,
            "redis %s down",
            ("redis://app:hunter2@c/0",),
            sys.exc_info(),
        )
    line = MaskingFormatter("%(message)s").format(record)
    assert "hunter2" not in line
    assert "redis://app:***@c/0 down" in line and "redis://app:***@cache:6379/0" in line


def test_a_crash_of_a_command_prints_its_traceback_masked(monkeypatch, capsys):
    from kafka.errors import KafkaTimeoutError

    from streamlearn.cli.common import configure_logging as _logging

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    _logging(False)
    try:
        raise KafkaTimeoutError("Unable to bootstrap from ['svc:hunter2@127.0.0.1:1']")
    except KafkaTimeoutError:
        sys.excepthook(*sys.exc_info())
    worker = threading.Thread(
        target=lambda: (_ for _ in ()).throw(OSError("redis://app:hunter2@cache/0 refused")),
        name="poller",
    )
    worker.start()
    worker.join()
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "Exception in thread poller" in err
    assert "svc:***@127.0.0.1:1" in err and "redis://app:***@cache/0 refused" in err
    assert "hunter2" not in err


def test_the_model_command_masks_the_redis_password_when_redis_is_away(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_REDIS__URL", "redis://app:hunter2@127.0.0.1:1/0")
    monkeypatch.setenv("STREAMLEARN_REDIS__SOCKET_TIMEOUT_S", "1")
    monkeypatch.setenv("STREAMLEARN_MODEL_KEY", "ab" * 32)
    result = runner.invoke(app, ["model", "list"])
    assert result.exit_code == 1, result.output
    assert "hunter2" not in result.output and "redis://app:***@127.0.0.1:1/0" in result.output
