"""Cached real-side statistics for FVD and FID: ``--real-stats FILE``.

Why: the real side of an evaluation does not change between checkpoints, yet it is the expensive half
(fvd2048_16f: probe and decode 2,048 videos, square 32,768 frames, run I3D). The first evaluation with
``--real-stats FILE`` computes the real mean and covariance as usual and saves them; later ones load
them and skip planning, decoding and the detector on the real side. Measured on the demo (8 clips of
10 frames, real I3D, CPU): see docs/metrics.md.

``--real-stats`` may also name an existing folder: each protocol then gets its own file in it (named
by a hash of the key), so one folder serves every protocol; ``a4g eval curve`` uses one this way.

A cache file is only reused for the *same* protocol: the file records a typed key (:class:`RealStatsKey`:
metric, detector weights' sha256, the real source and a fingerprint of its video list, --num,
--frames, --real-stride, --size, --seed, --real-start). Any field that differs is refused with the
field named, never silently recomputed over the file (which may be someone's 2048-clip statistics).

File: a NumPy ``.npz`` without pickles: ``mu`` [D] and ``sigma`` [D, D] (float64, the biased
covariance of ``frechet.FeatureStats``), ``num`` (samples behind them), and ``meta``, the JSON of the
key plus how the clips were drawn. Written to a temporary file and renamed, so a crash leaves no half
file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from a4g.errors import DataError
from a4g.metrics.frechet import FeatureStats

FLAG = "--real-stats"


class RealStatsKey(BaseModel):
    """Everything that decides the real side's statistics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    detector_sha256: str
    source: str  # the source's name (ucf101, folder, demo, ...)
    root: str  # resolved
    split: str | None
    fold: int | None
    video_list: str  # sha256 over (video id, bytes) of every candidate video
    num: int
    frames: int
    stride: int
    size: int
    seed: int
    real_start: str

    def file_name(self) -> str:
        """The file this key gets inside a ``--real-stats`` folder: one file per protocol."""
        digest = hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]
        return f"{self.metric}-{digest}.npz"


def stats_path(flag_value: Path, key: RealStatsKey) -> Path:
    """``--real-stats`` names a file, or an existing folder that holds one file per protocol."""
    path = Path(flag_value)
    return path / key.file_name() if path.is_dir() else path


FLAGS = {
    "metric": "the metric (fvd / fid)",
    "detector_sha256": "--i3d / --inception (weights)",
    "source": "--real",
    "root": "--real / --data-root",
    "split": "--split",
    "fold": "--fold",
    "video_list": "the real videos (files added, removed or changed)",
    "num": "--num",
    "frames": "--frames",
    "stride": "--real-stride",
    "size": "--size",
    "seed": "--seed",
    "real_start": "--real-start",
}


class CachedStats(NamedTuple):
    stats: FeatureStats
    clips: str  # how the real clips were drawn when the file was made (for the report)


def video_list_fingerprint(source) -> str:
    """sha256 over (video id, size in bytes) of the source's candidates: cheap (no decoding), and it
    changes when a video is added, removed or replaced by a file of another size."""
    cands, _, _ = source.candidates()
    h = hashlib.sha256()
    for video_id, path, _label in sorted(cands):
        h.update(f"{video_id}\t{source.size_of(path)}\n".encode())
    return h.hexdigest()


def load_real_stats(path: Path, key: RealStatsKey) -> CachedStats | None:
    """The cached statistics when ``path`` exists and was made under ``key``; None when it does not exist.

    Raises DataError naming each protocol field that differs, or what is wrong with the file.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            mu, sigma, num = data["mu"], data["sigma"], int(data["num"])
        have = RealStatsKey.model_validate(meta["key"])
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as err:
        raise DataError(
            f"{FLAG} {path} is not a real-statistics file made by `a4g eval` ({type(err).__name__}); "
            "give a new path to make one"
        ) from None
    diff = [
        f"{FLAGS[k]}: file has {v!r}, now {getattr(key, k)!r}"
        for k, v in have.model_dump().items()
        if v != getattr(key, k)
    ]
    if diff:
        raise DataError(
            f"{FLAG} {path} was made under another protocol:\n  "
            + "\n  ".join(diff)
            + f"\nrepeat that protocol, or give {FLAG} a new path (or leave it out) to compute the real side again"
        )
    return CachedStats(FeatureStats.from_mean_cov(mu, sigma, num), meta["clips"])


def save_real_stats(path: Path, key: RealStatsKey, stats: FeatureStats, clips: str) -> Path:
    """Write the statistics and their key atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mu, sigma = stats.mean_cov()
    meta = json.dumps({"key": key.model_dump(), "clips": clips})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, mu=mu, sigma=sigma, num=np.int64(stats.num), meta=np.array(meta))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
