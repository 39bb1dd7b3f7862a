"""IICR on synthetic clips: ordering of encoders, invariances, masks mode, efficient == brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from a4g.encoders.fusion import fuse_tokens
from a4g.metrics.iicr import iicr_clip, iicr_from_labels, labels_to_tokens, mean_std, pair_distances
from a4g.metrics.iicr_report import format_table, plot_iicr, run_iicr
from a4g.metrics.kmeans import kmeans

T, N, C, K = 6, 48, 32, 4


def synthetic(seed: int) -> dict[str, torch.Tensor]:
    """Objects own fixed token positions; encoders differ in how stable their features are."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, K, (N,), generator=g).expand(T, N)
    proto = torch.randn(K, C, generator=g)
    drift = torch.randn(T, K, C, generator=g).gather(1, ids[..., None].expand(T, N, C))
    noise = torch.randn(T, N, C, generator=g)
    return {
        "ids": ids,
        "ideal": proto[ids] + 0.1 * noise,
        "jitter": proto[ids] + 1.0 * drift + 0.1 * noise,
        "random": torch.randn(T, N, C, generator=g),
    }


def brute_force(tokens: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    x = torch.nn.functional.normalize(tokens.double(), dim=-1).reshape(-1, tokens.shape[-1])
    lab = labels.reshape(-1)
    frame = torch.arange(tokens.shape[0]).repeat_interleave(tokens.shape[1])
    intra, inter = [], []
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j or lab[i] < 0 or lab[j] < 0:
                continue
            d = 1.0 - float(x[i] @ x[j])
            if lab[i] == lab[j] and frame[i] != frame[j]:
                intra.append(d)
            elif lab[i] != lab[j] and frame[i] == frame[j]:
                inter.append(d)
    return float(np.mean(intra)), float(np.mean(inter))


def test_efficient_equals_brute_force():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(3, 10, 5, generator=g)
    labels = torch.randint(-1, 3, (3, 10), generator=g)  # includes ignored (-1) tokens
    np.testing.assert_allclose(pair_distances(tokens, labels), brute_force(tokens, labels), rtol=1e-10)


def test_ideal_beats_jitter_beats_random():
    for seed in range(3):
        clip = synthetic(seed)
        ideal, jitter, rand = (iicr_clip(clip[name], K, seed=0)[0] for name in ("ideal", "jitter", "random"))
        assert ideal > jitter + 0.1 and jitter > rand + 0.05, (seed, ideal, jitter, rand)
        assert all(0.0 <= v <= 1.0 for v in (ideal, jitter, rand))


def test_scale_invariance_and_determinism():
    clip = synthetic(0)["jitter"]
    base = iicr_clip(clip, K, seed=3)
    assert iicr_clip(clip * 17.0, K, seed=3) == pytest.approx(base, abs=1e-9)
    assert iicr_clip(clip, K, seed=3) == base


def test_masks_mode_and_random_labels_give_half():
    clip = synthetic(0)
    good = iicr_from_labels(clip["ideal"], clip["ids"])
    assert good[0] > 0.9 and good[1] < good[2]
    g = torch.Generator().manual_seed(0)
    shuffled = torch.randint(0, K, (T, N), generator=g)
    assert iicr_from_labels(torch.randn(T, 200, C, generator=g), shuffled.repeat(1, 5)[:, :200])[
        0
    ] == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="two groups"):
        iicr_from_labels(clip["ideal"], torch.zeros(T, N, dtype=torch.long))


def test_labels_to_tokens_majority():
    lab = np.zeros((8, 12), np.int64)
    lab[:, 6:] = 5  # right half object 5
    lab[0:3, 0:2] = 9  # 6 of 16 pixels in cell (0, 0): not a majority
    lab[4:8, 0:3] = 7  # 12 of 16 pixels in cell (1, 0): majority
    tok = labels_to_tokens(lab, (2, 3))  # cells of 4x4 pixels
    assert tok.shape == (1, 6)
    assert tok.tolist() == [[0, 0, 5, 7, 0, 5]]
    video = labels_to_tokens(np.stack([lab, lab[:, ::-1]]), (2, 3))
    assert video.shape == (2, 6) and video[1].tolist() == [5, 0, 0, 5, 0, 7]


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(4, 8) * 10
    truth = torch.arange(4).repeat(25)
    x = centers[truth] + 0.1 * torch.randn(100, 8, generator=g)
    lab = kmeans(x, 4, seed=0)
    # same partition up to relabelling
    pairs = {(int(a), int(b)) for a, b in zip(truth, lab, strict=True)}
    assert len(pairs) == 4 and len({a for a, _ in pairs}) == 4 and len({b for _, b in pairs}) == 4


def test_run_iicr_report_table_plot(tmp_path):
    clips = [synthetic(s) for s in range(3)]
    feats = {
        "ideal": [c["ideal"] for c in clips],
        "jitter": [c["jitter"] for c in clips],
        "ideal+jitter": [fuse_tokens(c["ideal"], c["jitter"]) for c in clips],
    }
    report = run_iicr(feats, ks=[2, 4], seed=0, labels=[c["ids"] for c in clips])
    json.dumps(report)  # JSON-ready
    rows = report["encoders"]
    assert report["num_clips"] == 3 and set(rows["ideal"]["kmeans"]) == {"2", "4"}
    assert rows["ideal"]["kmeans"]["4"]["iicr"] > rows["jitter"]["kmeans"]["4"]["iicr"]
    assert rows["ideal"]["masks"]["iicr"] > rows["jitter"]["masks"]["iicr"]
    table = format_table(report)
    assert "k=4" in table and "masks" in table and "ideal+jitter" in table
    out = plot_iicr(report, tmp_path / "iicr.png")
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="same clips"):
        run_iicr({"a": feats["ideal"], "b": feats["jitter"][:2]}, ks=[2])


def test_mean_std_ignores_nan():
    assert mean_std([0.5, 0.7, float("nan")]) == pytest.approx((0.6, 0.1))
    assert np.isnan(mean_std([])[0])
