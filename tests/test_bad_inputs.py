"""Issue 10's bad inputs that need more than a flag parser: runs and checkpoints that are damaged, locked,
diverged or out of room, output folders that belong to something else, weights that would run code,
and Ctrl-C while a command starts.

The table below runs each case through the app (CliRunner, like test_cli_errors.py's parse-time table)
and asserts exit code 2, one `error:` line naming the flag, file or field, no traceback, and that
nothing was lost: the run's checkpoints are the same files before and after. Recoveries (a damaged
newest checkpoint, ``--force`` past an unreadable RNG state) are separate tests after the table.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TRAIN_TINY, check_one_error_line
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from a4g.cli import app
from a4g.encoders.vae import tiny_vae_config, write_vae_config
from a4g.errors import A4GError
from a4g.runlock import LOCK_FILE, DirLock
from a4g.train import checkpoint
from a4g.train.checkpoint import damage, list_checkpoints
from a4g.train.guards import LossWatch
from a4g.train.loop import TrainConfig, Trainee

runner = CliRunner()
PWNED = "pwned"  # the file a malicious pickle would create when its code ran


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def made_run(random_train_store, tmp_path_factory) -> Path:
    """A 4-step run with checkpoints at steps 2 and 4, trained once; tests damage copies of it."""
    run = tmp_path_factory.mktemp("made") / "run"
    result = train(random_train_store.path, run, "--steps", "4", "--checkpoint-every", "2")
    assert result.exit_code == 0, result.output
    return run


class Evil:
    """Unpickling this runs ``touch FOLDER/pwned``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        return (os.system, (f"touch {self.folder / PWNED}",))


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> Path:
    """Weights files that would run code when unpickled: a torch file, a plain pickle, a VAE folder."""
    root = tmp_path_factory.mktemp("evil")
    torch.save({"state_dict": Evil(root)}, root / "evil.pth")
    (root / "evil.pkl").write_bytes(pickle.dumps({"params": Evil(root)}))
    write_vae_config(root / "vae", tiny_vae_config())
    torch.save({"encoder.conv_in.weight": Evil(root)}, root / "vae" / "diffusion_pytorch_model.bin")
    (root / "videos").mkdir()
    return root


def train(store, run, *extra):
    return runner.invoke(app, ["train", "--features", str(store), "--out", str(run), *TRAIN_TINY, *extra])


def truncate(path: Path, keep: int = 5) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def poison(path: Path) -> None:
    """One NaN in a safetensors file, as a diverged run would have saved it."""
    weights = load_file(path)
    weights[next(iter(weights))].view(-1)[0] = float("nan")
    save_file(weights, path)


def ckpt(run: Path, step: int) -> Path:
    return list_checkpoints(run)[step]


def files_of(run: Path) -> dict[str, bytes]:
    """Every file under the run's checkpoints, by relative path (what must not change on a refusal)."""
    root = run / "checkpoints"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# What each case does to a copy of `made_run` (or the folders around it) before the command runs.
DAMAGE = {
    "none": lambda run, tmp: None,
    "run.json": lambda run, tmp: truncate(run / "run.json", 40),
    "all-models": lambda run, tmp: [
        truncate(p / "model.safetensors") for p in list_checkpoints(run).values()
    ],
    "rng": lambda run, tmp: truncate(ckpt(run, 4) / "random_states_0.pkl", 50),
    "nan-ema": lambda run, tmp: poison(ckpt(run, 4) / "ema.safetensors"),
    "nan-model": lambda run, tmp: poison(ckpt(run, 4) / "model.safetensors"),
    "ema": lambda run, tmp: truncate(ckpt(run, 4) / "ema.safetensors"),
    "model": lambda run, tmp: truncate(ckpt(run, 4) / "model.safetensors"),
    "state": lambda run, tmp: truncate(ckpt(run, 4) / "trainer_state.json", 3),
    "foreign": lambda run, tmp: (tmp / "mine").mkdir() or (tmp / "mine" / "thesis.tex").write_text("%"),
}

_T = ["train", "--features", "{store}", *TRAIN_TINY, "--steps", "6", "--checkpoint-every", "2"]
_S = ["sample", "--vae", "tiny", "--num", "1", "--steps", "2", "--out", "{tmp}/samples"]
_EVIL_VIDEOS = ["--dataset", "{evil}/videos"]

