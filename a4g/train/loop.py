"""The training loop: V-DiT denoising + λ · alignment to cached encoder targets, with HF Accelerate.

One code path for every λ (λ = 0 is the plain baseline: the projector still runs and gets zero
gradients, so timings and numerics compare like for like). bf16 autocast on GPU, fp32 on CPU;
gradient accumulation, clipping, AdamW, EMA, ``save_state`` checkpoints and exact resume (model,
projector, EMA, optimizer, every rank's RNG and the data stream position), tensorboard scalars and
periodic sample videos. Multi-process under ``torchrun`` / ``accelerate launch``: every rank draws
its own clips (seeded by rank) and runs the same number of steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch import Tensor, nn

import a4g
from a4g.store import FeatureStore
from a4g.store_schema import StoreSchema, compatible
from a4g.train.align import Projector, alignment_loss
from a4g.train.checkpoint import list_checkpoints, load_checkpoint, read_step, save_checkpoint
from a4g.train.data import ClipPlan, clip_loader, describe, plan_clips
from a4g.train.diffusion import Objective, create_objective
from a4g.train.ema import EMA
from a4g.train.model import VDiT, create_model, default_align_depth, get_arch, resolve_model_name
from a4g.train.sample import RUN_FILE, SampleRequest, generate, load_vae, read_run, write_videos

# Settings a resumed run may change; every other one must equal the run's first launch.
RESUMABLE = frozenset(
    {"store", "steps", "num_workers", "checkpoint_every", "log_every", "sample_every", "sample_num", "vae"}
    | {"resume", "compile", "grad_checkpointing"}
)


OBJECTIVES = ("ddpm", "flow")


class TrainError(ValueError):
    """A configuration, store or run directory that cannot be trained; the message says what to change."""


@dataclass
class TrainConfig:
    """Everything ``a4g train`` takes (``a4g train --help`` describes each field)."""

    store: Path
    run: Path
    model: str = "VDiT-XL"
    objective: str = "ddpm"
    frames: int = 16
    stride: int = 3
    batch_size: int = 5
    grad_accum: int = 1
    steps: int = 400_000
    lr: float = 1e-4
    max_grad_norm: float = 1.0
    ema: float = 0.9999
    align_weight: float = 0.5
    align_depth: int | None = None
    align_encoders: list[str] | None = None
    projector_dim: int = 2048
    class_dropout: float = 0.1
    unconditional: bool = False
    hflip: bool = False
    allow_incomplete: bool = False
    num_workers: int = 4
    seed: int = 0
    checkpoint_every: int = 5000
    log_every: int = 50
    sample_every: int = 0
    sample_num: int = 4
    vae: str | None = None
    grad_checkpointing: bool = False
    compile: bool = False
    resume: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class TrainResult:
    step: int
    run: Path
    first_losses: list[float] = field(default_factory=list)
    last_losses: list[float] = field(default_factory=list)
    seconds_per_step: float = math.nan


class Trainee(nn.Module):
    """V-DiT + projector in one module, so DDP wraps both and one forward gives every loss term."""

    def __init__(
        self, model: VDiT, projector: Projector, objective: Objective, align_depth: int, align_weight: float
    ) -> None:
        super().__init__()
        self.model = model
        self.projector = projector
        self.objective = objective
        self.align_depth = align_depth
        self.align_weight = align_weight

    def forward(self, latents: Tensor, targets: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        out = self.objective.training_loss(
            self.model, latents, {"y": labels, "align_depth": self.align_depth}
        )
        denoise = out["loss"].mean()
        align, cos = alignment_loss(self.projector(out["hidden"]), targets)
        return {"loss": denoise + self.align_weight * align, "denoise": denoise, "align": align, "cos": cos}


# ------------------------------------------------------------------------------------- setup


def model_kwargs_for(cfg: TrainConfig, schema: StoreSchema, num_classes: int) -> dict[str, Any]:
    """The V-DiT's geometry follows the store: latent size and channels, clip length, classes."""
    return {
        "input_size": list(schema.latent_size),
        "in_channels": schema.vae.latent_channels,
        "num_frames": cfg.frames,
        "num_classes": 0 if cfg.unconditional else num_classes,
        "class_dropout_prob": cfg.class_dropout,
    }


