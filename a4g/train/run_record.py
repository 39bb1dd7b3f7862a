"""The run record ``RUN/run.json``: what a training run was made from, typed, versioned, read and
written only here.

Sampling rebuilds the model from it (``model.name`` + ``model.kwargs``), picks the objective and
checks the VAE against it; ``--resume`` compares the new settings with ``config`` and the store's
fingerprint with ``store.fingerprint``. It is a frozen pydantic model with unknown fields refused,
like the store schema (``a4g/store/schema.py``), so a hand-edited or foreign file fails with the dotted
field named instead of a ``KeyError`` deep in sampling. Writes go through a temporary file and
``os.replace``, so a crash mid-write leaves the previous record, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from a4g.errors import RunError
from a4g.store.schema import VAESpec, describe_validation_error
from a4g.train.config import TrainConfig

FORMAT_VERSION = 1
"""Bumped whenever a field changes meaning or shape; readers refuse other versions."""

RUN_FILE = "run.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetRef(_Record):
    """The videos the store was extracted from (its schema's ``dataset``, without the video list).

    ``a4g eval`` compares it with ``--real`` to decide whether real clips take the run's training stride.
    """

    name: str = Field(description="source name, e.g. ucf101, folder, demo")
    root: str = Field(description="where the videos were read from")
    split: str | None = None
    fold: int | None = None


class StoreRef(_Record):
    """The store a run trained on. The fingerprint pins its content; the path is only where it was."""

    path: str
    fingerprint: str
    random_init: bool
    every: int = Field(ge=1, description="the store keeps one source frame in `every`")
    frame_size: int = Field(gt=0, description="side of the square frames the VAE saw, pixels")
    classes: list[str]
    dataset: DatasetRef | None = Field(default=None, description="None in records older than the field")


class ModelKwargs(_Record):
    """``create_model``'s geometry arguments; they follow the store, so they are recorded, not re-derived."""

    input_size: tuple[int, int] = Field(description="latent height, width")
    in_channels: int = Field(gt=0)
    num_frames: int = Field(gt=0)
    num_classes: int = Field(ge=0, description="0: unconditional")
    class_dropout_prob: float = Field(ge=0, lt=1)
    patch_size: int = Field(gt=0)
    learn_sigma: bool = Field(default=False, description="DiT's variance head: 2x output channels")


POS_EMBED = "mae"
"""2-D sin-cos position embedding in DiT/Latte/MAE channel order (columns first). Older a4g (runs whose
run.json has no format_version) put rows first: their weights would load with transposed positions."""


class ModelSpec(_Record):
    name: str = Field(description="registered V-DiT name, e.g. VDiT-XL")
    kwargs: ModelKwargs
    pos_embed: Literal["mae"] = Field(
        default=POS_EMBED, description="position-embedding channel order the weights were trained with"
    )


class InitRef(_Record):
    """The weights a fresh run started from (``--init-from``) and what :func:`load_init` made of them."""

    path: str
    layout: str = Field(description="the key layout used (what --init-layout auto resolved to)")
    loaded: int = Field(ge=0, description="tensors copied into the V-DiT")
    skipped: int = Field(ge=0, description="checkpoint tensors not used (reasons printed at launch)")
    new: int = Field(ge=0, description="V-DiT tensors left at their fresh initialization")


class AlignSpec(_Record):
    encoders: list[str]
    depth: int = Field(ge=1, description="1-based block after which tokens are aligned")
    weight: float = Field(ge=0, description="λ")
    target_channels: int = Field(gt=0)
    projector_dim: int = Field(gt=0)


class DataSpec(_Record):
    frames: int = Field(gt=0)
    stride: int = Field(gt=0, description="source frames between clip frames")
    store_row_step: int = Field(gt=0, description="store rows between clip frames: stride // every")


class EMASpec(_Record):
    """The moving average sampling uses (``a4g/train/ema.py``)."""

    decay: float = Field(ge=0, lt=1)
    warmup: Literal["diffusers", "none"] = Field(
        description="diffusers: decay_n = min(decay, (1 + n) / (10 + n)), the first update copies; "
        "none: `decay` from the first update"
    )


class Resumption(_Record):
    step: int = Field(ge=0)
    world_size: int = Field(gt=0)


class RunRecord(_Record):
    """Everything ``run.json`` holds."""

    format_version: int = FORMAT_VERSION
    a4g_version: str
    created: str = Field(description="UTC time of the first launch, ISO 8601")
    config: TrainConfig = Field(description="the settings of the latest launch")
    store: StoreRef
    model: ModelSpec
    vae: VAESpec
    align: AlignSpec
    data: DataSpec
    init: InitRef | None = Field(
        default=None, description="--init-from of the first launch; None: random init"
    )
    ema: EMASpec | None = Field(default=None, description="None in records older than the field: no warm-up")
    world_size: int = Field(gt=0, description="processes of the latest launch")
    resumed: list[Resumption] = Field(default_factory=list, description="one entry per --resume")


def run_file(run_dir: Path) -> Path:
    return Path(run_dir) / RUN_FILE


def write_run_record(run_dir: Path, record: RunRecord) -> Path:
    """Write ``RUN/run.json`` atomically (temporary file + ``os.replace``); returns its path."""
    path = run_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record.model_dump(mode="json"), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{RUN_FILE}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_run_record(run_dir: Path) -> RunRecord:
    """Read and check ``RUN/run.json``; raise :class:`RunError` naming the file and what is wrong."""
    path = run_file(run_dir)
    if not path.is_file():
        raise RunError(f"{run_dir} is not a training run: no {RUN_FILE} (train one with `a4g train`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path} is not valid JSON ({err}); the file is damaged or truncated") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a run record (a JSON object); the file is damaged")
    version = data.get("format_version")
    if "format_version" not in data and {"config", "model"} <= data.keys():
        raise RunError(
            f"{path} was written by an a4g from before the typed run record, whose V-DiT put the position "
            "embedding's rows first (DiT/Latte/MAE put columns first): its checkpoints would load with "
            "transposed positions, so they cannot be resumed or sampled. Train a new --out (or sample it "
            "with the a4g release that wrote it)"
        )
    if version != FORMAT_VERSION:
        raise RunError(
            f"{path}: format_version is {version!r}, this a4g reads version {FORMAT_VERSION}; "
            "sample or resume it with the a4g release that wrote it, or train a new --out"
        )
    try:
        return RunRecord.model_validate(data)
    except ValidationError as err:
        raise RunError(f"{path}: {describe_validation_error(err, what='run record')}") from None
