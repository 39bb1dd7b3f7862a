"""Store I/O side by side, one run: direct shard files (a4g.store.shards.ShardedRows) vs tensorstore
(TensorstoreRows, the zarr3 driver) vs zarr-python, on a local folder and on a local S3 server.

Measures, for the 256 px store of DINOv2-B + SAM2.1 (16×16 tokens, 768 + 256 channels, fp16,
128-frame shards): writing one 128-frame shard of targets, reading a 16-frame clip (every 3rd row,
as training reads), and reading the same clip's SAM channels only (``--align-encoders``). Times are
medians over ``--repeat`` rounds of fresh random clips (warm caches: what a loader worker sees after
its first batches). The S3 part starts moto's server on 127.0.0.1 in a subprocess (the dev extra)
and reads the same clips through tensorstore and through zarr-python on tensorstore's client.

    python benchmarks/store.py --json store.json

Measured here (2 cores, other jobs idle: load average 1-5), ms, lowest-highest median of three runs
(`--repeat 7`):

    local folder              direct       tensorstore   zarr-python
    write 128-frame shard     108-223      76-164        276-468
    read 16-frame clip        7.1-8.9      4.2-11.4      324-478
    read SAM channels only    1.8-1.9      1.6-2.0       35-48
    same file bytes           yes (direct and tensorstore write identical shard files)

    S3 (moto on 127.0.0.1)    tensorstore               zarr-python (on tensorstore's client)
    write 128-frame shard     1030-1580
    read 16-frame clip        495-656 (1 GET/frame)     2570-3350 (~4 GETs/frame: one per inner chunk)
    read SAM channels only    494-686 (1 GET/frame)     588-753 (1 GET/frame)

With the machine loaded by other jobs (load 8-12) every number is 2-4x higher and the local
direct/tensorstore ratios swing both ways (write 0.79-1.02, clip read 0.4-1.4).
moto is a functional server, not a fast one: each ranged GET of a 60 MB shard object costs it
~80 ms of Python, so the S3 times say little about real S3; the GET counts (the client's part) do.
On local folders the direct path and tensorstore are on par; why local stores keep the direct path
is in a4g/store/shards.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from a4g.store import FeatureStore
from a4g.store.fake import make_index, make_schema
from a4g.store.location import StoreLocation, parse_location
from a4g.store.shards import ShardedRows, TensorstoreRows, open_rows


def make_store(location: str, frames: int, shard: int, channels: tuple[int, ...], grid: int) -> FeatureStore:
    """One video of `frames` frames; fake encoders of `channels` on a `grid` x `grid` token grid."""
    lengths = {"v": frames}
    schema = make_schema(
        lengths,
        encoders=[(f"enc{i}", c) for i, c in enumerate(channels)],
        grid=(grid, grid),
        size=16 * grid,
        shard_frames=shard,
    )
    return FeatureStore.create(location, schema, make_index(lengths))


def median_ms(fn: Callable[[int], object], repeat: int) -> float:
    """Median wall time of ``fn(round)`` over `repeat` rounds, after one warm-up round."""
    fn(-1)
    times = []
    for r in range(repeat):
        t = time.perf_counter()
        fn(r)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def clip_rows(rounds: int, frames: int, clip: int, seed: int = 0) -> list[np.ndarray]:
    """One random training clip (every 3rd row) per round; index -1 is the warm-up."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, frames - 3 * clip, size=rounds + 1)
    return [np.arange(s, s + 3 * clip, 3) for s in starts]


def read_table(readers: dict[str, Callable], args, frames: int, cols: tuple[int, int], count=None) -> dict:
    """{backend: {'clip_ms', 'sam_channels_ms'[, 'gets_per_clip']}}: each backend reads the same random
    clips (other clips for the channel subset, so no read finds the previous one cached)."""
    full = clip_rows(args.repeat, frames, args.clip, seed=1)
    sub = clip_rows(args.repeat, frames, args.clip, seed=2)
    out, want = {}, None
    for name, read in readers.items():
        got = read(full[0], None)
        want = got if want is None else want
        assert np.array_equal(got, want), f"{name} reads other values"
        before = count() if count else 0
        out[name] = {
            "clip_ms": median_ms(lambda r, read=read: read(full[r + 1], None), args.repeat),
            "sam_channels_ms": median_ms(lambda r, read=read: read(sub[r + 1], cols), args.repeat),
        }
        if count:  # requests the server saw per read (warm-up rounds included)
            out[name]["gets_per_clip"] = (count() - before) / (2 * (args.repeat + 1))
    return out


def zarr_reader(store: FeatureStore, width: int) -> Callable:
    arr = store.array("targets")

    def read(rows: np.ndarray, cols: tuple[int, int] | None) -> np.ndarray:
        chan = slice(None) if cols is None else slice(cols[0] * width, cols[1] * width)
        return arr.get_orthogonal_selection((rows, slice(None), chan))

    return read


