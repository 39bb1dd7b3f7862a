"""What ``a4g train`` takes: one frozen dataclass whose fields are the only place train defaults live.

Each field may carry metadata that the rest of a4g reads instead of keeping its own lists:

- ``resumable``: a ``--resume`` may change this setting; every other one must equal the first
  launch's (``check_resume`` derives the set from the fields, so a new field is never forgotten);
- ``flag``: the command-line flag, when it is not ``--`` + the field name with dashes (messages name it);
- ``bounds``: the range a number must lie in; ``validate()`` refuses anything else, naming the flag,
  before a bad value can reach torch (``--lr -1`` used to train to NaN, ``--ema 1.5`` to diverge).

Where the values come from (:func:`resolve_train_config`): the field defaults, or with ``--resume`` the
run's recorded config, then a YAML ``--config`` file (keys are the option names with underscores),
then the flags given on the command line. So ``a4g train --out RUN --resume --steps N`` needs nothing
else, and a resume that changes a setting not declared ``resumable`` is still refused by name.

This module imports no torch or timm (the model registry is read lazily inside ``validate``): the CLI
reads the defaults from here, and ``a4g train --help`` must not wait ~5 s for the model stack.

Help texts live with the CLI's option aliases, not here.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from a4g.errors import ConfigError

OBJECTIVES = ("ddpm", "flow")
REPORT_TO = ("tensorboard", "wandb", "all", "none")


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
    ``init_from`` is used by a fresh run only; a resume takes every weight from its checkpoint.
    """

    store: str = setting(flag="--features", resumable=True)  # a folder or URI (a4g.store.location)
    run: Path = setting(flag="--out", resumable=True)
    model: str = "VDiT-XL"
    objective: str = "ddpm"
    learn_sigma: bool = False  # DiT/Latte's learned variance (ddpm only)
    init_from: Path | None = None  # DiT / Latte / a4g weights to start from (a4g.train.init_from)
    init_layout: str = "auto"  # key layout of init_from; auto: told from the key names
    frames: int = setting(16, ge=1)
    stride: int = setting(3, ge=1)
    batch_size: int = setting(5, ge=1)
    grad_accum: int = setting(1, ge=1)
    steps: int = setting(400_000, ge=1, resumable=True)
    lr: float = setting(1e-4, gt=0)
    max_grad_norm: float = setting(1.0, ge=0)  # 0: no clipping
    clip_after: int = setting(0, ge=0)  # optimizer steps before clipping starts (Latte: start_clip_iter)
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
    keep_last: int = setting(0, ge=0, resumable=True)  # 0: keep every checkpoint
    log_every: int = setting(50, ge=1, resumable=True)
    report_to: str = setting("tensorboard", resumable=True)
    progress: bool = setting(True, resumable=True)  # a tqdm bar on stderr when it is a terminal
    sample_every: int = setting(0, ge=0, resumable=True)  # 0: never
    sample_num: int = setting(4, ge=1, resumable=True)
    vae: str | None = setting(None, resumable=True)
    grad_checkpointing: bool = setting(False, resumable=True)
    compile: bool = setting(False, resumable=True)
    resume: bool = setting(False, resumable=True)
    force: bool = setting(False, resumable=True)  # --resume despite an unreadable RNG state file

    def __post_init__(self) -> None:
        # A list from a caller would never equal the tuple the run record reads back, so every
        # --resume would look changed; one canonical type keeps comparisons exact.
        if self.align_encoders is not None:
            object.__setattr__(self, "align_encoders", tuple(self.align_encoders))

    def validate(self) -> TrainConfig:
        """Check every value; return the config with the model's full registered name.

        Raises ConfigError naming the flag. Needs no store or run, so the CLI can call it at parse time.
        """
        from a4g.train.model import get_arch, resolve_model_name  # timm: only when a config is checked

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
                "--sample-every needs --vae (tiny, a local diffusers VAE directory or a cached HF repo id) "
                "to decode samples"
            )
        if self.align_encoders is not None and not self.align_encoders:
            raise ConfigError("--align-encoders is empty; name at least one encoder or leave it out")
        self._check_choices()
        return dataclasses.replace(self, model=model)

    def _check_choices(self) -> None:
        from a4g.train.init_from import LAYOUTS

        if self.init_layout not in LAYOUTS:
            raise ConfigError(f"--init-layout {self.init_layout!r} is unknown; choose one of {list(LAYOUTS)}")
        if self.init_layout != "auto" and self.init_from is None:
            raise ConfigError("--init-layout needs --init-from (the weights whose layout it names)")
        if self.report_to not in REPORT_TO:
            raise ConfigError(f"--report-to {self.report_to!r} is unknown; choose one of {list(REPORT_TO)}")
        if self.report_to in ("wandb", "all") and importlib.util.find_spec("wandb") is None:
            raise ConfigError(
                f"--report-to {self.report_to} needs the wandb package: pip install 'align4gen[wandb]' "
                "(or report to tensorboard)"
            )

    @property
    def depth(self) -> int:
        """The block after which tokens are aligned: ``--align-depth`` or the model's default."""
        from a4g.train.model import default_align_depth

        return self.align_depth or default_align_depth(self.model)

    def clips_gradients_at(self, step: int) -> bool:
        """Whether the optimizer step after ``step`` completed steps clips (Latte: ``train_steps >=
        start_clip_iter``; before it the norm is only measured)."""
        return self.max_grad_norm > 0 and step >= self.clip_after


