"""Coloured multi-part meshes: what a procedural source returns and the renderer draws.

A source builds an object from primitives (:mod:`nerfdiff_ns.data.sources.primitives`); each
:class:`Part` keeps its own colour because pybullet's TinyRenderer colours per visual shape, not
per vertex. Parts built on one side of a mirror plane are copied with :func:`mirrored` so the
object's vertex set is exactly symmetric (no rounding differences between the two sides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from nerfdiff_ns.data.sources.primitives import Mesh

__all__ = ["Part", "PartsAsset", "PartList", "mirrored", "normalisation", "asset_normalisation"]

RGBA = Tuple[float, float, float, float]


@dataclass(frozen=True)
class Part:
    """One visual shape: a triangle mesh (object frame, +Z up) and its colour."""

    name: str
    vertices: np.ndarray
    """[N, 3] float64."""
    faces: np.ndarray
    """[F, 3] int64, counter-clockwise seen from outside."""
    rgba: RGBA


@dataclass(frozen=True)
class PartsAsset:
    """A procedural object: its id-derived name, parts and the parameters that made it."""

    name: str
    parts: Tuple[Part, ...]
    params: dict = field(default_factory=dict)
    """The shape and colour choices drawn for this id (written nowhere; for tests and debugging)."""
    mirror_normal: Optional[Tuple[float, float, float]] = (0.0, 1.0, 0.0)
    """Unit normal of the plane through the origin that maps the object onto itself (None: no symmetry)."""
    yaw_degrees: float = 0.0
    """Turn about +Z from the object frame (+X front, mirror plane y = 0) to the world."""

    @property
    def vertices(self) -> np.ndarray:
        """All parts' vertices, [N, 3] (what normalisation sees)."""
        return np.concatenate([p.vertices for p in self.parts], axis=0)

    @property
    def colours(self) -> List[RGBA]:
        return [p.rgba for p in self.parts]


def normalisation(vertices: np.ndarray, object_radius: float = 1.0) -> Tuple[np.ndarray, float]:
    """``(centre, scale)`` such that ``scale * (vertices - centre)`` has its bounding-box centre at
    the origin and its largest vertex norm equal to ``object_radius`` (every source is normalised so)."""
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    if radius <= 0:
        raise ValueError("degenerate mesh: all vertices coincide")
    return centre, object_radius / radius


def mirrored(mesh: Mesh, axis: int = 1) -> Mesh:
    """The mirror image of ``mesh`` across the plane ``x[axis] = 0`` (faces re-wound to stay outward)."""
    vertices = np.array(mesh.vertices, dtype=np.float64)
    vertices[:, axis] = -vertices[:, axis]
    return Mesh(vertices, np.ascontiguousarray(np.asarray(mesh.faces)[:, ::-1]))


class PartList:
    """Collects parts while a source builds an object: ``add`` one mesh, ``add_pair`` a mesh and its mirror."""

    def __init__(self, axis: int = 1) -> None:
        self.axis = axis
        self.parts: List[Part] = []

    def add(self, name: str, mesh: Mesh, rgba: Sequence[float]) -> None:
        """A part that is its own mirror image (centred on the plane) or deliberately asymmetric."""
        self.parts.append(Part(name, np.asarray(mesh.vertices, dtype=np.float64),
                               np.asarray(mesh.faces, dtype=np.int64), _rgba(rgba)))

    def add_pair(self, name: str, mesh: Mesh, rgba: Sequence[float]) -> None:
        """A part on one side of the plane and its mirror copy on the other."""
        self.add(f"{name}.a", mesh, rgba)
        self.add(f"{name}.b", mirrored(mesh, self.axis), rgba)

    def recolour(self, name: str, rgba: Sequence[float]) -> None:
        """Give the part(s) called ``name`` (or ``name.a`` / ``name.b``) another colour."""
        self.parts = [Part(p.name, p.vertices, p.faces, _rgba(rgba)) if p.name.split(".")[0] == name else p
                      for p in self.parts]

    def colours(self) -> set:
        return {p.rgba for p in self.parts}

    def asset(self, name: str, params: dict, yaw_degrees: float = 0.0) -> PartsAsset:
        """The finished object: centred on its bounding-box centre in the object frame (which keeps
        the mirror plane through the origin), then turned by ``yaw_degrees`` about +Z (the source's
        canonical pose in the world)."""
        if not self.parts:
            raise ValueError(f"object {name} has no parts")
        v = np.concatenate([p.vertices for p in self.parts])
        centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
        centre[self.axis] = 0.0  # exactly on the plane (it is, up to rounding, by symmetry)
        a = math.radians(yaw_degrees)
        rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        parts = tuple(Part(p.name, (p.vertices - centre) @ rot.T, p.faces, p.rgba) for p in self.parts)
        normal = rot[:, self.axis]
        return PartsAsset(name=name, parts=parts, params=params, mirror_normal=tuple(float(c) for c in normal),
                          yaw_degrees=float(yaw_degrees))


def asset_normalisation(asset, object_radius: float = 1.0) -> Tuple[np.ndarray, float]:
    """``(centre, scale)`` that put ``asset`` into the sphere of ``object_radius``: the bounding-box
    rule of :func:`normalisation` for a mesh file; for a :class:`PartsAsset`, already centred on its
    bounding box in its own frame, only the scale (its world-frame box is not centred once yawed)."""
    if isinstance(asset, PartsAsset):
        radius = float(np.linalg.norm(asset.vertices, axis=1).max())
        if radius <= 0:
            raise ValueError(f"degenerate object {asset.name}: all vertices coincide")
        return np.zeros(3), object_radius / radius
    return normalisation(asset.vertices, object_radius)


def _rgba(rgba: Sequence[float]) -> RGBA:
    values = [float(min(max(c, 0.0), 1.0)) for c in rgba]
    if len(values) == 3:
        values.append(1.0)
    if len(values) != 4:
        raise ValueError(f"colour must have 3 or 4 components, got {rgba}")
    return tuple(values)  # type: ignore[return-value]
