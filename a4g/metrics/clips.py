"""Evaluation clips from a dataset source: seeded windows of consecutive frames, squared like training.

FVD, FID and IICR all need "N clips of T consecutive frames from a dataset". Videos are visited in
a seeded random order (so a subset of a sorted dataset still spans every class) and probed lazily,
so taking 2048 clips from UCF-101 decodes only as many headers as it needs. Each chosen video gives
one window at a seeded random start; videos shorter than the window are skipped, as in StyleGAN-V.
FVD and FID may take every `stride`-th frame instead of consecutive ones (`--real-stride`; Latte
reads real UCF-101 clips at stride 3).
Frames then go through the exact preprocessing of `a4g extract` (`square_frames`).

Ground-truth masks for IICR's mask mode live in a DAVIS-style tree,
`MASKS/<video id without extension>/<frame number:05d>.png` (palette or grayscale index PNGs, one
value per object, 0 = background); they are squared with the same geometry (nearest neighbour).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from a4g.encoders.preprocess import short_side_shape, square_frames
from a4g.errors import DataError, UnreadableVideo
from a4g.sources import VideoSource

MASK_LAYOUT = "MASKS/<video id without extension>/<frame:05d>.png"


@dataclass(frozen=True)
class ClipRef:
    """One evaluation clip: `length` frames of a video from frame `start`, `stride` frames apart."""

    video_id: str
    path: str
    start: int
    length: int
    stride: int = 1

    @property
    def frames(self) -> list[int]:
        return list(range(self.start, self.start + span(self.length, self.stride), self.stride))


def span(frames: int, stride: int) -> int:
    """Source frames a clip of `frames` frames taken `stride` apart covers."""
    return (frames - 1) * stride + 1


@dataclass
class ClipSelection:
    """The chosen evaluation clips and what was passed over to find them (for honest reporting).

    Not a training ``a4g.train.data.ClipPlan``: that one lists clip starts in a feature store.
    """

    clips: list[ClipRef]
    candidates: int
    too_short: int = 0
    unreadable: list[str] = field(default_factory=list)

    def describe(self, num_frames: int, stride: int = 1) -> str:
        parts = [f"{len(self.clips)} clips from {self.candidates} videos"]
        if self.too_short:
            parts.append(f"{self.too_short} shorter than {span(num_frames, stride)} frames skipped")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable skipped")
        return ", ".join(parts)


def plan_clips(
    source: VideoSource,
    num: int,
    num_frames: int,
    seed: int = 0,
    keep: Callable[[str], bool] | None = None,
    progress: bool = False,
    threads: int = 8,
    random_start: bool = True,
    stride: int = 1,
) -> ClipSelection:
    """Up to `num` clips of `num_frames` frames `stride` apart, one per video, videos in a seeded random
    order (`stride` 3: every third source frame, as Latte's real FVD clips).

    `keep(video_id)` restricts the candidates (e.g. to videos that have masks). Fewer clips come
    back when the source runs out; the caller decides whether that is acceptable. Frame counts are
    probed by `threads` threads; the result does not depend on it. `random_start=False` starts every
    clip at frame 0, the way generated videos are read.
    """
    cands, _, _ = source.candidates()
    if keep is not None:
        cands = [c for c in cands if keep(c[0])]
    order = sorted(cands)
    rng = random.Random(seed)
    rng.shuffle(order)
    plan = ClipSelection(clips=[], candidates=len(order))

    def probe(path: str) -> int | str:
        try:
            return source.count_frames(path)
        except UnreadableVideo as err:
            return str(err)

    bar = tqdm(total=num, desc=f"pick clips ({source.name})", unit="clip", disable=not progress)
    # Probe ahead in threads (decoders release the GIL, as in VideoSource.scan) but consume in order,
    # so the plan is the same for any thread count; probes not needed are cancelled.
    pool = ThreadPoolExecutor(max_workers=max(1, threads))
    try:
        lengths = pool.map(probe, [c[1] for c in order])
        for (video_id, path, _), length in zip(order, lengths, strict=True):
            if isinstance(length, str):
                plan.unreadable.append(f"{path}: {length}")
            elif length < span(num_frames, stride):
                plan.too_short += 1
            else:
                start = rng.randrange(length - span(num_frames, stride) + 1) if random_start else 0
                plan.clips.append(ClipRef(video_id, path, start, num_frames, stride))
                bar.update()
                if len(plan.clips) >= num:
                    break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return plan


def read_clip(source: VideoSource, clip: ClipRef) -> np.ndarray:
    """The clip's frames as decoded, uint8 [T, H, W, 3]."""
    frames = source.read(clip.path, clip.frames)
    if len(frames) != clip.length:
        raise RuntimeError(f"{clip.path}: decoded {len(frames)} frames, expected {clip.length}")
    return frames


class SquareClips(Dataset):
    """Clip i of a plan as uint8 [T, 3, size, size], preprocessed exactly like `a4g extract`."""

    def __init__(self, source: VideoSource, clips: Sequence[ClipRef], size: int) -> None:
        self.source, self.clips, self.size = source, list(clips), size

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        return square_frames(read_clip(self.source, self.clips[i]), self.size)


def iter_square_clips(
    source: VideoSource, clips: Sequence[ClipRef], size: int, num_workers: int = 0
) -> Iterator[torch.Tensor]:
    """Squared clips in plan order, decoded by `num_workers` worker processes (0: in this process)."""
    dataset = SquareClips(source, clips, size)
    if num_workers == 0:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    yield from DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        multiprocessing_context="spawn",  # never fork a process that holds a detector and threads
    )


