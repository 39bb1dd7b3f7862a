"""Every command keeps its flags, required flags and defaults across the move to the `a4g/cli/` package.

FLAGS_BEFORE, REQUIRED_BEFORE and DEFAULTS_BEFORE were captured from the single-module CLI (commit
9d775ce, `a4g X --help` and its click parameters) before the rewrite; ADDED lists the flags added
since, each on purpose. Defaults now come from the config dataclasses, so these tests also catch a
dataclass default drifting away from what the flag used to mean.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from a4g.cli import COMMANDS, app, load_command

FLAGS_BEFORE = {
    "extract": "--batch --compile --data-root --dataset --device --dry-run --encoders --every --fold --hflip "
    "--limit-videos --no-hflip --no-progress --no-random-init --num-workers --out --progress --random-init "
    "--sam-output --sam-res --shard-frames --size --split --vae --weights --weights-dir",
    "train": "--align-depth --align-encoders --align-weight --allow-incomplete --batch-size --checkpoint-every "
    "--class-dropout --compile --ema --features --frames --grad-accum --grad-checkpointing --hflip --log-every "
    "--lr --max-grad-norm --model --num-workers --objective --out --projector-dim --resume --sample-every "
    "--sample-num --seed --steps --stride --unconditional --vae",
    "sample": "--batch-size --cfg --checkpoint --class --device --ema --fps --frames --no-ema --num --out --run "
    "--run-dir --sampler --seed --steps --vae",
    "iicr": "--clips --data-root --dataset --device --encoders --fold --frames --k --masks --no-progress --out "
    "--progress --random-init --sam-output --sam-res --seed --size --split --weights --weights-dir",
    "eval fvd": "--allow-fewer --batch-size --data-root --device --fake --fold --frames --i3d --json "
    "--no-progress --num --num-workers --progress --real --real-start --seed --size --split",
    "eval fid": "--allow-fewer --batch-size --data-root --device --fake --fold --frames --inception --json "
    "--no-progress --num --num-workers --progress --real --real-start --seed --size --split",
    "store info": "--json",
    "store verify": "--quick",
}
ADDED = {
    "train": "--learn-sigma"  # TrainConfig.learn_sigma (DiT's learned variance) needs a flag
    # issue 13: weights to start from, Latte's clip schedule, a config file, trackers, a bar, retention
    " --init-from --init-layout --clip-after --config --report-to --progress --no-progress --keep-last"
    # issue 10: resume past an unreadable RNG state file
    " --force",
    "iicr": "--no-random-init",  # --random-init is one shared option now, spelled as extract always had it
    # issue 11: a bar; --num-videos because torchrun's argparse takes --num for its --numa-binding
    "sample": "--progress --no-progress --num-videos",
    "eval fvd": "--real-stride --real-stats",  # issue 11: Latte's real-clip stride, cached real statistics
    "eval fid": "--real-stride --real-stats",
    "extract": "--target-dtype",  # issue 12: int8 targets
    "store verify": "--repair --progress --no-progress",  # issue 12: repair; a bar for the full re-read
}
REQUIRED_BEFORE = {
    "extract": {"--dataset", "--out", "--vae"},
    "train": {"--out"},  # --features may come from --config or, with --resume, from the run's record
    "sample": {"--run", "--out", "--vae"},
    "iicr": {"--dataset", "--out"},
    "eval fvd": {"--real", "--fake"},
    "eval fid": {"--real", "--fake"},
    "store info": {"store"},
    "store verify": {"store"},
}
# Commands added since the capture, each on purpose: (flags, required flags).
NEW_COMMANDS = {
    "eval curve": (  # issue 11: FVD against training step over runs
        "--allow-fewer --batch-size --cfg --class --data-root --device --ema --fid --fold --frames --i3d "
        "--inception --no-ema --no-progress --num --num-videos --num-workers --out --progress --real "
        "--real-start --real-stride --runs --sampler --seed --size --split --steps --vae",
        {"--runs", "--real", "--out", "--vae"},
    ),
    "store compare": ("--json --progress --no-progress", {"a", "b"}),  # issue 12: two stores side by side
}
FLAGS_BEFORE.update({name: flags for name, (flags, _) in NEW_COMMANDS.items()})
REQUIRED_BEFORE.update({name: required for name, (_, required) in NEW_COMMANDS.items()})
DEFAULTS_BEFORE = {
    "extract": {"--encoders": "dinov2_vitb14,sam2.1_hiera_b+", "--size": 256, "--every": 1, "--hflip": False,
                "--shard-frames": 256, "--batch": 64, "--device": "auto", "--num-workers": 4, "--sam-res": 1024,
                "--sam-output": "vision_features", "--random-init": False, "--progress": True, "--dry-run": False,
                "--compile": False, "--limit-videos": None, "--fold": None},
    "train": {"--model": "VDiT-XL", "--objective": "ddpm", "--frames": 16, "--stride": 3, "--batch-size": 5,
              "--grad-accum": 1, "--steps": 400000, "--lr": 0.0001, "--max-grad-norm": 1.0, "--ema": 0.9999,
              "--align-weight": 0.5, "--align-depth": None, "--align-encoders": None, "--projector-dim": 2048,
              "--class-dropout": 0.1, "--num-workers": 4, "--seed": 0, "--checkpoint-every": 5000,
              "--log-every": 50, "--sample-every": 0, "--sample-num": 4, "--vae": None, "--resume": False,
              "--unconditional": False, "--hflip": False},
    "sample": {"--checkpoint": "latest", "--ema": True, "--num": 16, "--class": "random", "--cfg": 4.0,
               "--sampler": None, "--steps": 50, "--frames": None, "--seed": 0, "--batch-size": 8, "--fps": 8,
               "--device": "auto"},
    "iicr": {"--encoders": "dinov2_vitb14,sam2.1_hiera_b+,dinov2_vitb14+sam2.1_hiera_b+", "--k": "8,10,12,15",
             "--clips": 32, "--frames": 16, "--size": 256, "--sam-res": 1024, "--sam-output": "vision_features",
             "--device": "auto", "--seed": 0, "--progress": True, "--random-init": False},
    "eval fvd": {"--num": 2048, "--frames": 16, "--size": 256, "--batch-size": 8, "--device": "auto",
                 "--num-workers": 4, "--seed": 0, "--real-start": "random", "--allow-fewer": False,
                 "--json": False, "--progress": True},
    "eval fid": {"--num": 50000, "--frames": 16, "--size": 256, "--batch-size": 64, "--device": "auto",
                 "--num-workers": 4, "--seed": 0, "--real-start": "random", "--allow-fewer": False,
                 "--json": False, "--progress": True},
}  # fmt: skip


def commands() -> dict[str, object]:
    """{'extract': click command, 'eval fvd': ..., ...}: every command, loaded as `a4g NAME` loads it."""
    found: dict[str, object] = {}

    def walk(cmd, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = cmd

    for name in COMMANDS:
        walk(load_command(name), [name])
    return found


def flags(cmd) -> set[str]:
    return {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}


def test_the_same_commands_exist():
    assert set(commands()) == set(FLAGS_BEFORE)


@pytest.mark.parametrize("name", sorted(FLAGS_BEFORE))
def test_flags_unchanged_and_listed_in_help(name):
    cmd = commands()[name]
    want = set(FLAGS_BEFORE[name].split()) | set(ADDED.get(name, "").split())
    assert flags(cmd) - {"--help"} == want
    result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    shown = set(result.output.replace(",", " ").split())
    assert want <= shown, want - shown
    for p in cmd.params:  # every option explains itself
        assert p.param_type_name != "option" or (p.help and len(p.help) > 10), p.opts


@pytest.mark.parametrize("name", sorted(FLAGS_BEFORE))
def test_required_flags_unchanged(name):
    required = {
        p.opts[0] if p.param_type_name == "option" else p.name for p in commands()[name].params if p.required
    }
    assert required == REQUIRED_BEFORE[name]


@pytest.mark.parametrize("name", sorted(DEFAULTS_BEFORE))
def test_defaults_unchanged(name):
    defaults = {p.opts[0]: p.default for p in commands()[name].params if p.param_type_name == "option"}
    for flag, want in DEFAULTS_BEFORE[name].items():
        assert defaults[flag] == want, flag


@pytest.mark.parametrize("name", list(COMMANDS))
def test_root_listing_matches_each_command(name):
    """`a4g --help` lists commands without importing them; its line must be the command's own first line."""
    cmd = load_command(name)
    assert cmd.help.splitlines()[0].strip() == COMMANDS[name].summary
    assert COMMANDS[name].summary in " ".join(
        CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300"}).output.split()
    )
