"""What stops a training run before it wastes or loses work: a non-finite loss, and memory it cannot get.

Why: ``a4g train --lr 1e20`` (or a huge ``--align-weight``) used to exit 0 with every weight NaN, and
``a4g sample`` then wrote all-black videos (issue 10). Once one step's loss or gradient norm is not
finite, AdamW writes NaN into every weight it touches and nothing after that step is worth keeping, so
the run stops there with the step named and the last checkpoint left as it was.

Cost: one ``isfinite`` on two already-reduced scalars per step. Reading the answer on the host is free
on CPU, but on a GPU it would wait for the device every step and stall the queue of kernels, so there
the first bad step is recorded on the device (``torch.where``, no sync) and read only when the host
reads the loss anyway: at log points, before every checkpoint save and before periodic samples. On a
GPU a run may so go on for up to ``--log-every`` steps past the bad one, but never saves them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from a4g.errors import RunError
from a4g.train.checkpoint import list_checkpoints
from a4g.train.config import TrainConfig


class NonFiniteLoss(RunError):
    """The loss or the gradient norm became NaN or infinite; the message names the step and the cause."""


class LossWatch:
    """Stops training at the first optimizer step whose loss or gradient norm is not finite."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.sync_free = device.type != "cpu"  # see the module docstring
        self.first_bad = torch.tensor(-1, device=device)  # the step, or -1 while every step was finite
        self.values = torch.zeros(2, device=device)  # loss and grad norm at that step

    def see(self, step: int, values: dict[str, Tensor]) -> None:
        """After optimizer step ``step``: ``values`` holds the scalar ``loss`` and ``grad_norm``.

        Raises :class:`NonFiniteLoss` (at once on CPU; on GPU when the host next reads, see above).
        """
        pair = torch.stack([values["loss"].float(), values["grad_norm"].float()])
        fresh = ~torch.isfinite(pair).all() & (self.first_bad < 0)
        self.first_bad = torch.where(fresh, step, self.first_bad)
        self.values = torch.where(fresh, pair, self.values)
        if not self.sync_free or self._host_reads(step):
            self.check()

    def _host_reads(self, step: int) -> bool:
        """Whether the loop reads scalars or writes weights after this step (log, checkpoint, samples)."""
        cfg = self.cfg
        periods = [cfg.log_every, cfg.checkpoint_every] + ([cfg.sample_every] if cfg.sample_every else [])
        return step >= cfg.steps or any(step % p == 0 for p in periods)

    def check(self) -> None:
        step = int(self.first_bad)
        if step < 0:
            return
        loss, grad = self.values.tolist()
        raise NonFiniteLoss(self._message(step, loss, grad))

    def _message(self, step: int, loss: float, grad: float) -> str:
        cfg = self.cfg
        saved = [s for s in list_checkpoints(cfg.run) if s < step]
        kept = (
            f"the last good checkpoint (step {max(saved)}) is intact" if saved else "no checkpoint was saved"
        )
        unclipped = ", and no gradient clipping (--max-grad-norm 0)" if cfg.max_grad_norm == 0 else ""
        return (
            f"training stopped at step {step}: the loss is {loss:g} and the gradient norm {grad:g} (not "
            f"finite), so the weights after it are useless and were not saved; {kept}. Likely cause: too "
            f"high a --lr ({cfg.lr:g}) or --align-weight ({cfg.align_weight:g}){unclipped}; train again "
            "into a new --out with a lower value"
        )


@contextlib.contextmanager
def explain_out_of_memory(cfg: TrainConfig) -> Iterator[None]:
    """Turn running out of memory into one error naming ``--batch-size`` and what to change.

    No estimate is made ahead: the activation memory of a V-DiT step depends on the attention kernel,
    compile and checkpointing, and the first step measures it exactly within seconds of starting, so
    that step is the check. On CPU the kernel's OOM killer usually ends the process before Python sees
    anything; when the allocator fails first, the same message is given.
    """
    try:
        yield
    except torch.OutOfMemoryError as err:
        raise RunError(_oom_message(cfg, "GPU", err)) from None
    except RuntimeError as err:
        if "can't allocate memory" not in str(err):  # PyTorch's CPU allocator, e.g. DefaultCPUAllocator
            raise
        raise RunError(_oom_message(cfg, "CPU", err)) from None


def _oom_message(cfg: TrainConfig, where: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    clips = cfg.batch_size * cfg.grad_accum
    return (
        f"--batch-size {cfg.batch_size} does not fit in {where} memory ({first}); lower --batch-size and "
        f"raise --grad-accum to keep {clips} clips per step, or add --grad-checkpointing"
    )
