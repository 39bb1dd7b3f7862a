"""Checkpoints of a run: ``RUN/checkpoints/step_XXXXXXX`` written by Accelerate's ``save_state``.

A checkpoint holds the model + projector (``model.safetensors``), the optimizer, every rank's RNG
states (Accelerate's files), the EMA weights (``ema.safetensors``) and ``trainer_state.json`` with
the step. It is written into ``step_XXXXXXX.partial`` and renamed when every rank has finished, so a
directory without the suffix is always complete; a killed save leaves only a ``.partial`` that the
next save replaces.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from a4g.errors import RunError
from a4g.train.ema import EMA

STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
MODEL_FILE = "model.safetensors"  # Accelerate's name for the first prepared model
_NAME = re.compile(r"^step_(\d{7,})$")


class CheckpointError(RunError):
    """A checkpoint that does not exist or cannot be read; the message names it and what exists."""


def checkpoint_root(run: Path) -> Path:
    return Path(run) / "checkpoints"


def checkpoint_dir(run: Path, step: int) -> Path:
    return checkpoint_root(run) / f"step_{step:07d}"


def list_checkpoints(run: Path) -> dict[int, Path]:
    """Complete checkpoints by step, oldest first."""
    root = checkpoint_root(run)
    found = {}
    if root.is_dir():
        for path in root.iterdir():
            match = _NAME.match(path.name)
            if match and (path / STATE_FILE).is_file():
                found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def find_checkpoint(run: Path, which: str | int = "latest") -> Path:
    """``"latest"`` or a step number → the checkpoint directory, or a clear :class:`CheckpointError`."""
    found = list_checkpoints(run)
    if not found:
        raise CheckpointError(f"{checkpoint_root(run)} holds no complete checkpoint; train longer first")
    if which == "latest":
        return found[max(found)]
    try:
        step = int(which)
    except ValueError:
        raise CheckpointError(f"--checkpoint must be 'latest' or a step number, got {which!r}") from None
    if step not in found:
        raise CheckpointError(f"no checkpoint at step {step} in {checkpoint_root(run)}; have {list(found)}")
    return found[step]


def read_step(path: Path) -> int:
    """The step a checkpoint was saved at, from its ``trainer_state.json``."""
    state = Path(path) / STATE_FILE
    try:
        return int(json.loads(state.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{state} is missing or damaged ({type(err).__name__}); use another checkpoint"
        ) from None


def save_checkpoint(accelerator: Accelerator, run: Path, step: int, ema: EMA) -> Path:
    """Collective: every rank calls it. Returns the final directory."""
    final = checkpoint_dir(run, step)
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # a re-run of the same step replaces it
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(partial / EMA_FILE))
        (partial / STATE_FILE).write_text(json.dumps({"step": step}) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        partial.rename(final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path, ema: EMA) -> int:
    """Restore model, projector, optimizer, RNG and EMA exactly; returns the step."""
    accelerator.load_state(str(path))
    ema.load_state_dict(load_file(str(Path(path) / EMA_FILE)))
    return read_step(path)


def load_model_weights(path: Path, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """V-DiT weights of a checkpoint for sampling: the EMA copy, or the trained (live) weights."""
    file = Path(path) / (EMA_FILE if use_ema else MODEL_FILE)
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; the checkpoint is incomplete, use another one")
    if use_ema:
        return load_file(str(file))
    state = load_file(str(file))
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
