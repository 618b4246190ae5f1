"""pybullet's CPU TinyRenderer as the dataset generator's camera: one object scene at a time.

``p.connect(p.DIRECT)`` + ``p.getCameraImage(..., renderer=p.ER_TINY_RENDERER)``: no GPU, no
display, about a millisecond per small image. An object is either a random_urdfs OBJ file (one
colour) or a procedural :class:`~nerfdiff_ns.data.sources.parts.PartsAsset`, drawn as one visual
shape per part because TinyRenderer colours per visual shape, not per vertex.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import numpy as np

from nerfdiff_ns.data.sources.parts import Part, PartsAsset, asset_normalisation
from nerfdiff_ns.data.sources.primitives import rotation_y
from nerfdiff_ns.data.sources.random_urdfs import MeshAsset

__all__ = ["TinyRenderer", "render_object", "load_scene", "flat_shaded", "quaternion_about_y"]

Asset = Union[MeshAsset, PartsAsset]


def flat_shaded(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unshared vertices with per-face normals, so each face is lit as one flat facet
    (``(vertices [3F, 3], indices [3F], normals [3F, 3])``)."""
    tri = vertices[faces]  # [F, 3, 3]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return tri.reshape(-1, 3), np.arange(3 * len(faces)), np.repeat(normals, 3, axis=0)


class TinyRenderer:
    """pybullet's CPU TinyRenderer on a private DIRECT connection; one mesh scene at a time.

    ``render(c2w)`` returns ``(rgb uint8 [H, W, 3] on a white background, mask bool [H, W])`` for a
    camera-to-world in OpenGL axes; the image matches :func:`~nerfdiff_ns.data.camera_rig.intrinsics_for`
    (``fx = fy = (H/2)/tan(fov/2)``, principal point at the image centre).
    """

    def __init__(self, width: int, height: int, fov_degrees: float, near: float, far: float,
                 light_direction: Sequence[float] = (1.0, -0.5, 2.0), ambient: float = 0.55,
                 diffuse: float = 0.55, specular: float = 0.05, pixel_centre_fix: bool = True) -> None:
        import pybullet as p  # lazy

        self._p = p
        self.width, self.height = int(width), int(height)
        self.client = p.connect(p.DIRECT)
        projection = list(p.computeProjectionMatrixFOV(fov=fov_degrees, aspect=self.width / self.height,
                                                       nearVal=near, farVal=far, physicsClientId=self.client))
        # TinyRenderer samples pixel (row i, column j) at the continuous image point (u, v) = (j, i + 1)
        # (integer coordinates in OpenGL's bottom-up raster, then flipped), not at the pixel centre
        # (j + 0.5, i + 0.5) that nerfstudio's intrinsics assume. Shifting the principal point of the
        # projection by half a pixel (column-major entries (0, 2) and (1, 2)) makes the images follow
        # cx = W/2, cy = H/2 exactly (measured by tests/test_generate.py; without it the error is 0.5 px).
        if pixel_centre_fix:
            projection[8] += 1.0 / self.width
            projection[9] += 1.0 / self.height
        self.projection = projection
        self.light = dict(lightDirection=list(map(float, light_direction)), lightColor=[1.0, 1.0, 1.0],
                          lightAmbientCoeff=ambient, lightDiffuseCoeff=diffuse, lightSpecularCoeff=specular,
                          shadow=0)

    def __enter__(self) -> "TinyRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self._p.disconnect(physicsClientId=self.client)
            self.client = None

    def clear(self) -> None:
        """Remove every body."""
        self._p.resetSimulation(physicsClientId=self.client)

    def add_mesh(self, obj_path: Path, rgba: Sequence[float], scale: float = 1.0,
                 offset: Sequence[float] = (0.0, 0.0, 0.0),
                 orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> int:
        """Add an OBJ drawn at ``R (scale * v) + offset`` for each file vertex ``v``, with R the rotation
        of the unit quaternion ``orientation`` (x, y, z, w; pybullet's order)."""
        p = self._p
        shape = p.createVisualShape(p.GEOM_MESH, fileName=str(obj_path), meshScale=[float(scale)] * 3,
                                    rgbaColor=list(map(float, rgba)),
                                    visualFramePosition=list(map(float, offset)),
                                    visualFrameOrientation=list(map(float, orientation)), physicsClientId=self.client)
        if shape < 0:
            raise RuntimeError(f"pybullet could not load mesh {obj_path}")
        return p.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, basePosition=[0.0, 0.0, 0.0],
                                 physicsClientId=self.client)

    def add_triangles(self, vertices: np.ndarray, faces: np.ndarray, rgba: Sequence[float]) -> int:
        """Add a triangle mesh given in world coordinates, flat shaded, in one colour."""
        p = self._p
        v, idx, n = flat_shaded(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64))
        shape = p.createVisualShape(p.GEOM_MESH, vertices=v.tolist(), indices=idx.tolist(), normals=n.tolist(),
                                    rgbaColor=list(map(float, rgba)), physicsClientId=self.client)
        if shape < 0:
            raise RuntimeError("pybullet could not create a mesh from vertices")
        return p.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, basePosition=[0.0, 0.0, 0.0],
                                 physicsClientId=self.client)

    def render(self, c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(rgb uint8 [H, W, 3] on white, mask bool [H, W])`` seen from camera-to-world ``c2w``."""
        rgb, body = self.render_bodies(c2w)
        return rgb, body >= 0

    def render_bodies(self, c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(rgb uint8 [H, W, 3] on white, body id int [H, W], -1 on the background)``: which body
        (as returned by :meth:`add_mesh` / :meth:`add_triangles`) each pixel shows."""
        # pybullet wants OpenGL's view matrix (world-to-camera) as 16 floats in column-major order.
        w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))
        view = w2c.T.reshape(-1).tolist()
        _, _, rgba, _, seg = self._p.getCameraImage(self.width, self.height, viewMatrix=view,
                                                    projectionMatrix=self.projection,
                                                    renderer=self._p.ER_TINY_RENDERER,
                                                    physicsClientId=self.client, **self.light)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(self.height, self.width, 4)[..., :3].copy()
        seg = np.asarray(seg).reshape(self.height, self.width)
        body = np.where(seg >= 0, seg & ((1 << 24) - 1), -1)  # low 24 bits: body id, high bits: link
        rgb[body < 0] = 255
        return rgb, body


