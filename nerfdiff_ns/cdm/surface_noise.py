"""Surface-consistent starting noise for NGD's virtual-view trajectories.

Why: with deterministic DDIM steps, the detail a CDM draws at low noise comes mostly from the
trajectory's starting noise. Drawn independently per view, the same surface point gets different
noise in every view, the CDM draws different detail there, and the NeRF fitting all views averages
it away (benchmarks/sharpness_ceiling.py: the NeRF could be far sharper with consistent targets).

Here the noise lives on the object instead: the NeRF's visible surface (expected depth, opacity)
puts each pixel at a 3D point, the points fall into cells of a randomly offset 3D grid, and every
cell carries one Gaussian vector. Pixels of *different* views that see the same cell start from the
same noise. Within one view each value is used once: a second pixel of that view in an already used
cell, and every background pixel, gets a fresh draw. So each view's noise is still exactly i.i.d.
N(0, 1) per pixel and channel (what the CDM was trained on); only the correlation across views
changes.
"""

from __future__ import annotations

from typing import Optional

import torch


def surface_points(c2w: torch.Tensor, intrinsics: torch.Tensor, size: int, depth: torch.Tensor) -> torch.Tensor:
    """World points ``[V, size, size, 3]`` of each pixel's ray at ``depth [V, size, size, 1]`` (distance
    along the unit ray direction, as the renderer returns it)."""
    from nerfdiff_ns.nerf.rays import camera_rays, image_pixels

    views = c2w.shape[0]
    k = intrinsics.reshape(-1, 4).expand(views, 4)
    origins, dirs = camera_rays(c2w, k, image_pixels(size, size, c2w.device)[None].expand(views, -1, -1))
    return (origins + dirs * depth.reshape(views, -1, 1)).reshape(views, size, size, 3)


def surface_consistent_noise(
    points: torch.Tensor,
    visible: torch.Tensor,
    cell_size: float,
    channels: int = 3,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Noise ``[V, channels, H, W]`` shared across views through 3D cells (see the module docstring).

    ``points [V, H, W, 3]``: each pixel's surface point; ``visible [V, H, W]`` (bool): pixels on the
    object (the others get independent noise); ``cell_size``: the grid's cell edge in world units.
    All draws come from ``generator`` (CPU), so a seed fixes the noise.
    """
    if cell_size <= 0:
        raise ValueError(f"cell_size must be > 0, got {cell_size}")
    views, height, width, _ = points.shape
    device = points.device

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)

    noise = randn(views, height * width, channels)  # the independent draw every pixel starts with
    offset = torch.rand(3, generator=generator, dtype=torch.float32).to(device)  # random grid phase
    mask = visible.reshape(views, -1)
    if not bool(mask.any()):
        return noise.reshape(views, height, width, channels).permute(0, 3, 1, 2).contiguous()
    view_index, pixel_index = mask.nonzero(as_tuple=True)
    cells = torch.floor(points.reshape(views, -1, 3)[view_index, pixel_index].float() / cell_size + offset).long()
    cell_ids, cell_of_pixel = torch.unique(cells, dim=0, return_inverse=True)
    cell_noise = randn(cell_ids.shape[0], channels)
    # the first pixel (in raster order) of each (view, cell) pair takes the cell's noise; later ones keep theirs
    pair = view_index * cell_ids.shape[0] + cell_of_pixel
    pairs, pair_of_pixel = torch.unique(pair, return_inverse=True)
    order = torch.arange(pair.shape[0], device=device)
    first = torch.full((pairs.shape[0],), pair.shape[0], dtype=torch.long, device=device)
    first = first.scatter_reduce(0, pair_of_pixel, order, reduce="amin")
    takes_cell = first[pair_of_pixel] == order
    noise[view_index[takes_cell], pixel_index[takes_cell]] = cell_noise[cell_of_pixel[takes_cell]]
    return noise.reshape(views, height, width, channels).permute(0, 3, 1, 2).contiguous()


__all__ = ["surface_consistent_noise", "surface_points"]
