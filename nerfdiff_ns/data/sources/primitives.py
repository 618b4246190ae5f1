"""Primitive solids placed in an object frame (+Z up, +X front, mirror plane y = 0).

Shapes come from trimesh (``trimesh.creation.box`` / ``cylinder`` / ``annulus``), built once per
shape and cached as unit templates; placing one is then a few numpy operations on a light
:class:`Mesh` (building a ``trimesh.Trimesh`` per part would cost about a millisecond each).

Every rod is built in a local frame whose first axis lies in the XZ plane whenever the rod's own
axis does, so that a rod centred on the mirror plane has a vertex set that is its own mirror image
(trimesh's rings start at angle 0 on the local first axis and are symmetric under angle -> -angle).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple, Optional, Sequence

import numpy as np
import trimesh

__all__ = ["Mesh", "box", "rod", "disc", "ring", "arc_tube", "concatenate", "rotation_y", "rotation_z", "taper"]

Vec = Sequence[float]


class Mesh(NamedTuple):
    """Triangles: vertices ``[N, 3]`` float64 and faces ``[F, 3]`` int64 (counter-clockwise from outside)."""

    vertices: np.ndarray
    faces: np.ndarray


def rotation_y(degrees: float) -> np.ndarray:
    """3x3 rotation about +Y (positive tilts +Z towards +X)."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_z(degrees: float) -> np.ndarray:
    """3x3 rotation about +Z (positive turns +X towards +Y)."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _frozen(mesh: trimesh.Trimesh) -> Mesh:
    v, f = np.array(mesh.vertices, dtype=np.float64), np.array(mesh.faces, dtype=np.int64)
    v.flags.writeable = False
    f.flags.writeable = False
    return Mesh(v, f)


@lru_cache(maxsize=None)
def _unit_box() -> Mesh:
    return _frozen(trimesh.creation.box(extents=[1.0, 1.0, 1.0]))


@lru_cache(maxsize=None)
def _unit_cylinder(sections: int) -> Mesh:
    """Radius 1, height 1 (z in [-0.5, 0.5])."""
    return _frozen(trimesh.creation.cylinder(radius=1.0, height=1.0, sections=sections))


def _placed(template: Mesh, scale: Vec, rotation: np.ndarray, centre: Vec) -> Mesh:
    v = (template.vertices * np.asarray(scale, dtype=np.float64)) @ rotation.T + np.asarray(centre, dtype=np.float64)
    return Mesh(v, template.faces)


def box(centre: Vec, size: Vec, rotation: Optional[np.ndarray] = None) -> Mesh:
    """Axis-aligned box of ``size`` (x, y, z extents) rotated by ``rotation`` about its centre."""
    return _placed(_unit_box(), size, np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64), centre)


def _rod_frame(axis: np.ndarray) -> np.ndarray:
    """Columns (u, w, a): a = rod axis; u in the plane spanned by a and the XZ plane where possible."""
    a = axis / np.linalg.norm(axis)
    u = np.cross(a, [0.0, 1.0, 0.0])
    if np.linalg.norm(u) < 1e-9:  # rod along Y: ring in the XZ plane
        u = np.array([0.0, 0.0, 1.0])
    u = u / np.linalg.norm(u)
    w = np.cross(a, u)
    return np.stack([u, w, a], axis=1)


def taper(mesh: Mesh, top_scale: float) -> Mesh:
    """Scale a local-frame rod's cross-section linearly from 1 at z = min to ``top_scale`` at z = max."""
    v = np.array(mesh.vertices, dtype=np.float64)
    z0, z1 = v[:, 2].min(), v[:, 2].max()
    s = 1.0 + (top_scale - 1.0) * (v[:, 2] - z0) / max(z1 - z0, 1e-12)
    v[:, :2] *= s[:, None]
    return Mesh(v, mesh.faces)


def rod(start: Vec, end: Vec, radius: float, sections: int = 10, square: bool = False,
        end_scale: float = 1.0) -> Mesh:
    """A round (``sections``-gon) or square rod from ``start`` to ``end``; ``end_scale`` tapers it."""
    p0, p1 = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    length = float(np.linalg.norm(p1 - p0))
    if length <= 0:
        raise ValueError("rod of zero length")
    template = _unit_box() if square else _unit_cylinder(int(sections))
    sx = 2 * radius if square else radius
    local = Mesh(template.vertices * [sx, sx, length], template.faces)
    if end_scale != 1.0:
        local = taper(local, end_scale)
    return _placed(local, (1.0, 1.0, 1.0), _rod_frame(p1 - p0), 0.5 * (p0 + p1))


def disc(centre: Vec, radius: float, thickness: float, sections: int = 24) -> Mesh:
    """Vertical-axis cylinder (a round seat, table top, mug bottom) centred at ``centre``."""
    return _placed(_unit_cylinder(int(sections)), (radius, radius, thickness), np.eye(3), centre)


def ring(centre: Vec, r_inner: float, r_outer: float, height: float, sections: int = 24) -> Mesh:
    """Vertical-axis tube (annulus) centred at ``centre``: a mug wall, a band."""
    mesh = trimesh.creation.annulus(r_min=r_inner, r_max=r_outer, height=height, sections=sections)
    return Mesh(np.asarray(mesh.vertices, dtype=np.float64) + np.asarray(centre, dtype=np.float64),
                np.asarray(mesh.faces, dtype=np.int64))


def concatenate(meshes: Sequence[Mesh]) -> Mesh:
    """One mesh holding all of ``meshes`` (face indices shifted)."""
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return Mesh(np.concatenate([m.vertices for m in meshes]),
                np.concatenate([m.faces + o for m, o in zip(meshes, offsets)]))


def arc_tube(centre: Vec, radius: float, tube_radius: float, start_degrees: float, end_degrees: float,
             segments: int = 8, sections: int = 6) -> Mesh:
    """A bent tube in the XZ plane (a mug handle): ``segments`` straight pieces along a circular arc,
    angles measured from +X towards +Z."""
    c = np.asarray(centre, dtype=np.float64)
    angles = np.radians(np.linspace(start_degrees, end_degrees, segments + 1))
    points = c + radius * np.stack([np.cos(angles), np.zeros_like(angles), np.sin(angles)], axis=1)
    return concatenate([rod(points[i], points[i + 1], tube_radius, sections=sections) for i in range(segments)])
