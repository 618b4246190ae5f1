"""Image encoders: input view ``[B, 3, H, W]`` -> triplane ``[B, 3, C, S, S]``.

The default is a small 2D U-Net written here: diffusers' U-Nets are built around a timestep
embedding that an image encoder has no use for, and the encoder has to stay tiny on the CPU.
The ViT/DINOv2 option comes from ``transformers`` and is built from a config; pretrained weights
are read only from a local folder the user names (never downloaded). A bundle stores the backbone's
own transformers config (``backbone_config``), so loading it never needs that folder again.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nerfdiff_ns.errors import FlagError


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
    backbone_config: str | None = None
    """The ViT/DINOv2 backbone's transformers config as JSON. Written by bundle export so a bundle rebuilds
    its backbone without the pretrained folder (the weights are in the bundle); leave unset."""


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
        if config.backbone_config:
            self.backbone = model_cls(cfg_cls.from_dict(json.loads(config.backbone_config)))
        elif config.pretrained_path:
            folder = pretrained_folder(config.pretrained_path, config.kind)
            self.backbone = model_cls.from_pretrained(str(folder), local_files_only=True)
        else:
            cfg = cfg_cls(
                image_size=image_size, patch_size=config.vit_patch_size, hidden_size=config.vit_hidden_size,
                num_hidden_layers=config.vit_layers, num_attention_heads=max(1, config.vit_hidden_size // 64),
                intermediate_size=4 * config.vit_hidden_size,
            )
            self.backbone = model_cls(cfg)
        # Parameters the forward never uses (ViT's pooler over CLS, DINOv2's mask token for masked
        # training) get no gradient; DDP refuses a step with such parameters, so they are frozen.
        for name, param in self.backbone.named_parameters():
            if name.startswith("pooler.") or name == "embeddings.mask_token":
                param.requires_grad_(False)
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


PRETRAINED_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                           "pytorch_model.bin.index.json")


def pretrained_folder(path: str, kind: str) -> Path:
    """Check that ``path`` is a local transformers folder of the right model type, before transformers reads it
    (for a missing folder it would otherwise treat the path as a Hub repo id and fail with a download message).
    Every refusal is a ``FlagError``, so the CLIs print it as one paragraph, without a traceback."""
    folder = Path(path).expanduser()
    model = "Dinov2Model" if kind == "dinov2" else "ViTModel"
    fix = (f"save one with transformers' `{model}.save_pretrained(folder)`, or download it on a machine with internet "
           f"(e.g. `hf download facebook/dinov2-small --local-dir FOLDER`) and copy it here: weights are never downloaded "
           "at run time. Or drop --nerf.encoder.pretrained-path to train the backbone from scratch.")
    if not folder.is_dir():
        raise FlagError(f"--nerf.encoder.pretrained-path {folder}: no such folder. Give a local folder with "
                        f"config.json and model.safetensors; {fix}")
    if not (folder / "config.json").is_file():
        raise FlagError(f"{folder / 'config.json'} is missing: {folder} is not a transformers model folder; {fix}")
    if not any((folder / name).is_file() for name in PRETRAINED_WEIGHT_FILES):
        raise FlagError(f"{folder} has config.json but no weights (none of {', '.join(PRETRAINED_WEIGHT_FILES)}); {fix}")
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise FlagError(f"{folder / 'config.json'} is not a transformers config ({err}); {fix}") from err
    if model_type != kind:
        other = (f"set --nerf.encoder.kind {model_type}" if model_type in ("vit", "dinov2")
                 else "only 'vit' and 'dinov2' models are supported")
        raise FlagError(f"{folder} holds a {model_type!r} model but --nerf.encoder.kind is {kind!r}: {other}, or point "
                        f"to a {kind} folder.")
    return folder


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

    def bundle_config(self, config: EncoderConfig) -> EncoderConfig:
        """``config`` as a bundle stores it: for ViT/DINOv2 with the backbone's transformers config, so the
        bundle loads without the pretrained folder it may have started from."""
        if isinstance(self.backbone, TransformerEncoder):
            return dataclasses.replace(config, backbone_config=json.dumps(json.loads(self.backbone.backbone.config.to_json_string(use_diff=False))))
        return config
