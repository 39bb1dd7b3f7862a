"""TrainConfig: values refused with the flag named before they reach torch; metadata on the fields."""

import dataclasses
from pathlib import Path

import pytest

from a4g.errors import A4GError, ConfigError
from a4g.train.config import TrainConfig, flag_of, resumable_fields

BASE = TrainConfig(store=Path("store"), run=Path("run"), model="VDiT-tiny")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": -1.0}, "--lr must be a finite number > 0, got -1"),
        ({"lr": 0.0}, "--lr must be a finite number > 0, got 0"),
        ({"lr": float("nan")}, "--lr must be a finite number > 0, got nan"),
        ({"lr": float("inf")}, "--lr must be a finite number > 0, got inf"),
        ({"ema": 1.5}, "--ema must be in [0, 1), got 1.5"),
        ({"ema": 1.0}, "--ema must be in [0, 1), got 1"),
        ({"seed": -1}, "--seed must be >= 0, got -1"),
        ({"max_grad_norm": -0.5}, "--max-grad-norm must be a finite number >= 0, got -0.5"),
        ({"max_grad_norm": float("inf")}, "--max-grad-norm must be a finite number >= 0, got inf"),
        ({"align_weight": float("nan")}, "--align-weight must be a finite number >= 0, got nan"),
        ({"align_weight": -0.1}, "--align-weight must be a finite number >= 0, got -0.1"),
        ({"align_depth": 0}, "--align-depth must be >= 1, got 0"),
        ({"align_depth": 5}, "--align-depth must be in [1, 4] for VDiT-tiny, got 5"),
        ({"class_dropout": 1.0}, "--class-dropout must be in [0, 1), got 1"),
        ({"class_dropout": -0.1}, "--class-dropout must be in [0, 1), got -0.1"),
        ({"batch_size": 0}, "--batch-size must be >= 1, got 0"),
        ({"num_workers": -1}, "--num-workers must be >= 0, got -1"),
        ({"model": "huge"}, "--model: unknown model 'huge'"),
        ({"objective": "score"}, "--objective 'score' is unknown; choose one of ['ddpm', 'flow']"),
        ({"sample_every": 5}, "--sample-every needs --vae"),
        ({"learn_sigma": True, "objective": "flow"}, "--learn-sigma needs --objective ddpm"),
        ({"align_encoders": []}, "--align-encoders is empty"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(change, message):
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(BASE, **change).validate()
    assert str(err.value).startswith(message)
    assert isinstance(err.value, A4GError) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "change",
    [
        {"ema": 0.0},
        {"class_dropout": 0.0},
        {"max_grad_norm": 0.0},
        {"align_weight": 0.0},
        {"align_depth": 1},
        {"align_depth": 4},
        {"seed": 0},
        {"sample_every": 5, "vae": "tiny"},
        {"learn_sigma": True},
    ],
)
def test_edge_values_are_accepted(change):
    dataclasses.replace(BASE, **change).validate()


def test_validate_returns_the_full_model_name_and_leaves_the_input_alone():
    short = dataclasses.replace(BASE, model="tiny")
    assert short.validate().model == "VDiT-tiny"
    assert short.model == "tiny"  # frozen: a copy comes back


def test_defaults_are_valid_and_live_on_the_fields():
    cfg = TrainConfig(store=Path("s"), run=Path("r"))
    assert cfg.validate() == cfg  # the default model name is already the full one
    assert cfg.depth == 8  # VDiT-XL aligns after block 8 (REPA / Align4Gen)


def test_align_encoders_become_a_tuple():
    """The run record reads a tuple back; a list from a caller must compare equal to it."""
    cfg = dataclasses.replace(BASE, align_encoders=["a", "b"])
    assert cfg.align_encoders == ("a", "b")


def test_resumable_set_comes_from_field_metadata():
    names = resumable_fields(TrainConfig)
    declared = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("resumable")}
    assert names == declared
    assert {"steps", "num_workers", "resume", "store", "run"} <= names
    assert not {"lr", "seed", "model", "frames", "align_weight"} & names


def test_flags_default_to_the_field_name_unless_declared():
    assert flag_of(TrainConfig, "max_grad_norm") == "--max-grad-norm"
    assert flag_of(TrainConfig, "store") == "--features"
    assert flag_of(BASE, "run") == "--out"
