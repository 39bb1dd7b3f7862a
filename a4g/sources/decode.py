"""Video decoding with decord, made strict: a frame that does not decode is an error, not a guess."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from a4g.sources.base import UnreadableVideo

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


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
    """Decode the given frame numbers as uint8 [T, H, W, 3] RGB."""
    vr = _reader(src)
    idx = [int(i) for i in frames]
    if idx and (min(idx) < 0 or max(idx) >= len(vr)):
        raise IndexError(f"frames {min(idx)}..{max(idx)} outside 0..{len(vr) - 1}")
    out = vr.get_batch(idx).asnumpy()
    if out.shape[0] != len(idx):
        raise RuntimeError(f"decoded {out.shape[0]} frames, asked for {len(idx)}")
    return out
