"""The `a4g` command line: extract → train → sample / eval, plus store inspection and IICR."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from a4g.store import FeatureStore, StoreError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at run time

app = typer.Typer(
    name="a4g",
    help="align4gen: cache DINOv2 + SAM2.1 features once, then train video DiTs aligned to them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
store_app = typer.Typer(help="Inspect and check feature stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")


def fail(message: str, code: int = 2) -> None:
    """Print an error for a person (no traceback) and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _open_store(path: Path) -> FeatureStore:
    try:
        return FeatureStore.open(path)
    except StoreError as err:
        fail(str(err))
        raise  # unreachable, for type checkers


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


@store_app.command("info")
def store_info(
    store: Path = typer.Argument(..., help="Path of the feature store (a Zarr v3 directory)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full summary, schema included, as JSON."),
) -> None:
    """Summarize a store: dataset, encoders, frames, shards done, size on disk, skipped videos."""
    info = _open_store(store).info()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    lines = [
        f"store         {info['path']}",
        f"fingerprint   {info['fingerprint']}",
        f"dataset       {info['dataset']['name']} (split {info['dataset']['split']}) from {info['dataset']['root']}",
        f"videos        {info['videos']} ({len(info['skipped'])} skipped)",
        f"frames        {info['frames']} at {info['frame_size']} px, every {info['every']}",
        f"shards        {info['shards_done']}/{info['shards_total']} done"
        + ("" if info["complete"] else "  (incomplete: rerun the extract command to resume)"),
        f"size on disk  {_human_bytes(info['bytes_on_disk'])} "
        f"({_human_bytes(info['bytes_per_frame_uncompressed'])}/frame uncompressed)",
        f"token grid    {info['token_grid'][0]}x{info['token_grid'][1]}, flip twins: {info['flip']}",
        f"vae           {info['vae']['name']} ({info['vae']['latent_channels']} ch, weights {info['vae']['weights'][:12]})",
        "encoders",
    ]
    for enc in info["encoders"]:
        lines.append(
            f"  {enc['name']:<22} channels {enc['slice'][0]}:{enc['slice'][1]}  input {enc['input_size']}  "
            f"{enc['output']}  weights {enc['weights'][:12]}"
        )
    if info["random_init"]:
        lines.append("WARNING: random-init weights; fine for tests, meaningless for research")
    for s in info["skipped"]:
        lines.append(f"skipped  {s['path']}: {s['reason']}")
    typer.echo("\n".join(lines))


@store_app.command("verify")
def store_verify(
    store: Path = typer.Argument(..., help="Path of the feature store."),
    quick: bool = typer.Option(
        False, "--quick", help="Check markers, shapes and fingerprint only; skip re-reading every shard."
    ),
) -> None:
    """Check a store: all shards done, shapes match the schema, values finite, checksums and fingerprint."""
    fs = _open_store(store)
    problems = fs.verify(check_values=not quick)
    if problems:
        for p in problems[:50]:
            typer.echo(f"FAIL  {p}", err=True)
        if len(problems) > 50:
            typer.echo(f"... and {len(problems) - 50} more", err=True)
        fail(f"{store}: {len(problems)} problem(s)", code=1)
    typer.echo(f"OK  {store}: {fs.num_shards} shards, {fs.num_frames} frames, fingerprint {fs.schema.fingerprint}")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
