"""The one interface every video source implements: list videos, then read frames by number."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from a4g.errors import UnreadableVideo
from a4g.video import SkippedVideo, decoder_name


@dataclass(frozen=True)
class VideoEntry:
    """One usable video. `num_frames` is the number of frames that really decode."""

    video_id: str
    path: str
    label: int
    num_frames: int
    size_bytes: int


@dataclass
class ScanResult:
    """Usable videos sorted by id, the videos that were skipped with reasons, and the class names."""

    videos: list[VideoEntry]
    skipped: list[SkippedVideo] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


class VideoSource(ABC):
    """A collection of videos. Subclasses decide how videos are found and how frames are decoded."""

    name: str = "source"

    def __init__(self, root: str | os.PathLike, split: str | None = None, fold: int | None = None):
        self.root = str(root)
        self.split = split
        self.fold = fold
        self.decoder = self.pick_decoder()
        """Which decoder reads frames, fixed here so DataLoader workers use the same one (the
        store records it; see a4g.video)."""

    def pick_decoder(self) -> str:
        return decoder_name()

    @abstractmethod
    def candidates(self) -> tuple[list[tuple[str, str, int]], list[str], list[SkippedVideo]]:
        """Return ((video id, path, label) per candidate, class names, videos skipped while listing)."""

    @abstractmethod
    def count_frames(self, path: str) -> int:
        """Number of decodable frames; raise UnreadableVideo with a reason otherwise."""

    @abstractmethod
    def read(self, path: str, frames: Sequence[int]) -> np.ndarray:
        """Decode frames (sorted frame numbers) of the video at `path` as uint8 [T, H, W, 3] RGB."""

    def size_of(self, path: str) -> int:
        return os.path.getsize(path)

    def scan(self, limit: int | None = None, progress: bool = False, threads: int = 8) -> ScanResult:
        """Probe every candidate (in threads: decoders release the GIL); unreadable ones become
        SkippedVideo, never an exception."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        cands, classes, skipped = self.candidates()
        cands = sorted(cands)
        if limit is not None:
            cands = cands[:limit]

        def probe(cand: tuple[str, str, int]) -> VideoEntry | SkippedVideo:
            vid, path, label = cand
            try:
                n = self.count_frames(path)
                if n <= 0:
                    raise UnreadableVideo("zero frames")
            except UnreadableVideo as err:
                return SkippedVideo(path=path, reason=str(err))
            return VideoEntry(vid, path, label, n, self.size_of(path))

        videos: list[VideoEntry] = []
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            results = pool.map(probe, cands)
            for item in tqdm(
                results, total=len(cands), desc=f"scan {self.name}", unit="video", disable=not progress
            ):
                (videos if isinstance(item, VideoEntry) else skipped).append(item)
        return ScanResult(videos=videos, skipped=sorted(skipped, key=lambda s: s.path), classes=classes)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "root": self.root,
            "split": self.split,
            "fold": self.fold,
            "decoder": self.decoder,
        }
