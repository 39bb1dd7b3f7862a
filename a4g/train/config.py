"""What ``a4g train`` takes: one frozen dataclass whose fields are the only place train defaults live.

Each field may carry metadata that the rest of a4g reads instead of keeping its own lists:

- ``resumable``: a ``--resume`` may change this setting; every other one must equal the first
  launch's (``check_resume`` derives the set from the fields, so a new field is never forgotten);
- ``flag``: the command-line flag, when it is not ``--`` + the field name with dashes (messages name it);
- ``bounds``: the range a number must lie in; ``validate()`` refuses anything else, naming the flag,
  before a bad value can reach torch (``--lr -1`` used to train to NaN, ``--ema 1.5`` to diverge).

Help texts live with the CLI's option aliases, not here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from a4g.errors import ConfigError
from a4g.train.model import default_align_depth, get_arch, resolve_model_name

OBJECTIVES = ("ddpm", "flow")


@dataclass(frozen=True)
class Bounds:
    """An interval a numeric setting must lie in; ``None`` leaves a side open. Floats must be finite."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt)
        )

    def describe(self, is_float: bool) -> str:
        if self.ge is not None and self.lt is not None:
            return f"in [{_show(self.ge)}, {_show(self.lt)})"
        rule = f"> {_show(self.gt)}" if self.gt is not None else f">= {_show(self.ge)}"
        return f"a finite number {rule}" if is_float else rule


def setting(
    default: Any = MISSING,
    *,
    resumable: bool = False,
    flag: str | None = None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with a4g's metadata (see the module docstring)."""
    meta: dict[str, Any] = {"resumable": resumable}
    if flag is not None:
        meta["flag"] = flag
    if (gt, ge, lt) != (None, None, None):
        meta["bounds"] = Bounds(gt=gt, ge=ge, lt=lt)
    return field(default=default, metadata=meta)


def flag_of(config: Any, name: str) -> str:
    """The command-line flag of field ``name`` of a settings dataclass (class or instance)."""
    meta = {f.name: f.metadata for f in fields(config)}[name]
    return meta.get("flag", "--" + name.replace("_", "-"))


def resumable_fields(config: Any) -> frozenset[str]:
    """Names of the fields a ``--resume`` may change, read from their ``resumable`` metadata."""
    return frozenset(f.name for f in fields(config) if f.metadata.get("resumable"))


def check_bounds(config: Any) -> None:
    """Refuse the first field outside its ``bounds`` with a ConfigError naming the flag."""
    for f in fields(config):
        bounds, value = f.metadata.get("bounds"), getattr(config, f.name)
        if bounds is None or value is None:  # None: "not given", e.g. --align-depth's per-model default
            continue
        if not bounds.contains(value):
            rule = bounds.describe(isinstance(value, float) or "float" in str(f.type))
            raise ConfigError(f"{flag_of(config, f.name)} must be {rule}, got {_show(value)}")


def _show(value: float) -> str:
    """-1.0 as "-1" (what a person typed), 1e-4 as "0.0001", NaN as "nan"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``a4g train`` takes (``a4g train --help`` describes each field).

    ``store`` and ``run`` are resumable: a moved store is fine when its fingerprint matches (checked
    separately), and the run is found by the directory the record lives in, whatever path reaches it.
    """

    store: Path = setting(flag="--features", resumable=True)
    run: Path = setting(flag="--out", resumable=True)
    model: str = "VDiT-XL"
    objective: str = "ddpm"
    learn_sigma: bool = False  # DiT/Latte's learned variance (ddpm only)
    frames: int = setting(16, ge=1)
    stride: int = setting(3, ge=1)
    batch_size: int = setting(5, ge=1)
    grad_accum: int = setting(1, ge=1)
    steps: int = setting(400_000, ge=1, resumable=True)
    lr: float = setting(1e-4, gt=0)
    max_grad_norm: float = setting(1.0, ge=0)  # 0: no clipping
    ema: float = setting(0.9999, ge=0, lt=1)
    align_weight: float = setting(0.5, ge=0)
    align_depth: int | None = setting(None, ge=1)  # None: default_align_depth(model)
    align_encoders: tuple[str, ...] | None = None  # None: every encoder of the store
    projector_dim: int = setting(2048, ge=1)
    class_dropout: float = setting(0.1, ge=0, lt=1)
    unconditional: bool = False
    hflip: bool = False
    allow_incomplete: bool = False
    num_workers: int = setting(4, ge=0, resumable=True)
    seed: int = setting(0, ge=0)
    checkpoint_every: int = setting(5000, ge=1, resumable=True)
    log_every: int = setting(50, ge=1, resumable=True)
    sample_every: int = setting(0, ge=0, resumable=True)  # 0: never
    sample_num: int = setting(4, ge=1, resumable=True)
    vae: str | None = setting(None, resumable=True)
    grad_checkpointing: bool = setting(False, resumable=True)
    compile: bool = setting(False, resumable=True)
    resume: bool = setting(False, resumable=True)

    def __post_init__(self) -> None:
        # A list from a caller would never equal the tuple the run record reads back, so every
        # --resume would look changed; one canonical type keeps comparisons exact.
        if self.align_encoders is not None:
            object.__setattr__(self, "align_encoders", tuple(self.align_encoders))

    def validate(self) -> TrainConfig:
        """Check every value; return the config with the model's full registered name.

        Raises ConfigError naming the flag. Needs no store or run, so the CLI can call it at parse time.
        """
        check_bounds(self)
        try:
            model = resolve_model_name(self.model)
        except ValueError as err:
            raise ConfigError(f"--model: {err}") from None
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective {self.objective!r} is unknown; choose one of {list(OBJECTIVES)}")
        if self.learn_sigma and self.objective != "ddpm":
            raise ConfigError("--learn-sigma needs --objective ddpm: flow matching has no variance to learn")
        top = get_arch(model).depth
        if self.align_depth is not None and self.align_depth > top:
            raise ConfigError(f"--align-depth must be in [1, {top}] for {model}, got {self.align_depth}")
        if self.sample_every and self.vae is None:
            raise ConfigError(
                "--sample-every needs --vae (tiny or a local diffusers VAE directory) to decode samples"
            )
        if self.align_encoders is not None and not self.align_encoders:
            raise ConfigError("--align-encoders is empty; name at least one encoder or leave it out")
        return dataclasses.replace(self, model=model)

    @property
    def depth(self) -> int:
        """The block after which tokens are aligned: ``--align-depth`` or the model's default."""
        return self.align_depth or default_align_depth(self.model)
