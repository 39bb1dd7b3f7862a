"""The `a4g` command line: extract → train → sample / eval, plus IICR and store inspection.

One module per command group (``extract``, ``train`` with ``sample``, ``iicr``, ``eval``, ``store``),
each with its own ``typer.Typer``; ``COMMANDS`` below registers them all the same way. Shared
options live in ``options``. Commands only parse, call one domain function and format its result.

Commands load lazily: a command's module (and its torch / timm / SAM 2 imports, ~2-5 s) is imported
only when that command runs or shows its own help, so ``a4g --help`` and ``a4g store info`` do not
wait for the training stack.

Errors are handled here and nowhere else: a person's mistake is an :class:`a4g.errors.A4GError`
(raised by the domain or by an option's check) or a flag click refuses while parsing; either ends
as ONE ``error: ...`` line on stderr and exit code 2 (Ctrl-C: one line, 130). The handler sits in
the root group's ``invoke`` rather than only in ``main()`` so that ``CliRunner(app)`` in tests sees
exactly what a person sees. Anything else is a bug in a4g and keeps its traceback.

Multi-process launchers run the same CLI as a module: ``torchrun --nproc_per_node N -m a4g.cli train``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at run time

INTERRUPTED = (
    "interrupted; `a4g extract`, `a4g train` and `a4g sample` resume when the same command is run again"
)

# Ctrl-C lands wherever start-up is; every place it can land ends in the same one line and exit 130:
# these imports (~0.1 s), click's parsing (`make_context`), the command (`invoke`) and `main`.
try:
    import importlib
    from typing import Any, NamedTuple, NoReturn

    import typer
    from typer.core import TyperCommand, TyperGroup

    from a4g.errors import A4GError
except KeyboardInterrupt:
    sys.stderr.write(f"error: {INTERRUPTED}\n")
    raise SystemExit(130) from None


class Entry(NamedTuple):
    module: str  # defines `app`, a typer.Typer holding the command (or, for a group, its subcommands)
    summary: str  # the line `a4g --help` shows: the command's docstring (or group help) starts with it
    group: bool = False


# Order here is the order of `a4g --help`: the pipeline first, then the tools.
COMMANDS = {
    "extract": Entry(
        "a4g.cli.extract",
        "Decode every frame, run the VAE and encoders once, and write latents + fused targets to a store.",
    ),
    "train": Entry(
        "a4g.cli.train",
        "Train a V-DiT on a feature store with denoising + alignment to the cached encoder targets.",
    ),
    "sample": Entry(
        "a4g.cli.train",
        "Sample videos from a trained run and write them as mp4s (libx264, yuv420p) plus a grid.",
    ),
    "iicr": Entry(
        "a4g.cli.iicr",
        "Score encoders as alignment targets with IICR (inter/intra cluster ratio, higher is better).",
    ),
    "eval": Entry(
        "a4g.cli.eval",
        "Score generated videos against a real dataset: FVD (I3D) and per-frame FID (Inception).",
        group=True,
    ),
    "store": Entry("a4g.cli.store", "Inspect and check feature stores.", group=True),
}


def load_command(name: str) -> Any:
    """The click command of `a4g NAME`, importing its module now."""
    entry = COMMANDS[name]
    cmd = typer.main.get_command(importlib.import_module(entry.module).app)
    if entry.group:
        cmd.name = name
        return cmd
    return cmd.commands[name] if hasattr(cmd, "commands") else cmd


class A4GGroup(TyperGroup):
    """The root group: lists commands without importing them, runs one, and turns person-facing errors
    into one line."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, entry in COMMANDS.items():  # stand-ins that carry only what `a4g --help` shows
            self.commands[name] = TyperCommand(name=name, short_help=entry.summary, help=entry.summary)

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, _, rest = super().resolve_command(ctx, args)  # unknown names fail here, with suggestions
        return name, load_command(name), rest

    def make_context(self, *args: Any, **kwargs: Any) -> typer.Context:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:  # typer would exit 130 without a word
            _fail(INTERRUPTED, 130)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except A4GError as err:
            _fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            _fail(INTERRUPTED, 130)
        except Exception as err:  # click's own usage errors: unknown flag, value out of range, ...
            if not _is_usage_error(err):
                raise
            _fail(_usage_line(err), 2)


def _is_usage_error(err: Exception) -> bool:
    # NoArgsIsHelpError is how `a4g eval` alone asks for its help page: leave it to typer.
    names = {cls.__name__ for cls in type(err).__mro__}
    return "UsageError" in names and "NoArgsIsHelpError" not in names


def _usage_line(err: Any) -> str:
    """click's message in our form: the flag first, then what is wrong, then where help is."""
    param, ctx = getattr(err, "param", None), getattr(err, "ctx", None)
    opts = getattr(param, "opts", None)
    text = (
        f"{opts[0]}: {err.message}" if opts and type(err).__name__ == "BadParameter" else err.format_message()
    )
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return " ".join(text.split()) + hint


def _fail(message: str, code: int) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


app = typer.Typer(
    name="a4g",
    cls=A4GGroup,
    help="align4gen: cache DINOv2 + SAM2.1 features once, then train video DiTs aligned to them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """align4gen: cache DINOv2 + SAM2.1 features once, then train video DiTs aligned to them."""


def main() -> None:
    """Console entry point (`a4g`) and `python -m a4g.cli`."""
    try:
        app(prog_name="a4g")
    except KeyboardInterrupt:  # while typer builds the command, before parsing starts
        sys.stderr.write(f"error: {INTERRUPTED}\n")
        raise SystemExit(130) from None
