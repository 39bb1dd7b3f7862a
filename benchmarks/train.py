"""Training cost of alignment: plain vs. cached targets vs. encoders run online, plus loader throughput.

One process measures, on the same model, batch and device:

* ``plain``   — λ = 0 (the baseline; same code path, the projector runs with zero weight),
* ``cached``  — λ = 0.5 on targets read from the store (what ``a4g train`` does),
* ``online``  — λ = 0.5 with the VAE and every encoder run on the step's frames (the REPA way),
  real-size architectures with random weights fed random uint8 frames,
* ``loader``  — frames/s one loader worker (one process) delivers from ``--store``.

CPU smoke run (seconds; tiny models, flags given after --smoke still win):
    python benchmarks/train.py --smoke --store demo_out/store --json bench_cpu.json
GPU (Align4Gen setting, 256 px, XL):
    python benchmarks/train.py --device cuda --model VDiT-XL --batch-size 5 --frames 16 --size 256 \
        --encoders dinov2_vitb14,sam2.1_hiera_b+ --sam-res 1024 --steps 20 --warmup 5 \
        --store STORE --json bench_gpu.json
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

import numpy as np
import torch

from a4g.encoders import create_encoder, create_vae
from a4g.encoders.dinov2 import dino_res_for
from a4g.encoders.fusion import fuse, with_token_grid
from a4g.encoders.vae import sd_vae_config, write_vae_config
from a4g.geometry import PATCH_SIZE, token_grid_for
from a4g.store import FeatureStore
from a4g.torchutil import autocast
from a4g.train.align import Projector
from a4g.train.data import ClipReader, DataError, plan_clips
from a4g.train.diffusion import create_objective
from a4g.train.loop import Trainee
from a4g.train.model import create_model, default_align_depth

MODES = ("plain", "cached", "online")
SMOKE = dict(
    device="cpu",
    model="VDiT-tiny",
    batch_size=2,
    frames=4,
    size=64,
    encoders="dinov2_tiny,sam2.1_tiny",
    sam_res=64,
    vae="tiny",
    steps=3,
    warmup=1,
    loader_batches=5,
)
"""Tiny models on the CPU: proves every mode and the loader measurement in seconds."""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny CPU preset: small defaults for every size flag")
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
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds the timed steps are split into")
    p.add_argument(
        "--store", type=Path, default=None, help="store for the loader measurement (skipped if absent)"
    )
    p.add_argument("--loader-batches", type=int, default=30, help="batches timed for the loader")
    p.add_argument("--modes", default=",".join(MODES), help="which of plain,cached,online to time")
    p.add_argument("--json", type=Path, default=None, help="results (rewritten after every mode)")
    if "--smoke" in sys.argv[1:]:
        p.set_defaults(**SMOKE)
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OnlineTargets:
    """VAE + encoders on the step's frames, with the same math as extraction (a4g.extract.run)."""

    def __init__(self, names: list[str], vae_dir: str, size: int, sam_res: int, device: torch.device) -> None:
        self.vae = create_vae(vae_dir, random_init=True, device=device)
        self.grid = token_grid_for(size, self.vae.spec.downsample)
        dino_res = dino_res_for(self.grid, names)
        self.encoders = [
            create_encoder(n, random_init=True, dino_res=dino_res, sam_res=sam_res, device=device)
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


class Bench:
    """One trainee for every mode: plain (λ = 0), cached and online (λ = 0.5) differ only in the
    alignment weight and where the targets come from. One model build serves all three, and the modes
    are timed in alternating rounds so drift and late warm-up hit each alike: the cached ÷ plain goal
    is 3 %, within what two separate runs of one mode can differ by."""

    def __init__(self, args, device: torch.device, online: OnlineTargets) -> None:
        latent = args.size // 8
        torch.manual_seed(0)
        model = create_model(
            args.model, input_size=latent, in_channels=4, num_frames=args.frames, num_classes=101
        )
        projector = Projector(model.embed_dim, online.channels)
        self.trainee = Trainee(
            model, projector, create_objective(args.objective), default_align_depth(args.model), 0.0
        )
        self.trainee.to(device).train()
        self.opt = torch.optim.AdamW(
            self.trainee.parameters(), lr=1e-4, weight_decay=0.0, fused=device.type == "cuda" or None
        )
        b, f, n = args.batch_size, args.frames, (latent // PATCH_SIZE) ** 2
        self.latents = torch.randn(b, f, 4, latent, latent, device=device)
        self.targets = torch.randn(b, f, n, online.channels, device=device, dtype=torch.float16)
        self.labels = torch.randint(0, 101, (b,), device=device)
        self.frames = torch.randint(
            0, 256, (b * f, 3, args.size, args.size), dtype=torch.uint8, device=device
        )
        self.online = online
        self.device = device
        self.frames_per_step = b * f

    def step(self, mode: str) -> None:
        x, t = self.latents, self.targets
        if mode == "online":
            z, fused = self.online(self.frames)
            x, t = z.reshape(x.shape), fused.reshape(t.shape)
        self.trainee.align_weight = 0.0 if mode == "plain" else 0.5
        with autocast(self.device):
            losses = self.trainee(x, t, self.labels)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.trainee.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def seconds(self, mode: str, steps: int) -> float:
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(mode)
        sync(self.device)
        return time.perf_counter() - start


def time_modes(args, device: torch.device, modes: list[str], online: OnlineTargets) -> dict:
    """Seconds per step of each mode: warm-up steps of every mode, then `--rounds` alternating rounds."""
    bench = Bench(args, device, online)
    results: dict[str, dict] = {}
    live = []
    for mode in modes:
        try:
            for _ in range(args.warmup):
                bench.step(mode)
            live.append(mode)
        except torch.OutOfMemoryError as err:  # one mode that does not fit must not lose the others
            results[mode] = {"error": f"out of memory: {str(err).splitlines()[0]}"}
            print(f"{mode:>7}: out of memory", flush=True)
            bench.opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_round = max(1, args.steps // args.rounds)
    totals = dict.fromkeys(live, 0.0)
    for _ in range(args.rounds):
        for mode in live:
            totals[mode] += bench.seconds(mode, per_round)
    for mode in live:
        sec = totals[mode] / (per_round * args.rounds)
        results[mode] = {"s_per_step": sec, "frames_per_s": bench.frames_per_step / sec}
        print(f"{mode:>7}: {sec:.4f} s/step, {bench.frames_per_step / sec:.1f} frames/s", flush=True)
    if device.type == "cuda":
        results["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return results


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
    itemsize = np.dtype(getattr(store.schema.layout, "target_dtype", store.schema.layout.dtype)).itemsize
    target_bytes = frames * store.schema.num_tokens * plan.target_channels * itemsize
    result = {
        "store": str(args.store),
        "clip_frames": plan.frames,
        "frames_per_s_per_worker": frames / seconds,
        "target_mib_per_s_per_worker": target_bytes / seconds / 2**20,
    }
    print(f" loader: {result['frames_per_s_per_worker']:.0f} frames/s per worker", flush=True)
    return result


def save(args, results: dict) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def ratios(results: dict) -> dict:
    """cached ÷ plain (goal ≤ 1.03) and online ÷ cached (goal ≥ 3), where both modes ran."""
    step = {m: results[m]["s_per_step"] for m in MODES if "s_per_step" in results.get(m, {})}
    out = {}
    if "cached" in step and "plain" in step:
        out["cached_over_plain"] = step["cached"] / step["plain"]
    if "online" in step and "cached" in step:
        out["online_over_cached"] = step["online"] / step["cached"]
    return out


def main() -> None:
    args = parse()
    device = torch.device(args.device)
    results: dict = {
        "setup": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "argv": sys.argv[1:],
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        vae_dir = (
            "tiny"
            if args.vae == "tiny"
            else str(write_vae_config(Path(tmp) / "sd-vae-ft-ema", sd_vae_config()))
        )
        modes = [m for m in args.modes.split(",") if m]  # none: the loader alone
        online = (
            OnlineTargets(args.encoders.split(","), vae_dir, args.size, args.sam_res, device)
            if modes
            else None
        )
    if modes:
        results.update(time_modes(args, device, modes, online))
        results["ratios"] = ratios(results)
        save(args, results)
    try:
        results["loader"] = time_loader(args)
    except Exception as err:  # e.g. the extraction part that makes the store failed: keep the steps
        results["loader"] = {"error": f"{type(err).__name__}: {err}"}
        print(f" loader: {results['loader']['error']}", flush=True)
    results["ratios"] = ratios(results)
    save(args, results)
    for name, goal in (("cached_over_plain", "<= 1.03"), ("online_over_cached", ">= 3")):
        if name in results["ratios"]:
            print(f"  {name} = {results['ratios'][name]:.3f} (goal {goal})")


if __name__ == "__main__":
    main()
