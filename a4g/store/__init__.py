"""The feature store: a sharded Zarr v3 group that `a4g extract` writes and training reads.

- ``schema``: the typed, versioned, fingerprinted :class:`StoreSchema` (the contract between stages);
- ``index``: :class:`VideoIndex`, where each video's frames lie (and the :class:`SkippedVideo` list);
- ``feature_store``: :class:`FeatureStore`, create / open / resume / write / read shards;
- ``shards``: direct shard-file reads and writes (2x faster writes than zarr-python, see its doc);
- ``verify``: finiteness, per-shard checksums and ``a4g store verify``.
"""

from a4g.errors import SchemaError, StoreError
from a4g.store.feature_store import FeatureStore, human_bytes, read_rows, schema_differences
from a4g.store.index import SkippedVideo, VideoIndex
from a4g.store.schema import StoreSchema
from a4g.store.shards import ShardReadError

__all__ = [
    "FeatureStore",
    "SchemaError",
    "ShardReadError",
    "SkippedVideo",
    "StoreError",
    "StoreSchema",
    "VideoIndex",
    "human_bytes",
    "read_rows",
    "schema_differences",
]
