"""`a4g store info` and `a4g store verify`: read a feature store and report on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from a4g.cli.options import JsonOpt
from a4g.errors import StoreError

app = typer.Typer(help="Inspect and check feature stores.", no_args_is_help=True, add_completion=False)

StoreArg = Annotated[Path, typer.Argument(help="Path of the feature store (a Zarr v3 directory).")]
QuickOpt = Annotated[
    bool,
    typer.Option("--quick", help="Check markers, shapes and fingerprint only; skip re-reading every shard."),
]
MAX_LISTED = 50  # problems printed by verify; the count covers all of them


class StoreProblems(StoreError):
    """`store verify` found damage: a finding about the store, not a usage mistake, so exit 1 (like fsck)."""

    exit_code = 1


@app.command("info")
def info(store: StoreArg, as_json: JsonOpt = False) -> None:
    """Summarize a store: dataset, encoders, frames, shards done, size on disk, skipped videos."""
    import json

    from a4g.store import FeatureStore

    summary = FeatureStore.open(store).info()
    typer.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))


def format_info(info: dict[str, Any]) -> str:
    """The text form of ``FeatureStore.info()``."""
    from a4g.store import human_bytes

    ds, vae = info["dataset"], info["vae"]
    lines = [
        f"store         {info['path']}",
        f"fingerprint   {info['fingerprint']}",
        f"dataset       {ds['name']} (split {ds['split']}) from {ds['root']}",
        f"videos        {info['videos']} ({len(info['skipped'])} skipped)",
        f"frames        {info['frames']} at {info['frame_size']} px, every {info['every']}",
        f"shards        {info['shards_done']}/{info['shards_total']} done"
        + ("" if info["complete"] else "  (incomplete: rerun the extract command to resume)"),
        f"size on disk  {human_bytes(info['bytes_on_disk'])} "
        f"({human_bytes(info['bytes_per_frame_uncompressed'])}/frame uncompressed)",
        f"token grid    {info['token_grid'][0]}x{info['token_grid'][1]}, flip twins: {info['flip']}",
        f"vae           {vae['name']} ({vae['latent_channels']} ch, weights {vae['weights'][:12]})",
        "encoders",
    ]
    for enc in info["encoders"]:
        lines.append(
            f"  {enc['name']:<22} channels {enc['slice'][0]}:{enc['slice'][1]}  input {enc['input_size']}  "
            f"{enc['output']}  weights {enc['weights'][:12]}"
        )
    if info["random_init"]:
        lines.append("WARNING: random-init weights; fine for tests, meaningless for research")
    lines += [f"skipped  {s['path']}: {s['reason']}" for s in info["skipped"]]
    return "\n".join(lines)


@app.command("verify")
def verify(store: StoreArg, quick: QuickOpt = False) -> None:
    """Check a store: all shards done, shapes match the schema, values finite, checksums and fingerprint."""
    from a4g.store import FeatureStore

    fs = FeatureStore.open(store)
    problems = fs.verify(check_values=not quick)
    if problems:
        for p in problems[:MAX_LISTED]:
            typer.echo(f"FAIL  {p}", err=True)
        if len(problems) > MAX_LISTED:
            typer.echo(f"... and {len(problems) - MAX_LISTED} more", err=True)
        raise StoreProblems(f"{store}: {len(problems)} problem(s)")
    typer.echo(
        f"OK  {store}: {fs.num_shards} shards, {fs.num_frames} frames, fingerprint {fs.schema.fingerprint}"
    )
