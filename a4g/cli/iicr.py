"""`a4g iicr`: score encoders as alignment targets (`a4g.metrics.iicr_run.score_encoders`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from a4g.cli.options import (
    DATA,
    MODEL,
    OUTPUT,
    PROTOCOL,
    DataRootOpt,
    DatasetOpt,
    DeviceOpt,
    FoldOpt,
    ProgressOpt,
    RandomInitOpt,
    SamOutputOpt,
    SamResOpt,
    SeedOpt,
    SizeOpt,
    SplitOpt,
    WeightsDirOpt,
    WeightsOpt,
    build,
    check_out_dir,
    check_unique_list,
    default,
    split_list,
)
from a4g.errors import ConfigError
from a4g.metrics.iicr_run import MIN_K, IICRRequest

app = typer.Typer(add_completion=False)


def check_ks(param: typer.CallbackParam, value: str) -> str:
    """--k: comma-separated integers, each >= 2 (one cluster has no inter-cluster pairs)."""
    items = split_list(value)
    if not items or not all(k.isdigit() and int(k) >= MIN_K for k in items):
        raise ConfigError(f"--k expects comma-separated integers >= {MIN_K} like 8,10,12,15, got {value!r}")
    return value


ReportOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        callback=check_out_dir,
        help="Folder for iicr.json and iicr.png (created).",
        rich_help_panel=OUTPUT,
    ),
]
RowsOpt = Annotated[
    str,
    typer.Option(
        "--encoders",
        callback=check_unique_list,
        help="Comma-separated rows to score: registry encoder names, or 'a+b' for their fusion "
        "(per-encoder L2 norm, then concat, as in the store).",
        rich_help_panel=MODEL,
    ),
]
KOpt = Annotated[
    str,
    typer.Option(
        "--k",
        callback=check_ks,
        help="Comma-separated k-means cluster counts (x axis of the plot).",
        rich_help_panel=PROTOCOL,
    ),
]
ClipsOpt = Annotated[
    int,
    typer.Option(
        "--clips",
        min=1,
        help="Clips to score (one per video, videos drawn with --seed).",
        rich_help_panel=PROTOCOL,
    ),
]
FramesOpt = Annotated[
    int, typer.Option("--frames", min=2, help="Consecutive frames per clip.", rich_help_panel=PROTOCOL)
]
MasksOpt = Annotated[
    Path | None,
    typer.Option(
        "--masks",
        help="DAVIS-style ground-truth masks, MASKS/<video id without extension>/<frame:05d>.png "
        "(index PNGs, 0 = background): adds a 'masks' column grouping tokens by object instead of k-means.",
        rich_help_panel=DATA,
    ),
]


@app.command("iicr")
def iicr(
    *,  # keyword-only, so required flags can sit in their --help panel rather than first
    dataset: DatasetOpt,
    data_root: DataRootOpt = default(IICRRequest, "data_root"),
    split: SplitOpt = default(IICRRequest, "split"),
    fold: FoldOpt = default(IICRRequest, "fold"),
    masks: MasksOpt = default(IICRRequest, "masks"),
    size: SizeOpt = default(IICRRequest, "size"),
    encoders: RowsOpt = default(IICRRequest, "encoders"),
    random_init: RandomInitOpt = default(IICRRequest, "random_init"),
    weights: WeightsOpt = default(IICRRequest, "weights"),
    weights_dir: WeightsDirOpt = default(IICRRequest, "weights_dir"),
    sam_res: SamResOpt = default(IICRRequest, "sam_res"),
    sam_output: SamOutputOpt = default(IICRRequest, "sam_output"),
    k: KOpt = default(IICRRequest, "k"),
    clips: ClipsOpt = default(IICRRequest, "clips"),
    frames: FramesOpt = default(IICRRequest, "frames"),
    seed: SeedOpt = default(IICRRequest, "seed"),
    out: ReportOutOpt,
    progress: ProgressOpt = default(IICRRequest, "progress"),
    device: DeviceOpt = default(IICRRequest, "device"),
) -> None:
    """Score encoders as alignment targets with IICR (inter/intra cluster ratio, higher is better).

    Every row's tokens are taken on the V-DiT token grid (--size/16), the grid of the store's targets. Writes a table to stdout, OUT/iicr.json and OUT/iicr.png (IICR against k, one line per row).
    """
    from a4g.metrics.iicr_report import format_table
    from a4g.metrics.iicr_run import score_encoders

    result = score_encoders(build(IICRRequest, locals()), note=lambda line: typer.echo(line, err=True))
    typer.echo(format_table(result.report))
    typer.echo(f"wrote {result.json_path} and {result.png_path} ({result.report['seconds']} s)")
