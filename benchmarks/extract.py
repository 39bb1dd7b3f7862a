"""Extraction throughput: end-to-end `a4g extract` frames/s against encoders-only frames/s, one run.

Encoders-only = the VAE and every encoder on frames already in device memory (no decode, no write):
the ceiling. End-to-end = the real pipeline (decode workers → models → background writer) on a
folder of videos, with the *same* model objects (built and, with --compile, compiled once). The goal
is end-to-end ≥ 0.95 × encoders-only, i.e. decoding and writing hide behind the GPU.

Where the time goes (``profile`` in the JSON): per shard, the main loop's time, its wait for the
decode workers, the host time ``FeatureExtractor.rows`` takes to queue a shard (on a GPU it returns
before the work is done: the device->host copies overlap the next shard), the GPU span of the
models (CUDA events, read after the run so they add no synchronisation), the loop time the GPU
spends outside the models, and the writer thread's time per shard; plus one worker's decode rate
and the bare H2D/D2H copy times of one shard. These are time stamps added from outside (the
package is not changed); a stage whose hook is missing is reported as such instead of failing.

On one H100 (random weights, bf16, before the shard-write and fp16-cast changes) the encoders
alone reached 128 frames/s for all three models and end-to-end 0.67–0.74 of that; the H200 numbers
are produced by ``benchmarks/gpu_all.sh`` (see docs/benchmarks-gpu.md).

    # synthetic clips (no GPU; OpenCV or PyAV writes them), then the GPU run, eager and compiled:
    python benchmarks/extract.py --make-clips /tmp/clips --videos 24 --frames 128
    python benchmarks/extract.py --data /tmp/clips --keep-store /tmp/s_eager --profile --json e.json
    python benchmarks/extract.py --data /tmp/clips --keep-store /tmp/s_comp --compile --json c.json
    # numerical agreement of two stores of the same clips (cosine of targets, |Δ| of latents):
    python benchmarks/extract.py --compare /tmp/s_eager /tmp/s_comp --json cmp.json
    # CPU, tiny models, seconds:
    python benchmarks/extract.py --smoke --json out.json

`--vae sd` builds the SD-VAE architecture (sd-vae-ft-ema config) with random weights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch._dynamo.utils import counters

from a4g.torchutil import autocast  # the precision the package extracts with (bf16 on a GPU)

SMOKE = dict(
    device="cpu",
    encoders="dinov2_tiny,sam2.1_tiny",
    vae="tiny",
    size=64,
    sam_res=64,
    batch=16,
    iters=2,
    warmup=2,
    videos=4,
    frames=32,
    clip_height=120,
    clip_width=160,
    shard_frames=32,
    num_workers=1,
)
"""Tiny models and clips: proves every code path on a CPU in seconds."""


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--smoke", action="store_true", help="tiny CPU preset: small defaults for every size flag"
    )
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--encoders", default="dinov2_vitb14,sam2.1_hiera_b+", help="fusion order")
    ap.add_argument(
        "--vae", default="sd", help="'sd' (SD-VAE architecture, random weights), 'tiny', or a dir"
    )
    ap.add_argument("--size", type=int, default=256, help="square frame side the store holds")
    ap.add_argument("--sam-res", type=int, default=1024, help="SAM2.1 input side")
    ap.add_argument("--batch", type=int, default=64, help="frames per model call")
    ap.add_argument("--iters", type=int, default=5, help="timed batches per model for encoders-only")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches first (compiles with --compile)")
    ap.add_argument("--data", type=Path, default=None, help="folder of videos (default: synthetic clips)")
    ap.add_argument("--videos", type=int, default=24, help="synthetic clips to make when --data is absent")
    ap.add_argument("--frames", type=int, default=128, help="frames per synthetic clip")
    ap.add_argument("--clip-height", type=int, default=240, help="synthetic clip height (UCF-101: 240)")
    ap.add_argument("--clip-width", type=int, default=320, help="synthetic clip width (UCF-101: 320)")
    ap.add_argument("--shard-frames", type=int, default=256)
    ap.add_argument("--num-workers", type=int, default=None, help="decode workers (default: the package's)")
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile the VAE and encoders (as a4g extract)"
    )
    ap.add_argument("--target-dtype", default=None, help="store dtype of targets, e.g. int8 (if supported)")
    ap.add_argument("--profile", action="store_true", help="per-stage time stamps of the end-to-end run")
    ap.add_argument("--skip-encoders-only", action="store_true", help="end-to-end only")
    ap.add_argument("--keep-store", type=Path, default=None, help="write the store here and keep it")
    ap.add_argument(
        "--make-clips", type=Path, default=None, help="only write synthetic clips here, then exit"
    )
    ap.add_argument("--compare", type=Path, nargs=2, default=None, metavar=("REF", "OTHER"))
    ap.add_argument("--json", type=Path, default=None, help="results (rewritten after every stage)")
    if "--smoke" in sys.argv[1:]:  # the preset changes defaults; flags given still win
        ap.set_defaults(**SMOKE)
    return ap.parse_args()


# ------------------------------------------------------------------------------------ clips


def write_clip(path: Path, frames: np.ndarray, fps: int = 25) -> str:
    """Write uint8 [T, H, W, 3] frames; returns the codec used.

    PyAV (H.264, the package's writer) where installed; else OpenCV's MPEG-4 Part 2 (what the GPU
    machine has; UCF-101 itself is MPEG-4 Part 2 / XviD, so decode cost stays realistic).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("av") is not None:
        try:
            from a4g.video import write_video
        except ImportError:  # older layout
            from a4g.sources.synthetic import write_video
        write_video(path, frames, fps=fps)
        return "h264 (PyAV)"
    import cv2

    # MJPEG in AVI is OpenCV's own encoder: the fallback if its FFmpeg cannot write MPEG-4.
    for fourcc, suffix, codec in (
        ("mp4v", ".mp4", "mpeg4 part 2 (OpenCV)"),
        ("MJPG", ".avi", "mjpeg (OpenCV)"),
    ):
        final = path.with_suffix(suffix)
        tmp = final.with_suffix(".partial" + suffix)
        out = cv2.VideoWriter(
            str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (frames.shape[2], frames.shape[1])
        )
        if out.isOpened():
            for frame in frames:
                out.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV wants BGR
            out.release()
            tmp.replace(final)
            return codec
    raise RuntimeError("neither PyAV nor OpenCV can write a video here")


def _one_clip(job: tuple[Path, str, int, int, int, int]) -> str:
    from a4g.sources.synthetic import synthetic_frames

    root, shape, i, frames, height, width = job
    return write_clip(
        root / shape / f"{shape}_{i:03d}.mp4", synthetic_frames(shape, i, frames, height, width)
    )


def make_clips(root: Path, videos: int, frames: int, height: int, width: int) -> dict:
    """Deterministic synthetic clips (a4g.sources.synthetic), written in parallel processes."""
    from a4g.sources.synthetic import SHAPES

    start = time.perf_counter()
    jobs = [(root, SHAPES[i % len(SHAPES)], i, frames, height, width) for i in range(videos)]
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        codecs = set(pool.map(_one_clip, jobs))
    return {
        "videos": videos,
        "frames_per_video": frames,
        "height": height,
        "width": width,
        "codec": sorted(codecs),
        "seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------ timing helpers

_ABSENT = object()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], object], frames: int, warmup: int, iters: int, device: torch.device) -> float:
    """Frames/s of `fn` (one batch of `frames`), warm-up calls excluded."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return frames * iters / (time.perf_counter() - start)


@torch.no_grad()
def time_models(
    extractor, size: int, batch: int, warmup: int, iters: int, done: Callable[[dict, dict], object]
) -> tuple[dict, dict]:
    """Frames/s of each model and of all together on random frames already on the device, and the
    wall seconds each took (warm-up included: with --compile, mostly compilation). `done` gets the
    results so far after each model, so a part cut mid-compile keeps the models measured."""
    device = extractor.device
    frames = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)

    def one(enc) -> Callable[[], object]:
        def run():
            with autocast(device):
                return enc(frames)

        return run

    parts: dict[str, Callable[[], object]] = {"vae": lambda: extractor.encode_latents(frames)}
    for enc in extractor.encoders:
        parts[enc.spec.name] = one(enc)
    parts["all"] = lambda: (extractor.encode_latents(frames), extractor.encode_targets(frames))
    out, walls = {}, {}
    for name, fn in parts.items():
        start = time.perf_counter()
        out[name] = rate(fn, batch, warmup, iters, device)
        walls[name] = time.perf_counter() - start  # with --compile: mostly compilation
        print(f"  encoders-only {name:>18}: {out[name]:9.1f} frames/s ({walls[name]:.0f} s)")
        done(out, walls)
    return out, walls


# ------------------------------------------------------------------------------------ profile


class StageClock:
    """Time stamps of the end-to-end loop's stages, hooked in from outside the package.

    Hooks: the shard iterator (wait for decode workers), ``FeatureExtractor.rows`` (host time to
    queue a shard), CUDA events around the model calls (their GPU span, read only in ``summary``
    after the run: reading them per shard would make the loop wait for the GPU, which the package
    no longer does) and ``FeatureStore.write_shard`` (writer thread).
    """

    def __init__(self, extractor, device: torch.device) -> None:
        self.extractor = extractor
        self.device = device
        self.shards: list[dict[str, float]] = []
        self.writes: list[float] = []
        self.hooks: list[str] = []
        self._events: list[list[tuple[torch.cuda.Event, torch.cuda.Event]]] = []  # per rows call
        self._undo: list[Callable[[], None]] = []

    def _patch(self, owner, name: str, make: Callable) -> None:
        """Replace owner.name (module, class or instance attribute) until `hooked` exits."""
        label = f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"
        original = getattr(owner, name, None)
        if original is None:
            self.hooks.append(f"missing: {label}")
            return
        raw = vars(owner).get(name, _ABSENT)
        setattr(owner, name, make(original))
        self.hooks.append(label)
        self._undo.append(lambda: delattr(owner, name) if raw is _ABSENT else setattr(owner, name, raw))

    def _timed_model(self, original: Callable) -> Callable:
        def wrapper(*a, **k):
            if self.device.type != "cuda" or not self._events:  # encoders-only timing: not a shard
                return original(*a, **k)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = original(*a, **k)
            end.record()
            self._events[-1].append((start, end))
            return out

        return wrapper

    def _timed_rows(self, original: Callable) -> Callable:
        def wrapper(*a, **k):
            self._events.append([])
            t = time.perf_counter()
            out = original(*a, **k)
            if not self.shards:  # the iterator hook is missing: still record rows
                self.shards.append({"start": t})
            self.shards[-1]["rows_host_s"] = time.perf_counter() - t
            return out

        return wrapper

    def _timed_iter(self, original: Callable) -> Callable:
        def wrapper(*a, **k) -> Iterator:
            it = iter(original(*a, **k))
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                self.shards.append({"wait_decode_s": time.perf_counter() - t, "start": t})
                yield item

        return wrapper

    def _timed_write(self, original: Callable) -> Callable:
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = original(*a, **k)
            self.writes.append(time.perf_counter() - t)
            return out

        return wrapper

    @contextlib.contextmanager
    def hooked(self, run_module, store_cls) -> Iterator[None]:
        self._patch(run_module, "iterate_shards", self._timed_iter)
        self._patch(type(self.extractor), "rows", self._timed_rows)
        self._patch(self.extractor, "encode_latents", self._timed_model)
        self._patch(self.extractor, "encode_targets", self._timed_model)
        self._patch(store_cls, "write_shard", self._timed_write)
        try:
            yield
        finally:
            for undo in reversed(self._undo):
                undo()

    def summary(self) -> dict:
        """Steady-state (first shard excluded) seconds per shard of each stage."""
        if self.device.type == "cuda":  # after the run: reading the events costs the loop nothing
            torch.cuda.synchronize(self.device)
            for shard, events in zip(self.shards, self._events, strict=False):
                shard["model_gpu_s"] = sum(s.elapsed_time(e) for s, e in events) / 1e3
        steady = self.shards[1:-1] or self.shards[1:] or self.shards  # the shards whose loop is known
        # a shard's loop: from asking for it to asking for the next one (the last one has none)
        loops = [b["start"] - a["start"] for a, b in zip(self.shards, self.shards[1:], strict=False)][1:]

        def mean(key: str) -> float:
            vals = [s[key] for s in steady if key in s]
            return float(np.mean(vals)) if vals else float("nan")

        loop = float(np.mean(loops)) if loops else float("nan")
        return {
            "hooks": self.hooks,
            "shards": len(self.shards),
            "per_shard_s": {
                "loop": loop,
                "wait_decode": mean("wait_decode_s"),
                "rows_host": mean("rows_host_s"),
                "models_gpu_span": mean("model_gpu_s"),
                "gpu_outside_models (H2D+cast+idle)": loop - mean("model_gpu_s"),
                "writer_thread": float(np.mean(self.writes[1:] or self.writes)) if self.writes else None,
            },
            "raw": [{k: round(v, 5) for k, v in s.items() if k != "start"} for s in self.shards],
        }


def copy_times(shard_frames: int, size: int, row_bytes: int, device: torch.device) -> dict:
    """Bare H2D (pinned uint8 frames) and D2H (fp16 rows into pinned memory, as the package copies
    them, and into pageable memory, as it did before) seconds for one shard."""
    if device.type != "cuda":
        return {"skipped": "no GPU"}
    host = torch.randint(0, 256, (shard_frames, 3, size, size), dtype=torch.uint8).pin_memory()
    dev_rows = torch.zeros(shard_frames * row_bytes // 2, dtype=torch.float16, device=device)
    pinned_rows = torch.empty(dev_rows.shape, dtype=dev_rows.dtype, pin_memory=True)
    out = {}
    for name, fn in {
        "h2d_s": lambda: host.to(device, non_blocking=True),
        "d2h_s": lambda: pinned_rows.copy_(dev_rows, non_blocking=True),
        "d2h_pageable_s": lambda: dev_rows.cpu(),
    }.items():
        fn()
        sync(device)
        t = time.perf_counter()
        for _ in range(5):
            fn()
        sync(device)
        out[name] = (time.perf_counter() - t) / 5
    out["h2d_bytes"] = host.numel()
    out["d2h_bytes"] = dev_rows.numel() * 2
    return out


def decode_rate(cfg, store_path: Path, shards: int = 2) -> dict:
    """One decode worker's frames/s (decode + square resize on one thread, as a DataLoader worker)."""
    from a4g.extract import run as run_mod
    from a4g.sources import build_source
    from a4g.store import FeatureStore

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        source = build_source(cfg.dataset, cfg.data_root, cfg.split, cfg.fold)
        store = FeatureStore.open(store_path)
        ds = run_mod.ShardFrames(source, store, list(range(min(shards, store.num_shards))))
        t = time.perf_counter()
        n = sum(ds[k][1].shape[0] for k in range(len(ds)))
        fps = n / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    cores = os.cpu_count() or 1
    workers = min(cfg.num_workers, cores)
    return {
        "frames_per_s_one_worker": fps,
        "cores": cores,
        "num_workers": cfg.num_workers,
        "capacity_frames_per_s": fps * workers,
        "capacity_all_cores_frames_per_s": fps * max(1, cores - 1),
    }


