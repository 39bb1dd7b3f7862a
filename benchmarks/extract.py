"""Extraction throughput: end-to-end `a4g extract` frames/s against encoders-only frames/s, one run.

Encoders-only = the VAE and every encoder on frames already in device memory (no decode, no write):
the ceiling. End-to-end = the real pipeline (decode workers → models → background writer) on a
folder of videos. The goal is end-to-end ≥ 0.95 × encoders-only, i.e. decoding and writing hide
behind the GPU.

    # CPU, tiny models (seconds):
    python benchmarks/extract.py --device cpu --encoders dinov2_tiny,sam2.1_tiny --vae tiny --size 64 \\
        --sam-res 64 --videos 8 --json out.json
    # GPU, real sizes with random weights:
    python benchmarks/extract.py --device cuda --encoders dinov2_vitb14,sam2.1_hiera_b+ --vae sd \\
        --size 256 --sam-res 1024 --batch 64 --data CLIPS_DIR --json out.json

`--vae sd` builds the SD-VAE architecture (sd-vae-ft-ema config) with random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from a4g.encoders.vae import sd_vae_config, write_vae_config
from a4g.extract.run import ExtractConfig, FeatureExtractor, run_extraction


def synthetic_clips(root: Path, videos: int, frames: int) -> Path:
    from a4g.sources.synthetic import SHAPES, synthetic_frames, write_video

    for i in range(videos):
        shape = SHAPES[i % len(SHAPES)]
        write_video(root / shape / f"{shape}_{i:03d}.mp4", synthetic_frames(shape, i, frames, 240, 320))
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_models(extractor: FeatureExtractor, size: int, batch: int, iters: int) -> dict[str, float]:
    """Frames/s of each model and of all together on random frames already on the device."""
    device = extractor.device
    frames = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    parts = {"vae": lambda: extractor.encode_latents(frames)}
    for enc in extractor.encoders:
        parts[enc.spec.name] = lambda enc=enc: _encode_one(extractor, enc, frames)
    parts["all"] = lambda: (extractor.encode_latents(frames), extractor.encode_targets(frames))
    out = {}
    for name, fn in parts.items():
        for _ in range(2):  # warm-up (and compile, with --compile)
            fn()
        sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device)
        out[name] = batch * iters / (time.perf_counter() - t)
    return out


@torch.no_grad()
def _encode_one(extractor: FeatureExtractor, enc, frames: torch.Tensor) -> torch.Tensor:
    with extractor._autocast():
        return enc(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--encoders", default="dinov2_vitb14,sam2.1_hiera_b+")
    ap.add_argument(
        "--vae", default="sd", help="'sd' (SD-VAE architecture, random weights), 'tiny', or a dir"
    )
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--sam-res", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5, help="timed batches per model for encoders-only")
    ap.add_argument("--data", type=Path, default=None, help="folder of videos (default: synthetic clips)")
    ap.add_argument("--videos", type=int, default=16, help="synthetic clips to make when --data is not given")
    ap.add_argument("--frames", type=int, default=64, help="frames per synthetic clip")
    ap.add_argument("--shard-frames", type=int, default=256)
    ap.add_argument("--num-workers", type=int, default=4)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--keep-store", type=Path, default=None, help="write the store here and keep it (else a temp dir)"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vae = str(write_vae_config(tmp / "sd-vae-ft-ema", sd_vae_config())) if args.vae == "sd" else args.vae
        data = args.data or synthetic_clips(tmp / "clips", args.videos, args.frames)
        cfg = ExtractConfig(
            dataset=str(data),
            out=args.keep_store or tmp / "store",
            encoders=args.encoders.split(","),
            vae=vae,
            size=args.size,
            shard_frames=args.shard_frames,
            batch=args.batch,
            device=args.device,
            num_workers=args.num_workers,
            random_init=True,
            compile=args.compile,
            sam_res=args.sam_res,
            progress=False,
        )
        from a4g.extract.run import Rank, resolve_device

        device = resolve_device(cfg.device, Rank())
        models = time_models(FeatureExtractor.build(cfg, device), args.size, args.batch, args.iters)
        result = run_extraction(cfg, echo=lambda *_: None)
    e2e = result.steady_fps or result.frames_written / result.seconds
    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "encoders_only_fps": models,
        "end_to_end_fps": e2e,
        "end_to_end_fps_with_startup": result.frames_written / result.seconds,
        "frames": result.frames_written,
        "ratio_end_to_end_over_encoders_only": e2e / models["all"],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    sys.exit(0)


if __name__ == "__main__":
    main()
