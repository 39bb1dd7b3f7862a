"""Where a store lives: a local path, ``file://``, ``s3://bucket/prefix`` or ``gs://bucket/prefix``.

Every command that opens a store takes its location as text and parses it here, once, into a
:class:`StoreLocation`. Local stores are plain folders (zarr-python's ``LocalStore`` and the direct
shard reader of :mod:`a4g.store.shards`); object stores go through tensorstore's kvstore drivers
(C++, outside the GIL, maintained by Google), for the shard data and — through
:class:`~a4g.store.kvzarr.KvZarrStore` — for the small Zarr metadata too, so one client and one set
of credentials serve a store.

Credentials and endpoint come the standard way: for S3 the ``AWS_*`` variables (``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``, and ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for an S3-compatible
server) and otherwise the AWS default chain (``~/.aws`` files, instance metadata); for GCS the
application-default credentials. tensorstore does not read the endpoint variables itself (measured:
without them it talks to AWS), so :meth:`StoreLocation.kvstore_spec` passes them on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from a4g.errors import ConfigError

SCHEMES = ("file", "s3", "gs")
_HINT = "use a local path, file://, s3:// or gs://"
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MANGLED = re.compile(r"^(s3|gs|file):/(?!/)")  # what pathlib makes of s3://x (one slash lost)


_S3_CONTEXT = {"s3_request_retries": {"max_retries": 6, "initial_delay": "0.5s", "max_delay": "8s"}}
"""Retries of a failed S3 request: ~25 s in all, so a wrong endpoint or a dead server fails within
half a minute; tensorstore's default (32 retries up to 32 s apart) waits for many minutes (measured:
still waiting after 5 minutes for a closed port)."""


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store location. ``path`` is the folder for local stores; ``bucket``/``prefix`` (no
    leading or trailing slash) for object stores."""

    scheme: str
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def uri(self) -> str:
        """The location for records (run.json): a resolved absolute path, or the URI."""
        if self.is_local:
            return str(self.path.resolve())
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    def __str__(self) -> str:
        """For messages: a local path as it was given, a URI as is."""
        return str(self.path) if self.is_local else self.uri

    def child(self, name: str) -> StoreLocation:
        """The location of ``name`` inside this one (an array of the store)."""
        if self.is_local:
            return StoreLocation("file", path=self.path / name)
        return StoreLocation(self.scheme, bucket=self.bucket, prefix=f"{self.prefix}/{name}".strip("/"))

    def kvstore_spec(self) -> dict[str, Any]:
        """The tensorstore kvstore spec of this location (a folder: the path ends with '/')."""
        if self.is_local:
            return {"driver": "file", "path": str(self.path.absolute()) + "/"}
        key = f"{self.prefix}/" if self.prefix else ""
        if self.scheme == "gs":
            return {"driver": "gcs", "bucket": self.bucket, "path": key}
        return {"driver": "s3", "bucket": self.bucket, "path": key, **_aws_settings(), "context": _S3_CONTEXT}


def parse_location(text: str | os.PathLike, flag: str = "store location") -> StoreLocation:
    """``text`` as a :class:`StoreLocation`; a ConfigError naming ``flag`` for what is not one."""
    if isinstance(text, StoreLocation):
        return text
    raw = os.fspath(text)
    match = _URI.match(raw)
    if match is None:
        if _MANGLED.match(raw):
            raise ConfigError(
                f"`{flag} {raw}`: looks like a URI with a slash lost; write {raw.replace(':/', '://', 1)}"
            )
        if not raw:
            raise ConfigError(f"{flag} is empty; {_HINT}")
        return StoreLocation("file", path=Path(raw).expanduser())
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"`{flag} {raw}`: unsupported store location; {_HINT}")
    parts = urlsplit(raw)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"`{flag} {raw}`: file:// takes an absolute path (file:///data/store), not a host"
            )
        return StoreLocation("file", path=Path(unquote(parts.path)))
    if not parts.netloc:
        raise ConfigError(f"`{flag} {raw}`: no bucket; write {scheme}://BUCKET/PREFIX")
    if parts.query or parts.fragment:
        raise ConfigError(f"`{flag} {raw}`: a store location takes no ?query or #fragment")
    return StoreLocation(scheme, bucket=parts.netloc, prefix=parts.path.strip("/"))


def _aws_settings() -> dict[str, Any]:
    """Endpoint, region and credential source for tensorstore's s3 driver, from the AWS variables.

    Naming the credential source when the variables give one keeps tensorstore from parsing (and
    logging errors about) ``~/.aws`` files that a CI machine does not have.
    """
    env = os.environ
    out: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        out["endpoint"] = endpoint
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        out["aws_region"] = region
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        out["aws_credentials"] = {"type": "environment"}  # otherwise the default chain (AWS_PROFILE, ...)
    return out
