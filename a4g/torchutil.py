"""Small torch helpers every stage shares: which device, and which precision on it.

torch is imported inside each function, so the CLI can import this module to check ``--device``
when it parses flags without making ``a4g --help`` pay torch's ~1 s import.

No DataLoader ``worker_init_fn`` for threads: torch's worker loop already calls
``torch.set_num_threads(1)`` in every worker (``torch/utils/data/_utils/worker.py``), which is all
the three copies of ``_worker_init`` here did (tests/test_torchutil.py checks that torch still does).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from a4g.errors import ConfigError

if TYPE_CHECKING:
    import torch

_DEVICE_HINT = "use auto, cpu, cuda or cuda:N"


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``--device`` as a torch device; ConfigError naming the flag when it is not usable here.

    ``auto`` is a GPU when one is visible (``cuda:local_rank`` when a launcher gave a rank, else
    ``cuda``), otherwise the CPU. An explicit GPU that is absent is refused now, with one line,
    instead of as a CUDA traceback at the first tensor moved there.
    """
    import torch

    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda" if local_rank is None else f"cuda:{local_rank}")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device; {_DEVICE_HINT}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is visible here; use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: only {count} GPU(s) are visible (cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: no Apple GPU (MPS) is available here; use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name!r}: a4g runs on cpu, cuda or mps; {_DEVICE_HINT}")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU, nothing elsewhere.

    bf16, not fp16: SD VAEs overflow in fp16, and bf16 needs no loss scaling. On CPU, bf16 matmuls
    are slower than fp32 on most hosts and change results, so CPU runs stay fp32.
    """
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
