import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import LENGTHS, shard_data

from a4g.store import FeatureStore, StoreError, VideoIndex
from a4g.store.fake import make_index, make_schema


def test_create_preallocates_arrays_and_index(empty_store: FeatureStore):
    s = empty_store
    assert s.num_frames == 14 and s.num_shards == 4
    assert s.array("latents").shape == (14, 8, 4, 4)
    assert s.array("targets").shape == (14, 4, 48)
    # one frame per inner chunk, inner chunks end at encoder channel boundaries (gcd of 32 and 16)
    assert s.array("targets").chunks == (1, 4, 16)
    assert s.array("targets").shards == (4, 4, 48)
    assert s.done_shards() == [] and not s.complete
    assert list(s.index.offsets) == [0, 5, 8]
    assert [s.shard_range(i) for i in range(4)] == [(0, 4), (4, 8), (8, 12), (12, 14)]
    with pytest.raises(StoreError, match="hflip"):
        s.array("targets_flip")


def test_videos_in_shard_straddle():
    index = make_index(LENGTHS)
    assert list(index.videos_in(4, 8)) == [(0, 4, 5), (1, 0, 3)]
    assert list(index.videos_in(8, 14)) == [(2, 0, 6)]


def test_write_read_verify(empty_store: FeatureStore, tmp_path: Path):
    s = empty_store
    written = {i: shard_data(s, i) for i in range(s.num_shards)}
    for i, data in written.items():
        s.write_shard(i, data)
    assert s.complete and s.verify() == []
    again = FeatureStore.open(s.path)
    for i, data in written.items():
        got = again.read_shard(i)
        start, stop = again.shard_range(i)
        for name in data:
            np.testing.assert_array_equal(got[name], data[name])
            # shard files are written directly (a4g.store.shards); zarr itself must read them the same
            np.testing.assert_array_equal(again.array(name)[start:stop], data[name])
    assert again.info()["shards_done"] == 4


