"""Run an extraction: decode → preprocess → VAE + encoders → fuse → write whole shards.

Three stages overlap: worker processes decode and preprocess the next shards (a DataLoader with
pinned memory), the main process queues the models in batches, and a background thread writes the
previous shard once its device→host copy (a side stream on a GPU) is done. Every shard is written
whole and then marked done, so a killed run loses only the shards in flight and the same command
resumes where it stopped, producing identical bytes.
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
from a4g.killpoints import kill_point
from a4g.sources import VideoSource, build_source
from a4g.store import FeatureStore, schema_differences
from a4g.store.quant import store_targets
from a4g.store.verify import check_after_extraction, quick_damage
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
        target_dtype: str = "float16",
        pad_batches: bool = False,
    ):
        self.encoders = encoders
        self.vae = vae
        self.token_grid = token_grid
        self.device = device
        self.batch = batch
        self.target_dtype = target_dtype
        self.specs = [with_token_grid(e.spec, token_grid) for e in encoders]
        self.widths = [s.channels for s in self.specs]
        self.pad_batches = pad_batches
        # A side stream for the device->host copies of finished shards (see to_host).
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    @classmethod
    def build(cls, cfg: ExtractConfig, device: torch.device) -> FeatureExtractor:
        vae = create_vae(cfg.vae, random_init=cfg.random_init, device=device, compile=cfg.compile)
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
        return cls(encoders, vae, grid, device, cfg.batch, cfg.target_dtype, pad_batches=cfg.compile)

    @torch.no_grad()
    def encode_targets(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> fused float32 targets [B, tokens, C]."""
        frames, n = self.padded(frames)
        with autocast(self.device):
            tokens = [enc(frames)[:n].float() for enc in self.encoders]
        return fuse(tokens, self.specs, self.token_grid)

    @torch.no_grad()
    def encode_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> float32 VAE posterior parameters [B, 2*C, h, w]."""
        frames, n = self.padded(frames)
        with autocast(self.device):
            return self.vae.encode_moments(frames)[:n].float()

    def padded(self, frames: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Compiled models only: a short batch [n < batch, 3, S, S] grown to `batch` rows by repeating
        its last frame, and n (the rows to keep).

        A compiled model recompiles for every new batch size (a minute or more per model on a GPU
        node), and the last shard of a store is almost always short. Every model here treats frames
        independently, so the extra rows change nothing and are dropped. With --batch not dividing
        --shard-frames every shard ends short and pays the padding; a dividing --batch does not.
        """
        n = frames.shape[0]
        if not self.pad_batches or n >= self.batch:
            return frames, n
        return torch.cat([frames, frames[-1:].expand(self.batch - n, *frames.shape[1:])]), n

    def rows(self, frames: torch.Tensor, flip: bool) -> HostRows:
        """All store arrays for a block of square frames, computed in batches of `self.batch`.

        Results are cast to the store's dtype on the device and copied back once per array, so the
        host does no per-batch conversion and the GPU is not stalled by a copy after every batch. On
        a GPU this returns once the work is queued; ``.wait()`` gives the arrays (see to_host).
        """
        out: dict[str, list[torch.Tensor]] = {}
        for i in range(0, frames.shape[0], self.batch):
            chunk = frames[i : i + self.batch].to(self.device, non_blocking=True)
            views = {"": chunk, "_flip": chunk.flip(-1)} if flip else {"": chunk}
            for suffix, view in views.items():
                out.setdefault("latents" + suffix, []).append(self.encode_latents(view).to(STORE_DTYPE))
                # int8 targets are quantized here, on the device, before the copy to the host
                targets = store_targets(self.encode_targets(view), self.widths, self.target_dtype)
                for name, t in targets.items():
                    out.setdefault(name + suffix, []).append(t)
        return self.to_host({k: torch.cat(v) for k, v in out.items()})

    def to_host(self, arrays: dict[str, torch.Tensor]) -> HostRows:
        """Start the device->host copies of a shard's arrays; HostRows.wait() ends them.

        Why not ``.cpu()``: into pageable memory it makes the main thread wait for the whole shard
        and then for the copy (134 MB of fp16 targets per 256-frame shard at 256 px with DINOv2-B +
        SAM2.1-B+: 256 tokens x 1,024 channels; twice with --hflip), while the GPU idles until the
        next shard is launched. Here the copies go into
        pinned memory on a side stream, behind the shard's kernels, so they overlap the next
        shard's models and only the writer thread waits for them. ``record_stream`` keeps the
        allocator from giving the arrays' memory to the next shard before the copy has read it.
        """
        if self.copy_stream is None:  # CPU (nothing to copy) or MPS: synchronous
            return HostRows({k: v.cpu() for k, v in arrays.items()})
        self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        host = {}
        with torch.cuda.stream(self.copy_stream):
            for name, array in arrays.items():
                host[name] = torch.empty(array.shape, dtype=array.dtype, pin_memory=True)
                host[name].copy_(array, non_blocking=True)
                array.record_stream(self.copy_stream)
        copied = torch.cuda.Event()
        copied.record(self.copy_stream)
        return HostRows(host, copied)


@dataclass
class HostRows:
    """A shard's store arrays on their way to the host: on a GPU the copies may still be running."""

    arrays: dict[str, torch.Tensor]
    copied: torch.cuda.Event | None = None

    def wait(self) -> dict[str, np.ndarray]:
        """The arrays as numpy, once their copies are done (blocks the calling thread only)."""
        if self.copied is not None:
            self.copied.synchronize()
        return {k: v.numpy() for k, v in self.arrays.items()}


