"""Training survives SIGKILL anywhere: ``python -m a4g.cli train`` is killed in the middle of a save, just
before a save's rename and between steps, resumed after each kill, and its final checkpoint must equal
an uninterrupted run's bit for bit (model, EMA and optimizer state).

Exact points inside a save come from the test hook ``A4G_TEST_KILL_AT=PHASE:STEP`` in
``a4g/train/checkpoint.py``; the kill between steps is sent by this test when the child logs a step.
Every kill also leaves the run's lock file behind, so each resume shows the dead holder's lock taken
over. Bounded: three killed subprocesses (each pays ~3-6 s of interpreter and torch start on 2 cores)
and two in-process runs. ``benchmarks/train_kill_sweep.py`` sweeps more points (>= 10, saves included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import TRAIN_TINY
from typer.testing import CliRunner

from a4g.cli import app
from a4g.runlock import LOCK_FILE
from a4g.train.checkpoint import KILL_ENV, differences, list_checkpoints

pytestmark = pytest.mark.slow

STEPS, EVERY = 8, 2
ARGS = [*TRAIN_TINY, "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--log-every", "1"]
CHILD_TIMEOUT_S = 180  # a hung child is killed and fails the test instead of hanging the suite


@pytest.fixture(autouse=True)
def one_thread():
    """The subprocesses run with one thread (OMP_NUM_THREADS=1); so must the in-process runs, since a
    different BLAS thread count may split float sums differently and bit-equality would then fail."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def launch(store: Path, run: Path, *extra: str, kill_at: str = "", kill_after: str = "") -> tuple[int, str]:
    """Run ``python -m a4g.cli train`` until it ends, or SIGKILL it when a line starts with ``kill_after``.

    ``kill_at`` sets the save hook (``PHASE:STEP``). Returns the exit status (-9: killed) and the output.
    """
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", KILL_ENV: kill_at}
    argv = [sys.executable, "-m", "a4g.cli", "train", "--features", str(store), "--out", str(run)]
    proc = subprocess.Popen(
        [*argv, *ARGS, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    watchdog = threading.Timer(CHILD_TIMEOUT_S, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if kill_after and line.startswith(kill_after):
                proc.send_signal(signal.SIGKILL)
                break
        lines.append(proc.stdout.read())
        code = proc.wait()
    finally:
        watchdog.cancel()
    return code, "".join(lines)


def cli_train(store: Path, run: Path, *extra: str) -> str:
    result = CliRunner().invoke(app, ["train", "--features", str(store), "--out", str(run), *ARGS, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_killed_and_resumed_training_equals_an_uninterrupted_run(random_train_store, tmp_path):
    store, run, reference = Path(random_train_store.path), tmp_path / "run", tmp_path / "reference"
    cli_train(store, reference)
    killed = -signal.SIGKILL

    # 1. killed inside the save of step 4: model, optimizer and RNG written, EMA and step file not yet
    code, out = launch(store, run, kill_at="state:4")
    assert code == killed, out
    assert list(list_checkpoints(run)) == [2] and (run / "checkpoints" / "step_0000004.partial").is_dir()

    # 2. resumed from step 2, killed with step 6 complete but not yet renamed
    code, out = launch(store, run, "--resume", kill_at="rename:6")
    assert code == killed, out
    assert "resumed" in out and "at step 2" in out and "taking the lock over" in out
    assert list(list_checkpoints(run)) == [2, 4] and (run / "checkpoints" / "step_0000006.partial").is_dir()

    # 3. resumed from step 4 (a .partial never counts), killed by this test once step 7 is logged
    code, out = launch(store, run, "--resume", kill_after=f"step {7:>7}")
    assert code in (killed, 0), out  # 0 only if the child finished before the signal landed
    assert "at step 4" in out

    # 4. resumed in-process to the end
    cli_train(store, run, "--resume")
    assert list(list_checkpoints(run))[-1] == STEPS
    assert differences(list_checkpoints(run)[STEPS], list_checkpoints(reference)[STEPS]) == []
    assert not list((run / "checkpoints").glob("*.partial")) and not (run / LOCK_FILE).exists()


def test_a_second_trainer_on_the_same_out_is_refused_while_the_first_runs(random_train_store, tmp_path):
    """Issue 10: two `a4g train` on one --out both ran and overwrote each other's checkpoints."""
    store, run = Path(random_train_store.path), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    argv = [
        sys.executable,
        "-m",
        "a4g.cli",
        "train",
        "--features",
        str(store),
        "--out",
        str(run),
        *TRAIN_TINY,
    ]
    first = subprocess.Popen(
        [*argv, "--steps", "1000000", "--checkpoint-every", "1000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        holder = _wait_for_holder(run / LOCK_FILE, first)
        second = CliRunner().invoke(app, ["train", "--features", str(store), "--out", str(run), *ARGS])
        assert second.exit_code == 2 and second.stderr.startswith("error: "), second.output
        assert f"--out {run} is in use by pid {holder}" in second.stderr and second.stderr.count("\n") == 1
    finally:
        first.kill()
        first.wait()
    assert list(list_checkpoints(run)) == []  # the refused one wrote nothing, the first had no save due


def _wait_for_holder(lock: Path, proc: subprocess.Popen) -> int:
    """The pid written into the lock file, once the child has taken the lock (it checks its store first)."""
    deadline = threading.Event()
    timer = threading.Timer(CHILD_TIMEOUT_S, deadline.set)
    timer.start()
    try:
        while not deadline.wait(0.05):
            assert proc.poll() is None, "the first trainer ended before taking the lock"
            text = lock.read_text() if lock.is_file() else ""
            if text.strip():
                return json.loads(text)["pid"]
        raise AssertionError(f"{lock} never appeared")
    finally:
        timer.cancel()