# (id, damage, command line, text the one error line must contain). {run}: the damaged copy.
CASES = [
    ("train --out STORE", "none", [*_T, "--out", "{store}"], "is a feature store"),
    ("train --out STORE/run", "none", [*_T, "--out", "{store}/run"], "lies inside"),
    ("train --out foreign folder", "foreign", [*_T, "--out", "{tmp}/mine"], "not an a4g run"),
    ("train --resume, run.json truncated", "run.json", [*_T, "--out", "{run}", "--resume"], "run.json"),
    (
        "train --resume, every model truncated",
        "all-models",
        [*_T, "--out", "{run}", "--resume"],
        "model.safetensors",
    ),
    ("train --resume, RNG state unreadable", "rng", [*_T, "--out", "{run}", "--resume"], "--force"),
    ("train --lr 1e20 (diverges)", "none", [*_T, "--out", "{tmp}/nan", "--lr", "1e20"], "--lr"),
    ("sample, NaN EMA weights", "nan-ema", [*_S, "--run", "{run}"], "NaN"),
    ("sample --no-ema, NaN weights", "nan-model", [*_S, "--run", "{run}", "--no-ema"], "NaN"),
    ("sample, ema.safetensors truncated", "ema", [*_S, "--run", "{run}"], "ema.safetensors"),
    ("sample --no-ema, model truncated", "model", [*_S, "--run", "{run}", "--no-ema"], "model.safetensors"),
    ("sample, trainer_state.json truncated", "state", [*_S, "--run", "{run}"], "trainer_state.json"),
    ("sample, run.json truncated", "run.json", [*_S, "--run", "{run}"], "run.json"),
    ("sample --cfg inf", "none", [*_S, "--run", "{run}", "--cfg", "inf"], "--cfg"),
    ("sample --cfg nan", "none", [*_S, "--run", "{run}", "--cfg", "nan"], "--cfg"),
    (
        "extract --vae DIR with a code-running .bin",
        "none",
        [
            *("extract", *_EVIL_VIDEOS, "--out", "{tmp}/st", "--no-random-init"),
            *("--vae", "{evil}/vae", "--encoders", "dinov2_tiny"),
        ],
        "diffusion_pytorch_model.bin is refused",
    ),
    (
        "iicr --weights dinov2=code-running .pth",
        "none",
        [
            *("iicr", *_EVIL_VIDEOS, "--out", "{tmp}/ii", "--no-random-init"),
            *("--encoders", "dinov2_vits14", "--weights", "dinov2_vits14={evil}/evil.pth"),
        ],
        "evil.pth is refused",
    ),
    (
        "iicr --weights sam2.1=code-running .pth",
        "none",
        [
            *("iicr", *_EVIL_VIDEOS, "--out", "{tmp}/ii", "--no-random-init"),
            *("--encoders", "sam2.1_hiera_t", "--weights", "sam2.1_hiera_t={evil}/evil.pth"),
        ],
        "evil.pth is refused",
    ),
    (
        "eval fvd --i3d code-running pickle",
        "none",
        ["eval", "fvd", "--real", "{evil}/videos", "--fake", "{evil}/videos", "--i3d", "{evil}/evil.pkl"],
        "--i3d",
    ),
    (
        "eval fid --inception code-running .pth",
        "none",
        [
            "eval",
            "fid",
            "--real",
            "{evil}/videos",
            "--fake",
            "{evil}/videos",
            "--inception",
            "{evil}/evil.pth",
        ],
        "--inception",
    ),
]


