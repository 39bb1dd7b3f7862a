"""What ``a4g extract`` takes: one dataclass whose fields are the only place extract defaults live.

Kept apart from ``run.py`` (which imports torch, timm and SAM 2: ~3.4 s) because the CLI reads
these defaults to build ``a4g extract --help``, and help should not wait for the models' imports.
The CLI checks ranges when it parses flags (``a4g/cli/extract.py``); the models check what only
they know (``--sam-res`` multiple of 32, ``--size`` multiple of the VAE's cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

TargetDtype = Literal["float16", "int8"]
"""How targets are stored (LayoutSpec.target_dtype); here because ``--help`` reads it without pydantic."""

DEFAULT_ENCODERS = ("dinov2_vitb14", "sam2.1_hiera_b+")
"""The paper's pair, in fusion order: DINOv2 ViT-B/14 and SAM 2.1 Hiera-B+."""


@dataclass(kw_only=True)
class ExtractConfig:
    """Everything `a4g extract` takes (see `a4g extract --help` for each field)."""

    dataset: str
    out: str
    """A folder or a file:// / s3:// / gs:// URI (a4g.store.location)."""
    vae: str
    encoders: list[str] = field(default_factory=lambda: list(DEFAULT_ENCODERS))
    data_root: Path | None = None
    split: str | None = None
    fold: int | None = None
    size: int = 256
    every: int = 1
    hflip: bool = False
    target_dtype: TargetDtype = "float16"
    shard_frames: int = 256
    batch: int = 64
    device: str = "auto"
    num_workers: int = 4
    limit_videos: int | None = None
    random_init: bool = False
    compile: bool = False
    sam_res: int = 1024
    sam_output: str = "vision_features"
    weights: dict[str, str] = field(default_factory=dict)
    weights_dir: Path | None = None
    dry_run: bool = False
    progress: bool = True
