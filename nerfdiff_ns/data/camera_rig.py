"""Camera rules of the generated datasets: where the cameras sit and what their intrinsics are.

Cameras sit on a sphere around the origin (the object centre) looking at it with +Z up. Train
objects get random cameras (uniform azimuth, uniform elevation in a range); val objects get a
fixed spiral, whose view ``input_view_index`` is the evaluation protocol's input view. Poses here
are camera-to-world in OpenGL camera axes (nerfstudio); the SRN writer converts them.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

__all__ = ["camera_position", "look_at", "train_camera_angles", "spiral_camera_angles", "intrinsics_for",
           "camera_rig", "near_far"]


def camera_position(azimuth_degrees: float, elevation_degrees: float, distance: float) -> np.ndarray:
    """Point on a sphere: azimuth from +X towards +Y, elevation above the XY plane (+Z up)."""
    az, el = math.radians(azimuth_degrees), math.radians(elevation_degrees)
    return distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def look_at(position: np.ndarray, target: Sequence[float] = (0.0, 0.0, 0.0),
            up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world ``[4, 4]`` (float64, OpenGL camera axes: x right, y up, looking along -z).

    The maths is :func:`nerfdiff_ns.data.cameras.look_at`; here it runs in float64 and refuses a
    camera looking straight along the up vector instead of picking an arbitrary roll.
    """
    import torch

    from nerfdiff_ns.data.cameras import look_at as look_at_torch

    position = np.asarray(position, dtype=np.float64)
    back = position - np.asarray(target, dtype=np.float64)
    if np.linalg.norm(np.cross(np.asarray(up, dtype=np.float64), back / np.linalg.norm(back))) < 1e-8:
        raise ValueError("camera looks straight along the up vector; choose |elevation| < 90 degrees")
    return look_at_torch(
        torch.from_numpy(position), torch.tensor(target, dtype=torch.float64), torch.tensor(up, dtype=torch.float64)
    ).numpy()


def train_camera_angles(rng: np.random.Generator, num_views: int,
                        elevation_range_degrees: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Random cameras: azimuth uniform in [0, 360), elevation uniform in the range (degrees)."""
    azimuth = rng.uniform(0.0, 360.0, num_views)
    elevation = rng.uniform(elevation_range_degrees[0], elevation_range_degrees[1], num_views)
    return azimuth, elevation


def spiral_camera_angles(num_views: int, elevation_range_degrees: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Spiral: azimuth ``360 k / N``; elevation from the low to the high end, linearly (degrees)."""
    k = np.arange(num_views, dtype=np.float64)
    azimuth = 360.0 * k / num_views
    lo, hi = elevation_range_degrees
    elevation = lo + (hi - lo) * k / (num_views - 1) if num_views > 1 else np.full(1, 0.5 * (lo + hi))
    return azimuth, elevation


def intrinsics_for(resolution: int, fov_degrees: float) -> Tuple[float, float, float]:
    """``(f, cx, cy)`` in pixels for a square image with vertical field of view ``fov_degrees``."""
    focal = 0.5 * resolution / math.tan(math.radians(fov_degrees) / 2.0)
    return focal, resolution / 2.0, resolution / 2.0


def camera_rig(split: str, object_id: int, seed: int, views_per_object: int, eval_views_per_object: int,
               elevation_range_degrees: Tuple[float, float], camera_distance: float, copy: int = 0) -> np.ndarray:
    """``[V, 4, 4]`` camera-to-world of one object: random (train, RNG from ``(seed, object_id)``, so
    an object's cameras do not depend on which other objects are generated; a turned copy ``copy > 0``
    (``--orientations``) draws its own) or the spiral (val)."""
    if split == "train":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(object_id)] + ([int(copy)] if copy else [])))
        azimuth, elevation = train_camera_angles(rng, views_per_object, elevation_range_degrees)
    else:
        azimuth, elevation = spiral_camera_angles(eval_views_per_object, elevation_range_degrees)
    return np.stack([look_at(camera_position(a, e, camera_distance)) for a, e in zip(azimuth, elevation)])


def near_far(camera_distance: float, object_radius: float) -> Tuple[float, float]:
    """Clip planes that keep the whole object sphere inside the view frustum's depth range."""
    return 0.5 * (camera_distance - object_radius), camera_distance + 2.0 * object_radius + 1.0
