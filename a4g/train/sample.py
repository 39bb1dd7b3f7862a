"""Sample videos from a trained run: latent sampling, un-scaling and per-video VAE decoding, mp4 output.

Used by ``a4g sample`` (and ``a4g eval curve``) and by the training loop's periodic samples, so all
draw the same videos. The run is rebuilt from its typed record (``a4g/train/run_record.py``).

**Video i depends only on (seed, i)**, never on the batch it is drawn in or on how many processes
share the work: its class comes from ``SeedSequence([seed, i, 0])`` and every draw of noise (the
initial latent and each ancestral step's) from its own ``torch.Generator`` seeded from
``SeedSequence([seed, i, 1])`` (``a4g.train.diffusion.Generators``); frames are decoded one video at a
time. The random draws are therefore exactly equal; the float arithmetic around them is not always:
kernels are chosen by batch shape and split across threads, which changes the last bits, and 50
ancestral steps can carry that into a few pixels. Measured on the demo (VDiT-tiny, 128 px, 10 frames,
50 DDPM steps, 8 videos, CPU): 2 torchrun ranks with 1 thread each and one process with 1 thread,
both ``--batch-size 4``, wrote bit-identical files; a run with 2 threads killed (``kill -9``) after 3
videos and resumed at batch 2 matched an uninterrupted batch-8 run in 7 of 8 files bit for bit (the
8th, drawn alone in the resumed run's last batch, in 99.3 % of its pixels); one process with 2
threads and batch 8 differed from the 2-rank set in 0.01-5.6 % of each video's pixels (at most 13
levels), FVD 3686.8 against 3683.5. With equal threads and batch size, sets are bit-identical.

**What was sampled is recorded** in ``OUT/samples.json`` (``a4g/train/sample_manifest.py``): the
settings that decide the pixels and the finished files. The preview grid goes to
``OUT/preview/grid.mp4``, which `a4g eval` never scores. Sampling into a folder that already has a
manifest resumes when the settings are equal (finished videos are skipped; a larger ``--num``
extends the set) and is refused, naming each differing flag, otherwise.

**At scale**, under ``torchrun`` / ``accelerate launch`` every process reads RANK / WORLD_SIZE /
LOCAL_RANK and draws the indices ``i ≡ RANK (mod WORLD_SIZE)`` that are not finished; no process
group is needed because each video is its own file, written as soon as its batch is decoded
(``a4g.video.write_video``: temporary name, then an atomic rename), so a killed run loses at most one
batch and the same command resumes, with any number of processes. Every process writes the pending
manifest before its first video and, when it is done, checks whether every file of the set exists;
the last to finish therefore always sees the whole set and writes the final manifest and the
preview (writes are atomic and equal, so two finishing together do no harm). ``--out`` is created
and test-written before the model loads.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

import a4g
from a4g.encoders import FrozenVAE, create_vae
from a4g.encoders.weights import RANDOM
from a4g.errors import A4GError, ConfigError
from a4g.store.schema import VAESpec
from a4g.torchutil import autocast, resolve_device
from a4g.train.checkpoint import find_checkpoint, load_model_weights, read_ema_header, read_step
from a4g.train.diffusion import Objective, create_objective, sample
from a4g.train.ema import NO_WARMUP, initial_share, read_metadata
from a4g.train.model import VDiT, create_model
from a4g.train.run_record import EMASpec, RunRecord, read_run_record
from a4g.train.sample_config import SAMPLE_FPS, SampleConfig, SampleRequest  # noqa: F401  (torch-free)
from a4g.train.sample_manifest import (
    PARTIAL,
    PREVIEW,
    SampleManifest,
    SampleSettings,
    loose_videos,
    read_manifest,
    settings_diff,
    write_manifest,
)
from a4g.video import decode_video, write_video

# SAMPLE_FPS, SampleRequest and SampleConfig live in a4g/train/sample_config.py (torch-free, so the CLI can
# read their defaults and `a4g sample --help` stays fast); they are re-exported here.
PREVIEW_VIDEOS = 16  # videos tiled into preview/grid.mp4
EMA_WARN_SHARE = 0.1
"""`a4g sample` warns when more than this share of the EMA average is still the initial random weights."""
LABEL_STREAM, NOISE_STREAM = 0, 1  # the two random streams of one video (see the module docstring)

# What decides that the VAE decodes the store's latents as they were encoded.
_VAE_IDENTITY = ("name", "weights_sha256", "scaling_factor", "latent_channels", "shift_factor")

Say = Callable[[str], object]


class SampleError(ConfigError):
    """A sampling request that does not fit the run or its --out; the message says what to change."""


class SampleResult(NamedTuple):
    out: Path
    step: int  # of the checkpoint sampled
    weights: str  # "ema" or "live"
    num: int  # videos in the set (>= --num when the folder already held more)
    sampled: int  # videos this process drew now
    reused: int  # videos of the set that were already finished when it started
    complete: bool  # every video exists and samples.json lists them
    rank: int
    world: int


class Launch(NamedTuple):
    """This process's place in a multi-process launch (0 of 1 when started alone)."""

    rank: int
    world: int
    local_rank: int | None


