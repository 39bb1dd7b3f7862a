"""`a4g sample`: mp4s that decode to the right frames and size, the manifest, video i depending only on
(seed, i), resuming and refusing a used --out, the EMA warning, torchrun and kill -9 (slow)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from typer.testing import CliRunner

from a4g.cli import app as cli
from a4g.encoders.vae import tiny_vae_config
from a4g.errors import ConfigError
from a4g.train.checkpoint import find_checkpoint, read_ema_header
from a4g.train.run_record import read_run_record
from a4g.train.sample import (
    SampleConfig,
    SampleError,
    SampleRequest,
    generate_batch,
    grid,
    load_vae,
    model_from_run,
    objective_from_run,
    sample_run,
    video_labels,
)
from a4g.train.sample_manifest import read_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory, train_store):
    """A 4-step tiny class-conditional run on the shared store (checkpoints at steps 2 and 4)."""
    store = train_store
    path = tmp_path_factory.mktemp("sample") / "run"
    args = [
        "train",
        "--features",
        str(store.path),
        "--out",
        str(path),
        "--model",
        "VDiT-tiny",
        "--frames",
        "4",
    ]
    args += ["--stride", "2", "--batch-size", "2", "--num-workers", "0", "--projector-dim", "32"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    result = runner.invoke(cli, [*args, "--steps", "4", "--checkpoint-every", "2"])
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def one_thread():
    """Float results then depend on the ops alone, not on how a kernel splits work across threads, so
    two processes (or a process and this one) draw bit-identical videos."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sample(run, out, *extra, ok=True):
    args = ["sample", "--run", str(run), "--out", str(out), "--vae", "tiny", "--steps", "4", "--no-progress"]
    result = runner.invoke(cli, [*args, *extra])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def decode(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def videos_of(folder):
    """{file name: decoded frames} of the set that folder's manifest lists."""
    return {name: decode(folder / name) for name in read_manifest(folder).files}


def test_videos_manifest_and_preview(run, tmp_path):
    out = sample(run, tmp_path / "s", "--num", "3", "--batch-size", "2", "--class", "1").output
    assert "step 4, EMA weights" in out and "the set of 3 videos is complete" in out
    videos = sorted(p.name for p in (tmp_path / "s").glob("*.mp4"))
    assert videos == ["0000_c1.mp4", "0001_c1.mp4", "0002_c1.mp4"]  # nothing else a video scan would see
    for name in videos:
        assert decode(tmp_path / "s" / name).shape == (4, 32, 32, 3)  # 4 frames, 4x4 latents x VAE factor 8
    assert decode(tmp_path / "s" / "preview" / "grid.mp4").shape == (4, 70, 70, 3)  # 2x2 tiles, 2 px gaps
    m = read_manifest(tmp_path / "s")
    assert m.files == videos and m.num == 3 and m.complete and m.ema_updates == 4
    s = m.settings
    assert (s.checkpoint_step, s.weights, s.seed, s.sampler, s.steps) == (4, "ema", 0, "ddpm", 4)
    assert (s.guidance, s.class_id, s.frames, s.size, s.fps) == (4.0, 1, 4, (32, 32), 8)
    assert s.run == str(run.resolve()) and s.vae == "tiny"


def test_video_depends_only_on_seed_and_index(run, tmp_path):
    """The same video whether drawn alone or in a batch of 3, and whatever --num asks for."""
    record = read_run_record(run)
    model = model_from_run(record)
    from a4g.train.checkpoint import load_model_weights

    model.load_state_dict(load_model_weights(find_checkpoint(run), use_ema=False))
    model.eval()
    vae, objective = load_vae("tiny", record.vae), objective_from_run(record)
    req = SampleRequest(num=3, steps=3, seed=5)
    labels = video_labels(range(3), model.num_classes, req)
    together = generate_batch(model, objective, vae, req, [0, 1, 2], labels)
    alone = np.concatenate(
        [generate_batch(model, objective, vae, req, [i], labels[i : i + 1]) for i in range(3)]
    )
    # float32 kernels are chosen by batch shape, so the last bits may differ between the two; three
    # steps of a tiny model keep that far below half a uint8 level, so rounding moves a pixel by one at most
    assert np.abs(together.astype(int) - alone).max() <= 1
    assert not np.array_equal(together[0], together[1])  # and the videos do differ from each other
    assert video_labels(range(5), model.num_classes, req)[:3] == labels  # a longer set keeps its first
    for name, num in (("two", "2"), ("three", "3")):  # one batch size: the files are then bit-identical
        sample(run, tmp_path / name, "--num", num, "--seed", "5", "--no-ema", "--batch-size", "1")
    two, three = videos_of(tmp_path / "two"), videos_of(tmp_path / "three")
    assert set(two) < set(three) and all(np.array_equal(two[n], three[n]) for n in two)


def test_same_seed_same_videos(run, tmp_path):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        sample(run, tmp_path / name, "--num", "2", "--seed", seed, "--sampler", "ddim", "--no-ema")
    a, b, c = (decode(tmp_path / n / "preview" / "grid.mp4") for n in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_resume_extends_and_skips_finished_videos(run, tmp_path):
    out = tmp_path / "s"
    sample(run, out, "--num", "2")
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    more = sample(run, out, "--num", "3").output
    assert "sampled 1 videos (2 already there)" in more
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4") if p.name in first} == first
    again = sample(run, out, "--num", "2").output  # fewer than the folder holds: nothing to draw
    assert "sampled 0 videos (3 already there)" in again and "set of 3 videos is complete" in again
    assert len(read_manifest(out).files) == 3


def test_other_settings_or_stray_videos_are_refused(run, tmp_path):
    out = tmp_path / "s"
    sample(run, out, "--num", "1")
    bad = sample(run, out, "--num", "1", "--steps", "3", "--seed", "2", ok=False)
    assert bad.exit_code == 2 and "other settings" in bad.output
    assert "--steps: folder has 4, now 3" in bad.output and "--seed: folder has 0, now 2" in bad.output
    bad = sample(run, out, "--num", "1", "--no-ema", ok=False)
    assert bad.exit_code == 2 and "--ema/--no-ema: folder has 'ema', now 'live'" in bad.output
    stray = tmp_path / "stray"
    stray.mkdir()
    shutil.copy(next(out.glob("0000*.mp4")), stray / "old.mp4")
    bad = sample(run, stray, "--num", "1", ok=False)
    assert bad.exit_code == 2 and "1 videos that are not part of this sample set (e.g. old.mp4)" in bad.output


def test_out_that_cannot_be_written_fails_before_the_model_loads(run, tmp_path, monkeypatch):
    import a4g.train.sample as sample_module

    monkeypatch.setattr(sample_module, "_draw", lambda *a: pytest.fail("sampled into an unusable --out"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SampleError, match=r"--out .*file/sub cannot be written"):
        sample_run(SampleConfig(run=run, out=tmp_path / "file" / "sub", vae="tiny", num=1, progress=False))


def test_interrupted_run_resumes_to_the_same_set(run, tmp_path, monkeypatch, one_thread):
    import a4g.train.sample as sample_module

    sample(run, tmp_path / "clean", "--num", "3", "--batch-size", "1")
    real_write, calls = sample_module.write_video, []

    def dies_on_second(path, frames, fps):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C between two videos
        real_write(path, frames, fps=fps)

    monkeypatch.setattr(sample_module, "write_video", dies_on_second)
    broken = sample(run, tmp_path / "cut", "--num", "3", "--batch-size", "1", ok=False)
    assert broken.exit_code == 130
    m = read_manifest(tmp_path / "cut")
    assert not m.complete and m.files == []  # the pending manifest: eval refuses the folder
    monkeypatch.setattr(sample_module, "write_video", real_write)
    assert (
        "sampled 2 videos (1 already there)"
        in sample(run, tmp_path / "cut", "--num", "3", "--batch-size", "1").output
    )
    clean, cut = videos_of(tmp_path / "clean"), videos_of(tmp_path / "cut")
    assert clean.keys() == cut.keys() and all(np.array_equal(clean[n], cut[n]) for n in clean)


def test_ema_warm_up_is_recorded_and_a_plain_ema_warns(run, tmp_path):
    record = read_run_record(run)
    assert record.ema.warmup == "diffusers" and record.ema.decay == 0.9999
    assert read_ema_header(find_checkpoint(run))["ema_updates"] == "4"
    assert "warning" not in sample(run, tmp_path / "a", "--num", "1").output
    old = tmp_path / "old_run"  # a run from before the warm-up: plain EMA at 0.9999
    shutil.copytree(run, old)
    data = json.loads((old / "run.json").read_text())
    data["ema"] = {"decay": 0.9999, "warmup": "none"}
    (old / "run.json").write_text(json.dumps(data))
    out = sample(old, tmp_path / "b", "--num", "1").output
    assert "warning: the EMA weights of step 4 are still 100% the initial random weights" in out
    assert "--no-ema" in out
    assert "warning" not in sample(old, tmp_path / "c", "--num", "1", "--no-ema").output


def test_checkpoint_choice_and_refusals(run, tmp_path):
    assert "step 2" in sample(run, tmp_path / "s2", "--num", "1", "--checkpoint", "2").output
    bad = sample(run, tmp_path / "x", "--checkpoint", "3", ok=False)
    assert bad.exit_code == 2 and "no checkpoint at step 3" in bad.output and "[2, 4]" in bad.output
    bad = sample(run, tmp_path / "x", "--sampler", "euler", ok=False)
    assert bad.exit_code == 2 and "objective 'ddpm'" in bad.output and "ddim" in bad.output
    bad = sample(run, tmp_path / "x", "--class", "7", ok=False)
    assert bad.exit_code == 2 and "--class 7 is out of range: the run has 3 classes" in bad.output
    other = tmp_path / "other_vae"
    AutoencoderKL(**tiny_vae_config()).save_config(other)
    bad = runner.invoke(cli, ["sample", "--run", str(run), "--out", str(tmp_path / "y"), "--vae", str(other)])
    assert bad.exit_code == 2 and "vae.name: store has 'tiny'" in bad.output


def test_grid_tiles_videos():
    videos = np.stack([np.full((2, 4, 6, 3), i * 40, np.uint8) for i in range(1, 4)])
    g = grid(videos, pad=1)
    assert g.shape == (2, 12, 16, 3)  # 2 rows x 2 cols of 4x6 tiles with 1 px gaps, padded to even
    assert (g[:, 1:5, 1:7] == 40).all() and (g[:, 6:10, 1:7] == 120).all() and (g[:, 6:10, 8:14] == 0).all()


def test_request_takes_guidance_not_cfg():
    """``cfg`` means a config everywhere else in a4g; the guidance scale has its own name."""
    assert SampleRequest(guidance=1.5).guidance == 1.5
    with pytest.raises(TypeError, match="cfg"):
        SampleRequest(cfg=4.0)


def test_guidance_reaches_the_sampler(run, tmp_path, monkeypatch):
    """A 4-step tiny run's cond and null-class outputs differ by less than a uint8 step, so the scale
    is checked where it enters the sampler rather than in the decoded videos."""
    import a4g.train.sample as sample_module

    seen = []

    def spy(*args):
        seen.append(args[6])  # sample(model, objective, shape, sampler, steps, y, cfg_scale, generator)
        return real(*args)

    real = sample_module.sample
    monkeypatch.setattr(sample_module, "sample", spy)
    cfg = SampleConfig(
        run=run, out=tmp_path / "s", vae="tiny", num=3, batch_size=2, steps=2, guidance=2.5, progress=False
    )
    result = sample_run(cfg)
    assert seen == [2.5, 2.5] and result.step == 4 and result.complete and result.sampled == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num": 0}, "--num must be >= 1, got 0"),
        ({"guidance": float("nan")}, "--cfg must be a finite number >= 0, got nan"),
        ({"class_id": -1}, "--class must be >= 0, got -1"),
        ({"frames": 0}, "--frames must be >= 1, got 0"),
        ({"fps": 0}, "--fps must be >= 1, got 0"),
    ],
)
def test_bad_values_are_refused_before_the_run_is_read(tmp_path, change, message):
    cfg = SampleConfig(run=tmp_path / "no_run", out=tmp_path / "out", vae="tiny", **change)
    with pytest.raises(ConfigError, match=re.escape(message)):
        sample_run(cfg)


# ------------------------------------------------------------------------- several processes, kill -9

TIMEOUT = 240  # seconds any one subprocess may take on a loaded 2-core CI machine


def cli_args(run, out, num):
    # --run-dir / --num-videos: torchrun's argparse would take --run / --num for its own flags
    return ["sample", "--run-dir", str(run), "--out", str(out), "--vae", "tiny", "--steps", "4"] + [
        *("--num-videos", str(num), "--batch-size", "1", "--no-progress", "--device", "cpu")
    ]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}


