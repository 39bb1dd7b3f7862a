"""align4gen: align video diffusion transformers with cached self-supervised encoder features.

The public Python API (documented in the README) is importable from here::

    from a4g import FeatureStore, ClipDataset

Names load on first use (PEP 562 ``__getattr__``): ``import a4g`` alone stays cheap (it reads
``__version__`` only), and the CLI's lazy command loading is not undone by the package import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "FeatureStore": "a4g.store",
    "StoreSchema": "a4g.store",
    "ClipDataset": "a4g.train.data",
    "A4GError": "a4g.errors",
}

__all__ = ["A4GError", "ClipDataset", "FeatureStore", "StoreSchema", "__version__"]  # _API + the version

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from a4g.errors import A4GError
    from a4g.store import FeatureStore, StoreSchema
    from a4g.train.data import ClipDataset


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'a4g' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
