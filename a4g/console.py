"""Helpers shared by the command modules: person-facing errors and common option parsing."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error for a person (no traceback) and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def parse_weights(items: list[str]) -> dict[str, str]:
    """`--weights NAME=PATH` items -> {name: path}; a malformed item is a clear error."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            fail(
                f"--weights expects NAME=PATH (e.g. dinov2_vitb14=/ckpt/dinov2_vitb14.safetensors), got {item!r}"
            )
        out[name] = path
    return out
