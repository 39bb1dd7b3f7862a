"""Typer command functions for ``a4g train`` and ``a4g sample`` (registered on the app in ``a4g/cli.py``).

Multi-process launchers run the same CLI as a module: ``torchrun --nproc_per_node N -m a4g.cli train ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from a4g.console import fail

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at run time


def train_command(
    store: Path = typer.Option(
        ..., "--features", help="Feature store made by `a4g extract` (latents + fused targets)."
    ),
    run: Path = typer.Option(..., "--out", help="Run directory: run.json, checkpoints/, logs/, samples/."),
    model: str = typer.Option(
        "VDiT-XL",
        help="V-DiT size: VDiT-tiny, VDiT-S, VDiT-B, VDiT-L, VDiT-XL (the prefix may be dropped: XL).",
    ),
    objective: str = typer.Option(
        "ddpm", help="ddpm (ε-prediction, Latte) or flow (v-prediction, SiT/REPA)."
    ),
    frames: int = typer.Option(16, min=1, help="Frames per training clip."),
    stride: int = typer.Option(
        3, min=1, help="Source frames between clip frames; a multiple of the store's `every`."
    ),
    batch_size: int = typer.Option(5, min=1, help="Clips per process per micro-batch."),
    grad_accum: int = typer.Option(1, min=1, help="Micro-batches per optimizer step."),
    steps: int = typer.Option(400_000, min=1, help="Total optimizer steps (a resumed run continues to it)."),
    lr: float = typer.Option(1e-4, help="AdamW learning rate (constant; weight decay 0)."),
    max_grad_norm: float = typer.Option(1.0, help="Clip the global gradient norm to this (0: no clipping)."),
    ema: float = typer.Option(0.9999, help="EMA decay of the weights used for sampling."),
    align_weight: float = typer.Option(
        0.5, help="λ of the alignment loss; 0 trains the plain baseline through the same code."
    ),
    align_depth: int | None = typer.Option(
        None,
        help="Align the tokens after this block (1-based, spatial and temporal counted); default per model.",
    ),
    align_encoders: str | None = typer.Option(
        None, help="Comma-separated subset of the store's encoders to align to (default: all, fused)."
    ),
    projector_dim: int = typer.Option(2048, min=1, help="Hidden width of the 3-layer alignment projector."),
    class_dropout: float = typer.Option(
        0.1, help="Probability of replacing the label by the null class (classifier-free guidance)."
    ),
    unconditional: bool = typer.Option(False, "--unconditional", help="Train without class labels."),
    hflip: bool = typer.Option(
        False, "--hflip", help="Flip half the clips, reading the store's exact *_flip twins."
    ),
    allow_incomplete: bool = typer.Option(
        False, "--allow-incomplete", help="Train on the done shards of a store still being extracted."
    ),
    num_workers: int = typer.Option(4, min=0, help="Loader worker processes per training process."),
    seed: int = typer.Option(0, help="Seed of weights, noise and clip sampling."),
    checkpoint_every: int = typer.Option(
        5000, min=1, help="Save a checkpoint every N steps (and at the end)."
    ),
    log_every: int = typer.Option(
        50, min=1, help="Log scalars to tensorboard and the console every N steps."
    ),
    sample_every: int = typer.Option(
        0, min=0, help="Write sample videos every N steps (0: never); needs --vae."
    ),
    sample_num: int = typer.Option(4, min=1, help="Videos per periodic sample."),
    vae: str | None = typer.Option(
        None, help="VAE for periodic samples: 'tiny' or a local diffusers directory (must match the store)."
    ),
    grad_checkpointing: bool = typer.Option(
        False, "--grad-checkpointing", help="Recompute block activations in backward to save memory."
    ),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the V-DiT (GPU throughput)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the run's latest checkpoint (with the same settings)."
    ),
) -> None:
    """Train a V-DiT on a feature store with denoising + alignment to the cached encoder targets.

    Works under `torchrun` / `accelerate launch` (one process per GPU). The encoders never load.
    """
    from a4g.store import StoreError
    from a4g.train.checkpoint import CheckpointError
    from a4g.train.data import DataError
    from a4g.train.loop import TrainConfig, TrainError, train
    from a4g.train.sample import SampleError

    cfg = TrainConfig(
        store=store,
        run=run,
        model=model,
        objective=objective,
        frames=frames,
        stride=stride,
        batch_size=batch_size,
        grad_accum=grad_accum,
        steps=steps,
        lr=lr,
        max_grad_norm=max_grad_norm,
        ema=ema,
        align_weight=align_weight,
        align_depth=align_depth,
        align_encoders=[e.strip() for e in align_encoders.split(",") if e.strip()]
        if align_encoders
        else None,
        projector_dim=projector_dim,
        class_dropout=class_dropout,
        unconditional=unconditional,
        hflip=hflip,
        allow_incomplete=allow_incomplete,
        num_workers=num_workers,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        sample_every=sample_every,
        sample_num=sample_num,
        vae=vae,
        grad_checkpointing=grad_checkpointing,
        compile=compile,
        resume=resume,
    )
    try:
        train(cfg, echo=typer.echo)
    except (StoreError, DataError, TrainError, SampleError, CheckpointError, FileNotFoundError) as err:
        fail(str(err))


def sample_command(
    run: Path = typer.Option(..., "--run", "--run-dir", help="Run directory made by `a4g train`."),
    out: Path = typer.Option(..., help="Folder for the mp4s (one per video, plus grid.mp4)."),
    vae: str = typer.Option(..., help="The store's VAE: 'tiny' or a local diffusers directory."),
    checkpoint: str = typer.Option("latest", help="'latest' or a step number."),
    ema: bool = typer.Option(
        True, "--ema/--no-ema", help="Sample with the EMA weights (default) or the live ones."
    ),
    num: int = typer.Option(16, min=1, help="Number of videos."),
    class_: str = typer.Option(
        "random", "--class", help="Class id for every video, or 'random' (ignored by unconditional runs)."
    ),
    cfg: float = typer.Option(
        4.0, help="Classifier-free guidance scale (1: none; unconditional runs use 1)."
    ),
    sampler: str | None = typer.Option(
        None, help="ddpm or ddim (ddpm runs), euler or heun (flow runs); default ddpm / euler."
    ),
    steps: int = typer.Option(50, min=1, help="Sampling steps."),
    frames: int | None = typer.Option(
        None, min=1, help="Frames per video (default: the training clip length)."
    ),
    seed: int = typer.Option(0, help="Seed; the same seed and batch size give the same videos."),
    batch_size: int = typer.Option(8, min=1, help="Videos sampled at once."),
    fps: int = typer.Option(8, min=1, help="Frame rate written into the mp4s."),
    device: str = typer.Option("auto", help="cuda, cuda:N, cpu, or auto."),
) -> None:
    """Sample videos from a trained run and write them as mp4s (libx264, yuv420p) plus a grid."""
    from a4g.encoders import MissingWeightsError
    from a4g.train.checkpoint import CheckpointError
    from a4g.train.sample import SampleError, SampleRequest, read_run, sample_run

    if class_ == "random":
        class_id = None
    elif class_.lstrip("-").isdigit():
        class_id = int(class_)
    else:
        fail(f"--class must be a class id or 'random', got {class_!r}")
    try:
        info = read_run(run)
        req = SampleRequest(
            num=num,
            frames=frames or int(info["config"]["frames"]),
            class_id=class_id,
            cfg=cfg,
            sampler=sampler,
            steps=steps,
            seed=seed,
            batch_size=batch_size,
        )
        paths, step = sample_run(
            run, out, vae, req, checkpoint=checkpoint, use_ema=ema, fps=fps, device=device
        )
    except (SampleError, CheckpointError, MissingWeightsError, ValueError) as err:
        fail(str(err))
    typer.echo(
        f"wrote {len(paths) - 1} videos and grid.mp4 to {out} (step {step}, {'EMA' if ema else 'live'} weights)"
    )