def direct_agreement(cfg, extractor, store_path: Path, shard: int = 1) -> dict:
    """One shard of the end-to-end store against the same frames run through the models again and
    waited for at once. The loop overlaps each shard's device->host copy with the next shard's
    models; a race there would store stale or partial rows and show here as a large difference
    (bf16 kernels may differ run to run in the last bits only)."""
    from a4g.extract import run as run_mod
    from a4g.sources import build_source
    from a4g.store import FeatureStore

    store = FeatureStore.open(store_path)
    shard = min(shard, store.num_shards - 1)
    source = build_source(cfg.dataset, cfg.data_root, cfg.split, cfg.fold)
    _, frames = run_mod.ShardFrames(source, store, [shard])[0]
    rows = extractor.rows(frames, flip=cfg.hflip)
    direct = rows.wait() if hasattr(rows, "wait") else rows  # older package: numpy arrays at once
    stored = store.read_shard(shard)
    arrays = {}
    for name in sorted(set(direct) & set(stored)):
        a, b = np.asarray(stored[name], np.float32), np.asarray(direct[name], np.float32)
        arrays[name] = {"max_abs_diff": float(np.abs(a - b).max()), "max_abs": float(np.abs(b).max())}
    return {"shard": shard, "arrays": arrays}


# ------------------------------------------------------------------------------------ runs


