"""`a4g sample`: mp4s that decode to the right frames and size, determinism, refusals."""

import re

import av
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from typer.testing import CliRunner

from a4g.cli import app as cli
from a4g.encoders.vae import tiny_vae_config
from a4g.errors import ConfigError
from a4g.train.sample import SampleConfig, SampleRequest, grid, sample_run

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


def sample(run, out, *extra, ok=True):
    args = ["sample", "--run", str(run), "--out", str(out), "--vae", "tiny", "--steps", "4", *extra]
    result = runner.invoke(cli, args)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def decode(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_videos_decode_with_frames_and_size(run, tmp_path):
    out = sample(run, tmp_path / "s", "--num", "3", "--batch-size", "2", "--class", "1").output
    assert "step 4, EMA weights" in out
    videos = sorted((tmp_path / "s").glob("0*.mp4"))
    assert [p.name for p in videos] == ["0000_c1.mp4", "0001_c1.mp4", "0002_c1.mp4"]
    for path in videos:
        assert decode(path).shape == (4, 32, 32, 3)  # 4 frames, 4x4 latents x VAE factor 8
    assert decode(tmp_path / "s" / "grid.mp4").shape == (4, 70, 70, 3)  # 2x2 tiles, 2 px gaps


def test_same_seed_same_videos(run, tmp_path):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        sample(run, tmp_path / name, "--num", "2", "--seed", seed, "--sampler", "ddim", "--no-ema")
    a, b, c = (decode(tmp_path / n / "grid.mp4") for n in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


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
    bad = runner.invoke(cli, ["sample", "--run", str(run), "--out", str(tmp_path / "x"), "--vae", str(other)])
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
    cfg = SampleConfig(run=run, out=tmp_path / "s", vae="tiny", num=3, batch_size=2, steps=2, guidance=2.5)
    paths, step = sample_run(cfg)
    assert seen == [2.5, 2.5] and step == 4 and paths[-1] == tmp_path / "s" / "grid.mp4"


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
