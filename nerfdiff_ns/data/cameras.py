"""Orbit camera geometry: look-at poses and NGD's virtual views (nerfstudio world, +Z up, OpenGL axes)."""

from __future__ import annotations

import math

import torch


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-world ``[4, 4]`` for a camera at ``eye`` looking at ``target`` (OpenGL: looks along -z).

    Keeps a float64 ``eye`` in float64 (the dataset generator writes poses at that precision).
    """
    dtype = eye.dtype if eye.dtype == torch.float64 else torch.float32
    eye = eye.to(dtype)
    target = torch.zeros(3, dtype=dtype) if target is None else target.to(dtype)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=dtype) if up is None else up.to(dtype)
    back = eye - target
    back = back / back.norm()
    right = torch.linalg.cross(up, back)
    if right.norm() < 1e-6:  # looking straight up/down: any horizontal right vector will do
        right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=dtype), back)
    right = right / right.norm()
    cam_up = torch.linalg.cross(back, right)
    c2w = torch.eye(4, dtype=dtype)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, back, eye
    return c2w


def orbit_pose(distance: float, azimuth_deg: float, elevation_deg: float) -> torch.Tensor:
    """Pose on a sphere around the origin; azimuth from +X towards +Y, elevation above the XY plane."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]) * distance
    return look_at(eye)


def azimuth_elevation(c2w: torch.Tensor) -> tuple[float, float, float]:
    """(azimuth deg, elevation deg, distance) of a camera centre."""
    pos = c2w[:3, 3]
    dist = float(pos.norm())
    return math.degrees(math.atan2(float(pos[1]), float(pos[0]))), math.degrees(math.asin(float(pos[2]) / dist)), dist


def virtual_cameras(
    input_c2w: torch.Tensor,
    num_views: int,
    azimuth_spread_deg: float = 360.0,
    elevation_range_deg: tuple[float, float] = (0.0, 40.0),
    distance: float | None = None,
) -> torch.Tensor:
    """``[V, 4, 4]`` NGD virtual cameras around the input view, all looking at the object centre.

    Azimuths are spread evenly over ``azimuth_spread_deg`` centred on the input's azimuth, skipping
    the input itself; elevations alternate through ``elevation_range_deg``; the distance defaults to
    the input camera's.
    """
    if num_views < 1:
        raise ValueError("num_views must be at least 1")
    az0, _, dist0 = azimuth_elevation(input_c2w)
    dist = dist0 if distance is None else distance
    if azimuth_spread_deg >= 360.0:
        offsets = [360.0 * (i + 1) / (num_views + 1) for i in range(num_views)]
    else:
        offsets = [azimuth_spread_deg * ((i + 1) / (num_views + 1) - 0.5) for i in range(num_views)]
        offsets = [o if abs(o) > 1e-6 else azimuth_spread_deg / (2 * (num_views + 1)) for o in offsets]
    lo, hi = elevation_range_deg
    elevations = [lo + (hi - lo) * ((i * 0.618034) % 1.0) for i in range(num_views)] if num_views > 1 else [(lo + hi) / 2]
    return torch.stack([orbit_pose(dist, az0 + off, el) for off, el in zip(offsets, elevations)])