_MAX_FACES_PER_SHAPE = 400
"""pybullet's cost of adding a mesh body grows faster than linearly in its vertices (about 1 ms for
1,200 flat-shaded vertices, 38 ms for 4,800), so parts are merged by colour into shapes of at most
this many triangles."""


def _merged_by_colour(parts: Sequence[Part]) -> list:
    """Parts of one colour joined into few meshes of at most ``_MAX_FACES_PER_SHAPE`` triangles
    (fewer pybullet shapes, same image): ``[(vertices, faces, rgba), ...]``."""
    groups: dict = {}
    for part in parts:
        groups.setdefault(part.rgba, []).append(part)
    merged = []
    for rgba, group in groups.items():
        chunk: list = []
        for part in group + [None]:
            if chunk and (part is None or sum(len(p.faces) for p in chunk) + len(part.faces) > _MAX_FACES_PER_SHAPE):
                offsets = np.cumsum([0] + [len(p.vertices) for p in chunk[:-1]])
                merged.append((np.concatenate([p.vertices for p in chunk]),
                               np.concatenate([p.faces + o for p, o in zip(chunk, offsets)]), rgba))
                chunk = []
            if part is not None:
                chunk.append(part)
    return merged


def quaternion_about_y(degrees: float) -> Tuple[float, float, float, float]:
    """pybullet's unit quaternion (x, y, z, w) of :func:`~nerfdiff_ns.data.sources.primitives.rotation_y`."""
    half = math.radians(degrees) / 2.0
    return 0.0, math.sin(half), 0.0, math.cos(half)


def load_scene(renderer: TinyRenderer, asset: Asset, object_radius: float = 1.0,
               turn_degrees: float = 0.0) -> Dict[int, tuple]:
    """Clear the scene and add ``asset`` normalised into the sphere of ``object_radius`` (then turned by
    ``turn_degrees`` about the y axis, the sphere's centre fixed); returns ``{body id: rgba}`` of the
    bodies added."""
    centre, scale = asset_normalisation(asset, object_radius)
    rotation = rotation_y(turn_degrees)
    renderer.clear()
    if isinstance(asset, MeshAsset):
        return {renderer.add_mesh(asset.obj_path, asset.rgba, scale=scale, offset=-scale * rotation @ centre,
                                  orientation=quaternion_about_y(turn_degrees)): asset.rgba}
    return {renderer.add_triangles(scale * (vertices - centre) @ rotation.T, faces, rgba): rgba
            for vertices, faces, rgba in _merged_by_colour(asset.parts)}


def render_object(renderer: TinyRenderer, asset: Asset, c2ws: np.ndarray,
                  object_radius: float = 1.0, turn_degrees: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """Normalise ``asset`` into the sphere of ``object_radius``, turn it by ``turn_degrees`` about the y
    axis and render it from each camera. Returns ``(images uint8 [V, H, W, 3], masks bool [V, H, W])``."""
    load_scene(renderer, asset, object_radius, turn_degrees)
    images, masks = zip(*(renderer.render(c2w) for c2w in c2ws))
    return np.stack(images), np.stack(masks)
