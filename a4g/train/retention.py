"""``--keep-last N``: delete old checkpoints, never the ones a crash or a damaged file would need.

Each checkpoint holds the model, the EMA copy and AdamW's two moments: for VDiT-XL (~675 M
parameters) about 675e6 x 4 bytes x 4 = 10.8 GB, so keeping every one of a 400k-step run at the
default ``--checkpoint-every 5000`` fills 860 GB.

Rules, in the order they protect a run:

- pruning runs only after a new checkpoint is complete (renamed from ``.partial``), so the newest
  complete ones on disk always include the last finished save;
- only *intact* checkpoints (``checkpoint.damage`` finds no missing or truncated file) count toward
  N; a damaged newer one is left alone and does not cost an older intact one its place;
- nothing is deleted while fewer than N intact checkpoints exist, so the only complete one never goes;
- a deleted checkpoint is first renamed out of the ``step_XXXXXXX`` pattern, then removed, so a crash
  mid-delete cannot leave a half-deleted directory that looks complete; leftovers go on the next prune.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from a4g.train.checkpoint import checkpoint_root, damage, list_checkpoints

TRASH_SUFFIX = ".deleting"


def doomed_checkpoints(run: Path, keep: int) -> list[Path]:
    """The checkpoints ``prune_checkpoints(run, keep)`` would delete, oldest first (``keep`` 0: none)."""
    if keep < 1:
        return []
    found = list_checkpoints(run)
    intact = 0
    for i, step in enumerate(sorted(found, reverse=True)):
        if intact == keep:
            return [found[s] for s in sorted(found)[: len(found) - i]]
        intact += damage(found[step]) is None
    return []


def prune_checkpoints(run: Path, keep: int) -> list[Path]:
    """Keep the ``keep`` newest intact checkpoints of ``run`` (and any damaged newer ones); delete the
    rest. Main process only, after a save has completed. Returns the deleted directories."""
    for leftover in checkpoint_root(run).glob(f"*{TRASH_SUFFIX}"):
        shutil.rmtree(leftover, ignore_errors=True)
    doomed = doomed_checkpoints(run, keep)
    for path in doomed:
        trash = path.with_name(path.name + TRASH_SUFFIX)
        path.rename(trash)  # atomic: from here on it is no checkpoint, whatever happens next
        shutil.rmtree(trash, ignore_errors=True)
    return doomed
