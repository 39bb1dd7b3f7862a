"""run.json: typed round trip, atomic writes, refusals naming the file and field; resume rules."""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from a4g.errors import RunError
from a4g.store.schema import VAESpec
from a4g.train.config import TrainConfig
from a4g.train.loop import TrainError, check_resume
from a4g.train.run_record import (
    FORMAT_VERSION,
    RUN_FILE,
    AlignSpec,
    DataSpec,
    ModelKwargs,
    ModelSpec,
    Resumption,
    RunRecord,
    StoreRef,
    read_run_record,
    write_run_record,
)


def make_record(**config) -> RunRecord:
    """A plausible record of a tiny run; the values are inputs, none is checked against a constant."""
    return RunRecord(
        a4g_version="0.1.0",
        created="2025-01-01T00:00:00+00:00",
        config=TrainConfig(store="/data/store", run=Path("/runs/a"), model="VDiT-tiny", **config),
        store=StoreRef(
            path="/data/store",
            fingerprint="ab" * 32,
            random_init=True,
            every=1,
            frame_size=32,
            classes=["a", "b"],
        ),
        model=ModelSpec(
            name="VDiT-tiny",
            kwargs=ModelKwargs(
                input_size=(4, 4),
                in_channels=4,
                num_frames=4,
                num_classes=2,
                class_dropout_prob=0.1,
                patch_size=2,
            ),
        ),
        vae=VAESpec(
            name="tiny", weights_sha256="random", scaling_factor=0.18215, latent_channels=4, downsample=8
        ),
        align=AlignSpec(encoders=["enc_a"], depth=1, weight=0.5, target_channels=32, projector_dim=32),
        data=DataSpec(frames=4, stride=2, store_row_step=2),
        world_size=1,
        resumed=[Resumption(step=100, world_size=2)],
    )


def test_round_trip_is_exact(tmp_path):
    record = make_record(align_encoders=["enc_a"], lr=3e-4, align_depth=2)
    path = write_run_record(tmp_path, record)
    assert path == tmp_path / RUN_FILE
    back = read_run_record(tmp_path)
    assert back == record
    assert back.config.align_encoders == ("enc_a",) and back.model.kwargs.input_size == (4, 4)
    assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == [RUN_FILE]  # no temporary file left behind


def test_record_is_frozen():
    with pytest.raises(ValueError, match="frozen"):
        make_record().world_size = 2


def test_failed_write_keeps_the_previous_record(tmp_path, monkeypatch):
    first = make_record()
    write_run_record(tmp_path, first)

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_run_record(tmp_path, make_record(steps=10))
    assert read_run_record(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [RUN_FILE]


def test_missing_record_names_the_run(tmp_path):
    with pytest.raises(RunError, match=rf"{tmp_path} is not a training run: no {RUN_FILE}"):
        read_run_record(tmp_path)


def test_truncated_record_names_the_file(tmp_path):
    path = write_run_record(tmp_path, make_record())
    path.write_text(path.read_text()[: len(path.read_text()) // 2])
    with pytest.raises(RunError, match=rf"{path} is not valid JSON .*truncated"):
        read_run_record(tmp_path)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, None])
def test_other_versions_are_refused(tmp_path, version):
    path = write_run_record(tmp_path, make_record())
    data = json.loads(path.read_text())
    data["format_version"] = version  # (a legacy record has no key at all: test_train_loop.py)
    path.write_text(json.dumps(data))
    with pytest.raises(RunError, match=rf"{path}: format_version is {version!r}, this a4g reads version 1"):
        read_run_record(tmp_path)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["model"]["kwargs"].update(in_channels=0), "model.kwargs.in_channels"),
        (lambda d: d["config"].update(lr="fast"), "config.lr"),
        (lambda d: d["config"].update(bogus=1), "config.bogus"),
        (lambda d: d["store"].pop("fingerprint"), "store.fingerprint"),
        (lambda d: d.update(extra=True), "extra"),
    ],
)
def test_invalid_fields_are_named(tmp_path, edit, field):
    path = write_run_record(tmp_path, make_record())
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(RunError, match=rf"{path}: invalid run record: .*{field}:"):
        read_run_record(tmp_path)


# ---- what a --resume may change: declared on the TrainConfig fields -------------------------------


def test_resume_may_change_resumable_fields():
    prior = make_record()
    now = dataclasses.replace(
        prior.config, steps=10, num_workers=0, resume=True, run=Path("a"), store="/mnt/store"
    )
    check_resume(now, prior)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 3e-4}, "--lr: run has 0.0001, now 0.0003"),
        ({"seed": 1}, "--seed: run has 0, now 1"),
        ({"align_encoders": ["enc_b"]}, "--align-encoders: run has None, now ('enc_b',)"),
    ],
)
def test_resume_refuses_other_changes_naming_them(change, named):
    prior = make_record()
    now = dataclasses.replace(prior.config, steps=10, resume=True, **change)
    with pytest.raises(TrainError) as err:
        check_resume(now, prior)
    assert named in str(err.value) and "--steps" not in str(err.value)
