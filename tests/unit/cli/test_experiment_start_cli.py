"""``experiment start`` and ``model train --start``: a definition to fix is refused before
any service is asked, with exit code 2 and what to fix. (Recording it for the group is
``tests/integration/test_experiment_start.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from streamlearn.cli.app import app
from streamlearn.cli.experiment import read_definition

# Nothing listens there: a command that got past the checks would fail with exit code 1.
REDIS = {"STREAMLEARN_REDIS__URL": "redis://127.0.0.1:1/0"}


def start(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["experiment", "start", *args], env=REDIS)
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arm", "tree=nonsense"], "experiment model of arm 'tree' is 'nonsense'"),
        (["--arm", "tree"], "expected NAME=SPEC or NAME=version:N"),
        (["--arm", "a=logistic", "--share", "0.6", "--share", "0.5"], "one per arm (1)"),
        (["--arm", "a=logistic", "--share", "1.2"], "shares must be > 0 and sum to 1"),
        (["--arm", "a=logistic", "--mode", "canary"], "mode: Input should be"),
        ([], "say what to start"),
    ],
)
def test_a_definition_to_fix_exits_2_saying_what_to_fix(args, message):
    code, output = start(*args)
    assert code == 2 and message in output, output


def test_a_file_takes_the_configuration_files_section_or_a_bare_one(tmp_path: Path):
    section = {"id": "f", "arms": {"a": 0.5, "b": 0.5}, "models": {"b": "arf"}}
    wrapped, bare = tmp_path / "wrapped.yaml", tmp_path / "bare.yaml"
    wrapped.write_text(yaml.safe_dump({"experiment": section}))
    bare.write_text(yaml.safe_dump(section))
    assert read_definition(wrapped) == read_definition(bare) == section
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"experiment": {**section, "arms": {"a": 1.5}}}))
    code, output = start("--file", str(bad))
    assert code == 2 and "the experiment definition" in output, output
    code, output = start("--file", str(wrapped), "--arm", "c=logistic")
    assert code == 2 and "not both" in output, output
    code, output = start("--file", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in output, output


def test_a_valid_definition_goes_on_to_redis():
    code, output = start("--arm", "tree=hoeffding_tree")
    assert code == 1 and "Redis at" in output, output


def test_train_start_needs_a_challenger():
    args = ["model", "train", "--from-log", "--start"]
    result = CliRunner().invoke(app, args, env=REDIS)
    assert result.exit_code == 2 and "--challenger ARM" in result.output, result.output
