"""An orbit around the object as a nerfstudio camera path, for ``ns-render camera-path``.

Why not ``ns-render spiral``: nerfstudio 1.1.5's ``get_spiral_path`` is made for forward-facing
scenes. It moves the camera on a small circle in its own image plane, aimed at a point ``focal``
(in pixels) ahead, and takes a *column* of the camera matrix (the camera's backward axis in world
coordinates) as the up vector of a pose built in camera coordinates. On an object-centric camera
that gives a tilted, nearly still view of the object. A NerfDiff run is one object seen from one
camera, so its video is an orbit: the input camera's distance and elevation, all azimuths, starting
at the input view. ``ns-train nerfdiff*`` writes it to ``<run>/camera_paths/orbit.json`` in the
format ``ns-render camera-path`` reads (``nerfstudio.cameras.camera_paths.get_path_from_json``: the
rendered part of the viewer's camera-path files, without its editable keyframes), with the
project's atomic ``evaluation.report.write_json``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import torch

from nerfdiff_ns.data.cameras import azimuth_elevation, orbit_pose


def orbit_c2ws(input_c2w: torch.Tensor, frames: int) -> torch.Tensor:
    """``[frames, 4, 4]`` poses on a 360-degree orbit at the input camera's distance and elevation,
    looking at the object centre (the origin), the first at the input camera's azimuth."""
    if frames < 1:
        raise ValueError("an orbit needs at least one frame")
    az, el, dist = azimuth_elevation(input_c2w.detach().double().cpu())
    return torch.stack([orbit_pose(dist, az + 360.0 * k / frames, el) for k in range(frames)]).float()


def orbit_camera_path(
    input_c2w: torch.Tensor, intrinsics: torch.Tensor, size: Tuple[int, int], seconds: float = 4.0, fps: int = 24
) -> Dict[str, Any]:
    """The orbit as a nerfstudio camera-path dict. ``intrinsics`` is ``(fx, fy, cx, cy)`` of the input
    view and ``size`` its ``(height, width)``; nerfstudio paths carry a vertical field of view (square
    pixels, centred principal point), which reproduces ``fy`` at the render's height."""
    height, width = int(size[0]), int(size[1])
    fy = float(intrinsics.reshape(-1)[1])
    fov_deg = math.degrees(2.0 * math.atan(height / (2.0 * fy)))
    frames = max(1, round(seconds * fps))
    path = [
        {"camera_to_world": c2w.reshape(-1).tolist(), "fov": fov_deg, "aspect": width / height}
        for c2w in orbit_c2ws(input_c2w, frames)
    ]
    return {
        "camera_type": "perspective", "render_height": height, "render_width": width,
        "seconds": float(seconds), "fps": fps, "camera_path": path,
    }
