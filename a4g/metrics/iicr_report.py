"""Score several encoders with IICR over many clips: report dict, text table and plot for `a4g iicr`.

Fused rows (e.g. ``dinov2+sam2``) are built with the store's own fusion,
:func:`a4g.encoders.fusion.fuse_tokens`, so a fused IICR scores exactly what training aligns to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from a4g.metrics.iicr import iicr_clip, iicr_from_labels, mean_std


def _row(results: list[tuple[float, float, float]]) -> dict[str, float]:
    iicr_mean, iicr_std = mean_std([r[0] for r in results])
    return {
        "iicr": iicr_mean,
        "iicr_std": iicr_std,
        "d_intra": mean_std([r[1] for r in results])[0],
        "d_inter": mean_std([r[2] for r in results])[0],
    }


def run_iicr(
    features_by_encoder: dict[str, list[Tensor]],
    ks: Sequence[int],
    seed: int = 0,
    labels: list[Tensor] | None = None,
) -> dict:
    """IICR of every encoder at every k (and with ground-truth masks when `labels` is given).

    `features_by_encoder[name][i]` is clip i's tokens [T, N, C]; `labels[i]` is clip i's object ids
    [T, N] on that encoder's token grid (use `labels_to_tokens`). Returns a JSON-ready dict:
    {"ks", "seed", "num_clips", "encoders": {name: {"kmeans": {str(k): row}, "masks": row}}},
    with row = {"iicr", "iicr_std", "d_intra", "d_inter"} (means over clips, std of IICR).
    """
    if not features_by_encoder:
        raise ValueError("no encoders to score")
    counts = {name: len(clips) for name, clips in features_by_encoder.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every encoder needs the same clips, got counts {counts}")
    num_clips = next(iter(counts.values()))
    if labels is not None and len(labels) != num_clips:
        raise ValueError(f"{len(labels)} label maps for {num_clips} clips")
    report: dict = {"ks": [int(k) for k in ks], "seed": seed, "num_clips": num_clips, "encoders": {}}
    for name, clips in features_by_encoder.items():
        entry: dict = {"kmeans": {str(k): _row([iicr_clip(c, int(k), seed) for c in clips]) for k in ks}}
        if labels is not None:
            entry["masks"] = _row([iicr_from_labels(c, lab) for c, lab in zip(clips, labels, strict=True)])
        report["encoders"][name] = entry
    return report


def _cell(row: dict[str, float]) -> str:
    return "nan" if math.isnan(row["iicr"]) else f"{row['iicr']:.3f}±{row['iicr_std']:.3f}"


def format_table(report: dict) -> str:
    """Plain-text table: one row per encoder, one column per k (and masks), cells `mean±std`."""
    has_masks = any("masks" in e for e in report["encoders"].values())
    header = ["encoder"] + [f"k={k}" for k in report["ks"]] + (["masks"] if has_masks else [])
    rows = [header]
    for name, entry in report["encoders"].items():
        cells = [_cell(entry["kmeans"][str(k)]) for k in report["ks"]]
        if has_masks:
            cells.append(_cell(entry["masks"]) if "masks" in entry else "-")
        rows.append([name, *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n(IICR mean±std over {report['num_clips']} clips, seed {report['seed']})"


def plot_iicr(report: dict, path: str | Path) -> Path:
    """IICR against k, one line per encoder (mask-mode IICR as a dashed level in the same colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = report["ks"]
    for name, entry in report["encoders"].items():
        rows = [entry["kmeans"][str(k)] for k in ks]
        line = ax.errorbar(
            ks,
            [r["iicr"] for r in rows],
            yerr=[r["iicr_std"] for r in rows],
            marker="o",
            capsize=3,
            label=name,
        )
        if "masks" in entry:
            ax.axhline(entry["masks"]["iicr"], ls="--", color=line[0].get_color(), label=f"{name} (masks)")
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel("IICR")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
