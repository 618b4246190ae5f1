"""``random-urdfs``: pybullet_data's 1,000 procedurally made meshes (``random_urdfs/NNN/NNN.obj``).

Each object is one OBJ with one colour (the ``rgba`` of the material in ``NNN.urdf``); the
renderer loads the OBJ file itself, so this module only finds it and reads its geometry for
normalisation. Ids 950-999 and the named meshes of pybullet_data are reserved.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

from nerfdiff_ns.data.sources.ids import split_of_object

__all__ = ["MeshAsset", "random_urdfs_dir", "read_obj", "load_random_urdf"]


def random_urdfs_dir() -> Path:
    """``pybullet_data/random_urdfs``."""
    import pybullet_data  # lazy: only the generator needs pybullet

    return Path(pybullet_data.getDataPath()) / "random_urdfs"


@dataclass(frozen=True)
class MeshAsset:
    """One OBJ mesh: its file, colour and the geometry pybullet will draw (in file units)."""

    name: str
    obj_path: Path
    rgba: Tuple[float, float, float, float]
    vertices: np.ndarray
    """[N, 3] float64 vertices referenced by faces."""
    faces: np.ndarray
    """[F, 3] int64 triangle indices into ``vertices``."""


def read_obj(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Vertices (only those referenced by faces, [N, 3]) and fan-triangulated faces ([F, 3]) of an OBJ."""
    verts: List[List[float]] = []
    faces: List[List[int]] = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v" and len(parts) >= 4:
            verts.append([float(x) for x in parts[1:4]])
        elif parts[0] == "f" and len(parts) >= 4:
            idx = []
            for tok in parts[1:]:
                i = int(tok.split("/")[0])
                idx.append(i - 1 if i > 0 else len(verts) + i)
            faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
    if not verts or not faces:
        raise ValueError(f"{path}: OBJ has no vertices or faces")
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    used, inverse = np.unique(f.reshape(-1), return_inverse=True)
    return v[used], inverse.reshape(-1, 3)


def load_random_urdf(object_id: int) -> MeshAsset:
    """The mesh and colour of ``random_urdfs/NNN`` (refuses reserved ids)."""
    split_of_object(object_id)
    folder = random_urdfs_dir() / f"{object_id:03d}"
    urdf = folder / f"{object_id:03d}.urdf"
    root = ET.parse(urdf).getroot()
    visual = root.find(".//visual")
    mesh = visual.find("geometry/mesh") if visual is not None else None
    color = visual.find("material/color") if visual is not None else None
    obj_name = mesh.get("filename") if mesh is not None else f"{object_id:03d}.obj"
    rgba = tuple(float(x) for x in color.get("rgba").split()) if color is not None else (0.7, 0.7, 0.7, 1.0)
    obj_path = folder / obj_name
    vertices, faces = read_obj(obj_path)
    return MeshAsset(name=f"{object_id:03d}", obj_path=obj_path, rgba=rgba[:3] + (1.0,), vertices=vertices, faces=faces)
