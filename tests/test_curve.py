"""`a4g eval curve`: every checkpoint of every run sampled and scored, curve.json + curve.png, samples and
real statistics reused by a second call."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from a4g.cli import app
from a4g.sources.synthetic import synthetic_frames
from a4g.train.sample_manifest import read_manifest
from a4g.video import write_video

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve_real")
    for i in range(3):
        for shape in ("circle", "square"):
            write_video(root / f"{shape}_{i}.mp4", synthetic_frames(shape, i, 12, 32, 32))
    return root


def curve(runs, real, out, standins, *extra):
    args = ["eval", "curve", "--runs", ",".join(str(r) for r in runs), "--real", str(real), "--out", str(out)]
    args += ["--vae", "tiny", "--num", "3", "--steps", "2", "--i3d", str(standins["i3d"]), "--no-progress"]
    args += ["--device", "cpu", "--num-workers", "0", *extra]
    return runner.invoke(app, args)


def test_curve_scores_every_checkpoint_of_every_run(curve_runs, real, standins, tmp_path, monkeypatch):
    runs = [curve_runs[0.0], curve_runs[0.5]]
    res = curve(runs, real, tmp_path / "c", standins, "--fid", "--inception", str(standins["inception"]))
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "c" / "curve.json").read_text())
    assert list(data["runs"]) == [str(r) for r in runs]
    assert data["lambda"] == {str(runs[0]): 0.0, str(runs[1]): 0.5}
    for points in data["runs"].values():
        assert [p["step"] for p in points] == [2, 4, 6]
        assert all(math.isfinite(p["fvd"]) and math.isfinite(p["fid"]) for p in points)
    assert (tmp_path / "c" / "curve.png").read_bytes()[:8] == PNG_MAGIC
    assert f"{runs[1]} (λ=0.5)" in res.output and "step        6  FVD" in res.output
    sets = sorted((tmp_path / "c" / "samples").glob("*/step_*"))
    assert len(sets) == 6 and all(read_manifest(s).settings.checkpoint_step == int(s.name[5:]) for s in sets)
    assert len(list((tmp_path / "c" / "real_stats").glob("*.npz"))) == 2  # one FVD and one FID protocol

    import a4g.metrics.evaluate as evaluate
    import a4g.train.sample as sample

    monkeypatch.setattr(sample, "_draw", lambda *a: pytest.fail("a finished sample set was drawn again"))
    monkeypatch.setattr(evaluate, "_plan_real", lambda *a: pytest.fail("the real side was computed again"))
    again = curve(runs, real, tmp_path / "c", standins, "--fid", "--inception", str(standins["inception"]))
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "c" / "curve.json").read_text())["runs"] == data["runs"]


def test_curve_refusals(curve_runs, real, standins, tmp_path):
    res = curve([tmp_path / "nothing"], real, tmp_path / "c", standins)
    assert res.exit_code == 2 and "is not a training run" in res.output
    res = curve([curve_runs[0.0]], real, tmp_path / "c", standins, "--frames", "8")
    assert res.exit_code == 2 and "--frames 8: I3D needs clips of at least 9 frames" in res.output