def check_store(store: FeatureStore, cfg: TrainConfig, kwargs: dict[str, Any], prior: dict | None) -> None:
    """Refuse a store that does not fit the model or the run, naming the field."""
    patch = 2
    wanted: dict[str, Any] = {
        "token_grid": [s // patch for s in kwargs["input_size"]],
        "vae.latent_channels": kwargs["in_channels"],
        "flip": cfg.hflip,
    }
    if cfg.align_encoders:
        wanted["encoders"] = cfg.align_encoders
    problems = [str(m) for m in compatible(store.schema, wanted)]
    if prior is not None and prior["store"]["fingerprint"] != store.schema.fingerprint:
        problems.append(
            f"fingerprint: store has {store.schema.fingerprint[:16]}, the run was trained on "
            f"{prior['store']['fingerprint'][:16]} ({prior['store']['path']})"
        )
    if problems:
        raise TrainError(f"store {store.path} does not fit this run:\n  " + "\n  ".join(problems))


def check_resume(cfg: TrainConfig, prior: dict) -> None:
    before = prior["config"]
    now = cfg.to_json()
    diffs = [
        f"--{k.replace('_', '-')}: run has {before.get(k)!r}, now {now[k]!r}"
        for k in now
        if k not in RESUMABLE and before.get(k) != now[k]
    ]
    if diffs:
        raise TrainError(
            f"--resume of {cfg.run} with a different configuration:\n  "
            + "\n  ".join(diffs)
            + "\nrepeat the original settings, or train into a new --run"
        )


def _run_info(
    cfg: TrainConfig, store: FeatureStore, plan: ClipPlan, kwargs: dict, depth: int, world: int
) -> dict:
    s = store.schema
    return {
        "a4g_version": a4g.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_json(),
        "store": {
            "path": str(Path(store.path).resolve()),
            "fingerprint": s.fingerprint,
            "random_init": s.random_init,
            "every": s.preprocess.every,
            "frame_size": s.preprocess.size,
            "classes": list(store.index.classes),
        },
        "model": {"name": cfg.model, "kwargs": kwargs, "patch_size": 2},
        "vae": s.vae.model_dump(mode="json"),
        "align": {
            "encoders": cfg.align_encoders or list(s.encoder_names),
            "depth": depth,
            "weight": cfg.align_weight,
            "target_channels": plan.target_channels,
            "projector_dim": cfg.projector_dim,
        },
        "data": {"frames": cfg.frames, "stride": cfg.stride, "store_row_step": plan.step},
        "world_size": world,
    }


def _check_config(cfg: TrainConfig) -> None:
    try:
        cfg.model = resolve_model_name(cfg.model)  # run.json records the full name
    except ValueError as err:
        raise TrainError(f"--model: {err}") from None
    if cfg.objective not in OBJECTIVES:
        raise TrainError(f"--objective {cfg.objective!r} is unknown; choose one of {list(OBJECTIVES)}")
    for name in ("batch_size", "grad_accum", "steps", "checkpoint_every", "log_every"):
        if getattr(cfg, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.sample_every and cfg.vae is None:
        raise TrainError(
            "--sample-every needs --vae (tiny or a local diffusers VAE directory) to decode samples"
        )
    if not 0 <= cfg.class_dropout < 1:
        raise TrainError(f"--class-dropout must be in [0, 1), got {cfg.class_dropout}")


# ------------------------------------------------------------------------------------- loop


def train(cfg: TrainConfig, echo=print) -> TrainResult:
    """Train (or resume) a run; every process of a multi-process launch calls this."""
    _check_config(cfg)
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=not cuda,  # Accelerate sets up gloo for torchrun's CPU processes only when told "cpu"
        mixed_precision="bf16" if cuda else "no",
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(cfg.run), logging_dir=str(cfg.run / "logs")),
    )
    say = echo if accelerator.is_main_process else (lambda *_: None)
    rank, world = accelerator.process_index, accelerator.num_processes

    store = FeatureStore.open(cfg.store)
    prior, resume_from = _previous_run(cfg, say)
    if store.schema.random_init:
        say(RANDOM_INIT_WARNING.format(store=store.path))
    plan = plan_clips(
        store,
        frames=cfg.frames,
        stride=cfg.stride,
        align_encoders=cfg.align_encoders,
        hflip=cfg.hflip,
        allow_incomplete=cfg.allow_incomplete,
    )
    num_classes = max(len(store.index.classes), int(store.index.labels.max()) + 1)
    kwargs = prior["model"]["kwargs"] if resume_from else model_kwargs_for(cfg, store.schema, num_classes)
    check_store(store, cfg, kwargs, prior if resume_from else None)
    depth = cfg.align_depth or default_align_depth(cfg.model)
    if not 1 <= depth <= get_arch(cfg.model).depth:
        raise TrainError(f"--align-depth {depth} must be in [1, {get_arch(cfg.model).depth}] for {cfg.model}")
    say(f"data: {describe(plan)}")

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = create_model(
        cfg.model,
        **{**kwargs, "input_size": tuple(kwargs["input_size"])},
        grad_checkpointing=cfg.grad_checkpointing,
    )
    projector = Projector(model.embed_dim, plan.target_channels, cfg.projector_dim)
    ema = EMA(model, cfg.ema)
    if cfg.compile:
        model.compile()  # in place: state_dict keys (and so checkpoints) stay the same
    trainee = Trainee(model, projector, create_objective(cfg.objective), depth, cfg.align_weight)
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=cfg.lr, weight_decay=0.0, fused=cuda or None)
    trainee, optimizer = accelerator.prepare(trainee, optimizer)
    ema.model.to(accelerator.device)
    set_seed(int(np.random.SeedSequence([cfg.seed, rank]).generate_state(1)[0]))  # noise differs per rank

    step = read_step(resume_from) if resume_from else 0
    loader = clip_loader(
        plan,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        rank=rank,
        num_workers=cfg.num_workers,
        first_batch=step * cfg.grad_accum,
        pin_memory=cuda,
    )
    batches = iter(loader)  # before load_state: creating it draws from the RNG that load_state restores
    if resume_from:
        step = load_checkpoint(accelerator, resume_from, ema)
        say(f"resumed {cfg.run} at step {step}")
    if accelerator.is_main_process:
        _write_run_json(
            cfg, _run_info(cfg, store, plan, kwargs, depth, world), prior if resume_from else None, step
        )
    if step >= cfg.steps:
        say(f"{cfg.run} is at step {step} >= --steps {cfg.steps}; nothing to do")
        return TrainResult(step, cfg.run)

    vae = None
    if cfg.sample_every and accelerator.is_main_process:
        vae = load_vae(cfg.vae, store.schema.vae.model_dump(), accelerator.device)
    accelerator.init_trackers(
        "tensorboard",
        config={k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in cfg.to_json().items()},
    )
    say(
        f"training {cfg.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params) from step "
        f"{step} to {cfg.steps} on {world} x {accelerator.device}, align λ={cfg.align_weight} after block {depth}"
    )

    meter = Meter(cfg.batch_size * cfg.frames * cfg.grad_accum * world)
    start_step, start_time = step, time.perf_counter()
    trainee.train()
    while step < cfg.steps:
        micro_batches = [next(batches) for _ in range(cfg.grad_accum)]
        if step == start_step and world > 1:
            _check_ranks_differ(accelerator, micro_batches[0], say)
        meter.add(_optimizer_step(cfg, accelerator, trainee, optimizer, micro_batches))
        ema.update(accelerator.unwrap_model(trainee).model)
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            scalars = meter.flush(accelerator) | {"lr": optimizer.param_groups[0]["lr"]}
            accelerator.log({f"train/{k}": v for k, v in scalars.items()}, step=step)
            say(
                f"step {step:>7}  loss {scalars['loss']:.4f}  denoise {scalars['denoise']:.4f}  "
                f"align {scalars['align']:.4f}  cos {scalars['cos']:.3f}  grad {scalars['grad_norm']:.3f}  "
                f"{scalars['frames_per_s']:.0f} frames/s"
            )
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            if world > 1:
                _check_weights_in_sync(accelerator, trainee, say)
            say(f"saved {save_checkpoint(accelerator, cfg.run, step, ema)}")
        if vae is not None and (step % cfg.sample_every == 0 or step == cfg.steps):
            _write_samples(cfg, ema.model, create_objective(cfg.objective), vae, step, say)

    accelerator.end_training()
    seconds = (time.perf_counter() - start_time) / (step - start_step)
    result = TrainResult(step, cfg.run, *meter.first_and_last(), seconds)
    if len(result.first_losses) == len(result.last_losses) == Meter.EDGE:
        a, b = np.mean(result.first_losses), np.mean(result.last_losses)
        trend = "falling" if b < a else "NOT falling"
        say(f"denoising loss: mean of the first 20 steps {a:.4f}, of the last 20 steps {b:.4f} ({trend})")
    say(f"{seconds:.3f} s/step over {step - start_step} steps")
    return result


