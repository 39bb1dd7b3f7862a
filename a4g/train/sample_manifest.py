"""The sample manifest ``OUT/samples.json``: what `a4g sample` drew, so what is scored is what was sampled.

Before this record a sample folder was only "the mp4s that happen to be there": `a4g eval` scored the
preview grid as a generated video, and a second `sample --num 2` into the same folder left older
videos that were scored too. Now `a4g sample` writes this typed record (frozen pydantic, unknown fields
refused, like ``run.json``):

- ``settings``: everything that decides the pixels of video i (run, checkpoint step, EMA or live
  weights, seed, sampler, steps, guidance, class, frames, size, fps, VAE). A second `a4g sample`
  into the same ``--out`` resumes only when these are equal, and names each field that differs;
- ``num`` (videos asked for) and ``files`` (the videos finished when the record was written, in index
  order). The set is complete when ``len(files) == num``; `a4g eval --fake OUT` scores the first
  ``--num`` of ``files`` and refuses an incomplete set, a folder holding videos the record does not
  list, or a folder holding several records.

The record is written atomically (temporary file + ``os.replace``) by every process that starts or
finishes sampling into the folder; all writers of one folder write the same settings, so the last
write wins without harm (see ``a4g/train/sample.py`` for the order that makes it final).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from a4g.errors import DataError
from a4g.store.schema import describe_validation_error
from a4g.video import is_video_file

MANIFEST = "samples.json"
PREVIEW = "preview"  # OUT/preview/grid.mp4: a tiled look at the set, never scored
PARTIAL = ".partial"  # write_video's temporary infix: "0003.partial.mp4" is a video being written
FORMAT_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleSettings(_Record):
    """What decides the content of every video: two folders with equal settings hold equal videos."""

    run: str = Field(description="run directory, resolved")
    run_created: str = Field(description="run.json's `created`: tells a retrained run at the same path apart")
    checkpoint_step: int = Field(ge=0)
    weights: Literal["ema", "live"]
    seed: int = Field(ge=0)
    sampler: str
    steps: int = Field(ge=1)
    guidance: float = Field(ge=0, description="the scale used (1.0 for unconditional runs)")
    class_id: int | None = Field(description="None: a class per video drawn from (seed, index)")
    frames: int = Field(ge=1)
    size: tuple[int, int] = Field(description="height, width of the frames in pixels")
    fps: int = Field(ge=1)
    vae: str = Field(description="VAE name")
    vae_sha256: str


FLAGS = {
    "run": "--run",
    "run_created": "--run (retrained since)",
    "checkpoint_step": "--checkpoint",
    "weights": "--ema/--no-ema",
    "seed": "--seed",
    "sampler": "--sampler",
    "steps": "--steps",
    "guidance": "--cfg",
    "class_id": "--class",
    "frames": "--frames",
    "size": "frame size (the run's)",
    "fps": "--fps",
    "vae": "--vae",
    "vae_sha256": "--vae (weights)",
}
"""The flag that changes each setting, for messages that say what to repeat."""


class SampleManifest(_Record):
    """Everything ``samples.json`` holds."""

    format_version: int = FORMAT_VERSION
    a4g_version: str
    settings: SampleSettings
    num: int = Field(ge=1, description="videos asked for")
    files: list[str] = Field(description="finished videos (names in the folder), in index order")
    ema_updates: int | None = Field(default=None, description="EMA updates behind the weights (info)")

    @property
    def complete(self) -> bool:
        return len(self.files) >= self.num


def settings_diff(have: SampleSettings, want: SampleSettings) -> list[str]:
    """One line per setting that differs, naming its flag: ``--steps: folder has 50, now 20``."""
    old, new = have.model_dump(), want.model_dump()
    return [f"{FLAGS[k]}: folder has {old[k]!r}, now {new[k]!r}" for k in old if old[k] != new[k]]


def manifest_path(folder: Path) -> Path:
    return Path(folder) / MANIFEST


def read_manifest(folder: Path) -> SampleManifest | None:
    """The folder's manifest, None when it has none; a damaged one is a DataError naming the file."""
    path = manifest_path(folder)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); delete the folder and sample again") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: not a samples.json this a4g reads (format_version {FORMAT_VERSION}); sample again"
        )
    try:
        return SampleManifest.model_validate(data)
    except ValidationError as err:
        raise DataError(f"{path}: {describe_validation_error(err, what='sample manifest')}") from None


def write_manifest(folder: Path, manifest: SampleManifest) -> Path:
    """Write ``FOLDER/samples.json`` atomically; returns its path."""
    path = manifest_path(folder)
    text = json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def loose_videos(folder: Path, listed: set[str]) -> list[Path]:
    """Videos under ``folder`` that are neither in ``listed`` (names relative to it), nor the preview,
    nor a video still being written; sorted."""
    root = Path(folder)
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or not is_video_file(path) or rel.parts[0] == PREVIEW:
            continue
        if PARTIAL in path.name or rel.as_posix() in listed:
            continue
        found.append(path)
    return found


def scored_files(folder: Path, flag: str = "--fake") -> tuple[list[Path], SampleManifest] | None:
    """The videos `a4g eval` may score in ``folder`` (the manifest's files) and the manifest; None when
    the folder has no manifest.

    Refuses (DataError naming ``flag``) several manifests under the folder, an incomplete set, a
    listed file that is missing, and videos the manifest does not list.
    """
    root = Path(folder)
    found = sorted(root.rglob(MANIFEST))
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in found[:4])
        raise DataError(
            f"{flag} {root} mixes {len(found)} sample sets ({names}); point {flag} at one set's folder"
        )
    home = found[0].parent
    manifest = read_manifest(home)
    if not manifest.complete:
        raise DataError(
            f"{flag} {root}: sampling did not finish ({len(manifest.files)} of {manifest.num} videos in "
            f"{found[0]}); run the same `a4g sample` command again to finish it"
        )
    files = [home / name for name in manifest.files]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise DataError(f"{flag} {root}: {missing[0]} is listed in {found[0]} but missing; sample again")
    stray = loose_videos(root, {p.relative_to(root).as_posix() for p in files})
    if stray:
        raise DataError(
            f"{flag} {root} holds {len(stray)} videos that {found[0]} does not list (e.g. {stray[0]}), "
            f"so they were not drawn by that sample run; move them out or point {flag} at a clean folder"
        )
    return files, manifest
