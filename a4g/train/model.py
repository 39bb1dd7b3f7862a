"""Latte-style video DiT (V-DiT): alternating spatial / temporal transformer blocks with adaLN-Zero.

Input latents are ``[B, F, C, h, w]`` (frames second). Each frame is patchified (patch
``a4g.geometry.PATCH_SIZE`` = 2) into ``N = (h/2)*(w/2)`` tokens, so the residual stream is
``[B, F, N, D]`` throughout. Blocks alternate, spatial first: a *spatial* block attends over the N
tokens of one frame, a *temporal* block over the F frames at one token position. Both are done by
reshaping frames or tokens into the batch, never by looping in Python, so the model stays
``torch.compile``-friendly and hits the SDPA flash path (split only past ``SDPA_MAX_BATCH``).

"Depth" counts every block, spatial and temporal alike: Latte-XL's 28 blocks are 14 spatial + 14
temporal. ``align_depth`` uses the same 1-based count (odd = after a spatial block, even = after a
temporal block).

The fixed position embeddings follow DiT/Latte (MAE's ``get_2d_sincos_pos_embed``) channel for
channel, so DiT and Latte weights load as they are (``a4g.train.init_from``): the *first* half of the
channels encodes the column (w) index, the second half the row (h) index. ``learn_sigma`` adds DiT's
variance head: the output has ``2C`` channels, ε first, then the variance interpolation value v.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from a4g.geometry import PATCH_SIZE

SDPA_MAX_BATCH = 65_535
"""Most sequences one SDPA call is given; :class:`Attention` splits a larger batch into calls this big.

CUDA's flash and memory-efficient SDPA kernels put the batch on a grid axis of at most 2**16 - 1
blocks and fail past it with "CUDA error: invalid configuration argument" (pytorch/pytorch#146704).
The temporal blocks fold batch x token positions into the batch: sampling 128 videos at 256 px with
classifier-free guidance is 128 x 2 x 256 = 65,536 sequences, one too many.
"""


@dataclass(frozen=True)
class Arch:
    """Transformer size; ``depth`` counts spatial and temporal blocks separately."""

    depth: int
    embed_dim: int
    num_heads: int


_ARCHS: dict[str, Arch] = {
    "VDiT-tiny": Arch(depth=4, embed_dim=64, num_heads=2),
    "VDiT-S": Arch(depth=12, embed_dim=384, num_heads=6),
    "VDiT-B": Arch(depth=12, embed_dim=768, num_heads=12),
    "VDiT-L": Arch(depth=24, embed_dim=1024, num_heads=16),
    "VDiT-XL": Arch(depth=28, embed_dim=1152, num_heads=16),
}


def list_models() -> list[str]:
    """Registered model names, smallest first."""
    return list(_ARCHS)


def resolve_model_name(name: str) -> str:
    """The registered name for `name` (``XL`` is short for ``VDiT-XL``), naming the choices when unknown."""
    for candidate in (name, f"VDiT-{name}"):
        if candidate in _ARCHS:
            return candidate
    raise ValueError(f"unknown model {name!r}; choose one of {list_models()}")


def get_arch(name: str) -> Arch:
    """Look up a registered size by name or short name."""
    return _ARCHS[resolve_model_name(name)]


def default_align_depth(name: str) -> int:
    """Block after which tokens are aligned by default.

    Align4Gen / REPA align after block 8 of the 28-block XL model; smaller models keep the same
    relative position, ``max(1, round(8 * depth / 28))``: XL 8, L 7, B/S 3, tiny 1.
    """
    return max(1, round(8 * get_arch(name).depth / 28))


# ---------------------------------------------------------------------------- fixed embeddings


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """Fixed sin-cos embedding ``[len(positions), dim]`` in float64: ``[sin | cos]``, base 10000.

    Channel for channel MAE's ``get_1d_sincos_pos_embed_from_grid``, which Latte's temporal
    embedding (``get_1d_sincos_temp_embed``) is.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2D sin-cos embedding ``[grid_h*grid_w, dim]`` in float64, tokens row-major.

    MAE/DiT/Latte channel order: MAE builds ``np.meshgrid(grid_w, grid_h)``, whose first plane is
    the *column* index, and embeds that plane in the first half. So channels ``[:dim/2]`` encode the
    column (w) and ``[dim/2:]`` the row (h); the reverse would leave a DiT/Latte checkpoint's
    attention seeing every token grid transposed.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=1)


