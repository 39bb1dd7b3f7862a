"""`--compile`: each model compiles once (no recompile on the second call) and matches eager.

A recompile is dynamo's doing (a guard recorded at the first call fails at the next), whatever
backend then compiles the graph, so the fast tests count graphs with the ``eager`` backend (~2 s);
the Inductor test below checks numerics too and is slow: cold (empty Inductor cache) 90 s on 2 CPU
cores at load ~3 (SAM2.1-tiny 58 s, tiny VAE 33 s) and 188 s at load 12; ~11 s with a warm cache.
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import smooth_frames
from torch._dynamo.utils import counters

from a4g.encoders import create_encoder, create_vae
from a4g.encoders.sam2_hiera import fill_position_cache

SAM_RES = 64  # tiny: a 2x2 grid at the neck's stride-32 level


def graphs() -> int:
    """Graphs dynamo has compiled since the last reset (a recompile adds one)."""
    return counters["stats"]["unique_graphs"]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.fixture
def eager_backend(monkeypatch, fresh_dynamo):
    """`torch.compile` as the package calls it, tracing with dynamo but running the graph eagerly."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))


def test_sam2_compiles_once(eager_backend):
    """The position-encoding cache is filled before the compiled call: the second call reuses the
    graph (before the fix it recompiled on `not ___dict_contains((2, 2), ...cache)`)."""
    compiled = create_encoder("sam2.1_tiny", random_init=True, sam_res=SAM_RES, compile=True)
    eager = create_encoder("sam2.1_tiny", random_init=True, sam_res=SAM_RES)
    a, b = smooth_frames(n=2, size=32, seed=0), smooth_frames(n=2, size=32, seed=1)
    compiled(a)
    assert graphs() == 1
    out = compiled(b)
    assert graphs() == 1, "the second call recompiled"
    # The traced graph runs the same float32 ops as eager; 1e-5 allows a reordered reduction.
    torch.testing.assert_close(out, eager(b), rtol=1e-5, atol=1e-5)


def test_sam2_position_cache_is_refilled_on_the_input_device():
    """An entry on another device (sam2 warms `cuda` at construction) is replaced, not copied per call."""
    enc = create_encoder("sam2.1_tiny", random_init=True, sam_res=SAM_RES)
    cache = enc.model.neck.position_encoding.cache
    assert not cache  # sam2's own construction-time warm-up is off
    cache[(2, 2)] = torch.empty(32, 2, 2, device="meta")
    fill_position_cache(enc.model.neck, SAM_RES, torch.device("cpu"))
    assert sorted(cache) == [(2, 2), (4, 4), (8, 8), (16, 16)]  # strides 32, 16, 8, 4
    assert all(t.device.type == "cpu" for t in cache.values())
    expected = enc.model.neck.position_encoding._pe(1, torch.device("cpu"), 2, 2)  # uses the cache
    cache.clear()
    torch.testing.assert_close(enc.model.neck.position_encoding._pe(1, torch.device("cpu"), 2, 2), expected)


def test_vae_compiles_once_and_matches_eager(eager_backend):
    compiled = create_vae("tiny", random_init=True, compile=True)
    eager = create_vae("tiny", random_init=True)
    a, b = smooth_frames(n=2, size=32, seed=0), smooth_frames(n=2, size=32, seed=1)
    compiled.encode_moments(a)
    out = compiled.encode_moments(b)
    assert graphs() == 1
    torch.testing.assert_close(out, eager.encode_moments(b), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 8"):  # checks stay outside the compiled step
        compiled.encode_moments(smooth_frames(n=1, size=36))


@pytest.mark.slow
def test_inductor_compiles_each_model_once_within_fp16(fresh_dynamo):
    """Inductor (what `a4g extract --compile` runs): one graph per model over two calls, and values
    that agree with eager within the store's fp16 rounding (relative 2**-11; Inductor fuses and
    reorders float32 reductions, which moves the last bits only)."""
    frames = [smooth_frames(n=2, size=32, seed=s) for s in (0, 1)]
    sam = create_encoder("sam2.1_tiny", random_init=True, sam_res=SAM_RES, compile=True)
    tokens = [sam(f) for f in frames]
    assert graphs() == 1
    assert_within_fp16(tokens[1], create_encoder("sam2.1_tiny", random_init=True, sam_res=SAM_RES)(frames[1]))
    vae = create_vae("tiny", random_init=True, compile=True)
    moments = [vae.encode_moments(f) for f in frames]
    assert graphs() == 2  # SAM's one and the VAE's one
    assert_within_fp16(moments[1], create_vae("tiny", random_init=True).encode_moments(frames[1]))


def assert_within_fp16(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal after the store's fp16 rounding: relative 2**-11, and 2**-11 of the largest value for
    elements near zero (whose fp16 spacing is set by the array's scale, not their own)."""
    ulp = 2.0**-11
    torch.testing.assert_close(actual, expected, rtol=ulp, atol=ulp * expected.abs().max().item())


def test_compiled_extraction_pads_a_short_batch_to_the_compiled_size(tmp_path, monkeypatch):
    """`--compile` pads a short batch (the last shard's) to --batch, so no model sees a new size
    and recompiles; the padding rows are dropped and the stored rows are unchanged."""
    from a4g.extract.config import ExtractConfig
    from a4g.extract.run import FeatureExtractor

    cfg = ExtractConfig(
        dataset="synthetic", out=tmp_path / "s", vae="tiny", encoders=["dinov2_tiny", "sam2.1_tiny"],
        size=32, sam_res=SAM_RES, batch=4, random_init=True, device="cpu",
    )  # fmt: skip
    plain = FeatureExtractor.build(cfg, torch.device("cpu"))
    padded = FeatureExtractor(plain.encoders, plain.vae, plain.token_grid, plain.device, 4, pad_batches=True)
    seen: list[int] = []

    def spy(fn):
        return lambda x: seen.append(x.shape[0]) or fn(x)

    for enc in plain.encoders:
        monkeypatch.setattr(enc, "_encode", spy(enc._encode))
    monkeypatch.setattr(plain.vae, "_moments", spy(plain.vae._moments))
    frames = smooth_frames(n=6, size=32)
    got = padded.rows(frames, flip=True).wait()
    assert set(seen) == {4}  # 6 frames = 4 + 2 padded to 4, in all three models and both views
    seen.clear()
    want = plain.rows(frames, flip=True).wait()
    assert 2 in seen
    assert sorted(got) == sorted(want) == ["latents", "latents_flip", "targets", "targets_flip"]
    for name in want:
        assert got[name].shape == want[name].shape == (6, *want[name].shape[1:])
        # CPU kernels may pick another blocking for batch 4 than for 2, moving float32 results by
        # an ulp or so; stored as fp16 that can round to the next value: one fp16 step (2**-10).
        a, b = torch.from_numpy(got[name]).float(), torch.from_numpy(want[name]).float()
        torch.testing.assert_close(a, b, rtol=2**-10, atol=2**-10 * b.abs().max().item())
