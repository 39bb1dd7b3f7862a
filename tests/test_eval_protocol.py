"""What `a4g eval` scores and how: a sample manifest's files exactly, refusals of mixed folders, the real
clips' stride (explicit or the run's), and cached real statistics (`--real-stats`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import a4g
from a4g.cli import app
from a4g.metrics.clips import plan_clips, read_clip
from a4g.sources import build_source
from a4g.sources.synthetic import synthetic_frames
from a4g.train.sample_manifest import SampleManifest, SampleSettings, write_manifest
from a4g.video import decode_video, write_video

runner = CliRunner()
FRAMES = 10  # I3D takes 9 or more


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args, "--no-progress", "--num-workers", "0", "--device", "cpu"])


def clip_folder(folder: Path, names: tuple[str, ...], frames: int = FRAMES) -> Path:
    """Synthetic 32x32 videos ``NAME.mp4``; the name picks the shape and its seed index (``circle_3``)."""
    for name in names:
        shape, index = name.rsplit("_", 1)
        write_video(folder / f"{name}.mp4", synthetic_frames(shape, int(index), frames, 32, 32))
    return folder


def sample_set(folder: Path, names: tuple[str, ...], run: Path | None = None, num: int | None = None) -> Path:
    """A folder as `a4g sample` leaves it: videos, a preview grid that is not one of them, samples.json."""
    clip_folder(folder, names)
    clip_folder(folder / "preview", ("stripes_9",))  # a video eval must never score
    (folder / "preview" / "stripes_9.mp4").rename(folder / "preview" / "grid.mp4")
    settings = SampleSettings(
        run=str(run or folder), run_created="2026-01-01T00:00:00+00:00", checkpoint_step=6, weights="ema",
        seed=0, sampler="ddpm", steps=4, guidance=1.0, class_id=None, frames=FRAMES, size=(32, 32), fps=8,
        vae="tiny", vae_sha256="random",
    )  # fmt: skip
    files = [f"{n}.mp4" for n in names]
    write_manifest(
        folder,
        SampleManifest(a4g_version=a4g.__version__, settings=settings, num=num or len(files), files=files),
    )
    return folder


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    return clip_folder(tmp_path_factory.mktemp("real"), ("circle_0", "square_0", "stripes_0"))


def fvd(real: Path, fake: Path, i3d: Path, *extra: str):
    args = ("fvd", "--real", str(real), "--fake", str(fake), "--i3d", str(i3d), "--size", "32", "--json")
    return invoke(*args, "--frames", str(FRAMES), *extra)


def test_the_manifest_files_are_scored_not_the_preview(real, standins, tmp_path):
    fake = sample_set(tmp_path / "set", ("circle_0", "square_0"))
    res = fvd(real, fake, standins["i3d"], "--num", "2", "--real-start", "first")
    assert res.exit_code == 0, res.output
    plain = fvd(
        real, clip_folder(tmp_path / "plain", ("circle_0", "square_0")), standins["i3d"], "--num", "2"
    )
    assert json.loads(res.stdout)["fvd"] == json.loads(plain.stdout)["fvd"]  # the same two videos
    three = fvd(real, fake, standins["i3d"], "--num", "3")  # the preview would have made a third
    assert three.exit_code == 2
    assert "only 2 videos available, --num asks for 3 (2 videos listed in samples.json)" in three.output


def test_mixed_unfinished_or_unlisted_folders_are_refused(real, standins, tmp_path):
    sample_set(tmp_path / "both" / "a", ("circle_0", "square_0"))
    sample_set(tmp_path / "both" / "b", ("circle_1", "square_1"))
    res = fvd(real, tmp_path / "both", standins["i3d"], "--num", "2")
    assert res.exit_code == 2 and "mixes 2 sample sets (a/samples.json, b/samples.json)" in res.output
    stray = sample_set(tmp_path / "stray", ("circle_0", "square_0"))
    clip_folder(stray, ("stripes_1",))
    res = fvd(real, stray, standins["i3d"], "--num", "2")
    assert res.exit_code == 2 and "holds 1 videos that" in res.output and "stripes_1.mp4" in res.output
    unfinished = sample_set(tmp_path / "cut", ("circle_0", "square_0"), num=4)
    res = fvd(real, unfinished, standins["i3d"], "--num", "2")
    assert res.exit_code == 2 and "sampling did not finish (2 of 4 videos" in res.output


def test_real_clips_take_every_stride_th_frame(tmp_path):
    folder = clip_folder(tmp_path / "v", ("circle_0", "square_0"), frames=24)
    source = build_source(str(folder))
    plan = plan_clips(source, 2, 5, seed=1, stride=3)  # span 13 of 24 frames
    for clip in plan.clips:
        assert clip.frames == [clip.start + 3 * k for k in range(5)] and clip.frames[-1] < 24
        whole = decode_video(clip.path)
        assert np.array_equal(read_clip(source, clip), whole[clip.frames])
    assert plan_clips(source, 2, 5, seed=1, stride=6).too_short == 2  # span 25 > 24
    assert "2 shorter than 25 frames skipped" in plan_clips(source, 2, 5, stride=6).describe(5, 6)


def test_real_stride_defaults_to_the_training_stride_on_the_runs_dataset(standins, curve_runs, tmp_path):
    real = clip_folder(tmp_path / "real", ("circle_0", "square_0"), frames=24)  # room for stride 2
    run = tmp_path / "run"  # a run recorded as trained on `real` at stride 2
    shutil.copytree(curve_runs[0.0], run)
    data = json.loads((run / "run.json").read_text())
    data["store"]["dataset"] = {"name": "folder", "root": str(real), "split": None, "fold": None}
    data["data"]["stride"] = 2
    (run / "run.json").write_text(json.dumps(data))
    fake = sample_set(tmp_path / "set", ("circle_0", "square_0"), run=run)
    res = json.loads(fvd(real, fake, standins["i3d"], "--num", "2").stdout)
    assert res["real"]["stride"] == 2 and res["real"]["stride_from"] == f"the training stride of {run}"
    assert res["protocol"] == f"fvd2_{FRAMES}f_stride2"
    other = clip_folder(tmp_path / "other", ("circle_1", "square_1"), frames=24)  # not the run's dataset
    res = json.loads(fvd(other, fake, standins["i3d"], "--num", "2").stdout)
    assert (res["real"]["stride"], res["real"]["stride_from"], res["protocol"]) == (
        1,
        "consecutive frames",
        "fvd2_10f",
    )
    res = json.loads(fvd(real, fake, standins["i3d"], "--num", "2", "--real-stride", "1").stdout)
    assert (res["real"]["stride"], res["real"]["stride_from"]) == (1, "--real-stride")


def test_real_stats_are_cached_reused_and_refused_under_another_protocol(
    real, standins, tmp_path, monkeypatch
):
    import a4g.metrics.evaluate as evaluate

    fake = clip_folder(tmp_path / "fake", ("circle_1", "square_1", "stripes_1"))
    cache = tmp_path / "real.npz"
    first = fvd(real, fake, standins["i3d"], "--num", "3", "--real-stats", str(cache))
    assert first.exit_code == 0, first.output
    assert cache.is_file()
    monkeypatch.setattr(evaluate, "_plan_real", lambda *a: pytest.fail("the real side was computed again"))
    second = fvd(real, fake, standins["i3d"], "--num", "3", "--real-stats", str(cache))
    assert second.exit_code == 0, second.output
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert b["fvd"] == a["fvd"] and b["num_real"] == a["num_real"] == 3
    assert f"statistics from {cache}" in b["real"]["clips"]
    res = fvd(real, fake, standins["i3d"], "--num", "3", "--real-stats", str(cache), "--size", "16")
    assert (
        res.exit_code == 2
        and "made under another protocol" in res.output
        and "--size: file has 32, now 16" in res.output
    )
    res = fvd(real, fake, standins["i3d"], "--num", "3", "--real-stats", str(cache), "--real-stride", "2")
    assert res.exit_code == 2 and "--real-stride: file has 1, now 2" in res.output
    fid = invoke("fid", "--real", str(real), "--fake", str(fake), "--inception", str(standins["inception"]),
                 "--num", "20", "--frames", str(FRAMES), "--size", "32", "--real-stats", str(cache))  # fmt: skip
    assert fid.exit_code == 2 and "the metric (fvd / fid): file has 'fvd', now 'fid'" in fid.output


def test_a_real_stats_folder_keeps_one_file_per_protocol(real, standins, tmp_path):
    fake = clip_folder(tmp_path / "fake", ("circle_1", "square_1", "stripes_1"))
    (tmp_path / "stats").mkdir()
    for size in ("32", "16", "32"):
        res = fvd(
            real, fake, standins["i3d"], "--num", "3", "--real-stats", str(tmp_path / "stats"), "--size", size
        )
        assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "stats").glob("fvd-*.npz"))) == 2


def test_sample_8_then_eval_8_works_and_9_is_refused(curve_runs, standins, tmp_path):
    out = tmp_path / "s"
    args = ["sample", "--run", str(curve_runs[0.5]), "--out", str(out), "--vae", "tiny", "--steps", "2"]
    done = runner.invoke(app, [*args, "--num", "8", "--batch-size", "4", "--no-progress"])
    assert done.exit_code == 0, done.output
    real = clip_folder(tmp_path / "real", tuple(f"{s}_{i}" for s in ("circle", "square") for i in range(4)))
    common = ("fvd", "--real", str(real), "--fake", str(out), "--i3d", str(standins["i3d"]), "--frames", "9")
    ok = invoke(*common, "--num", "8", "--size", "32", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["num_fake"] == 8
    nine = invoke(*common, "--num", "9")
    assert nine.exit_code == 2 and "only 8 videos available, --num asks for 9" in nine.output
