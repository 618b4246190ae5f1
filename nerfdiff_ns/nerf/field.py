"""Decoder field: triplane feature -> (density, rgb).

The MLP runs on tiny-cuda-nn's fused kernels when ``tinycudann`` imports and the device is CUDA,
and on plain torch otherwise (the same config; one line says which). tcnn and torch weights are
laid out differently, so the implementation in use is recorded with the weights.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import nn

MLPImplementation = Literal["auto", "tcnn", "torch"]


@functools.lru_cache(maxsize=1)
def tcnn_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a build for another CUDA/driver
        return False
    return torch.cuda.is_available()


def resolve_implementation(requested: MLPImplementation, device: torch.device | str) -> Literal["tcnn", "torch"]:
    """Pick the MLP backend, printing the reason once when falling back to torch."""
    on_cuda = torch.device(device).type == "cuda"
    if requested == "torch":
        return "torch"
    if on_cuda and tcnn_available():
        return "tcnn"
    if requested == "tcnn" or on_cuda:
        reason = "the device is not CUDA" if not on_cuda else "tinycudann is not installed"
        _print_fallback(reason)
    return "torch"


@functools.lru_cache(maxsize=None)
def _print_fallback(reason: str) -> None:
    print(f"[nerfdiff] tiny-cuda-nn MLP unavailable ({reason}); using the torch MLP (same maths, slower).")


def _torch_mlp(in_dim: int, hidden: int, num_layers: int, out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class _TcnnMLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, num_layers: int, out_dim: int) -> None:
        super().__init__()
        import tinycudann as tcnn

        self.net = tcnn.Network(
            n_input_dims=in_dim,
            n_output_dims=out_dim,
            network_config={
                "otype": "FullyFusedMLP" if hidden in (16, 32, 64, 128) else "CutlassMLP",
                "activation": "ReLU", "output_activation": "None",
                "n_neurons": hidden, "n_hidden_layers": num_layers - 1,
            },
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).float()


class TriplaneField(nn.Module):
    """MLP decoder; density through ``softplus`` (smooth, never explodes), colour through sigmoid."""

    def __init__(
        self, in_dim: int, hidden: int, num_layers: int, implementation: Literal["tcnn", "torch"], density_bias: float = -1.0
    ) -> None:
        super().__init__()
        self.implementation = implementation
        self.density_bias = density_bias
        self.mlp = (_TcnnMLP if implementation == "tcnn" else _torch_mlp)(in_dim, hidden, num_layers, 4)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., F]`` features -> density ``[...]``, rgb ``[..., 3]``."""
        shape = features.shape[:-1]
        raw = self.mlp(features.reshape(-1, features.shape[-1])).view(*shape, 4)
        density = nn.functional.softplus(raw[..., 0] + self.density_bias) * 10.0
        rgb = torch.sigmoid(raw[..., 1:])
        return density, rgb
