"""The 3D-aware conditional diffusion model (CDM) of NerfDiff (DESIGN §1.2).

A `diffusers.UNet2DModel` that denoises a target view `x_t` given two image conditions that are
concatenated as extra input channels:

* the NeRF's rendering of that same target view (what makes the CDM "3D-aware"), optionally with
  extra pixel-aligned channels rendered from the NeRF (depth, opacity: `condition_kinds`, see
  `cdm.conditions`), and
* the input image `I_s`,

plus, optionally, the relative camera source -> target fed through a small MLP into the UNet's
class embedding (added to the time embedding).

Image range: every image tensor that enters or leaves this package (`nerfdiff_ns.cdm`) is in
[-1, 1], shape [B, 3, H, W]. The rest of the project keeps images in [0, 1]; convert at the
boundary with `to_diffusion_range` / `from_diffusion_range` (below). The model never rescales.

Classifier-free guidance: a dropped sample sees the *null condition* = zeros for the render, the
source image and the relative camera. `null_conditions` is the one place that builds it, used by
training (`drop_conditions`) and by sampling (`predict_with_cfg`) alike.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

IMAGE_CHANNELS = 3
CONDITION_CHANNELS = 2 * IMAGE_CHANNELS  # nerf render + source image
RELATIVE_CAMERA_DIM = 12  # flattened 3x4 relative pose source -> target


def to_diffusion_range(images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] project images -> [-1, 1] diffusion images (the only scaling in the project)."""
    return images01 * 2.0 - 1.0


def from_diffusion_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] diffusion images -> [0, 1] project images (clamped, ready for losses/metrics)."""
    return ((images + 1.0) * 0.5).clamp(0.0, 1.0)


def relative_camera(source_c2w: torch.Tensor, target_c2w: torch.Tensor) -> torch.Tensor:
    """Target camera expressed in the source camera's frame, flattened to 12 numbers.

    `inv(source_c2w) @ target_c2w` keeps the top 3x4 block, [..., 4, 4] -> [..., 12]. This is the
    natural pose for a camera-space NeRF (DESIGN §1.1): the input camera is the world.
    """
    rel = torch.linalg.inv(source_c2w.float()) @ target_c2w.float()
    return rel[..., :3, :4].reshape(*rel.shape[:-2], RELATIVE_CAMERA_DIM)


def block_types_from_attention(attention_levels: Sequence[bool]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """Map "attention at resolution level i" flags to diffusers down/up block names."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
    return down, up


