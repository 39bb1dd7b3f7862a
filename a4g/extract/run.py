"""Run an extraction: decode → preprocess → VAE + encoders → fuse → write whole shards.

Three stages overlap: worker processes decode and preprocess the next shards (a DataLoader with
pinned memory), the main process runs the models in batches, and a background thread writes the
previous shard. Every shard is written whole and then marked done, so a killed run loses only the
shards in flight and the same command resumes where it stopped, producing identical bytes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from a4g.encoders import FrozenEncoder, create_encoder, create_vae
from a4g.encoders.dinov2 import dino_res_for
from a4g.encoders.fusion import fuse, fusion_spec, with_token_grid
from a4g.encoders.preprocess import square_frames
from a4g.errors import DataError, StoreError
from a4g.extract.config import ExtractConfig
from a4g.extract.plan import FramePlan, Rank, build_index, build_schema, describe_plan
from a4g.geometry import token_grid_for
from a4g.sources import VideoSource, build_source
from a4g.store import FeatureStore, schema_differences
from a4g.torchutil import autocast, resolve_device

STORE_DTYPE = torch.float16
"""What the store holds (LayoutSpec.dtype default): cast on the device, identical rounding to numpy."""


class FeatureExtractor:
    """The models of one extraction and the math from square frames to store rows."""

    def __init__(
        self,
        encoders: list[FrozenEncoder],
        vae,
        token_grid: tuple[int, int],
        device: torch.device,
        batch: int,
    ):
        self.encoders = encoders
        self.vae = vae
        self.token_grid = token_grid
        self.device = device
        self.batch = batch
        self.specs = [with_token_grid(e.spec, token_grid) for e in encoders]

    @classmethod
    def build(cls, cfg: ExtractConfig, device: torch.device) -> FeatureExtractor:
        vae = create_vae(cfg.vae, random_init=cfg.random_init, device=device)
        grid = token_grid_for(cfg.size, vae.spec.downsample)
        dino_res = dino_res_for(grid, cfg.encoders)
        encoders = [
            create_encoder(
                name,
                weights=cfg.weights.get(name),
                weights_dir=cfg.weights_dir,
                random_init=cfg.random_init,
                dino_res=dino_res,
                sam_res=cfg.sam_res,
                sam_output=cfg.sam_output,
                device=device,
                compile=cfg.compile,
            )
            for name in cfg.encoders
        ]
        return cls(encoders, vae, grid, device, cfg.batch)

    @torch.no_grad()
    def encode_targets(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> fused float32 targets [B, tokens, C]."""
        with autocast(self.device):
            tokens = [enc(frames).float() for enc in self.encoders]
        return fuse(tokens, self.specs, self.token_grid)

    @torch.no_grad()
    def encode_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> float32 VAE posterior parameters [B, 2*C, h, w]."""
        with autocast(self.device):
            return self.vae.encode_moments(frames).float()

    def rows(self, frames: torch.Tensor, flip: bool) -> dict[str, np.ndarray]:
        """All store arrays for a block of square frames, computed in batches of `self.batch`.

        Results are cast to the store's fp16 on the device and copied back once per array, so the
        host does no per-batch conversion and the GPU is not stalled by a copy after every batch.
        """
        out: dict[str, list[torch.Tensor]] = {}
        for i in range(0, frames.shape[0], self.batch):
            chunk = frames[i : i + self.batch].to(self.device, non_blocking=True)
            views = {"": chunk, "_flip": chunk.flip(-1)} if flip else {"": chunk}
            for suffix, view in views.items():
                out.setdefault("latents" + suffix, []).append(self.encode_latents(view).to(STORE_DTYPE))
                out.setdefault("targets" + suffix, []).append(self.encode_targets(view).to(STORE_DTYPE))
        return {k: torch.cat(v).cpu().numpy() for k, v in out.items()}


class ShardFrames(Dataset):
    """Square uint8 frames of whole shards, decoded in DataLoader workers."""

    def __init__(self, source: VideoSource, store: FeatureStore, shards: list[int]):
        self.source = source
        self.index = store.index
        self.plan = FramePlan(store.schema.preprocess.every)
        self.size = store.schema.preprocess.size
        self.interpolation = store.schema.preprocess.interpolation
        self.bounds = [store.shard_range(s) for s in shards]
        self.shards = shards

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor]:
        start, stop = self.bounds[k]
        parts = []
        for v, a, b in self.index.videos_in(start, stop):
            frames = self.source.read(self.index.paths[v], self.plan.source_frames(a, b))
            parts.append(square_frames(frames, self.size, self.interpolation))
        block = torch.cat(parts)
        if block.shape[0] != stop - start:
            raise RuntimeError(
                f"shard {self.shards[k]}: decoded {block.shape[0]} frames, expected {stop - start}"
            )
        return self.shards[k], block


def iterate_shards(dataset: ShardFrames, num_workers: int, pin: bool) -> Iterator[tuple[int, torch.Tensor]]:
    num_workers = min(num_workers, len(dataset), os.cpu_count() or 1)  # more than cores or shards only costs
    if num_workers == 0:
        yield from (dataset[k] for k in range(len(dataset)))
        return
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin,
        prefetch_factor=2,
        multiprocessing_context="spawn",  # no fork of a process that holds models and threads
        persistent_workers=False,
    )
    yield from loader


@dataclass
class ExtractResult:
    store: FeatureStore | None
    shards_written: int
    frames_written: int
    seconds: float
    plan_text: str
    steady_fps: float | None = None
    """Frames/s of the shard loop between the first and the last shard computed: throughput without
    model and worker start-up or the final write-back (None with fewer than two shards)."""


def open_store_for(
    cfg: ExtractConfig, source: VideoSource, extractor: FeatureExtractor, rank: Rank, echo=print
) -> tuple[FeatureStore | None, str]:
    """Rank 0 scans and creates (or resumes) the store; other ranks wait for it and check it fits."""
    encoder_specs = extractor.specs
    if rank.rank != 0:
        store = FeatureStore.wait_for(cfg.out)
        mine = store.schema.model_copy(
            update={"encoders": encoder_specs, "vae": extractor.vae.spec, "flip": cfg.hflip}
        )
        diffs = schema_differences(store.schema, mine)
        if diffs:
            raise StoreError(
                f"rank {rank.rank}: store does not match this configuration:\n  " + "\n  ".join(diffs)
            )
        return store, describe_plan(store.schema, store.index)
    scan = source.scan(limit=cfg.limit_videos, progress=cfg.progress)
    if not scan.videos:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in scan.skipped[:5])
        raise DataError(f"no usable videos in {source.root} ({reasons})")
    schema = build_schema(
        source=source,
        dataset_name=cfg.dataset if not Path(cfg.dataset).exists() else source.name,
        scan=scan,
        size=cfg.size,
        every=cfg.every,
        encoder_specs=encoder_specs,
        fusion=fusion_spec(encoder_specs),
        vae_spec=extractor.vae.spec,
        shard_frames=cfg.shard_frames,
        flip=cfg.hflip,
    )
    index = build_index(scan, cfg.every)
    text = describe_plan(schema, index)
    if cfg.dry_run:
        return None, text
    return FeatureStore.open_or_create(cfg.out, schema, index), text


def run_extraction(cfg: ExtractConfig, echo=print) -> ExtractResult:
    """Extract features for every shard this process owns and has not finished yet."""
    rank = Rank.from_env()
    device = resolve_device(cfg.device, rank.local_rank)
    source = build_source(cfg.dataset, cfg.data_root, cfg.split, cfg.fold)
    extractor = FeatureExtractor.build(cfg, device)
    store, plan_text = open_store_for(cfg, source, extractor, rank, echo)
    if rank.rank == 0:
        echo(plan_text)
    if store is None:
        return ExtractResult(None, 0, 0, 0.0, plan_text)
    done = set(store.done_shards())
    todo = [s for s in range(store.num_shards) if rank.owns(s) and s not in done]
    total_frames = sum(b - a for a, b in map(store.shard_range, todo))
    if rank.rank == 0 and done:
        echo(f"resuming: {len(done)} of {store.num_shards} shards already done")
    t0 = time.perf_counter()
    t_first, t_last, first_frames = None, None, 0
    frames_written = 0
    pending: list[Future] = []
    bar = tqdm(
        total=total_frames,
        unit="frame",
        desc=f"extract r{rank.rank}",
        disable=not cfg.progress or rank.rank != 0,
        smoothing=0.1,
    )
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="a4g-writer") as writer:
        dataset = ShardFrames(source, store, todo)
        for shard, frames in iterate_shards(dataset, cfg.num_workers, pin=device.type == "cuda"):
            rows = extractor.rows(frames, flip=cfg.hflip)
            t_last = time.perf_counter()
            if t_first is None:
                t_first, first_frames = t_last, frames.shape[0]
            while len(pending) >= 2:  # bound memory: at most two shards waiting to be written
                pending.pop(0).result()
            pending.append(writer.submit(store.write_shard, shard, rows))
            frames_written += frames.shape[0]
            bar.update(frames.shape[0])
        for fut in pending:
            fut.result()
    bar.close()
    t_end = time.perf_counter()
    steady = None
    if t_first is not None and t_last > t_first:
        steady = (frames_written - first_frames) / (t_last - t_first)
    return ExtractResult(store, len(todo), frames_written, t_end - t0, plan_text, steady)


def summarize(result: ExtractResult) -> str:
    """The one line `a4g extract` prints when it is done."""
    if result.store is None:
        return "dry run: nothing written"
    s = result.store
    rate = result.frames_written / result.seconds if result.seconds > 0 else math.nan
    done = len(s.done_shards())
    state = (
        "complete"
        if done == s.num_shards
        else f"{done}/{s.num_shards} shards done (other ranks may still run)"
    )
    return (
        f"wrote {result.shards_written} shards, {result.frames_written} frames in {result.seconds:.1f} s "
        f"({rate:.1f} frames/s); store {s.path}: {state}; fingerprint {s.schema.fingerprint[:16]}"
    )
