"""Video sources: everything a dataset needs to become (video id, label, frame reader).

`build_source(dataset, data_root)` picks the source by name (`ucf101`, `folder`, `frames`,
`webdataset`, `synthetic`, `demo`) or, given a path, guesses: a .tar file or folder of .tar shards is
`webdataset`, a folder of image folders is `frames`, anything else `folder`.

`demo` and `synthetic` are generated: into --data-root when it is new, empty or an earlier a4g
materialization of the same set (a person's own folder is refused, never written into), else into
``$A4G_CACHE/datasets/NAME``.
"""

from __future__ import annotations

import os
from pathlib import Path

from a4g.errors import ConfigError
from a4g.sources.base import ScanResult, UnreadableVideo, VideoEntry, VideoSource
from a4g.sources.files import FolderSource, UCF101Source
from a4g.sources.frames import IMAGE_EXTENSIONS, FramesSource
from a4g.sources.synthetic import DemoSource, SyntheticSource, default_root
from a4g.sources.webdataset import WebDatasetSource

SOURCES: dict[str, type[VideoSource]] = {
    cls.name: cls
    for cls in (UCF101Source, FolderSource, FramesSource, WebDatasetSource, SyntheticSource, DemoSource)
}

__all__ = [
    "SOURCES",
    "ScanResult",
    "UnreadableVideo",
    "VideoEntry",
    "VideoSource",
    "build_source",
    "default_root",
]


def _guess(path: Path) -> str:
    if path.suffix == ".tar" or (path.is_dir() and any(path.glob("*.tar"))):
        return "webdataset"
    if path.is_dir():
        for p in path.rglob("*"):
            if p.is_file():
                return "frames" if p.suffix.lower() in IMAGE_EXTENSIONS else "folder"
    return "folder"


def build_source(
    dataset: str,
    data_root: str | os.PathLike | None = None,
    split: str | None = None,
    fold: int | None = None,
) -> VideoSource:
    """A source from a dataset name (plus --data-root) or from a path alone."""
    if dataset in SOURCES:
        cls = SOURCES[dataset]
        if data_root is None:
            if cls in (DemoSource, SyntheticSource):
                data_root = default_root(dataset)
            else:
                raise ConfigError(f"--dataset {dataset} needs --data-root pointing at the videos")
        return cls(data_root, split=split, fold=fold)
    path = Path(dataset)
    if not path.exists():
        raise ConfigError(
            f"--dataset {dataset!r} is neither a known source ({', '.join(SOURCES)}) nor an existing path"
        )
    if data_root is not None:
        raise ConfigError("give either --dataset PATH or --dataset NAME --data-root PATH, not both")
    if path.is_file() and path.suffix != ".tar":
        raise ConfigError(
            f"--dataset {dataset} is a file: give a folder of videos (one subfolder per class), a folder "
            "of frame folders, or a WebDataset .tar"
        )
    return SOURCES[_guess(path)](path, split=split, fold=fold)
