"""`a4g train --config FILE.yaml`: every option can come from the file, flags override it, unknown keys
are refused by name. The training itself is replaced by a stub that keeps the config it was given, so
these tests check what the CLI resolves, not what torch does with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from a4g.cli import app, load_command
from a4g.errors import ConfigError
from a4g.train.config import TrainConfig, option_key, read_config_file, resolve_train_config

runner = CliRunner()


@pytest.fixture
def launched(monkeypatch):
    """The configs `a4g train` would have trained with (a4g.train.loop.train replaced)."""
    import a4g.train.loop

    seen: list[TrainConfig] = []
    monkeypatch.setattr(a4g.train.loop, "train", lambda cfg, echo=print: seen.append(cfg))
    return seen


def write_yaml(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def invoke(*args: str):
    return runner.invoke(app, ["train", *args])


def test_file_values_then_flags(tmp_path, launched):
    # "1e-3" is a string to YAML 1.1 (PyYAML): it must still become the float a flag would give.
    conf = write_yaml(
        tmp_path / "t.yaml",
        "features: /stores/s\nmodel: tiny\nbatch_size: 3\nsteps: 2\nlr: 1e-3\nalign_encoders: [a, b]\n",
    )
    result = invoke("--out", str(tmp_path / "run"), "--config", str(conf), "--steps", "7")
    assert result.exit_code == 0, result.output
    cfg = launched[0]
    assert (cfg.store, cfg.batch_size, cfg.steps, cfg.lr) == ("/stores/s", 3, 7, 1e-3)
    assert cfg.model == "VDiT-tiny" and cfg.align_encoders == ("a", "b")
    assert cfg.frames == TrainConfig.__dataclass_fields__["frames"].default  # neither file nor flag


def test_a_flag_typed_at_its_default_value_still_overrides_the_file(tmp_path, launched):
    """Overriding is decided by where a value came from, not by whether it differs from the default."""
    default = TrainConfig.__dataclass_fields__["batch_size"].default
    conf = write_yaml(tmp_path / "t.yaml", {"features": "s", "batch_size": default + 2})
    result = invoke("--out", str(tmp_path / "run"), "--config", str(conf), "--batch-size", str(default))
    assert result.exit_code == 0, result.output
    assert launched[0].batch_size == default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch_sise: 3\n", "unknown key 'batch_sise'; did you mean 'batch_size'?"),
        ("store: /s\n", "unknown key 'store'; write `features:`"),
        ("config: other.yaml\n", "unknown key 'config'"),
        ("- a\n- b\n", "expected a mapping of option names to values"),
        ("batch_size: [1\n", "not valid YAML"),
        ("features: s\nbatch_size: many\n", "batch_size: Input should be a valid integer"),
        ("features: s\nlr: -1\n", "--lr must be a finite number > 0, got -1"),
    ],
)
def test_bad_files_end_in_one_error_line_naming_the_key(tmp_path, launched, text, message):
    conf = write_yaml(tmp_path / "t.yaml", text)
    result = invoke("--out", str(tmp_path / "run"), "--config", str(conf))
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not launched


def test_features_are_required_from_somewhere(tmp_path, launched):
    result = invoke("--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "--features is required" in result.output and not launched


def test_every_train_option_is_a_config_key():
    """One key per flag of `a4g train` (except --config itself): nothing is command-line only."""
    cmd = load_command("train")
    flags = {p.opts[0] for p in cmd.params if p.param_type_name == "option"} - {"--config", "--help"}
    keys = {option_key(f.name) for f in dataclasses.fields(TrainConfig)}
    assert {f.removeprefix("--").replace("-", "_") for f in flags} == keys


def test_every_field_round_trips_through_a_file(tmp_path):
    base = TrainConfig(store="s", run=Path("r"))
    values = {option_key(f.name): getattr(base, f.name) for f in dataclasses.fields(TrainConfig)}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    conf = write_yaml(tmp_path / "all.yaml", values)
    read = read_config_file(conf)
    assert set(read) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert resolve_train_config({}, conf) == base.validate()


def test_empty_file_is_no_settings(tmp_path):
    assert read_config_file(write_yaml(tmp_path / "e.yaml", "")) == {}
    with pytest.raises(ConfigError, match="--features is required"):
        resolve_train_config({"run": tmp_path / "r"}, tmp_path / "e.yaml")
