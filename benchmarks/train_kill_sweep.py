"""Kill sweep for `a4g train`: SIGKILL a real training process at >= 10 points (inside saves included),
resume it, and check the final checkpoint equals an uninterrupted run's bit for bit.

Points come three ways:

* ``hook``  - ``A4G_TEST_KILL_AT=PHASE:STEP`` (``a4g/train/checkpoint.py``) kills the process at an
  exact point of the save of STEP: ``begin`` (nothing written), ``state`` (model, optimizer and RNG
  written; EMA and step file not), ``rename`` (all written, not renamed), ``done`` (renamed);
* ``log``   - this script kills the child when it logs step N (so somewhere in step N+1 or its save);
* ``file``  - this script kills the child the moment a file of a save appears (polling every 1 ms),
  i.e. while Accelerate or safetensors is writing it.

Each killed run is resumed in this process (same code path as a new ``a4g train --resume``, without
paying the ~3-6 s interpreter + torch start again) until it reaches the last step; the final model,
EMA and optimizer state are compared with the uninterrupted reference (``a4g.train.checkpoint.
differences``). Everything runs on CPU with one thread, on a seeded random-content store.

    python benchmarks/train_kill_sweep.py            # 14 points, ~3-6 min on 2 busy cores
    python benchmarks/train_kill_sweep.py --json sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from a4g.cli import app  # noqa: E402
from a4g.runlock import LOCK_FILE  # noqa: E402
from a4g.store.fake import random_store  # noqa: E402
from a4g.train.checkpoint import KILL_ENV, differences, list_checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = {"v0": 12, "v1": 10, "v2": 14}
STEPS, EVERY = 8, 2
ARGS = [
    *("--model", "VDiT-tiny", "--frames", "4", "--stride", "1", "--batch-size", "2", "--num-workers", "0"),
    *("--projector-dim", "32", "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--log-every", "1"),
]
CHILD_TIMEOUT_S = 300

# (name, how, argument): hook -> PHASE:STEP, log -> the step whose log line triggers the kill,
# file -> the path (under the run) whose appearance triggers it.
POINTS = [
    ("begin:2", "hook", "begin:2"),
    ("state:2", "hook", "state:2"),
    ("rename:2", "hook", "rename:2"),
    ("done:2", "hook", "done:2"),
    ("after step 3", "log", "3"),
    ("state:4", "hook", "state:4"),
    ("optimizer.bin of step 4 appears", "file", "checkpoints/step_0000004.partial/optimizer.bin"),
    ("after step 5", "log", "5"),
    ("begin:6", "hook", "begin:6"),
    ("model.safetensors of step 6 appears", "file", "checkpoints/step_0000006.partial/model.safetensors"),
    ("rename:6", "hook", "rename:6"),
    ("state:8 (last save)", "hook", "state:8"),
    ("rename:8 (last save)", "hook", "rename:8"),
    ("done:8 (finished)", "hook", "done:8"),
]


@dataclass
class Row:
    point: str
    how: str
    exit_status: int  # -9: killed
    complete_after_kill: list[int]
    partial_left: bool
    resumed_from: int | None  # 0: no checkpoint yet; None: the run was already complete
    lock_taken_over: bool
    bit_identical: bool
    kill_s: float
    resume_s: float


def launch(store: Path, run: Path, env_kill: str, trigger: Callable[[str], bool] | None, watch: Path | None):
    """A real `python -m a4g.cli train` child, killed by the hook, a log line or a file appearing."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env[KILL_ENV] = env_kill
    argv = [sys.executable, "-m", "a4g.cli", "train", "--features", str(store), "--out", str(run), *ARGS]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    timers = [threading.Timer(CHILD_TIMEOUT_S, proc.kill)]
    if watch is not None:
        timers.append(threading.Thread(target=_kill_when_exists, args=(proc, watch), daemon=True))
    for t in timers:
        t.start()
    for line in proc.stdout:
        if trigger is not None and trigger(line):
            proc.send_signal(signal.SIGKILL)
            break
    proc.stdout.read()
    code = proc.wait()
    timers[0].cancel()
    return code


def _kill_when_exists(proc: subprocess.Popen, path: Path) -> None:
    while proc.poll() is None:
        if path.exists():
            proc.send_signal(signal.SIGKILL)
            return
        time.sleep(0.001)


def cli_train(store: Path, run: Path, *extra: str) -> str:
    result = CliRunner().invoke(app, ["train", "--features", str(store), "--out", str(run), *ARGS, *extra])
    if result.exit_code != 0:
        raise RuntimeError(f"train {run} failed:\n{result.output}")
    return result.output


def sweep_point(store: Path, reference: Path, run: Path, name: str, how: str, arg: str) -> Row:
    trigger = (lambda line: line.startswith(f"step {int(arg):>7}")) if how == "log" else None
    watch = run / arg if how == "file" else None
    start = time.perf_counter()
    code = launch(store, run, arg if how == "hook" else "", trigger, watch)
    kill_s = time.perf_counter() - start
    complete = list(list_checkpoints(run))
    partial = any((run / "checkpoints").glob("*.partial")) if (run / "checkpoints").is_dir() else False
    start = time.perf_counter()
    out = cli_train(store, run, "--resume")
    resume_s = time.perf_counter() - start
    resumed = _resumed_from(out)
    final = list_checkpoints(run)[STEPS]
    same = differences(final, list_checkpoints(reference)[STEPS]) == []
    clean = not any((run / "checkpoints").glob("*.partial")) and not (run / LOCK_FILE).exists()
    return Row(
        name,
        how,
        code,
        complete,
        partial,
        resumed,
        "taking the lock over" in out,
        same and clean,
        kill_s,
        resume_s,
    )


def _resumed_from(output: str) -> int | None:
    """The step the resume started at (0: no checkpoint yet), None when the run was already complete."""
    if "nothing to do" in output:
        return None
    if "resumed " not in output:
        return 0
    return int(output.split("resumed ")[1].split(" at step ")[1].split()[0])


def print_table(rows: list[Row]) -> None:
    head = f"{'kill point':<38}{'how':<6}{'exit':>5}  {'complete after kill':<20}{'.partial':<9}"
    head += f"{'resumed from':<13}{'lock taken':<11}{'bit-identical':<14}{'kill s':>7}{'resume s':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.point:<38}{r.how:<6}{r.exit_status:>5}  {str(r.complete_after_kill):<20}"
            f"{'yes' if r.partial_left else 'no':<9}{str(r.resumed_from):<13}"
            f"{'yes' if r.lock_taken_over else 'no':<11}{'YES' if r.bit_identical else 'NO':<14}"
            f"{r.kill_s:>7.1f}{r.resume_s:>9.1f}"
        )
    good = sum(r.bit_identical for r in rows)
    print(f"\n{good} of {len(rows)} kill points resumed bit-identical to the uninterrupted run")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--only", help="comma-separated point names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the children (OMP_NUM_THREADS=1): the same float sums, bit for bit
    points = [p for p in POINTS if not args.only or p[0] in args.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="a4g-kill-sweep-") as tmp:
        root = Path(tmp)
        store = Path(random_store(root / "store", LENGTHS, shard_frames=8).path)
        reference = root / "reference"
        cli_train(store, reference)
        rows = []
        for i, (name, how, arg) in enumerate(points):
            rows.append(sweep_point(store, reference, root / f"run{i}", name, how, arg))
            print(
                f"[{i + 1}/{len(points)}] {name}: {'ok' if rows[-1].bit_identical else 'DIFFERS'}", flush=True
            )
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0 if all(r.bit_identical for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
