"""`a4g extract`: decode videos once, run the VAE and the encoders, write a feature store."""

from __future__ import annotations

from typing import Annotated

import typer

from a4g.cli.options import (
    DATA,
    HARDWARE,
    MODEL,
    OUTPUT,
    CompileOpt,
    DataRootOpt,
    DatasetOpt,
    DeviceOpt,
    FoldOpt,
    NumWorkersOpt,
    ProgressOpt,
    RandomInitOpt,
    SamOutputOpt,
    SamResOpt,
    SizeOpt,
    SplitOpt,
    VaeOpt,
    WeightsDirOpt,
    WeightsOpt,
    build,
    check_store_location,
    check_unique_list,
    default,
)
from a4g.extract.config import ExtractConfig, TargetDtype

app = typer.Typer(add_completion=False)

StoreOutOpt = Annotated[
    str,
    typer.Option(
        "--out",
        callback=check_store_location,
        help="Store to create, or to resume if it holds the same configuration: a local folder, or "
        "file://, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX (credentials and endpoint from the usual AWS_* / "
        "Google variables, e.g. AWS_ENDPOINT_URL for an S3-compatible server).",
        rich_help_panel=OUTPUT,
    ),
]
EncodersOpt = Annotated[
    str,
    typer.Option(
        "--encoders",
        callback=check_unique_list,
        help="Comma-separated encoders in fusion order: dinov2_vit{s,b,l,g}14[_reg], sam2.1_hiera_{t,s,b+,l}; "
        "dinov2_tiny and sam2.1_tiny are random-init test encoders.",
        rich_help_panel=MODEL,
    ),
]
EveryOpt = Annotated[
    int,
    typer.Option(
        "--every",
        min=1,
        help="Temporal stride: store one frame in EVERY. Training strides must be multiples.",
        rich_help_panel=DATA,
    ),
]
FlipTwinsOpt = Annotated[
    bool,
    typer.Option(
        "--hflip/--no-hflip",
        help="Also store *_flip twins computed on mirrored frames (for exact flip augmentation).",
        rich_help_panel=DATA,
    ),
]
LimitVideosOpt = Annotated[
    int | None,
    typer.Option(
        "--limit-videos",
        min=1,
        help="Use only the first N videos (sorted by id); for trials.",
        rich_help_panel=DATA,
    ),
]
ShardFramesOpt = Annotated[
    int,
    typer.Option(
        "--shard-frames",
        min=1,
        help="Frames per shard: the unit of work, writing and resuming.",
        rich_help_panel=OUTPUT,
    ),
]
TargetDtypeOpt = Annotated[
    TargetDtype,
    typer.Option(
        "--target-dtype",
        help="How encoder targets are stored: float16, or int8 with one float16 scale per token and encoder "
        "(0.5x the target bytes, cosine to float16 >= 0.9999 measured; training dequantizes on its device).",
        rich_help_panel=OUTPUT,
    ),
]
BatchOpt = Annotated[
    int, typer.Option("--batch", min=1, help="Frames per model batch.", rich_help_panel=HARDWARE)
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Scan videos and print the plan and storage estimate; write nothing.",
        rich_help_panel=OUTPUT,
    ),
]


@app.command("extract")
def extract(
    *,  # keyword-only, so required flags can sit in their --help panel rather than first
    dataset: DatasetOpt,
    data_root: DataRootOpt = default(ExtractConfig, "data_root"),
    split: SplitOpt = default(ExtractConfig, "split"),
    fold: FoldOpt = default(ExtractConfig, "fold"),
    size: SizeOpt = default(ExtractConfig, "size"),
    every: EveryOpt = default(ExtractConfig, "every"),
    hflip: FlipTwinsOpt = default(ExtractConfig, "hflip"),
    limit_videos: LimitVideosOpt = default(ExtractConfig, "limit_videos"),
    encoders: EncodersOpt = default(ExtractConfig, "encoders"),
    vae: VaeOpt,
    random_init: RandomInitOpt = default(ExtractConfig, "random_init"),
    weights: WeightsOpt = default(ExtractConfig, "weights"),
    weights_dir: WeightsDirOpt = default(ExtractConfig, "weights_dir"),
    sam_res: SamResOpt = default(ExtractConfig, "sam_res"),
    sam_output: SamOutputOpt = default(ExtractConfig, "sam_output"),
    out: StoreOutOpt,
    shard_frames: ShardFramesOpt = default(ExtractConfig, "shard_frames"),
    target_dtype: TargetDtypeOpt = default(ExtractConfig, "target_dtype"),
    dry_run: DryRunOpt = default(ExtractConfig, "dry_run"),
    progress: ProgressOpt = default(ExtractConfig, "progress"),
    device: DeviceOpt = default(ExtractConfig, "device"),
    batch: BatchOpt = default(ExtractConfig, "batch"),
    num_workers: NumWorkersOpt = default(ExtractConfig, "num_workers"),
    compile: CompileOpt = default(ExtractConfig, "compile"),
) -> None:
    """Decode every frame, run the VAE and encoders once, and write latents + fused targets to a store.

    Resumable (the same command skips finished shards) and splittable across processes: under
    torchrun / accelerate launch (RANK, WORLD_SIZE) or a Slurm array, each process takes every
    WORLD-th shard.
    """
    from a4g.extract.run import run_extraction, summarize

    typer.echo(summarize(run_extraction(build(ExtractConfig, locals()), echo=typer.echo)))