def make_config(args, data: Path, out: Path, vae: str):
    """ExtractConfig from the flags; fields this version of the package lacks are reported, not passed."""
    from a4g.extract.run import ExtractConfig

    fields = {f.name for f in dataclasses.fields(ExtractConfig)}
    wanted = dict(
        dataset=str(data),
        out=out,
        encoders=args.encoders.split(","),
        vae=vae,
        size=args.size,
        shard_frames=args.shard_frames,
        batch=args.batch,
        device=args.device,
        random_init=True,
        compile=args.compile,
        sam_res=args.sam_res,
        progress=False,
    )
    if args.num_workers is not None:
        wanted["num_workers"] = args.num_workers
    if args.target_dtype is not None:
        wanted["target_dtype"] = args.target_dtype
    missing = sorted(set(wanted) - fields)
    return ExtractConfig(**{k: v for k, v in wanted.items() if k in fields}), missing


@contextlib.contextmanager
def reuse_models(extractor) -> Iterator[None]:
    """Make run_extraction use the models already built (and compiled): one build, one compile."""
    from a4g.extract.run import FeatureExtractor

    original = vars(FeatureExtractor)["build"]
    FeatureExtractor.build = classmethod(lambda cls, cfg, device: extractor)
    try:
        yield
    finally:
        FeatureExtractor.build = original


