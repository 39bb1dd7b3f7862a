"""Clips of generated videos from a folder for FVD/FID (decoded by `a4g.video`, PyAV in order)."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator

import numpy as np

from a4g.video import decode_video, list_videos

__all__ = ["iter_folder_clips", "list_videos"]


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
        frames = decode_video(path, None if random_offset else num_frames)
        if len(frames) < num_frames:
            skipped += 1
            continue
        start = rng.randrange(len(frames) - num_frames + 1) if random_offset else 0
        yield frames[start : start + num_frames]
    if skipped:
        warnings.warn(f"skipped {skipped} videos in {folder} shorter than {num_frames} frames", stacklevel=2)
