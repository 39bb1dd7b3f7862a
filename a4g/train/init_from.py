"""Start a V-DiT from DiT (ImageNet), Latte or a4g weights through an explicit key map.

Latte trains its video models from pretrained image weights. Its ``train.py`` copies every checkpoint
tensor whose *name* matches, which works because Latte's model reuses DiT's module names. a4g names
some modules differently (``patch_embed`` for DiT's ``x_embedder.proj``, ``y_embedder.table`` for
``y_embedder.embedding_table``) and counts its spatial and temporal blocks in one list, so a name
match would silently load nothing or the wrong thing. Here every source key is mapped on purpose, and
the :class:`InitReport` says what was loaded, what was skipped (and why: a shape that does not fit, a
block the model does not have, a fixed buffer), and what stays newly initialized.

Layouts:

* ``dit``: facebookresearch/DiT ``models.py`` (``x_embedder.proj``, ``t_embedder.mlp``,
  ``y_embedder.embedding_table``, ``pos_embed``, ``blocks.N.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2,
  adaLN_modulation.1}``, ``final_layer.{linear, adaLN_modulation.1}``). DiT's blocks attend over
  the tokens of one image, so by default (``dit_blocks="spatial"``) DiT block n becomes a4g's n-th
  *spatial* block (a4g block 2n) and the temporal blocks keep their fresh adaLN-Zero init (identity
  at the start). ``dit_blocks="by_index"`` copies DiT block n into a4g block n, spatial or temporal,
  which is what Latte's ``train.py`` name match does with a DiT checkpoint.
* ``latte``: Vchitect/Latte ``models/latte.py`` (the class-conditional / unconditional models of the
  paper: DiT's names plus ``temp_embed``, with ``blocks`` alternating spatial, temporal exactly as
  a4g's). Latte's text-to-video model (``latte_t2v.py``: diffusers ``transformer_blocks`` /
  ``temporal_transformer_blocks`` with PixArt-style adaLN-single and cross-attention) has no
  counterpart in a4g's adaLN-Zero blocks and is refused.
* ``a4g``: a4g's own V-DiT (an EMA file, or ``model.safetensors`` with its ``model.`` prefix).

Fixed sin-cos buffers (``pos_embed``, ``temp_embed``) are never copied: a4g computes the same values
(DiT/MAE channel order) for its own grid; they are compared instead, and a mismatch is reported.

Weights are read safely: safetensors, or ``torch.load(weights_only=True)`` (which runs no pickled
code; ``argparse.Namespace`` is allowed because DiT training checkpoints store their ``args``).
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from a4g.encoders.weights import refused_global
from a4g.errors import WeightsError
from a4g.train.checkpoint import EMA_FILE

Layout = Literal["auto", "dit", "latte", "a4g"]
DitBlocks = Literal["spatial", "by_index"]
LAYOUTS: tuple[str, ...] = ("auto", "dit", "latte", "a4g")

# Nesting of published checkpoints: DiT/Latte training checkpoints hold {"model", "ema", "opt", "args"}
# (Latte's only {"ema"}); both sample from the EMA weights, so that is preferred.
_NESTED = ("ema", "model", "state_dict", "module")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile

# DiT/Latte → a4g, outside the blocks (prefix → prefix).
_STEM = {
    "x_embedder.proj.": "patch_embed.",
    "t_embedder.mlp.0.": "t_embedder.mlp.0.",
    "t_embedder.mlp.2.": "t_embedder.mlp.2.",
    "y_embedder.embedding_table.": "y_embedder.table.",
    "final_layer.linear.": "final_layer.linear.",
    "final_layer.adaLN_modulation.1.": "final_layer.adaLN_modulation.1.",
}
# Inside a block the names agree (DiT's timm Attention/Mlp and a4g's share them).
_BLOCK_PARTS = frozenset(
    f"{module}.{kind}"
    for module in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1")
    for kind in ("weight", "bias")
)
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
_FIXED = {"pos_embed": "pos_embed", "temp_embed": "temp_embed", "time_embed": "temp_embed"}  # old Latte name
_LATTE_ONLY = {
    "text_embedding_projection.": "Latte text conditioning (extras=78); a4g models take class labels"
}


@dataclass(frozen=True)
class InitReport:
    """What :func:`load_init` did; names are a4g's except in ``skipped`` (the checkpoint's keys)."""

    loaded: list[str]
    skipped: list[tuple[str, str]]  # (checkpoint key, reason)
    new: list[str]  # a4g tensors left at their fresh initialization
    layout: str = field(default="")  # the layout used (what "auto" resolved to)

    def summary(self) -> str:
        """One line for the log, e.g. ``init from dit: 98 tensors loaded, 3 skipped, 72 newly initialized``."""
        return (
            f"init from {self.layout}: {len(self.loaded)} tensors loaded, {len(self.skipped)} skipped, "
            f"{len(self.new)} newly initialized"
        )


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a file, without running pickled code.

    ``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)``; an a4g
    checkpoint directory gives its EMA weights. Nested checkpoints (``{"ema": ...}``) are unwrapped.
    """
    path = Path(path)
    if path.is_dir():
        path = path / EMA_FILE
    if not path.is_file():
        raise WeightsError(
            f"init weights {path}: no such file (give a .safetensors/.pt file or an a4g checkpoint)"
        )
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"init weights {path}: not a readable safetensors file ({err})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(_unpickling_message(path, str(err))) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise WeightsError(f"init weights {path}: not a readable PyTorch checkpoint ({err})") from None
    return unwrap_state_dict(obj, str(path))


