"""Density and colour of the finetuned NeRF on world-space points and grids inside the object sphere.

The triplane lives in the input camera's frame, so world points are moved into that frame
(``world_to_camera``) before ``ImageConditionedNeRF.query``. The renderer only samples inside the
object sphere, so the field is defined as empty outside it: grid points beyond the sphere get
density 0, which keeps every marching-cubes vertex inside the sphere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nerfdiff_ns.nerf.rays import world_to_camera


@torch.no_grad()
def query_field(run, points: torch.Tensor, chunk: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    """World points ``[N, 3]`` -> density ``[N]`` and rgb ``[N, 3]`` of the run's field (on CPU)."""
    nerf, triplane, source = run.nerf, run.triplane, run.source
    dev = triplane.device
    dens, cols = [], []
    for start in range(0, points.shape[0], chunk):
        pts = points[start : start + chunk].to(dev, torch.float32)[None]
        d, c = nerf.query(triplane, source, world_to_camera(source.c2w, pts))
        dens.append(d[0].float().cpu())
        cols.append(c[0].float().cpu())
    if not dens:
        return torch.zeros(0), torch.zeros(0, 3)
    return torch.cat(dens), torch.cat(cols)


@dataclass
class DensityGrid:
    """Density on a regular ``R^3`` grid spanning ``[-radius, radius]^3`` (index order x, y, z)."""

    density: torch.Tensor  # [R, R, R]
    radius: float
    spacing: float

    @property
    def resolution(self) -> int:
        return int(self.density.shape[0])

    def points(self) -> torch.Tensor:
        return grid_points(self.radius, self.resolution)


def grid_points(radius: float, resolution: int) -> torch.Tensor:
    """World coordinates ``[R, R, R, 3]`` of a grid with ``R`` points per axis over ``[-radius, radius]``."""
    axis = torch.linspace(-radius, radius, resolution)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


def density_grid(run, resolution: int) -> DensityGrid:
    """Sample the density on a grid; points further than ``radius - spacing`` from the centre are empty.

    The one-spacing margin guarantees that iso-surface vertices, which lie on grid edges next to
    a non-empty point, stay inside the object sphere.
    """
    radius = run.radius
    spacing = 2.0 * radius / (resolution - 1)
    pts = grid_points(radius, resolution).reshape(-1, 3)
    inside = pts.norm(dim=-1) <= radius - spacing
    density = torch.zeros(pts.shape[0])
    density[inside], _ = query_field(run, pts[inside])
    return DensityGrid(density.view(resolution, resolution, resolution), radius, spacing)


def default_grid_resolution(nerf_config) -> int:
    """Twice the triplane resolution (the field has no finer detail), at least 64."""
    return max(64, 2 * int(nerf_config.triplane_resolution))


def default_density_threshold(nerf_config) -> float:
    """The density at which one coarse render sample (chord ``2 r / S``) is half opaque: ``ln 2 / step``.

    That is where the renderer's accumulation crosses 0.5 for a thin shell, so the iso-surface
    matches the silhouette the NeRF renders.
    """
    step = 2.0 * float(nerf_config.object_radius) / int(nerf_config.num_coarse_samples)
    return math.log(2.0) / step


__all__ = ["DensityGrid", "default_density_threshold", "default_grid_resolution", "density_grid", "grid_points", "query_field"]
