"""Sources whose videos are files on disk: class-subfolder trees and the official UCF-101 layout."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from a4g.errors import ConfigError, DataError
from a4g.sources.base import VideoSource
from a4g.video import VIDEO_EXTENSIONS, SkippedVideo, count_frames, is_video_file, read_frames


class VideoFileSource(VideoSource):
    """Base for sources of video files (decoded by :mod:`a4g.video`)."""

    def count_frames(self, path: str) -> int:
        return count_frames(path)

    def read(self, path: str, frames: Sequence[int]) -> np.ndarray:
        return read_frames(path, frames, self.decoder)

    def _rel_id(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


class FolderSource(VideoFileSource):
    """`ROOT/<class>/<video file>`; classes are the sorted subfolder names. Files directly in ROOT
    get label 0 under class ``""`` when there are no subfolders (an unconditional dataset)."""

    name = "folder"

    def candidates(self) -> tuple[list[tuple[str, str, int]], list[str], list[SkippedVideo]]:
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(f"--data-root {root} is not a directory")
        visible = [p for p in root.rglob("*") if not p.name.startswith(".")]  # hidden: partial writes
        files = sorted(p for p in visible if p.is_file())
        broken = [
            SkippedVideo(str(p), "broken link") for p in sorted(visible) if p.is_symlink() and not p.exists()
        ]
        class_dirs = sorted(
            {p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1}
        )
        classes = class_dirs or [""]
        label_of = {c: i for i, c in enumerate(classes)}
        cands, skipped = [], broken
        for p in files:
            parts = p.relative_to(root).parts
            if not is_video_file(p):
                skipped.append(SkippedVideo(str(p), f"not a video file extension ({p.suffix or 'none'})"))
                continue
            cls = parts[0] if len(parts) > 1 else ""
            if cls not in label_of:
                skipped.append(SkippedVideo(str(p), "video outside the class subfolders"))
                continue
            cands.append((self._rel_id(p), str(p), label_of[cls]))
        if not cands:
            raise DataError(f"no video files under {root} (looked for {', '.join(VIDEO_EXTENSIONS)})")
        return cands, classes, skipped


class UCF101Source(VideoFileSource):
    """The official UCF-101 release: `ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi` (or the class
    folders directly in ROOT) and `ucfTrainTestlist/` beside them with `classInd.txt` and
    `trainlist0N.txt` / `testlist0N.txt`. Labels come from classInd.txt (1-based there, 0-based here).
    Without a split the whole set is used."""

    name = "ucf101"

    def _videos_dir(self) -> Path:
        root = Path(self.root)
        return root / "UCF-101" if (root / "UCF-101").is_dir() else root

    def _lists_dir(self) -> Path | None:
        root = Path(self.root)
        for cand in (root / "ucfTrainTestlist", root / "UCF-101" / "ucfTrainTestlist", root):
            if (cand / "classInd.txt").is_file():
                return cand
        return None

    def candidates(self) -> tuple[list[tuple[str, str, int]], list[str], list[SkippedVideo]]:
        videos_dir = self._videos_dir()
        if not videos_dir.is_dir():
            raise ConfigError(f"--data-root {self.root}: no UCF-101 folder found")
        lists = self._lists_dir()
        if lists is not None:
            classes = []
            for line in (lists / "classInd.txt").read_text().splitlines():
                if line.strip():
                    num, name = line.split()
                    if int(num) != len(classes) + 1:
                        raise DataError(f"{lists / 'classInd.txt'}: class numbers are not 1..N in order")
                    classes.append(name)
        else:
            if self.split is not None:
                raise ConfigError(
                    f"--split {self.split} needs classInd.txt and the split lists under {self.root}"
                )
            classes = sorted(p.name for p in videos_dir.iterdir() if p.is_dir())
        label_of = {c: i for i, c in enumerate(classes)}
        wanted: set[str] | None = None
        if self.split is not None:
            if self.split not in ("train", "test"):
                raise ConfigError(f"--split must be train or test for ucf101, got {self.split!r}")
            fold = self.fold or 1
            if fold not in (1, 2, 3):
                raise ConfigError(f"--fold must be 1, 2 or 3 for ucf101, got {fold}")
            list_file = lists / f"{self.split}list0{fold}.txt"  # type: ignore[operator]
            if not list_file.is_file():
                raise DataError(f"split list {list_file} is missing")
            wanted = {line.split()[0] for line in list_file.read_text().splitlines() if line.strip()}
        cands, skipped = [], []
        for cls in classes:
            for p in sorted((videos_dir / cls).glob("*")):
                rel = f"{cls}/{p.name}"
                if wanted is not None and rel not in wanted:
                    continue
                if not is_video_file(p):
                    skipped.append(SkippedVideo(str(p), f"not a video file extension ({p.suffix or 'none'})"))
                    continue
                cands.append((rel, str(p), label_of[cls]))
        if wanted is not None:
            found = {c[0] for c in cands}
            skipped += [
                SkippedVideo(os.path.join(str(videos_dir), r), "listed in the split but missing")
                for r in sorted(wanted - found)
            ]
        if not cands:
            raise DataError(f"no UCF-101 videos found under {videos_dir}")
        return cands, classes, skipped
