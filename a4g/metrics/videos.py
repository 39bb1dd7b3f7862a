"""Read generated videos from a folder as uint8 clips for FVD/FID (PyAV decoding)."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """Video files under `folder` (recursive), sorted so evaluation order is reproducible."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())


def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode up to `max_frames` frames of a video as uint8 [T, H, W, 3] RGB."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


def iter_folder_clips(
    folder: str | os.PathLike, num_frames: int = 16, random_offset: bool = False, seed: int = 0
) -> Iterator[np.ndarray]:
    """One clip of `num_frames` consecutive frames per video; shorter videos are skipped (with a warning).

    Generated videos use the first frames (StyleGAN-V: no random offset for generated data); real
    videos in a folder can use `random_offset=True`, seeded for reproducibility.
    """
    rng = random.Random(seed)
    skipped = 0
    for path in list_videos(folder):
        frames = read_frames(path, None if random_offset else num_frames)
        if len(frames) < num_frames:
            skipped += 1
            continue
        start = rng.randrange(len(frames) - num_frames + 1) if random_offset else 0
        yield frames[start : start + num_frames]
    if skipped:
        warnings.warn(f"skipped {skipped} videos in {folder} shorter than {num_frames} frames", stacklevel=2)