def test_verify_reports_missing_shards_and_corruption(empty_store: FeatureStore):
    s = empty_store
    s.write_shard(0, shard_data(s, 0))
    problems = s.verify()
    assert any("shard 1" in p and "not done" in p for p in problems)
    # truncate the written shard file: verify must report it, not crash
    shard_file = Path(s.path) / "targets" / "c" / "0" / "0" / "0"
    data = shard_file.read_bytes()
    shard_file.write_bytes(data[: len(data) // 2])
    problems = FeatureStore.open(s.path).verify()
    assert any(p.startswith("shard 0") for p in problems)


def test_checksum_catches_silent_change(empty_store: FeatureStore):
    s = empty_store
    for i in range(s.num_shards):
        s.write_shard(i, shard_data(s, i))
    # rewrite shard 2 behind the store's back with other (finite) values
    s.array("latents")[8:12] = np.zeros((4, 8, 4, 4), np.float16)
    assert any("checksum" in p for p in s.verify())


def test_write_refuses_bad_input(empty_store: FeatureStore):
    s = empty_store
    data = shard_data(s, 1)
    bad = dict(data, targets=data["targets"][:2])
    with pytest.raises(ValueError, match="shape"):
        s.write_shard(1, bad)
    nan = dict(data, latents=np.full_like(data["latents"], np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        s.write_shard(1, nan)
    with pytest.raises(ValueError, match="needs arrays"):
        s.write_shard(1, {"latents": data["latents"]})
    assert s.done_shards() == []
    with pytest.raises(StoreError, match="read-only"):
        FeatureStore.open(s.path).write_shard(1, data)


def test_flip_twins(tmp_path: Path):
    s = FeatureStore.create(tmp_path / "s", make_schema(LENGTHS, flip=True), make_index(LENGTHS))
    assert s.array_names == ["latents", "targets", "latents_flip", "targets_flip"]
    s.write_shard(3, shard_data(s, 3))
    assert s.done_shards() == [3]


def test_open_errors(tmp_path: Path):
    with pytest.raises(StoreError, match="does not exist"):
        FeatureStore.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("hi")
    with pytest.raises(StoreError, match="not an a4g feature store"):
        FeatureStore.open(tmp_path / "plain")
    zarr.open_group(tmp_path / "foreign", mode="w").attrs["something"] = "else"
    with pytest.raises(StoreError, match="no a4g schema"):
        FeatureStore.open(tmp_path / "foreign")
    zarr.open_group(tmp_path / "bare", mode="w")  # all an interrupted creation may have written
    with pytest.raises(StoreError, match="creation of this store was interrupted; rerun"):
        FeatureStore.open(tmp_path / "bare")


def test_other_format_version_refused(empty_store: FeatureStore):
    g = zarr.open_group(empty_store.path, mode="r+")
    data = dict(g.attrs["a4g_schema"])
    data["format_version"] = 99
    g.attrs["a4g_schema"] = data
    with pytest.raises(StoreError, match="format_version"):
        FeatureStore.open(empty_store.path)


def test_create_refuses_existing(empty_store: FeatureStore):
    with pytest.raises(StoreError, match="not empty"):
        FeatureStore.create(empty_store.path, empty_store.schema, empty_store.index)


def test_open_or_create_resumes_same_and_names_differences(empty_store: FeatureStore):
    same = FeatureStore.open_or_create(empty_store.path, make_schema(LENGTHS), make_index(LENGTHS))
    assert same.schema.fingerprint == empty_store.schema.fingerprint
    other = make_schema(LENGTHS, size=64, shard_frames=8)
    with pytest.raises(StoreError) as err:
        FeatureStore.open_or_create(empty_store.path, other, make_index(LENGTHS))
    assert "preprocess.size: store has 32, this run 64" in str(err.value)
    assert "layout.shard_frames" in str(err.value)


def test_index_validation():
    with pytest.raises(ValueError, match="at least one frame"):
        VideoIndex(ids=["a"], paths=["a"], labels=[0], lengths=[0])


def _write_shards(path: str, shards: list[int]) -> None:
    store = FeatureStore.open(path, writable=True)
    for i in shards:
        store.write_shard(i, shard_data(store, i))


def test_two_processes_writing_different_shards_is_bit_exact(tmp_path: Path):
    lengths = {f"v{i}": 7 + i for i in range(6)}
    schema, index = make_schema(lengths, flip=True), make_index(lengths)
    single = FeatureStore.create(tmp_path / "single", schema, index)
    _write_shards(single.path, list(range(single.num_shards)))
    multi = FeatureStore.create(tmp_path / "multi", schema, index)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_write_shards, args=(multi.path, list(range(r, multi.num_shards, 2))))
        for r in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    multi = FeatureStore.open(multi.path)
    assert multi.verify() == []
    for name in multi.array_names:
        np.testing.assert_array_equal(multi.array(name)[:], single.array(name)[:])


# ---- nothing lost: --out handling, the creation window, temporary files, one writer per rank -----------


def _schema_and_index():
    return make_schema(LENGTHS), make_index(LENGTHS)


def test_existing_empty_folder_keeps_its_permissions_and_identity(tmp_path: Path):
    out = tmp_path / "private"
    out.mkdir(mode=0o750)
    out.chmod(0o750)  # whatever the umask
    before = out.stat()
    FeatureStore.open_or_create(out, *_schema_and_index())
    after = out.stat()
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)  # not deleted and recreated


def test_symlinked_and_current_folder_are_used_in_place(tmp_path: Path, monkeypatch):
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    FeatureStore.open_or_create(tmp_path / "link", *_schema_and_index())
    assert (tmp_path / "link").is_symlink() and (target / "zarr.json").is_file()
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    store = FeatureStore.open_or_create(".", *_schema_and_index())
    assert (here / "zarr.json").is_file() and Path.cwd() == here and store.uri == str(here.resolve())


def test_out_that_is_a_file_or_holds_other_things_is_refused(tmp_path: Path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        FeatureStore.open_or_create(tmp_path / "file", *_schema_and_index())
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="exists and is not empty"):
        FeatureStore.open_or_create(tmp_path / "busy", *_schema_and_index())
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


class Killed(BaseException):
    """Stands for SIGKILL at a write point: nothing after it runs (no `except Exception` catches it)."""


def test_kill_in_the_creation_window_resumes(tmp_path: Path, monkeypatch):
    import a4g.store.feature_store as fs

    out = tmp_path / "store"
    schema, index = _schema_and_index()

    def killed(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(fs, "write_index", killed)  # arrays made, index and schema not yet
        with pytest.raises(Killed):
            FeatureStore.open_or_create(out, schema, index, writer_rank=0)
    (out / "zarr.0123abcd.partial").write_bytes(b"{")  # a root rewrite killed mid-write by zarr's store
    with pytest.raises(StoreError, match="creation of this store was interrupted; rerun"):
        FeatureStore.open(out)
    store = FeatureStore.open_or_create(out, schema, index, writer_rank=0)  # the same command resumes
    store.close()
    assert store.schema.fingerprint == schema.fingerprint and store.index.ids == index.ids
    assert store.done_shards() == [] and not list(out.rglob("*.partial"))


def test_killed_marker_write_leaves_no_partial_after_the_next_run(empty_store: FeatureStore):
    s = empty_store
    s.write_shard(1, shard_data(s, 1))
    s.group["done"][1] = 0  # killed after its temporary file, before the rename: marker absent...
    leftover = Path(s.path) / "done" / "c" / "1.5f3c0ffee5f3c0ffee5f3c0ffee5f3c0f.partial"
    leftover.write_bytes(b"\x00" * 8)  # ...and zarr's temporary file left behind
    assert s.done_shards() == []
    s.write_shard(1, shard_data(s, 1))  # the next run redoes the shard
    assert s.done_shards() == [1] and not list(Path(s.path).rglob("*.partial"))


def test_shard_cleanup_spares_a_live_writers_temporary_file(empty_store: FeatureStore):
    import socket
    import subprocess
    import sys

    shard_dir = Path(empty_store.path) / "targets" / "c" / "0" / "0"
    shard_dir.mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = socket.gethostname()
    try:
        mine = shard_dir / f".0.{host}.{live.pid}.partial"
        gone = shard_dir / f".0.{host}.{int(dead.stdout)}.partial"
        mine.write_bytes(b"being written")
        gone.write_bytes(b"half a shard")
        empty_store.write_shard(0, shard_data(empty_store, 0))
        assert mine.exists() and not gone.exists()
    finally:
        live.kill()
        live.wait()


def test_one_writer_per_rank(tmp_path: Path):
    import signal
    import subprocess
    import sys

    from a4g.store.lock import acquire_writer

    out = tmp_path / "store"
    hold = "import sys, time; from a4g.store.lock import acquire_writer; acquire_writer(sys.argv[1], 0); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError) as err:
            FeatureStore.open_or_create(out, *_schema_and_index(), writer_rank=0)
        assert str(out.resolve()) in str(err.value) and "rank 0" in str(err.value)
        assert f"pid {holder.pid} on" in str(err.value)
        FeatureStore.open_or_create(out, *_schema_and_index(), writer_rank=1).close()  # another rank: fine
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with FeatureStore.open_or_create(
        out, *_schema_and_index(), writer_rank=0
    ) as store:  # the kernel freed it
        with pytest.raises(StoreError, match="already being written"):
            acquire_writer(out, 0)
        store.write_shard(0, shard_data(store, 0))
    acquire_writer(out, 0).release()  # closed: free again
