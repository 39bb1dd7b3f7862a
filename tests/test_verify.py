"""Damaged stores: `store verify` names the shards, `--repair` + the same extract command restores a
store identical to the undamaged one (nothing else rewritten), training and extraction refuse damage."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import EXTRACT_TINY
from typer.testing import CliRunner

from a4g.cli import app
from a4g.errors import StoreError
from a4g.store import FeatureStore
from a4g.store.compare import compare_stores
from a4g.store.lock import LOCK_DIR
from a4g.store.verify import check_after_extraction, check_for_training, quick_damage

runner = CliRunner()
SHARD = 1  # the damaged shard: frames 16..31 of 144


@pytest.fixture(scope="module")
def extract_args(tmp_path_factory) -> list[str]:
    """The extract command of the original store, without --out (the same command repairs copies)."""
    tmp = tmp_path_factory.mktemp("verify")
    return ["extract", *EXTRACT_TINY, "--data-root", str(tmp / "syn")]


@pytest.fixture(scope="module")
def original(tmp_path_factory, extract_args) -> FeatureStore:
    out = tmp_path_factory.mktemp("orig") / "store"
    result = runner.invoke(app, [*extract_args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return FeatureStore.open(out)


def _copy(original: FeatureStore, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(original.path, copy)
    return copy


def _shard_file(store: Path, name: str, shard: int) -> Path:
    return store / name / "c" / str(shard) / ("0/0/0" if name.startswith("latents") else "0/0")


def _flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def _stamps(store: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file but the writer locks: a rewritten file changes one of them."""
    files = [p for p in store.rglob("*") if p.is_file() and p.relative_to(store).parts[0] != LOCK_DIR]
    return {str(p.relative_to(store)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


DAMAGE = {
    "data byte": lambda f: _flip_byte(f, 30),  # inside the first chunk's zstd frame
    "index byte": lambda f: _flip_byte(f, -10),  # inside the shard index, before its crc32c
    "deleted file": lambda f: f.unlink(),
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_verify_names_it_and_repair_plus_extract_restores_it(original, extract_args, tmp_path, how):
    copy = _copy(original, tmp_path)
    DAMAGE[how](_shard_file(copy, "targets", SHARD))
    full = runner.invoke(app, ["store", "verify", str(copy)])
    assert full.exit_code == 1 and f"shard {SHARD} (frames 16..31)" in full.output
    assert "shard 0" not in full.output and "shard 2" not in full.output
    quick = runner.invoke(app, ["store", "verify", "--quick", str(copy)])
    if how == "data byte":  # inside compressed data: only the full check decodes it
        assert quick.exit_code == 0
    else:  # the quick check reads every shard index: never OK for a bad index or a missing file
        assert quick.exit_code == 1 and f"shard {SHARD} " in quick.output

    before = _stamps(copy)
    repaired = runner.invoke(app, ["store", "verify", "--repair", str(copy)])
    assert repaired.exit_code == 0 and f"[{SHARD}]" in repaired.output, repaired.output
    again = runner.invoke(app, [*extract_args, "--out", str(copy)])
    assert again.exit_code == 0 and "wrote 1 shards" in again.output, again.output

    assert compare_stores(original, FeatureStore.open(copy)).identical
    after = _stamps(copy)
    rewritten = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert rewritten <= {
        f"{n}/c/{SHARD}/{'0/0/0' if n == 'latents' else '0/0'}" for n in ("latents", "targets")
    } | {f"done/c/{SHARD}"}, rewritten
    assert runner.invoke(app, ["store", "verify", str(copy)]).exit_code == 0


def test_swapped_shard_files_are_refused_by_training_and_recomputed_by_extract(
    original, extract_args, tmp_path
):
    copy = _copy(original, tmp_path)
    a, b = _shard_file(copy, "latents", 0), _shard_file(copy, "latents", 1)
    tmp = a.with_name("swap")
    os.replace(a, tmp), os.replace(b, a), os.replace(tmp, b)
    store = FeatureStore.open(copy)
    assert sorted({d.shard for d in quick_damage(store)}) == [0, 1]
    with pytest.raises(StoreError, match=r"(?s)shard 0 .*shard 1 .*a4g store verify --repair"):
        check_for_training(store)
    train = [
        *("train", "--features", str(copy), "--out", str(tmp_path / "run"), "--model", "VDiT-tiny"),
        *("--frames", "4", "--stride", "1", "--batch-size", "2", "--steps", "2", "--num-workers", "0"),
    ]
    refused = runner.invoke(app, train)
    assert refused.exit_code == 2 and "damaged shard" in refused.output and "--repair" in refused.output
    assert "Traceback" not in refused.output

    # the same extract command recomputes shards whose files fail the quick check, then says complete
    again = runner.invoke(app, [*extract_args, "--out", str(copy)])
    assert again.exit_code == 0 and "recomputing 2 damaged shard(s): [0, 1]" in again.output, again.output
    assert "complete" in again.output
    assert compare_stores(original, FeatureStore.open(copy)).identical


def test_extraction_ends_with_the_quick_check(original, tmp_path):
    copy = _copy(original, tmp_path)
    _flip_byte(_shard_file(copy, "latents", SHARD), -10)
    store = FeatureStore.open(copy)
    with pytest.raises(StoreError, match=rf"(?s)shard {SHARD} .*rerun the same command"):
        check_after_extraction(store, owned=[SHARD])
    assert check_after_extraction(store, owned=[0]) == [SHARD]  # another rank's shard: reported, not raised
    assert check_after_extraction(original, owned=range(original.num_shards)) == []
