"""Test hook: SIGKILL this process at a named point of a write path (``A4G_TEST_KILL_AT=<point>``).

A resumed extraction must hold the same bytes as one that was never interrupted. A kill at a random
time rarely lands in the few milliseconds that matter (a store being created, a shard written but
not yet marked done), so the write paths name those points, and tests/test_extract_kill.py and
benchmarks/kill_sweep.py kill exactly there. Points: ``extract:store-open``,
``extract:before-write:<shard>``, ``extract:after-write:<shard>``, ``store:create-arrays``,
``store:before-done:<shard>``. Unset (always, outside those tests) a call costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "A4G_TEST_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process now if ``$A4G_TEST_KILL_AT`` is `name` (no cleanup, like a real crash)."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
