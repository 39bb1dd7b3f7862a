"""The paper's headline experiment as one call: FVD (and FID) against training step, one line per run.

``run_curve(CurveRequest)`` does, for every checkpoint of every run (λ = 0 and λ = 0.5 trained on one
store, typically):

1. sample ``num`` videos from that checkpoint into ``OUT/samples/<run>/step_XXXXXXX`` with
   ``a4g sample``'s resumable sets (``a4g.train.sample.sample_run``): a second call reuses every
   finished video, and a larger ``num`` only draws the new ones;
2. score them with the one Fréchet evaluation (``a4g.metrics.evaluate``): the detector networks load
   once, and the real side's statistics are computed once per protocol and kept in
   ``OUT/real_stats/`` (``--real-stats`` folder mode), so each checkpoint costs its sampling plus
   one detector pass over its own videos. The real clips take each run's training stride when
   ``--real`` is its dataset (see ``evaluate.real_stride``);
3. rewrite ``OUT/curve.json`` after every point (an interrupted curve keeps what it measured) and,
   at the end, ``OUT/curve.png``: FVD against step, one line per run, λ in the legend (FID in a
   second panel with ``fid``).

``curve.json``: ``{"runs": {"<run>": [{"step": s, "fvd": x, "fid": y | null}, ...]}, "lambda":
{"<run>": λ}, "protocol": {...}}``; ``<run>`` is the path as given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a4g.errors import ConfigError
from a4g.metrics.evaluate import (
    FIDRequest,
    FVDRequest,
    LoadedDetector,
    check_request,
    evaluate,
    load_detector,
)
from a4g.torchutil import resolve_device
from a4g.train.config import check_bounds, setting
from a4g.train.sample_config import SAMPLE_FPS, SampleConfig, SampleRequest

CURVE_JSON, CURVE_PNG = "curve.json", "curve.png"
SAMPLES, REAL_STATS = "samples", "real_stats"

Say = Callable[[str], object]


@dataclass(frozen=True, kw_only=True)
class CurveRequest(SampleRequest):
    """Everything ``a4g eval curve`` takes: the runs, the real side, the protocol and how to sample.

    ``num`` counts videos per checkpoint (= FVD clips per side; FID uses every frame of them), and the
    sampling fields (steps, guidance, sampler, seed, batch size, class) mean what they mean for
    ``a4g sample``. ``frames`` and ``size`` default to the runs' clip length and frame size.
    """

    runs: tuple[str, ...]  # run directories, as given (they name the lines)
    real: str
    out: Path
    vae: str
    num: int = setting(FVDRequest.num, ge=2)
    data_root: Path | None = None
    split: str | None = None
    fold: int | None = None
    fid: bool = False
    ema: bool = True
    size: int | None = setting(None, ge=1)
    real_stride: int | None = setting(None, ge=1)
    real_start: str = "random"
    allow_fewer: bool = False
    i3d: Path | None = None
    inception: Path | None = None
    device: str = "auto"
    num_workers: int = setting(4, ge=0)
    progress: bool = True

    def validate(self) -> CurveRequest:
        check_bounds(self)
        if not self.runs:
            raise ConfigError("--runs is empty; name at least one run directory")
        return self


@dataclass(frozen=True)
class CurvePoint:
    step: int
    fvd: float
    fid: float | None


@dataclass
class CurveResult:
    runs: dict[str, list[CurvePoint]]
    lambdas: dict[str, float]
    json_path: Path
    png_path: Path | None


def run_curve(req: CurveRequest, echo: Say = print) -> CurveResult:
    """Sample, score and plot every checkpoint of every run (see the module docstring)."""
    from a4g.train.checkpoint import list_checkpoints

    req = req.validate()
    runs = _open_runs(req)
    folders = _folder_names(list(runs))
    frames, size = _geometry(req, runs)
    requests = _eval_requests(req, req.out, frames, size)
    for r in requests:
        check_request(r)
    device = resolve_device(req.device)
    detectors = {"fvd": load_detector("fvd", req.i3d, device)}
    if req.fid:
        detectors["fid"] = load_detector("fid", req.inception, device)
    (req.out / REAL_STATS).mkdir(parents=True, exist_ok=True)
    result = CurveResult(
        {}, {name: rec.align.weight for name, (_, rec) in runs.items()}, req.out / CURVE_JSON, None
    )
    for name, (path, _) in runs.items():
        result.runs[name] = []
        for step in list_checkpoints(path):
            folder = req.out / SAMPLES / folders[name] / f"step_{step:07d}"
            point = _point(req, path, folder, step, frames, size, detectors, echo)
            result.runs[name].append(point)
            echo(
                f"{name} step {step}: FVD {point.fvd:.2f}"
                + ("" if point.fid is None else f", FID {point.fid:.2f}")
            )
            write_curve_json(result, _protocol(req, frames, size))
    result.png_path = plot_curve(result, req.out / CURVE_PNG)
    return result


def _open_runs(req: CurveRequest) -> dict[str, tuple[Path, Any]]:
    """{run as given: (path, run record)}; every run needs at least one checkpoint."""
    from a4g.train.checkpoint import CheckpointError, list_checkpoints
    from a4g.train.run_record import read_run_record

    runs = {}
    for name in req.runs:
        record = read_run_record(Path(name))
        if not list_checkpoints(Path(name)):
            raise CheckpointError(f"--runs {name} has no complete checkpoint yet; train it first")
        runs[name] = (Path(name), record)
    if len(runs) < len(req.runs):
        raise ConfigError("--runs names a run twice; give each once")
    return runs


def _geometry(req: CurveRequest, runs: dict[str, tuple[Path, Any]]) -> tuple[int, int]:
    """Clip frames and frame size: the request's, else the runs' (which must then agree)."""
    frames = {rec.model.kwargs.num_frames for _, rec in runs.values()}
    sizes = {rec.store.frame_size for _, rec in runs.values()}
    if req.frames is None and len(frames) > 1:
        raise ConfigError(f"--frames: the runs were trained on clips of {sorted(frames)} frames; choose one")
    if req.size is None and len(sizes) > 1:
        raise ConfigError(f"--size: the runs' frames are {sorted(sizes)} px; choose one")
    return req.frames or min(frames), req.size or min(sizes)


def _folder_names(names: list[str]) -> dict[str, str]:
    """A folder under OUT/samples per run: its directory's name, numbered when two runs share one."""
    base = [Path(n).name or "run" for n in names]
    return {
        n: b if base.count(b) == 1 else f"{i}_{b}" for i, (n, b) in enumerate(zip(names, base, strict=True))
    }


