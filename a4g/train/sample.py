"""Sample videos from a trained run: latent sampling, un-scaling and per-frame VAE decoding, mp4 output.

Used by ``a4g sample`` and by the training loop's periodic samples, so both produce the same videos.
Results are deterministic for a seed and batch size: batch ``b`` draws its noise from a generator
seeded with ``(seed, b)``. The run is rebuilt from its typed record (``a4g/train/run_record.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from a4g.encoders import FrozenVAE, create_vae
from a4g.encoders.weights import RANDOM
from a4g.errors import A4GError, ConfigError
from a4g.store.schema import VAESpec
from a4g.torchutil import autocast, resolve_device
from a4g.train.checkpoint import find_checkpoint, load_model_weights, read_step
from a4g.train.config import check_bounds, setting
from a4g.train.diffusion import Objective, create_objective, sample
from a4g.train.model import VDiT, create_model
from a4g.train.run_record import RunRecord, read_run_record
from a4g.video import write_video

SAMPLE_FPS = 8  # frame rate of the mp4s, for `a4g sample` and the training loop's periodic samples

# What decides that the VAE decodes the store's latents as they were encoded.
_VAE_IDENTITY = ("name", "weights_sha256", "scaling_factor", "latent_channels")


class SampleError(ConfigError):
    """A sampling request that does not fit the run; the message says what to change."""


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

    def validate(self) -> SampleConfig:
        """Check every value, raising ConfigError naming the flag; returns the config."""
        check_bounds(self)
        return self


class SampleResult(NamedTuple):
    paths: list[Path]  # one mp4 per video, then grid.mp4
    step: int  # of the checkpoint sampled


def load_vae(name_or_path: str, run_vae: VAESpec, device: torch.device | str = "cpu") -> FrozenVAE:
    """The VAE the store was made with; random-init VAEs are rebuilt from the same seed as extraction.

    Refuses a different VAE, naming the field, since decoding with another VAE gives garbage.
    """
    try:
        vae = create_vae(name_or_path, random_init=run_vae.weights_sha256 == RANDOM, device=device)
    except A4GError:
        raise
    except ValueError as err:  # e.g. 'tiny' (random-only) for a store made with real weights
        raise SampleError(f"--vae {name_or_path}: {err}") from None
    bad = [
        f"vae.{k}: store has {getattr(run_vae, k)!r}, --vae {name_or_path} has {getattr(vae.spec, k)!r}"
        for k in _VAE_IDENTITY
        if getattr(vae.spec, k) != getattr(run_vae, k)
    ]
    if bad:
        raise SampleError("--vae is not the VAE the store was made with: " + "; ".join(bad))
    return vae


def model_from_run(record: RunRecord) -> VDiT:
    return create_model(record.model.name, **record.model.kwargs.model_dump())


def objective_from_run(record: RunRecord) -> Objective:
    return create_objective(record.config.objective, learn_sigma=record.model.kwargs.learn_sigma)


def _labels(model: VDiT, req: SampleRequest) -> np.ndarray | None:
    """Class ids ``[num]`` for the request, or None for an unconditional model."""
    if not model.num_classes:
        if req.class_id is not None:
            raise SampleError("--class needs a class-conditional run; this run was trained --unconditional")
        return None
    if req.class_id is None:
        return np.random.default_rng(req.seed).integers(model.num_classes, size=req.num)
    if not 0 <= req.class_id < model.num_classes:
        raise SampleError(f"--class {req.class_id} is out of range: the run has {model.num_classes} classes")
    return np.full(req.num, req.class_id)


@torch.no_grad()
def generate(
    model: VDiT, objective: Objective, vae: FrozenVAE, req: SampleRequest
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sample ``req.num`` videos → uint8 ``[N, F, H, W, 3]`` and the labels used (None: unconditional)."""
    device = next(model.parameters()).device
    labels = _labels(model, req)
    guidance = req.guidance if model.num_classes else 1.0
    shape = (req.frames or model.num_frames, model.in_channels, *model.input_size)
    videos = []
    for b, lo in enumerate(range(0, req.num, req.batch_size)):
        n = min(req.batch_size, req.num - lo)
        seed = int(np.random.SeedSequence([req.seed, b]).generate_state(1)[0])
        gen = torch.Generator(device=device).manual_seed(seed)
        y = None if labels is None else torch.as_tensor(labels[lo : lo + n], device=device)
        z = sample(model, objective, (n, *shape), req.sampler, req.steps, y, guidance, gen)
        videos.append(decode(vae, z))
    return np.concatenate(videos), labels


