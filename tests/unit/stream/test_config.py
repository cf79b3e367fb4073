"""Configuration: file + environment, errors that say what to fix, secrets never shown."""

from __future__ import annotations

from typer.testing import CliRunner

from stream.cli import app
from stream.config import ConfigError, load_settings

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
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("STREAMLEARN_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    settings = load_settings()
    assert settings.kafka.client_options()["sasl_plain_password"] == "s3cret-value"
    assert "s3cret-value" not in repr(settings)
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0
    assert "s3cret-value" not in result.output and "**********" in result.output
