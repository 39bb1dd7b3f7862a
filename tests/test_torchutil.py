"""a4g.torchutil: --device resolution and its refusals, autocast per device, loader worker threads."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from a4g.errors import A4GError, ConfigError
from a4g.torchutil import autocast, resolve_device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    """Device *resolution* only: nothing is allocated, so no GPU is needed to test it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_the_cpu_without_a_gpu(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_is_the_ranks_gpu(two_gpus):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_gpu_without_a_gpu_is_one_clear_error(no_gpu, name):
    with pytest.raises(ConfigError, match=f"--device {name}: no CUDA GPU is visible here; use --device cpu"):
        resolve_device(name)


def test_gpu_past_the_visible_ones_is_refused(two_gpus):
    with pytest.raises(ConfigError, match=r"--device cuda:2: only 2 GPU\(s\) are visible"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["banana", "cuda:x", "", "meta"])
def test_nonsense_names_are_refused_naming_the_flag(name):
    with pytest.raises(ConfigError, match="--device") as err:
        resolve_device(name)
    assert "use auto, cpu, cuda or cuda:N" in str(err.value)
    assert isinstance(err.value, A4GError) and err.value.exit_code == 2


def test_autocast_is_bf16_on_gpu_and_off_on_cpu():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu")):
        assert (a @ b).dtype == torch.float32
    if torch.cuda.is_available():
        with autocast(torch.device("cuda")):
            assert (a.cuda() @ b.cuda()).dtype == torch.bfloat16


class _Threads(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        return torch.get_num_threads()


def test_loader_workers_run_one_torch_thread_without_our_help():
    """Why a4g passes no ``worker_init_fn``: torch's worker loop sets one thread per worker itself."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what a forked worker would inherit if torch did not reset it
    try:
        loader = DataLoader(_Threads(), batch_size=None, num_workers=1, multiprocessing_context="fork")
        assert list(loader) == [1, 1]
    finally:
        torch.set_num_threads(before)
