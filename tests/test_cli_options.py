"""The CLI's bridge to the config dataclasses: `default` spells a field's default as its flag takes it,
`build` turns parsed flags back into the config. Both directions must agree for every config, or a
flag left at its default would silently mean something else than the dataclass default."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from a4g.cli.options import build, default, unwritable_dir
from a4g.extract.config import ExtractConfig
from a4g.metrics.curve import CurveRequest
from a4g.metrics.evaluate import FIDRequest, FVDRequest
from a4g.metrics.iicr_run import IICRRequest
from a4g.train.config import TrainConfig
from a4g.train.sample import SampleConfig

REQUIRED = {
    ExtractConfig: {"dataset": "demo", "out": Path("store"), "vae": "tiny"},
    TrainConfig: {"store": Path("store"), "run": Path("run")},
    SampleConfig: {"run": Path("run"), "out": Path("videos"), "vae": "tiny"},
    FVDRequest: {"real": "demo", "fake": Path("videos")},
    FIDRequest: {"real": "demo", "fake": Path("videos")},
    IICRRequest: {"dataset": "demo", "out": Path("iicr")},
    CurveRequest: {"runs": ("a", "b"), "real": "demo", "out": Path("curve"), "vae": "tiny"},
}


@pytest.mark.parametrize("config", list(REQUIRED), ids=lambda c: c.__name__)
def test_every_default_survives_the_flag_spelling(config):
    required = REQUIRED[config]
    params = {f.name: default(config, f.name) for f in dataclasses.fields(config) if f.name not in required}
    assert build(config, {**params, **required}) == config(**required)


def test_flag_values_become_field_types():
    cfg = build(
        ExtractConfig,
        {
            **REQUIRED[ExtractConfig],
            "encoders": "a, b,",
            "weights": ["a=/w/a.pt", "b = /w/b.pt"],
            "size": 128,
        },
    )
    assert cfg.encoders == ["a", "b"] and cfg.weights == {"a": "/w/a.pt", "b": "/w/b.pt"} and cfg.size == 128
    assert build(IICRRequest, {**REQUIRED[IICRRequest], "k": "2,3"}).k == [2, 3]
    assert build(TrainConfig, {**REQUIRED[TrainConfig], "align_encoders": "x,y"}).align_encoders == ("x", "y")
    assert build(SampleConfig, {**REQUIRED[SampleConfig], "class_id": "3"}).class_id == 3
    assert build(SampleConfig, {**REQUIRED[SampleConfig], "class_id": "random"}).class_id is None
    assert "no_such_field" not in vars(build(FVDRequest, {**REQUIRED[FVDRequest], "no_such_field": 1}))


def test_unwritable_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    assert unwritable_dir(tmp_path / "new" / "deeper") is None  # created later, under a writable folder
    assert unwritable_dir(tmp_path) is None
    assert "is a file" in unwritable_dir(tmp_path / "file")
    assert "is a file" in unwritable_dir(tmp_path / "file" / "sub")