def shard_data(store: FeatureStore, shard: int, seed: int) -> np.ndarray:
    """Targets-like values: a shared pattern plus small noise (compresses like real targets, ~1.1x)."""
    rng = np.random.default_rng(seed)
    frame_shape = store.array("targets").shape[1:]
    base = (rng.standard_normal(frame_shape) * 0.03).astype(np.float16)
    n = store.shard_range(shard)[1] - store.shard_range(shard)[0]
    return base + (rng.standard_normal((n, *frame_shape)) * 0.001).astype(np.float16)


def local_part(root: Path, args, channels: tuple[int, ...]) -> dict:
    store = make_store(str(root / "store"), 2 * args.shard_frames, args.shard_frames, channels, args.grid)
    meta = json.loads((root / "store" / "targets" / "zarr.json").read_text())
    direct = ShardedRows(root / "store" / "targets", meta)
    ts_rows = TensorstoreRows(StoreLocation("file", path=root / "store" / "targets"), meta)
    arr = store.array("targets")
    n = args.shard_frames
    data = shard_data(store, 0, seed=0)
    write = {
        "direct": median_ms(lambda r: direct.write_shard(0, data), args.repeat),
        "tensorstore": median_ms(lambda r: ts_rows.write_shard(1, data), args.repeat),
        "zarr-python": median_ms(lambda r: arr.__setitem__(slice(0, n), data), args.repeat),
    }
    files = [(root / "store" / "targets" / "c" / str(s) / "0" / "0").read_bytes() for s in (0, 1)]
    direct.write_shard(0, data)
    same_bytes = (root / "store" / "targets" / "c" / "0" / "0" / "0").read_bytes() == files[1]
    direct.write_shard(1, shard_data(store, 1, seed=1))
    width = store.schema.layout.target_channel_chunk
    cols = (channels[0] // width, sum(channels) // width)
    readers = {
        "direct": direct.read,
        "tensorstore": TensorstoreRows(StoreLocation("file", path=root / "store" / "targets"), meta).read,
        "zarr-python": zarr_reader(store, width),
    }
    return {
        "write_shard_ms": write,
        "read": read_table(readers, args, 2 * n, cols),
        "same_file_bytes": same_bytes,
    }


SERVER = """
import sys, threading
from werkzeug.serving import make_server
from moto.server import DomainDispatcherApplication, create_backend_app
app, gets = DomainDispatcherApplication(create_backend_app), [0]
def counted(environ, start):
    if environ["PATH_INFO"] == "/__gets":
        start("200 OK", [("Content-Type", "text/plain")])
        return [str(gets[0]).encode()]
    gets[0] += environ["REQUEST_METHOD"] == "GET"
    return app(environ, start)
make_server("127.0.0.1", int(sys.argv[1]), counted, threaded=True).serve_forever()
"""


def s3_part(args, channels: tuple[int, ...]) -> dict:
    """The same reads from moto's S3 server on 127.0.0.1: a subprocess (it does not share our GIL) that
    also counts the GET requests it serves."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stderr=subprocess.DEVNULL)
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )

    def gets() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/__gets", timeout=10) as r:
            return int(r.read())

    try:
        import boto3

        for _ in range(100):
            try:
                boto3.client("s3").create_bucket(Bucket="a4g-bench")
                break
            except Exception:  # not listening yet
                time.sleep(0.1)
        uri = "s3://a4g-bench/store"
        store = make_store(uri, 2 * args.shard_frames, args.shard_frames, channels, args.grid)
        rows = open_rows(store.location, "targets")
        write_ms = median_ms(lambda r: rows.write_shard(0, shard_data(store, 0, seed=0)), 1)
        rows.write_shard(1, shard_data(store, 1, seed=1))
        width = store.schema.layout.target_channel_chunk
        cols = (channels[0] // width, sum(channels) // width)
        readers = {"tensorstore": open_rows(parse_location(uri), "targets").read}
        readers["zarr-python"] = zarr_reader(FeatureStore.open(uri), width)
        read = read_table(readers, args, 2 * args.shard_frames, cols, count=gets)
        return {"write_shard_ms": {"tensorstore": write_ms}, "read": read}
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shard-frames", type=int, default=128)
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--channels", default="768,256")
    ap.add_argument("--clip", type=int, default=16, help="rows per read, every 3rd row (a training clip)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-s3", action="store_true", help="skip the S3 part")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    channels = tuple(int(c) for c in args.channels.split(","))
    from importlib.metadata import version

    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {p: version(p) for p in ("zarr", "tensorstore", "moto")},
        "shard": {"frames": args.shard_frames, "channels": channels, "grid": args.grid, "clip": args.clip},
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["local"] = local_part(Path(tmp), args, channels)
    if not args.no_s3:
        report["s3"] = s3_part(args, channels)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
