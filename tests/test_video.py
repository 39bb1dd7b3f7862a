"""a4g.video: one extension list, strict random-access decoding, sequential decoding, atomic writes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from a4g.errors import DataError, UnreadableVideo
from a4g.sources.synthetic import synthetic_frames
from a4g.video import (
    VIDEO_EXTENSIONS,
    count_frames,
    decode_video,
    is_video_file,
    list_videos,
    read_frames,
    write_video,
)


def _pyav_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_written_video_round_trips_frame_count_and_leaves_no_partial(tmp_path: Path):
    frames = synthetic_frames("square", 0, 17, 40, 56)
    write_video(tmp_path / "x.mp4", frames)
    assert _pyav_count(tmp_path / "x.mp4") == 17
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]


def test_random_access_and_sequential_decoders_agree(synthetic_clip):
    path, written = synthetic_clip
    every = decode_video(path)
    assert every.shape == written.shape and every.dtype == np.uint8
    assert np.abs(every.astype(int) - written.astype(int)).mean() < 4  # near-lossless H.264 (crf 10)
    picked = read_frames(str(path), [0, 3, 9])
    # Two libraries' YUV->RGB conversions: allow swscale's SIMD and C paths to differ by a few levels.
    assert np.abs(picked.astype(int) - every[[0, 3, 9]].astype(int)).max() <= 3
    assert decode_video(path, max_frames=4).shape[0] == 4


def test_count_frames_from_path_and_bytes(synthetic_clip):
    path, written = synthetic_clip
    assert count_frames(str(path)) == count_frames(path.read_bytes()) == len(written)
    assert read_frames(path.read_bytes(), [2]).shape == (1, *written.shape[1:])
    with pytest.raises(IndexError, match="outside 0..9"):
        read_frames(str(path), [10])


def test_undecodable_and_truncated_videos_raise_unreadable(tmp_path: Path, real_clips: Path):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video" * 50)
    with pytest.raises(UnreadableVideo, match="not a decodable video"):
        count_frames(str(fake))
    data = (real_clips / "bikes.mp4").read_bytes()
    with pytest.raises(UnreadableVideo):
        count_frames(data[: len(data) // 3])


def test_one_extension_list(tmp_path: Path):
    for name in ("b/clip.MP4", "a/one.mkv", "c.mpeg", "notes.txt", "d/frame.png"):
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
