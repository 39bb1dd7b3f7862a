"""`a4g store info|verify|compare`: read feature stores and report on them; `verify --repair` fixes them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from a4g.cli.options import JsonOpt, ProgressOpt, check_store_location
from a4g.errors import StoreError

app = typer.Typer(
    help="Inspect and check feature stores.\n\nCompare two stores; repair damaged shards.",
    no_args_is_help=True,
    add_completion=False,
)

STORE_HELP = "Feature store: a folder, or a file://, s3:// or gs:// URI."
StoreArg = Annotated[str, typer.Argument(help=STORE_HELP, show_default=False, callback=check_store_location)]
OtherStoreArg = Annotated[
    str,
    typer.Argument(
        help="The store to compare with (same videos and encoders).", callback=check_store_location
    ),
]
QuickOpt = Annotated[
    bool,
    typer.Option(
        "--quick",
        help="Check markers, shapes, fingerprint and every shard index (crc32c, the file its done marker "
        "recorded, present); skip decoding every value.",
    ),
]
RepairOpt = Annotated[
    bool,
    typer.Option(
        "--repair",
        help="Mark the damaged shards not done, so the `a4g extract` command that made the store "
        "recomputes exactly those; nothing else is rewritten.",
    ),
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
        f"targets       {info['schema']['layout'].get('target_dtype', 'float16')}",
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
def verify(
    store: StoreArg, quick: QuickOpt = False, repair: RepairOpt = False, progress: ProgressOpt = True
) -> None:
    """Check a store: all shards done, shapes match the schema, values finite, checksums and fingerprint.

    Names every damaged shard (a missing file, a damaged shard index, data that does not decode or
    differs from its checksum, shard files swapped or replaced). Exit code 1 when anything is found;
    with --repair, 0 once the damaged shards are marked not done (rerun the extract command next).
    """
    from a4g.store.verify import verify_location

    outcome = verify_location(store, quick=quick, repair=repair, progress=progress)
    fs, report = outcome.store, outcome.report
    problems = report.lines(fs)
    for p in problems[:MAX_LISTED]:
        typer.echo(f"FAIL  {p}", err=True)
    if len(problems) > MAX_LISTED:
        typer.echo(f"... and {len(problems) - MAX_LISTED} more", err=True)
    if outcome.repaired:
        typer.echo(
            f"repaired: marked {len(outcome.repaired)} damaged shard(s) not done {outcome.repaired}; "
            f"now rerun the `a4g extract ... --out {fs.path}` command that made this store to recompute them"
        )
        if not report.store_problems:
            return
    if problems:
        raise StoreProblems(f"{store}: {len(problems)} problem(s)" + ("" if repair else _repair_tip(report)))
    what = "shard indexes" if quick else "every value"
    typer.echo(
        f"OK  {store}: {fs.num_shards} shards, {fs.num_frames} frames, {what} checked, "
        f"fingerprint {fs.schema.fingerprint}"
    )


def _repair_tip(report) -> str:
    return "; `a4g store verify --repair` marks the damaged shards for recomputing" if report.damaged else ""


@app.command("compare")
def compare(a: StoreArg, b: OtherStoreArg, as_json: JsonOpt = False, progress: ProgressOpt = True) -> None:
    """Compare two stores of the same videos and encoders (e.g. float16 vs int8, or two machines).

    Per encoder the mean and worst cosine between the targets of every token, the largest absolute
    difference of the latent moments, and whether the stores hold identical bytes.
    """
    import json

    from a4g.store.compare import compare_locations, format_comparison

    result = compare_locations(a, b, progress=progress)
    typer.echo(json.dumps(result.to_json(), indent=2) if as_json else format_comparison(result))
