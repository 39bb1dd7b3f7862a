"""Checkpoint lookup and reading: a missing or damaged checkpoint is a RunError naming the file."""

import json

import pytest
import torch
from safetensors.torch import save_file

from a4g.errors import RunError
from a4g.train.checkpoint import (
    EMA_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    checkpoint_dir,
    find_checkpoint,
    list_checkpoints,
    load_model_weights,
    read_step,
)


def fake_checkpoint(run, step, state=None):
    path = checkpoint_dir(run, step)
    path.mkdir(parents=True)
    (path / STATE_FILE).write_text(json.dumps({"step": step}) if state is None else state)
    return path


def test_only_complete_checkpoints_are_listed(tmp_path):
    fake_checkpoint(tmp_path, 20)
    fake_checkpoint(tmp_path, 10)
    (checkpoint_dir(tmp_path, 30).with_name("step_0000030.partial")).mkdir()  # a killed save
    assert list(list_checkpoints(tmp_path)) == [10, 20]
    assert find_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 20)
    assert find_checkpoint(tmp_path, "10") == checkpoint_dir(tmp_path, 10)


def test_lookup_refusals_are_run_errors(tmp_path):
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        find_checkpoint(tmp_path)
    fake_checkpoint(tmp_path, 10)
    with pytest.raises(CheckpointError, match=r"no checkpoint at step 3 .*have \[10\]"):
        find_checkpoint(tmp_path, 3)
    with pytest.raises(RunError, match="--checkpoint must be 'latest' or a step number, got 'last'"):
        find_checkpoint(tmp_path, "last")


def test_damaged_state_names_the_file(tmp_path):
    path = fake_checkpoint(tmp_path, 10, state='{"st')
    with pytest.raises(CheckpointError, match=rf"{path / STATE_FILE} is missing or damaged"):
        read_step(path)


def test_missing_weights_name_the_file(tmp_path):
    path = fake_checkpoint(tmp_path, 10)
    with pytest.raises(CheckpointError, match=rf"{path / EMA_FILE} is missing"):
        load_model_weights(path, use_ema=True)
    with pytest.raises(CheckpointError, match=rf"{path / MODEL_FILE} is missing"):
        load_model_weights(path, use_ema=False)


def test_live_weights_drop_the_projector(tmp_path):
    path = fake_checkpoint(tmp_path, 10)
    w = torch.arange(4.0)
    save_file({"model.a": w, "projector.b": w + 1}, str(path / MODEL_FILE))
    state = load_model_weights(path, use_ema=False)
    assert list(state) == ["a"] and torch.equal(state["a"], w)