def end_to_end(cfg, extractor, profile: bool) -> tuple[dict, dict | None]:
    from a4g.extract import run as run_mod
    from a4g.store import FeatureStore

    clock = StageClock(extractor, extractor.device) if profile else None
    hooks = clock.hooked(run_mod, FeatureStore) if clock else contextlib.nullcontext()
    with reuse_models(extractor), hooks:
        quiet = (
            [lambda *_, **__: None] if len(inspect.signature(run_mod.run_extraction).parameters) > 1 else []
        )
        result = run_mod.run_extraction(cfg, *quiet)  # the printer's name has changed before
    steady = getattr(result, "steady_fps", None)
    e2e = {
        "fps": steady or result.frames_written / result.seconds,
        "fps_with_startup": result.frames_written / result.seconds,
        "frames": result.frames_written,
        "seconds": result.seconds,
    }
    return e2e, clock.summary() if clock else None


def explain(report: dict) -> list[str]:
    """Plain-language reading of the profile: which stage keeps end-to-end under the ceiling."""
    prof, lines = report.get("profile"), []
    if not prof:
        return lines
    s = prof["per_shard_s"]
    loop = s["loop"]
    if not loop or loop != loop:
        return lines
    # The stages overlap (the GPU runs while the loop waits), so these do not add up to 100 %: the
    # loop runs at the pace of the busiest one. Near 100 %: that stage is the bound.
    parts = {
        "the GPU runs the models (the goal: near 100 %)": s["models_gpu_span"],
        "the main thread waits for decode workers (decode-bound if large)": s["wait_decode"],
        "the main thread queues GPU work (launch-bound near 100 %)": s["rows_host"],
        "the writer thread writes (write-bound near 100 %)": s["writer_thread"],
    }
    for name, sec in parts.items():
        if sec is not None and sec == sec:
            lines.append(f"  {100 * sec / loop:5.1f}% of each shard's loop ({sec * 1e3:7.1f} ms): {name}")
    return lines