def write_when_copied(store: FeatureStore, shard: int, rows: HostRows) -> float:
    """The writer thread's task: wait for the shard's copies, write it, and return when the rows
    were on the host (when the GPU finished the shard: what steady_fps measures)."""
    arrays = rows.wait()
    ready = time.perf_counter()
    kill_point(f"extract:before-write:{shard}")
    store.write_shard(shard, arrays)
    kill_point(f"extract:after-write:{shard}")
    return ready


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
    unsound: tuple[int, ...] = ()
    """Done shards of other ranks that failed the closing quick check (they may be recomputing them)."""


def open_store_for(
    cfg: ExtractConfig, source: VideoSource, extractor: FeatureExtractor, rank: Rank, echo=print
) -> tuple[FeatureStore | None, str]:
    """Rank 0 scans and creates (or resumes) the store; other ranks wait for it and check it fits."""
    encoder_specs = extractor.specs
    if rank.rank != 0:
        store = FeatureStore.wait_for(cfg.out, writer_rank=rank.rank)  # one writer per rank
        mine = store.schema.model_copy(
            update={
                "encoders": encoder_specs,
                "vae": extractor.vae.spec,
                "flip": cfg.hflip,
                "layout": store.schema.layout.model_copy(update={"target_dtype": cfg.target_dtype}),
            }
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
        target_dtype=cfg.target_dtype,
    )
    index = build_index(scan, cfg.every)
    text = describe_plan(schema, index)
    if cfg.dry_run:
        return None, text
    return FeatureStore.open_or_create(cfg.out, schema, index, writer_rank=rank.rank), text


def run_extraction(cfg: ExtractConfig, echo=print) -> ExtractResult:
    """Extract features for every shard this process owns and has not finished yet."""
    rank = Rank.from_env()
    device = resolve_device(cfg.device, rank.local_rank)
    source = build_source(cfg.dataset, cfg.data_root, cfg.split, cfg.fold)
    extractor = FeatureExtractor.build(cfg, device)
    store, plan_text = open_store_for(cfg, source, extractor, rank, echo)
    kill_point("extract:store-open")
    if rank.rank == 0:
        echo(plan_text)
    if store is None:
        return ExtractResult(None, 0, 0, 0.0, plan_text)
    done = set(store.done_shards())
    owned = [s for s in range(store.num_shards) if rank.owns(s)]
    damaged = sorted({d.shard for d in quick_damage(store, [s for s in owned if s in done])})
    if damaged:  # a done shard whose files fail the quick check is recomputed, like one never done
        echo(f"recomputing {len(damaged)} damaged shard(s): {damaged}")
        done -= set(damaged)
    todo = [s for s in owned if s not in done]
    total_frames = sum(b - a for a, b in map(store.shard_range, todo))
    if rank.rank == 0 and done:
        echo(f"resuming: {len(done)} of {store.num_shards} shards already done")
    t0 = time.perf_counter()
    frames_written, first_frames, ready = 0, 0, []
    pending: list[Future] = []
    bar = tqdm(
        total=total_frames,
        unit="frame",
        desc=f"extract r{rank.rank}",
        disable=not cfg.progress or rank.rank != 0,
        smoothing=0.1,
    )
    # `with store` releases the store's writer lock (a4g/store/lock.py) when the shards are written
    with store, ThreadPoolExecutor(max_workers=1, thread_name_prefix="a4g-writer") as writer:
        dataset = ShardFrames(source, store, todo)
        for shard, frames in iterate_shards(dataset, cfg.num_workers, pin=device.type == "cuda"):
            rows = extractor.rows(frames, flip=cfg.hflip)
            first_frames = first_frames or frames.shape[0]
            while len(pending) >= 2:  # bound memory: at most two shards waiting to be written
                ready.append(pending.pop(0).result())
            pending.append(writer.submit(write_when_copied, store, shard, rows))
            frames_written += frames.shape[0]
            bar.update(frames.shape[0])
        ready += [fut.result() for fut in pending]
    bar.close()
    unsound = check_after_extraction(store, owned)  # raises for damage in this rank's shards
    t_end = time.perf_counter()
    steady = None
    if len(ready) > 1 and ready[-1] > ready[0]:  # from the first shard's rows to the last's
        steady = (frames_written - first_frames) / (ready[-1] - ready[0])
    return ExtractResult(store, len(todo), frames_written, t_end - t0, plan_text, steady, tuple(unsound))


def summarize(result: ExtractResult) -> str:
    """The one line `a4g extract` prints when it is done."""
    if result.store is None:
        return "dry run: nothing written"
    s = result.store
    rate = result.frames_written / result.seconds if result.seconds > 0 else math.nan
    done = len(s.done_shards())
    state = (
        "complete"
        if done == s.num_shards and not result.unsound
        else f"{done}/{s.num_shards} shards done (other ranks may still run)"
    )
    if result.unsound:
        state += f", shards {list(result.unsound)} damaged (rerun the command if no other rank is running)"
    return (
        f"wrote {result.shards_written} shards, {result.frames_written} frames in {result.seconds:.1f} s "
        f"({rate:.1f} frames/s); store {s.path}: {state}; fingerprint {s.schema.fingerprint[:16]}"
    )
