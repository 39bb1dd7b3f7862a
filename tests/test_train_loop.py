"""`a4g train` on CPU: exact resume from `--out` alone, λ = 0 baseline, run metadata and logs, refusals,
two processes; issue 13's wiring: --learn-sigma, --init-from, the clip schedule, --keep-last, trackers,
the progress bar, VAE shift and --vae as a Hugging Face repo id."""

import io
import json
import os
import shutil
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


pytestmark = pytest.mark.usefixtures("one_thread")


def train(store, run: Path, *extra: str, ok: bool = True):
    result = runner.invoke(cli, ["train", "--features", str(store.path), "--out", str(run), *TINY, *extra])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_resume_continues_exactly(store, tmp_path):
    """`a4g train --out RUN --resume --steps N`, no other flag: the record supplies every setting."""
    a, b = tmp_path / "a", tmp_path / "b"
    train(store, a, "--steps", "30", "--checkpoint-every", "15", "--hflip", "--learn-sigma")
    assert list(list_checkpoints(a)) == [15, 30]
    resumed = runner.invoke(cli, ["train", "--out", str(a), "--resume", "--steps", "36"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed" in resumed.output and "from step 30 to 36" in resumed.output
    train(store, b, "--steps", "36", "--checkpoint-every", "36", "--hflip", "--learn-sigma")
    ca, cb = list_checkpoints(a)[36], list_checkpoints(b)[36]
    assert read_step(ca) == read_step(cb) == 36
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(ca / name), load_file(cb / name)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    oa, ob = (torch.load(c / "optimizer.bin", weights_only=True) for c in (ca, cb))
    assert all(torch.equal(oa["state"][i]["exp_avg_sq"], ob["state"][i]["exp_avg_sq"]) for i in oa["state"])
    info = json.loads((a / "run.json").read_text())
    assert info["resumed"] == [{"step": 30, "world_size": 1}]
    assert read_run_record(a).config.steps == 36  # the record holds the latest launch's settings


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
    assert info["model"]["pos_embed"] == "mae" and info["init"] is None
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
    assert "train/vlb" not in tags  # only --learn-sigma splits the denoising loss
    grid_image = events.Images("samples/grid")[-1]  # sample videos reach the tracker (a filmstrip)
    assert grid_image.step == 20 and grid_image.width > grid_image.height
    assert len(list((run / "samples" / "step_0000020").rglob("*.mp4"))) == 3  # 2 videos + preview grid


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


# ------------------------------------------------------------------------ issue 13: training wiring


def scalars(run: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((run / "logs").rglob("events.out.tfevents.*")).parent)).Reload()
    return [e.value for e in events.Scalars(tag)]


def test_learn_sigma_logs_mse_and_vlb_and_samples(store, tmp_path):
    run = tmp_path / "run"
    out = train(
        store,
        run,
        *("--steps", "10", "--learn-sigma", "--sample-every", "10", "--sample-num", "2"),
        "--vae",
        "tiny",
    ).output
    assert "mse" in out and "vlb" in out
    mse, vlb, denoise = (scalars(run, f"train/{k}") for k in ("mse", "vlb", "denoise"))
    assert len(mse) == len(vlb) == len(denoise) == 1
    assert denoise[0] == pytest.approx(mse[0] + vlb[0], rel=1e-5)  # the hybrid loss is their sum (fp32 means)
    assert vlb[0] > 0  # a KL / NLL in bits, never negative
    assert read_run_record(run).model.kwargs.learn_sigma
    samples = run / "samples" / "step_0000010"
    assert len(list(samples.rglob("*.mp4"))) == 3  # 2 videos + grid, drawn with the learned variance


def test_init_from_loads_weights_reports_and_is_recorded(store, tmp_path):
    src, run, fresh = tmp_path / "src", tmp_path / "run", tmp_path / "fresh"
    train(store, src, "--steps", "3", "--lr", "1e-2")
    source = load_file(list_checkpoints(src)[3] / "ema.safetensors")
    out = train(store, run, "--steps", "1", "--init-from", str(list_checkpoints(src)[3])).output
    assert f"init from a4g: {len(source)} tensors loaded, 0 skipped, 0 newly initialized" in out
    train(store, fresh, "--steps", "1")
    started, scratch = (load_file(list_checkpoints(r)[1] / "model.safetensors") for r in (run, fresh))
    # Adam's first step moves each weight by at most lr (m̂/√v̂ = ±1), so a loaded start stays within lr.
    near = max((started[f"model.{k}"] - v).abs().max().item() for k, v in source.items())
    far = max((scratch[f"model.{k}"] - v).abs().max().item() for k, v in source.items())
    assert near <= 1.01e-4 < far
    init = read_run_record(run).init
    assert init.layout == "a4g" and init.loaded == len(source) and (init.skipped, init.new) == (0, 0)
    resumed = runner.invoke(cli, ["train", "--out", str(run), "--resume", "--steps", "2"])
    assert resumed.exit_code == 0 and "init from" not in resumed.output  # a resume takes the checkpoint
    assert read_run_record(run).init == init
    bad = train(store, tmp_path / "bad", "--steps", "1", "--init-from", str(tmp_path / "nope.pt"), ok=False)
    assert bad.exit_code == 2 and "nope.pt: no such file" in bad.output and "Traceback" not in bad.output


DIT_NAMES = {"patch_embed.": "x_embedder.proj.", "y_embedder.table.": "y_embedder.embedding_table."}


def as_dit_checkpoint(a4g_weights: dict, path: Path) -> dict:
    """facebookresearch/DiT's layout: its names, image blocks only (a4g's even = spatial blocks), nested
    under "ema" with the training "args" as DiT's train.py saves them."""
    import argparse
    import re

    dit = {}
    for key, value in a4g_weights.items():
        block = re.match(r"blocks\.(\d+)\.(.+)", key)
        if block and int(block.group(1)) % 2:
            continue  # temporal block: DiT has none
        if block:
            key = f"blocks.{int(block.group(1)) // 2}.{block.group(2)}"
        for ours, theirs in DIT_NAMES.items():
            key = theirs + key.removeprefix(ours) if key.startswith(ours) else key
        dit[key] = value.clone()
    torch.save({"ema": dit, "args": argparse.Namespace(model="DiT-tiny")}, path)
    return dit


def test_init_from_a_dit_checkpoint_fills_the_spatial_blocks(store, tmp_path):
    src, run = tmp_path / "src", tmp_path / "run"
    train(store, src, "--steps", "2", "--lr", "1e-2")
    ours = load_file(list_checkpoints(src)[2] / "ema.safetensors")
    dit = as_dit_checkpoint(ours, tmp_path / "dit.pt")
    out = train(
        store, run, "--steps", "1", "--init-from", str(tmp_path / "dit.pt"), "--init-layout", "dit"
    ).output
    temporal = [k for k in ours if k.startswith("blocks.") and int(k.split(".")[1]) % 2]
    assert f"init from dit: {len(dit)} tensors loaded, 0 skipped, {len(temporal)} newly initialized" in out
    init = read_run_record(run).init
    assert (init.layout, init.loaded, init.new) == ("dit", len(dit), len(temporal))


def test_gradient_clipping_starts_after_clip_after(store, tmp_path):
    """Clipping to 1e-6 changes Adam's step (the gradients sink to its eps); before --clip-after it must not act."""
    runs = {
        "none": ("--max-grad-norm", "0"),
        "later": ("--max-grad-norm", "1e-6", "--clip-after", "2"),
        "now": ("--max-grad-norm", "1e-6", "--clip-after", "0"),
    }
    weights = {}
    for name, flags in runs.items():
        train(store, tmp_path / name, "--steps", "2", *flags)
        weights[name] = load_file(list_checkpoints(tmp_path / name)[2] / "model.safetensors")
    key = "model.final_layer.linear.weight"
    assert all(torch.equal(weights["none"][k], weights["later"][k]) for k in weights["none"])
    assert not torch.equal(weights["none"][key], weights["now"][key])
    assert read_run_record(tmp_path / "later").config.clip_after == 2


def test_keep_last_deletes_old_checkpoints_after_a_newer_one_is_complete(store, tmp_path):
    run = tmp_path / "run"
    out = train(store, run, "--steps", "4", "--checkpoint-every", "1", "--keep-last", "2").output
    assert list(list_checkpoints(run)) == [3, 4] and "removed step_0000002 (--keep-last 2)" in out


def test_prune_keeps_what_a_crash_or_damage_needs(store, tmp_path):
    from a4g.train.checkpoint import EMA_FILE, checkpoint_root
    from a4g.train.retention import TRASH_SUFFIX, prune_checkpoints

    run = tmp_path / "run"
    train(store, run, "--steps", "4", "--checkpoint-every", "1")
    root = checkpoint_root(run)
    (root / "step_0000005.partial").mkdir()  # a save killed before its rename: not a checkpoint
    (root / f"step_0000000{TRASH_SUFFIX}").mkdir()  # a delete killed after its rename
    ema = root / "step_0000004" / EMA_FILE
    ema.write_bytes(ema.read_bytes()[:100])  # the newest is damaged: it must not count as kept
    gone = prune_checkpoints(run, keep=2)
    assert [p.name for p in gone] == ["step_0000001"]
    assert list(list_checkpoints(run)) == [2, 3, 4]
    assert (root / "step_0000005.partial").is_dir() and not (root / f"step_0000000{TRASH_SUFFIX}").exists()
    for step in (2, 4):
        shutil.rmtree(root / f"step_{step:07d}")
    assert prune_checkpoints(run, keep=1) == [] and list(list_checkpoints(run)) == [3]  # the only one stays
    assert prune_checkpoints(run, keep=0) == []


def test_wandb_offline_writes_its_files_and_the_sample_video(store, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    run = tmp_path / "run"
    out = train(
        store, run, "--steps", "2", "--report-to", "wandb", "--sample-every", "2", "--vae", "tiny"
    ).output
    assert "wandb: offline run" in out
    (offline,) = (run / "logs" / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb")) and list(offline.rglob("media/videos/**/*.mp4"))
    assert not list((run / "logs").rglob("events.out.tfevents.*"))  # only the tracker asked for


def test_progress_bar_shows_loss_and_eta_only_on_a_terminal():
    from a4g.train.reporting import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    printed: list[str] = []
    screen = Terminal()
    bar = Progress(True, 10, 20, printed.append, stream=screen)
    bar.step({"loss": 0.5})
    bar.say("a line")
    for _ in range(3):
        bar.step()
    bar.close()
    shown = screen.getvalue()
    assert "loss=0.5000" in shown and "14/20" in shown and "<" in shown  # tqdm's [elapsed<remaining]
    assert printed == ["a line"]
    quiet = Terminal()
    Progress(False, 0, 5, printed.append, stream=quiet).step({"loss": 1.0})
    piped = io.StringIO()  # not a terminal: logs get the lines only
    Progress(True, 0, 5, printed.append, stream=piped).step({"loss": 1.0})
    assert quiet.getvalue() == piped.getvalue() == ""


def test_legacy_run_record_is_refused_with_the_reason(store, tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    legacy = {"a4g_version": "0.1.0", "config": {"model": "VDiT-tiny"}, "model": {"name": "VDiT-tiny"}}
    (run / "run.json").write_text(json.dumps(legacy))
    result = runner.invoke(cli, ["train", "--out", str(run), "--resume", "--steps", "4"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "before the typed run record" in result.output and "transposed positions" in result.output


# ------------------------------------------------------------------------ VAE shift and repo ids


def shifted_spec(spec, shift: float = 0.0609):
    """SD3's VAE shifts latents by 0.0609 (and scales by 1.5305) before the DiT sees them."""
    return spec.model_copy(update={"shift_factor": shift})


def test_training_latents_subtract_the_shift_and_decoding_adds_it_back(store, monkeypatch):
    import dataclasses

    import numpy as np

    from a4g.encoders.vae import create_vae
    from a4g.train.data import ClipReader, plan_clips

    plan = plan_clips(store, frames=4, stride=2)
    spec = shifted_spec(plan.vae)
    plain = ClipReader(plan).batch(np.random.default_rng(3), 2)["latents"].double()
    shifted = ClipReader(dataclasses.replace(plan, vae=spec)).batch(np.random.default_rng(3), 2)["latents"]
    z = plain / spec.scaling_factor  # the same posterior sample (same rng), before scaling
    # diffusers' SD3 pipelines: (z - shift_factor) * scaling_factor; float32 rounding only
    torch.testing.assert_close(
        shifted.double(), (z - spec.shift_factor) * spec.scaling_factor, rtol=1e-6, atol=1e-7
    )

    vae = create_vae("tiny", random_init=True)
    vae.spec = spec
    seen = {}

    def capture(z_in):
        seen["z"] = z_in
        raise StopIteration  # the decoder itself is not under test

    monkeypatch.setattr(vae.vae, "decode", capture)
    latents = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    with pytest.raises(StopIteration):
        vae.decode(latents)
    torch.testing.assert_close(
        seen["z"], latents / spec.scaling_factor + spec.shift_factor, rtol=0, atol=1e-15
    )


def test_vae_config_shift_reaches_the_spec_and_the_fingerprint_of_old_stores_stays(store, tmp_path):
    from a4g.encoders.vae import create_vae, tiny_vae_config, write_vae_config

    folder = write_vae_config(tmp_path / "sd3ish", {**tiny_vae_config(), "shift_factor": 0.0609})
    assert create_vae(folder, random_init=True).spec.shift_factor == pytest.approx(0.0609)
    assert create_vae("tiny", random_init=True).spec.shift_factor is None
    assert "shift_factor" not in store.schema.content_dict()["vae"]  # stores made before the field


def fake_hub(root: Path, repo: str, config: dict, subfolder: str = "") -> Path:
    """The Hugging Face cache layout: models--ORG--NAME/{refs/main, snapshots/REV/...}."""
    from a4g.encoders.vae import write_vae_config

    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text("0" * 40)
    write_vae_config(base / "snapshots" / ("0" * 40) / subfolder, config)
    return base


def test_vae_repo_id_resolves_from_the_local_hub_cache_only(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from a4g.encoders.vae import create_vae, tiny_vae_config, write_vae_config
    from a4g.encoders.weights import MissingWeightsError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    fake_hub(tmp_path / "hub", "org/tiny-vae", tiny_vae_config())
    fake_hub(tmp_path / "hub", "org/pipeline", tiny_vae_config(), subfolder="vae")
    local = create_vae(write_vae_config(tmp_path / "tiny-vae", tiny_vae_config()), random_init=True)
    cached = create_vae("org/tiny-vae", random_init=True)
    assert cached.spec == local.spec  # a repo id and a local copy make the same store schema
    assert create_vae("org/pipeline", random_init=True).spec.name == "pipeline"  # its vae/ subfolder
    with pytest.raises(
        MissingWeightsError, match=r"'org/absent' is neither a local directory nor in the local"
    ):
        create_vae("org/absent", random_init=True)
