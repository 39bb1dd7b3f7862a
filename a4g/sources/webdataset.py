"""Videos inside WebDataset tar shards: members `KEY.mp4` (any video extension) with optional
`KEY.cls` (integer label) or `KEY.json` (`{"label": int}` and/or `{"class": name}`)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from webdataset.tariterators import base_plus_ext

from a4g.errors import DataError
from a4g.sources.base import VideoSource
from a4g.video import VIDEO_EXTENSIONS, SkippedVideo, count_frames, read_frames


@lru_cache(maxsize=64)
def _members(tar_path: str) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return {m.name: m for m in tar.getmembers() if m.isfile()}


def _read_member(tar_path: str, name: str) -> bytes:
    with tarfile.open(tar_path) as tar:
        f = tar.extractfile(_members(tar_path)[name])
        assert f is not None
        return f.read()


class WebDatasetSource(VideoSource):
    """ROOT is a .tar file or a folder of them. A video's id is `<tar name>/<key>`, its path
    `<tar path>::<member>`; frames are decoded from the member's bytes (random access, no unpack)."""

    name = "webdataset"

    def _tars(self) -> list[Path]:
        root = Path(self.root)
        tars = [root] if root.is_file() else sorted(root.glob("*.tar"))
        if not tars:
            raise DataError(f"no .tar shards at {root}")
        return tars

    def candidates(self) -> tuple[list[tuple[str, str, int]], list[str], list[SkippedVideo]]:
        rows: list[tuple[str, str, int | str | None]] = []
        skipped: list[SkippedVideo] = []
        for tar in self._tars():
            try:
                members = _members(str(tar))
            except tarfile.TarError as err:
                skipped.append(SkippedVideo(str(tar), f"not a readable tar ({err})"))
                continue
            groups: dict[str, dict[str, str]] = {}
            for name in members:
                key, ext = base_plus_ext(name)
                if key is not None:
                    groups.setdefault(key, {})[ext.lower()] = name
            for key, files in sorted(groups.items()):
                video = next((files[e] for e in files if ("." + e).endswith(VIDEO_EXTENSIONS)), None)
                if video is None:
                    skipped.append(SkippedVideo(f"{tar}::{key}", "sample has no video member"))
                    continue
                rows.append((f"{tar.name}/{key}", f"{tar}::{video}", self._label(str(tar), files)))
        names = sorted({r[2] for r in rows if isinstance(r[2], str)})
        if names and any(isinstance(r[2], int) for r in rows):
            raise DataError(f"{self.root}: samples mix integer labels and class names")
        label_of = {n: i for i, n in enumerate(names)}
        cands = [
            (vid, path, label_of[lab] if isinstance(lab, str) else int(lab or 0)) for vid, path, lab in rows
        ]
        return cands, names, skipped

    @staticmethod
    def _label(tar: str, files: dict[str, str]) -> int | str | None:
        if "cls" in files:
            return int(_read_member(tar, files["cls"]).decode().strip())
        if "json" in files:
            meta = json.loads(_read_member(tar, files["json"]))
            if "label" in meta:
                return int(meta["label"])
            if "class" in meta:
                return str(meta["class"])
        return None

    def _bytes(self, path: str) -> bytes:
        tar, member = path.split("::", 1)
        return _read_member(tar, member)

    def count_frames(self, path: str) -> int:
        return count_frames(self._bytes(path))

    def size_of(self, path: str) -> int:
        tar, member = path.split("::", 1)
        return _members(tar)[member].size

    def read(self, path: str, frames: Sequence[int]) -> np.ndarray:
        return read_frames(self._bytes(path), frames, self.decoder)
