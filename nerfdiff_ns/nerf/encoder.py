"""Image encoders: input view ``[B, 3, H, W]`` -> triplane ``[B, 3, C, S, S]``.

The default is a small 2D U-Net written here: diffusers' U-Nets are built around a timestep
embedding that an image encoder has no use for, and the encoder has to stay tiny on the CPU.
The ViT/DINOv2 option comes from ``transformers`` and is built from a config; pretrained weights
are read only from a local folder the user names (never downloaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EncoderConfig:
    """Architecture of the image -> triplane encoder (saved in the bundle's config.json)."""

    kind: Literal["unet", "vit", "dinov2"] = "unet"
    """Backbone: the built-in U-Net, or a transformers ViT / DINOv2."""
    channels: tuple[int, ...] = (32, 64, 128)
    """U-Net widths per level (each level halves the resolution)."""
    vit_hidden_size: int = 192
    """ViT/DINOv2 token width when built from scratch."""
    vit_layers: int = 6
    """ViT/DINOv2 depth when built from scratch."""
    vit_patch_size: int = 8
    """ViT/DINOv2 patch size."""
    pretrained_path: str | None = None
    """Local folder with transformers weights for the ViT/DINOv2 backbone (never downloaded)."""


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1), _norm(c_out), nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1), _norm(c_out), nn.SiLU(),
        )


class UNetEncoder(nn.Module):
    """Plain U-Net; the head emits ``3 * C`` channels that become the three planes."""

    def __init__(self, channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        self.stem = ConvBlock(3, channels[0])
        self.down = nn.ModuleList(ConvBlock(a, b) for a, b in zip(channels[:-1], channels[1:]))
        self.up = nn.ModuleList(ConvBlock(b + a, a) for a, b in zip(channels[:-1], channels[1:]))
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        skips = [x]
        for block in self.down:
            x = block(F.avg_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


class TransformerEncoder(nn.Module):
    """transformers ViT / DINOv2 backbone + a conv head that turns patch tokens into planes."""

    def __init__(self, config: EncoderConfig, image_size: int, out_channels: int) -> None:
        super().__init__()
        import transformers  # optional dependency, imported only when chosen

        if config.kind == "dinov2":
            cfg_cls, model_cls = transformers.Dinov2Config, transformers.Dinov2Model
        else:
            cfg_cls, model_cls = transformers.ViTConfig, transformers.ViTModel
        if config.pretrained_path:
            self.backbone = model_cls.from_pretrained(config.pretrained_path, local_files_only=True)
        else:
            cfg = cfg_cls(
                image_size=image_size, patch_size=config.vit_patch_size, hidden_size=config.vit_hidden_size,
                num_hidden_layers=config.vit_layers, num_attention_heads=max(1, config.vit_hidden_size // 64),
                intermediate_size=4 * config.vit_hidden_size,
            )
            self.backbone = model_cls(cfg)
        hidden = self.backbone.config.hidden_size
        self.patch_size = self.backbone.config.patch_size
        self.head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, out_channels, 1))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        out = self.backbone(pixel_values=(image - self.mean) / self.std, interpolate_pos_encoding=True)
        tokens = out.last_hidden_state[:, 1:]  # drop CLS
        gh, gw = height // self.patch_size, width // self.patch_size
        tokens = tokens[:, : gh * gw].transpose(1, 2).reshape(image.shape[0], -1, gh, gw)
        return self.head(tokens)


class TriplaneEncoder(nn.Module):
    """Image ``[B, 3, H, W]`` in [0, 1] -> triplane ``[B, 3, C, S, S]``."""

    def __init__(self, config: EncoderConfig, image_size: int, triplane_channels: int, triplane_resolution: int) -> None:
        super().__init__()
        self.triplane_channels = triplane_channels
        self.triplane_resolution = triplane_resolution
        out_channels = 3 * triplane_channels
        if config.kind == "unet":
            self.backbone: nn.Module = UNetEncoder(tuple(config.channels), out_channels)
        elif config.kind in ("vit", "dinov2"):
            self.backbone = TransformerEncoder(config, image_size, out_channels)
        else:
            raise ValueError(f"unknown encoder kind {config.kind!r}: use 'unet', 'vit' or 'dinov2'")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(image * 2.0 - 1.0 if isinstance(self.backbone, UNetEncoder) else image)
        size = self.triplane_resolution
        if feats.shape[-1] != size or feats.shape[-2] != size:
            feats = F.interpolate(feats, size=(size, size), mode="bilinear", align_corners=False)
        return feats.view(image.shape[0], 3, self.triplane_channels, size, size)
