"""Random training clips from a feature store: fresh VAE posterior samples plus aligned encoder targets.

Sampling follows Latte: pick a video uniformly, then a uniform start, then ``frames`` frames
``stride`` source frames apart. The store keeps one source frame in ``every``, so the stride must be
a multiple of ``every`` and the clip steps ``stride // every`` store rows.

Short videos: a video with fewer rows than a clip spans, ``(frames - 1) * step + 1``, is **skipped**
(reported, never padded: repeating frames would teach the model frozen motion that is not in the
data). If no video is long enough the plan is refused with the longest length and what to change.

:class:`ClipDataset` offers the same clips (same plan, same validity rules) as a map-style dataset for
other people's training loops (``from a4g import ClipDataset``).

Every batch is a pure function of ``(seed, rank, batch number)``: workers take batch numbers
round-robin (the order the DataLoader returns them), so the stream is the same for any worker count
and a resumed run continues it exactly by starting at the batch it stopped at.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from a4g.errors import DataError
from a4g.store import FeatureStore, read_rows
from a4g.store.quant import SCALES, WIDTHS, dequantize, encoder_widths
from a4g.store.schema import VAESpec
from a4g.store.shards import ShardedRows, open_rows, worker_start_method

__all__ = [
    "Batch",
    "ClipDataset",
    "ClipPlan",
    "ClipReader",
    "ClipStream",
    "DataError",
    "clip_loader",
    "describe",
    "plan_clips",
]

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClipPlan:
    """Which clips can be drawn, computed once from a store; plain data (pickled to workers).

    ``starts[bounds[v]:bounds[v + 1]]`` are the valid first rows of the v-th usable video.
    """

    store_path: str
    frames: int
    step: int
    videos: np.ndarray
    labels: np.ndarray
    starts: np.ndarray
    bounds: np.ndarray
    channel_cols: tuple[tuple[int, int], ...]
    """Inner-chunk column ranges of the targets to read (one per aligned encoder, store order)."""
    channel_width: int
    target_channels: int
    vae: VAESpec
    """Scaling and shift from VAE latents to what the model trains on (``VAESpec.to_model_latents``)."""
    latent_channels: int
    latent_size: tuple[int, int]
    hflip: bool
    skipped_short: int
    skipped_incomplete: int
    scale_cols: tuple[tuple[int, int], ...] = ()
    """int8 stores: columns of ``target_scales`` to read (one per aligned encoder); empty for float16."""
    target_widths: tuple[int, ...] = ()
    """int8 stores: channels of each aligned encoder, to dequantize on the training device."""

    @property
    def span(self) -> int:
        """Store rows from the first to the last frame of a clip, inclusive."""
        return (self.frames - 1) * self.step + 1


def plan_clips(
    store: FeatureStore,
    *,
    frames: int,
    stride: int,
    align_encoders: Sequence[str] | None = None,
    hflip: bool = False,
    allow_incomplete: bool = False,
) -> ClipPlan:
    """Check the request against the store and list every valid clip start; raises :class:`DataError`."""
    schema = store.schema
    wanted = _check_request(store, frames, stride, align_encoders, hflip, allow_incomplete)
    step = stride // schema.preprocess.every
    span = (frames - 1) * step + 1
    videos, starts, bounds, short, incomplete = _clip_starts(store, span)
    if not videos:
        longest = int(store.index.lengths.max()) if len(store.index) else 0
        raise DataError(
            f"no video of {store.path} holds a whole clip of --frames {frames} at --stride {stride} "
            f"({span} store rows; longest video has {longest}, {incomplete} more lie in unfinished shards); "
            "use fewer --frames or a smaller --stride"
        )
    slices = schema.fusion.slices
    width = schema.layout.target_channel_chunk
    cols = tuple((slices[n][0] // width, slices[n][1] // width) for n in schema.encoder_names if n in wanted)
    return ClipPlan(
        store_path=str(store.path),
        frames=frames,
        step=step,
        videos=np.asarray(videos, np.int64),
        labels=store.index.labels.astype(np.int64),
        starts=np.concatenate(starts).astype(np.int64),
        bounds=np.asarray(bounds, np.int64),
        channel_cols=cols,
        channel_width=width,
        target_channels=sum(b - a for a, b in cols) * width,
        vae=schema.vae,
        latent_channels=schema.vae.latent_channels,
        latent_size=tuple(schema.latent_size),
        hflip=hflip,
        skipped_short=short,
        skipped_incomplete=incomplete,
        **_quantized_columns(schema, wanted),
    )


def _quantized_columns(schema, wanted: Sequence[str]) -> dict[str, tuple]:
    """What an int8 store's loader reads besides the values: each aligned encoder's scale column."""
    if schema.layout.target_dtype != "int8":
        return {}
    picked = [i for i, n in enumerate(schema.encoder_names) if n in wanted]
    return {
        "scale_cols": tuple((i, i + 1) for i in picked),
        "target_widths": tuple(encoder_widths(schema, wanted)),
    }


def _check_request(
    store: FeatureStore,
    frames: int,
    stride: int,
    align_encoders: Sequence[str] | None,
    hflip: bool,
    allow_incomplete: bool,
) -> list[str]:
    """Refuse what the store cannot serve, naming the flag; returns the encoders to align to."""
    schema = store.schema
    every = schema.preprocess.every
    if frames < 1:
        raise DataError(f"--frames must be >= 1, got {frames}")
    if stride < 1 or stride % every:
        raise DataError(
            f"--stride {stride} is not a multiple of the store's preprocess.every={every} (the store keeps "
            f"one source frame in {every}); use --stride {every}, {2 * every}, {3 * every}, ..."
        )
    if hflip and not schema.flip:
        raise DataError(
            f"--hflip needs flip twins, but {store.path} has none (field flip=False); "
            "re-extract with `a4g extract --hflip`, or train without --hflip"
        )
    names = list(schema.encoder_names)
    wanted = names if align_encoders is None else list(align_encoders)
    if not wanted or any(n not in names for n in wanted):
        raise DataError(f"--align-encoders {wanted}: field encoders of the store is {names}; pick from those")
    done = store.done_mask()
    if not done.all() and not allow_incomplete:
        raise DataError(
            f"{store.path} is incomplete ({int(done.sum())}/{done.size} shards done); finish it by "
            "rerunning `a4g extract`, or pass --allow-incomplete to train on the done shards"
        )
    return wanted


def _clip_starts(store: FeatureStore, span: int) -> tuple[list[int], list[np.ndarray], list[int], int, int]:
    """Per usable video, the first rows of clips spanning `span` rows that lie wholly in done shards.

    Returns (videos, starts per video, cumulative bounds, videos too short, videos without a done clip).
    """
    row_done = np.repeat(store.done_mask(), store.schema.layout.shard_frames)[: store.num_frames]
    cum = np.concatenate([[0], np.cumsum(row_done)])
    index = store.index
    videos, starts, bounds = [], [], [0]
    short = incomplete = 0
    for v, (offset, length) in enumerate(zip(index.offsets.tolist(), index.lengths.tolist(), strict=True)):
        if length < span:
            short += 1
            continue
        first = np.arange(offset, offset + length - span + 1)
        ok = first[(cum[first + span] - cum[first]) == span]
        if ok.size == 0:
            incomplete += 1
            continue
        videos.append(v)
        starts.append(ok)
        bounds.append(bounds[-1] + ok.size)
    return videos, starts, bounds, short, incomplete


def describe(plan: ClipPlan) -> str:
    """One line for the training log."""
    text = (
        f"{len(plan.videos)} videos, {plan.starts.size} clip starts, {plan.frames} frames every "
        f"{plan.step} store rows, {plan.target_channels} target channels"
    )
    if plan.skipped_short:
        text += f"; skipped {plan.skipped_short} videos shorter than {plan.span} rows"
    if plan.skipped_incomplete:
        text += f"; skipped {plan.skipped_incomplete} videos without a clip in done shards"
    return text


class ClipReader:
    """Reads clips of one plan; opens the store on first use, in whichever process uses it."""

    def __init__(self, plan: ClipPlan) -> None:
        self.plan = plan
        self._arrays: dict[str, ShardedRows | None] = {}
        self._store: FeatureStore | None = None

    def _rows(
        self, name: str, rows: np.ndarray, cols: tuple[int, int] | None, width: int | None = None
    ) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = open_rows(self.plan.store_path, name)
        fast = self._arrays[name]
        if fast is not None:
            return fast.read(rows, cols)
        if self._store is None:  # another layout or a remote store: read through zarr
            self._store = FeatureStore.open(self.plan.store_path)
        array = self._store.array(name)
        order = np.argsort(rows, kind="stable")
        if cols is None:
            data = read_rows(array, rows[order])
        else:
            w = width or self.plan.channel_width
            data = array.get_orthogonal_selection((rows[order], slice(None), slice(cols[0] * w, cols[1] * w)))
        out = np.empty_like(data)
        out[order] = data
        return out

    def targets(
        self, name: str, rows: np.ndarray, cols: tuple | None = None, width: int | None = None
    ) -> np.ndarray:
        """Targets of the aligned encoders only, concatenated in store order (``cols``/``width``: another
        array's columns, e.g. the int8 scales)."""
        cols = cols or self.plan.channel_cols
        if len(cols) == 1 or all(a[1] == b[0] for a, b in itertools.pairwise(cols)):
            return self._rows(name, rows, (cols[0][0], cols[-1][1]), width)
        return np.concatenate([self._rows(name, rows, c, width) for c in cols], axis=-1)

    def batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """Draw ``batch_size`` clips: video uniform, start uniform, fresh posterior sample, optional flip."""
        p = self.plan
        pick = rng.integers(len(p.videos), size=batch_size)
        lo, hi = p.bounds[pick], p.bounds[pick + 1]
        first = p.starts[rng.integers(lo, hi)]
        flip = rng.random(batch_size) < 0.5 if p.hflip else np.zeros(batch_size, bool)
        moments, targets, scales = self.read_clips(first, flip)
        noise = rng.standard_normal((moments.shape[0], p.latent_channels, *p.latent_size), dtype=np.float32)
        z = p.vae.to_model_latents(posterior_sample(moments, noise))
        b, f = batch_size, p.frames
        return {
            "latents": torch.from_numpy(z.reshape(b, f, *z.shape[1:])),
            "targets": torch.from_numpy(targets.reshape(b, f, *targets.shape[1:])),
            "labels": torch.from_numpy(p.labels[p.videos[pick]]),
            "video": torch.from_numpy(p.videos[pick]),
            "start": torch.from_numpy(first),
            "flip": torch.from_numpy(flip),
        } | self._quantized(scales, b, f)

    def _quantized(self, scales: np.ndarray | None, b: int, f: int) -> Batch:
        """int8 stores ship their scales and encoder widths; ``batch_to_device`` dequantizes on the device."""
        if scales is None:
            return {}
        return {
            SCALES: torch.from_numpy(scales.reshape(b, f, *scales.shape[1:])),
            WIDTHS: torch.tensor(self.plan.target_widths, dtype=torch.int64),
        }

    def clips(self, first: np.ndarray, flip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The clips starting at store rows ``first`` ``[B]`` (mirrored where ``flip`` ``[B]``): posterior
        moments ``[B*F, 2C, h, w]`` float32 and targets ``[B*F, N, C_t]``, frames in clip order
        (int8 stores: dequantized here to float32)."""
        moments, targets, scales = self.read_clips(first, flip)
        if scales is not None:
            q, s = torch.from_numpy(targets), torch.from_numpy(scales)
            targets = dequantize(q, s, self.plan.target_widths).numpy()
        return moments, targets

    def read_clips(
        self, first: np.ndarray, flip: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`clips` as stored: int8 stores give int8 targets and float16 scales ``[B*F, N, E]``."""
        p = self.plan
        rows = (first[:, None] + p.step * np.arange(p.frames)[None, :]).reshape(-1)
        flip_rows = np.repeat(flip, p.frames)
        moments = np.empty((rows.size, 2 * p.latent_channels, *p.latent_size), np.float32)
        targets = scales = None
        for suffix, sel in (("", ~flip_rows), ("_flip", flip_rows)):
            if not sel.any():
                continue
            moments[sel] = self._rows("latents" + suffix, rows[sel], None)
            t = self.targets("targets" + suffix, rows[sel])
            if targets is None:
                targets = np.empty((rows.size, *t.shape[1:]), t.dtype)
            targets[sel] = t
            if p.scale_cols:
                sc = self.targets(SCALES + suffix, rows[sel], p.scale_cols, width=1)
                if scales is None:
                    scales = np.empty((rows.size, *sc.shape[1:]), sc.dtype)
                scales[sel] = sc
        return moments, targets, scales


def posterior_sample(moments: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``mean + std * noise`` of diffusers' DiagonalGaussianDistribution (log-variance clamped to [-30, 20]).

    moments ``[..., 2C, h, w]`` (mean ‖ logvar on axis -3), noise ``[..., C, h, w]`` → VAE latents z.
    """
    mean, logvar = np.split(moments, 2, axis=-3)
    return mean + np.exp(0.5 * np.clip(logvar, -30.0, 20.0)) * noise


@dataclass
class ClipStream(IterableDataset):
    """Endless batches for one rank; batch ``n`` is drawn from ``default_rng([seed, rank, n])``."""

    plan: ClipPlan
    batch_size: int
    seed: int
    rank: int
    first_batch: int = 0

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader = ClipReader(self.plan)  # opened here, inside the worker: no handles cross a fork
        for n in itertools.count(self.first_batch + worker, workers):
            yield reader.batch(np.random.default_rng([self.seed, self.rank, n]), self.batch_size)


def clip_loader(
    plan: ClipPlan,
    *,
    batch_size: int,
    seed: int,
    rank: int,
    num_workers: int,
    first_batch: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """An endless loader of this rank's batches (ranks differ by seed; every rank steps the same count)."""
    stream = ClipStream(plan, batch_size, seed, rank, first_batch)
    extra = dict(prefetch_factor=4, persistent_workers=True) if num_workers else {}
    if num_workers:  # spawn for s3:// / gs:// stores: tensorstore cannot run in a forked child
        extra["multiprocessing_context"] = worker_start_method(plan.store_path)
    return DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **extra)


LATENTS = ("sample", "mean", "moments")


class ClipDataset(Dataset):
    """Every valid clip of a feature store, as a map-style dataset for your own loop and a plain DataLoader.

    The clips are exactly those training draws from (:func:`plan_clips`: the same stride rule, short
    videos skipped, unfinished shards left out), ordered by video, then start row; with ``hflip`` the
    indices ``len/2 ...`` are the mirrored twins of the first half. Item ``i`` is a dict of tensors:

    - ``latents``: ``"sample"`` (default) a fresh VAE posterior sample scaled as training sees it
      (``(z - shift) * scale``), ``[F, C, h, w]`` float32; ``"mean"`` the posterior mean, same
      scaling; ``"moments"`` the stored mean ‖ log-variance, unscaled, ``[F, 2C, h, w]``;
    - ``targets``: the aligned encoders' fused targets ``[F, N, C_t]`` (float16; float32 from an int8 store);
    - ``label``, ``video``, ``start`` (first store row): int64 scalars; ``flip``: bool scalar.

    ``"sample"`` noise comes from torch's RNG (seed it, or the DataLoader's per-worker seeds, as usual),
    or with ``seed`` from ``(seed, i)``: then item i is the same every time it is read.
    """

    def __init__(
        self,
        store: FeatureStore | str | Path,
        *,
        frames: int = 16,
        stride: int = 3,
        align_encoders: Sequence[str] | None = None,
        hflip: bool = False,
        latents: Literal["sample", "mean", "moments"] = "sample",
        allow_incomplete: bool = False,
        seed: int | None = None,
    ) -> None:
        if latents not in LATENTS:
            raise DataError(f"latents={latents!r} is unknown; choose one of {list(LATENTS)}")
        store = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
        self.plan = plan_clips(
            store,
            frames=frames,
            stride=stride,
            align_encoders=align_encoders,
            hflip=hflip,
            allow_incomplete=allow_incomplete,
        )
        self.latents, self.seed = latents, seed
        self._reader: ClipReader | None = None
        self._pid = -1

    def __len__(self) -> int:
        return int(self.plan.starts.size) * (2 if self.plan.hflip else 1)

    def __getitem__(self, index: int) -> Batch:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"clip {index} is out of range for {n} clips")
        index %= n
        p, flip = self.plan, index >= self.plan.starts.size
        j = index - p.starts.size if flip else index
        video = int(np.searchsorted(p.bounds, j, side="right")) - 1
        moments, targets = self._read(p.starts[j : j + 1], np.array([flip]))
        return {
            "latents": torch.from_numpy(self._latents(moments, index)),
            "targets": torch.from_numpy(targets),
            "label": torch.tensor(p.labels[p.videos[video]], dtype=torch.int64),
            "video": torch.tensor(p.videos[video], dtype=torch.int64),
            "start": torch.tensor(p.starts[j], dtype=torch.int64),
            "flip": torch.tensor(flip),
        }

    def _read(self, first: np.ndarray, flip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # One reader per process: a reader opened before a DataLoader forks must not share its files.
        if self._reader is None or self._pid != os.getpid():
            self._reader, self._pid = ClipReader(self.plan), os.getpid()
        return self._reader.clips(first, flip)

    def _latents(self, moments: np.ndarray, index: int) -> np.ndarray:
        """Moments ``[F, 2C, h, w]`` → what ``self.latents`` asks for."""
        if self.latents == "moments":
            return moments
        shape = (moments.shape[0], self.plan.latent_channels, *moments.shape[2:])
        if self.latents == "mean":
            z = moments[:, : self.plan.latent_channels]
        elif self.seed is None:
            z = posterior_sample(moments, torch.randn(shape).numpy())
        else:
            noise = np.random.default_rng([self.seed, index]).standard_normal(shape, dtype=np.float32)
            z = posterior_sample(moments, noise)
        return np.ascontiguousarray(self.plan.vae.to_model_latents(z), dtype=np.float32)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None, "_pid": -1}  # workers open their own
