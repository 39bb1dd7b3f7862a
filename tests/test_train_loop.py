"""`a4g train` on CPU: exact resume, λ = 0 baseline, run metadata and logs, refusals, two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from a4g.cli import app as cli
from a4g.train.checkpoint import list_checkpoints, read_step
from a4g.train.loop import TrainConfig, TrainError, check_store
from a4g.train.run_record import ModelKwargs, read_run_record

runner = CliRunner()

TINY = [
    *("--model", "VDiT-tiny", "--frames", "4", "--stride", "2", "--batch-size", "2", "--num-workers", "0"),
    *("--projector-dim", "32", "--log-every", "10"),
]


@pytest.fixture(scope="module")
def store(train_store):
    return train_store


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are all per-op overhead; a second BLAS thread only adds contention on busy CI."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(store, run: Path, *extra: str, ok: bool = True):
    result = runner.invoke(cli, ["train", "--features", str(store.path), "--out", str(run), *TINY, *extra])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_resume_continues_exactly(store, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(store, a, "--steps", "200", "--checkpoint-every", "100", "--hflip")
    assert list(list_checkpoints(a)) == [100, 200]
    out = train(store, a, "--steps", "220", "--checkpoint-every", "100", "--hflip", "--resume").output
    assert "resumed" in out and "from step 200 to 220" in out
    train(store, b, "--steps", "220", "--checkpoint-every", "220", "--hflip")
    ca, cb = list_checkpoints(a)[220], list_checkpoints(b)[220]
    assert read_step(ca) == read_step(cb) == 220
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(ca / name), load_file(cb / name)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    oa, ob = (torch.load(c / "optimizer.bin", weights_only=True) for c in (ca, cb))
    assert all(torch.equal(oa["state"][i]["exp_avg_sq"], ob["state"][i]["exp_avg_sq"]) for i in oa["state"])
    info = json.loads((a / "run.json").read_text())
    assert info["resumed"] == [{"step": 200, "world_size": 1}]
    assert read_run_record(a).config.steps == 220  # the record holds the latest launch's settings


def test_baseline_lambda_zero_leaves_projector_untouched(store, tmp_path):
    run = tmp_path / "run"
    out = train(store, run, "--steps", "6", "--checkpoint-every", "1", "--align-weight", "0").output
    first, last = (load_file(list_checkpoints(run)[s] / "model.safetensors") for s in (1, 6))
    proj = [k for k in first if k.startswith("projector.")]
    assert proj and all(torch.equal(first[k], last[k]) for k in proj)
    assert not torch.equal(first["model.final_layer.linear.weight"], last["model.final_layer.linear.weight"])
    assert "align λ=0.0" in out


def test_run_metadata_logs_and_samples(store, tmp_path):
    run = tmp_path / "run"
    train(
        store,
        run,
        *("--steps", "20", "--align-encoders", "sam2.1_tiny", "--grad-accum", "2", "--objective", "flow"),
        *("--sample-every", "20", "--sample-num", "2", "--vae", "tiny"),
    )
    info = json.loads((run / "run.json").read_text())
    assert info["store"]["fingerprint"] == store.schema.fingerprint and info["store"]["random_init"]
    assert info["model"]["kwargs"] == {
        "input_size": [4, 4],
        "in_channels": 4,
        "num_frames": 4,
        "num_classes": 3,
        "class_dropout_prob": 0.1,
        "patch_size": 2,
        "learn_sigma": False,
    }
    record = read_run_record(run)
    assert record.model.kwargs.input_size == (4, 4) and record.config.objective == "flow"
    assert record.model.name == "VDiT-tiny" and record.resumed == []
    assert info["vae"]["scaling_factor"] == pytest.approx(0.18215) and info["vae"]["name"] == "tiny"
    assert info["align"] == {
        "encoders": ["sam2.1_tiny"],
        "depth": 1,
        "weight": 0.5,
        "target_channels": 32,
        "projector_dim": 32,
    }
    assert info["config"]["grad_accum"] == 2 and info["config"]["objective"] == "flow"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((run / "logs").rglob("events.out.tfevents.*")).parent)).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("loss", "denoise", "align", "cos", "grad_norm", "lr", "frames_per_s"):
        assert f"train/{tag}" in tags
    assert [e.step for e in events.Scalars("train/loss")] == [10, 20]
    assert len(list((run / "samples" / "step_0000020").glob("*.mp4"))) == 3  # 2 videos + grid


def test_refusals_name_the_problem(store, tmp_path):
    run = tmp_path / "run"
    bad = train(store, run, "--steps", "1", "--align-encoders", "dinov2_vitb14", ok=False)
    assert bad.exit_code == 2 and "encoders" in bad.output and "dinov2_vitb14" in bad.output
    bad = train(store, run, "--steps", "1", "--sample-every", "1", ok=False)
    assert bad.exit_code == 2 and "--sample-every needs --vae" in bad.output
    train(store, run, "--steps", "2")
    again = train(store, run, "--steps", "4", ok=False)
    assert again.exit_code == 2 and "--resume" in again.output
    other = train(store, run, "--steps", "4", "--resume", "--lr", "3e-4", ok=False)
    assert other.exit_code == 2 and "--lr: run has 0.0001, now 0.0003" in other.output
    record = run / "run.json"
    record.write_text(record.read_text()[:100])
    broken = train(store, run, "--steps", "4", "--resume", ok=False)
    assert broken.exit_code == 2 and f"{record} is not valid JSON" in broken.output
    cfg = TrainConfig(store=Path(store.path), run=run)
    kwargs = ModelKwargs(
        input_size=(8, 8), in_channels=16, num_frames=4, num_classes=3, class_dropout_prob=0.1, patch_size=2
    )
    with pytest.raises(TrainError, match=r"token_grid: store has \(2, 2\), run wants \[4, 4\]"):
        check_store(store, cfg, kwargs, None)
    with pytest.raises(TrainError, match="vae.latent_channels: store has 4, run wants 16"):
        check_store(store, cfg, kwargs, None)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "-1", "--lr must be a finite number > 0, got -1"),
        ("--ema", "1.5", "--ema must be in [0, 1), got 1.5"),
        ("--align-depth", "0", "--align-depth must be >= 1, got 0"),
    ],
)
def test_bad_values_end_in_one_error_line(store, tmp_path, flag, value, message):
    result = train(store, tmp_path / "run", "--steps", "1", flag, value, ok=False)
    assert result.exit_code == 2 and f"error: {message}" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_two_processes_draw_different_clips_and_stay_in_sync(store, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *("-m", "a4g.cli", "train", "--features", str(store.path), "--out", str(run), *TINY),
        *("--steps", "3", "--checkpoint-every", "3"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "data: the 2 ranks drew different clips" in out
    assert "weights in sync across 2 ranks" in out
    assert "on 2 x cpu" in out
    assert sorted(p.name for p in list_checkpoints(run)[3].glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
