"""``a4g store compare A B``: how close two stores of the same videos and encoders are.

Why: a store is made once and trained on many times, so a change in how it is made (``--target-dtype
int8``, another GPU, another library version) is judged on the stores themselves: per encoder, the
mean and the worst cosine between the targets of every token (each side dequantized to float32,
accumulated in float64), the largest absolute difference of the VAE moments, and whether the two
hold the same bytes (what a repaired store must be to its undamaged original).

Only shards done in both stores are compared; ``identical`` also needs every shard done in both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from a4g.errors import StoreError
from a4g.store.quant import SCALES, dequantize, encoder_widths

if TYPE_CHECKING:
    from a4g.store.feature_store import FeatureStore

FRAMES_PER_STEP = 16  # frames compared at once: bounds the float64 working set (~33 MB at 256 x 1024)


@dataclass
class EncoderAgreement:
    """Cosine between the two stores' targets of one encoder, over every compared token (and flip twin)."""

    mean_cos: float = 1.0
    worst_cos: float = 1.0
    tokens: int = 0
    _sum: float = field(default=0.0, repr=False)

    def add(self, cos: torch.Tensor) -> None:
        """Fold in the cosines ``[...]`` of more tokens."""
        self.tokens += cos.numel()
        self._sum += float(cos.sum())
        self.worst_cos = min(self.worst_cos, float(cos.min()))
        self.mean_cos = self._sum / self.tokens


@dataclass
class StoreComparison:
    """What :func:`compare_stores` found."""

    a: str
    b: str
    target_dtypes: tuple[str, str]
    same_fingerprint: bool
    shards_compared: int
    shards_total: int
    encoders: dict[str, EncoderAgreement]
    latents_max_abs_diff: float = 0.0
    arrays_compared: list[str] = field(default_factory=list)
    bytes_equal: bool = True

    @property
    def identical(self) -> bool:
        """Same arrays, every shard done in both, every byte equal."""
        return self.bytes_equal and self.shards_compared == self.shards_total

    def to_json(self) -> dict[str, Any]:
        encoders = {
            n: {k: v for k, v in asdict(e).items() if not k.startswith("_")} for n, e in self.encoders.items()
        }
        return {
            "a": self.a,
            "b": self.b,
            "identical": self.identical,
            "same_fingerprint": self.same_fingerprint,
            "target_dtypes": list(self.target_dtypes),
            "shards_compared": self.shards_compared,
            "shards_total": self.shards_total,
            "arrays_compared": self.arrays_compared,
            "latents_max_abs_diff": self.latents_max_abs_diff,
            "encoders": encoders,
        }


def check_comparable(a: FeatureStore, b: FeatureStore) -> None:
    """Refuse stores whose frames or targets do not correspond, naming the first field that differs."""
    sa, sb = a.schema, b.schema
    fields = [
        ("dataset.videos", sa.dataset.videos, sb.dataset.videos),
        ("dataset.video_list_hash", sa.dataset.video_list_hash, sb.dataset.video_list_hash),
        ("preprocess", sa.preprocess, sb.preprocess),
        ("encoders", _encoder_names(sa), _encoder_names(sb)),
        ("token_grid", sa.token_grid, sb.token_grid),
        ("vae.latent_channels", sa.vae.latent_channels, sb.vae.latent_channels),
        ("index.lengths", a.index.lengths.tolist(), b.index.lengths.tolist()),
    ]
    for name, x, y in fields:
        if x != y:
            raise StoreError(
                f"cannot compare {a.path} and {b.path}: field {name} differs ({_short(x)} vs {_short(y)}); "
                "compare stores of the same videos and encoders"
            )


def _encoder_names(schema) -> list[str]:
    return [f"{e.name} ({e.channels} ch)" for e in schema.encoders]


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"{len(value)} items starting {value[:2]}"
    text = str(value)
    return text if len(text) < 80 else text[:77] + "..."


