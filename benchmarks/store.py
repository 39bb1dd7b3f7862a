"""Shard write and row read speed: direct shard files (`a4g.store.shards`) against zarr-python, one run.

Writes the same shard of fp16 targets and latents both ways into one store layout and reads clips of
rows back both ways; reports seconds and the zarr ÷ direct ratios. Defaults are the 256 px store of
DINOv2-B + SAM2.1 (16×16 tokens, 1024 channels) with 128-frame shards.

    python benchmarks/store.py --json store.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from a4g.store import FeatureStore
from a4g.store.fake import make_index, make_schema
from a4g.store.shards import open_rows


def make_store(root: Path, frames: int, shard: int, channels: tuple[int, int], grid: int) -> FeatureStore:
    """One video of `frames` frames; two fake encoders of `channels` on a `grid` x `grid` token grid."""
    lengths = {"v": frames}
    schema = make_schema(
        lengths,
        encoders=[(f"enc{i}", c) for i, c in enumerate(channels)],
        grid=(grid, grid),
        size=16 * grid,
        shard_frames=shard,
        root=str(root),
    )
    return FeatureStore.create(root / "store", schema, make_index(lengths))


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shard-frames", type=int, default=128)
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--channels", default="768,256")
    ap.add_argument("--clip", type=int, default=16, help="rows per read, every 3rd row (a training clip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    channels = tuple(int(c) for c in args.channels.split(","))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp), 2 * args.shard_frames, args.shard_frames, channels, args.grid)
        targets = (rng.standard_normal(store.array("targets").shape[1:]) * 0.03).astype(np.float16)
        data = np.broadcast_to(targets, (args.shard_frames, *targets.shape)).copy()
        data += rng.standard_normal(data.shape).astype(np.float16) * np.float16(0.001)
        direct = open_rows(store.path, "targets")
        zarr_arr = store.array("targets")
        n = args.shard_frames
        write_direct = timed(lambda: direct.write_shard(0, data), args.repeat)
        write_zarr = timed(lambda: zarr_arr.__setitem__(slice(n, 2 * n), data), args.repeat)
        rows = np.arange(0, 3 * args.clip, 3)
        read_direct = timed(lambda: direct.read(rows), args.repeat)
        read_zarr = timed(lambda: zarr_arr.get_orthogonal_selection((rows,)), args.repeat)
        assert np.array_equal(zarr_arr[0:n], data) and np.array_equal(direct.read(np.arange(n, 2 * n)), data)
    mib = data.nbytes / 2**20
    report = {
        "shard": {"frames": n, "targets_mib": round(mib, 1), "channels": channels, "grid": args.grid},
        "write_s": {
            "direct": write_direct,
            "zarr": write_zarr,
            "zarr_over_direct": write_zarr / write_direct,
        },
        "read_clip_s": {
            "direct": read_direct,
            "zarr": read_zarr,
            "zarr_over_direct": read_zarr / read_direct,
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
