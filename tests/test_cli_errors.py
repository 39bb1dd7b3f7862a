"""Bad input table: every mistake below ends in ONE `error:` line naming the flag (or file), exit code 2,
and no traceback (issue 9: --lr -1, --ema 1.5, --device cuda without a GPU; issue 10's CLI-layer list).

The table runs in-process through the app (CliRunner) because each case would otherwise pay a
~3 s interpreter + torch start; `test_real_entry_point` runs the issue-9 cases through
`python -m a4g.cli`, the entry a person and torchrun use, to show the same holds there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import check_one_error_line
from typer.testing import CliRunner

from a4g.cli import app

# A GPU that is not there: `cuda` on a CPU machine, an index past the last GPU on a GPU machine.
ABSENT_GPU = "cuda:99" if torch.cuda.is_available() else "cuda"


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    (root / "file").write_text("not a folder")
    (root / "text.txt").write_text("hello, not weights\n")
    (root / "videos").mkdir()
    (root / "run").mkdir()
    (root / "run" / "run.json").write_text('{"version": 1, "config": {')  # truncated
    (root / "store").mkdir()
    (root / "store" / "zarr.json").write_text("garbage")
    return root


def base(cmd: str, p: Path) -> list[str]:
    """The valid rest of each command line, so only the flag under test is wrong."""
    return {
        "train": ["train", "--features", str(p / "nostore"), "--out", str(p / "r")],
        "sample": ["sample", "--run", str(p / "run"), "--out", str(p / "s"), "--vae", "tiny"],
        "extract": [
            "extract",
            "--dataset",
            str(p / "videos"),
            "--out",
            str(p / "st"),
            "--vae",
            "tiny",
            "--random-init",
        ],
        "iicr": ["iicr", "--dataset", str(p / "videos"), "--out", str(p / "ii"), "--random-init"],
        "fvd": ["eval", "fvd", "--real", str(p / "videos"), "--fake", str(p / "videos")],
        "fid": ["eval", "fid", "--real", str(p / "videos"), "--fake", str(p / "videos")],
    }[cmd]


# (command, bad flags, text the one error line must contain). `{p}` is the fixture folder.
CASES = [
    ("train", ["--lr", "-1"], "--lr"),
    ("train", ["--lr", "nan"], "--lr"),
    ("train", ["--ema", "1.5"], "--ema"),
    ("train", ["--ema", "2"], "--ema"),
    ("train", ["--ema", "nan"], "--ema"),
    ("train", ["--seed", "-1"], "--seed"),
    ("train", ["--max-grad-norm", "-1"], "--max-grad-norm"),
    ("train", ["--max-grad-norm", "nan"], "--max-grad-norm"),
    ("train", ["--align-depth", "0"], "--align-depth"),
    ("train", ["--model", "VDiT-Q"], "--model"),
    ("train", ["--align-encoders", "a,a"], "--align-encoders"),
    ("train", ["--out", "{p}/file"], "--out"),
    ("train", ["--out", "{p}/file/run"], "--out"),
    ("train", [], "{p}/nostore"),  # --features that does not exist
    ("sample", ["--device", "banana"], "--device"),
    ("sample", ["--device", ABSENT_GPU], "--device"),
    ("sample", ["--out", "{p}/file"], "--out"),
    ("sample", ["--cfg", "nan"], "--cfg"),
    ("sample", ["--class", "x"], "--class"),
    ("sample", ["--num", "0"], "--num"),
    ("sample", [], "run.json"),  # a truncated run record names the file
    ("extract", ["--device", "banana"], "--device"),
    ("extract", ["--device", ABSENT_GPU], "--device"),
    ("extract", ["--out", "{p}/file"], "--out"),
    ("extract", ["--size", "0"], "--size"),
    ("extract", ["--every", "0"], "--every"),
    ("extract", ["--encoders", "dinov2_tiny,dinov2_tiny"], "--encoders"),
    ("extract", ["--weights", "dinov2_tiny"], "--weights"),
    ("extract", ["--weights", "a=x", "--weights", "a=y"], "--weights"),
    ("iicr", ["--out", "{p}/file"], "--out"),
    ("iicr", ["--k", "1"], "--k"),
    ("iicr", ["--k", "eight"], "--k"),
    ("iicr", ["--encoders", "dinov2_tiny,dinov2_tiny"], "--encoders"),
    ("iicr", ["--encoders", "nope"], "--encoders"),
    ("iicr", ["--masks", "{p}/nomasks"], "--masks"),
    ("iicr", ["--size", "0"], "--size"),
    # issue 10: a text file as weights said `error: 101`; now the file and the encoder are named
    (
        "iicr",
        ["--no-random-init", "--encoders", "dinov2_vits14", "--weights", "dinov2_vits14={p}/text.txt"],
        "text.txt",
    ),
    ("iicr", ["--device", "banana"], "--device"),
    ("fvd", ["--device", "banana"], "--device"),
    ("fvd", ["--frames", "5"], "--frames"),
    ("fvd", ["--real-start", "middle"], "--real-start"),
    ("fvd", ["--num", "1"], "--num"),
    ("fvd", ["--i3d", "{p}/text.txt"], "--i3d"),
    ("fvd", ["--i3d", "{p}/missing.npz"], "missing.npz"),
    ("fid", ["--inception", "{p}/text.txt"], "--inception"),
    ("fid", ["--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize(("cmd", "bad", "needle"), CASES, ids=[f"{c}{' '.join(b)}" for c, b, _ in CASES])
def test_bad_input_is_one_error_line(paths, cmd, bad, needle, monkeypatch):
    monkeypatch.setenv("A4G_CACHE", str(paths / "empty-cache"))  # no cached detectors: refusals, not work
    args = base(cmd, paths) + [a.format(p=paths) for a in bad]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    check_one_error_line(result.exit_code, result.stderr, needle.format(p=paths))
    assert not (paths / "r").exists() and not (paths / "s").exists()  # refused before writing anything


def test_store_commands_name_the_store(paths):
    for args in (["store", "info", str(paths / "store")], ["store", "verify", str(paths / "file")]):
        result = CliRunner().invoke(app, args)
        check_one_error_line(result.exit_code, result.stderr, str(paths))


def test_unknown_flag_and_command_are_one_line_too(paths):
    for args, needle in ((["train", "--bogus"], "--bogus"), (["trian"], "trian")):
        result = CliRunner().invoke(app, args)
        check_one_error_line(result.exit_code, result.stderr, needle)


def test_ctrl_c_is_one_line_and_130(paths, monkeypatch):
    import a4g.store

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(a4g.store.FeatureStore, "open", interrupted)
    result = CliRunner().invoke(app, ["store", "info", str(paths / "store")])
    assert (
        result.exit_code == 130
        and result.stderr.startswith("error: interrupted")
        and result.stderr.count("\n") == 1
    )


def test_help_of_a_group_is_still_help():
    result = CliRunner().invoke(app, ["eval"])
    assert "fvd" in result.output and "error:" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize("bad", [["--lr", "-1"], ["--ema", "1.5"], ["--device", ABSENT_GPU]], ids=str)
def test_real_entry_point(paths, bad):
    """Issue 9's three, through `python -m a4g.cli` (--device on `sample`: train picks its GPU itself)."""
    cmd = "sample" if bad[0] == "--device" else "train"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "a4g.cli", *base(cmd, paths), *bad],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    check_one_error_line(proc.returncode, proc.stderr, bad[0])
    assert proc.stdout == ""