def _point(
    req: CurveRequest,
    path: Path,
    folder: Path,
    step: int,
    frames: int,
    size: int,
    detectors: dict[str, LoadedDetector],
    echo: Say,
) -> CurvePoint:
    """Sample one checkpoint (reusing what is there) and score it."""
    from a4g.train.sample import sample_run

    sample_run(_sample_config(req, path, folder, step, frames), echo)
    scores = {
        r.metric: evaluate(r, detectors[r.metric]).score for r in _eval_requests(req, folder, frames, size)
    }
    return CurvePoint(step, scores["fvd"], scores.get("fid"))


def _eval_requests(req: CurveRequest, fake: Path, frames: int, size: int) -> list[FVDRequest | FIDRequest]:
    """FVD over ``num`` clips (and FID over every frame of them) of the set in ``fake``."""
    common: dict[str, Any] = {
        "real": req.real,
        "fake": fake,
        "data_root": req.data_root,
        "split": req.split,
        "fold": req.fold,
        "frames": frames,
        "size": size,
        "seed": req.seed,
        "device": req.device,
        "num_workers": req.num_workers,
        "allow_fewer": req.allow_fewer,
        "real_start": req.real_start,
        "real_stride": req.real_stride,
        "real_stats": req.out / REAL_STATS,
        "progress": req.progress,
    }
    out: list[FVDRequest | FIDRequest] = [FVDRequest(num=req.num, detector=req.i3d, **common)]
    if req.fid:
        out.append(FIDRequest(num=req.num * frames, detector=req.inception, **common))
    return out


def _sample_config(req: CurveRequest, run: Path, folder: Path, step: int, frames: int) -> SampleConfig:
    """`a4g sample`'s config for one checkpoint: every field the two requests share (sampling settings,
    vae, ema, device, ...) means the same in both, so it is copied by name, not listed by hand."""
    shared = {f.name for f in dataclasses.fields(SampleConfig)} & {f.name for f in dataclasses.fields(req)}
    given = {name: getattr(req, name) for name in shared}
    return SampleConfig(
        **{**given, "run": run, "out": folder, "checkpoint": str(step), "frames": frames, "fps": SAMPLE_FPS}
    )


def _protocol(req: CurveRequest, frames: int, size: int) -> dict[str, Any]:
    return {
        "real": req.real,
        "num": req.num,
        "frames": frames,
        "size": size,
        "real_stride": req.real_stride,  # None: each run's training stride on its dataset, else 1
        "seed": req.seed,
        "weights": "ema" if req.ema else "live",
        "sampler": req.sampler,
        "steps": req.steps,
        "cfg": req.guidance,
    }


def write_curve_json(result: CurveResult, protocol: dict[str, Any]) -> Path:
    """``curve.json`` (atomically: a reader never sees half of it)."""
    data = {
        "runs": {name: [vars(p) for p in points] for name, points in result.runs.items()},
        "lambda": result.lambdas,
        "protocol": protocol,
    }
    path = result.json_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def plot_curve(result: CurveResult, path: Path) -> Path:
    """FVD against training step, one line per run labelled with its λ (and FID beside it when measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["fvd"] + (["fid"] if any(p.fid is not None for ps in result.runs.values() for p in ps) else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, points in result.runs.items():
            label = f"{Path(name).name} (λ={result.lambdas[name]:g})"
            ax.plot([p.step for p in points], [getattr(p, metric) for p in points], marker="o", label=label)
        ax.set_xlabel("training step")
        ax.set_ylabel(metric.upper() + " (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
