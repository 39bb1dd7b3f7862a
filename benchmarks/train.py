"""Training cost of alignment: plain vs. cached targets vs. encoders run online, plus loader throughput.

One process measures, on the same model, batch and device:

* ``plain``   — λ = 0 (the baseline; same code path, the projector runs with zero weight),
* ``cached``  — λ = 0.5 on targets read from the store (what ``a4g train`` does),
* ``online``  — λ = 0.5 with the VAE and every encoder run on the step's frames (the REPA way),
  real-size architectures with random weights fed random uint8 frames,
* ``loader``  — frames/s one loader worker (one process) delivers from ``--store``.

CPU smoke run (a minute):
    python benchmarks/train.py --device cpu --model VDiT-tiny --batch-size 2 --frames 4 --size 64 \
        --encoders dinov2_vits14,sam2.1_hiera_t --sam-res 128 --vae tiny --steps 3 --warmup 1 \
        --store demo_out/store --json bench_cpu.json
GPU (Align4Gen setting, 256 px, XL):
    python benchmarks/train.py --device cuda --model VDiT-XL --batch-size 5 --frames 16 --size 256 \
        --encoders dinov2_vitb14,sam2.1_hiera_b+ --sam-res 1024 --steps 20 --warmup 5 \
        --store STORE --json bench_gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from a4g.encoders import create_encoder, create_vae
from a4g.encoders.fusion import fuse, with_token_grid
from a4g.encoders.vae import sd_vae_config, write_vae_config
from a4g.store import FeatureStore
from a4g.train.align import Projector
from a4g.train.data import ClipReader, DataError, plan_clips
from a4g.train.diffusion import create_objective
from a4g.train.loop import Trainee
from a4g.train.model import create_model, default_align_depth


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--model", default="VDiT-XL", help="V-DiT size")
    p.add_argument("--batch-size", type=int, default=5, help="clips per step")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--size", type=int, default=256, help="frame side in px (latent = size/8, grid = size/16)")
    p.add_argument(
        "--encoders", default="dinov2_vitb14,sam2.1_hiera_b+", help="online encoders, fusion order"
    )
    p.add_argument("--vae", choices=["sd", "tiny"], default="sd", help="online VAE: SD architecture or tiny")
    p.add_argument("--sam-res", type=int, default=1024, help="SAM2.1 input side for the online encoders")
    p.add_argument("--objective", choices=["ddpm", "flow"], default="ddpm")
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per mode first")
    p.add_argument(
        "--store", type=Path, default=None, help="store for the loader measurement (skipped if absent)"
    )
    p.add_argument("--loader-batches", type=int, default=30, help="batches timed for the loader")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class OnlineTargets:
    """VAE + encoders on the step's frames, with the same math as extraction (a4g.extract.run)."""

    def __init__(self, names: list[str], vae_dir: str, size: int, sam_res: int, device: torch.device) -> None:
        self.vae = create_vae(vae_dir, random_init=True, device=device)
        self.grid = (size // 16, size // 16)
        self.encoders = [
            create_encoder(n, random_init=True, dino_res=14 * self.grid[0], sam_res=sam_res, device=device)
            for n in names
        ]
        self.specs = [with_token_grid(e.spec, self.grid) for e in self.encoders]
        self.channels = sum(e.channels for e in self.encoders)
        self.device = device

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device):
            moments = self.vae.encode_moments(frames).float()
            tokens = [enc(frames).float() for enc in self.encoders]
        mean, logvar = moments.chunk(2, dim=1)
        z = (
            mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * torch.randn_like(mean)
        ) * self.vae.spec.scaling_factor
        return z, fuse(tokens, self.specs, self.grid)


def time_mode(args, device, mode: str, online: OnlineTargets) -> dict:
    latent = args.size // 8
    torch.manual_seed(0)
    model = create_model(
        args.model, input_size=latent, in_channels=4, num_frames=args.frames, num_classes=101
    )
    projector = Projector(model.embed_dim, online.channels)
    weight = 0.0 if mode == "plain" else 0.5
    trainee = Trainee(
        model, projector, create_objective(args.objective), default_align_depth(args.model), weight
    )
    trainee.to(device).train()
    opt = torch.optim.AdamW(
        trainee.parameters(), lr=1e-4, weight_decay=0.0, fused=device.type == "cuda" or None
    )
    b, f, n = args.batch_size, args.frames, (latent // 2) ** 2
    latents = torch.randn(b, f, 4, latent, latent, device=device)
    targets = torch.randn(b, f, n, online.channels, device=device, dtype=torch.float16)
    labels = torch.randint(0, 101, (b,), device=device)
    frames = torch.randint(0, 256, (b * f, 3, args.size, args.size), dtype=torch.uint8, device=device)

    def step() -> None:
        x, t = latents, targets
        if mode == "online":
            z, fused = online(frames)
            x, t = z.reshape(latents.shape), fused.reshape(targets.shape)
        with autocast(device):
            losses = trainee(x, t, labels)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trainee.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    out = {"s_per_step": seconds, "frames_per_s": b * f / seconds}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"{mode:>7}: {seconds:.4f} s/step, {b * f / seconds:.1f} frames/s", flush=True)
    return out


def time_loader(args) -> dict:
    if args.store is None:
        return {"skipped": "no --store given"}
    torch.set_num_threads(1)  # as in a loader worker
    store = FeatureStore.open(args.store)
    every = store.schema.preprocess.every
    try:
        plan = plan_clips(store, frames=args.frames, stride=every)
    except DataError:
        plan = plan_clips(store, frames=min(8, args.frames), stride=every)
    reader = ClipReader(plan)
    reader.batch(np.random.default_rng(0), args.batch_size)  # open files, read indexes
    start = time.perf_counter()
    for i in range(args.loader_batches):
        reader.batch(np.random.default_rng(i + 1), args.batch_size)
    seconds = time.perf_counter() - start
    frames = args.loader_batches * args.batch_size * plan.frames
    target_bytes = frames * store.schema.num_tokens * plan.target_channels * 2
    result = {
        "store": str(args.store),
        "clip_frames": plan.frames,
        "frames_per_s_per_worker": frames / seconds,
        "target_mib_per_s_per_worker": target_bytes / seconds / 2**20,
    }
    print(f" loader: {result['frames_per_s_per_worker']:.0f} frames/s per worker", flush=True)
    return result


def main() -> None:
    args = parse()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        vae_dir = (
            "tiny"
            if args.vae == "tiny"
            else str(write_vae_config(Path(tmp) / "sd-vae-ft-ema", sd_vae_config()))
        )
        online = OnlineTargets(args.encoders.split(","), vae_dir, args.size, args.sam_res, device)
    results = {mode: time_mode(args, device, mode, online) for mode in ("plain", "cached", "online")}
    results["ratios"] = {
        "cached_over_plain": results["cached"]["s_per_step"] / results["plain"]["s_per_step"],
        "online_over_cached": results["online"]["s_per_step"] / results["cached"]["s_per_step"],
    }
    results["loader"] = time_loader(args)
    results["setup"] = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(results["ratios"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