def resize_to(images: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [B, C, h, w] to `size` (anti-aliased when shrinking); no-op if equal."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrinking = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


class ConditionalDiffusionModel(ModelMixin, ConfigMixin):
    """UNet2DModel on [x_t | NeRF render (+ extra conditions) | source image] (9 + E channels) -> 3-channel prediction.

    `prediction_type` ("epsilon" or "v_prediction") says what the output means; the schedule and
    guidance code read it from `model.config.prediction_type`.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        block_out_channels: Sequence[int] = (32, 64, 64),
        layers_per_block: int = 2,
        attention_levels: Optional[Sequence[bool]] = None,
        down_block_types: Optional[Sequence[str]] = None,
        up_block_types: Optional[Sequence[str]] = None,
        attention_head_dim: int = 8,
        norm_num_groups: Optional[int] = None,
        dropout: float = 0.0,
        prediction_type: str = "epsilon",
        camera_embedding_dim: int = 0,
        condition_dropout_prob: float = 0.1,
        condition_kinds: Sequence[str] = (),
        feature_condition_channels: int = 0,
    ) -> None:
        """Build the UNet.

        Blocks: give `down_block_types`/`up_block_types` (diffusers names) or `attention_levels`
        (one bool per level; default: attention only at the coarsest level).
        `norm_num_groups=None` picks the largest of 32, 16, 8, ... dividing every channel count,
        so tiny test models (8, 16) work. `camera_embedding_dim=0` disables the camera input.
        `condition_kinds` names the extra channels the render condition carries after its RGB (recorded in
        the config, so a bundle says which conditions its CDM expects); `feature_condition_channels` is
        the NeRF feature width F of the 'features' condition (0 without it).
        """
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        if not 0.0 <= condition_dropout_prob < 1.0:
            raise ValueError(f"condition_dropout_prob must be in [0, 1), got {condition_dropout_prob}")
        from .conditions import extra_condition_channels

        if feature_condition_channels and "features" not in condition_kinds:
            raise ValueError(f"feature_condition_channels={feature_condition_channels} without the 'features' condition")
        self.extra_condition_channels = extra_condition_channels(condition_kinds, int(feature_condition_channels))
        channels = tuple(int(c) for c in block_out_channels)
        if down_block_types is None or up_block_types is None:
            levels = (
                tuple(bool(a) for a in attention_levels)
                if attention_levels is not None
                else tuple(i == len(channels) - 1 for i in range(len(channels)))
            )
            if len(levels) != len(channels):
                raise ValueError(f"attention_levels has {len(levels)} entries, block_out_channels {len(channels)}")
            down_block_types, up_block_types = block_types_from_attention(levels)
        if norm_num_groups is None:
            norm_num_groups = math.gcd(32, *channels)

        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=IMAGE_CHANNELS + CONDITION_CHANNELS + self.extra_condition_channels,
            out_channels=IMAGE_CHANNELS,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            block_out_channels=channels,
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            dropout=dropout,
            class_embed_type="identity" if camera_embedding_dim > 0 else None,
        )
        self.camera_mlp: Optional[nn.Module] = None
        if camera_embedding_dim > 0:
            time_embed_dim = channels[0] * 4  # UNet2DModel's default time-embedding width
            self.camera_mlp = nn.Sequential(
                nn.Linear(RELATIVE_CAMERA_DIM, camera_embedding_dim),
                nn.SiLU(),
                nn.Linear(camera_embedding_dim, time_embed_dim),
            )

    @staticmethod
    def null_conditions(
        nerf_render: torch.Tensor,
        source_image: torch.Tensor,
        relative_camera: Optional[torch.Tensor],
        drop: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Replace the conditions of samples where `drop` [B] is True by the null (zeros)."""
        keep = (~drop).to(nerf_render.dtype)
        nerf_render = nerf_render * keep.view(-1, 1, 1, 1)
        source_image = source_image * keep.view(-1, 1, 1, 1).to(source_image.dtype)
        if relative_camera is not None:
            relative_camera = relative_camera * keep.view(-1, 1).to(relative_camera.dtype)
        return nerf_render, source_image, relative_camera

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: Union[torch.Tensor, int],
        nerf_render: torch.Tensor,
        source_image: torch.Tensor,
        relative_camera: Optional[torch.Tensor] = None,
        drop_conditions: Optional[Union[torch.Tensor, bool]] = None,
    ) -> torch.Tensor:
        """Predict eps (or v) for `noisy` [B,3,H,W] at integer `timesteps` ([B] or scalar).

        `nerf_render` [B,3+E,h,w] (RGB, then the E channels of the extra conditions) and
        `source_image` [B,3,h,w] (any h,w, range [-1,1]) are bilinearly resized to H,W. `relative_camera` [B,12] is required iff `camera_embedding_dim > 0`.
        `drop_conditions` [B] bool (or one bool) selects samples that get the null condition.
        """
        batch, size = noisy.shape[0], tuple(noisy.shape[-2:])
        dtype = self.dtype
        render = resize_to(nerf_render.to(dtype), size)
        source = resize_to(source_image.to(dtype), size)
        expected = IMAGE_CHANNELS + self.extra_condition_channels
        if render.shape[1] != expected:
            raise ValueError(
                f"this CDM expects a {expected}-channel render condition (RGB + {list(self.config.condition_kinds)}), "
                f"got {render.shape[1]} channels: build it with nerfdiff_ns.cdm.conditions"
            )
        if render.shape[0] != batch or source.shape[0] != batch:
            raise ValueError(
                f"batch mismatch: noisy {batch}, nerf_render {render.shape[0]}, source_image {source.shape[0]}"
            )
        camera = None
        if self.camera_mlp is not None:
            if relative_camera is None:
                raise ValueError("this CDM has camera_embedding_dim > 0: pass relative_camera [B, 12]")
            camera = relative_camera.to(device=noisy.device, dtype=dtype).reshape(batch, RELATIVE_CAMERA_DIM)
        if drop_conditions is not None:
            drop = torch.as_tensor(drop_conditions, device=noisy.device, dtype=torch.bool)
            drop = drop.expand(batch) if drop.dim() == 0 else drop
            render, source, camera = self.null_conditions(render, source, camera, drop)

        timesteps = torch.as_tensor(timesteps, device=noisy.device).reshape(-1)
        if timesteps.numel() == 1:
            timesteps = timesteps.expand(batch)

        x = torch.cat([noisy.to(dtype), render, source], dim=1)
        class_emb = self.camera_mlp(camera) if camera is not None else None
        return self.unet(x, timesteps, class_labels=class_emb).sample

    def sample_drop_mask(self, batch: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Bernoulli(`condition_dropout_prob`) mask [B] for classifier-free-guidance training."""
        p = float(self.config.condition_dropout_prob)
        device = generator.device if generator is not None else self.device
        mask = torch.rand(batch, generator=generator, device=device) < p
        return mask.to(self.device)

    def predict_with_cfg(
        self,
        noisy: torch.Tensor,
        timesteps: Union[torch.Tensor, int],
        nerf_render: torch.Tensor,
        source_image: torch.Tensor,
        relative_camera: Optional[torch.Tensor] = None,
        cfg_scale: float = 1.0,
    ) -> torch.Tensor:
        """Classifier-free-guided prediction `uncond + s * (cond - uncond)`.

        cond and uncond run as one batched forward of 2B samples; `cfg_scale == 1` runs the
        conditional forward alone (the result is then exactly the conditional prediction).
        """
        if cfg_scale == 1.0:
            return self(noisy, timesteps, nerf_render, source_image, relative_camera)
        batch = noisy.shape[0]
        if torch.is_tensor(timesteps) and timesteps.numel() > 1:
            timesteps2 = torch.cat([timesteps, timesteps])
        else:
            timesteps2 = timesteps
        drop = torch.cat(
            [torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)]
        ).to(noisy.device)
        both = self(
            torch.cat([noisy, noisy]),
            timesteps2,
            torch.cat([nerf_render, nerf_render]),
            torch.cat([source_image, source_image]),
            torch.cat([relative_camera, relative_camera]) if relative_camera is not None else None,
            drop_conditions=drop,
        )
        cond, uncond = both[:batch], both[batch:]
        return uncond + cfg_scale * (cond - uncond)
