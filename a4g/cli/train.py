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
    ProgressOpt,
    SeedOpt,
    VaeOpt,
    build,
    check_out_dir,
    check_store_location,
    check_unique_list,
    default,
    given,
)
from a4g.errors import ConfigError
from a4g.train.config import TrainConfig, resolve_train_config
from a4g.train.sample_config import SampleConfig

app = typer.Typer(add_completion=False)


def _opt(flag: str, help: str, panel: str, **kw) -> typer.models.OptionInfo:
    return typer.Option(flag, help=help, rich_help_panel=panel, **kw)


# ------------------------------------------------------------------------------------------ train
# No ranges here: TrainConfig's fields carry their bounds and validate() names the flag.
FeaturesOpt = Annotated[
    str | None,
    _opt(
        "--features",
        "Feature store made by `a4g extract` (latents + fused targets): a folder, or a file://, s3:// or "
        "gs:// URI; required unless --config or the record of a --resume'd run gives it.",
        DATA,
        callback=check_store_location,
    ),
]
ConfigFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML file of train options, keys = option names with underscores (batch_size: 4, features: "
        "/stores/x); flags given on the command line override it. The effective config is saved in RUN/run.json.",
        exists=True,
        dir_okay=False,
    ),
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
    bool,
    _opt(
        "--hflip",
        "Flip half the clips, reading the store's exact *_flip twins (Latte flips by default: pass it to match).",
        DATA,
    ),
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
    float,
    _opt(
        "--max-grad-norm",
        "Clip the global gradient norm to this (0: no clipping); from --clip-after on. Latte: 0.1.",
        OPTIM,
    ),
]
ClipAfterOpt = Annotated[
    int,
    _opt(
        "--clip-after",
        "Optimizer steps before clipping starts (the norm is measured and logged before); Latte's "
        "start_clip_iter, e.g. 100000 for UCF-101.",
        OPTIM,
    ),
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
    bool,
    _opt(
        "--resume",
        "Continue from the run's latest checkpoint with the settings in RUN/run.json: only --out is needed "
        "(plus what may change, e.g. --steps); changing another setting is refused.",
        CKPT,
    ),
]
KeepLastOpt = Annotated[
    int,
    _opt(
        "--keep-last",
        "Keep only the N newest intact checkpoints (0: all); never deletes the last complete one.",
        CKPT,
    ),
]
ReportToOpt = Annotated[
    str,
    _opt(
        "--report-to",
        "Trackers for scalars and sample videos: tensorboard, wandb (offline unless WANDB_MODE or "
        "WANDB_API_KEY is set), all, or none.",
        CKPT,
    ),
]
ForceOpt = Annotated[
    bool,
    _opt(
        "--force",
        "With --resume: continue even when the checkpoint's RNG state file cannot be read (the run then "
        "draws other noise than an uninterrupted one).",
        CKPT,
    ),
]
CheckpointEveryOpt = Annotated[
    int, _opt("--checkpoint-every", "Save a checkpoint every N steps (and at the end).", CKPT)
]
LogEveryOpt = Annotated[
    int, _opt("--log-every", "Log scalars to the trackers and one console line every N steps.", CKPT)
]
SampleEveryOpt = Annotated[
    int, _opt("--sample-every", "Write sample videos every N steps (0: never); needs --vae.", CKPT)
]
SampleNumOpt = Annotated[int, _opt("--sample-num", "Videos per periodic sample.", CKPT)]
GradCkptOpt = Annotated[
    bool, _opt("--grad-checkpointing", "Recompute block activations in backward to save memory.", HARDWARE)
]
InitFromOpt = Annotated[
    Path | None,
    _opt(
        "--init-from",
        "Start a fresh run from DiT (ImageNet), Latte or a4g weights (.pt/.safetensors file or a4g "
        "checkpoint); prints what was loaded, skipped and newly initialized. Ignored by --resume.",
        MODEL,
    ),
]
InitLayoutOpt = Annotated[
    str,
    _opt("--init-layout", "Key layout of --init-from: auto (told from the names), dit, latte or a4g.", MODEL),
]