def launch() -> Launch:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun and ``accelerate launch`` set them."""
    env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    try:
        rank, world = int(env["RANK"] or 0), int(env["WORLD_SIZE"] or 1)
        local = None if env["LOCAL_RANK"] is None else int(env["LOCAL_RANK"])
    except ValueError:
        raise SampleError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, got {env}") from None
    if not 0 <= rank < world:
        raise SampleError(f"RANK {rank} is outside 0..WORLD_SIZE-1 ({world}); launch with torchrun")
    return Launch(rank, world, local)


# ------------------------------------------------------------------------------------ the run


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


def sample_settings(cfg: SampleConfig, record: RunRecord, step: int) -> SampleSettings:
    """The settings that decide the pixels, resolved against the run; refuses what does not fit it."""
    kw, objective = record.model.kwargs, objective_from_run(record)
    if cfg.sampler is not None and cfg.sampler not in objective.samplers:
        raise SampleError(
            f"--sampler {cfg.sampler} does not fit the run's objective {record.config.objective!r}; "
            f"use one of {list(objective.samplers)}"
        )
    if cfg.frames is not None and cfg.frames > kw.num_frames:
        raise SampleError(f"--frames {cfg.frames} exceeds the {kw.num_frames} frames the run was trained on")
    _check_class(cfg.class_id, kw.num_classes)
    down = record.vae.downsample
    return SampleSettings(
        run=str(Path(cfg.run).resolve()),
        run_created=record.created,
        checkpoint_step=step,
        weights="ema" if cfg.ema else "live",
        seed=cfg.seed,
        sampler=cfg.sampler or objective.samplers[0],
        steps=cfg.steps,
        guidance=cfg.guidance if kw.num_classes else 1.0,
        class_id=cfg.class_id if kw.num_classes else None,
        frames=cfg.frames or kw.num_frames,
        size=(kw.input_size[0] * down, kw.input_size[1] * down),
        fps=cfg.fps,
        vae=record.vae.name,
        vae_sha256=record.vae.weights_sha256,
    )


def _check_class(class_id: int | None, num_classes: int) -> None:
    if not num_classes and class_id is not None:
        raise SampleError("--class needs a class-conditional run; this run was trained --unconditional")
    if class_id is not None and not 0 <= class_id < num_classes:
        raise SampleError(f"--class {class_id} is out of range: the run has {num_classes} classes")


def ema_warning(record: RunRecord, checkpoint: Path) -> str | None:
    """A warning when the checkpoint's EMA is still mostly its initial random weights, else None."""
    spec = record.ema or EMASpec(decay=record.config.ema, warmup=NO_WARMUP)
    step = read_step(checkpoint)
    updates = ema_updates(checkpoint)
    share = initial_share(updates, spec.decay, spec.warmup)
    if share <= EMA_WARN_SHARE:
        return None
    return (
        f"warning: the EMA weights of step {step} are still {share:.0%} the initial random weights "
        f"({updates} updates at decay {spec.decay}, warm-up {spec.warmup}): their samples show little of "
        "what the model learned. Sample with --no-ema, or train longer (new runs warm the EMA up)."
    )


def ema_updates(checkpoint: Path) -> int:
    """EMA updates behind a checkpoint's EMA weights (older checkpoints: its step, one per step)."""
    updates, _, _ = read_metadata(read_ema_header(checkpoint))
    return read_step(checkpoint) if updates is None else updates


# ------------------------------------------------------------------------------- one video's draws


def video_seed(seed: int, index: int, stream: int) -> int:
    """64-bit seed of one random stream of video ``index``: depends on (seed, index, stream) only."""
    return int(np.random.SeedSequence([seed, index, stream]).generate_state(1, np.uint64)[0])


