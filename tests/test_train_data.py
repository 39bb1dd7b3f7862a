"""Training clips from a store: clip planning and refusals, batch content, seeded streams.

The direct shard reader underneath is tested on its own in test_shards.py."""

import dataclasses
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shard_data

from a4g.store import FeatureStore
from a4g.store.fake import make_index, make_schema
from a4g.store.schema import PreprocessSpec
from a4g.train.data import ClipReader, DataError, clip_loader, plan_clips


def test_plan_skips_short_videos_and_refuses_when_none_fit(train_store):
    plan = plan_clips(train_store, frames=12, stride=2)  # span 23 rows of 24
    assert len(plan.videos) == 6 and plan.starts.size == 6 * 2 and plan.skipped_short == 0
    with pytest.raises(DataError, match="no video .* holds a whole clip.*longest video has 24"):
        plan_clips(train_store, frames=13, stride=2)


def test_plan_refusals_name_the_field(train_store, tmp_path):
    with pytest.raises(DataError, match="--align-encoders.*encoders of the store"):
        plan_clips(train_store, frames=4, stride=1, align_encoders=["dinov2_vitb14"])
    schema = make_schema({"v0": 8})
    every2 = schema.model_copy(update={"preprocess": PreprocessSpec(size=32, every=2)})
    fs = FeatureStore.create(tmp_path / "s", every2, make_index({"v0": 8}))
    for shard in range(fs.num_shards):
        fs.write_shard(shard, shard_data(fs, shard))
    with pytest.raises(DataError, match=r"--stride 3 is not a multiple of the store's preprocess.every=2"):
        plan_clips(fs, frames=2, stride=3)
    assert plan_clips(fs, frames=2, stride=4).step == 2
    with pytest.raises(DataError, match="--hflip needs flip twins.*flip=False"):
        plan_clips(fs, frames=2, stride=2, hflip=True)


def test_incomplete_store_refused_unless_allowed(train_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(train_store.path, copy)
    writable = FeatureStore.open(copy, writable=True)
    writable.group["done"][2] = 0  # frames 32..47: the end of video 1 and the start of video 2
    partial = FeatureStore.open(copy)
    with pytest.raises(DataError, match="incomplete.*--allow-incomplete"):
        plan_clips(partial, frames=8, stride=1)
    plan = plan_clips(partial, frames=8, stride=1, allow_incomplete=True)
    last_rows = plan.starts + plan.span - 1
    assert not ((last_rows >= 32) & (plan.starts < 48)).any()  # no clip touches the missing shard
    assert plan.starts.size == 5 * 17 + 1  # 17 starts per 24-frame video; video 1 keeps only start 24
    reader = ClipReader(plan)
    batch = reader.batch(np.random.default_rng(0), 16)
    assert torch.isfinite(batch["latents"]).all()


def test_batch_content_matches_store(train_store):
    plan = plan_clips(train_store, frames=4, stride=3, align_encoders=["sam2.1_tiny"], hflip=True)
    batch = ClipReader(plan).batch(np.random.default_rng(1), 8)
    assert batch["latents"].shape == (8, 4, 4, 4, 4) and batch["targets"].shape == (8, 4, 4, 32)
    assert 0 < batch["flip"].sum() < 8
    sam = slice(*train_store.schema.fusion.slices["sam2.1_tiny"])
    for i in range(8):
        rows = batch["start"][i].item() + 3 * np.arange(4)
        suffix = "_flip" if batch["flip"][i] else ""
        want = train_store.array("targets" + suffix)[:][rows][..., sam]
        np.testing.assert_array_equal(batch["targets"][i].numpy(), want)
        video = batch["video"][i].item()
        assert batch["labels"][i] == train_store.index.labels[video]
        offset, length = train_store.index.offsets[video], train_store.index.lengths[video]
        assert offset <= rows[0] and rows[-1] < offset + length  # a clip never crosses videos


def test_latents_are_fresh_scaled_posterior_samples(train_store):
    plan = plan_clips(train_store, frames=1, stride=1)
    one = dataclasses.replace(plan, videos=plan.videos[:1], starts=plan.starts[:1], bounds=np.array([0, 1]))
    reader = ClipReader(one)
    draws = torch.cat([reader.batch(np.random.default_rng(s), 64)["latents"] for s in range(8)])[:, 0]
    mean, logvar = np.split(train_store.array("latents")[int(one.starts[0])].astype(np.float64), 2)
    scale, std = train_store.schema.vae.scaling_factor, np.exp(0.5 * logvar)
    assert not torch.equal(draws[0], draws[1])  # a new sample every draw
    np.testing.assert_allclose(draws.double().mean(0).numpy(), mean * scale, atol=5 * scale * std.max() / 22)
    np.testing.assert_allclose(draws.double().std(0).numpy(), std * scale, rtol=0.15)


def test_stream_is_seeded_per_rank_and_independent_of_workers(train_store):
    plan = plan_clips(train_store, frames=4, stride=2, hflip=True)

    def take(rank, workers, first=0, n=4):
        loader = clip_loader(plan, batch_size=3, seed=7, rank=rank, num_workers=workers, first_batch=first)
        it = iter(loader)
        return [next(it) for _ in range(n)]

    base = take(0, 0)
    for a, b in zip(base, take(0, 2), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    resumed = take(0, 0, first=2, n=2)
    assert all(torch.equal(resumed[0][k], base[2][k]) for k in base[2])
    other = take(1, 0, n=1)[0]
    assert not torch.equal(other["latents"], base[0]["latents"])


def test_plan_pickles_without_handles(train_store):
    plan = plan_clips(train_store, frames=4, stride=1)
    assert len(pickle.dumps(plan)) < 100_000
    assert Path(plan.store_path).is_dir()
