"""Sampling speed: seconds per video at VDiT-XL, 16 frames, 256 px, DDPM 250 steps with CFG.

What `a4g sample` costs per video is 250 model evaluations of a doubled (conditional + null-class)
batch plus one VAE decode per frame. Running all 250 steps per batch size would take minutes of GPU
time per figure, and every step costs the same (the respaced timestep changes only scalars), so
this times a few denoising steps through the package's own sampler (``a4g.train.diffusion.sample``,
DDPM, guidance on) after untimed warm-up steps, and extrapolates linearly to ``--steps``; the output
says so. The batch is the largest of ``--batches`` that fits (tried in descending order; a CUDA
out-of-memory error moves on to the next). ``--compile`` compiles the model (``nn.Module.compile``)
at the batch found eagerly (pass it with ``--batch``) so there is one compile.

    # GPU (H200/H100): eager, then compiled at the batch eager found
    python benchmarks/sample.py --json s_eager.json
    python benchmarks/sample.py --compile --batch 64 --json s_comp.json
    # CPU smoke run, tiny model (seconds)
    python benchmarks/sample.py --smoke --json s.json

Random weights: speed does not depend on them. Timing: synchronize, then a host clock around the
timed steps; warm-up steps (and compilation) excluded.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from a4g.train.diffusion import create_objective, sample
from a4g.train.model import create_model

BATCHES = "120,96,64,32,16,8,4,2,1"
"""Descending candidates. Not 128: with CFG the temporal blocks attend over 2 x 128 x 256 = 65,536
sequences of 16 frames, one more than the 65,535 a CUDA grid's y/z axis allows, and SDPA's fused
kernels put the sequences on such an axis ("invalid configuration argument", pytorch/pytorch#146704;
later releases chunk it for the memory-efficient kernel). 120 stays under it at 256 px."""

SMOKE = dict(
    device="cpu",
    model="VDiT-tiny",
    frames=4,
    latent=8,
    batches="2,1",
    timed_steps=2,
    warmup_steps=1,
    vae="tiny",
)
"""Tiny model on the CPU: proves the code path (search, timing, compile, decode) in seconds."""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny CPU preset: small defaults for every size flag")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--model", default="VDiT-XL", help="V-DiT size")
    p.add_argument("--frames", type=int, default=16, help="frames per video")
    p.add_argument("--latent", type=int, default=32, help="latent side (256 px / 8)")
    p.add_argument("--channels", type=int, default=4, help="latent channels")
    p.add_argument("--classes", type=int, default=101, help="class count (UCF-101); CFG needs labels")
    p.add_argument("--cfg", type=float, default=4.0, help="classifier-free guidance scale")
    p.add_argument("--learn-sigma", action="store_true", help="learned-variance model and sampler")
    p.add_argument("--steps", type=int, default=250, help="DDPM steps of a real sample (extrapolated to)")
    p.add_argument("--timed-steps", type=int, default=3, help="denoising steps actually timed")
    p.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first (compiles)")
    p.add_argument("--batches", default=BATCHES, help="batch sizes to try, descending")
    p.add_argument("--batch", type=int, default=None, help="use this batch size, no search")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--vae", choices=["sd", "tiny", "none"], default="sd", help="VAE to time decoding with")
    p.add_argument("--json", type=Path, default=None, help="results (rewritten after every stage)")
    if "--smoke" in sys.argv[1:]:  # the preset changes defaults; flags given still win
        p.set_defaults(**SMOKE)
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(args, device: torch.device):
    """The model and objective as `a4g sample` builds them (learned sigma where asked and supported)."""
    kwargs = dict(input_size=args.latent, in_channels=args.channels, num_frames=args.frames)
    kwargs["num_classes"] = args.classes
    obj_kwargs = {}
    if args.learn_sigma:
        if "learn_sigma" not in inspect.signature(create_model).parameters:
            raise SystemExit("--learn-sigma: this version of a4g has no learned-sigma model")
        kwargs["learn_sigma"] = obj_kwargs["learn_sigma"] = True
    torch.manual_seed(0)
    model = create_model(args.model, **kwargs).to(device).eval()
    if args.compile:
        model.compile()
    return model, create_objective("ddpm", **obj_kwargs)


def run_steps(model, objective, args, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """`steps` DDPM denoising steps of a CFG batch, bf16 autocast on a GPU as `a4g sample`."""
    shape = (batch, args.frames, args.channels, args.latent, args.latent)
    gen = torch.Generator(device=device).manual_seed(0)
    y = torch.randint(0, args.classes, (batch,), device=device, generator=gen)
    # one generator per video, as `a4g sample` draws them (video i depends only on (seed, i))
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(batch)]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return sample(
            model, objective, shape, sampler="ddpm", steps=steps, y=y, cfg_scale=args.cfg, generator=gens
        )


def too_big(err: Exception) -> str | None:
    """Why a batch did not run, if the reason is its size; None for any other error."""
    if isinstance(err, torch.OutOfMemoryError):
        return "out of memory"
    if "invalid configuration argument" in str(err):  # a CUDA grid dimension over 65535
        return "attention batch over the CUDA grid limit"
    return None


def largest_batch(model, objective, args, device: torch.device) -> tuple[int, list[dict]]:
    """First batch of the candidates whose warm-up steps run without a CUDA out-of-memory error."""
    tried = []
    candidates = [args.batch] if args.batch else [int(b) for b in args.batches.split(",")]
    for batch in candidates:
        t = time.perf_counter()
        try:
            run_steps(model, objective, args, batch, args.warmup_steps, device)
            sync(device)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            reason = too_big(err)
            if reason is None:
                raise
            tried.append({"batch": batch, "fits": False, "reason": reason})
            print(f"  batch {batch}: {reason}", flush=True)
            torch.cuda.empty_cache()
            continue
        tried.append({"batch": batch, "fits": True, "warmup_s": time.perf_counter() - t})
        print(f"  batch {batch}: fits (warm-up {time.perf_counter() - t:.1f} s)", flush=True)
        return batch, tried
    raise SystemExit(f"no batch size in {candidates} fits on {device}")


def decode_seconds(args, device: torch.device) -> float | None:
    """Seconds to decode one video's frames with the VAE (SD architecture, random weights)."""
    if args.vae == "none":
        return None
    from a4g.encoders import create_vae
    from a4g.encoders.vae import sd_vae_config, write_vae_config

    with tempfile.TemporaryDirectory() as tmp:
        name = "tiny" if args.vae == "tiny" else str(write_vae_config(Path(tmp) / "sd-vae", sd_vae_config()))
        vae = create_vae(name, random_init=True, device=device)
    z = torch.randn(args.frames, vae.spec.latent_channels, args.latent, args.latent, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        vae.decode(z)
        sync(device)
        t = time.perf_counter()
        for _ in range(3):
            vae.decode(z)
        sync(device)
    return (time.perf_counter() - t) / 3


def save(args, report: dict) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    args = parse()
    device = torch.device(args.device)
    report: dict = {"argv": sys.argv[1:], "torch": torch.__version__, "setup": vars(args) | {"json": None}}
    report["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    t = time.perf_counter()
    model, objective = build(args, device)
    report["build_s"] = time.perf_counter() - t
    batch, report["batch_search"] = largest_batch(model, objective, args, device)
    save(args, report)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t = time.perf_counter()
    run_steps(model, objective, args, batch, args.timed_steps, device)
    sync(device)
    per_step = (time.perf_counter() - t) / args.timed_steps
    per_video = per_step * args.steps / batch
    report["result"] = {
        "batch": batch,
        "s_per_step": per_step,
        "s_per_video_denoise": per_video,
        "method": f"{args.timed_steps} steps timed after {args.warmup_steps} warm-up, "
        f"extrapolated linearly to {args.steps}",
    }
    if device.type == "cuda":
        report["result"]["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    save(args, report)
    dec = decode_seconds(args, device)
    report["result"]["s_per_video_decode"] = dec
    report["result"]["s_per_video"] = per_video + (dec or 0.0)
    save(args, report)
    mode = "compiled" if args.compile else "eager"
    print(
        f"  sample {mode}: {args.model} {args.frames}x{8 * args.latent}px, CFG {args.cfg}, batch {batch}: "
        f"{per_step:.3f} s/step -> {per_video:.2f} s/video for {args.steps} DDPM steps "
        f"(+{dec or 0:.3f} s VAE decode); {report['result']['method']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
