"""What ``a4g sample`` takes (and what the training loop's periodic samples draw), torch-free.

Kept apart from ``a4g/train/sample.py`` (which imports the model, diffusers and the encoders, ~5 s)
because the CLI reads these defaults to declare its flags: ``a4g sample --help`` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from a4g.train.config import check_bounds, setting

SAMPLE_FPS = 8  # frame rate of the mp4s, for `a4g sample` and the training loop's periodic samples


@dataclass(frozen=True, kw_only=True)
class SampleRequest:
    """What to draw. The training loop's periodic samples keep the defaults of guidance and steps."""

    num: int = setting(16, ge=1)
    frames: int | None = setting(None, ge=1)  # None: the run's training clip length
    class_id: int | None = setting(None, flag="--class", ge=0)  # None: random classes / no labels
    guidance: float = setting(4.0, flag="--cfg", ge=0)  # classifier-free guidance scale; 1: none
    sampler: str | None = None  # None: the objective's first (ddpm / euler)
    steps: int = setting(50, ge=1)
    seed: int = setting(0, ge=0)
    batch_size: int = setting(8, ge=1)


@dataclass(frozen=True, kw_only=True)
class SampleConfig(SampleRequest):
    """Everything ``a4g sample`` takes: the request, the run it draws from and where the mp4s go."""

    run: Path
    out: Path
    vae: str
    checkpoint: str = "latest"  # or a step number
    ema: bool = True  # the EMA weights (False: the live ones)
    fps: int = setting(SAMPLE_FPS, ge=1)
    device: str = "auto"
    progress: bool = True  # a tqdm bar over the videos

    def validate(self) -> SampleConfig:
        """Check every value, raising ConfigError naming the flag; returns the config."""
        check_bounds(self)
        return self
