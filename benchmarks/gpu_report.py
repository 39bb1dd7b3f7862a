"""Merge the JSON of every part of ``benchmarks/gpu_all.sh`` into one file and print the summary.

The device tool returns at most 8 files from $OUT, so every part writes its own JSON into a work
folder and this merges them (after each part, so a run cut short still leaves its results) into
``$OUT/results.json``. ``--summary`` prints the figures issue 14 asks for as a short table: the
device tool's reply carries only the end of the output.

    python benchmarks/gpu_report.py WORK_DIR OUT_DIR [--summary]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def merge(work: Path, out: Path) -> dict:
    """results.json = {"env": ..., "parts": [{name, rc, seconds}], "<part>": <its JSON>}."""
    results: dict = {}
    for path in sorted((work / "json").glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as err:  # a part killed mid-write leaves a broken file
            results[path.stem] = {"error": f"unreadable: {err}"}
    parts = []
    status = work / "parts.txt"
    if status.exists():
        for line in status.read_text().splitlines():
            name, rc, seconds = line.split()
            parts.append({"name": name, "rc": int(rc), "seconds": int(seconds)})
    results["parts"] = parts
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def _fmt(x, spec: str = ".1f") -> str:
    return format(x, spec) if isinstance(x, int | float) else "-"


def _ms(seconds) -> str:
    return _fmt(seconds * 1e3 if isinstance(seconds, int | float) else None)


def extract_lines(r: dict) -> list[str]:
    lines = []
    for mode in ("extract_eager", "extract_compiled"):
        e = r.get(mode, {})
        enc = e.get("encoders_only_fps", {})
        if not enc and "end_to_end" not in e:
            continue
        models = "  ".join(f"{k} {_fmt(v)}" for k, v in enc.items())
        lines.append(f"  {mode}: encoders-only frames/s: {models}")
        walls = e.get("encoders_only_wall_s", {})
        if walls and mode == "extract_compiled":
            lines.append(
                "  extract_compiled: wall s incl. compile: "
                + "  ".join(f"{k} {v:.0f}" for k, v in walls.items())
                + f"; graphs compiled {e.get('dynamo_graphs', '-')} (3 models: 3 = no recompile)"
            )
        e2e = e.get("end_to_end", {})
        ratio = e.get("ratio_end_to_end_over_encoders_only")
        lines.append(
            f"  {mode}: end-to-end {_fmt(e2e.get('fps'))} frames/s steady; "
            f"ratio e2e/encoders-only {_fmt(ratio, '.3f')} (goal >= 0.95)"
        )
        direct = e.get("store_vs_direct", {}).get("arrays")
        if direct:  # a race in the overlapped copies would show as a large difference here
            diffs = "  ".join(f"{k} {_fmt(v['max_abs_diff'], '.2g')}" for k, v in direct.items())
            lines.append(f"  {mode}: store vs models rerun, max|d|: {diffs}")
        prof = e.get("profile", {}).get("per_shard_s")
        if prof:
            ms = "  ".join(f"{k} {_ms(v)}" for k, v in prof.items())
            lines.append(f"  {mode}: per shard (ms): {ms}")
            dec = e["profile"].get("decode", {})
            cp = e["profile"].get("copies", {})
            lines.append(
                f"  {mode}: one decode worker {_fmt(dec.get('frames_per_s_one_worker'))} frames/s "
                f"(x{dec.get('num_workers')} workers = {_fmt(dec.get('capacity_frames_per_s'))}); "
                f"bare H2D {_ms(cp.get('h2d_s'))} ms, D2H {_ms(cp.get('d2h_s'))} ms per shard"
            )
    return lines


def compare_lines(r: dict) -> list[str]:
    lines = []
    for name in ("compare_eager_compiled", "compare_eager_int8"):
        arrays = r.get(name, {}).get("arrays", {})
        for arr, st in arrays.items():
            cos = (
                f"cos min {_fmt(st.get('cos_min'), '.5f')} mean {_fmt(st.get('cos_mean'), '.6f')}, "
                if "cos_min" in st
                else ""
            )
            lines.append(
                f"  {name} {arr}: {cos}max|d| {_fmt(st['max_abs_diff'], '.4g')} "
                f"(mean {_fmt(st['mean_abs_diff'], '.3g')}, max|ref| {_fmt(st['max_abs_ref'], '.3g')})"
            )
        pkg = r.get(name, {}).get("package", {})  # `a4g store compare`: per encoder, int8 dequantized
        for enc, st in pkg.get("encoders", {}).items():
            lines.append(
                f"  {name} {enc} (a4g store compare): cos mean {_fmt(st.get('mean_cos'), '.6f')} "
                f"worst {_fmt(st.get('worst_cos'), '.5f')}"
            )
    return lines


def other_lines(r: dict) -> list[str]:
    lines = []
    for mode in ("sample_eager", "sample_compiled"):
        s = r.get(mode, {}).get("result")
        if s:
            lines.append(
                f"  {mode}: batch {s['batch']}: {_fmt(s['s_per_step'], '.3f')} s/step, "
                f"{_fmt(s.get('s_per_video'), '.2f')} s/video (250 DDPM steps, CFG, incl. "
                f"{_fmt(s.get('s_per_video_decode'), '.3f')} s decode; {s['method']})"
            )
    t = r.get("train", {})
    for mode in ("plain", "cached", "online"):
        if mode in t:
            lines.append(
                f"  train {mode}: {_fmt(t[mode].get('s_per_step'), '.4f')} s/step {t[mode].get('error', '')}"
            )
    for k, v in t.get("ratios", {}).items():
        lines.append(
            f"  train {k} = {_fmt(v, '.3f')} (goal {'<= 1.03' if k == 'cached_over_plain' else '>= 3'})"
        )
    if "loader" in t:
        lines.append(
            f"  train loader: {_fmt(t['loader'].get('frames_per_s_per_worker'), '.0f')} frames/s per worker"
        )
    i8 = r.get("extract_int8", {})
    if "skipped" in i8:
        lines.append(f"  int8: skipped ({i8['skipped']})")
    elif "end_to_end" in i8:
        lines.append(f"  int8: end-to-end {_fmt(i8['end_to_end'].get('fps'))} frames/s")
    return lines


RC_NOTES = {124: " (timed out)", 125: " (skipped: no time left)"}
"""Exit codes gpu_all.sh records: `timeout`'s 124, and 125 for a part it did not start."""


