"""End-to-end extraction on CPU with tiny random-weight encoders and real + synthetic clips."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from a4g.cli import app
from a4g.encoders import create_encoder, create_vae, square_frames
from a4g.sources import build_source
from a4g.sources.synthetic import synthetic_frames
from a4g.store import FeatureStore
from a4g.video import write_video

runner = CliRunner()
TINY = [
    "--encoders",
    "dinov2_tiny,sam2.1_tiny",
    "--vae",
    "tiny",
    "--random-init",
    "--size",
    "32",
    "--sam-res",
    "64",
    "--no-progress",
]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory, real_clips) -> Path:
    """Two classes: a real clip (120 frames) and synthetic clips, plus a truncated and a fake video."""
    root = tmp_path_factory.mktemp("videos")
    (root / "real").mkdir()
    shutil.copyfile(real_clips / "carphone_pristine.mp4", root / "real" / "carphone.mp4")
    data = (real_clips / "bikes.mp4").read_bytes()
    (root / "real" / "broken.mp4").write_bytes(data[: len(data) // 2])
    for i, n in enumerate((9, 14)):
        write_video(root / "synth" / f"s{i}.mp4", synthetic_frames("square", i, n, 40, 52))
    (root / "synth" / "fake.avi").write_bytes(b"RIFF not really an avi" * 20)
    return root


def _extract(tmp: Path, root: Path, *extra: str, name: str = "store") -> FeatureStore:
    out = tmp / name
    result = runner.invoke(
        app, ["extract", "--dataset", str(root), "--out", str(out), *TINY, "--num-workers", "0", *extra]
    )
    assert result.exit_code == 0, result.output
    return FeatureStore.open(out)


@pytest.fixture(scope="module")
def store(tmp_path_factory, clip_folder) -> FeatureStore:
    return _extract(
        tmp_path_factory.mktemp("x"), clip_folder, "--shard-frames", "16", "--every", "2", "--hflip"
    )


def test_store_is_complete_and_verifies(store: FeatureStore):
    assert store.complete and store.verify() == []
    info = store.info()
    assert [e["name"] for e in info["encoders"]] == ["dinov2_tiny", "sam2.1_tiny"]
    assert info["random_init"] and info["flip"]
    assert {Path(s["path"]).name for s in info["skipped"]} == {"broken.mp4", "fake.avi"}


def test_lengths_are_decoded_frame_counts(store: FeatureStore):
    # every=2 keeps frames 0, 2, 4, ...: ceil(n / 2) of each video's decoded frames
    assert dict(zip(store.index.ids, store.index.lengths.tolist(), strict=True)) == {
        "real/carphone.mp4": 60,
        "synth/s0.mp4": 5,
        "synth/s1.mp4": 7,
    }
    assert store.index.classes == ["real", "synth"]
    assert store.index.labels.tolist() == [0, 1, 1]


def _frames_of(store: FeatureStore, video: int, local: list[int], flip: bool = False) -> torch.Tensor:
    every = store.schema.preprocess.every
    raw = build_source("folder", store.schema.dataset.root).read(
        store.index.paths[video], [i * every for i in local]
    )
    return square_frames(raw, store.schema.preprocess.size, hflip=flip)


@pytest.mark.parametrize("flip", [False, True])
def test_targets_equal_encoders_called_directly(store: FeatureStore, flip: bool):
    """Stored targets = timm / sam2 run on the same preprocessed frames, pooled, normalized, concatenated."""
    video, local = 0, [0, 17, 33, 59]  # frames across shard boundaries of the real clip
    frames = _frames_of(store, video, local, flip)
    rows = store.index.offsets[video] + np.array(local)
    suffix = "_flip" if flip else ""
    stored = torch.from_numpy(
        store.array("targets" + suffix).get_orthogonal_selection((rows,)).astype(np.float32)
    )
    grid = store.schema.token_grid
    for spec in store.schema.encoders:
        enc = create_encoder(spec.name, random_init=True, dino_res=spec.input_size, sam_res=spec.input_size)
        x = enc.preprocess(frames)
        if spec.package == "timm":
            direct = enc.model.forward_features(x)[:, enc.model.num_prefix_tokens :]
        else:
            direct = enc.model(x)["vision_features"].flatten(2).transpose(1, 2)
        gh, gw = spec.native_grid
        pooled = F.adaptive_avg_pool2d(direct.transpose(1, 2).reshape(len(local), -1, gh, gw), grid)
        want = F.normalize(pooled.flatten(2).transpose(1, 2), dim=-1)
        a, b = store.schema.fusion.slices[spec.name]
        cos = F.cosine_similarity(stored[..., a:b], want, dim=-1)
        assert cos.min() >= 0.999, (spec.name, cos.min())


def test_latents_equal_diffusers_moments(store: FeatureStore):
    frames = _frames_of(store, 1, [0, 4])
    vae = create_vae("tiny", random_init=True)
    x = frames.float() / 127.5 - 1
    with torch.no_grad():
        want = vae.vae.encode(x).latent_dist.parameters
    rows = store.index.offsets[1] + np.array([0, 4])
    got = store.array("latents").get_orthogonal_selection((rows,)).astype(np.float32)
    np.testing.assert_allclose(got, want.numpy(), rtol=2e-3, atol=2e-3)


def test_dry_run_writes_nothing(tmp_path, clip_folder):
    out = tmp_path / "dry"
    result = runner.invoke(
        app, ["extract", "--dataset", str(clip_folder), "--out", str(out), *TINY, "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "storage" in result.output and "/frame" in result.output and "2 skipped" in result.output
    assert not out.exists()


def test_reopening_with_other_config_is_refused(store: FeatureStore, clip_folder):
    args = [
        "extract",
        "--dataset",
        str(clip_folder),
        "--out",
        store.path,
        *TINY,
        "--shard-frames",
        "16",
        "--every",
        "1",
        "--hflip",
        "--num-workers",
        "0",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert "preprocess.every: store has 2, this run 1" in result.output


def test_resume_after_losing_shards_in_flight_is_identical(tmp_path, clip_folder, store: FeatureStore):
    """A crash leaves shards without markers (and possibly partial files): rerun fills exactly those."""
    again = _extract(tmp_path, clip_folder, "--shard-frames", "16", "--every", "2", "--hflip", name="again")
    done = FeatureStore.open(again.path, writable=True).group["done"]
    done[1] = 0
    done[3] = 0
    (Path(again.path) / "targets" / "c" / "1" / "0" / "0").write_bytes(b"garbage from a killed writer")
    assert FeatureStore.open(again.path).done_shards() == [0, 2, 4]
    resumed = _extract(tmp_path, clip_folder, "--shard-frames", "16", "--every", "2", "--hflip", name="again")
    assert resumed.verify() == []
    for name in store.array_names:
        np.testing.assert_array_equal(resumed.array(name)[:], store.array(name)[:])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "a4g.cli", *args]


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, clip_folder):
    args = ["extract", "--dataset", str(clip_folder), *TINY, "--shard-frames", "4", "--num-workers", "1"]
    args += ["--batch", "2"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    ref = subprocess.run(
        _cli(*args, "--out", str(tmp_path / "ref"), "--num-workers", "0"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(*args, "--out", str(out)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    killed_at = None
    while proc.poll() is None and time.monotonic() < deadline:
        done_dir = out / "done" / "c"
        if done_dir.is_dir() and any(done_dir.iterdir()):
            proc.send_signal(signal.SIGKILL)
            killed_at = len(list(done_dir.iterdir()))
            break
        time.sleep(0.01)
    proc.wait()
    assert killed_at is not None, "the run never finished a shard"
    store = FeatureStore.open(out)
    assert not store.complete, "killed too late to test resuming; make the run longer"
    resumed = subprocess.run(
        _cli(*args, "--out", str(out), "--num-workers", "0"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    verify = subprocess.run(_cli("store", "verify", str(out)), env=env, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert not list(out.rglob(".*.partial")), "a killed writer's temporary files must not outlive the resume"
    a, b = FeatureStore.open(out), FeatureStore.open(tmp_path / "ref")
    for name in a.array_names:
        np.testing.assert_array_equal(a.array(name)[:], b.array(name)[:])


@pytest.mark.slow
def test_two_ranks_with_torchrun_equal_one_rank(tmp_path, clip_folder):
    """torchrun gives each rank OMP_NUM_THREADS=1, so the 1-rank reference runs with one thread too."""
    args = ["extract", "--dataset", str(clip_folder), *TINY, "--shard-frames", "16", "--every", "2"]
    args += ["--hflip", "--num-workers", "0"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    one = subprocess.run(_cli(*args, "--out", str(tmp_path / "one")), env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "a4g.cli",
        *args,
        "--out",
        str(tmp_path / "two"),
    ]
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    a, b = FeatureStore.open(tmp_path / "one"), FeatureStore.open(tmp_path / "two")
    assert b.verify() == [] and a.schema.fingerprint == b.schema.fingerprint
    for name in a.array_names:
        np.testing.assert_array_equal(b.array(name)[:], a.array(name)[:])
