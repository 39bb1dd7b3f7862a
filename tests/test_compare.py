"""`a4g store compare`: per-encoder cosines against torch's cosine_similarity, identity, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import LENGTHS
from typer.testing import CliRunner

from a4g.cli import app
from a4g.errors import StoreError
from a4g.store import FeatureStore
from a4g.store.compare import compare_stores
from a4g.store.fake import make_index, make_schema
from a4g.store.quant import SCALES, quantize

runner = CliRunner()
WIDTHS = [32, 16]  # make_schema's enc_a, enc_b


def _content(store: FeatureStore, shard: int) -> dict[str, np.ndarray]:
    """The same random shard for any target dtype: float16 latents, float16 targets whose encoder slices
    are unit vectors (as the fusion stores them), int8 targets and scales quantized from those."""
    start, stop = store.shard_range(shard)
    rng = np.random.default_rng(shard)
    out = {}
    for view in ("", "_flip"):
        out["latents" + view] = rng.standard_normal((stop - start, 8, 4, 4)).astype(np.float16)
        t = torch.from_numpy(rng.standard_normal((stop - start, 4, 48)))
        t = torch.cat([F.normalize(p, dim=-1) for p in t.split(WIDTHS, -1)], -1).half()
        if store.schema.layout.target_dtype == "int8":
            q, scales = quantize(t.float(), WIDTHS)
            out["targets" + view], out[SCALES + view] = q.numpy(), scales.numpy()
        else:
            out["targets" + view] = t.numpy()
    return out


def _store(path: Path, target_dtype: str = "float16", lengths=LENGTHS, **kw) -> FeatureStore:
    schema = make_schema(lengths, flip=True, **kw)
    layout = schema.layout.model_copy(update={"target_dtype": target_dtype})
    store = FeatureStore.create(path, schema.model_copy(update={"layout": layout}), make_index(lengths))
    for shard in range(store.num_shards):
        store.write_shard(shard, _content(store, shard))
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, FeatureStore]:
    tmp = tmp_path_factory.mktemp("cmp")
    fp16 = _store(tmp / "fp16")
    shutil.copytree(fp16.path, tmp / "copy")
    return {"fp16": fp16, "int8": _store(tmp / "int8", "int8"), "copy": FeatureStore.open(tmp / "copy")}


def test_a_copy_is_identical(stores):
    result = compare_stores(stores["fp16"], stores["copy"])
    assert result.identical and result.same_fingerprint and result.shards_compared == 4
    assert result.latents_max_abs_diff == 0
    assert all(abs(e.worst_cos - 1) < 1e-12 for e in result.encoders.values())


def test_int8_cosines_equal_torch_cosine_similarity(stores):
    a, b = stores["fp16"], stores["int8"]
    result = compare_stores(a, b)
    assert not result.identical and not result.same_fingerprint and result.latents_max_abs_diff == 0
    for name, (lo, hi) in a.schema.fusion.slices.items():
        cos = []
        for view in ("", "_flip"):
            x = torch.from_numpy(a.array("targets" + view)[:][..., lo:hi]).double()
            q = torch.from_numpy(b.array("targets" + view)[:][..., lo:hi]).double()
            k = a.schema.encoder_names.index(name)
            s = torch.from_numpy(b.array(SCALES + view)[:][..., k : k + 1]).double()
            cos.append(F.cosine_similarity(x, q * s, dim=-1).flatten())
        want = torch.cat(cos)
        got = result.encoders[name]
        assert got.tokens == want.numel()
        assert got.mean_cos == pytest.approx(want.mean().item(), abs=1e-12)
        assert got.worst_cos == pytest.approx(want.min().item(), abs=1e-12)
        assert got.worst_cos < 1


def test_one_changed_value_is_not_identical(stores, tmp_path):
    shutil.copytree(stores["fp16"].path, tmp_path / "changed")
    changed = FeatureStore.open(tmp_path / "changed", writable=True)
    data = changed.read_shard(2)
    data["latents"][0, 0, 0, 0] += np.float16(0.5)
    changed.write_shard(2, data)
    result = compare_stores(stores["fp16"], changed)
    assert not result.identical and result.latents_max_abs_diff == pytest.approx(0.5, abs=2e-3)
    assert all(abs(e.worst_cos - 1) < 1e-12 for e in result.encoders.values())  # targets untouched


def test_shards_not_done_are_skipped_and_not_identical(stores, tmp_path):
    shutil.copytree(stores["fp16"].path, tmp_path / "partial")
    FeatureStore.open(tmp_path / "partial", writable=True).group["done"][1] = 0
    result = compare_stores(stores["fp16"], FeatureStore.open(tmp_path / "partial"))
    assert result.shards_compared == 3 and not result.identical


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"lengths": {**LENGTHS, "v3": 2}}, "dataset.videos"),
        ({"encoders": (("enc_a", 32), ("enc_c", 16))}, "encoders"),
    ],
)
def test_other_videos_or_encoders_are_refused_naming_the_field(stores, tmp_path, kw, field):
    other = _store(tmp_path / "other", **kw)
    with pytest.raises(StoreError, match=field):
        compare_stores(stores["fp16"], other)
    result = runner.invoke(app, ["store", "compare", stores["fp16"].path, other.path])
    assert result.exit_code == 2 and f"field {field} differs" in result.output


def test_cli_json(stores):
    result = runner.invoke(app, ["store", "compare", stores["fp16"].path, stores["int8"].path, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["identical"] is False and set(data["encoders"]) == {"enc_a", "enc_b"}
    assert all(0.999 <= e["worst_cos"] <= e["mean_cos"] <= 1 for e in data["encoders"].values())
    text = runner.invoke(app, ["store", "compare", stores["fp16"].path, stores["copy"].path]).output
    assert "identical            yes" in text
