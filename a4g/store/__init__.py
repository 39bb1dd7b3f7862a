"""The feature store: a sharded Zarr v3 group that `a4g extract` writes and training reads.

- ``schema``: the typed, versioned, fingerprinted :class:`StoreSchema` (the contract between stages);
- ``index``: :class:`VideoIndex`, where each video's frames lie (and the :class:`SkippedVideo` list);
- ``feature_store``: :class:`FeatureStore`, create / open / resume / write / read shards;
- ``shards``: the shard backend, ``open_rows(store, name)``: direct files for local folders,
  tensorstore for s3:// and gs:// (numbers and reasons in its doc);
- ``location``: :class:`StoreLocation`, a store's path or URI (file://, s3://, gs://) parsed once;
- ``kvzarr``: zarr-python's Store on tensorstore's kvstore (a remote store's small metadata);
- ``lock``: one writer per rank (a flock locally, a conditionally written ownership object remotely);
- ``verify``: finiteness, per-shard checksums and ``a4g store verify``.
"""

from a4g.errors import SchemaError, StoreError
from a4g.store.feature_store import FeatureStore, human_bytes, read_rows, schema_differences
from a4g.store.index import SkippedVideo, VideoIndex
from a4g.store.location import StoreLocation, parse_location
from a4g.store.lock import acquire_writer
from a4g.store.schema import StoreSchema
from a4g.store.shards import ShardReadError, open_rows

__all__ = [
    "FeatureStore",
    "SchemaError",
    "ShardReadError",
    "SkippedVideo",
    "StoreError",
    "StoreLocation",
    "StoreSchema",
    "VideoIndex",
    "acquire_writer",
    "human_bytes",
    "open_rows",
    "parse_location",
    "read_rows",
    "schema_differences",
]
