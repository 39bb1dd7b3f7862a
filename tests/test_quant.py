"""int8 targets (a4g/store/quant.py): the arithmetic against float64, the cosine goals on real clips,
the schema record, and an int8 extraction that training reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import EXTRACT_TINY
from typer.testing import CliRunner

from a4g.cli import app
from a4g.store import FeatureStore, StoreSchema
from a4g.store.fake import make_schema
from a4g.store.quant import QMAX, SCALES, WIDTHS, batch_to_device, dequantize, quantize, store_targets
from a4g.train.data import ClipReader, plan_clips

runner = CliRunner()
WIDTHS_AB = [48, 16]


def _targets(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Fused-like targets [n, 4, 64]: each encoder slice L2-normalized, with heavy-tailed channels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, sum(WIDTHS_AB), generator=g, dtype=torch.float64)
    x[..., 3] *= 8  # an outlier channel, as real encoders have
    return torch.cat([F.normalize(p, dim=-1) for p in x.split(WIDTHS_AB, dim=-1)], dim=-1)


def test_quantize_matches_the_float64_formula():
    x = _targets()
    q, scales = quantize(x.float(), WIDTHS_AB)
    assert q.dtype == torch.int8 and scales.dtype == torch.float16 and scales.shape == (64, 4, 2)
    assert int(q.abs().max()) <= QMAX
    for i, part in enumerate(x.split(WIDTHS_AB, dim=-1)):
        exact = part.abs().amax(-1) / QMAX
        s = scales[..., i].double()
        # the stored scale is absmax / 127 rounded to float16: within half a float16 ulp (2**-11 relative)
        assert torch.all((s - exact).abs() <= exact * 2.0**-11)
        ratio = part / s.unsqueeze(-1)
        want = ratio.round().clamp(-QMAX, QMAX)
        got = q.split(WIDTHS_AB, dim=-1)[i].double()
        # float32 vs float64 division may round a value lying within 1e-4 of a half-integer the other way
        near_tie = (ratio.abs() - ratio.abs().floor() - 0.5).abs() < 1e-4
        assert torch.all((got == want) | near_tie)


def test_dequantize_error_is_within_half_a_step():
    x = _targets(seed=1)
    q, scales = quantize(x.float(), WIDTHS_AB)
    back = dequantize(q, scales, WIDTHS_AB, dtype=torch.float64)
    step = torch.cat([scales[..., i : i + 1].double().expand(-1, -1, w) for i, w in enumerate(WIDTHS_AB)], -1)
    # rounding: step / 2; the absmax value itself may also lose the scale's float16 rounding (≤ 127 · 2**-11 steps)
    assert torch.all((back - x).abs() <= step * (0.5 + QMAX * 2.0**-11) + 1e-12)


def test_zero_tokens_and_bad_widths():
    x = torch.zeros(2, 3, 64)
    q, scales = quantize(x, WIDTHS_AB)
    assert torch.count_nonzero(q) == 0 and torch.all(scales > 0)
    assert torch.count_nonzero(dequantize(q, scales, WIDTHS_AB)) == 0
    with pytest.raises(ValueError, match="sum to 64"):
        quantize(x, [32, 16])
    with pytest.raises(ValueError, match="scales"):
        dequantize(q, scales[..., :1], WIDTHS_AB)


def test_store_targets_and_batch_to_device():
    x = _targets(seed=2).float()
    assert store_targets(x, WIDTHS_AB, "float16")["targets"].dtype == torch.float16
    arrays = store_targets(x, WIDTHS_AB, "int8")
    batch = {
        "targets": arrays["targets"][None],
        SCALES: arrays[SCALES][None],
        WIDTHS: torch.tensor(WIDTHS_AB),
        "labels": torch.zeros(1, dtype=torch.int64),
    }
    moved = batch_to_device(batch, "cpu")
    assert set(moved) == {"targets", "labels"} and moved["targets"].dtype == torch.float32
    torch.testing.assert_close(moved["targets"][0], dequantize(arrays["targets"], arrays[SCALES], WIDTHS_AB))


def test_cosine_goals_on_real_clips(real_clips):
    """Demo-size random-init encoders on real frames: cosine to float16 mean ≥ 0.9999, worst ≥ 0.999."""
    from a4g.encoders import create_encoder, create_vae, square_frames
    from a4g.extract.run import FeatureExtractor
    from a4g.video import read_frames

    frames = torch.cat(
        [square_frames(read_frames(str(p), [0, 7, 19]), 128) for p in sorted(real_clips.glob("*.mp4"))]
    )
    encoders = [
        create_encoder("dinov2_vits14", random_init=True, dino_res=112),
        create_encoder("sam2.1_hiera_t", random_init=True, sam_res=128),
    ]
    extractor = FeatureExtractor(
        encoders, create_vae("tiny", random_init=True), (8, 8), torch.device("cpu"), 8
    )
    exact = extractor.encode_targets(frames).double()
    half = exact.half().double()
    q, scales = quantize(exact.float(), extractor.widths)
    back = dequantize(q, scales, extractor.widths, dtype=torch.float64)
    start = 0
    for width in extractor.widths:
        cos = F.cosine_similarity(back[..., start : start + width], half[..., start : start + width], dim=-1)
        start += width
        assert cos.mean() >= 0.9999 and cos.min() >= 0.999, (width, cos.mean(), cos.min())


def test_schema_records_the_target_dtype():
    fp16 = make_schema({"v0": 3})
    int8 = fp16.model_copy(update={"layout": fp16.layout.model_copy(update={"target_dtype": "int8"})})
    assert int8.fingerprint != fp16.fingerprint
    # a store written before the field (no target_dtype in its JSON) keeps its fingerprint
    old = fp16.to_json_dict()
    del old["layout"]["target_dtype"]
    assert StoreSchema.from_json_dict(old).fingerprint == fp16.fingerprint == old["fingerprint"]
    assert StoreSchema.from_json_dict(int8.to_json_dict()).layout.target_dtype == "int8"
    # 4 tokens x 48 channels: 2 bytes each, or 1 byte each plus a 2-byte scale per token and encoder
    assert fp16.target_bytes_per_frame() == 4 * 48 * 2
    assert int8.target_bytes_per_frame() == 4 * 48 + 4 * 2 * 2


@pytest.fixture(scope="module")
def int8_store(tmp_path_factory) -> FeatureStore:
    tmp = tmp_path_factory.mktemp("int8")
    args = ["extract", *EXTRACT_TINY, "--data-root", str(tmp / "syn"), "--out", str(tmp / "store")]
    result = runner.invoke(app, [*args, "--hflip", "--target-dtype", "int8"])
    assert result.exit_code == 0, result.output
    return FeatureStore.open(tmp / "store")


def test_int8_extraction_is_close_to_float16(int8_store: FeatureStore, train_store: FeatureStore):
    """The same synthetic clips extracted twice, float16 (the session store) and int8."""
    from a4g.store.compare import compare_stores

    assert int8_store.array("targets").dtype == np.int8 and int8_store.verify() == []
    assert int8_store.array(SCALES).shape == (int8_store.num_frames, 4, 2)
    result = compare_stores(train_store, int8_store)
    assert result.latents_max_abs_diff == 0 and not result.identical
    for name, agreement in result.encoders.items():
        assert agreement.mean_cos >= 0.9999 and agreement.worst_cos >= 0.999, name


def test_loader_ships_int8_and_the_aligned_scales_only(int8_store: FeatureStore):
    plan = plan_clips(int8_store, frames=4, stride=1, align_encoders=["sam2.1_tiny"], hflip=True)
    batch = ClipReader(plan).batch(np.random.default_rng(0), 3)
    assert batch["targets"].dtype == torch.int8 and batch["targets"].shape == (3, 4, 4, 32)
    assert batch[SCALES].shape == (3, 4, 4, 1) and batch[WIDTHS].tolist() == [32]
    rows = (batch["start"][:, None] + torch.arange(4)).numpy()
    lo, hi = int8_store.schema.fusion.slices["sam2.1_tiny"]
    for i, flip in enumerate(batch["flip"].tolist()):
        suffix = "_flip" if flip else ""
        want = int8_store.array("targets" + suffix)[:][rows[i]][..., lo:hi]
        np.testing.assert_array_equal(batch["targets"][i].numpy(), want)
        np.testing.assert_array_equal(
            batch[SCALES][i].numpy(), int8_store.array(SCALES + suffix)[:][rows[i]][..., 1:]
        )
    on_device = batch_to_device(batch, "cpu")
    assert on_device["targets"].dtype == torch.float32 and SCALES not in on_device


def test_training_reads_an_int8_store(int8_store: FeatureStore, tmp_path):
    args = [
        *("train", "--features", int8_store.path, "--out", str(tmp_path / "run"), "--model", "VDiT-tiny"),
        *("--frames", "4", "--stride", "1", "--batch-size", "2", "--steps", "3", "--projector-dim", "32"),
        *("--num-workers", "0", "--log-every", "1", "--checkpoint-every", "3", "--sample-every", "0"),
        "--no-progress",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "run" / "checkpoints").glob("step_*3")), result.output


def test_dry_run_plans_the_bytes_of_each_target_dtype_with_and_without_flip():
    from a4g.extract.plan import describe_plan
    from a4g.store import human_bytes
    from a4g.store.fake import make_index

    lengths = {"v0": 700, "v1": 324}
    text = describe_plan(make_schema(lengths), make_index(lengths))
    latents = 8 * 4 * 4 * 2  # mean ‖ logvar of 4 channels on a 4x4 latent, float16
    per_frame = {"float16": latents + 4 * 48 * 2, "int8": latents + 4 * 48 + 4 * 2 * 2}
    for dtype, size in per_frame.items():
        row = next(line for line in text.splitlines() if line.split()[:1] == [dtype])
        for views in (1, 2):  # without and with --hflip
            assert f"{human_bytes(views * size)} / {human_bytes(views * size * 1024)}" in row, (dtype, row)
