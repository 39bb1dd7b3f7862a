"""The training loop: V-DiT denoising + λ · alignment to cached encoder targets, with HF Accelerate.

One code path for every λ (λ = 0 is the plain baseline: the projector still runs and gets zero
gradients, so timings and numerics compare like for like). bf16 autocast on GPU, fp32 on CPU;
gradient accumulation, clipping (from ``--clip-after`` on, as Latte's ``start_clip_iter``), AdamW,
EMA, ``save_state`` checkpoints (``--keep-last``: ``a4g/train/retention.py``) and exact resume (model,
projector, EMA, optimizer, every rank's RNG and the data stream position), a progress bar, tracker
scalars and periodic sample videos (``a4g/train/reporting.py``). A fresh run may start from DiT /
Latte / a4g weights (``--init-from``, ``a4g/train/init_from.py``). Multi-process under ``torchrun`` /
``accelerate launch``: every rank draws its own clips (seeded by rank) and runs the same number of steps.

What a run was made from is kept in its typed record (``a4g/train/run_record.py``); which settings a
``--resume`` may change is declared on the :class:`TrainConfig` fields (``a4g/train/config.py``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch import Tensor, nn

import a4g
from a4g.encoders import FrozenVAE
from a4g.errors import RunError
from a4g.geometry import PATCH_SIZE
from a4g.runlock import claim_run_dir
from a4g.store import FeatureStore
from a4g.store.quant import batch_to_device
from a4g.store.schema import compatible
from a4g.store.verify import check_for_training
from a4g.torchutil import autocast
from a4g.train.align import Projector, alignment_loss
from a4g.train.checkpoint import latest_intact, list_checkpoints, load_checkpoint, read_step, save_checkpoint
from a4g.train.config import TrainConfig, flag_of, resumable_fields
from a4g.train.data import ClipPlan, clip_loader, describe, plan_clips
from a4g.train.diffusion import Objective, create_objective
from a4g.train.ema import EMA, NO_WARMUP, WARMUP
from a4g.train.guards import LossWatch, explain_out_of_memory
from a4g.train.init_from import load_init
from a4g.train.model import VDiT, create_model
from a4g.train.reporting import Progress, log_line, log_sample_videos, start_trackers, trackers
from a4g.train.retention import prune_checkpoints
from a4g.train.run_record import (
    AlignSpec,
    DatasetRef,
    DataSpec,
    EMASpec,
    InitRef,
    ModelKwargs,
    ModelSpec,
    Resumption,
    RunRecord,
    StoreRef,
    read_run_record,
    run_file,
    write_run_record,
)
from a4g.train.sample import SAMPLE_FPS, SampleRequest, generate, grid, load_vae, write_videos
from a4g.train.sample_manifest import PREVIEW

__all__ = ["TrainConfig", "TrainError", "TrainResult", "check_resume", "check_store", "train"]

Say = Callable[[str], object]


class TrainError(RunError):
    """A store or run directory that cannot be trained or resumed; the message says what to change."""


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
        """latents ``[B, F, C, h, w]``, targets ``[B, F, N, C_t]``, labels ``[B]`` → scalar losses."""
        out = self.objective.training_loss(
            self.model, latents, {"y": labels, "align_depth": self.align_depth}
        )
        denoise = out["loss"].mean()
        align, cos = alignment_loss(self.projector(out["hidden"]), targets)
        terms = {"loss": denoise + self.align_weight * align, "denoise": denoise, "align": align, "cos": cos}
        if "vlb" in out:  # learn_sigma: denoise = ε MSE + VLB, logged apart (they move on different scales)
            terms |= {"mse": out["mse"].mean(), "vlb": out["vlb"].mean()}
        return terms


# ------------------------------------------------------------------------------------- checks


def model_kwargs_for(cfg: TrainConfig, store: FeatureStore) -> ModelKwargs:
    """The V-DiT's geometry follows the store: latent size and channels, clip length, classes."""
    num_classes = max(len(store.index.classes), int(store.index.labels.max()) + 1)
    return ModelKwargs(
        input_size=store.schema.latent_size,
        in_channels=store.schema.vae.latent_channels,
        num_frames=cfg.frames,
        num_classes=0 if cfg.unconditional else num_classes,
        class_dropout_prob=cfg.class_dropout,
        patch_size=PATCH_SIZE,
        learn_sigma=cfg.learn_sigma,
    )