def square_video_clips(clips: Iterator[np.ndarray], size: int) -> Iterator[torch.Tensor]:
    """uint8 [T, H, W, 3] clips (e.g. generated videos) -> [T, size, size, 3], squared like real ones."""
    for clip in clips:
        yield square_frames(clip, size).permute(0, 2, 3, 1).contiguous()


# ------------------------------------------------------------------------------------------ masks


def mask_dir(root: str | Path, video_id: str) -> Path:
    """Folder of a video's masks: the video id with its file extension dropped."""
    rel = Path(video_id)
    return Path(root) / (rel.with_suffix("") if rel.suffix else rel)


def has_masks(root: str | Path, video_id: str) -> bool:
    return mask_dir(root, video_id).is_dir()


def read_masks(root: str | Path, clip: ClipRef) -> np.ndarray:
    """Object ids of the clip's frames, int64 [T, H, W], from index PNGs (see module doc)."""
    from PIL import Image

    folder = mask_dir(root, clip.video_id)
    out = []
    for f in clip.frames:
        path = folder / f"{f:05d}.png"
        if not path.is_file():
            raise FileNotFoundError(
                f"mask {path} is missing (video {clip.video_id}, frame {f}); expected {MASK_LAYOUT}"
            )
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DataError(
                    f"{path}: PNG mode {im.mode}; masks must be palette or grayscale index images "
                    "(one integer object id per pixel, 0 = background)"
                )
            out.append(np.asarray(im).astype(np.int64))
    if len({a.shape for a in out}) > 1:
        raise DataError(f"{folder}: mask frames differ in size")
    return np.stack(out)


def square_labels(labels: np.ndarray, frame_hw: tuple[int, int], size: int) -> torch.Tensor:
    """int64 [T, H, W] object ids -> [T, size, size] with `square_frames`' geometry (nearest).

    Masks must have the frames' aspect ratio (any resolution): they are resized to the frames'
    short-side shape and center-cropped exactly as the frames are.
    """
    t, h, w = labels.shape
    fh, fw = frame_hw
    if abs(h * fw - w * fh) > max(h, w, fh, fw):  # allow a pixel of rounding
        raise DataError(f"mask size {w}x{h} does not match the video's aspect ratio ({fw}x{fh})")
    new_h, new_w = short_side_shape(fh, fw, size)
    x = torch.tensor(labels)[:, None].double()  # a copy (labels may be read-only); exact for any object id
    x = F.interpolate(x, size=(new_h, new_w), mode="nearest-exact")[:, 0].long()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[:, top : top + size, left : left + size]
