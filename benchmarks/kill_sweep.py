"""Kill sweep for `a4g extract`: kill a real extraction at >= 20 points (the store-creation window
and the inside of shard writes included), resume it, and check the store equals an uninterrupted
one bit for bit (every array: latents, targets, the done markers and the index).

Points come four ways:

* ``hook``   - ``A4G_TEST_KILL_AT=POINT`` (``a4g/killpoints.py``) SIGKILLs the process at an exact
  write point: ``store:create-arrays`` (arrays made, schema not written: the creation window),
  ``extract:store-open``, ``extract:before-write:S``, ``store:before-done:S`` (shard S's data
  written, its done marker not), ``extract:after-write:S``;
* ``file``   - this script SIGKILLs the child the moment a path appears (polling every 1 ms), plus
  an optional delay: the store folder (creation in progress), a shard's data file (the writer is
  between the arrays of one shard), the N-th done marker;
* ``signal`` - SIGTERM or SIGINT (Ctrl-C) instead of SIGKILL once the first shard is done;
* ``time``   - SIGKILL at a fraction of the uninterrupted run's wall time.

Each killed run is resumed by the same command in this process (the code path of a new
``a4g extract``, without paying the ~6-15 s of Python + torch start-up again); ``--twice`` points
kill the first resume too. The store must then verify, hold no ``*.partial`` leftovers, and equal
the reference. Everything runs on CPU with tiny random-init encoders on the synthetic set.

    python benchmarks/kill_sweep.py                 # 24 points
    python benchmarks/kill_sweep.py --json sweep.json --only store:   # a subset

Measured on the 2-core development machine (load average ~10 from other jobs): 24 of 24 points
resumed bit-identical, 0 ``*.partial`` files left, every resumed store verified; the kills left
"nothing" (2, during start-up), a store being created (5: group incomplete or no schema yet), and
0-6 of 6 shards done (17, a SIGTERM and a Ctrl-C among them). Reference run 26 s, whole sweep 16 min.

tests/test_extract_kill.py runs four of these points with the same machinery.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import zarr  # noqa: E402

from a4g.killpoints import KILL_ENV  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 6
EXTRACT = [
    *("--encoders", "dinov2_tiny,sam2.1_tiny", "--vae", "tiny", "--random-init", "--size", "32"),
    *("--sam-res", "64", "--num-workers", "0", "--no-progress", "--shard-frames", "8", "--limit-videos", "2"),
]
"""2 synthetic videos x 24 frames = 48 frames = 6 shards of 8 (ids circle_00, circle_01)."""
CHILD_TIMEOUT_S = 300


@dataclass(frozen=True)
class Point:
    name: str
    how: str  # hook | file | signal | time
    arg: str = ""  # hook: the kill point; file: path under the store; time: fraction of the run
    delay_s: float = 0.0  # file: wait this long after the path appears
    sig: int = signal.SIGKILL
    twice: bool = False  # also kill the first resume (at the same point) before resuming again


POINTS = [
    Point("store folder appears", "file", "."),
    Point("store folder + 5 ms", "file", ".", 0.005),
    Point("store folder + 20 ms", "file", ".", 0.020),
    Point("store:create-arrays", "hook", "store:create-arrays"),
    Point("store:create-arrays, resume killed there too", "hook", "store:create-arrays", twice=True),
    Point("extract:store-open", "hook", "extract:store-open"),
    Point("extract:before-write:0", "hook", "extract:before-write:0"),
    Point("store:before-done:0", "hook", "store:before-done:0"),
    Point("extract:after-write:0", "hook", "extract:after-write:0"),
    Point("latents of shard 2 appear", "file", "latents/c/2/0/0/0"),
    Point("latents of shard 2 + 2 ms", "file", "latents/c/2/0/0/0", 0.002),
    Point("targets of shard 3 appear", "file", "targets/c/3/0/0"),
    Point("store:before-done:3", "hook", "store:before-done:3"),
    Point("store:before-done:3, resume killed there too", "hook", "store:before-done:3", twice=True),
    Point("extract:before-write:4", "hook", "extract:before-write:4"),
    Point("done marker 2 appears", "file", "done/c/1"),
    Point("done marker 5 appears", "file", "done/c/4"),
    Point("store:before-done:5 (last shard)", "hook", "store:before-done:5"),
    Point("extract:after-write:5 (finished)", "hook", "extract:after-write:5"),
    Point("SIGTERM after the first shard", "signal", "done/c/0", sig=signal.SIGTERM),
    Point("SIGINT (Ctrl-C) after the first shard", "signal", "done/c/0", sig=signal.SIGINT),
    Point("25% of the run", "time", "0.25"),
    Point("50% of the run", "time", "0.50"),
    Point("75% of the run", "time", "0.75"),
]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "a4g.cli", *args]


def extract_args(data_root: Path, out: Path) -> list[str]:
    return ["extract", "--dataset", "synthetic", "--data-root", str(data_root), *EXTRACT, "--out", str(out)]


def child_env(point: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if point is not None:
        env[KILL_ENV] = point
    return env


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen, deadline: float) -> bool:
    while proc.poll() is None and time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.001)
    return False


def _default_sigint() -> None:
    """A shell starts background jobs with SIGINT ignored, and Python keeps it ignored: give the
    child Ctrl-C's default so the SIGINT point tests a KeyboardInterrupt, not nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_killed(args: list[str], out: Path, point: Point, run_s: float) -> tuple[int, bool]:
    """Start `a4g extract` and kill it at `point`: (exit status, whether the trigger was reached)."""
    hook = point.arg if point.how == "hook" else None
    proc = subprocess.Popen(
        cli(*args),
        env=child_env(hook),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    fired = hook is not None
    if point.how in ("file", "signal"):
        target = out / point.arg
        fired = _wait_for(target.exists, proc, deadline)
    elif point.how == "time":
        start = time.monotonic()
        fired = _wait_for(lambda: time.monotonic() - start >= float(point.arg) * run_s, proc, deadline)
    if point.how != "hook" and fired:
        time.sleep(point.delay_s)
        proc.send_signal(point.sig)
    try:
        return proc.wait(timeout=CHILD_TIMEOUT_S), fired
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(), fired


def resume(args: list[str]) -> tuple[int, str]:
    """The same command again, in this process (exit code, output)."""
    from typer.testing import CliRunner

    from a4g.cli import app

    os.environ.pop(KILL_ENV, None)
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def store_state(out: Path) -> str:
    """What a kill left: no store, a store being created, or how many shards are done."""
    if not out.exists():
        return "nothing"
    try:
        done = zarr.open_group(str(out), mode="r")["done"][:]
    except Exception:
        return "creating (no complete group)"
    if "a4g_schema" not in zarr.open_group(str(out), mode="r").attrs:
        return "creating (no schema)"
    return f"{int((done != 0).sum())}/{len(done)} done"


def store_arrays(out: Path) -> dict[str, np.ndarray]:
    """Every array of the store's Zarr group (latents, targets, done markers, index), by path."""
    group = zarr.open_group(str(out), mode="r")
    with warnings.catch_warnings():  # the store's lock folder (.a4g) is not a Zarr node
        warnings.simplefilter("ignore")
        members = list(group.members(max_depth=None))
    return {name: np.asarray(node[...]) for name, node in members if isinstance(node, zarr.Array)}


def differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    names = sorted(set(a) | set(b))
    return [
        n
        for n in names
        if n not in a or n not in b or a[n].shape != b[n].shape or a[n].tobytes() != b[n].tobytes()
    ]


@dataclass
class Row:
    point: str
    exit_status: int
    reached: bool
    left: str
    resumed: int
    verify: str
    partials: int
    identical: bool
    seconds: float


def sweep_point(point: Point, data_root: Path, work: Path, ref: dict[str, np.ndarray], run_s: float) -> Row:
    """Kill one run at `point` (twice if asked), resume, and compare with the reference arrays."""
    from a4g.store import FeatureStore

    t0 = time.monotonic()
    out = work / point.name.replace(" ", "_").replace(":", "-").replace("/", "-")
    args = extract_args(data_root, out)
    status, reached = run_killed(args, out, point, run_s)
    left = store_state(out)
    if point.twice:
        run_killed(args, out, point, run_s)
    code, output = resume(args)
    verify = "not run"
    if code == 0:
        problems = FeatureStore.open(out).verify()
        verify = "ok" if not problems else "; ".join(problems)[:60]
    else:
        verify = output.strip().splitlines()[-1][:60] if output.strip() else f"exit {code}"
    partials = len(list(out.rglob("*.partial"))) if out.exists() else 0
    same = code == 0 and not differences(store_arrays(out), ref)
    return Row(point.name, status, reached, left, code, verify, partials, same, time.monotonic() - t0)


def reference(data_root: Path, work: Path) -> tuple[dict[str, np.ndarray], float]:
    """An uninterrupted run in a child process (the same start-up as the killed ones) and its time."""
    out = work / "reference"
    t0 = time.monotonic()
    subprocess.run(
        cli(*extract_args(data_root, out)), env=child_env(), check=True, capture_output=True, cwd=ROOT
    )
    return store_arrays(out), time.monotonic() - t0


def materialize(data_root: Path) -> None:
    from a4g.sources import build_source

    build_source("synthetic", data_root)


def table(rows: list[Row]) -> str:
    head = f"{'point':46} {'exit':>5} {'left by the kill':28} {'resume':>6} {'verify':8} {'.partial':>8} {'identical':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        exit_status = str(r.exit_status) if r.reached else f"{r.exit_status}*"
        lines.append(
            f"{r.point:46} {exit_status:>5} {r.left:28} {r.resumed:>6} {r.verify[:8]:8} {r.partials:>8} "
            f"{'yes' if r.identical else 'NO':>9}"
        )
    lines.append("(* the trigger was not reached before the run ended)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--only", help="run only points whose name contains this text")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="a4g_kill_sweep_") as tmp:
        work = Path(tmp)
        materialize(work / "syn")
        ref, run_s = reference(work / "syn", work)
        print(f"reference run: {run_s:.1f} s, {len(ref)} arrays", flush=True)
        rows = []
        for point in POINTS:
            if opts.only and opts.only not in point.name:
                continue
            rows.append(sweep_point(point, work / "syn", work, ref, run_s))
            r = rows[-1]
            print(
                f"  {r.point}: exit {r.exit_status}, left {r.left}, identical {r.identical} ({r.seconds:.0f} s)",
                flush=True,
            )
    print(table(rows))
    same = sum(r.identical for r in rows)
    print(f"{same} of {len(rows)} points resumed bit-identical")
    if opts.json:
        opts.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    sys.exit(0 if same == len(rows) else 1)


if __name__ == "__main__":
    main()