@pytest.mark.parametrize(("damage_name", "argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(
    damage_name, argv, needle, made_run, random_train_store, evil, tmp_path, monkeypatch
):
    monkeypatch.setenv("A4G_CACHE", str(tmp_path / "empty-cache"))  # no cached detectors or weights
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    DAMAGE[damage_name](run, tmp_path)
    before = files_of(run)
    fill = {"store": random_train_store.path, "run": run, "tmp": tmp_path, "evil": evil}
    result = runner.invoke(app, [a.format(**fill) for a in argv])
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    check_one_error_line(result.exit_code, result.stderr, needle.format(**fill))
    assert files_of(run) == before  # nothing of the run was lost or rewritten
    assert not (evil / PWNED).exists()  # no pickled code ran
    assert not (Path(random_train_store.path) / "run").exists() and not list(tmp_path.rglob("*.mp4"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
@pytest.mark.parametrize("cmd", ["train", "sample", "extract", "iicr"])
def test_unwritable_out_is_one_error_line(cmd, made_run, random_train_store, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    argv = {
        "train": ["train", "--features", str(random_train_store.path), *TRAIN_TINY],
        "sample": ["sample", "--run", str(made_run), "--vae", "tiny"],
        "extract": ["extract", "--dataset", "demo", "--vae", "tiny", "--random-init"],
        "iicr": ["iicr", "--dataset", "demo", "--random-init"],
    }[cmd]
    result = runner.invoke(app, [*argv, "--out", str(locked / "out")])
    check_one_error_line(result.exit_code, result.stderr, "--out")


def test_a_locked_run_names_its_holder(made_run, random_train_store, tmp_path):
    """A second trainer on one --out: refused, naming the folder and the process that holds it."""
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    before = files_of(run)
    with DirLock(run):  # flock is per open file: this process's own lock blocks a second claim too
        result = train(random_train_store.path, run, "--steps", "6", "--resume")
    check_one_error_line(result.exit_code, result.stderr, f"--out {run} is in use by pid {os.getpid()}")
    assert files_of(run) == before and not (run / LOCK_FILE).exists()


def test_a_dead_holders_lock_is_taken_over_with_a_warning(made_run, random_train_store, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    holder = {
        "pid": int(dead.stdout),
        "host": socket.gethostname(),
        "started": "then",
        "command": "a4g train",
    }
    (run / LOCK_FILE).write_text(json.dumps(holder))
    result = train(random_train_store.path, run, "--steps", "6", "--checkpoint-every", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert f"locked by pid {holder['pid']}" in result.output and "taking the lock over" in result.output
    assert list(list_checkpoints(run)) == [2, 4, 6] and not (run / LOCK_FILE).exists()


@pytest.mark.parametrize(
    "name", ["model.safetensors", "ema.safetensors", "optimizer.bin", "trainer_state.json"]
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(
    name, made_run, random_train_store, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    truncate(ckpt(run, 4) / name, 3)
    result = train(random_train_store.path, run, "--steps", "6", "--checkpoint-every", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert f"step_0000004/{name} is missing or damaged" in result.output and "resumed" in result.output
    assert "at step 2" in result.output
    assert list(list_checkpoints(run)) == [2, 4, 6] and damage(ckpt(run, 4)) is None  # step 4 made again


def test_force_resumes_past_an_unreadable_rng_state(made_run, random_train_store, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    truncate(ckpt(run, 4) / "random_states_0.pkl", 50)
    result = train(
        random_train_store.path, run, "--steps", "6", "--checkpoint-every", "2", "--resume", "--force"
    )
    assert result.exit_code == 0, result.output
    assert "random_states_0.pkl cannot be read" in result.output and "--force" in result.output
    assert list(list_checkpoints(run)) == [2, 4, 6]


def test_diverging_run_stops_at_the_first_bad_step_and_keeps_the_last_good_checkpoint(
    random_train_store, tmp_path
):
    run = tmp_path / "run"
    result = train(random_train_store.path, run, "--steps", "6", "--checkpoint-every", "1", "--lr", "1e20")
    check_one_error_line(result.exit_code, result.stderr, "training stopped at step ")
    bad = int(result.stderr.split("training stopped at step ")[1].split(":")[0])
    assert list(list_checkpoints(run)) == list(range(1, bad))  # every step before it saved, none after
    for path in list_checkpoints(run).values():
        for name in ("model.safetensors", "ema.safetensors"):
            assert all(torch.isfinite(v).all() for v in load_file(path / name).values()), (path, name)


def test_gpu_path_reports_the_first_bad_step_at_the_next_read(tmp_path):
    """On a GPU the check waits for the next log or save (no host sync per step) but names the first bad
    step; simulated on CPU by switching the watch to its sync-free mode."""
    cfg = TrainConfig(store=tmp_path, run=tmp_path / "run", log_every=5, checkpoint_every=10, steps=20)
    watch = LossWatch(cfg, torch.device("cpu"))
    watch.sync_free = True
    good, nan = torch.tensor(1.0), torch.tensor(float("nan"))
    for step, loss in [(1, good), (2, good), (3, nan), (4, good)]:
        watch.see(step, {"loss": loss, "grad_norm": good})  # no read yet: steps 3 and 4 are not log points
    with pytest.raises(A4GError, match="stopped at step 3: the loss is nan"):
        watch.see(5, {"loss": good, "grad_norm": good})


def test_disk_full_while_saving_is_one_error_and_keeps_the_last_checkpoint(
    random_train_store, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    real = checkpoint.save_file

    def full_at_step_4(tensors, filename, *args, **kwargs):
        if "step_0000004" in str(filename):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full_at_step_4)
    result = train(random_train_store.path, run, "--steps", "6", "--checkpoint-every", "2")
    check_one_error_line(result.exit_code, result.stderr, "disk full while saving")
    assert "checkpoint step 2 is intact" in result.stderr and "--resume" in result.stderr
    assert list(list_checkpoints(run)) == [2] and damage(ckpt(run, 2)) is None
    assert not list((run / "checkpoints").glob("*.partial"))  # the half-written copy gave its space back


def test_out_of_memory_names_batch_size(random_train_store, tmp_path, monkeypatch):
    """On CPU nothing is estimated (see guards.explain_out_of_memory); what the allocator raises is named."""

    def no_room(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Trainee, "forward", no_room)
    result = train(random_train_store.path, tmp_path / "run", "--steps", "2")
    check_one_error_line(result.exit_code, result.stderr, "--batch-size 2 does not fit in GPU memory")
    assert "--grad-accum" in result.stderr


def test_malicious_init_weights_are_refused(evil):
    from a4g.train.init_from import read_weights

    with pytest.raises(A4GError, match="evil.pth"):
        read_weights(evil / "evil.pth")
    assert not (evil / PWNED).exists()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.02, 0.1, 0.3, 1.0])
def test_ctrl_c_during_start_up_is_one_line(delay, random_train_store, tmp_path):
    """SIGINT at several moments once Python and runpy are up (the signal may land in a4g.cli's imports,
    typer's parsing or the command): one line, exit 130. Before a4g.cli's first line nothing of ours
    runs, so the harness imports runpy and the `a4g` package first and says "ready". CPython reports a
    KeyboardInterrupt caught inside code run by exec() (dataclass and namedtuple creation) as a death
    by SIGINT, which a shell shows as 130 too, so -SIGINT counts as 130."""
    ready = (
        "import runpy, sys, importlib.util, a4g; importlib.util.find_spec('a4g.cli'); "
        "sys.argv = ['a4g', *sys.argv[1:]]; sys.stderr.write('ready\\n'); sys.stderr.flush(); "
    )
    run_cli = "runpy.run_module('a4g.cli', run_name='__main__')"
    argv = ["train", "--features", str(random_train_store.path), "--out", str(tmp_path / "run"), *TRAIN_TINY]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", ready + run_cli, *argv, "--steps", "1000"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stderr.readline() == "ready\n"
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert "Traceback" not in stderr and stderr.strip().startswith("error: interrupted"), stderr
    assert stderr.count("error:") == 1


def _garbage_root(store: Path) -> None:
    (store / "zarr.json").write_text("garbage")


def _garbage_index_chunk(store: Path) -> None:
    next((store / "index").rglob("c/0")).write_bytes(b"garbage")


STORE_DAMAGE = [
    pytest.param(_garbage_root, id="garbage zarr.json"),
    pytest.param(_garbage_index_chunk, id="damaged index chunk"),
]


@pytest.mark.parametrize("spoil", STORE_DAMAGE)
@pytest.mark.parametrize("cmd", ["store verify", "store info", "train"])
def test_a_damaged_store_is_one_error_line(cmd, spoil, random_train_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(random_train_store.path, store)
    spoil(store)
    tail = ["--out", str(tmp_path / "run"), *TRAIN_TINY] if cmd == "train" else []
    flag = ["--features"] if cmd == "train" else []
    result = runner.invoke(app, [*cmd.split(), *flag, str(store), *tail])
    check_one_error_line(result.exit_code, result.stderr, str(store))
