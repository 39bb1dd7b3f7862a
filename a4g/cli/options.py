"""Options that several commands share, each declared once as an ``Annotated`` alias, and the two
helpers that tie a command's parameters to its config dataclass (``default`` and ``build``).

Adding an option means one alias (here, or in the command's module when only it uses it), one
parameter of the command, and one field of the config dataclass: the default is read from the field
(``default``) and the config is built from the parameters by name (``build``), so no keyword list
repeats the options a third time.

Checks that need only the value (ranges, a device that exists, an ``--out`` that can be written,
``NAME=PATH`` pairs, repeated names) run here while the flags are parsed, so a mistake is one
``error:`` line before any model loads. Checks that need the whole config live with the config
(``TrainConfig.validate``, ``SampleConfig.validate``) and are not repeated here.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from a4g.errors import ConfigError

T = TypeVar("T")

# Panels of `--help`, in the spirit of timm's train.py argument groups.
DATA = "Data"
MODEL = "Model"
OPTIM = "Optimization"
ALIGN = "Alignment"
SAMPLING = "Sampling"
PROTOCOL = "Protocol"
CKPT = "Checkpoints & logging"
OUTPUT = "Output"
HARDWARE = "Hardware"


# ------------------------------------------------------------------------ config dataclass <-> options


def default(config: type, name: str) -> Any:
    """The default of field ``name`` of a config dataclass, spelled as its flag takes it.

    Lists come back comma-joined (``--encoders a,b``) and an empty mapping as None (no ``--weights``);
    ``build`` turns them back into the field's type.
    """
    f = {f.name: f for f in dataclasses.fields(config)}[name]
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        raise TypeError(f"{config.__name__}.{name} has no default: its option must be required")
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return None if not value else value
    return value


def build(config: type[T], params: Mapping[str, Any]) -> T:
    """The config dataclass from a command's parameters (pass ``locals()``).

    Every init field with a parameter of the same name takes its value, converted to the field's
    type in one place (``_convert``); fields without a parameter keep their defaults.
    """
    hints = typing.get_type_hints(config)
    kwargs = {
        f.name: _convert(params[f.name], hints[f.name])
        for f in dataclasses.fields(config)
        if f.init and f.name in params and not _unset(params[f.name], hints[f.name])
    }
    return config(**kwargs)


def given(config: type, params: Mapping[str, Any], ctx: typer.Context) -> dict[str, Any]:
    """The fields whose flags were set on the command line (not left at their defaults), as field types.

    What a ``--config`` file or a resumed run's record may fill in must not be overwritten by a
    default: click's ``get_parameter_source`` tells a typed ``--steps 400000`` from the default.
    """
    hints = typing.get_type_hints(config)
    return {
        f.name: _convert(params[f.name], hints[f.name])
        for f in dataclasses.fields(config)
        if f.init and f.name in params and not _from_default(ctx, f.name)
    }


def _from_default(ctx: typer.Context, name: str) -> bool:
    # By name: typer may vendor its own click, whose ParameterSource is another enum than click's.
    source = ctx.get_parameter_source(name)
    return source is None or source.name in ("DEFAULT", "DEFAULT_MAP")


def _unset(value: Any, hint: Any) -> bool:
    """None for a field that cannot hold None (e.g. no --weights for a dict): the field's default."""
    return value is None and _without_none(hint) is hint


def _convert(value: Any, hint: Any) -> Any:
    """A parsed flag value as the field's type: comma lists (of str or int), NAME=PATH pairs, 'id or word'
    ints. Values arrive already checked by the options' callbacks, so nothing here can fail."""
    if value is None:
        return None
    target = _without_none(hint)
    origin = typing.get_origin(target) or target
    if origin in (list, tuple) and isinstance(value, str):
        item = (typing.get_args(target) or (str,))[0]
        return origin(int(v) if item is int else v for v in split_list(value))
    if origin is dict and isinstance(value, list | tuple):
        return dict(parse_pair(item, "--weights") for item in value)
    if target is int and isinstance(value, str):  # e.g. --class 3 or --class random (None: unset)
        return int(value) if value.lstrip("-").isdigit() else None
    return value


