"""Plan an extraction: which videos, which frames, what schema, which shards this process owns.

Work units are whole shards (see `a4g.store`): a shard is written by exactly one process, so any
launcher (torchrun, accelerate, a Slurm array) can split the shard list without coordination.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import get_args

import a4g
from a4g.encoders.fusion import target_channel_chunk
from a4g.extract.config import TargetDtype
from a4g.geometry import token_grid_for
from a4g.sources import ScanResult, VideoSource
from a4g.store import VideoIndex, human_bytes
from a4g.store.schema import (
    DatasetSpec,
    EncoderSpec,
    FusionSpec,
    LayoutSpec,
    PreprocessSpec,
    StoreSchema,
    VAESpec,
    video_list_hash,
)


@dataclass(frozen=True)
class Rank:
    """This process's place among extraction workers."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Rank:
        """torchrun / accelerate (RANK, WORLD_SIZE, LOCAL_RANK) or a Slurm array job."""
        env = os.environ
        if "WORLD_SIZE" in env:
            return cls(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
        if "SLURM_ARRAY_TASK_COUNT" in env:
            task = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            return cls(task, int(env["SLURM_ARRAY_TASK_COUNT"]), 0)
        return cls()

    def owns(self, shard: int) -> bool:
        return shard % self.world == self.rank


@dataclass
class FramePlan:
    """Which source frames become store frames: frame numbers 0, every, 2*every, ... of each video."""

    every: int

    def stored_length(self, num_frames: int) -> int:
        return math.ceil(num_frames / self.every)

    def source_frames(self, start: int, stop: int) -> list[int]:
        """Source frame numbers of stored frames [start, stop) of one video."""
        return list(range(start * self.every, stop * self.every, self.every))


def build_index(scan: ScanResult, every: int) -> VideoIndex:
    plan = FramePlan(every)
    return VideoIndex(
        ids=[v.video_id for v in scan.videos],
        paths=[v.path for v in scan.videos],
        labels=[v.label for v in scan.videos],
        lengths=[plan.stored_length(v.num_frames) for v in scan.videos],
        classes=scan.classes,
        skipped=scan.skipped,
    )


def build_schema(
    *,
    source: VideoSource,
    dataset_name: str,
    scan: ScanResult,
    size: int,
    every: int,
    encoder_specs: list[EncoderSpec],
    fusion: FusionSpec,
    vae_spec: VAESpec,
    shard_frames: int,
    flip: bool,
    dtype: str = "float16",
    target_dtype: str = "float16",
) -> StoreSchema:
    """The schema of the store this extraction writes (everything that decides its bytes)."""
    return StoreSchema(
        dataset=DatasetSpec(
            name=dataset_name,
            root=str(Path(source.root).resolve()),
            split=source.split,
            fold=source.fold,
            videos=[v.video_id for v in scan.videos],
            video_list_hash=video_list_hash((v.video_id, v.num_frames, v.size_bytes) for v in scan.videos),
        ),
        preprocess=PreprocessSpec(size=size, every=every, decoder=source.decoder),
        encoders=encoder_specs,
        fusion=fusion,
        vae=vae_spec,
        token_grid=token_grid_for(size, vae_spec.downsample),
        layout=LayoutSpec(
            dtype=dtype,
            target_dtype=target_dtype,
            shard_frames=shard_frames,
            target_channel_chunk=target_channel_chunk(encoder_specs),
        ),
        flip=flip,
        code_version=a4g.__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def describe_plan(schema: StoreSchema, index: VideoIndex) -> str:
    """The storage estimate printed before extraction (and all that --dry-run prints)."""
    per_frame = schema.bytes_per_frame()
    total = per_frame * index.num_frames
    shards = math.ceil(index.num_frames / schema.layout.shard_frames) if index.num_frames else 0
    enc = ", ".join(f"{e.name} ({e.channels} ch @ {e.input_size}px)" for e in schema.encoders)
    return "\n".join(
        [
            f"videos        {len(index)} usable, {len(index.skipped)} skipped",
            f"frames        {index.num_frames} (every {schema.preprocess.every}) at {schema.preprocess.size}px",
            f"encoders      {enc}",
            f"targets       {schema.num_tokens} tokens x {schema.target_channels} ch "
            f"(grid {schema.token_grid[0]}x{schema.token_grid[1]}), {schema.layout.target_dtype}"
            + (" + a float16 scale per token and encoder" if schema.layout.target_dtype == "int8" else ""),
            f"latents       {2 * schema.vae.latent_channels} x {schema.latent_size[0]} x {schema.latent_size[1]} "
            f"(mean ‖ logvar)" + (", with flip twins" if schema.flip else ""),
            f"storage       {human_bytes(per_frame)}/frame, {human_bytes(total)} total before compression, "
            f"{shards} shards of {schema.layout.shard_frames} frames (this run; all choices below)",
            *storage_table(schema, index.num_frames),
        ]
    )


def storage_table(schema: StoreSchema, frames: int) -> list[str]:
    """Per-frame and total bytes (before compression) for each target dtype, with and without --hflip,
    so the choice is made before any GPU hour is spent."""
    rows = [f"  {'--target-dtype':<16}{'no flip: per frame / total':<32}--hflip: per frame / total"]
    for dtype in get_args(TargetDtype):
        cells = []
        for flip in (False, True):
            layout = schema.layout.model_copy(update={"target_dtype": dtype})
            per = schema.model_copy(update={"flip": flip, "layout": layout}).bytes_per_frame()
            cells.append(f"{human_bytes(per)} / {human_bytes(per * frames)}")
        rows.append(f"  {dtype:<16}{cells[0]:<32}{cells[1]}")
    return rows
