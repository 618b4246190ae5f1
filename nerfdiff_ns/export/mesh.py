"""Marching cubes on the NeRF's density (scikit-image), vertex colours from the field, trimesh I/O.

Also renders a mesh from a camera by ray casting (trimesh's ray intersector), so the export can
be compared with the NeRF's renders without a display or OpenGL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nerfdiff_ns.export import ExportError
from nerfdiff_ns.export.density import density_grid, query_field

MESH_SUFFIXES = (".glb", ".ply", ".obj")
# (x, y, z) -> (x, z, -y): nerfstudio's +Z-up world to glTF's +Y-up convention (.glb only)
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])


def extract_mesh(run, resolution: int, threshold: float, where: Path | None = None, min_component_fraction: float = 0.01):
    """A ``trimesh.Trimesh`` of the iso-surface ``density == threshold`` with RGBA vertex colours.

    Connected pieces with fewer than ``min_component_fraction`` of the faces (the specks a soft
    field leaves at the iso-level) are dropped.
    """
    import trimesh

    grid = density_grid(run, resolution)
    vol = grid.density.numpy()
    peak = float(vol.max())
    if peak <= threshold:
        raise ExportError(where or run.config_path,
                          f"the density field never reaches the threshold {threshold:.3g} (its maximum inside the object "
                          f"sphere is {peak:.3g}), so there is no surface to extract",
                          "lower --density-threshold, or check that the run trained (its renders should show the object)")
    # density rises into the object: 'ascent' winds the faces with normals pointing outward (positive volume)
    mesh = _marching_cubes(grid, threshold)
    if min_component_fraction > 0:
        parts = mesh.split(only_watertight=False)
        big = [p for p in parts if len(p.faces) >= min_component_fraction * len(mesh.faces)]
        if big and len(big) < len(parts):
            mesh = trimesh.util.concatenate(big)
    _, rgb = query_field(run, torch.from_numpy(np.asarray(mesh.vertices, np.float32)))
    colours = np.concatenate([(rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8),
                              np.full((len(mesh.vertices), 1), 255, np.uint8)], axis=1)
    mesh.visual.vertex_colors = colours
    return mesh


def calibrate_threshold(run, resolution: int, num_views: int = 4) -> tuple[float, float]:
    """The iso-level whose mesh silhouettes best match the NeRF's accumulation (> 0.5) from the input view
    and ``num_views`` orbit views at the run's resolution; returns ``(level, mean IoU)``.

    NerfDiff's fields are soft (a solid object can peak at a density of ~10), so no fixed level fits
    every run; the NeRF's own silhouettes say where its surface is.
    """
    from nerfdiff_ns.export.gaussians import fitting_cameras, render_nerf_views

    grid = density_grid(run, resolution)
    peak = float(grid.density.max())
    if peak <= 1e-6:
        raise ExportError(run.config_path, "the density field is zero everywhere inside the object sphere",
                          "check that the run trained (its renders should show the object)")
    h, w = run.image_size
    c2w, _ = fitting_cameras(run, num_views + 1, 0)
    views = render_nerf_views(run, c2w, run.intrinsics, h, w)
    targets = [views.acc[i, ..., 0].numpy() > 0.5 for i in range(len(c2w))]
    best = (peak * 0.5, -1.0)
    for level in np.geomspace(peak * 0.02, peak * 0.8, 12):
        mesh = _marching_cubes(grid, float(level))
        ious = [mask_iou(render_mesh(mesh, c2w[i], run.intrinsics, h, w)[1], targets[i]) for i in range(len(c2w))]
        if np.mean(ious) > best[1]:
            best = (float(level), float(np.mean(ious)))
    return best


def _marching_cubes(grid, level: float):
    import trimesh
    from skimage.measure import marching_cubes

    verts, faces, _, _ = marching_cubes(grid.density.numpy(), level=level, spacing=(grid.spacing,) * 3,
                                        gradient_direction="ascent")
    return trimesh.Trimesh(vertices=verts - grid.radius, faces=faces, process=False)


def save_mesh(mesh, path: Path) -> Path:
    """Write ``.glb`` / ``.ply`` / ``.obj`` (vertex colours in all three).

    ``.ply`` and ``.obj`` keep the run's world frame (+Z up, like ``ns-export``); ``.glb`` is turned
    to glTF's +Y up.
    """
    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ExportError(path, f"has suffix {path.suffix!r}, which is not a mesh format we write",
                          f"name the output with one of {', '.join(MESH_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".obj":
        mesh.export(path, include_color=True, include_normals=False)
    elif path.suffix.lower() == ".glb":
        # glTF is +Y up; our world is +Z up: rotate so glTF viewers show the object upright
        mesh.copy().apply_transform(Z_UP_TO_Y_UP).export(path)
    else:
        mesh.export(path)
    return path


def render_mesh(mesh, c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int,
                background=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the mesh from one camera (nerfstudio c2w, OpenGL axes): ``rgb [H, W, 3]`` and ``mask [H, W]``.

    Colours are the vertex colours interpolated barycentrically at the first hit, unshaded, so they
    compare directly with the NeRF's (view-independent) colours.
    """
    import trimesh

    from nerfdiff_ns.nerf.rays import camera_rays, image_pixels

    pixels = image_pixels(height, width)[None]
    origins, dirs = camera_rays(c2w[None].float(), intrinsics[None].float(), pixels)
    origins, dirs = origins[0].numpy().astype(np.float64), dirs[0].numpy().astype(np.float64)
    rgb = np.tile(np.asarray(background, np.float32), (height * width, 1))
    mask = np.zeros(height * width, bool)
    locs, ray_idx, tri_idx = mesh.ray.intersects_location(origins, dirs, multiple_hits=False)
    if len(ray_idx):
        tris = mesh.triangles[tri_idx]
        bary = trimesh.triangles.points_to_barycentric(tris, locs)
        vc = mesh.visual.vertex_colors[:, :3].astype(np.float32) / 255.0
        cols = (vc[mesh.faces[tri_idx]] * bary[..., None]).sum(1)
        rgb[ray_idx] = np.clip(cols, 0, 1)
        mask[ray_idx] = True
    return rgb.reshape(height, width, 3), mask.reshape(height, width)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


__all__ = ["MESH_SUFFIXES", "Z_UP_TO_Y_UP", "calibrate_threshold", "extract_mesh", "mask_iou", "render_mesh", "save_mesh"]