def video_labels(indices: Sequence[int], num_classes: int, req: SampleRequest) -> list[int] | None:
    """The class of each video (``req.class_id``, or drawn from (seed, i)); None for unconditional runs."""
    _check_class(req.class_id, num_classes)
    if not num_classes:
        return None
    if req.class_id is not None:
        return [req.class_id] * len(indices)
    draw = np.random.default_rng
    return [int(draw(video_seed(req.seed, i, LABEL_STREAM)).integers(num_classes)) for i in indices]


def video_name(index: int, label: int | None) -> str:
    return f"{index:04d}.mp4" if label is None else f"{index:04d}_c{label}.mp4"


@torch.no_grad()
def generate_batch(
    model: VDiT,
    objective: Objective,
    vae: FrozenVAE,
    req: SampleRequest,
    indices: Sequence[int],
    labels: Sequence[int] | None,
) -> np.ndarray:
    """Videos ``indices`` of the request, drawn together → uint8 ``[B, F, H, W, 3]``."""
    device = next(model.parameters()).device
    gens = [
        torch.Generator(device=device).manual_seed(video_seed(req.seed, i, NOISE_STREAM)) for i in indices
    ]
    y = None if labels is None else torch.as_tensor(list(labels), device=device)
    guidance = req.guidance if model.num_classes else 1.0
    shape = (len(indices), req.frames or model.num_frames, model.in_channels, *model.input_size)
    z = sample(model, objective, shape, req.sampler, req.steps, y, guidance, gens)
    return np.concatenate([decode(vae, z[b : b + 1]) for b in range(len(indices))])


def generate(
    model: VDiT, objective: Objective, vae: FrozenVAE, req: SampleRequest
) -> tuple[np.ndarray, np.ndarray | None]:
    """Videos 0..num-1 → uint8 ``[N, F, H, W, 3]`` and the labels used (None: unconditional)."""
    labels = video_labels(range(req.num), model.num_classes, req)
    videos = []
    for lo in range(0, req.num, req.batch_size):
        idx = range(lo, min(lo + req.batch_size, req.num))
        ys = None if labels is None else labels[idx.start : idx.stop]
        videos.append(generate_batch(model, objective, vae, req, idx, ys))
    return np.concatenate(videos), None if labels is None else np.asarray(labels)


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
    """One mp4 per video (``NNNN.mp4`` or ``NNNN_cCLASS.mp4``) plus ``preview/grid.mp4``; returns the
    videos' paths (the training loop's periodic samples)."""
    paths = []
    for i, video in enumerate(videos):
        paths.append(out / video_name(i, None if labels is None else int(labels[i])))
        write_video(paths[-1], _even(video), fps=fps)
    write_video(out / PREVIEW / "grid.mp4", grid(videos), fps=fps)
    return paths


