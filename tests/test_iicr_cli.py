"""`a4g iicr` end to end with tiny random-init encoders on generated clips, with and without masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from a4g.cli import app
from a4g.metrics.clips import ClipRef, mask_dir, read_masks, square_labels
from a4g.metrics.iicr_run import split_row
from a4g.sources.synthetic import write_video

runner = CliRunner()
H, W, T = 48, 64, 6
TINY = ("--random-init", "--size", "64", "--sam-res", "64", "--frames", "4", "--k", "2,3", "--device", "cpu")


def render(seed: int, objects: bool) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T, H, W, 3] and object ids [T, H, W]: two coloured boxes drifting over a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.empty((T, H, W, 3), np.uint8)
    ids = np.zeros((T, H, W), np.int64)
    for t in range(T):
        img = np.stack([xx * 2, yy * 3, np.full_like(xx, 60)], -1).astype(np.float64)
        if objects:
            for obj, (x0, colour) in enumerate(((6, (250, 30, 30)), (36, (30, 30, 250))), start=1):
                box = (yy >= 10 + t) & (yy < 38 + t // 2) & (xx >= x0 + t) & (xx < x0 + 22 + t)
                img[box] = colour
                ids[t][box] = obj
        frames[t] = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return frames, ids


def write_masks(folder: Path, ids: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for t, lab in enumerate(ids):
        im = Image.fromarray(lab.astype(np.uint8), mode="P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
        im.save(folder / f"{t:05d}.png")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    """Videos a, b (two objects, masks), c (masks all background) and d (no masks)."""
    root = tmp_path_factory.mktemp("iicr")
    videos, masks = root / "videos", root / "masks"
    for i, name in enumerate("abcd"):
        frames, ids = render(i, objects=name != "c")
        write_video(videos / f"{name}.mp4", frames)
        if name != "d":
            write_masks(masks / name, ids if name != "c" else np.zeros_like(ids))
    return videos, masks


def run(*args: str):
    return runner.invoke(app, ["iicr", *args, "--no-progress"])


def check_report(out: Path, rows: list[str], ks: list[int]) -> dict:
    report = json.loads((out / "iicr.json").read_text())
    assert list(report["encoders"]) == rows and report["ks"] == ks
    for row in report["encoders"].values():
        values = [row["kmeans"][str(k)]["iicr"] for k in ks] + (
            [row["masks"]["iicr"]] if "masks" in row else []
        )
        assert all(0.0 <= v <= 1.0 for v in values), values
    assert (out / "iicr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (
        out / "iicr.png"
    ).stat().st_size > 1000
    return report


def test_iicr_writes_json_png_and_fused_rows(dataset, tmp_path):
    videos, _ = dataset
    rows = ["dinov2_tiny", "sam2.1_tiny", "dinov2_tiny+sam2.1_tiny"]
    res = run(
        "--dataset", str(videos), "--encoders", ",".join(rows), "--clips", "2", *TINY, "--out", str(tmp_path)
    )
    assert res.exit_code == 0, res.output
    report = check_report(tmp_path, rows, [2, 3])
    assert report["num_clips"] == 2 and len(report["clips"]) == 2 and report["token_grid"] == [4, 4]
    assert report["rows"]["dinov2_tiny+sam2.1_tiny"] == ["dinov2_tiny", "sam2.1_tiny"]
    assert report["encoder_specs"]["dinov2_tiny"]["weights_sha256"] == "random"
    assert report["masks"] is None and "masks" not in report["encoders"]["dinov2_tiny"]
    assert "dinov2_tiny+sam2.1_tiny" in res.stdout and "k=3" in res.stdout
    assert "random-init" in res.output  # the warning


def test_iicr_masks_mode_skips_unusable_clips(dataset, tmp_path):
    videos, masks = dataset
    args = ("--dataset", str(videos), "--encoders", "dinov2_tiny,sam2.1_tiny", "--clips", "10", *TINY)
    res = run(*args, "--masks", str(masks), "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    report = check_report(tmp_path, ["dinov2_tiny", "sam2.1_tiny"], [2, 3])
    assert {c["video_id"] for c in report["clips"]} == {"a.mp4", "b.mp4"}  # d has no masks
    assert [e["video_id"] for e in report["excluded"]] == ["c.mp4"]  # background only
    assert report["num_clips"] == 2 and "masks" in res.stdout
    missing = run(*args, "--masks", str(tmp_path / "none"), "--out", str(tmp_path / "x"))
    assert missing.exit_code == 2 and "<frame:05d>.png" in missing.output


def test_masks_follow_the_frame_crop(dataset):
    _, masks = dataset
    labels = np.broadcast_to(np.arange(64) // 8, (1, 48, 64))  # 8 vertical stripes of ids
    got = square_labels(labels, (48, 64), 24)  # 48x64 -> 24x32 -> center crop 4 columns off the left
    assert got.shape == (1, 24, 24)
    want = (2 * (np.arange(24) + 4) + 1) // 8  # source column of output column c is 2(c + 4) + 1
    assert torch.equal(got[0], torch.as_tensor(want).expand(24, 24))
    clip = ClipRef("a.mp4", "unused", start=3, length=4)  # frames 3..6; the masks stop at 5
    assert mask_dir(masks, "a.mp4") == masks / "a"
    with pytest.raises(FileNotFoundError, match="00006.png"):
        read_masks(masks, clip)


def test_encoder_rows_and_errors(tmp_path):
    known = ["dinov2_vitb14", "sam2.1_hiera_b+", "sam2.1_hiera_t"]
    assert split_row("dinov2_vitb14+sam2.1_hiera_b+", known) == ["dinov2_vitb14", "sam2.1_hiera_b+"]
    assert split_row("sam2.1_hiera_b++sam2.1_hiera_t", known) == ["sam2.1_hiera_b+", "sam2.1_hiera_t"]
    with pytest.raises(KeyError):
        split_row("dinov2_vitb14+", known)
    bad = run("--dataset", "demo", "--encoders", "dinov2_tiny+nope", "--out", str(tmp_path))
    assert bad.exit_code == 2 and "'dinov2_tiny+nope'" in bad.output and "sam2.1_hiera_t" in bad.output
    weightless = run(
        "--dataset",
        "demo",
        "--encoders",
        "dinov2_vits14",
        "--weights-dir",
        str(tmp_path),
        "--out",
        str(tmp_path),
    )
    assert weightless.exit_code == 2 and "no weights found for encoder 'dinov2_vits14'" in weightless.output
    assert not (tmp_path / "iicr.json").exists()


def test_clip_plan_is_seeded_and_independent_of_threads(dataset):
    from a4g.metrics.clips import plan_clips
    from a4g.sources import build_source

    source = build_source(str(dataset[0]))
    one = plan_clips(source, 3, 4, seed=1, threads=1)
    assert one.clips == plan_clips(source, 3, 4, seed=1, threads=4).clips
    assert len(one.clips) == 3 and all(0 <= c.start <= T - 4 for c in one.clips)
    orders = {tuple(c.video_id for c in plan_clips(source, 4, 4, seed=s).clips) for s in range(6)}
    assert len(orders) > 1  # the seed changes which videos come first
    short = plan_clips(source, 3, T + 1)
    assert short.clips == [] and short.too_short == 4 and "4 shorter than 7 frames" in short.describe(T + 1)
    only_b = plan_clips(source, 3, 4, keep=lambda vid: vid == "b.mp4")
    assert [c.video_id for c in only_b.clips] == ["b.mp4"] and only_b.candidates == 1
