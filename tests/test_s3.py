"""Feature stores on a real S3 server: moto's server on 127.0.0.1, started once per session by
tests/conftest.py (``s3_server``), reached through tensorstore's S3 client exactly as AWS would be.

Extract into s3://, verify, info, train 20 steps from it, kill -9 an extraction and resume it, two
ranks writing one store at once, and the writer lock's ownership object. Every extraction here uses
the same flags, so each store must equal the reference byte for byte. Tiny models are all per-op
overhead and their float sums could depend on the thread count, so every extraction runs on one
thread (``OMP_NUM_THREADS=1`` in subprocesses, ``torch.set_num_threads(1)`` in this one).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from conftest import EXTRACT_TINY, botocore_config
from typer.testing import CliRunner

from a4g.cli import app
from a4g.errors import StoreError
from a4g.store import FeatureStore
from a4g.store.lock import acquire_writer

runner = CliRunner()
ARGS = ["extract", *EXTRACT_TINY, "--limit-videos", "3", "--shard-frames", "4", "--batch", "2"]  # 18 shards
SUBPROCESS_S = 120  # one tiny extraction starts (imports torch and the models) and runs in well under this


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("s3_videos") / "syn"


def _extract(out: str, data_root: Path) -> str:
    result = runner.invoke(app, [*ARGS, "--data-root", str(data_root), "--out", out])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def reference(s3_server: str, data_root: Path) -> FeatureStore:
    """One uninterrupted extraction into s3:// (the store every other run must equal)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _extract(f"{s3_server}/reference", data_root)
    finally:
        torch.set_num_threads(before)
    return FeatureStore.open(f"{s3_server}/reference")