def _without_none(hint: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_pair(item: str, flag: str) -> tuple[str, str]:
    """'NAME=PATH' -> (NAME, PATH); anything else is a ConfigError naming the flag."""
    name, sep, path = item.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ConfigError(
            f"{flag} expects NAME=PATH (e.g. dinov2_vitb14=/ckpt/dinov2_vitb14.safetensors), got {item!r}"
        )
    return name.strip(), path.strip()


# ------------------------------------------------------------------------------- parse-time checks
# Callbacks raise ConfigError (not click's BadParameter) so the message is ours, naming the flag;
# the CLI's one handler prints it as `error: ...`.


def check_device(param: typer.CallbackParam, value: str | None) -> str | None:
    """``--device`` must exist here: ``cuda`` without a GPU or a typo fails now, not at the first tensor."""
    if value is not None and value != "auto":
        from a4g.torchutil import resolve_device  # torch only when a device is named

        resolve_device(value)
    return value


def check_out_dir(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """An output folder must be a folder (or creatable) in a place this process can write."""
    if value is not None and (problem := unwritable_dir(value)):
        raise ConfigError(f"{param.opts[0]} {value}: {problem}")
    return value


def check_store_location(param: typer.CallbackParam, value: str | None) -> str | None:
    """A feature store location: a local path, or a file://, s3:// or gs:// URI (a4g.store.location);
    an ``--out`` folder must also be writable. Typed ``str``: pathlib would turn s3://b into s3:/b."""
    if value is None:
        return value
    from a4g.store.location import parse_location

    flag = param.opts[0] if param.opts and param.opts[0].startswith("-") else (param.name or "store").upper()
    location = parse_location(value, flag)
    if location.is_local and param.name == "out" and (problem := unwritable_dir(location.path)):
        raise ConfigError(f"{flag} {value}: {problem}")
    return value


def unwritable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be used as an output folder, or None when it can."""
    if path.exists() and not path.is_dir():
        return "is a file, not a folder; give a folder path (it is created when missing)"
    here = path.absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        return f"{here} is a file, so no folder can be created under it"
    if not os.access(here, os.W_OK | os.X_OK):
        return f"cannot write in {here} (permission denied or a read-only file system); choose another place"
    return None


def check_pairs(param: typer.CallbackParam, value: list[str] | None) -> list[str] | None:
    """Repeatable ``NAME=PATH`` items: each well formed, each NAME once."""
    flag, seen = param.opts[0], set()
    for name, _ in (parse_pair(item, flag) for item in value or []):
        if name in seen:
            raise ConfigError(f"{flag} gives {name} twice; give one file per encoder")
        seen.add(name)
    return value


def check_unique_list(param: typer.CallbackParam, value: str | None) -> str | None:
    """A comma list that names each item once and names at least one."""
    if value is None:
        return value
    items, flag = split_list(value), param.opts[0]
    if not items:
        raise ConfigError(f"{flag} is empty; name at least one (comma-separated)")
    twice = sorted({i for i in items if items.count(i) > 1})
    if twice:
        raise ConfigError(f"{flag} names {', '.join(twice)} more than once; give each once")
    return value


# ---------------------------------------------------------------------------------- shared options

DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        help="Source name (ucf101, folder, frames, webdataset, synthetic, demo) or a path to the videos.",
        rich_help_panel=DATA,
    ),
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Where the videos are, when --dataset (--real for eval) is a source name.",
        rich_help_panel=DATA,
    ),
]
SplitOpt = Annotated[
    str | None,
    typer.Option(
        "--split",
        help="Dataset split, e.g. train or test (ucf101 needs the split lists).",
        rich_help_panel=DATA,
    ),
]
FoldOpt = Annotated[
    int | None,
    typer.Option(
        "--fold", help="UCF-101 split fold 1..3 (default 1 when --split is given).", rich_help_panel=DATA
    ),
]
SizeOpt = Annotated[
    int,
    typer.Option(
        "--size",
        min=1,
        help="Square frame side in pixels, a multiple of 16 (VAE /8, patch 2): 256 gives a 16x16 token grid.",
        rich_help_panel=DATA,
    ),
]
VaeOpt = Annotated[
    str | None,
    typer.Option(
        "--vae",
        help="VAE: a local diffusers AutoencoderKL directory (sd-vae-ft-ema layout), a Hugging Face repo id "
        "already in the local cache (e.g. stabilityai/sd-vae-ft-ema; nothing downloads), or 'tiny' "
        "(random-init, for tests). train and sample need the store's VAE.",
        rich_help_panel=MODEL,
    ),
]
RandomInitOpt = Annotated[
    bool,
    typer.Option(
        "--random-init/--no-random-init",
        help="Seeded random weights for every encoder and the VAE (tests and demos only: results mean "
        "nothing; recorded in what is written).",
        rich_help_panel=MODEL,
    ),
]
WeightsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--weights",
        callback=check_pairs,
        help="NAME=PATH of a local weight file for an encoder; repeat per encoder.",
        rich_help_panel=MODEL,
    ),
]
WeightsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights-dir",
        help="Folder holding weight files under their documented names.",
        rich_help_panel=MODEL,
    ),
]
SamResOpt = Annotated[
    int, typer.Option("--sam-res", min=32, help="SAM2.1 input side (multiple of 32).", rich_help_panel=MODEL)
]
SamOutputOpt = Annotated[
    str,
    typer.Option(
        "--sam-output",
        help="SAM2.1 activation to use (neck vision_features or a trunk stage).",
        rich_help_panel=MODEL,
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        min=0,
        help="Seed of every random draw (weights, noise, which clips, k-means): the same seed gives the "
        "same result.",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        callback=check_device,
        help="cuda, cuda:N, cpu, or auto (a GPU when there is one; cuda:LOCAL_RANK under torchrun).",
        rich_help_panel=HARDWARE,
    ),
]
NumWorkersOpt = Annotated[
    int,
    typer.Option(
        "--num-workers",
        min=0,
        help="Worker processes that decode videos or load clips (0: in the main process).",
        rich_help_panel=HARDWARE,
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the networks (GPU throughput; compiles once at start).",
        rich_help_panel=HARDWARE,
    ),
]
ProgressOpt = Annotated[
    bool,
    typer.Option("--progress/--no-progress", help="Show progress bars (on stderr).", rich_help_panel=OUTPUT),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object instead of text.", rich_help_panel=OUTPUT)
]
