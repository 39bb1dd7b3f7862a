"""The store's video index: where each video's frames lie on the frames axis, and what was skipped.

Plain numpy, no Zarr import: extraction plans build a :class:`VideoIndex` before any store exists.
:class:`~a4g.video.SkippedVideo` is defined with the video I/O (the sources produce it) and
re-exported here because the index records it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from a4g.errors import StoreError
from a4g.video import SkippedVideo

if TYPE_CHECKING:  # only for annotations: building an index needs no Zarr
    import zarr

__all__ = ["SkippedVideo", "VideoIndex", "read_index", "write_index"]


@dataclass
class VideoIndex:
    """Where each video's frames lie on the store's frames axis (videos laid end to end)."""

    ids: list[str]
    paths: list[str]
    labels: np.ndarray
    lengths: np.ndarray
    classes: list[str] = field(default_factory=list)
    skipped: list[SkippedVideo] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        n = len(self.ids)
        if not (len(self.paths) == len(self.labels) == len(self.lengths) == n):
            raise ValueError("video index columns differ in length")
        if n and self.lengths.min() <= 0:
            raise ValueError("every indexed video needs at least one frame")

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return len(self.ids)

    def videos_in(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """Yield (video number, first local frame, stop local frame) covering frames [start, stop)."""
        offsets = self.offsets
        first = int(np.searchsorted(offsets, start, side="right")) - 1
        for v in range(max(first, 0), len(self.ids)):
            lo = int(offsets[v])
            if lo >= stop:
                break
            a = max(start, lo) - lo
            b = min(stop, lo + int(self.lengths[v])) - lo
            if b > a:
                yield v, a, b


def write_index(group: zarr.Group, index: VideoIndex) -> None:
    """Store `index` in the sub-group ``index`` of a Zarr group: int64 columns plus attributes."""
    sub = group.create_group("index", overwrite=True)  # overwrite: only an unfinished creation's index
    for name, values in (("offset", index.offsets), ("length", index.lengths), ("label", index.labels)):
        sub.create_array(name, shape=(len(values),), chunks=(max(1, len(values)),), dtype="int64")[:] = values
    sub.attrs.update(
        {
            "ids": list(index.ids),
            "paths": list(index.paths),
            "classes": list(index.classes),
            "skipped": [{"path": s.path, "reason": s.reason} for s in index.skipped],
        }
    )


def read_index(group: zarr.Group) -> VideoIndex:
    """The index :func:`write_index` stored; StoreError when it cannot be read or its offsets disagree
    with its lengths (the index is written once at creation: no shard repair can restore it)."""
    try:
        sub = group["index"]
        attrs = dict(sub.attrs)
        index = VideoIndex(
            ids=list(attrs["ids"]),
            paths=list(attrs["paths"]),
            labels=sub["label"][:],
            lengths=sub["length"][:],
            classes=list(attrs.get("classes", [])),
            skipped=[SkippedVideo(**s) for s in attrs.get("skipped", [])],
        )
        offsets = sub["offset"][:]
    except Exception as err:  # noqa: BLE001 - zarr and its codecs raise many types for a damaged file
        raise StoreError(
            f"{group.store_path}: the video index (index/) cannot be read ({type(err).__name__}); "
            "it is damaged beyond shard repair: extract it again into a new --out"
        ) from None
    if not np.array_equal(index.offsets, offsets):
        raise StoreError("store index offsets disagree with lengths; the store is damaged")
    return index