# ----------------------------------------------------------------- where the values come from


def option_key(name: str) -> str:
    """The ``--config`` file key of field ``name``: its option name with underscores (``features``)."""
    return flag_of(TrainConfig, name).removeprefix("--").replace("-", "_")


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML ``--config`` file as ``{field name: value}``; ConfigError naming the file and the key.

    Keys are the option names with underscores (``batch_size: 4``, ``features: /stores/x``); relative
    paths are taken from the current directory, as on the command line.
    """
    import yaml  # PyYAML: only when a file is given

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot read it ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path}: not valid YAML ({' '.join(str(err).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config {path}: expected a mapping of option names to values (e.g. `batch_size: 4`), "
            f"got a YAML {type(data).__name__}"
        )
    keys = {option_key(f.name): f.name for f in fields(TrainConfig)}
    for key in data:
        if key not in keys:
            raise ConfigError(f"--config {path}: unknown key {key!r}{_key_hint(str(key), keys)}")
    return {keys[k]: _from_yaml(keys[k], v) for k, v in data.items()}


def _key_hint(key: str, keys: Mapping[str, str]) -> str:
    renamed = {field: k for k, field in keys.items() if k != field}
    if key in renamed:
        return f"; write `{renamed[key]}:` (keys are the option names, --{renamed[key]})"
    close = difflib.get_close_matches(key, list(keys), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (keys are the `a4g train` option names with underscores, e.g. batch_size)"


def _from_yaml(name: str, value: Any) -> Any:
    """``align_encoders: a,b`` as the flag takes it, besides a YAML list."""
    if name == "align_encoders" and isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def resolve_train_config(given: Mapping[str, Any], config_file: Path | None = None) -> TrainConfig:
    """The effective, validated config: field defaults (with ``--resume``: the run's recorded config),
    then ``config_file``, then ``given`` (the flags set on the command line, by field name).

    Raises ConfigError naming the flag or the file's key; RunError for a run record that cannot be read.
    """
    from_file = read_config_file(config_file) if config_file is not None else {}
    chosen = {**from_file, **given}
    merged = {**_resumed_values(chosen), **chosen}
    for name in ("store", "run"):
        if merged.get(name) is None:
            raise ConfigError(
                f"{flag_of(TrainConfig, name)} is required (or `{option_key(name)}:` in --config); "
                "a --resume of a run that has a record takes it from there"
            )
    return _typed(merged, from_file, config_file).validate()


def _resumed_values(chosen: Mapping[str, Any]) -> dict[str, Any]:
    """With ``--resume`` of a run that has a record: its settings, so no flag has to be repeated."""
    from a4g.train.run_record import read_run_record, run_file  # pydantic only; no cycle at import

    run = chosen.get("run")
    if not chosen.get("resume") or run is None or not run_file(Path(run)).is_file():
        return {}
    prior = read_run_record(Path(run)).config
    return {f.name: getattr(prior, f.name) for f in fields(prior)}


def _typed(values: Mapping[str, Any], from_file: Mapping[str, Any], config_file: Path | None) -> TrainConfig:
    """Values of any origin as a TrainConfig (pydantic converts ``"1e-4"`` from YAML to a float)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(TrainConfig).validate_python(dict(values))
    except ValidationError as err:
        item = err.errors()[0]
        name = str(item["loc"][0]) if item["loc"] else ""
        if name in from_file:
            where = f"--config {config_file}: {option_key(name)}"
        else:
            where = flag_of(TrainConfig, name) if name in TrainConfig.__dataclass_fields__ else "train config"
        raise ConfigError(f"{where}: {item['msg']}, got {item.get('input')!r}") from None