def check_store(store: FeatureStore, cfg: TrainConfig, kwargs: ModelKwargs, prior: StoreRef | None) -> None:
    """Refuse a store that does not fit the model or the run (``prior``: the resumed run's store)."""
    wanted = {
        "token_grid": [s // kwargs.patch_size for s in kwargs.input_size],
        "vae.latent_channels": kwargs.in_channels,
        "flip": cfg.hflip,
    }
    if cfg.align_encoders:
        wanted["encoders"] = list(cfg.align_encoders)
    problems = [str(m) for m in compatible(store.schema, wanted)]
    if prior is not None and prior.fingerprint != store.schema.fingerprint:
        problems.append(
            f"fingerprint: store has {store.schema.fingerprint[:16]}, the run was trained on "
            f"{prior.fingerprint[:16]} ({prior.path})"
        )
    if problems:
        raise TrainError(f"store {store.path} does not fit this run:\n  " + "\n  ".join(problems))


def check_resume(cfg: TrainConfig, prior: RunRecord) -> None:
    """Refuse a resume that changes a setting not declared ``resumable`` on its TrainConfig field."""
    keep = resumable_fields(TrainConfig)
    before = prior.config
    diffs = [
        f"{flag_of(cfg, f.name)}: run has {getattr(before, f.name)!r}, now {getattr(cfg, f.name)!r}"
        for f in fields(cfg)
        if f.name not in keep and getattr(before, f.name) != getattr(cfg, f.name)
    ]
    if diffs:
        raise TrainError(
            f"--resume of {cfg.run} with a different configuration:\n  "
            + "\n  ".join(diffs)
            + "\nrepeat the original settings, or train into a new --out"
        )


def _previous_run(cfg: TrainConfig, say: Say) -> tuple[RunRecord, Path] | None:
    """With ``--resume`` and a checkpoint: the run's record and the checkpoint to continue from."""
    found = list_checkpoints(cfg.run)
    if found and not cfg.resume:
        raise TrainError(
            f"{cfg.run} already holds checkpoints up to step {max(found)}; pass --resume or use a new --out"
        )
    if not found:
        if cfg.resume:
            say(f"--resume: no checkpoint in {cfg.run} yet; starting at step 0")
        return None
    if not run_file(cfg.run).is_file():
        raise TrainError(
            f"{cfg.run} has checkpoints but no {run_file(cfg.run).name}; cannot resume without its settings"
        )
    prior = read_run_record(cfg.run)
    check_resume(cfg, prior)
    return prior, latest_intact(cfg.run, say)  # a damaged newest checkpoint: the one before, warned


def _run_record(
    cfg: TrainConfig,
    store: FeatureStore,
    plan: ClipPlan,
    kwargs: ModelKwargs,
    world: int,
    prior: RunRecord | None,
    step: int,
) -> RunRecord:
    s = store.schema
    return RunRecord(
        a4g_version=a4g.__version__,
        created=prior.created if prior else datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config=cfg,
        store=StoreRef(
            path=store.uri,  # an absolute path, or the s3:// / gs:// URI
            fingerprint=s.fingerprint,
            random_init=s.random_init,
            every=s.preprocess.every,
            frame_size=s.preprocess.size,
            classes=list(store.index.classes),
            dataset=DatasetRef(
                name=s.dataset.name, root=s.dataset.root, split=s.dataset.split, fold=s.dataset.fold
            ),
        ),
        model=ModelSpec(name=cfg.model, kwargs=kwargs),
        vae=s.vae,
        align=AlignSpec(
            encoders=list(cfg.align_encoders or s.encoder_names),
            depth=cfg.depth,
            weight=cfg.align_weight,
            target_channels=plan.target_channels,
            projector_dim=cfg.projector_dim,
        ),
        data=DataSpec(frames=cfg.frames, stride=cfg.stride, store_row_step=plan.step),
        ema=_ema_spec(cfg, prior),
        world_size=world,
        resumed=[] if prior is None else [*prior.resumed, Resumption(step=step, world_size=world)],
    )


def _ema_spec(cfg: TrainConfig, prior: RunRecord | None) -> EMASpec:
    """A new run warms its EMA up; a run resumed from a record older than the warm-up keeps a plain EMA."""
    if prior is not None:
        return prior.ema or EMASpec(decay=prior.config.ema, warmup=NO_WARMUP)
    return EMASpec(decay=cfg.ema, warmup=WARMUP)


# ------------------------------------------------------------------------------------- setup


@dataclass
class _Session:
    """What the step loop works on, built once by :func:`_prepare`."""

    accelerator: Accelerator
    trainee: nn.Module
    optimizer: torch.optim.Optimizer
    ema: EMA
    batches: Iterator[dict[str, Tensor]]
    step: int
    record: RunRecord


def _accelerator(cfg: TrainConfig) -> Accelerator:
    cuda = torch.cuda.is_available()
    return Accelerator(
        cpu=not cuda,  # Accelerate sets up gloo for torchrun's CPU processes only when told "cpu"
        mixed_precision="bf16" if cuda else "no",
        log_with=trackers(cfg.report_to) or None,
        project_config=ProjectConfiguration(project_dir=str(cfg.run), logging_dir=str(cfg.run / "logs")),
    )


def _prepare(cfg: TrainConfig, accelerator: Accelerator, say: Say) -> _Session:
    """Open and check the store and run, build the model, restore a checkpoint, write run.json."""
    store = FeatureStore.open(cfg.store)
    check_for_training(store)  # damaged shards (quick: index checksums, done markers) refused by name
    previous = _previous_run(cfg, say)
    prior, resume_from = previous or (None, None)
    if store.schema.random_init:
        say(RANDOM_INIT_WARNING.format(store=store.path))
    plan = plan_clips(
        store,
        frames=cfg.frames,
        stride=cfg.stride,
        align_encoders=list(cfg.align_encoders) if cfg.align_encoders else None,
        hflip=cfg.hflip,
        allow_incomplete=cfg.allow_incomplete,
    )
    kwargs = prior.model.kwargs if prior else model_kwargs_for(cfg, store)
    check_store(store, cfg, kwargs, prior.store if prior else None)
    say(f"data: {describe(plan)}")
    fresh = resume_from is None  # --init-from only on a fresh run: a resume takes the checkpoint's weights
    trainee, optimizer, ema, init = _build(cfg, accelerator, kwargs, plan.target_channels, fresh, say)
    step, batches = _data_stream(cfg, accelerator, plan, resume_from, ema, say)
    record = _run_record(cfg, store, plan, kwargs, accelerator.num_processes, prior, step)
    record = record.model_copy(update={"init": prior.init if prior else init})
    ema.warmup = record.ema.warmup
    if accelerator.is_main_process:
        write_run_record(cfg.run, record)
    return _Session(accelerator, trainee, optimizer, ema, batches, step, record)


def _build(
    cfg: TrainConfig,
    accelerator: Accelerator,
    kwargs: ModelKwargs,
    target_channels: int,
    fresh: bool,
    say: Say,
) -> tuple[nn.Module, torch.optim.Optimizer, EMA, InitRef | None]:
    """Model (``--init-from`` weights on a fresh run), projector, EMA and optimizer, prepared for the
    launch (DDP, device, mixed precision)."""
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = create_model(cfg.model, **kwargs.model_dump(), grad_checkpointing=cfg.grad_checkpointing)
    init = _init_weights(cfg, model, say) if fresh and cfg.init_from is not None else None
    projector = Projector(model.embed_dim, target_channels, cfg.projector_dim)
    ema = EMA(model, cfg.ema)
    if cfg.compile:
        model.compile()  # in place: state_dict keys (and so checkpoints) stay the same
    objective = create_objective(cfg.objective, learn_sigma=cfg.learn_sigma)
    trainee = Trainee(model, projector, objective, cfg.depth, cfg.align_weight)
    fused = accelerator.device.type == "cuda" or None
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=cfg.lr, weight_decay=0.0, fused=fused)
    trainee, optimizer = accelerator.prepare(trainee, optimizer)
    ema.model.to(accelerator.device)
    return trainee, optimizer, ema, init