def _same_content(a: FeatureStore, b: FeatureStore) -> None:
    assert a.schema.fingerprint == b.schema.fingerprint
    assert a.array_names == b.array_names
    for name in a.array_names:
        np.testing.assert_array_equal(a.array(name)[:], b.array(name)[:])  # zarr-python reads both
    np.testing.assert_array_equal(a.group["done"][:], b.group["done"][:])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "a4g.cli", *args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def _done_objects(uri: str) -> int:
    """Done markers written so far, counted with a plain S3 listing."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3", config=botocore_config(timeout=10))
    return client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/done/c/").get("KeyCount", 0)


# ---- extract, verify, info, train ------------------------------------------------------------------


def test_extract_into_s3_equals_a_local_extraction(reference: FeatureStore, data_root: Path, tmp_path: Path):
    assert reference.path.startswith("s3://") and reference.complete
    local = tmp_path / "local"
    _extract(str(local), data_root)
    _same_content(reference, FeatureStore.open(local))
    assert not Path("s3:").exists()  # the bug this replaces: a local folder named s3:


def test_store_verify_and_info_on_s3(reference: FeatureStore):
    verify = runner.invoke(app, ["store", "verify", reference.path])
    assert verify.exit_code == 0, verify.output
    assert "OK" in verify.output and reference.path in verify.output
    info = runner.invoke(app, ["store", "info", reference.path])
    assert info.exit_code == 0, info.output
    assert (
        reference.path in info.output and f"{reference.num_shards}/{reference.num_shards} done" in info.output
    )


def test_train_20_steps_from_s3(reference: FeatureStore, tmp_path: Path):
    """One loader worker: it must start by spawn (a forked child cannot use tensorstore)."""
    run = tmp_path / "run"
    args = ["train", "--features", reference.path, "--out", str(run), "--steps", "20"]
    args += [
        "--model",
        "VDiT-tiny",
        "--frames",
        "4",
        "--stride",
        "2",
        "--batch-size",
        "2",
        "--num-workers",
        "1",
    ]
    args += ["--projector-dim", "32", "--log-every", "10", "--checkpoint-every", "20"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = (run / "run.json").read_text()
    assert f'"path": "{reference.path}"' in record  # the URI, not a mangled local path


def test_unsupported_scheme_is_one_clear_error(tmp_path: Path):
    result = runner.invoke(app, [*ARGS, "--out", "ftp://host/store"])
    assert result.exit_code == 2
    assert (
        "`--out ftp://host/store`: unsupported store location; use a local path, file://, s3:// or gs://"
        in (result.output)
    )
    assert "Traceback" not in result.output


# ---- kill -9 and resume, two ranks ------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_into_s3_then_resume_equals_uninterrupted(
    reference: FeatureStore, s3_server: str, data_root: Path
):
    out = f"{s3_server}/killed"
    proc = subprocess.Popen(
        _cli(*ARGS, "--data-root", str(data_root), "--out", out),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + SUBPROCESS_S
    while proc.poll() is None and time.monotonic() < deadline and _done_objects(out) == 0:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = FeatureStore.open(out)
    assert killed.done_shards(), "the run never finished a shard"
    assert not killed.complete, "killed too late to test resuming; make the run longer"
    # the dead writer's ownership record is still there; the resume must take it over (same host, pid gone)
    output = _extract(out, data_root)
    assert "resuming" in output
    resumed = FeatureStore.open(out)
    assert resumed.verify() == []
    _same_content(resumed, reference)


@pytest.mark.slow
def test_two_ranks_writing_one_s3_store_equal_one_process(
    reference: FeatureStore, s3_server: str, data_root: Path, monkeypatch
):
    """Rank 1 in a subprocess, rank 0 in this process at the same time (one start-up fewer)."""
    out = f"{s3_server}/two-ranks"
    rank1 = subprocess.Popen(
        _cli(*ARGS, "--data-root", str(data_root), "--out", out),
        env=_env(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
            monkeypatch.setenv(name, value)
        _extract(out, data_root)
        output = rank1.communicate(timeout=SUBPROCESS_S)[0]
    finally:
        rank1.kill()
    assert rank1.returncode == 0, output
    two = FeatureStore.open(out)
    assert two.verify() == []
    _same_content(two, reference)


# ---- writer lock: the ownership object --------------------------------------------------------------

HOLD = "import sys, time; from a4g.store.lock import acquire_writer; acquire_writer(sys.argv[1], 0); print('held', flush=True); time.sleep(120)"


def test_second_writer_of_a_rank_is_refused_then_takes_over_a_dead_one(s3_uri: str):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, s3_uri], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError) as err:
            acquire_writer(s3_uri, 0)
        message = str(err.value)
        assert s3_uri in message and "rank 0" in message and f"pid {holder.pid} on" in message
        acquire_writer(s3_uri, 1).release()  # another rank is free
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with acquire_writer(s3_uri, 0):  # the holder died without releasing: its record is stale
        with pytest.raises(StoreError, match="already being written"):
            acquire_writer(s3_uri, 0)
    acquire_writer(s3_uri, 0).release()  # released: free again


# ---- locations ------------------------------------------------------------------------------------------


def test_locations_parse_or_are_refused_naming_the_flag(tmp_path: Path, monkeypatch):
    from a4g.errors import ConfigError
    from a4g.store.location import parse_location

    s3 = parse_location("s3://bucket/some/prefix/")
    assert (s3.scheme, s3.bucket, s3.prefix, s3.uri) == (
        "s3",
        "bucket",
        "some/prefix",
        "s3://bucket/some/prefix",
    )
    assert parse_location("gs://b/p").kvstore_spec() == {"driver": "gcs", "bucket": "b", "path": "p/"}
    assert parse_location(f"file://{tmp_path}/s").path == tmp_path / "s"
    assert parse_location(tmp_path / "s").path == tmp_path / "s" and parse_location("rel").is_local
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:10")  # the service-specific one wins
    assert (
        s3.kvstore_spec()["endpoint"] == "http://127.0.0.1:10" and s3.kvstore_spec()["path"] == "some/prefix/"
    )
    for text, message in [
        (
            "ftp://h/x",
            "`--out ftp://h/x`: unsupported store location; use a local path, file://, s3:// or gs://",
        ),
        ("s3:/bucket/x", "write s3://bucket/x"),  # what pathlib makes of s3://bucket/x
        ("s3:///x", "no bucket"),
        ("file://host/x", "not a host"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_location(text, "--out")


def _write_record(uri: str, key: str, body: bytes) -> None:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    boto3.client("s3", config=botocore_config(timeout=10)).put_object(
        Bucket=bucket, Key=f"{prefix}/{key}", Body=body
    )


def test_a_writer_on_another_host_holds_until_its_lease_runs_out(s3_uri: str):
    from a4g.store.lock import LEASE_S, Holder

    now = time.time()
    fresh = Holder("elsewhere", 4242, now - 5, "1", renewed=now - 5)
    _write_record(s3_uri, ".a4g/writer-rank0.json", fresh.to_bytes())
    with pytest.raises(StoreError, match="pid 4242 on elsewhere"):
        acquire_writer(s3_uri, 0)
    expired = Holder("elsewhere", 4242, now - 600, "1", renewed=now - LEASE_S - 1)
    _write_record(s3_uri, ".a4g/writer-rank0.json", expired.to_bytes())
    acquire_writer(s3_uri, 0).release()  # not renewed for a lease: taken over


def test_a_writer_whose_record_was_taken_over_stops(s3_uri: str, monkeypatch):
    import a4g.store.lock as lock

    monkeypatch.setattr(lock, "RENEW_S", 0.05)
    held = acquire_writer(s3_uri, 0)
    try:
        other = lock.Holder("elsewhere", 7, time.time(), "1", renewed=time.time())
        _write_record(s3_uri, ".a4g/writer-rank0.json", other.to_bytes())  # judged us dead and took over
        deadline = time.monotonic() + 10  # the next renewal (50 ms) finds the record changed
        while True:
            try:
                held.check()
            except StoreError as err:
                assert "lost its writer lock to pid 7 on elsewhere" in str(err)
                break
            assert time.monotonic() < deadline, "the takeover was never noticed"
            time.sleep(0.05)
    finally:
        held.release()


def test_kill_in_the_creation_window_of_an_s3_store_resumes(s3_uri: str, monkeypatch):
    import a4g.store.feature_store as fs
    from a4g.store.fake import make_index, make_schema

    lengths = {"a": 5, "b": 3}
    schema, index = make_schema(lengths), make_index(lengths)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill: nothing after it runs

    with monkeypatch.context() as m:
        m.setattr(fs, "write_index", killed)
        with pytest.raises(KeyboardInterrupt):
            FeatureStore.open_or_create(s3_uri, schema, index, writer_rank=0)
    with pytest.raises(StoreError, match="creation of this store was interrupted; rerun"):
        FeatureStore.open(s3_uri)
    with FeatureStore.open_or_create(s3_uri, schema, index, writer_rank=0) as store:
        assert store.schema.fingerprint == schema.fingerprint and store.index.ids == index.ids


def test_a_local_store_copied_to_s3_as_is_opens_and_verifies(s3_uri: str, tmp_path: Path):
    from conftest import LENGTHS, shard_data

    from a4g.store.fake import make_index, make_schema

    local = FeatureStore.create(tmp_path / "store", make_schema(LENGTHS, flip=True), make_index(LENGTHS))
    for shard in range(local.num_shards):
        local.write_shard(shard, shard_data(local, shard))
    bucket, _, prefix = s3_uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3", config=botocore_config(timeout=10))
    for path in Path(local.path).rglob("*"):  # what `aws s3 sync` does
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local.path).as_posix()}")
    remote = FeatureStore.open(s3_uri)
    assert remote.verify() == []
    for shard in range(remote.num_shards):
        for name, data in remote.read_shard(shard).items():
            np.testing.assert_array_equal(data, local.read_shard(shard)[name])


def test_missing_prefix_and_bucket_are_one_clear_error(s3_uri: str):
    with pytest.raises(StoreError, match="no store at .*: the path does not exist or is empty"):
        FeatureStore.open(s3_uri)
    with pytest.raises(StoreError, match=r"s3://no-such-bucket/x: cannot read it \(NOT_FOUND: NoSuchBucket"):
        FeatureStore.open("s3://no-such-bucket/x")
