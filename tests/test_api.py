"""The public Python API: `from a4g import FeatureStore, ClipDataset`, the README snippet as written,
and ClipDataset's clips against the store's own rows and the training plan."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import a4g
from a4g import ClipDataset, FeatureStore
from a4g.store import read_rows
from a4g.train.data import plan_clips

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPET = re.compile(r"<!-- api-snippet:start -->\s*```python\n(.*?)```\s*<!-- api-snippet:end -->", re.S)


@pytest.fixture(scope="module")
def store(train_store) -> FeatureStore:
    return train_store


def test_readme_snippet_runs_as_written(store, tmp_path, monkeypatch, capsys):
    """The snippet opens `demo_out/store` (what `make demo` makes); here that name points at the test store."""
    code = SNIPPET.search(README.read_text()).group(1)
    (tmp_path / "demo_out").mkdir()
    (tmp_path / "demo_out" / "store").symlink_to(Path(store.path).resolve())
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_snippet"})
    printed = capsys.readouterr().out
    clips = ClipDataset(store, frames=8, stride=2)
    assert f"{len(clips)} clips;" in printed
    h, w = store.schema.latent_size
    assert f"torch.Size([4, 8, {store.schema.vae.latent_channels}, {h}, {w}])" in printed
    assert f"torch.Size([4, 8, {store.schema.num_tokens}, {store.schema.target_channels}])" in printed


def test_import_a4g_loads_no_torch():
    """`import a4g` is cheap: the API names load on first use (PEP 562)."""
    code = "import sys, a4g; print(a4g.__version__); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'zarr', 'timm')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [a4g.__version__, "[]"]
    assert {"FeatureStore", "ClipDataset"} <= set(dir(a4g))
    assert set(a4g.__all__) == {*a4g._API, "__version__"}  # every exported name resolves
    assert all(getattr(a4g, name) is not None for name in a4g.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        a4g.nope  # noqa: B018


def test_clips_are_the_training_plan_and_the_store_rows(store):
    plan = plan_clips(store, frames=4, stride=2, hflip=True)
    clips = ClipDataset(store, frames=4, stride=2, hflip=True, latents="moments")
    assert len(clips) == 2 * plan.starts.size
    training = {
        (int(v), int(s))
        for i, v in enumerate(plan.videos)
        for s in plan.starts[plan.bounds[i] : plan.bounds[i + 1]]
    }
    seen = set()
    for i in (0, 1, len(clips) // 2 - 1, len(clips) // 2, len(clips) - 1):
        item = clips[i]
        video, start, flip = int(item["video"]), int(item["start"]), bool(item["flip"])
        assert flip == (i >= len(clips) // 2)
        seen.add((video, start))
        offset, length = int(store.index.offsets[video]), int(store.index.lengths[video])
        assert offset <= start and start + (4 - 1) * plan.step < offset + length  # inside its own video
        rows = start + plan.step * np.arange(4)
        suffix = "_flip" if flip else ""
        np.testing.assert_array_equal(
            item["latents"].numpy(), read_rows(store.array("latents" + suffix), rows)
        )
        np.testing.assert_array_equal(
            item["targets"].numpy(), read_rows(store.array("targets" + suffix), rows)
        )
        assert int(item["label"]) == int(store.index.labels[video])
    assert seen <= training


def test_latent_modes(store):
    kw = dict(frames=4, stride=2)
    moments = ClipDataset(store, latents="moments", **kw)[3]["latents"].double()
    c, spec = store.schema.vae.latent_channels, store.schema.vae
    mean = ClipDataset(store, latents="mean", **kw)[3]["latents"].double()
    torch.testing.assert_close(
        mean, moments[:, :c] * spec.scaling_factor, rtol=1e-6, atol=0
    )  # float32 rounding
    seeded = ClipDataset(store, seed=7, **kw)
    a, b = seeded[3]["latents"], seeded[3]["latents"]
    assert torch.equal(a, b) and not torch.equal(a, seeded[4]["latents"])
    std = torch.exp(0.5 * moments[:, c:].clamp(-30, 20)) * spec.scaling_factor
    z = (a.double() - mean) / std  # the noise the sample used: standard normal draws
    assert z.shape == mean.shape and z.abs().max() < 8
    fresh = ClipDataset(store, **kw)
    assert not torch.equal(fresh[3]["latents"], fresh[3]["latents"])  # a new posterior sample each read


def test_plain_dataloader_with_workers_gives_the_same_items(store):
    clips = ClipDataset(store, frames=4, stride=2, latents="moments")
    clips[0]  # opens a reader in this process before the workers fork
    batch = next(iter(DataLoader(clips, batch_size=3, num_workers=2)))
    for k in ("latents", "targets", "label", "video", "start"):
        assert torch.equal(batch[k], torch.stack([clips[i][k] for i in range(3)])), k
    with pytest.raises(IndexError):
        clips[len(clips)]


def test_store_path_works_too(store):
    assert len(ClipDataset(os.fspath(store.path), frames=4, stride=2)) == len(
        ClipDataset(store, frames=4, stride=2)
    )
