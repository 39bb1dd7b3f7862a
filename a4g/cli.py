"""The `a4g` command line: extract → train → sample / eval, plus store inspection and IICR."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from a4g.console import fail, parse_weights
from a4g.metrics.command import eval_app, iicr_command
from a4g.store import FeatureStore, StoreError, human_bytes
from a4g.train.command import sample_command, train_command

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at run time

app = typer.Typer(
    name="a4g",
    help="align4gen: cache DINOv2 + SAM2.1 features once, then train video DiTs aligned to them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
store_app = typer.Typer(help="Inspect and check feature stores.", no_args_is_help=True)


def _open_store(path: Path) -> FeatureStore:
    try:
        return FeatureStore.open(path)
    except StoreError as err:
        fail(str(err))


@store_app.command("info")
def store_info(
    store: Path = typer.Argument(..., help="Path of the feature store (a Zarr v3 directory)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full summary, schema included, as JSON."),
) -> None:
    """Summarize a store: dataset, encoders, frames, shards done, size on disk, skipped videos."""
    info = _open_store(store).info()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    lines = [
        f"store         {info['path']}",
        f"fingerprint   {info['fingerprint']}",
        f"dataset       {info['dataset']['name']} (split {info['dataset']['split']}) from {info['dataset']['root']}",
        f"videos        {info['videos']} ({len(info['skipped'])} skipped)",
        f"frames        {info['frames']} at {info['frame_size']} px, every {info['every']}",
        f"shards        {info['shards_done']}/{info['shards_total']} done"
        + ("" if info["complete"] else "  (incomplete: rerun the extract command to resume)"),
        f"size on disk  {human_bytes(info['bytes_on_disk'])} "
        f"({human_bytes(info['bytes_per_frame_uncompressed'])}/frame uncompressed)",
        f"token grid    {info['token_grid'][0]}x{info['token_grid'][1]}, flip twins: {info['flip']}",
        f"vae           {info['vae']['name']} ({info['vae']['latent_channels']} ch, weights {info['vae']['weights'][:12]})",
        "encoders",
    ]
    for enc in info["encoders"]:
        lines.append(
            f"  {enc['name']:<22} channels {enc['slice'][0]}:{enc['slice'][1]}  input {enc['input_size']}  "
            f"{enc['output']}  weights {enc['weights'][:12]}"
        )
    if info["random_init"]:
        lines.append("WARNING: random-init weights; fine for tests, meaningless for research")
    for s in info["skipped"]:
        lines.append(f"skipped  {s['path']}: {s['reason']}")
    typer.echo("\n".join(lines))


@store_app.command("verify")
def store_verify(
    store: Path = typer.Argument(..., help="Path of the feature store."),
    quick: bool = typer.Option(
        False, "--quick", help="Check markers, shapes and fingerprint only; skip re-reading every shard."
    ),
) -> None:
    """Check a store: all shards done, shapes match the schema, values finite, checksums and fingerprint."""
    fs = _open_store(store)
    problems = fs.verify(check_values=not quick)
    if problems:
        for p in problems[:50]:
            typer.echo(f"FAIL  {p}", err=True)
        if len(problems) > 50:
            typer.echo(f"... and {len(problems) - 50} more", err=True)
        fail(f"{store}: {len(problems)} problem(s)", code=1)
    typer.echo(
        f"OK  {store}: {fs.num_shards} shards, {fs.num_frames} frames, fingerprint {fs.schema.fingerprint}"
    )


@app.command("extract")
def extract(
    dataset: str = typer.Option(
        ..., help="Source name (ucf101, folder, frames, webdataset, synthetic, demo) or a path to the videos."
    ),
    out: Path = typer.Option(
        ..., help="Store directory to create, or to resume if it holds the same configuration."
    ),
    encoders: str = typer.Option(
        "dinov2_vitb14,sam2.1_hiera_b+",
        help="Comma-separated encoders in fusion order: dinov2_vit{s,b,l,g}14[_reg], sam2.1_hiera_{t,s,b+,l}; "
        "dinov2_tiny and sam2.1_tiny are random-init test encoders.",
    ),
    vae: str = typer.Option(
        ..., help="Local diffusers AutoencoderKL directory (sd-vae-ft-ema layout), or 'tiny'."
    ),
    data_root: Path | None = typer.Option(
        None, help="Where the videos are, when --dataset is a source name."
    ),
    split: str | None = typer.Option(
        None, help="Dataset split, e.g. train or test (ucf101 needs the split lists)."
    ),
    fold: int | None = typer.Option(None, help="UCF-101 split fold 1..3 (default 1 when --split is given)."),
    size: int = typer.Option(
        256, help="Square frame side in pixels (multiple of 16); 256 gives a 16x16 token grid."
    ),
    every: int = typer.Option(
        1, min=1, help="Temporal stride: store one frame in EVERY. Training strides must be multiples."
    ),
    hflip: bool = typer.Option(
        False, help="Also store *_flip twins computed on mirrored frames (for exact flip augmentation)."
    ),
    shard_frames: int = typer.Option(
        256, min=1, help="Frames per shard: the unit of work, writing and resuming."
    ),
    batch: int = typer.Option(64, min=1, help="Frames per model batch."),
    device: str = typer.Option("auto", help="cuda, cuda:N, cpu, or auto (cuda:LOCAL_RANK when available)."),
    num_workers: int = typer.Option(
        4, min=0, help="Decoding worker processes (0 decodes in the main process)."
    ),
    limit_videos: int | None = typer.Option(
        None, min=1, help="Use only the first N videos (sorted by id); for trials."
    ),
    random_init: bool = typer.Option(
        False,
        help="Use seeded random weights for every encoder and the VAE (tests and demos only; recorded in the schema).",
    ),
    weights: list[str] = typer.Option(
        [], help="NAME=PATH of a local weight file for an encoder; repeat per encoder."
    ),
    weights_dir: Path | None = typer.Option(
        None, help="Folder holding weight files under their documented names."
    ),
    sam_res: int = typer.Option(1024, help="SAM2.1 input side (multiple of 32)."),
    sam_output: str = typer.Option(
        "vision_features", help="SAM2.1 activation to store (neck vision_features or a trunk stage)."
    ),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the encoders (GPU throughput)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Scan videos and print the plan and storage estimate; write nothing."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Decode every frame, run the VAE and encoders once, and write latents + fused targets to a store.

    Resumable (the same command skips finished shards) and splittable across processes: under
    torchrun / accelerate launch (RANK, WORLD_SIZE) or a Slurm array, each process takes every
    WORLD-th shard.
    """
    from a4g.encoders import MissingWeightsError
    from a4g.extract.run import ExtractConfig, run_extraction, summarize

    cfg = ExtractConfig(
        dataset=dataset,
        out=out,
        encoders=[e.strip() for e in encoders.split(",") if e.strip()],
        vae=vae,
        data_root=data_root,
        split=split,
        fold=fold,
        size=size,
        every=every,
        hflip=hflip,
        shard_frames=shard_frames,
        batch=batch,
        device=device,
        num_workers=num_workers,
        limit_videos=limit_videos,
        random_init=random_init,
        compile=compile,
        sam_res=sam_res,
        sam_output=sam_output,
        weights=parse_weights(weights),
        weights_dir=weights_dir,
        dry_run=dry_run,
        progress=progress,
    )
    try:
        result = run_extraction(cfg, echo=typer.echo)
    except (StoreError, MissingWeightsError, FileNotFoundError, ValueError, KeyError) as err:
        fail(str(err).strip("'\""))
    typer.echo(summarize(result))


# Order of `a4g --help`: the pipeline first, then the tools.
app.command("train")(train_command)
app.command("sample")(sample_command)
app.add_typer(eval_app, name="eval")
app.command("iicr")(iicr_command)
app.add_typer(store_app, name="store")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
