"""DataManager for single-image NeRF finetuning: rays from the input view and from NGD's virtual views.

It keeps every image in this process (the virtual targets change in place between NeRF
iterations, which nerfstudio's ParallelDataManager could not see), and it subclasses
``VanillaDataManager`` so that nerfstudio's eval loaders, ``ns-eval`` and ``ns-render spiral`` work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset

from nerfdiff_ns.data.images import load_rgb


def foreground_mask(image: torch.Tensor, background: torch.Tensor, tolerance: float = 2.0 / 255.0) -> torch.Tensor:
    """[H, W, 1]: 1 where the image differs from the background colour by more than ``tolerance`` in any channel.

    The fallback when the dataparser knows no mask (``nerfdiff_input_mask``: a prepared photo's mask, --mask,
    an RGBA input's alpha). Every input reaches the model composited on the bundle's background, so this is the
    input's alpha, hardened; an object pixel of exactly the background colour counts as background."""
    return ((image - background.to(image).view(1, 1, 3)).abs().amax(-1, keepdim=True) > tolerance).float()


class NerfDiffDataset(InputDataset):
    """nerfstudio dataset that reads images with our loader (RGBA, gray, 16-bit; clear errors)."""

    def get_image_float32(self, image_idx: int) -> torch.Tensor:
        background = self._dataparser_outputs.alpha_color
        bg = tuple(background.tolist()) if background is not None else (1.0, 1.0, 1.0)
        image = load_rgb(self._dataparser_outputs.image_filenames[image_idx], bg)
        if self.scale_factor != 1.0:
            h, w = image.shape[:2]
            size = (int(h * self.scale_factor), int(w * self.scale_factor))
            image = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None], size=size, mode="bilinear", antialias=True)[0].permute(1, 2, 0)
        return image

    def get_image_uint8(self, image_idx: int) -> torch.Tensor:
        return (self.get_image_float32(image_idx) * 255).round().to(torch.uint8)


@dataclass
class NerfDiffDataManagerConfig(VanillaDataManagerConfig):
    _target: Type = field(default_factory=lambda: NerfDiffDataManager)
    train_num_rays_per_batch: int = 1024
    """Rays per NeRF iteration (input + virtual views)."""
    input_ray_fraction: float = 0.25
    """Share of each batch drawn from the input view once virtual views exist."""
    input_view_weight: float = 0.3
    """lambda_input: loss weight of input-view rays relative to virtual-view rays."""


class NerfDiffDataManager(VanillaDataManager[NerfDiffDataset]):
    config: NerfDiffDataManagerConfig

    def setup_train(self) -> None:
        meta = self.train_dataset.metadata
        image = meta["nerfdiff_input_image"].float()
        background = self.train_dataset._dataparser_outputs.alpha_color
        # the photo's own mask or alpha when the dataparser has one, else the pixels off the background colour
        mask = meta.get("nerfdiff_input_mask")
        if mask is None:
            mask = foreground_mask(image, background if background is not None else torch.ones(3))
        # [H, W, 4]: RGB and the foreground mask (the mask loss's target), sampled together once per ray
        self.input_pixels = torch.cat([image, mask.float().reshape(*image.shape[:2], 1)], -1)
        self.input_camera: Cameras = self.train_dataset.cameras[0:1]
        self.virtual_cameras: Cameras | None = None
        self.virtual_targets: torch.Tensor | None = None  # [V, H, W, 3], updated in place by NGD
        self.generator = torch.Generator().manual_seed(0)
        # nerfstudio tools (ns-export) resize batches through the pixel sampler's num_rays_per_batch
        self.train_pixel_sampler = self.config.pixel_sampler.setup(num_rays_per_batch=self.config.train_num_rays_per_batch)

    def set_virtual_views(self, c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int, targets: torch.Tensor) -> None:
        fx, fy, cx, cy = intrinsics.unbind(-1)
        count = c2w.shape[0]
        self.virtual_cameras = Cameras(
            camera_to_worlds=c2w[:, :3, :4].float().cpu(), fx=fx.expand(count)[:, None], fy=fy.expand(count)[:, None],
            cx=cx.expand(count)[:, None], cy=cy.expand(count)[:, None], width=width, height=height,
            camera_type=CameraType.PERSPECTIVE,
        )
        self.virtual_targets = targets.detach().float().cpu().clone()

    def update_virtual_targets(self, targets: torch.Tensor) -> None:
        assert self.virtual_targets is not None
        self.virtual_targets.copy_(targets.detach().float().cpu())

    def _sample_view(self, cameras: Cameras, images: torch.Tensor, count: int) -> Tuple[RayBundle, torch.Tensor]:
        views, height, width = images.shape[0], images.shape[1], images.shape[2]
        cam = torch.randint(views, (count,), generator=self.generator)
        ys = torch.randint(height, (count,), generator=self.generator)
        xs = torch.randint(width, (count,), generator=self.generator)
        coords = torch.stack([ys, xs], -1).float() + 0.5
        bundle = cameras.generate_rays(camera_indices=cam[:, None], coords=coords)
        return bundle, images[cam, ys, xs]

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        total = self.train_pixel_sampler.num_rays_per_batch
        n_input = total if self.virtual_cameras is None else max(1, int(round(total * self.config.input_ray_fraction)))
        bundle, pixels = self._sample_view(self.input_camera, self.input_pixels[None], n_input)
        rgb, foreground = pixels[:, :3], pixels[:, 3:]
        weights = torch.full((n_input, 1), self.config.input_view_weight if self.virtual_cameras is not None else 1.0)
        if self.virtual_cameras is not None and total > n_input:
            v_bundle, v_rgb = self._sample_view(self.virtual_cameras, self.virtual_targets, total - n_input)
            v_bundle.camera_indices = v_bundle.camera_indices + 1
            bundle = RayBundle(
                origins=torch.cat([bundle.origins, v_bundle.origins]),
                directions=torch.cat([bundle.directions, v_bundle.directions]),
                pixel_area=torch.cat([bundle.pixel_area, v_bundle.pixel_area]),
                camera_indices=torch.cat([bundle.camera_indices, v_bundle.camera_indices]),
            )
            rgb = torch.cat([rgb, v_rgb])
            weights = torch.cat([weights, torch.ones(total - n_input, 1)])
            foreground = torch.cat([foreground, torch.full((total - n_input, 1), float("nan"))])
        batch = {"image": rgb.to(self.device), "weight": weights.to(self.device), "foreground": foreground.to(self.device)}
        return bundle.to(self.device), batch