def decode(vae: FrozenVAE, latents: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Scaled latents ``[B, F, C, h, w]`` → uint8 frames ``[B, F, H, W, 3]``, decoded frame by frame."""
    b, f = latents.shape[:2]
    flat = latents.reshape(b * f, *latents.shape[2:]).float()
    frames = torch.cat([vae.decode(flat[i : i + chunk]).cpu() for i in range(0, b * f, chunk)])
    return frames.permute(0, 2, 3, 1).reshape(b, f, *frames.shape[2:], 3).numpy()


def grid(videos: np.ndarray, pad: int = 2) -> np.ndarray:
    """Tile ``[N, F, H, W, 3]`` videos into one ``[F, H', W', 3]`` video (near-square, even sides)."""
    n, f, h, w, _ = videos.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    height, width = rows * (h + pad) + pad, cols * (w + pad) + pad
    out = np.zeros((f, height + height % 2, width + width % 2, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[:, y : y + h, x : x + w] = videos[i]
    return out


def write_videos(out: Path, videos: np.ndarray, labels: np.ndarray | None, fps: int) -> list[Path]:
    """One mp4 per video (``NNNN.mp4`` or ``NNNN_cCLASS.mp4``) plus ``grid.mp4``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, video in enumerate(videos):
        name = f"{i:04d}.mp4" if labels is None else f"{i:04d}_c{int(labels[i])}.mp4"
        write_video(out / name, _even(video), fps=fps)
        paths.append(out / name)
    write_video(out / "grid.mp4", grid(videos), fps=fps)
    return [*paths, out / "grid.mp4"]


def _even(video: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: pad odd ones with one black row or column."""
    f, h, w, _ = video.shape
    if h % 2 == 0 and w % 2 == 0:
        return video
    out = np.zeros((f, h + h % 2, w + w % 2, 3), np.uint8)
    out[:, :h, :w] = video
    return out


def sample_run(cfg: SampleConfig) -> SampleResult:
    """Everything ``a4g sample`` does: rebuild the run's model, draw, decode, write the mp4s."""
    cfg.validate()
    record = read_run_record(cfg.run)
    device = resolve_device(cfg.device)
    path = find_checkpoint(cfg.run, cfg.checkpoint)
    model = model_from_run(record)
    model.load_state_dict(load_model_weights(path, cfg.ema))
    model.to(device).eval()
    objective = objective_from_run(record)
    _check_request(cfg, record, objective, model)
    vae = load_vae(cfg.vae, record.vae, device)
    with autocast(device):
        videos, labels = generate(model, objective, vae, cfg)
    return SampleResult(write_videos(cfg.out, videos, labels, cfg.fps), read_step(path))


def _check_request(req: SampleRequest, record: RunRecord, objective: Objective, model: VDiT) -> None:
    if req.sampler is not None and req.sampler not in objective.samplers:
        raise SampleError(
            f"--sampler {req.sampler} does not fit the run's objective {record.config.objective!r}; "
            f"use one of {list(objective.samplers)}"
        )
    if req.frames is not None and req.frames > model.num_frames:
        raise SampleError(
            f"--frames {req.frames} exceeds the {model.num_frames} frames the run was trained on"
        )