def _unpickling_message(path: Path, text: str) -> str:
    """torch's long weights-only message → one line: refused (names the global) or unreadable."""
    refused = refused_global(text)
    if refused:
        return (
            f"init weights {path}: refused, loading it would run pickled code ({refused}); "
            "save the state dict alone (torch.save(model.state_dict())) or as .safetensors"
        )
    return f"init weights {path}: not a readable PyTorch checkpoint (the weights-only unpickler stopped)"


def unwrap_state_dict(obj: object, where: str = "state dict") -> dict[str, Tensor]:
    """The tensor mapping inside a checkpoint object, with DDP / torch.compile prefixes removed."""
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((obj[k] for k in _NESTED if k in obj), None)
        if inner is None:
            raise WeightsError(
                f"init weights {where}: no state dict inside (top-level keys {sorted(obj)[:8]})"
            )
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"init weights {where}: expected a state dict, found {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        state[key] = value
    return state


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def detect_layout(keys: list[str]) -> str:
    """``dit``, ``latte`` or ``a4g`` from the key names; a clear error for anything else."""
    names = set(keys)
    if any(k.startswith(("transformer_blocks.", "temporal_transformer_blocks.")) for k in names):
        raise WeightsError(
            "init weights: this is a Latte text-to-video (diffusers LatteT2V) checkpoint; its adaLN-single "
            "cross-attention blocks have no counterpart in a4g. Use a class-conditional Latte or DiT checkpoint"
        )
    if "patch_embed.weight" in names or "model.patch_embed.weight" in names:
        return "a4g"
    if "x_embedder.proj.weight" in names:
        return "latte" if names & {"temp_embed", "time_embed"} else "dit"
    raise WeightsError(
        f"init weights: cannot tell the layout from keys like {sorted(names)[:5]}; "
        "expected DiT (x_embedder.proj), Latte (+ temp_embed) or a4g (patch_embed) weights"
    )


def _map_key(key: str, layout: str, depth: int, dit_blocks: DitBlocks) -> tuple[str | None, str]:
    """Checkpoint key → (a4g key, "") or (None, why not)."""
    if layout == "a4g":
        if key.startswith("projector."):
            return None, "alignment projector of an a4g run, not part of the V-DiT"
        return key.removeprefix("model."), ""
    if key in _FIXED:
        return None, f"fixed sin-cos {_FIXED[key]}; a4g computes it for its own grid"
    for prefix, reason in _LATTE_ONLY.items():
        if key.startswith(prefix):
            return None, reason
    for src, dst in _STEM.items():
        if key.startswith(src):
            return dst + key[len(src) :], ""
    match = _BLOCK_KEY.match(key)
    if match is None or match.group(2) not in _BLOCK_PARTS:
        return None, f"no a4g counterpart for this {layout} key"
    n = int(match.group(1))
    spatial_only = layout == "dit" and dit_blocks == "spatial"
    target = 2 * n if spatial_only else n  # a4g blocks alternate: even = spatial, odd = temporal
    if target >= depth:
        have = f"{(depth + 1) // 2} spatial blocks" if spatial_only else f"{depth} blocks"
        return None, f"the a4g model has {have}; no slot for {layout} block {n}"
    return f"blocks.{target}.{match.group(2)}", ""