@pytest.mark.slow
def test_torchrun_two_processes_draw_the_same_set(run, tmp_path, one_thread):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--nproc_per_node", "2", "-m", "a4g.cli", *cli_args(run, tmp_path / "two", 3)]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0/2: sampled 2 videos" in done.stdout and "rank 1/2: sampled 1 videos" in done.stdout
    sample(run, tmp_path / "one", "--num", "3", "--batch-size", "1")
    one, two = videos_of(tmp_path / "one"), videos_of(tmp_path / "two")
    assert one.keys() == two.keys() and all(np.array_equal(one[n], two[n]) for n in one)


@pytest.mark.slow
def test_kill_9_mid_sample_then_the_same_command_gives_the_same_set(run, tmp_path, one_thread):
    out, args = tmp_path / "killed", cli_args(run, tmp_path / "killed", 24)
    proc = subprocess.Popen([sys.executable, "-m", "a4g.cli", *args], env=env(), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not list(out.glob("000[0-9]_c*[0-9].mp4")) and time.monotonic() < deadline:
            time.sleep(0.02)  # the first finished video: the run is mid-way
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=TIMEOUT)
    before = read_manifest(out)
    assert before is not None and not before.complete  # killed before the end
    finished = len(list(out.glob("*_c*[0-9].mp4")))
    assert 1 <= finished < 24
    again = sample(run, out, "--num", "24", "--batch-size", "1").output
    assert f"sampled {24 - finished} videos ({finished} already there)" in again
    sample(run, tmp_path / "clean", "--num", "24", "--batch-size", "1")
    clean, killed = videos_of(tmp_path / "clean"), videos_of(out)
    assert clean.keys() == killed.keys() and all(np.array_equal(clean[n], killed[n]) for n in clean)
