"""What a training run shows and logs: a progress bar, one line per ``--log-every`` steps, trackers.

- **Console**: a tqdm bar on stderr (steps, loss, rate, ETA) when stderr is a terminal and
  ``--progress`` (the default); the ``step ... loss ...`` line every ``--log-every`` steps is printed
  either way (above the bar), so logs redirected to a file keep one line per period and no bar.
- **Trackers** (``--report-to``) through Accelerate: ``tensorboard`` (``RUN/logs/a4g/``), ``wandb``
  (``RUN/logs/wandb/``), ``all`` or ``none``. wandb runs offline unless ``WANDB_MODE`` says otherwise
  or ``WANDB_API_KEY`` is set: a training job never stops at a login prompt and needs no network;
  ``wandb sync RUN/logs/wandb/offline-run-*`` uploads later. A resumed run continues the same wandb
  run (its id is derived from the run directory's record).
- **Sample videos** go to the trackers too: wandb gets the grid mp4; tensorboard, whose video
  summaries need moviepy, gets a filmstrip image of the grid (up to 8 frames side by side).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from accelerate import Accelerator
from tqdm import tqdm

from a4g.train.config import TrainConfig

Say = Callable[[str], object]

PROJECT = "a4g"  # Accelerate's project name: tensorboard's sub-folder of RUN/logs and wandb's project
FILMSTRIP_FRAMES = 8


# ------------------------------------------------------------------------------------- trackers


def trackers(report_to: str) -> list[str]:
    """Accelerate's ``log_with`` for ``--report-to``."""
    return {"all": ["tensorboard", "wandb"], "none": []}.get(report_to, [report_to])


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; else online only with an API key in the environment, offline otherwise."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def start_trackers(accelerator: Accelerator, cfg: TrainConfig, created: str, say: Say) -> None:
    """Start the ``--report-to`` trackers with the run's settings as hyper-parameters."""
    names = trackers(cfg.report_to)
    if not names:
        return
    init: dict[str, Any] = {}
    if "wandb" in names:
        folder = cfg.run / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        run_id = hashlib.sha256(f"{Path(cfg.run).resolve()}|{created}".encode()).hexdigest()[:16]
        mode = wandb_mode()
        init["wandb"] = {"name": Path(cfg.run).name, "dir": str(folder), "mode": mode, "id": run_id}
        init["wandb"]["resume"] = "allow"
        say(f"wandb: {mode} run {run_id} in {folder / 'wandb'}" + _sync_hint(mode, folder))
    config = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in vars(cfg).items()}
    accelerator.init_trackers(PROJECT, config=config, init_kwargs=init)


def _sync_hint(mode: str, folder: Path) -> str:
    return f" (upload later: wandb sync {folder / 'wandb'}/offline-run-*)" if mode == "offline" else ""


def log_sample_videos(accelerator: Accelerator, grid_video: np.ndarray, grid_mp4: Path, step: int) -> None:
    """The preview grid ``[F, H, W, 3]`` uint8 (written to ``grid_mp4``) to every started tracker."""
    names = {t.name for t in accelerator.trackers}
    if "wandb" in names:
        import wandb

        tracker = accelerator.get_tracker("wandb", unwrap=True)
        tracker.log({"samples/grid": wandb.Video(str(grid_mp4), format="mp4")}, step=step)
    if "tensorboard" in names:
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        writer.add_image("samples/grid", filmstrip(grid_video), step, dataformats="HWC")


def filmstrip(video: np.ndarray, frames: int = FILMSTRIP_FRAMES) -> np.ndarray:
    """Up to ``frames`` evenly spaced frames of ``[F, H, W, 3]`` side by side → ``[H, k*W, 3]``."""
    pick = np.unique(np.linspace(0, len(video) - 1, min(frames, len(video))).round().astype(int))
    return np.concatenate(list(video[pick]), axis=1)


# ------------------------------------------------------------------------------------- console


def log_line(step: int, scalars: Mapping[str, float]) -> str:
    """The ``--log-every`` line; with ``--learn-sigma`` the denoising loss's two parts (mse, vlb) too."""
    parts = [f"step {step:>7}", f"loss {scalars['loss']:.4f}", f"denoise {scalars['denoise']:.4f}"]
    if "vlb" in scalars:
        parts += [f"mse {scalars['mse']:.4f}", f"vlb {scalars['vlb']:.4f}"]
    parts += [
        f"align {scalars['align']:.4f}",
        f"cos {scalars['cos']:.3f}",
        f"grad {scalars['grad_norm']:.3f}",
        f"{scalars['frames_per_s']:.0f} frames/s",
    ]
    return "  ".join(parts)


class Progress:
    """A tqdm bar over the run's steps with the last logged loss; a no-op unless ``enabled`` and the
    stream is a terminal. :meth:`say` prints above the bar instead of through it."""

    def __init__(self, enabled: bool, start: int, total: int, echo: Say, stream: IO[str] | None = None):
        stream = stream or sys.stderr
        self.echo = echo
        self.active = enabled and stream.isatty()
        self.bar = tqdm(
            total=total,
            initial=start,
            unit="step",
            file=stream,
            disable=not self.active,
            dynamic_ncols=True,
            smoothing=0.05,  # the ETA follows the recent rate, not the first (compiling) steps
        )

    def step(self, scalars: Mapping[str, float] | None = None) -> None:
        if scalars is not None:
            self.bar.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
        self.bar.update(1)

    def say(self, message: str) -> object:
        if not self.active:
            return self.echo(message)
        with tqdm.external_write_mode(file=sys.stdout):
            return self.echo(message)

    def close(self) -> None:
        self.bar.close()