INIT_REPORT_LINES = 12  # skipped keys listed at launch; the rest are counted


def _init_weights(cfg: TrainConfig, model: VDiT, say: Say) -> InitRef:
    """Load ``--init-from`` into the fresh V-DiT (before the EMA copies it) and print what happened."""
    report = load_init(model, cfg.init_from, cfg.init_layout)
    say(f"{report.summary()} ({cfg.init_from})")
    for key, reason in report.skipped[:INIT_REPORT_LINES]:
        say(f"  skipped {key}: {reason}")
    if len(report.skipped) > INIT_REPORT_LINES:
        say(f"  ... and {len(report.skipped) - INIT_REPORT_LINES} more skipped")
    return InitRef(
        path=str(Path(cfg.init_from).resolve()),
        layout=report.layout,
        loaded=len(report.loaded),
        skipped=len(report.skipped),
        new=len(report.new),
    )


def _data_stream(
    cfg: TrainConfig, accelerator: Accelerator, plan: ClipPlan, resume_from: Path | None, ema: EMA, say: Say
) -> tuple[int, Iterator[dict[str, Tensor]]]:
    """The batch stream from the run's position and, when resuming, every state restored; returns the step."""
    rank = accelerator.process_index
    set_seed(int(np.random.SeedSequence([cfg.seed, rank]).generate_state(1)[0]))  # noise differs per rank
    step = read_step(resume_from) if resume_from else 0
    loader = clip_loader(
        plan,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        rank=rank,
        num_workers=cfg.num_workers,
        first_batch=step * cfg.grad_accum,
        pin_memory=accelerator.device.type == "cuda",
    )
    batches = iter(loader)  # before load_state: creating it draws from the RNG that load_state restores
    if resume_from:
        step = load_checkpoint(accelerator, resume_from, ema, force=cfg.force, say=say)
        say(f"resumed {cfg.run} at step {step}")
    return step, batches