@app.command("train")
def train(
    *,  # keyword-only, so required flags can sit in their --help panel rather than first
    ctx: typer.Context,
    config: ConfigFileOpt = None,
    store: FeaturesOpt = None,
    frames: ClipFramesOpt = default(TrainConfig, "frames"),
    stride: StrideOpt = default(TrainConfig, "stride"),
    hflip: TrainHflipOpt = default(TrainConfig, "hflip"),
    allow_incomplete: IncompleteOpt = default(TrainConfig, "allow_incomplete"),
    model: ModelOpt = default(TrainConfig, "model"),
    objective: ObjectiveOpt = default(TrainConfig, "objective"),
    learn_sigma: LearnSigmaOpt = default(TrainConfig, "learn_sigma"),
    init_from: InitFromOpt = default(TrainConfig, "init_from"),
    init_layout: InitLayoutOpt = default(TrainConfig, "init_layout"),
    unconditional: UncondOpt = default(TrainConfig, "unconditional"),
    class_dropout: ClassDropoutOpt = default(TrainConfig, "class_dropout"),
    batch_size: BatchSizeOpt = default(TrainConfig, "batch_size"),
    grad_accum: GradAccumOpt = default(TrainConfig, "grad_accum"),
    steps: StepsOpt = default(TrainConfig, "steps"),
    lr: LrOpt = default(TrainConfig, "lr"),
    max_grad_norm: GradNormOpt = default(TrainConfig, "max_grad_norm"),
    clip_after: ClipAfterOpt = default(TrainConfig, "clip_after"),
    ema: EmaDecayOpt = default(TrainConfig, "ema"),
    align_weight: AlignWeightOpt = default(TrainConfig, "align_weight"),
    align_depth: AlignDepthOpt = default(TrainConfig, "align_depth"),
    align_encoders: AlignEncodersOpt = default(TrainConfig, "align_encoders"),
    projector_dim: ProjectorDimOpt = default(TrainConfig, "projector_dim"),
    run: RunOutOpt,
    resume: ResumeOpt = default(TrainConfig, "resume"),
    force: ForceOpt = default(TrainConfig, "force"),
    checkpoint_every: CheckpointEveryOpt = default(TrainConfig, "checkpoint_every"),
    keep_last: KeepLastOpt = default(TrainConfig, "keep_last"),
    log_every: LogEveryOpt = default(TrainConfig, "log_every"),
    report_to: ReportToOpt = default(TrainConfig, "report_to"),
    progress: ProgressOpt = default(TrainConfig, "progress"),
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

    # Defaults < --config file < flags typed here; a --resume starts from the run's record instead of
    # the defaults. Every value is checked before torch starts.
    cfg = resolve_train_config(given(TrainConfig, locals(), ctx), config_file=config)
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
    _opt(
        "--out",
        "Folder for the mp4s (one per video), samples.json (what was drawn) and preview/grid.mp4. Running "
        "the same command again resumes; other settings into a used folder are refused.",
        OUTPUT,
        callback=check_out_dir,
    ),
]
CheckpointOpt = Annotated[str, _opt("--checkpoint", "'latest' or a step number.", MODEL)]
UseEmaOpt = Annotated[
    bool, _opt("--ema/--no-ema", "Sample with the EMA weights (default) or the live ones.", MODEL)
]
# --run-dir / --num-videos: torchrun's and accelerate's argparse (Python < 3.12) take `--run` and `--num`
# after the module for abbreviations of their own --run-path / --numa-binding / --num_processes.
NumVideosOpt = Annotated[
    int,
    typer.Option(
        "--num",
        "--num-videos",
        help="Number of videos (video i depends only on --seed and i: more extends a set).",
        rich_help_panel=SAMPLING,
    ),
]
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
SampleBatchOpt = Annotated[
    int, _opt("--batch-size", "Videos sampled at once per process (does not change the videos).", HARDWARE)
]
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
    progress: ProgressOpt = default(SampleConfig, "progress"),
) -> None:
    """Sample videos from a trained run and write them as mp4s (libx264, yuv420p) plus a grid.

    Writes OUT/samples.json (run, checkpoint step, weights, seed, sampler, steps, guidance, size, files),
    which `a4g eval --fake OUT` scores exactly. Under `torchrun --nproc_per_node N -m a4g.cli sample
    --run-dir RUN --num-videos K ...` the processes share the videos; each video is written when done, so
    the same command resumes.
    """
    from a4g.train.sample import sample_run

    cfg = build(SampleConfig, locals()).validate()
    typer.echo(format_sample(sample_run(cfg, echo=typer.echo)))


def format_sample(r) -> str:
    """One line: what this process drew and whether the set is complete."""
    who = f"rank {r.rank}/{r.world}: " if r.world > 1 else ""
    weights = "EMA" if r.weights == "ema" else "live"
    done = (
        f"the set of {r.num} videos is complete ({r.out}/samples.json, preview {r.out}/preview/grid.mp4)"
        if r.complete
        else "other processes are still sampling; the last to finish writes samples.json"
    )
    return f"{who}sampled {r.sampled} videos ({r.reused} already there), step {r.step}, {weights} weights; {done}"