def main_run(args) -> dict:
    from a4g.encoders.vae import sd_vae_config, write_vae_config
    from a4g.extract.run import FeatureExtractor

    report: dict = {"argv": sys.argv[1:], "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vae = str(write_vae_config(tmp / "sd-vae-ft-ema", sd_vae_config())) if args.vae == "sd" else args.vae
        data = args.data
        if data is None:
            report["clips"] = make_clips(
                tmp / "clips", args.videos, args.frames, args.clip_height, args.clip_width
            )
            data = tmp / "clips"
        cfg, missing = make_config(args, data, args.keep_store or tmp / "store", vae)
        if args.target_dtype is not None and "target_dtype" in missing:
            report["skipped"] = "ExtractConfig has no target_dtype: the --target-dtype option has not landed"
            return save(args, report)
        device = pick_device(args.device)
        report["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
        report["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        t = time.perf_counter()
        extractor = FeatureExtractor.build(cfg, device)
        report["build_s"] = time.perf_counter() - t
        if not args.skip_encoders_only:
            fps, walls = time_models(
                extractor, args.size, args.batch, args.warmup, args.iters,
                lambda f, w: save(args, {**report, "encoders_only_fps": f, "encoders_only_wall_s": w}),
            )  # fmt: skip
            report["encoders_only_fps"], report["encoders_only_wall_s"] = fps, walls
            save(args, report)
        e2e, prof = end_to_end(cfg, extractor, args.profile)
        report["end_to_end"] = e2e
        print(
            f"  end-to-end: {e2e['fps']:.1f} frames/s steady ({e2e['frames']} frames, {e2e['seconds']:.1f} s)"
        )
        report["store_vs_direct"] = _safe(lambda: direct_agreement(cfg, extractor, Path(cfg.out)))
        diffs = {k: v["max_abs_diff"] for k, v in report["store_vs_direct"].get("arrays", {}).items()}
        print(f"  stored shard vs models rerun, max|d|: {diffs or report['store_vs_direct']}")
        if args.compile:  # one per compiled model (VAE + encoders) unless something recompiled
            report["dynamo_graphs"] = counters["stats"]["unique_graphs"]
            print(f"  graphs compiled: {report['dynamo_graphs']} ({1 + len(extractor.encoders)} models)")
        if "encoders_only_fps" in report:
            report["ratio_end_to_end_over_encoders_only"] = e2e["fps"] / report["encoders_only_fps"]["all"]
        if prof is not None:
            report["profile"] = prof
            report["profile"]["decode"] = _safe(lambda: decode_rate(cfg, Path(cfg.out)))
            row_bytes = _row_bytes(Path(cfg.out))
            report["profile"]["copies"] = _safe(
                lambda: copy_times(args.shard_frames, args.size, row_bytes, device)
            )
        return save(args, report)


def _row_bytes(store_path: Path) -> int:
    """Bytes one frame's rows take in the store (all arrays), for the D2H copy estimate."""
    try:
        from a4g.store import FeatureStore

        s = FeatureStore.open(store_path)
        return sum(int(np.prod(s.array(n).shape[1:])) * s.array(n).dtype.itemsize for n in s.array_names)
    except Exception:
        return 2 * 256 * 1024 * 2


def _safe(fn: Callable[[], dict]) -> dict:
    """A diagnostic that fails must not lose the measurements around it."""
    try:
        return fn()
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}


# ------------------------------------------------------------------------------------ compare


def compare_stores(ref_path: Path, other_path: Path) -> dict:
    """Agreement of two stores of the same clips, shard by shard in float32.

    targets: cosine similarity of each token's target vector (min, mean, 0.1 % quantile) and max |Δ|;
    latents: max and mean |Δ| next to max |ref| (fp16 rounding alone is 2^-11 relative).
    """
    from a4g.store import FeatureStore

    ref, other = FeatureStore.open(ref_path), FeatureStore.open(other_path)
    if ref.num_frames != other.num_frames:
        raise ValueError(f"stores hold {ref.num_frames} and {other.num_frames} frames")
    stats: dict[str, dict[str, list]] = {}
    for shard in range(ref.num_shards):
        a, b = ref.read_shard(shard), other.read_shard(shard)
        for name in sorted(set(a) & set(b)):
            x, y = np.asarray(a[name], np.float32), np.asarray(b[name], np.float32)
            st = stats.setdefault(name, {"max_abs": [], "sum_abs": [], "n": [], "max_ref": [], "cos": []})
            d = np.abs(x - y)
            st["max_abs"].append(float(d.max()))
            st["sum_abs"].append(float(d.sum(dtype=np.float64)))
            st["n"].append(d.size)
            st["max_ref"].append(float(np.abs(x).max()))
            if name.startswith("targets"):
                xf, yf = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
                num = (xf * yf).sum(-1)
                den = np.linalg.norm(xf, axis=-1) * np.linalg.norm(yf, axis=-1)
                st["cos"].append(num / np.maximum(den, 1e-12))
    out = {}
    for name, st in stats.items():
        out[name] = {
            "max_abs_diff": max(st["max_abs"]),
            "mean_abs_diff": sum(st["sum_abs"]) / sum(st["n"]),
            "max_abs_ref": max(st["max_ref"]),
        }
        if st["cos"]:
            cos = np.concatenate(st["cos"])
            out[name].update(
                cos_min=float(cos.min()), cos_mean=float(cos.mean()), cos_p001=float(np.quantile(cos, 0.001))
            )
    return {"ref": str(ref_path), "other": str(other_path), "arrays": out}


def package_comparison(ref_path: Path, other_path: Path) -> dict:
    """`a4g store compare`'s numbers: cosine per encoder with int8 targets dequantized (the raw
    statistics above compare int8 codes as numbers, which says little for an int8 store)."""
    from a4g.store.compare import compare_locations

    return compare_locations(str(ref_path), str(other_path)).to_json()


def save(args, report: dict) -> dict:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def main() -> None:
    args = parse()
    if args.make_clips:
        info = make_clips(args.make_clips, args.videos, args.frames, args.clip_height, args.clip_width)
        print(json.dumps(info))
        save(args, info)
        return
    if args.compare:
        report = compare_stores(*args.compare)
        report["package"] = _safe(lambda: package_comparison(*args.compare))
        print(json.dumps(report, indent=2))
        save(args, report)
        return
    report = main_run(args)
    for line in explain(report):
        print(line)
    if "ratio_end_to_end_over_encoders_only" in report:
        print(f"  ratio end-to-end / encoders-only: {report['ratio_end_to_end_over_encoders_only']:.3f}")
    if "skipped" in report:
        print(f"  skipped: {report['skipped']}")


if __name__ == "__main__":
    main()
