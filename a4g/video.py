"""Video files in one module: what counts as one, decoding (strict), writing, and why one was skipped.

Two decoders, each where it is the better tool. Extraction and training read frames *by number*
from datasets of thousands of videos: decord seeks to a frame directly (:func:`read_frames`,
:func:`count_frames`). Evaluation reads the *first* frames of generated videos in order, which
PyAV's sequential decode does without building a frame index (:func:`decode_video`). Both return
uint8 [T, H, W, 3] RGB. Videos are written with PyAV (:func:`write_video`).

Decoding is strict: a frame that does not decode raises :class:`~a4g.errors.UnreadableVideo`, and
sources record the video as a :class:`SkippedVideo` instead of guessing. ``SkippedVideo`` lives here,
not in the store, so the sources that produce it never import the store's Zarr code; the store's
index records the same objects (``a4g.store.index`` re-exports it).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from a4g.errors import DataError, UnreadableVideo

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
"""File extensions (lower case) that every source and `a4g eval` treat as videos."""


@dataclass(frozen=True)
class SkippedVideo:
    """A video that could not be used, and why (kept in the store so nothing is dropped silently)."""

    path: str
    reason: str


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """Video files under `folder` (recursive), sorted so evaluation order is reproducible."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"video folder not found: {root}")
    return sorted(p for p in root.rglob("*") if is_video_file(p) and p.is_file())


# ---- random access (decord) ---------------------------------------------------------------------


def _reader(src: str | bytes):
    import decord

    try:
        return decord.VideoReader(io.BytesIO(src) if isinstance(src, bytes) else src, num_threads=1)
    except Exception as err:  # decord raises DECORDError / RuntimeError for anything it cannot open
        raise UnreadableVideo(f"not a decodable video ({type(err).__name__})") from None


def count_frames(src: str | bytes) -> int:
    """Frame count from the container, checked by decoding the last frame.

    A truncated file often keeps a header that promises more frames than it holds; decoding the
    last one catches that, so the store never reserves frames that cannot be filled.
    """
    vr = _reader(src)
    n = len(vr)
    if n <= 0:
        raise UnreadableVideo("zero frames")
    try:
        vr[n - 1].asnumpy()
    except Exception:
        raise UnreadableVideo(
            f"truncated: the header promises {n} frames but the last does not decode"
        ) from None
    return n


def read_frames(src: str | bytes, frames: Sequence[int]) -> np.ndarray:
    """Decode the given frame numbers of a file path or in-memory video as uint8 [T, H, W, 3] RGB."""
    vr = _reader(src)
    idx = [int(i) for i in frames]
    if idx and (min(idx) < 0 or max(idx) >= len(vr)):
        raise IndexError(f"frames {min(idx)}..{max(idx)} outside 0..{len(vr) - 1}")
    out = vr.get_batch(idx).asnumpy()
    if out.shape[0] != len(idx):
        raise RuntimeError(f"decoded {out.shape[0]} frames, asked for {len(idx)}")
    return out


# ---- sequential decode and writing (PyAV) -------------------------------------------------------


def decode_video(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode up to `max_frames` leading frames (all when None) as uint8 [T, H, W, 3] RGB.

    A video with no decodable frame gives an empty [0, 0, 0, 3] array; callers skip it as too short.
    """
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, fps: int = 25) -> None:
    """Write uint8 [T, H, W, 3] frames as an H.264 mp4 (near-lossless, yuv420p) with PyAV.

    The file appears under its name only when complete (written to ``*.partial.mp4``, then renamed),
    so an interrupted run never leaves a video that looks finished.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial" + path.suffix)
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "preset": "veryfast", "threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
