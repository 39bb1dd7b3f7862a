"""Videos stored as folders of image frames (SkyTimelapse, Taichi and many preprocessed sets)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from a4g.errors import ConfigError, DataError, UnreadableVideo
from a4g.sources.base import VideoSource
from a4g.video import SkippedVideo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


class FramesSource(VideoSource):
    """Every folder under ROOT that directly holds image files is one video; frames are its images
    in file-name order. Unlabeled (label 0): these datasets are used unconditionally."""

    name = "frames"

    def pick_decoder(self) -> str:
        return "pillow"

    def candidates(self) -> tuple[list[tuple[str, str, int]], list[str], list[SkippedVideo]]:
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(f"--data-root {root} is not a directory")
        folders = sorted({p.parent for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS})
        if not folders:
            raise DataError(f"no image frames under {root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        cands = [((f.relative_to(root).as_posix() or "."), str(f), 0) for f in folders]
        return cands, [""], []

    def count_frames(self, path: str) -> int:
        files = _frame_files(Path(path))
        if not files:
            raise UnreadableVideo("zero frames")
        for f in (files[0], files[-1]):
            try:
                with Image.open(f) as im:
                    im.verify()
            except Exception:
                raise UnreadableVideo(f"frame {f.name} is not a readable image") from None
        return len(files)

    def size_of(self, path: str) -> int:
        return sum(f.stat().st_size for f in _frame_files(Path(path)))

    def read(self, path: str, frames: Sequence[int]) -> np.ndarray:
        files = _frame_files(Path(path))
        out = []
        for i in frames:
            with Image.open(files[int(i)]) as im:
                out.append(np.asarray(im.convert("RGB")))
        shapes = {a.shape for a in out}
        if len(shapes) > 1:
            raise UnreadableVideo(f"{path}: frames differ in size {sorted(shapes)}")
        return np.stack(out)