def summary(r: dict) -> str:
    env = r.get("env", {})
    head = [f"=== summary: {env.get('gpu') or 'cpu'}, torch {env.get('torch', '?')}, {env.get('date', '?')}"]
    parts = [
        f"  part {p['name']}: rc {p['rc']}{RC_NOTES.get(p['rc'], '')}, {p['seconds']} s"
        for p in r.get("parts", [])
    ]
    return "\n".join(head + parts + extract_lines(r) + compare_lines(r) + other_lines(r))


PACKAGES = (
    "torch", "triton", "numpy", "timm", "diffusers", "sam2", "pydantic", "zarr", "numcodecs", "decord",
    "opencv-python-headless", "av", "accelerate", "huggingface_hub", "typing_extensions",
)  # fmt: skip


def environment() -> dict:
    """What the numbers were measured on: GPU, versions, cores, date."""
    import datetime
    import importlib.metadata as md
    import os
    import platform

    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_mem_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path, help="folder holding json/ and parts.txt")
    ap.add_argument("out", type=Path, help="folder to write results.json into ($OUT)")
    ap.add_argument("--summary", action="store_true", help="print the summary table")
    ap.add_argument("--env", action="store_true", help="record the environment first (json/env.json)")
    args = ap.parse_args()
    if args.env:
        env = environment()
        (args.work / "json").mkdir(parents=True, exist_ok=True)
        (args.work / "json" / "env.json").write_text(json.dumps(env, indent=2) + "\n")
        print(json.dumps(env, indent=2))
    results = merge(args.work, args.out)
    if args.summary:
        print(summary(results))


if __name__ == "__main__":
    main()