RANDOM_INIT_WARNING = (
    "=" * 88 + "\nWARNING: {store} was made with RANDOM-INIT encoder/VAE weights (weights_sha256 = "
    "'random'):\nthe alignment targets are meaningless; fine for tests and demos, never for research.\n"
    + "="
    * 88
)


def _previous_run(cfg: TrainConfig, say) -> tuple[dict | None, Path | None]:
    """The run's earlier run.json and, with --resume, the checkpoint to continue from."""
    found = list_checkpoints(cfg.run)
    prior = read_run(cfg.run) if (cfg.run / RUN_FILE).is_file() else None
    if found and not cfg.resume:
        raise TrainError(
            f"{cfg.run} already holds checkpoints up to step {max(found)}; pass --resume or use a new --run"
        )
    if not (cfg.resume and found):
        if cfg.resume:
            say(f"--resume: no checkpoint in {cfg.run} yet; starting at step 0")
        return prior, None
    if prior is None:
        raise TrainError(f"{cfg.run} has checkpoints but no {RUN_FILE}; cannot resume without its settings")
    check_resume(cfg, prior)
    return prior, found[max(found)]


def _write_run_json(cfg: TrainConfig, info: dict, prior: dict | None, step: int) -> None:
    cfg.run.mkdir(parents=True, exist_ok=True)
    if prior is not None:
        info["created"] = prior["created"]
        info["resumed"] = [*prior.get("resumed", []), {"step": step, "world_size": info["world_size"]}]
    (cfg.run / RUN_FILE).write_text(json.dumps(info, indent=2) + "\n")