def _shape_reason(target: str, src: torch.Size, dst: torch.Size, patch: int) -> str:
    """Why a tensor does not fit, in the terms a person changes (classes, learn_sigma, width)."""
    base = f"shape {list(src)} in the checkpoint vs {list(dst)} in the model"
    if target == "y_embedder.table.weight":
        return f"{base}: class count differs ({src[0]} vs {dst[0]} rows, each with the null class row)"
    if target.startswith("final_layer.linear."):
        c_src, c_dst = src[0] // patch**2, dst[0] // patch**2
        return f"{base}: {c_src} vs {c_dst} output channels (learn_sigma doubles them)"
    if target.startswith("patch_embed."):
        return f"{base}: latent channels or patch size differ"
    return f"{base}: model width differs"


def _check_fixed(key: str, value: Tensor, model: nn.Module) -> str:
    """Reason for skipping a fixed embedding, saying whether a4g's own one has the same values."""
    ours = getattr(model, _FIXED[key], None)
    if ours is None:
        return "fixed sin-cos embedding; the model has none"
    src, dst = value.reshape(-1, value.shape[-1]).float(), ours.reshape(-1, ours.shape[-1]).float().cpu()
    if src.shape != dst.shape:
        return f"fixed sin-cos {_FIXED[key]} for {src.shape[0]} positions; a4g computes its own for {dst.shape[0]}"
    diff = (src - dst).abs().max().item()
    if diff > 1e-5:  # float32 rounding of the same float64 values stays far below this
        return f"fixed sin-cos {_FIXED[key]} differs from a4g's by up to {diff:.3g} (not MAE channel order?)"
    return f"fixed sin-cos {_FIXED[key]}; a4g's equals it (max |diff| {diff:.1g})"


def load_init(
    model: nn.Module,
    state_dict_or_path: Mapping[str, Tensor] | str | Path,
    layout: Layout = "auto",
    dit_blocks: DitBlocks = "spatial",
) -> InitReport:
    """Copy DiT / Latte / a4g weights into a V-DiT ``model`` in place and report what happened.

    Args:
        model: a :class:`a4g.train.model.VDiT` (freshly initialized: what is not loaded stays so).
        state_dict_or_path: a state dict (possibly nested, ``{"ema": ...}``) or a file / a4g
            checkpoint directory, read by :func:`read_weights`.
        layout: ``auto`` tells DiT, Latte and a4g weights apart by their key names.
        dit_blocks: ``spatial`` (DiT block n → spatial block n) or ``by_index`` (DiT block n →
            block n, Latte's name match); only for ``layout="dit"``.

    Returns:
        An :class:`InitReport`; shape mismatches and keys without a counterpart are skipped with the
        reason, never an error.
    """
    if layout not in LAYOUTS:
        raise WeightsError(f"init layout {layout!r} is unknown; choose one of {list(LAYOUTS)}")
    if isinstance(state_dict_or_path, (str, Path)):
        state = read_weights(state_dict_or_path)
    else:
        state = unwrap_state_dict(state_dict_or_path)
    resolved = detect_layout(list(state)) if layout == "auto" else layout
    ours = model.state_dict()
    patch = getattr(model, "patch_size", 1)
    mapped: dict[str, Tensor] = {}
    skipped: list[tuple[str, str]] = []
    for key, value in state.items():
        target, reason = _map_key(key, resolved, len(getattr(model, "blocks", ())), dit_blocks)
        if target is None:
            skipped.append((key, _check_fixed(key, value, model) if key in _FIXED else reason))
        elif target not in ours:
            skipped.append((key, f"the a4g model has no {target} (e.g. unconditional: no class table)"))
        elif value.shape != ours[target].shape:
            skipped.append((key, _shape_reason(target, value.shape, ours[target].shape, patch)))
        else:
            mapped[target] = value
    with torch.no_grad():
        model.load_state_dict(mapped, strict=False)
    return InitReport(
        loaded=sorted(mapped), skipped=skipped, new=[k for k in ours if k not in mapped], layout=resolved
    )
