"""`python -m a4g.cli extract` SIGKILLed at exact write points resumes to a bit-identical store.

Three points of benchmarks/kill_sweep.py (which runs 24 and prints the table): the store-creation
window (arrays made, schema not yet written), a shard whose data is written but whose done marker is
not, and a kill the moment a shard's first data file appears (the writer between arrays). Each
killed child is resumed in this process by the same command; the store must verify, hold no
``*.partial`` leftovers, and equal an uninterrupted extraction in every array (done markers and the
index included). Most of the time is three child start-ups (torch, timm, SAM 2 imports): 122 s
measured on 2 cores shared with other jobs (load average ~10).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _sweep():
    spec = importlib.util.spec_from_file_location("kill_sweep", ROOT / "benchmarks" / "kill_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The sweep's machinery, its data and an uninterrupted reference store (extracted in-process)."""
    ks = _sweep()
    work = tmp_path_factory.mktemp("kill")
    ks.materialize(work / "syn")
    code, output = ks.resume(ks.extract_args(work / "syn", work / "reference"))
    assert code == 0, output
    return ks, work, ks.store_arrays(work / "reference")


@pytest.mark.parametrize("name", ["store:create-arrays", "store:before-done:3", "latents of shard 2 appear"])
def test_killed_extraction_resumes_bit_identical(sweep, name: str):
    ks, work, reference = sweep
    point = next(p for p in ks.POINTS if p.name == name)
    row = ks.sweep_point(point, work / "syn", work, reference, run_s=0.0)
    assert row.reached and row.exit_status == -9, row  # killed where asked, not finished or failed
    assert row.left != "nothing" and row.left != f"{ks.SHARDS}/{ks.SHARDS} done", row
    assert row.resumed == 0 and row.verify == "ok", row
    assert row.partials == 0, row
    assert row.identical, row
