"""`a4g iicr` as a function: encode clips with each encoder, score every row with IICR, write the report.

`score_encoders(IICRRequest) -> IICRResult`. Tokens are compared on the V-DiT token grid of
`--size` (the grid of the store's targets), so a row scores what training would align to; a fused
row ``a+b`` is built with the store's own fusion (`encoders.fusion.fuse_tokens`) on access, never
as a second copy of the features. Clips come from the dataset sources with `a4g extract`'s squaring
(`metrics.clips`). Every refusal is an `A4GError` naming the flag; nothing here prints or exits.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from a4g.errors import ConfigError, DataError
from a4g.extract.config import DEFAULT_ENCODERS
from a4g.geometry import token_grid_for
from a4g.torchutil import resolve_device

SD_VAE_DOWNSAMPLE = 8
"""Latent cells per pixel side of the SD VAEs a store is made with: tokens sit on size / (8 * patch)."""
MIN_K = 2  # one cluster has no inter-cluster pairs


@dataclass(frozen=True, kw_only=True)
class IICRRequest:
    """Everything `a4g iicr` takes (see `a4g iicr --help` for each field)."""

    dataset: str
    out: Path
    encoders: str = ",".join([*DEFAULT_ENCODERS, "+".join(DEFAULT_ENCODERS)])  # rows; 'a+b' fuses
    data_root: Path | None = None
    split: str | None = None
    fold: int | None = None
    k: list[int] = field(default_factory=lambda: [8, 10, 12, 15])
    clips: int = 32
    frames: int = 16
    size: int = 256
    masks: Path | None = None
    random_init: bool = False
    weights: dict[str, str] = field(default_factory=dict)
    weights_dir: Path | None = None
    sam_res: int = 1024
    sam_output: str = "vision_features"
    device: str = "auto"
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class IICRResult:
    report: dict[str, Any]  # JSON-ready, as written to iicr.json (see iicr_report.run_iicr)
    json_path: Path
    png_path: Path


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def score_encoders(req: IICRRequest, note: Callable[[str], None] = _stderr) -> IICRResult:
    """Run IICR as `req` asks; `note` receives warnings a person should see (default: stderr)."""
    t0 = time.perf_counter()
    rows = parse_rows(req.encoders)
    base = list(dict.fromkeys(name for parts in rows.values() for name in parts))
    grid = _check(req, base)
    device = resolve_device(req.device)
    models = _load_encoders(req, base, grid, device)
    if req.random_init:
        note("WARNING: --random-init: these IICR values say nothing about the released encoders")
    source, plan = _plan(req)
    if len(plan.clips) < req.clips:
        note(f"note: scoring {plan.describe(req.frames)} (--clips asked for {req.clips})")
    feats, labels, used, excluded = _encode(req, source, plan, models, grid, device)
    report = _score(req, rows, feats, labels)
    report.update(
        rows=rows,
        dataset={**source.describe(), "dataset": req.dataset},
        size=req.size,
        token_grid=list(grid),
        encoder_specs={n: m.spec.model_dump(mode="json") for n, m in models.items()},
        random_init=req.random_init,
        masks=str(req.masks) if req.masks is not None else None,
        clips=used,
        excluded=excluded,
        seconds=round(time.perf_counter() - t0, 1),
    )
    return _write(report, req.out)


def _check(req: IICRRequest, base: list[str]) -> tuple[int, int]:
    """The token grid, after the checks that need no model; ConfigError naming the flag."""
    from a4g.encoders.dinov2 import dino_res_for

    grid = token_grid_for(req.size, SD_VAE_DOWNSAMPLE)
    dino_res_for(grid, base)
    bad_k = [k for k in req.k if k < MIN_K]
    if not req.k or bad_k:
        raise ConfigError(f"--k needs cluster counts >= {MIN_K}, got {','.join(map(str, req.k))!r}")
    if max(req.k) > req.frames * grid[0] * grid[1]:
        raise ConfigError(
            f"--k {max(req.k)} is more clusters than a clip has tokens ({req.frames} x {grid[0]}x{grid[1]})"
        )
    if req.masks is not None and not req.masks.is_dir():
        from a4g.metrics.clips import MASK_LAYOUT

        raise ConfigError(f"--masks {req.masks} is not a folder (expected {MASK_LAYOUT})")
    return grid


def split_row(row: str, known: Sequence[str]) -> list[str]:
    """'a+b' -> ['a', 'b'] by matching registry names, which may end in '+' themselves (sam2.1_hiera_b+)."""
    if not row:
        return []
    for name in sorted((n for n in known if row.startswith(n)), key=len, reverse=True):
        rest = row[len(name) :]
        if not rest:
            return [name]
        if rest.startswith("+"):
            tail = split_row(rest[1:], known)
            if tail:
                return [name, *tail]
    raise KeyError(row)


def parse_rows(text: str) -> dict[str, list[str]]:
    """--encoders value -> {row name: [encoder, ...]}; a row 'a+b' is the fusion of a and b."""
    from a4g.encoders import list_encoders

    known = list_encoders()
    rows: dict[str, list[str]] = {}
    for row in (r.strip() for r in text.split(",")):
        if not row:
            continue
        try:
            rows[row] = split_row(row, known)
        except KeyError:
            raise ConfigError(
                f"--encoders: {row!r} is not an encoder or a '+'-joined fusion of encoders; "
                f"known: {', '.join(known)}"
            ) from None
    if not rows:
        raise ConfigError(
            "--encoders is empty; give e.g. dinov2_vitb14,sam2.1_hiera_b+,dinov2_vitb14+sam2.1_hiera_b+"
        )
    return rows


def _load_encoders(req: IICRRequest, base: list[str], grid: tuple[int, int], device: torch.device) -> dict:
    from a4g.encoders import create_encoder
    from a4g.encoders.dinov2 import dino_res_for

    return {
        name: create_encoder(
            name,
            weights=req.weights,
            weights_dir=req.weights_dir,
            random_init=req.random_init,
            dino_res=dino_res_for(grid, base),
            sam_res=req.sam_res,
            sam_output=req.sam_output,
            device=device,
        )
        for name in base
    }


def _plan(req: IICRRequest):
    """The source and its clip selection (only videos with masks in mask mode)."""
    from a4g.metrics.clips import has_masks, plan_clips
    from a4g.sources import build_source

    source = build_source(req.dataset, req.data_root, req.split, req.fold)
    keep = (lambda vid: has_masks(req.masks, vid)) if req.masks is not None else None
    plan = plan_clips(source, req.clips, req.frames, req.seed, keep=keep, progress=req.progress)
    if not plan.clips:
        where = f" with masks under {req.masks}" if req.masks is not None else ""
        raise DataError(
            f"--dataset {req.dataset}: no video{where} has {req.frames} frames ({plan.describe(req.frames)})"
        )
    return source, plan


def usable_labels(labels: torch.Tensor) -> bool:
    """Mask-mode IICR needs two objects in one frame and one object in two frames. labels: [T, N]."""
    per_frame = [torch.unique(f[f >= 0]) for f in labels]
    two_in_a_frame = any(len(u) >= 2 for u in per_frame)
    seen = torch.cat(per_frame) if per_frame else torch.empty(0)
    return two_in_a_frame and bool((torch.unique(seen, return_counts=True)[1] >= 2).any())


def _encode(req: IICRRequest, source, plan, models: dict, grid: tuple[int, int], device: torch.device):
    """Every clip through every encoder: tokens [T, N, C] per clip on `grid`, object ids [T, N] in mask mode."""
    from a4g.encoders import resample_tokens, square_frames
    from a4g.metrics.clips import read_clip, read_masks, square_labels
    from a4g.metrics.iicr import labels_to_tokens
    from a4g.torchutil import autocast

    feats: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    labels: list[torch.Tensor] = []
    used, excluded = [], []
    for clip in tqdm(plan.clips, desc="encode clips", unit="clip", disable=not req.progress):
        raw = read_clip(source, clip)
        lab = None
        if req.masks is not None:
            squared = square_labels(read_masks(req.masks, clip), raw.shape[1:3], req.size)
            lab = labels_to_tokens(squared, grid)
            if not usable_labels(lab):
                excluded.append(
                    {"video_id": clip.video_id, "reason": "masks show fewer than two objects per frame"}
                )
                continue
            labels.append(lab)
        frames = square_frames(raw, req.size).to(device)
        with torch.no_grad(), autocast(device):
            for name, model in models.items():
                tokens = model(frames).float()
                feats[name].append(resample_tokens(tokens, model.native_grid, grid).cpu())
        used.append({"video_id": clip.video_id, "start": clip.start, "frames": clip.length})
    if not used:
        raise DataError(f"every clip was excluded: {excluded[0]['reason']} ({len(excluded)} clips)")
    return feats, labels, used, excluded


class FusedClips(Sequence):
    """Clip i of a fused row, built on access (never stores a second copy of the features)."""

    def __init__(self, parts: list[list[torch.Tensor]]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return len(self.parts[0])

    def __getitem__(self, i):  # type: ignore[override]
        from a4g.encoders.fusion import fuse_tokens

        return fuse_tokens(*(p[i] for p in self.parts))


def _score(req: IICRRequest, rows: dict[str, list[str]], feats: dict, labels: list) -> dict:
    """IICR of every row at every k (and with the masks), merged into one report."""
    from a4g.metrics.iicr_report import run_iicr

    report: dict = {}
    for row, parts in tqdm(rows.items(), desc="IICR", unit="row", disable=not req.progress):
        row_clips = feats[parts[0]] if len(parts) == 1 else FusedClips([feats[p] for p in parts])
        part = run_iicr(
            {row: row_clips}, req.k, seed=req.seed, labels=labels if req.masks is not None else None
        )
        report = {**part, "encoders": {**report.get("encoders", {}), **part["encoders"]}}
    return report


def _write(report: dict, out: Path) -> IICRResult:
    """iicr.json (written whole, then renamed: never a half file) and iicr.png."""
    from a4g.metrics.iicr_report import plot_iicr

    out.mkdir(parents=True, exist_ok=True)
    json_path, partial = out / "iicr.json", out / "iicr.json.partial"
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(json_path)
    return IICRResult(report, json_path, plot_iicr(report, out / "iicr.png"))