def _even(video: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: pad odd ones with one black row or column."""
    f, h, w, _ = video.shape
    if h % 2 == 0 and w % 2 == 0:
        return video
    out = np.zeros((f, h + h % 2, w + w % 2, 3), np.uint8)
    out[:, :h, :w] = video
    return out


# ------------------------------------------------------------------------------------ a4g sample


def sample_run(cfg: SampleConfig, echo: Say = print) -> SampleResult:
    """Everything ``a4g sample`` does in this process (see the module docstring for several)."""
    cfg.validate()
    where = launch()
    record = read_run_record(cfg.run)
    checkpoint = find_checkpoint(cfg.run, cfg.checkpoint)
    step = read_step(checkpoint)
    settings = sample_settings(cfg, record, step)
    updates = ema_updates(checkpoint) if cfg.ema else None
    names = open_out(cfg.out, settings, cfg.num, record.model.kwargs.num_classes, updates)
    done = {n for n in names if (cfg.out / n).is_file()}
    mine = [i for i in range(where.rank, len(names), where.world) if names[i] not in done]
    warning = ema_warning(record, checkpoint) if cfg.ema else None
    if warning and where.rank == 0:
        echo(warning)
    if mine:
        for i in mine:  # a killed run's half-written videos of this process's indices
            _partial(cfg.out / names[i]).unlink(missing_ok=True)
        _draw(cfg, record, checkpoint, settings, [(i, names[i]) for i in mine], where)
    complete = finish_set(cfg.out, settings, names, updates, where.rank)
    return SampleResult(
        cfg.out, step, settings.weights, len(names), len(mine), len(done), complete, *where[:2]
    )


def open_out(
    out: Path, settings: SampleSettings, num: int, num_classes: int, updates: int | None
) -> list[str]:
    """Check ``out`` can be written and holds no other set; write the pending manifest.

    Returns the file names of the whole set (``max(num, the folder's num)`` videos, index order).
    """
    _check_writable(out)
    prior = read_manifest(out)
    if prior is not None:
        diff = settings_diff(prior.settings, settings)
        if diff:
            raise SampleError(
                f"--out {out} holds samples drawn with other settings:\n  "
                + "\n  ".join(diff)
                + "\nrepeat them to resume that set, or sample into another --out"
            )
        num = max(num, prior.num)
    req = SampleRequest(num=num, seed=settings.seed, class_id=settings.class_id)
    labels = video_labels(range(num), num_classes, req)
    names = [video_name(i, None if labels is None else labels[i]) for i in range(num)]
    stray = loose_videos(out, set(names) | set(prior.files if prior else []))
    if stray:
        raise SampleError(
            f"--out {out} already holds {len(stray)} videos that are not part of this sample set (e.g. "
            f"{stray[0].name}); `a4g eval` would score them too: sample into an empty --out"
        )
    done = [n for n in names if (out / n).is_file()]
    write_manifest(out, _manifest(settings, num, done, updates))
    return names


def _manifest(settings: SampleSettings, num: int, files: list[str], updates: int | None) -> SampleManifest:
    return SampleManifest(
        a4g_version=a4g.__version__, settings=settings, num=num, files=files, ema_updates=updates
    )


def _check_writable(out: Path) -> None:
    """Create ``out`` and write a file in it now, so a read-only or full place fails before any work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise SampleError(
            f"--out {out} cannot be written ({err.strerror or err}); choose another folder"
        ) from None


def _partial(path: Path) -> Path:
    return path.with_suffix(PARTIAL + path.suffix)  # write_video's temporary name


def _draw(
    cfg: SampleConfig,
    record: RunRecord,
    checkpoint: Path,
    settings: SampleSettings,
    todo: list[tuple[int, str]],
    where: Launch,
) -> None:
    """Load the model and VAE, then draw ``todo`` (index, file name) in batches, writing each video."""
    device = resolve_device(cfg.device, where.local_rank)
    model = model_from_run(record)
    model.load_state_dict(load_model_weights(checkpoint, cfg.ema))
    model.to(device).eval()
    objective = objective_from_run(record)
    vae = load_vae(cfg.vae, record.vae, device)
    req = SampleRequest(
        num=len(todo),
        frames=settings.frames,
        class_id=settings.class_id,
        guidance=settings.guidance,
        sampler=settings.sampler,
        steps=settings.steps,
        seed=settings.seed,
        batch_size=cfg.batch_size,
    )
    labels = video_labels([i for i, _ in todo], model.num_classes, req)
    desc = f"sample step {settings.checkpoint_step}" + (
        f" rank {where.rank}/{where.world}" if where.world > 1 else ""
    )
    bar = tqdm(total=len(todo), desc=desc, unit="video", disable=not cfg.progress or where.rank != 0)
    with bar, autocast(device):
        for lo in range(0, len(todo), cfg.batch_size):
            batch = todo[lo : lo + cfg.batch_size]
            ys = None if labels is None else labels[lo : lo + len(batch)]
            videos = generate_batch(model, objective, vae, req, [i for i, _ in batch], ys)
            for (_, name), video in zip(batch, videos, strict=True):
                write_video(cfg.out / name, _even(video), fps=settings.fps)
            bar.update(len(batch))


def finish_set(out: Path, settings: SampleSettings, names: list[str], updates: int | None, rank: int) -> bool:
    """When every video of the set exists: the final manifest and the preview grid. Returns whether."""
    if not all((out / n).is_file() for n in names):
        return False  # another process is still drawing; the last one to finish writes the manifest
    write_manifest(out, _manifest(settings, len(names), names, updates))
    preview = out / PREVIEW / "grid.mp4"
    if not preview.is_file():  # the first videos never change, so neither does the preview
        tiles = np.stack([decode_video(out / n) for n in names[:PREVIEW_VIDEOS]])
        mine = preview.with_name(f".grid.rank{rank}.mp4")  # one temporary per process, then atomic
        write_video(mine, grid(tiles), fps=settings.fps)
        os.replace(mine, preview)
    return True
