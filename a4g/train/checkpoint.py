"""Checkpoints of a run: ``RUN/checkpoints/step_XXXXXXX`` written by Accelerate's ``save_state``.

A checkpoint holds the model + projector (``model.safetensors``), the optimizer, every rank's RNG
states (Accelerate's files), the EMA weights (``ema.safetensors``) and ``trainer_state.json`` with
the step. It is written into ``step_XXXXXXX.partial`` and renamed when every rank has finished, so a
directory without the suffix is always complete; a killed save leaves only a ``.partial`` that the
next save replaces.

Resuming checks before it loads (issue 10): a newest checkpoint with a truncated or missing file
(:func:`damage`: headers and zip directories only, no tensor read) is skipped with a warning for the
one before it; an unreadable RNG state file, which Accelerate would skip silently, is refused unless
``--force``. A disk that fills up mid-save is one error with the earlier checkpoints intact, and
sampling refuses weights that are not finite.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import load as accelerate_load
from accelerate.utils.constants import RNG_STATE_NAME
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from a4g.errors import RunError
from a4g.train.ema import EMA

STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
MODEL_FILE = "model.safetensors"  # Accelerate's name for the first prepared model
OPTIMIZER_FILE = "optimizer.bin"  # Accelerate's name for the first prepared optimizer
KILL_ENV = "A4G_TEST_KILL_AT"  # tests only: "PHASE:STEP" SIGKILLs the process at that point of a save
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_LOW_SPACE = 64 << 20  # bytes free under which a write that failed without an errno is "disk full"
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
        read_step(found[max(found)])  # a damaged step file is named now, not after sampling
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
    """Collective: every rank calls it. Returns the final directory.

    A full disk mid-save is a :class:`CheckpointError`; the half-written copy is removed and every
    earlier checkpoint stays as it was.
    """
    final = checkpoint_dir(run, step)
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    _kill_point("begin", step)
    accelerator.wait_for_everyone()
    with _disk_full_is_an_error(final, partial):
        _save_files(accelerator, partial, step, ema)
    accelerator.wait_for_everyone()
    _kill_point("rename", step)
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)  # a re-run of the same step replaces it, once whole
        partial.rename(final)
    accelerator.wait_for_everyone()
    _kill_point("done", step)
    return final


def _save_files(accelerator: Accelerator, partial: Path, step: int, ema: EMA) -> None:
    accelerator.save_state(str(partial))
    _kill_point("state", step)
    if accelerator.is_main_process:
        weights = {k: v.contiguous() for k, v in ema.state_dict().items()}
        save_file(weights, str(partial / EMA_FILE), metadata=ema.metadata())  # + its update count
        (partial / STATE_FILE).write_text(json.dumps({"step": step}) + "\n")


def load_checkpoint(
    accelerator: Accelerator, path: Path, ema: EMA, force: bool = False, say: Callable[[str], object] = print
) -> int:
    """Restore model, projector, optimizer, RNG and EMA exactly; returns the step.

    An unreadable RNG state file is refused (``force``: warned about, and the random states stay as
    seeded), since a run resumed without it silently differs from an uninterrupted one.
    """
    problem = rng_state_problem(path, accelerator.process_index)
    if problem and not force:
        raise CheckpointError(
            f"{problem}: without it the resumed run would draw other noise than an uninterrupted one; "
            "pass --force to resume anyway with random states seeded from --seed"
        )
    if problem:
        say(f"warning: {problem}; --force: resuming with random states seeded from --seed instead")
    accelerator.load_state(str(path))
    ema.load_state_dict(load_file(str(Path(path) / EMA_FILE)))
    step = read_step(path)
    ema.load_metadata(read_ema_header(path), fallback_updates=step)
    return step


def read_ema_header(path: Path) -> dict[str, str]:
    """The string header of a checkpoint's ``ema.safetensors`` (EMA update count, decay, warm-up)."""
    with _damaged(Path(path) / EMA_FILE), safe_open(str(Path(path) / EMA_FILE), framework="pt") as f:
        return dict(f.metadata() or {})


