"""One error family for every mistake a person can make, caught in one place (``a4g/cli``).

Domain code raises a subclass of :class:`A4GError` whose message names the bad flag, file or field
and what to do; the CLI prints it as one ``error: ...`` line with exit code 2 and never a traceback.
Built-in mixins stay where callers (or the standard library) rely on them: a missing file is still a
``FileNotFoundError``, a bad value still a ``ValueError``.

Anything that is *not* an ``A4GError`` is a bug in a4g and keeps its traceback.
"""

from __future__ import annotations


class A4GError(Exception):
    """Base of every person-facing error. ``str(err)`` is the whole message, without quotes."""

    exit_code = 2

    def __str__(self) -> str:
        # KeyError-style repr quoting never reaches a person: the message is the first argument as is.
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(A4GError, ValueError):
    """A flag or config value out of range, or flags that contradict each other."""


class DataError(A4GError, ValueError):
    """Videos, clips or store contents that cannot serve the request."""


class StoreError(A4GError, RuntimeError):
    """A feature store that is missing, damaged, locked or does not fit the request."""


class SchemaError(StoreError, ValueError):
    """A store schema that does not validate or does not recompute its fingerprint."""


class WeightsError(A4GError, FileNotFoundError):
    """Model weights that are missing, unreadable or refused (e.g. a pickle that would run code)."""


class RunError(A4GError, ValueError):
    """A run directory, run record or checkpoint that cannot be trained, resumed or sampled."""


class UnreadableVideo(A4GError):
    """One video that cannot be decoded; sources list it as skipped instead of failing the run."""
