"""Clips of generated videos from a folder for FVD/FID (decoded by `a4g.video`, PyAV in order)."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from a4g.video import decode_video, list_videos

__all__ = ["iter_folder_clips", "iter_video_clips", "list_videos"]


def iter_folder_clips(
    folder: str | os.PathLike, num_frames: int = 16, random_offset: bool = False, seed: int = 0
) -> Iterator[np.ndarray]:
    """One clip of `num_frames` consecutive frames per video; shorter videos are skipped (with a warning).

    Generated videos use the first frames (StyleGAN-V: no random offset for generated data); real
    videos in a folder can use `random_offset=True`, seeded for reproducibility.
    """
    yield from iter_video_clips(list_videos(folder), num_frames, random_offset, seed, where=folder)


def iter_video_clips(
    paths: Sequence[Path],
    num_frames: int = 16,
    random_offset: bool = False,
    seed: int = 0,
    where: str | os.PathLike = "the videos",
) -> Iterator[np.ndarray]:
    """:func:`iter_folder_clips` over the given videos, in their order (e.g. a sample manifest's files)."""
    rng = random.Random(seed)
    skipped = 0
    for path in paths:
        frames = decode_video(path, None if random_offset else num_frames)
        if len(frames) < num_frames:
            skipped += 1
            continue
        start = rng.randrange(len(frames) - num_frames + 1) if random_offset else 0
        yield frames[start : start + num_frames]
    if skipped:
        warnings.warn(f"skipped {skipped} videos in {where} shorter than {num_frames} frames", stacklevel=2)
