"""Sample videos from a trained run: latent sampling, un-scaling and per-frame VAE decoding, mp4 output.

Used by ``a4g sample`` and by the training loop's periodic samples, so both produce the same videos.
Results are deterministic for a seed and batch size: batch ``b`` draws its noise from a generator
seeded with ``(seed, b)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a4g.encoders import FrozenVAE, create_vae
from a4g.encoders.weights import RANDOM
from a4g.sources.synthetic import write_video
from a4g.train.checkpoint import find_checkpoint, load_model_weights, read_step
from a4g.train.diffusion import Objective, create_objective, sample
from a4g.train.model import VDiT, create_model

RUN_FILE = "run.json"


class SampleError(ValueError):
    """A sampling request that does not fit the run; the message says what to change."""


def read_run(run: Path) -> dict[str, Any]:
    path = Path(run) / RUN_FILE
    if not path.is_file():
        raise SampleError(f"{run} is not a training run: no {RUN_FILE} (train one with `a4g train`)")
    return json.loads(path.read_text())


def load_vae(name_or_path: str, run_vae: dict[str, Any], device: torch.device | str = "cpu") -> FrozenVAE:
    """The VAE the store was made with; random-init VAEs are rebuilt from the same seed as extraction.

    Refuses a different VAE, naming the field, since decoding with another VAE gives garbage.
    """
    vae = create_vae(name_or_path, random_init=run_vae["weights_sha256"] == RANDOM, device=device)
    spec = vae.spec.model_dump()
    bad = [
        f"vae.{k}: store has {run_vae[k]!r}, --vae {name_or_path} has {spec[k]!r}"
        for k in ("name", "weights_sha256", "scaling_factor", "latent_channels")
        if spec[k] != run_vae[k]
    ]
    if bad:
        raise SampleError("--vae is not the VAE the store was made with: " + "; ".join(bad))
    return vae


def model_from_run(info: dict[str, Any]) -> VDiT:
    kwargs = dict(info["model"]["kwargs"])
    kwargs["input_size"] = tuple(kwargs["input_size"])
    return create_model(info["model"]["name"], **kwargs)


def objective_from_run(info: dict[str, Any]) -> Objective:
    return create_objective(info["config"]["objective"])


@dataclass(frozen=True)
class SampleRequest:
    num: int
    frames: int
    class_id: int | None  # None: random classes (conditional) / no labels (unconditional)
    cfg: float
    sampler: str | None
    steps: int
    seed: int
    batch_size: int


def _labels(model: VDiT, req: SampleRequest) -> np.ndarray | None:
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
    cfg = req.cfg if model.num_classes else 1.0
    shape = (req.frames, model.in_channels, *model.input_size)
    videos = []
    for b, lo in enumerate(range(0, req.num, req.batch_size)):
        n = min(req.batch_size, req.num - lo)
        seed = int(np.random.SeedSequence([req.seed, b]).generate_state(1)[0])
        gen = torch.Generator(device=device).manual_seed(seed)
        y = None if labels is None else torch.as_tensor(labels[lo : lo + n], device=device)
        z = sample(model, objective, (n, *shape), req.sampler, req.steps, y, cfg, gen)
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


def sample_run(
    run: Path,
    out: Path,
    vae_name: str,
    req: SampleRequest,
    checkpoint: str = "latest",
    use_ema: bool = True,
    fps: int = 8,
    device: str = "auto",
) -> tuple[list[Path], int]:
    """Everything ``a4g sample`` does; returns the written files and the checkpoint's step."""
    info = read_run(run)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    path = find_checkpoint(run, checkpoint)
    model = model_from_run(info)
    model.load_state_dict(load_model_weights(path, use_ema))
    model.to(dev).eval()
    objective = objective_from_run(info)
    if req.sampler is not None and req.sampler not in objective.samplers:
        raise SampleError(
            f"--sampler {req.sampler} does not fit the run's objective {info['config']['objective']!r}; "
            f"use one of {list(objective.samplers)}"
        )
    if req.frames > model.num_frames:
        raise SampleError(
            f"--frames {req.frames} exceeds the {model.num_frames} frames the run was trained on"
        )
    vae = load_vae(vae_name, info["vae"], dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        videos, labels = generate(model, objective, vae, req)
    return write_videos(out, videos, labels, fps), read_step(path)