def load_model_weights(path: Path, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """V-DiT weights of a checkpoint for sampling: the EMA copy, or the trained (live) weights."""
    file = Path(path) / (EMA_FILE if use_ema else MODEL_FILE)
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; the checkpoint is incomplete, use another one")
    state = _finite_weights(file)
    if use_ema:
        return state
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def _finite_weights(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's weights file, refused when unreadable or not finite."""
    others = list(list_checkpoints(file.parent.parent.parent))
    try:
        state = load_file(str(file))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(
            f"{file} cannot be read ({err}); the checkpoint is damaged: pick another --checkpoint "
            f"(have {others})"
        ) from None
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(
            f"{file} holds NaN or Inf weights ({bad}): the run diverged before this checkpoint; pick an "
            f"earlier --checkpoint (have {others}), or train again with a lower --lr"
        )
    return state


# ------------------------------------------------------------------------------- integrity checks


def damage(path: Path) -> str | None:
    """Why a checkpoint cannot be loaded (a missing or truncated file, named), or None.

    Cheap: the step file, the safetensors headers (which must cover their file exactly) and the
    optimizer's zip directory (at the end of the file); no tensor is read. The RNG states have their
    own rule (:func:`rng_state_problem`).
    """
    path = Path(path)
    try:
        read_step(path)
        for name in (MODEL_FILE, EMA_FILE):
            with _damaged(path / name), safe_open(str(path / name), framework="pt"):
                pass
        with _damaged(path / OPTIMIZER_FILE):
            zipfile.ZipFile(path / OPTIMIZER_FILE).close()
    except CheckpointError as err:
        return str(err)
    return None


@contextlib.contextmanager
def _damaged(file: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, SafetensorError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{file} is missing or damaged ({err})") from None


def latest_intact(run: Path, say: Callable[[str], object] = print) -> Path | None:
    """The newest checkpoint :func:`damage` finds nothing wrong with (None: the run has none).

    Each damaged newer one is named in a warning: it costs the steps since the one before it, not the
    run, and the next save of its step replaces it. Every checkpoint damaged: a CheckpointError.
    """
    problems = []
    for path in reversed(list_checkpoints(run).values()):
        problem = damage(path)
        if problem is None:
            for p in problems:
                say(f"warning: {p}; resuming from {path.name}, the newest intact checkpoint")
            return path
        problems.append(problem)
    if problems:
        raise CheckpointError(
            f"no checkpoint of {run} can be loaded: {'; '.join(problems)}; train a new --out"
        )
    return None


def rng_state_problem(path: Path, rank: int) -> str | None:
    """Why rank ``rank``'s RNG state file (Accelerate's ``random_states_RANK.pkl``) cannot be restored.

    Accelerate's ``load_state`` skips an unreadable one with an INFO log line, so it is read here
    first, with Accelerate's own loader (weights-only unpickling: no code in the file runs).
    """
    file = Path(path) / f"{RNG_STATE_NAME}_{rank}.pkl"
    try:
        states = accelerate_load(file)
    except Exception as err:  # noqa: BLE001 - missing, truncated, refused: all mean "cannot be restored"
        return f"the RNG state file {file} cannot be read ({type(err).__name__})"
    wanted = ["random_state", "numpy_random_seed", "torch_manual_seed"]
    if torch.cuda.is_available():
        wanted.append("torch_cuda_manual_seed")
    missing = [k for k in wanted if not isinstance(states, dict) or k not in states]
    if missing:
        return f"the RNG state file {file} lacks {', '.join(missing)} (saved on other hardware?)"
    return None


def differences(a: Path, b: Path) -> list[str]:
    """What is not bit-identical between two checkpoints: ``FILE:tensor`` names (model, EMA, optimizer).

    How the kill-point test and sweep judge a resumed run against an uninterrupted one.
    """
    diffs = []
    for name in (MODEL_FILE, EMA_FILE):
        x, y = load_file(str(Path(a) / name)), load_file(str(Path(b) / name))
        diffs += [f"{name}:{k}" for k in sorted(x.keys() | y.keys()) if k not in x or k not in y]
        diffs += [f"{name}:{k}" for k in sorted(x.keys() & y.keys()) if not torch.equal(x[k], y[k])]
    x, y = (torch.load(Path(c) / OPTIMIZER_FILE, weights_only=True)["state"] for c in (a, b))
    for i in sorted(x.keys() | y.keys()):
        same = i in x and i in y and all(torch.equal(x[i][k], y[i][k]) for k in x[i])
        diffs += [] if same else [f"{OPTIMIZER_FILE}:state.{i}"]
    return diffs


def _kill_point(phase: str, step: int) -> None:
    """Test hook (tests/test_train_kill.py, benchmarks/train_kill_sweep.py): die like a power cut at an
    exact point of a save. One environment lookup per save; never set in real runs."""
    if os.environ.get(KILL_ENV) == f"{phase}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _disk_full_is_an_error(final: Path, partial: Path) -> Iterator[None]:
    """A full disk or quota while writing ``partial`` -> one CheckpointError; the partial copy goes."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as err:
        if not _disk_full(err, partial):
            raise
        shutil.rmtree(partial, ignore_errors=True)  # give back the space the half-written copy took
        earlier = list(list_checkpoints(final.parent.parent))
        kept = f"checkpoint step {max(earlier)} is intact" if earlier else "no earlier checkpoint exists"
        raise CheckpointError(
            f"disk full while saving {final} ({' '.join(str(err).split())[:160]}); {kept}. Free space on "
            f"{final.parent} (or raise the quota), then run the same command with --resume"
        ) from None


def _disk_full(err: BaseException, partial: Path) -> bool:
    """ENOSPC / EDQUOT however the writer reports it: OSError (Python), SafetensorError (Rust's io
    error text), or torch.save's RuntimeError ("unexpected pos", no errno) with the disk now full."""
    if isinstance(err, OSError):
        return err.errno in _DISK_FULL
    text = str(err)
    if "No space left" in text or "Disk quota exceeded" in text:
        return True
    try:
        return "inline_container" in text and shutil.disk_usage(partial.parent).free < _LOW_SPACE
    except OSError:
        return False
