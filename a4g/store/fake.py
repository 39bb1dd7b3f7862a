"""Valid schemas and indexes for fake encoders: stores of any geometry without running a model.

The store only cares about geometry (videos, frames, tokens, channels, shard size), so tests and
``benchmarks/store.py`` build their stores from these instead of each spelling out a schema.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from a4g.store import schema
from a4g.store.index import VideoIndex

if TYPE_CHECKING:
    from a4g.store import FeatureStore


def make_schema(
    lengths: Mapping[str, int],
    *,
    encoders: Sequence[tuple[str, int]] = (("enc_a", 32), ("enc_b", 16)),
    grid: tuple[int, int] = (2, 2),
    size: int = 32,
    shard_frames: int = 4,
    flip: bool = False,
    root: str = "/data",
    vae: str = "vae",
) -> schema.StoreSchema:
    """A valid schema for videos ``{id: frames}`` and fake encoders ``(name, channels)``.

    ``vae="tiny"`` names the random-init test VAE, so ``a4g sample --vae tiny`` accepts runs on it.
    """
    specs = [
        schema.EncoderSpec(
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
    videos = sorted(lengths)
    return schema.StoreSchema(
        dataset=schema.DatasetSpec(
            name="test",
            root=root,
            videos=videos,
            video_list_hash=schema.video_list_hash((v, lengths[v], 0) for v in videos),
        ),
        preprocess=schema.PreprocessSpec(size=size),
        encoders=specs,
        fusion=schema.FusionSpec(order=[n for n, _ in encoders], slices=slices),
        vae=schema.VAESpec(
            name=vae, weights_sha256="random", scaling_factor=0.18215, latent_channels=4, downsample=8
        ),
        token_grid=grid,
        layout=schema.LayoutSpec(
            shard_frames=shard_frames, target_channel_chunk=math.gcd(*(c for _, c in encoders))
        ),
        flip=flip,
        code_version="test",
    )


def make_index(lengths: Mapping[str, int]) -> VideoIndex:
    """The index that fits :func:`make_schema` for the same `lengths` (labels alternate 0, 1)."""
    ids = sorted(lengths)
    return VideoIndex(
        ids=ids,
        paths=[f"/data/{i}" for i in ids],
        labels=np.arange(len(ids)) % 2,
        lengths=[lengths[i] for i in ids],
        classes=["a", "b"],
    )


def random_store(
    path: str | os.PathLike, lengths: Mapping[str, int], *, seed: int = 0, **kwargs: Any
) -> FeatureStore:
    """A complete store at ``path`` of standard-normal fp16 content (the same for the same ``seed``),
    with the tiny VAE's spec; ``kwargs`` go to :func:`make_schema`. Trains in a second, no model run.
    """
    from a4g.store import FeatureStore  # the package imports this module's siblings: import late

    store = FeatureStore.create(path, make_schema(lengths, vae="tiny", **kwargs), make_index(lengths))
    for shard in range(store.num_shards):
        start, stop = store.shard_range(shard)
        rng = np.random.default_rng([seed, shard])
        store.write_shard(
            shard,
            {
                name: rng.standard_normal((stop - start, *store.array(name).shape[1:])).astype(np.float16)
                for name in store.array_names
            },
        )
    return store
