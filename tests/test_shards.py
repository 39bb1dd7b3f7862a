"""Direct shard-file I/O on its own: round trips, zarr-python reading it (and the reverse), damage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import LENGTHS, shard_data

from a4g.store import FeatureStore, ShardReadError, StoreError
from a4g.store.fake import make_index, make_schema
from a4g.store.location import StoreLocation
from a4g.store.shards import ShardedRows, TensorstoreRows, open_rows, worker_start_method

NAMES = ["latents", "targets", "latents_flip", "targets_flip"]


@pytest.fixture
def full_store(tmp_path: Path) -> FeatureStore:
    """14 frames in 4 shards (the last one short), flip twins; targets have 3 inner-chunk columns."""
    store = FeatureStore.create(tmp_path / "store", make_schema(LENGTHS, flip=True), make_index(LENGTHS))
    for shard in range(store.num_shards):
        store.write_shard(shard, shard_data(store, shard))
    return store


def _shard_file(store: FeatureStore, name: str, shard: int) -> Path:
    return Path(store.path) / name / "c" / str(shard) / "/".join("0" * (store.array(name).ndim - 1))


def test_open_rows_knows_the_store_layout(full_store: FeatureStore):
    rows = open_rows(full_store.path, "targets")
    assert isinstance(rows, ShardedRows)
    assert rows.shape == (14, 4, 48) and rows.rows_per_shard == 4
    assert rows.col_width == 16 and rows.num_cols == 3  # gcd(32, 16) channels per inner chunk


@pytest.mark.parametrize("name", NAMES)
def test_direct_reads_equal_zarr_reads(full_store: FeatureStore, name: str):
    rows = np.random.default_rng(0).integers(0, full_store.num_frames, size=40)  # any order, repeats
    fast = open_rows(full_store.path, name)
    np.testing.assert_array_equal(fast.read(rows), full_store.array(name).get_orthogonal_selection((rows,)))


def test_direct_write_read_round_trip_and_zarr_reads_it(full_store: FeatureStore):
    fast = open_rows(full_store.path, "targets")
    data = np.random.default_rng(1).standard_normal((2, 4, 48)).astype(np.float16)  # the short shard 3
    fast.write_shard(3, data)
    np.testing.assert_array_equal(fast.read(np.array([13, 12])), data[::-1])
    np.testing.assert_array_equal(full_store.array("targets")[12:14], data)  # zarr-python cross-read


def test_direct_reads_shards_written_by_zarr(full_store: FeatureStore):
    data = np.random.default_rng(2).standard_normal((4, 8, 4, 4)).astype(np.float16)
    full_store.array("latents")[4:8] = data  # zarr-python's own shard writer
    np.testing.assert_array_equal(open_rows(full_store.path, "latents").read(np.arange(4, 8)), data)


def test_reads_a_range_of_channel_columns(full_store: FeatureStore):
    fast = open_rows(full_store.path, "targets")
    rows = np.array([9, 3, 13])
    want = full_store.array("targets")[:][rows]
    np.testing.assert_array_equal(fast.read(rows, (1, 2)), want[..., 16:32])
    np.testing.assert_array_equal(fast.read(rows, (1, 3)), want[..., 16:48])


def test_write_refuses_wrong_shape(full_store: FeatureStore):
    fast = open_rows(full_store.path, "targets")
    with pytest.raises(ValueError, match=r"needs shape \(2, 4, 48\)"):
        fast.write_shard(3, np.zeros((4, 4, 48), np.float16))


def test_write_replaces_leftovers_of_a_killed_writer(full_store: FeatureStore):
    path = _shard_file(full_store, "targets", 1)
    stale = path.with_name(f".{path.name}.99999.partial")
    stale.write_bytes(b"half a shard")
    data = shard_data(full_store, 1, seed=5)["targets"]
    open_rows(full_store.path, "targets").write_shard(1, data)
    assert not stale.exists()
    np.testing.assert_array_equal(full_store.array("targets")[4:8], data)


def _damaged_copy(store: FeatureStore, tmp_path: Path, shard: int, offset_from_end: int) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    path = copy / "targets" / "c" / str(shard) / "0" / "0"
    raw = bytearray(path.read_bytes())
    raw[len(raw) - offset_from_end] ^= 0xFF
    path.write_bytes(bytes(raw))
    return copy


def test_damaged_shard_index_is_detected(full_store: FeatureStore, tmp_path: Path):
    copy = _damaged_copy(full_store, tmp_path, 1, offset_from_end=10)  # inside the index + crc32c
    with pytest.raises(ShardReadError, match="checksum"):
        open_rows(copy, "targets").read(np.array([5]))


def test_damaged_chunk_data_is_detected(full_store: FeatureStore, tmp_path: Path):
    index_bytes = 4 * 3 * 16 + 4  # rows x columns x (offset, nbytes) uint64 pairs, then crc32c
    copy = _damaged_copy(full_store, tmp_path, 1, offset_from_end=index_bytes + 20)  # in the last chunk
    fast = open_rows(copy, "targets")
    with pytest.raises(ShardReadError, match="does not decode"):
        fast.read(np.array([7]))
    np.testing.assert_array_equal(fast.read(np.array([4])), full_store.array("targets")[4:5])


def test_truncated_and_missing_shards_are_named(full_store: FeatureStore, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(full_store.path, copy)
    (copy / "targets" / "c" / "2" / "0" / "0").write_bytes(b"\0" * 20)
    (copy / "targets" / "c" / "3" / "0" / "0").unlink()
    fast = open_rows(copy, "targets")
    with pytest.raises(ShardReadError, match="truncated"):
        fast.read(np.array([8]))
    with pytest.raises(ShardReadError, match="missing; shard 3 was never written"):
        fast.read(np.array([12]))
    assert issubclass(ShardReadError, StoreError)  # the CLI reports it as one `error:` line


def test_other_layouts_are_declined(tmp_path: Path):
    assert open_rows(tmp_path, "targets") is None  # no array there
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "zarr.json").write_text('{"zarr_format": 3, "codecs": [{"name": "blosc"}]}')
    assert open_rows(tmp_path, "targets") is None


# ---- the two backends: tensorstore (object stores) and the direct files (local) agree -------------------


def _tensorstore_rows(store: FeatureStore, name: str) -> TensorstoreRows:
    directory = Path(store.path) / name
    meta = json.loads((directory / "zarr.json").read_text())
    return TensorstoreRows(StoreLocation("file", path=directory), meta)


@pytest.mark.parametrize("name", NAMES)
def test_tensorstore_reads_what_the_direct_writer_wrote(full_store: FeatureStore, name: str):
    rows = np.random.default_rng(3).integers(0, full_store.num_frames, size=30)  # any order, repeats
    np.testing.assert_array_equal(
        _tensorstore_rows(full_store, name).read(rows), open_rows(full_store.path, name).read(rows)
    )
    if name.startswith("targets"):
        np.testing.assert_array_equal(
            _tensorstore_rows(full_store, name).read(rows, (1, 3)),
            open_rows(full_store.path, name).read(rows, (1, 3)),
        )


def test_both_writers_write_the_same_bytes(full_store: FeatureStore, tmp_path: Path):
    data = shard_data(full_store, 2, seed=9)["targets"]
    direct_file = _shard_file(full_store, "targets", 2)
    open_rows(full_store.path, "targets").write_shard(2, data)
    by_direct = direct_file.read_bytes()
    _tensorstore_rows(full_store, "targets").write_shard(2, data)
    assert direct_file.read_bytes() == by_direct  # one format, so a store may move between backends
    np.testing.assert_array_equal(open_rows(full_store.path, "targets").read(np.arange(8, 12)), data)
    np.testing.assert_array_equal(full_store.array("targets")[8:12], data)  # and zarr-python reads it


def test_tensorstore_refuses_a_missing_shard_instead_of_nan(full_store: FeatureStore):
    _shard_file(full_store, "latents", 1).unlink()
    with pytest.raises(ShardReadError, match="damaged or incomplete"):
        _tensorstore_rows(full_store, "latents").read(np.array([5]))


def test_worker_start_method_spawns_only_for_object_stores(tmp_path: Path):
    assert worker_start_method(tmp_path) is None  # local: forked workers read files directly
    assert worker_start_method("file:///data/store") is None
    assert worker_start_method("s3://bucket/store") == "spawn"  # tensorstore aborts a forked child