# ---------------------------------------------------------------------------- conditioning


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the (float) timestep followed by a 2-layer MLP, as in DiT.

    Timesteps are on the DDPM scale ``[0, 1000)``; objectives with continuous time rescale to it.
    """

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]  # float32 features as DiT, whatever the model dtype
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding with one extra *null* row (index ``num_classes``) for classifier-free guidance.

    In training, labels are replaced by the null class with probability ``dropout_prob`` so the same
    network also learns the unconditional model.
    """

    def __init__(self, num_classes: int, dim: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: Tensor) -> Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(y.shape, device=y.device) < self.dropout_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.table(y)


# ---------------------------------------------------------------------------- blocks


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis via SDPA (flash / memory-efficient)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``, each of the B sequences attending over its own N tokens."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if b <= SDPA_MAX_BATCH:
            x = F.scaled_dot_product_attention(q, k, v)
        else:  # sequences are independent, so chunks of the batch give the rows one call would
            chunks = zip(
                q.split(SDPA_MAX_BATCH), k.split(SDPA_MAX_BATCH), v.split(SDPA_MAX_BATCH), strict=True
            )
            x = torch.cat([F.scaled_dot_product_attention(*qkv) for qkv in chunks])
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class VDiTBlock(nn.Module):
    """adaLN-Zero transformer block attending over tokens (spatial) or over frames (temporal).

    Works on ``[B, F, N, D]``; the attended axis is folded so the other one goes into the batch.
    """

    def __init__(self, dim: int, num_heads: int, temporal: bool, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=partial(nn.GELU, approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def _attend(self, x: Tensor) -> Tensor:
        if self.temporal:
            x = x.transpose(1, 2)  # [B, N, F, D]: one sequence of frames per token position
        y = self.attn(x.reshape(-1, x.shape[2], x.shape[3])).reshape(x.shape)
        return y.transpose(1, 2) if self.temporal else y

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        mod = self.adaLN_modulation(c)[:, None, None, :]  # broadcast over frames and tokens
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        x = x + gate1 * self._attend(modulate(self.norm1(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + linear map from tokens back to ``patch*patch*C`` values."""

    def __init__(self, dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None, None, :].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


# ---------------------------------------------------------------------------- model


class VDiT(nn.Module):
    """Latte-style video DiT predicting a tensor shaped like its input (ε or velocity).

    ``num_classes=0`` gives an unconditional model; otherwise class ``num_classes`` is the null class
    used for classifier-free guidance. ``learn_sigma=True`` doubles the output channels as DiT/Latte:
    ``[B, F, 2C, h, w]`` = ε in ``[:, :, :C]`` and the variance interpolation value v in ``[:, :, C:]``
    (see ``DDPM(learn_sigma=True)``).
    """

    def __init__(
        self,
        *,
        input_size: int | tuple[int, int],
        in_channels: int,
        num_frames: int,
        depth: int,
        embed_dim: int,
        num_heads: int,
        num_classes: int = 0,
        class_dropout_prob: float = 0.1,
        patch_size: int = PATCH_SIZE,
        mlp_ratio: float = 4.0,
        learn_sigma: bool = False,
    ) -> None:
        super().__init__()
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        if height % patch_size or width % patch_size:
            raise ValueError(f"latent size {height}x{width} is not divisible by patch {patch_size}")
        if depth < 2:
            raise ValueError("a V-DiT needs at least one spatial and one temporal block (depth >= 2)")
        self.input_size = (height, width)
        self.in_channels = in_channels
        self.learn_sigma = learn_sigma
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.num_frames = num_frames
        self.depth = depth
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.grid_size = (height // patch_size, width // patch_size)
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.grad_checkpointing = False

        self.patch_embed = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        # Computed in float64 and rounded once, as DiT/Latte do (numpy float64 → float32 parameter).
        pos_embed = sincos_2d(embed_dim, *self.grid_size).float()
        temp_embed = sincos_1d(embed_dim, torch.arange(num_frames))[:, None, :].float()
        self.register_buffer("pos_embed", pos_embed, persistent=False)  # [N, D]
        self.register_buffer("temp_embed", temp_embed, persistent=False)  # [F, 1, D]
        self.t_embedder = TimestepEmbedder(embed_dim)
        self.y_embedder = LabelEmbedder(num_classes, embed_dim, class_dropout_prob) if num_classes else None
        self.blocks = nn.ModuleList(
            VDiTBlock(embed_dim, num_heads, temporal=i % 2 == 1, mlp_ratio=mlp_ratio) for i in range(depth)
        )
        self.final_layer = FinalLayer(embed_dim, patch_size, self.out_channels)
        self.initialize_weights()

    @property
    def null_class(self) -> int:
        """Label meaning "no class" (classifier-free guidance); only for conditional models."""
        if self.y_embedder is None:
            raise AttributeError("unconditional model (num_classes=0) has no null class")
        return self.num_classes

    def initialize_weights(self) -> None:
        """DiT init: Xavier linears, N(0, 0.02) embeddings, zeroed adaLN and output (block = identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.table.weight, std=0.02)
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for mod in [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1]]:
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (timm's name), trading compute for memory."""
        self.grad_checkpointing = enable

    def unpatchify(self, x: Tensor) -> Tensor:
        """``[B, F, N, p*p*C_out]`` → ``[B, F, C_out, h, w]`` (channel fastest per patch, as DiT)."""
        b, f = x.shape[:2]
        (gh, gw), p, c = self.grid_size, self.patch_size, self.out_channels
        x = x.reshape(b, f, gh, gw, p, p, c).permute(0, 1, 6, 2, 4, 3, 5)
        return x.reshape(b, f, c, gh * p, gw * p)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, align_depth: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Predict from noisy latents.

        Args:
            x: ``[B, F, C, h, w]`` noisy latents, ``F <= num_frames``.
            t: ``[B]`` timesteps on the ``[0, 1000)`` scale (float allowed).
            y: ``[B]`` class labels (``null_class`` = unconditional); must be None iff ``num_classes=0``.
            align_depth: 1-based block count (spatial and temporal counted separately) whose output
                tokens are also returned, for the alignment loss.

        Returns:
            ``(out, hidden)``: ``out`` shaped like ``x`` (``[B, F, 2C, h, w]`` with ``learn_sigma``: ε
            then v); ``hidden`` the ``[B, F, N, D]`` residual stream
            after block ``align_depth`` (``N = (h/2)*(w/2)`` row-major), or None when not asked for.
        """
        b, f, c, h, w = x.shape
        if (h, w) != self.input_size or c != self.in_channels:
            raise ValueError(f"expected latents [B, F, {self.in_channels}, {self.input_size}], got {x.shape}")
        if f > self.num_frames:
            raise ValueError(f"{f} frames exceed the model's num_frames={self.num_frames}")
        if align_depth is not None and not 1 <= align_depth <= self.depth:
            raise ValueError(f"align_depth must be in [1, {self.depth}], got {align_depth}")
        if (y is None) != (self.y_embedder is None):
            raise ValueError("pass labels y exactly when the model is class-conditional (num_classes > 0)")

        tokens = self.patch_embed(x.reshape(b * f, c, h, w)).flatten(2).transpose(1, 2)
        x = tokens.reshape(b, f, self.num_tokens, self.embed_dim) + self.pos_embed
        cond = self.t_embedder(t.expand(b) if t.ndim == 0 else t)
        if self.y_embedder is not None:
            cond = cond + self.y_embedder(y)

        hidden = None
        for i, block in enumerate(self.blocks):
            if i == 1:  # as Latte: frame positions enter just before the first temporal block
                x = x + self.temp_embed[:f]
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, cond, use_reentrant=False)
            else:
                x = block(x, cond)
            if i + 1 == align_depth:
                hidden = x
        return self.unpatchify(self.final_layer(x, cond)), hidden


def create_model(
    name: str,
    *,
    input_size: int | tuple[int, int],
    in_channels: int,
    num_frames: int,
    num_classes: int = 0,
    class_dropout_prob: float = 0.1,
    patch_size: int = PATCH_SIZE,
    grad_checkpointing: bool = False,
    learn_sigma: bool = False,
) -> VDiT:
    """Build a registered V-DiT size (see ``list_models()``) for the given latent geometry."""
    arch = get_arch(name)
    model = VDiT(
        input_size=input_size,
        in_channels=in_channels,
        num_frames=num_frames,
        depth=arch.depth,
        embed_dim=arch.embed_dim,
        num_heads=arch.num_heads,
        num_classes=num_classes,
        class_dropout_prob=class_dropout_prob,
        patch_size=patch_size,
        learn_sigma=learn_sigma,
    )
    model.set_grad_checkpointing(grad_checkpointing)
    return model