# ------------------------------------------------------------------------------------- loop


def train(cfg: TrainConfig, echo: Say = print) -> TrainResult:
    """Train (or resume) a run; every process of a multi-process launch calls this.

    Raises ConfigError for bad settings (before anything is touched), TrainError / StoreError /
    DataError / RunError for a store or run that cannot be trained.
    """
    cfg = cfg.validate()
    accelerator = _accelerator(cfg)
    say = echo if accelerator.is_main_process else (lambda *_: None)
    # One trainer per --out (a lock naming its holder), never a feature store (issue 10).
    with claim_run_dir(cfg.run, cfg.store, say=say, hold=accelerator.is_main_process):
        with explain_out_of_memory(cfg):
            session = _prepare(cfg, accelerator, say)
            if session.step >= cfg.steps:
                say(f"{cfg.run} is at step {session.step} >= --steps {cfg.steps}; nothing to do")
                return TrainResult(session.step, cfg.run)
            return _run_steps(cfg, session, say)


def _run_steps(cfg: TrainConfig, s: _Session, say: Say) -> TrainResult:
    accelerator, world = s.accelerator, s.accelerator.num_processes
    vae = None
    if cfg.sample_every and accelerator.is_main_process:
        vae = load_vae(cfg.vae, s.record.vae, accelerator.device)
    start_trackers(accelerator, cfg, s.record.created, say)
    model = accelerator.unwrap_model(s.trainee).model
    say(
        f"training {cfg.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params) from step "
        f"{s.step} to {cfg.steps} on {world} x {accelerator.device}, align λ={cfg.align_weight} after block {cfg.depth}"
    )
    meter = Meter(cfg.batch_size * cfg.frames * cfg.grad_accum * world)
    start_step, start_time = s.step, time.perf_counter()
    s.trainee.train()
    watch = LossWatch(cfg, accelerator.device)
    bar = Progress(cfg.progress and accelerator.is_main_process, s.step, cfg.steps, say)
    say = bar.say  # lines print above the bar
    try:
        while s.step < cfg.steps:
            micro_batches = [next(s.batches) for _ in range(cfg.grad_accum)]
            if s.step == start_step and world > 1:
                _check_ranks_differ(accelerator, micro_batches[0], say)
            values = _optimizer_step(cfg, accelerator, s.trainee, s.optimizer, micro_batches, s.step)
            watch.see(s.step + 1, values)  # a non-finite step stops the run before it is logged or saved
            meter.add(values)
            s.ema.update(accelerator.unwrap_model(s.trainee).model)
            s.step += 1
            bar.step(_after_step(cfg, s, meter, vae, say))
    finally:
        bar.close()
    accelerator.end_training()
    seconds = (time.perf_counter() - start_time) / (s.step - start_step)
    result = TrainResult(s.step, cfg.run, *meter.first_and_last(), seconds)
    _summarize(result, s.step - start_step, say)
    return result