def compare_stores(a: FeatureStore, b: FeatureStore, progress: bool = False) -> StoreComparison:
    """Compare every shard done in both stores (see the module doc); StoreError if they do not correspond."""
    from tqdm import tqdm

    check_comparable(a, b)
    both = a.done_mask() & b.done_mask()
    views = [""] + (["_flip"] if a.schema.flip and b.schema.flip else [])
    result = StoreComparison(
        a=a.path,
        b=b.path,
        target_dtypes=(a.schema.layout.target_dtype, b.schema.layout.target_dtype),
        same_fingerprint=a.schema.fingerprint == b.schema.fingerprint,
        shards_compared=int(both.sum()),
        shards_total=a.num_shards,
        encoders={n: EncoderAgreement() for n in a.schema.encoder_names},
        arrays_compared=[n for n in a.array_names if n in b.array_names],
    )
    result.bytes_equal = a.array_names == b.array_names and _same_arrays(a, b)
    shards = np.flatnonzero(both).tolist()
    for shard in tqdm(
        shards, desc="compare", unit="shard", disable=None if progress else True
    ):  # None: TTY only
        da, db = a.read_shard(shard), b.read_shard(shard)
        result.bytes_equal &= all(_same_bytes(da[n], db[n]) for n in result.arrays_compared)
        for view in views:
            diff = np.abs(da["latents" + view].astype(np.float32) - db["latents" + view].astype(np.float32))
            result.latents_max_abs_diff = max(result.latents_max_abs_diff, float(diff.max(initial=0.0)))
            _add_cosines(result, a, da, db, view)
    return result


def compare_locations(a: str, b: str, progress: bool = False) -> StoreComparison:
    """:func:`compare_stores` of the stores at two paths or URIs."""
    from a4g.store.feature_store import FeatureStore

    return compare_stores(FeatureStore.open(a), FeatureStore.open(b), progress=progress)


def _same_arrays(a: FeatureStore, b: FeatureStore) -> bool:
    """Same array dtypes and shapes (an int8 and a float16 store are never identical)."""
    return all(
        a.array(n).dtype == b.array(n).dtype and a.array(n).shape == b.array(n).shape for n in a.array_names
    )


def _same_bytes(x: np.ndarray, y: np.ndarray) -> bool:
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _add_cosines(
    result: StoreComparison, a: FeatureStore, da: dict[str, np.ndarray], db: dict[str, np.ndarray], view: str
) -> None:
    """Per-encoder token cosines of one view of one shard, in frame blocks of FRAMES_PER_STEP."""
    widths = encoder_widths(a.schema)
    frames = da["targets" + view].shape[0]
    for start in range(0, frames, FRAMES_PER_STEP):
        block = slice(start, start + FRAMES_PER_STEP)
        ta, tb = (_float_targets(d, view, block, widths) for d in (da, db))  # [f, N, C] each
        for name, (lo, hi) in a.schema.fusion.slices.items():
            result.encoders[name].add(token_cosine(ta[..., lo:hi], tb[..., lo:hi]))


def _float_targets(data: dict[str, np.ndarray], view: str, block: slice, widths: list[int]) -> torch.Tensor:
    """Targets of frames `block` as float64 ``[f, N, C]`` (int8 stores dequantized with their scales)."""
    values = torch.from_numpy(np.ascontiguousarray(data["targets" + view][block]))
    if values.dtype == torch.int8:
        scales = torch.from_numpy(np.ascontiguousarray(data[SCALES + view][block]))
        return dequantize(values, scales, widths, dtype=torch.float64)
    return values.to(torch.float64)


def token_cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine along the last axis, ``[..., C]`` twice → ``[...]``; two zero vectors agree (1), one zero
    vector does not (0)."""
    nx, ny = x.norm(dim=-1), y.norm(dim=-1)
    dot = (x * y).sum(dim=-1)
    cos = dot / (nx * ny).clamp_min(torch.finfo(x.dtype).tiny)
    both_zero = (nx == 0) & (ny == 0)
    return torch.where(both_zero, torch.ones_like(cos), cos)


def format_comparison(c: StoreComparison) -> str:
    """The text form of a comparison."""
    lines = [
        f"A  {c.a}  ({c.target_dtypes[0]} targets)",
        f"B  {c.b}  ({c.target_dtypes[1]} targets)",
        f"shards compared      {c.shards_compared}/{c.shards_total}",
        f"{'encoder':<24}{'mean cos':>12}{'worst cos':>12}{'tokens':>10}",
    ]
    for name, e in c.encoders.items():
        lines.append(f"{name:<24}{e.mean_cos:>12.6f}{e.worst_cos:>12.6f}{e.tokens:>10}")
    lines += [
        f"latents max |diff|   {c.latents_max_abs_diff:.6g}",
        f"same fingerprint     {'yes' if c.same_fingerprint else 'no'}",
        f"identical            {'yes' if c.identical else 'no'}",
    ]
    return "\n".join(lines)
