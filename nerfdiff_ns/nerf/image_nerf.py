"""The single-image NeRF of NerfDiff: encoder -> camera-aligned triplane -> MLP -> volume rendering.

Everything happens in the *input camera's frame*: world rays are moved into the frame of the
view the triplane was predicted from, so no global pose is ever needed. The object centre is the
world origin (true of SRN-style data and of our single-image set-up), so the input camera's
distance to the object is ``|t_source|``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import torch
from torch import nn

from nerfdiff_ns.nerf.encoder import EncoderConfig, TriplaneEncoder
from nerfdiff_ns.nerf.field import MLPImplementation, TriplaneField, resolve_implementation
from nerfdiff_ns.nerf.rays import camera_rays, directions_to_camera, image_pixels, world_to_camera
from nerfdiff_ns.nerf.renderer import (
    Generators,
    alpha_composite,
    importance_samples,
    merge_samples,
    ray_sphere_bounds,
    stratified_samples,
)
from nerfdiff_ns.nerf.triplane import Aggregation, Parameterization, feature_dim, normalized_coordinates, sample_triplane


@dataclass
class NeRFConfig:
    """Architecture and rendering settings of the image-conditioned NeRF (stored in bundles)."""

    image_size: int = 32
    """Resolution (square) the encoder sees; input views are resized to it."""
    triplane_channels: int = 16
    """Feature channels C per plane."""
    triplane_resolution: int = 32
    """Plane resolution S."""
    parameterization: Parameterization = "frustum"
    """'camera' (axis-aligned box in camera coordinates) or 'frustum' (pixel-aligned, inverse depth)."""
    aggregation: Aggregation = "sum"
    """How the three plane features are combined: 'sum' or 'concat'."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Image encoder architecture."""
    mlp_hidden: int = 64
    """Width of the decoder MLP."""
    mlp_layers: int = 3
    """Number of linear layers of the decoder MLP."""
    mlp_implementation: MLPImplementation = "auto"
    """'auto' uses tiny-cuda-nn on CUDA when installed, else torch; 'torch' forces torch."""
    num_coarse_samples: int = 32
    """Stratified samples per ray."""
    num_fine_samples: int = 16
    """Importance samples per ray, drawn from the coarse weights (0 disables)."""
    object_radius: float = 1.0
    """Radius of the sphere around the world origin that bounds the object (rays are sampled inside)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour behind the object."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NeRFConfig":
        data = dict(data)
        enc = data.pop("encoder", {})
        enc = EncoderConfig(**{**enc, "channels": tuple(enc.get("channels", EncoderConfig().channels))})
        data["background"] = tuple(data.get("background", (1.0, 1.0, 1.0)))
        return cls(encoder=enc, **data)


@dataclass
class SourceView:
    """The input view a triplane was predicted from: ``c2w [B, 4, 4]``, ``intrinsics [B, 4]``, its size."""

    c2w: torch.Tensor
    intrinsics: torch.Tensor
    image_size: tuple[int, int]

    @property
    def distance(self) -> torch.Tensor:
        return self.c2w[:, :3, 3].norm(dim=-1)


class ImageConditionedNeRF(nn.Module):
    """Encoder + triplane field + renderer. ``encode`` once per input image, ``render_rays`` often."""

    def __init__(self, config: NeRFConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.implementation = resolve_implementation(config.mlp_implementation, device)
        self.encoder = TriplaneEncoder(config.encoder, config.image_size, config.triplane_channels, config.triplane_resolution)
        in_dim = feature_dim(config.triplane_channels, config.aggregation)
        self.field = TriplaneField(in_dim, config.mlp_hidden, config.mlp_layers, self.implementation)
        self.register_buffer("background", torch.tensor(config.background, dtype=torch.float32), persistent=False)
        self.to(device)

    @property
    def feature_channels(self) -> int:
        """Width F of the per-point triplane feature the MLP decodes (and ``render_rays(features=True)`` renders)."""
        return feature_dim(self.config.triplane_channels, self.config.aggregation)

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Input views ``[B, H, W, 3]`` in [0, 1] -> triplanes ``[B, 3, C, S, S]``."""
        x = images.permute(0, 3, 1, 2)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.encoder(x)

    # ---- field ----------------------------------------------------------------------------
    def point_features(self, triplanes: torch.Tensor, source: SourceView, points_cam: torch.Tensor) -> torch.Tensor:
        """Triplane features ``[B, N, F]`` at camera-frame points ``[B, N, 3]`` (what the MLP decodes)."""
        coords = normalized_coordinates(
            points_cam, self.config.parameterization, source.distance, self.config.object_radius,
            source.intrinsics, source.image_size,
        )
        return sample_triplane(triplanes, coords, self.config.aggregation)

    def query(self, triplanes: torch.Tensor, source: SourceView, points_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density ``[B, N]`` and rgb ``[B, N, 3]`` at camera-frame points ``[B, N, 3]``."""
        return self.field(self.point_features(triplanes, source, points_cam))

    def _shade(self, triplanes: torch.Tensor, source: SourceView, o_cam: torch.Tensor, d_cam: torch.Tensor, t: torch.Tensor):
        """Density ``[B, R, S]``, rgb ``[B, R, S, 3]`` and the features ``[B, R, S, F]`` at the samples ``t``."""
        batch, rays, num = t.shape
        points = o_cam[:, :, None] + t[..., None] * d_cam[:, :, None]
        feats = self.point_features(triplanes, source, points.reshape(batch, rays * num, 3))
        density, rgb = self.field(feats)
        return density.view(batch, rays, num), rgb.view(batch, rays, num, 3), feats.view(batch, rays, num, -1)

    # ---- rendering ------------------------------------------------------------------------
    def render_rays(
        self,
        triplanes: torch.Tensor,
        source: SourceView,
        origins: torch.Tensor,
        directions: torch.Tensor,
        jitter: bool = False,
        generator: "Generators" = None,
        features: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Render world rays ``[B, R, 3]`` (unit directions) -> ``rgb [B,R,3]``, ``depth``, ``accumulation [B,R,1]``.

        ``generator``: one ``torch.Generator`` for the whole batch, or a pretraining step's ``StepJitter`` (see ``renderer._rand``).
        ``features``: also return ``features [B,R,F]``, the triplane features composited with the same
        weights as the colour (zero behind the object): GeNVS's rendered feature image."""
        cfg = self.config
        near, far = ray_sphere_bounds(origins, directions, cfg.object_radius)
        o_cam = world_to_camera(source.c2w, origins)
        d_cam = directions_to_camera(source.c2w, directions)
        coarse = stratified_samples(near, far, cfg.num_coarse_samples, jitter, generator)
        density, rgb, feats = self._shade(triplanes, source, o_cam, d_cam, coarse.t)
        out = alpha_composite(density, rgb, coarse, self.background)
        if cfg.num_fine_samples > 0:
            fine_t = importance_samples(coarse, out["weights"], cfg.num_fine_samples, jitter, generator)
            fine_density, fine_rgb, fine_feats = self._shade(triplanes, source, o_cam, d_cam, fine_t)
            merged, order = merge_samples(coarse, fine_t)
            density = torch.cat([density, fine_density], -1).gather(-1, order)
            rgb = torch.cat([rgb, fine_rgb], -2).gather(-2, order[..., None].expand(*order.shape, 3))
            if features:
                feats = torch.cat([feats, fine_feats], -2).gather(-2, order[..., None].expand(*order.shape, feats.shape[-1]))
            out = alpha_composite(density, rgb, merged, self.background)
        if features:
            out["features"] = (out["weights"].unsqueeze(-1) * feats).sum(-2)
        return out

    @torch.no_grad()
    def render_image(
        self,
        triplanes: torch.Tensor,
        source: SourceView,
        c2w: torch.Tensor,
        intrinsics: torch.Tensor,
        height: int,
        width: int,
        chunk: int = 8192,
    ) -> dict[str, torch.Tensor]:
        """Render whole views ``c2w [B, 4, 4]`` -> ``rgb [B, H, W, 3]``, ``depth``, ``accumulation [B, H, W, 1]``.

        ``triplanes``: one per view ``[B, ...]``, or one object's ``[1, ...]`` seen from all B cameras."""
        pixels = image_pixels(height, width, c2w.device)[None].expand(c2w.shape[0], -1, -1)
        origins, dirs = camera_rays(c2w, intrinsics, pixels)
        outs: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "accumulation": []}
        for start in range(0, height * width, chunk):
            out = self.render_rays(triplanes, source, origins[:, start : start + chunk], dirs[:, start : start + chunk])
            for key in outs:
                outs[key].append(out[key])
        return {k: torch.cat(v, 1).view(c2w.shape[0], height, width, -1) for k, v in outs.items()}


__all__ = ["ImageConditionedNeRF", "NeRFConfig", "SourceView"]