def _after_step(
    cfg: TrainConfig, s: _Session, meter: Meter, vae: FrozenVAE | None, say: Say
) -> dict[str, float] | None:
    """Log, checkpoint and sample when their period (or the last step) comes; returns what was logged."""
    step, last = s.step, s.step == cfg.steps
    scalars = None
    if step % cfg.log_every == 0 or last:
        scalars = meter.flush(s.accelerator) | {"lr": s.optimizer.param_groups[0]["lr"]}
        s.accelerator.log({f"train/{k}": v for k, v in scalars.items()}, step=step)
        say(log_line(step, scalars))
    if step % cfg.checkpoint_every == 0 or last:
        if s.accelerator.num_processes > 1:
            _check_weights_in_sync(s.accelerator, s.trainee, say)
        say(f"saved {save_checkpoint(s.accelerator, cfg.run, step, s.ema)}")
        if s.accelerator.is_main_process and (gone := prune_checkpoints(cfg.run, cfg.keep_last)):
            say(f"removed {', '.join(p.name for p in gone)} (--keep-last {cfg.keep_last})")
    if vae is not None and (step % cfg.sample_every == 0 or last):
        objective = create_objective(cfg.objective, learn_sigma=cfg.learn_sigma)
        _write_samples(cfg, s.accelerator, s.ema.model, objective, vae, step, say)
    return scalars


def _summarize(result: TrainResult, steps: int, say: Say) -> None:
    if len(result.first_losses) == len(result.last_losses) == Meter.EDGE:
        a, b = np.mean(result.first_losses), np.mean(result.last_losses)
        trend = "falling" if b < a else "NOT falling"
        say(
            f"denoising loss: mean of the first {Meter.EDGE} steps {a:.4f}, "
            f"of the last {Meter.EDGE} steps {b:.4f} ({trend})"
        )
    say(f"{result.seconds_per_step:.3f} s/step over {steps} steps")


RANDOM_INIT_WARNING = (
    "=" * 88 + "\nWARNING: {store} was made with RANDOM-INIT encoder/VAE weights (weights_sha256 = "
    "'random'):\nthe alignment targets are meaningless; fine for tests and demos, never for research.\n"
    + "="
    * 88
)


def _optimizer_step(
    cfg: TrainConfig, accelerator: Accelerator, trainee: nn.Module, optimizer, micro_batches: list, step: int
) -> dict[str, Tensor]:
    """Accumulate gradients over the micro-batches (DDP syncs only on the last), clip (once ``step``
    optimizer steps are done, see ``--clip-after``), step."""
    sums: dict[str, Tensor] = {}
    for i, batch in enumerate(micro_batches):
        batch = batch_to_device(batch, accelerator.device)  # int8 targets are dequantized there
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(trainee):
            labels = None if cfg.unconditional else batch["labels"]
            losses = trainee(batch["latents"], batch["targets"], labels)
            accelerator.backward(losses["loss"] / len(micro_batches))
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach().float() / len(micro_batches)
    max_norm = cfg.max_grad_norm if cfg.clips_gradients_at(step) else math.inf  # inf: measure the norm only
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


def _write_samples(
    cfg: TrainConfig,
    accelerator: Accelerator,
    ema_model: VDiT,
    objective: Objective,
    vae: FrozenVAE,
    step: int,
    say: Say,
) -> None:
    """Periodic samples from the EMA weights, with a fixed seed so runs compare step to step."""
    req = SampleRequest(num=cfg.sample_num, frames=cfg.frames, seed=cfg.seed, batch_size=cfg.sample_num)
    with autocast(ema_model.pos_embed.device):
        videos, labels = generate(ema_model, objective, vae, req)
    out = cfg.run / "samples" / f"step_{step:07d}"
    write_videos(out, videos, labels, fps=SAMPLE_FPS)
    log_sample_videos(accelerator, grid(videos), out / PREVIEW / "grid.mp4", step)
    say(f"wrote {len(videos)} sample videos to {out}")
