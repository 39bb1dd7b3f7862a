"""`a4g train` and `a4g sample`: parse flags into ``TrainConfig`` / ``SampleConfig`` and run them.

Defaults and value checks live on the config dataclasses (``a4g/train/config.py``,
``a4g/train/sample.py``: bounds named by flag, checked by ``validate()`` before anything starts);
this module only declares the flags and their help. Multi-process launchers run the same CLI as a
module: ``torchrun --nproc_per_node N -m a4g.cli train ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from a4g.cli.options import (
    ALIGN,
    CKPT,
    DATA,
    HARDWARE,
    MODEL,
    OPTIM,
    OUTPUT,
    SAMPLING,
    CompileOpt,
    DeviceOpt,
    NumWorkersOpt,
    SeedOpt,
    VaeOpt,
    build,
    check_out_dir,
    check_unique_list,
    default,
)
from a4g.errors import ConfigError
from a4g.train.config import TrainConfig
from a4g.train.sample import SampleConfig

app = typer.Typer(add_completion=False)


def _opt(flag: str, help: str, panel: str, **kw) -> typer.models.OptionInfo:
    return typer.Option(flag, help=help, rich_help_panel=panel, **kw)


# ------------------------------------------------------------------------------------------ train
# No ranges here: TrainConfig's fields carry their bounds and validate() names the flag.
FeaturesOpt = Annotated[
    Path, _opt("--features", "Feature store made by `a4g extract` (latents + fused targets).", DATA)
]
RunOutOpt = Annotated[
    Path,
    _opt("--out", "Run directory: run.json, checkpoints/, logs/, samples/.", CKPT, callback=check_out_dir),
]
ModelOpt = Annotated[
    str,
    _opt(
        "--model",
        "V-DiT size: VDiT-tiny, VDiT-S, VDiT-B, VDiT-L, VDiT-XL (the prefix may be dropped: XL).",
        MODEL,
    ),
]
ObjectiveOpt = Annotated[
    str, _opt("--objective", "ddpm (ε-prediction, Latte) or flow (v-prediction, SiT/REPA).", MODEL)
]
LearnSigmaOpt = Annotated[
    bool,
    _opt(
        "--learn-sigma", "Also learn the reverse-process variance (DiT/Latte; --objective ddpm only).", MODEL
    ),
]
ClipFramesOpt = Annotated[int, _opt("--frames", "Frames per training clip (>= 1).", DATA)]
StrideOpt = Annotated[
    int, _opt("--stride", "Source frames between clip frames; a multiple of the store's `every`.", DATA)
]
TrainHflipOpt = Annotated[
    bool, _opt("--hflip", "Flip half the clips, reading the store's exact *_flip twins.", DATA)
]
IncompleteOpt = Annotated[
    bool, _opt("--allow-incomplete", "Train on the done shards of a store still being extracted.", DATA)
]
UncondOpt = Annotated[bool, _opt("--unconditional", "Train without class labels.", MODEL)]
ClassDropoutOpt = Annotated[
    float,
    _opt(
        "--class-dropout",
        "Probability in [0, 1) of replacing the label by the null class (classifier-free guidance).",
        MODEL,
    ),
]
BatchSizeOpt = Annotated[int, _opt("--batch-size", "Clips per process per micro-batch.", OPTIM)]
GradAccumOpt = Annotated[int, _opt("--grad-accum", "Micro-batches per optimizer step.", OPTIM)]
StepsOpt = Annotated[int, _opt("--steps", "Total optimizer steps (a resumed run continues to it).", OPTIM)]
LrOpt = Annotated[
    float, _opt("--lr", "AdamW learning rate, finite and > 0 (constant; weight decay 0).", OPTIM)
]
GradNormOpt = Annotated[
    float, _opt("--max-grad-norm", "Clip the global gradient norm to this (0: no clipping).", OPTIM)
]
EmaDecayOpt = Annotated[float, _opt("--ema", "EMA decay in [0, 1) of the weights used for sampling.", OPTIM)]
AlignWeightOpt = Annotated[
    float,
    _opt(
        "--align-weight",
        "λ >= 0 of the alignment loss; 0 trains the plain baseline through the same code.",
        ALIGN,
    ),
]
AlignDepthOpt = Annotated[
    int | None,
    _opt(
        "--align-depth",
        "Align the tokens after this block (1-based, spatial and temporal counted); default per model.",
        ALIGN,
    ),
]
AlignEncodersOpt = Annotated[
    str | None,
    _opt(
        "--align-encoders",
        "Comma-separated subset of the store's encoders to align to (default: all, fused).",
        ALIGN,
        callback=check_unique_list,
    ),
]
ProjectorDimOpt = Annotated[
    int, _opt("--projector-dim", "Hidden width of the 3-layer alignment projector.", ALIGN)
]
ResumeOpt = Annotated[
    bool, _opt("--resume", "Continue from the run's latest checkpoint (with the same settings).", CKPT)
]
CheckpointEveryOpt = Annotated[
    int, _opt("--checkpoint-every", "Save a checkpoint every N steps (and at the end).", CKPT)
]
LogEveryOpt = Annotated[
    int, _opt("--log-every", "Log scalars to tensorboard and the console every N steps.", CKPT)
]
SampleEveryOpt = Annotated[
    int, _opt("--sample-every", "Write sample videos every N steps (0: never); needs --vae.", CKPT)
]
SampleNumOpt = Annotated[int, _opt("--sample-num", "Videos per periodic sample.", CKPT)]
GradCkptOpt = Annotated[
    bool, _opt("--grad-checkpointing", "Recompute block activations in backward to save memory.", HARDWARE)
]


@app.command("train")
def train(
    *,  # keyword-only, so required flags can sit in their --help panel rather than first
    store: FeaturesOpt,
    frames: ClipFramesOpt = default(TrainConfig, "frames"),
    stride: StrideOpt = default(TrainConfig, "stride"),
    hflip: TrainHflipOpt = default(TrainConfig, "hflip"),
    allow_incomplete: IncompleteOpt = default(TrainConfig, "allow_incomplete"),
    model: ModelOpt = default(TrainConfig, "model"),
    objective: ObjectiveOpt = default(TrainConfig, "objective"),
    learn_sigma: LearnSigmaOpt = default(TrainConfig, "learn_sigma"),
    unconditional: UncondOpt = default(TrainConfig, "unconditional"),
    class_dropout: ClassDropoutOpt = default(TrainConfig, "class_dropout"),
    batch_size: BatchSizeOpt = default(TrainConfig, "batch_size"),
    grad_accum: GradAccumOpt = default(TrainConfig, "grad_accum"),
    steps: StepsOpt = default(TrainConfig, "steps"),
    lr: LrOpt = default(TrainConfig, "lr"),
    max_grad_norm: GradNormOpt = default(TrainConfig, "max_grad_norm"),
    ema: EmaDecayOpt = default(TrainConfig, "ema"),
    align_weight: AlignWeightOpt = default(TrainConfig, "align_weight"),
    align_depth: AlignDepthOpt = default(TrainConfig, "align_depth"),
    align_encoders: AlignEncodersOpt = default(TrainConfig, "align_encoders"),
    projector_dim: ProjectorDimOpt = default(TrainConfig, "projector_dim"),
    run: RunOutOpt,
    resume: ResumeOpt = default(TrainConfig, "resume"),
    checkpoint_every: CheckpointEveryOpt = default(TrainConfig, "checkpoint_every"),
    log_every: LogEveryOpt = default(TrainConfig, "log_every"),
    sample_every: SampleEveryOpt = default(TrainConfig, "sample_every"),
    sample_num: SampleNumOpt = default(TrainConfig, "sample_num"),
    vae: VaeOpt = default(TrainConfig, "vae"),
    seed: SeedOpt = default(TrainConfig, "seed"),
    num_workers: NumWorkersOpt = default(TrainConfig, "num_workers"),
    grad_checkpointing: GradCkptOpt = default(TrainConfig, "grad_checkpointing"),
    compile: CompileOpt = default(TrainConfig, "compile"),
) -> None:
    """Train a V-DiT on a feature store with denoising + alignment to the cached encoder targets.

    Works under `torchrun` / `accelerate launch` (one process per GPU). The encoders never load.
    """
    from a4g.train.loop import train as run_training

    cfg = build(TrainConfig, locals()).validate()  # every value checked before torch starts
    run_training(cfg, echo=typer.echo)


# ----------------------------------------------------------------------------------------- sample

RANDOM_CLASS = "random"  # --class: SampleConfig.class_id None, a random class per video


def check_class(value: str) -> str:
    if value != RANDOM_CLASS and not value.lstrip("-").isdigit():
        raise ConfigError(f"--class must be a class id or '{RANDOM_CLASS}', got {value!r}")
    return value


RunOpt = Annotated[
    Path, typer.Option("--run", "--run-dir", help="Run directory made by `a4g train`.", rich_help_panel=DATA)
]
SampleOutOpt = Annotated[
    Path,
    _opt("--out", "Folder for the mp4s (one per video, plus grid.mp4).", OUTPUT, callback=check_out_dir),
]
CheckpointOpt = Annotated[str, _opt("--checkpoint", "'latest' or a step number.", MODEL)]
UseEmaOpt = Annotated[
    bool, _opt("--ema/--no-ema", "Sample with the EMA weights (default) or the live ones.", MODEL)
]
NumVideosOpt = Annotated[int, _opt("--num", "Number of videos.", SAMPLING)]
ClassOpt = Annotated[
    str,
    _opt(
        "--class",
        "Class id for every video, or 'random' (ignored by unconditional runs).",
        SAMPLING,
        callback=check_class,
    ),
]
GuidanceOpt = Annotated[
    float, _opt("--cfg", "Classifier-free guidance scale >= 0 (1: none; unconditional runs use 1).", SAMPLING)
]
SamplerOpt = Annotated[
    str | None,
    _opt("--sampler", "ddpm or ddim (ddpm runs), euler or heun (flow runs); default ddpm / euler.", SAMPLING),
]
SampleStepsOpt = Annotated[int, _opt("--steps", "Sampling steps.", SAMPLING)]
SampleFramesOpt = Annotated[
    int | None, _opt("--frames", "Frames per video (default: the training clip length).", SAMPLING)
]
SampleBatchOpt = Annotated[int, _opt("--batch-size", "Videos sampled at once.", HARDWARE)]
FpsOpt = Annotated[int, _opt("--fps", "Frame rate written into the mp4s.", OUTPUT)]


@app.command("sample")
def sample(
    *,
    run: RunOpt,
    vae: VaeOpt,
    checkpoint: CheckpointOpt = default(SampleConfig, "checkpoint"),
    ema: UseEmaOpt = default(SampleConfig, "ema"),
    num: NumVideosOpt = default(SampleConfig, "num"),
    class_id: ClassOpt = RANDOM_CLASS,
    guidance: GuidanceOpt = default(SampleConfig, "guidance"),
    sampler: SamplerOpt = default(SampleConfig, "sampler"),
    steps: SampleStepsOpt = default(SampleConfig, "steps"),
    frames: SampleFramesOpt = default(SampleConfig, "frames"),
    seed: SeedOpt = default(SampleConfig, "seed"),
    out: SampleOutOpt,
    fps: FpsOpt = default(SampleConfig, "fps"),
    batch_size: SampleBatchOpt = default(SampleConfig, "batch_size"),
    device: DeviceOpt = default(SampleConfig, "device"),
) -> None:
    """Sample videos from a trained run and write them as mp4s (libx264, yuv420p) plus a grid."""
    from a4g.train.sample import sample_run

    cfg = build(SampleConfig, locals()).validate()
    paths, step = sample_run(cfg)
    weights = "EMA" if cfg.ema else "live"
    typer.echo(f"wrote {len(paths) - 1} videos and grid.mp4 to {cfg.out} (step {step}, {weights} weights)")