def _optimizer_step(
    cfg: TrainConfig, accelerator: Accelerator, trainee: nn.Module, optimizer, micro_batches: list
) -> dict[str, Tensor]:
    """Accumulate gradients over the micro-batches (DDP syncs only on the last), clip, step."""
    sums: dict[str, Tensor] = {}
    for i, batch in enumerate(micro_batches):
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(trainee):
            labels = None if cfg.unconditional else batch["labels"]
            losses = trainee(batch["latents"], batch["targets"], labels)
            accelerator.backward(losses["loss"] / len(micro_batches))
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach().float() / len(micro_batches)
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
    sums["grad_norm"] = torch.as_tensor(accelerator.clip_grad_norm_(trainee.parameters(), max_norm)).float()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return sums


class Meter:
    """Sums step scalars on the device (no host sync per step); averages them over ranks when logging."""

    EDGE = 20  # steps kept at each end of the run for the "is the loss falling" summary

    def __init__(self, frames_per_step: int) -> None:
        self.frames_per_step = frames_per_step
        self.sums: dict[str, Tensor] = {}
        self.steps = 0
        self.since = time.perf_counter()
        self.first: list[Tensor] = []
        self.last: deque[Tensor] = deque(maxlen=self.EDGE)

    def add(self, values: dict[str, Tensor]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0) + v
        self.steps += 1
        (self.first if len(self.first) < self.EDGE else self.last).append(values["denoise"])

    def flush(self, accelerator: Accelerator) -> dict[str, float]:
        names = sorted(self.sums)
        mean = accelerator.reduce(torch.stack([self.sums[k] for k in names]), "mean") / self.steps
        out = dict(zip(names, mean.tolist(), strict=True))
        out["frames_per_s"] = self.frames_per_step * self.steps / (time.perf_counter() - self.since)
        self.sums, self.steps, self.since = {}, 0, time.perf_counter()
        return out

    def first_and_last(self) -> tuple[list[float], list[float]]:
        return [float(x) for x in self.first], [float(x) for x in self.last]


def _check_ranks_differ(accelerator: Accelerator, batch: dict[str, Tensor], say) -> None:
    """Mis-seeded ranks would train on the same clips and waste the extra GPUs: catch it at step one."""
    keys = torch.stack([batch["video"], batch["start"]], dim=1).to(accelerator.device)
    everyone = accelerator.gather(keys[None]).cpu()
    seen = {tuple(k.flatten().tolist()) for k in everyone}
    if len(seen) < accelerator.num_processes:
        raise RuntimeError("two ranks drew identical first batches; per-rank data seeding is broken")
    say(f"data: the {accelerator.num_processes} ranks drew different clips")


def _check_weights_in_sync(accelerator: Accelerator, trainee: nn.Module, say) -> None:
    """Ranks whose weights drift apart train different models silently: compare checksums."""
    params = [p.detach() for p in accelerator.unwrap_model(trainee).parameters()]
    checksum = torch.stack(
        [sum(p.double().sum() for p in params), sum(p.double().square().sum() for p in params)]
    )
    everyone = accelerator.gather(checksum[None].to(accelerator.device)).cpu()
    if not torch.equal(everyone, everyone[:1].expand_as(everyone)):
        raise RuntimeError(f"weights differ across ranks (checksums {everyone.tolist()}); DDP is out of sync")
    say(f"weights in sync across {accelerator.num_processes} ranks")


def _write_samples(cfg: TrainConfig, ema_model: VDiT, objective: Objective, vae, step: int, say) -> None:
    """Periodic samples from the EMA weights, with a fixed seed so runs compare step to step."""
    req = SampleRequest(
        num=cfg.sample_num,
        frames=cfg.frames,
        class_id=None,
        cfg=4.0,
        sampler=None,
        steps=50,
        seed=cfg.seed,
        batch_size=cfg.sample_num,
    )
    cuda = ema_model.pos_embed.device.type == "cuda"
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        videos, labels = generate(ema_model, objective, vae, req)
    out = cfg.run / "samples" / f"step_{step:07d}"
    write_videos(out, videos, labels, fps=8)
    say(f"wrote {len(videos)} sample videos to {out}")
