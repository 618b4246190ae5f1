"""``nerfdiff-generate-data``: render pybullet's procedural meshes into an SRN-format dataset on the CPU.

Source meshes: ``pybullet_data/random_urdfs/NNN/NNN.obj`` (1,000 procedurally made objects; the
colour is the ``rgba`` of the material in ``NNN.urdf``). Renderer: pybullet's CPU TinyRenderer
(``p.connect(p.DIRECT)``, ``p.getCameraImage(..., renderer=p.ER_TINY_RENDERER)``), no GPU, no display.

Object splits (docs: shared DESIGN.md section 3):

* ``train``: random_urdfs 000-899, ``views_per_object`` random cameras each (uniform azimuth,
  elevation uniform in ``elevation_range_degrees``);
* ``val``: random_urdfs 900-949, ``eval_views_per_object`` cameras on a spiral (azimuth evenly
  spaced over 360 degrees starting at 0, elevation sweeping linearly from the low to the high end
  of the range); view ``input_view_index`` is the fixed input view of the evaluation protocol and
  every other view is a target (written to ``<root>/val/protocol.json``);
* objects 950-999 and the named meshes of ``pybullet_data`` (duck, teddy, mug, ...) are
  **reserved for a held-out evaluation**: this tool refuses to render them.

Geometry: each mesh is normalised into the unit sphere (centre = bounding-box centre of its
vertices, scaled so the largest vertex distance from the centre is ``object_radius``), world +Z up.
Cameras sit on a sphere of radius ``camera_distance`` looking at the origin with +Z up; vertical
field of view ``fov_degrees``; square images of ``resolution`` pixels with
``fx = fy = (H/2) / tan(fov/2)``, ``cx = W/2``, ``cy = H/2`` (pixel centres at +0.5). The
background (segmentation mask < 0) is white. Poses are written in SRN's OpenCV camera axes.

Determinism: the same ``seed`` gives byte-identical PNGs and pose files; each object's RNG is
derived from ``(seed, object id)`` so an object's cameras do not depend on which other objects
are generated.

From Python (e.g. a test fixture)::

    from nerfdiff_ns.data.generate import GenerateConfig, generate
    folders = generate(GenerateConfig(output_dir=tmp_path, num_objects=2, views_per_object=4,
                                      eval_views_per_object=4, resolution=16, progress=False))
    # folders == {"train": [tmp_path/"train"/"000", ...], "val": [tmp_path/"val"/"900", ...]}
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from nerfdiff_ns.data.srn import write_srn_object

__all__ = [
    "GenerateConfig",
    "generate",
    "main",
    "entrypoint",
    "ReservedObjectError",
    "SPLIT_OBJECT_IDS",
    "RESERVED_OBJECT_IDS",
    "split_of_object",
    "parse_object_id",
    "MeshAsset",
    "load_random_urdf",
    "normalisation",
    "look_at",
    "camera_position",
    "train_camera_angles",
    "spiral_camera_angles",
    "intrinsics_for",
    "TinyRenderer",
]

NUM_RANDOM_URDFS = 1000
SPLIT_OBJECT_IDS: Dict[str, range] = {"train": range(0, 900), "val": range(900, 950)}
"""random_urdfs ids of each split the generator may write."""
RESERVED_OBJECT_IDS = range(950, 1000)
"""Held out for an external evaluation: never rendered, trained, tuned or selected on."""
SplitName = Literal["train", "val"]

_GENERATOR_NAME = "nerfdiff-generate-data"
_FORMAT_VERSION = 1


class ReservedObjectError(ValueError):
    """A reserved (held-out) object was requested."""


# ------------------------------------------------------------------------------------------------
# configuration


@dataclass
class GenerateConfig:
    """Render pybullet_data's procedural random_urdfs meshes into an SRN-format multi-view dataset
    (pixelNeRF layout) on the CPU with pybullet's TinyRenderer. Splits: train = objects 000-899
    (random cameras), val = 900-949 (spiral cameras, fixed input view). Objects 950-999 and the
    named pybullet_data meshes are reserved for held-out evaluation and are refused."""

    output_dir: Path = Path("data/urdf-srn")
    """Dataset root. Writes <output-dir>/<split>/<object-id>/{rgb/*.png, pose/*.txt, intrinsics.txt}
    (poses: OpenCV camera-to-world), <output-dir>/<split>/protocol.json and <output-dir>/dataset.json.
    A split folder that this tool wrote before is replaced."""
    splits: Tuple[SplitName, ...] = ("train", "val")
    """Splits to generate: train = random_urdfs 000-899, val = 900-949."""
    num_objects: Optional[int] = None
    """Objects per split: the first N ids of each split, in order (default: all, 900 train / 50 val)."""
    object_ids: Optional[Tuple[str, ...]] = None
    """Explicit random_urdfs ids instead of --num-objects (e.g. 3 17 901); each goes to the split
    its id belongs to, which must be among --splits. Reserved objects (950-999, named meshes) are refused."""
    views_per_object: int = 24
    """Views per train object: random cameras, azimuth uniform in [0, 360), elevation uniform in the range."""
    eval_views_per_object: int = 24
    """Views per val object, on a spiral: azimuth 360*k/N degrees, elevation sweeping linearly from
    the low to the high end of the range."""
    input_view_index: int = 0
    """Evaluation protocol: the fixed input view index of every val object (all other views are
    targets). Written to <output-dir>/<split>/protocol.json."""
    resolution: int = 64
    """Image height and width in pixels (square images)."""
    fov_degrees: float = 45.0
    """Vertical field of view in degrees; fx = fy = (H/2)/tan(fov/2), cx = W/2, cy = H/2."""
    camera_distance: float = 2.7
    """Distance of every camera from the world origin (the object centre)."""
    object_radius: float = 1.0
    """Each mesh is centred on its bounding-box centre and scaled so its farthest vertex lies at this radius."""
    elevation_range_degrees: Tuple[float, float] = (-10.0, 60.0)
    """Camera elevation range in degrees above the XY plane (world +Z up); both ends inside (-90, 90)."""
    light_direction: Tuple[float, float, float] = (1.0, -0.5, 2.0)
    """Fixed world-space direction towards the light (pybullet lightDirection)."""
    seed: int = 0
    """Random seed: the same seed gives byte-identical images and poses (per-object RNG from seed + object id)."""
    overwrite: bool = False
    """Allow writing into an output folder with different settings or folders this tool did not write."""
    progress: bool = True
    """Show a progress bar over objects."""

    def render_settings(self) -> dict:
        """The settings that decide what an object's files look like (everything but the selection)."""
        keys = ("views_per_object", "eval_views_per_object", "input_view_index", "resolution", "fov_degrees",
                "camera_distance", "object_radius", "elevation_range_degrees", "light_direction", "seed")
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in keys}


def _validate(config: GenerateConfig) -> None:
    if config.resolution < 4:
        raise ValueError(f"--resolution must be >= 4, got {config.resolution}")
    if not 0.0 < config.fov_degrees < 180.0:
        raise ValueError(f"--fov-degrees must be in (0, 180), got {config.fov_degrees}")
    if config.object_radius <= 0:
        raise ValueError(f"--object-radius must be > 0, got {config.object_radius}")
    if config.camera_distance <= config.object_radius:
        raise ValueError(f"--camera-distance ({config.camera_distance}) must exceed --object-radius "
                         f"({config.object_radius}): the camera would be inside the object's sphere")
    lo, hi = config.elevation_range_degrees
    if not -90.0 < lo <= hi < 90.0:
        raise ValueError(f"--elevation-range-degrees must satisfy -90 < low <= high < 90, got {(lo, hi)}")
    if config.views_per_object < 1 or config.eval_views_per_object < 1:
        raise ValueError("--views-per-object and --eval-views-per-object must be >= 1")
    if not 0 <= config.input_view_index < config.eval_views_per_object:
        raise ValueError(f"--input-view-index ({config.input_view_index}) must be in "
                         f"[0, {config.eval_views_per_object}) (--eval-views-per-object)")
    if config.num_objects is not None and config.num_objects < 1:
        raise ValueError(f"--num-objects must be >= 1, got {config.num_objects}")
    if config.num_objects is not None and config.object_ids is not None:
        raise ValueError("give either --num-objects or --object-ids, not both")
    if not config.splits:
        raise ValueError("--splits is empty: choose train and/or val")
    for split in config.splits:
        if split not in SPLIT_OBJECT_IDS:
            raise ValueError(f"unknown split {split!r}: choose from {', '.join(SPLIT_OBJECT_IDS)} "
                             "(the test objects 950-999 are reserved)")
    if len(config.light_direction) != 3 or not any(config.light_direction):
        raise ValueError(f"--light-direction must be a non-zero 3-vector, got {config.light_direction}")


# ------------------------------------------------------------------------------------------------
# object ids and splits


def split_of_object(object_id: int) -> str:
    """The split a random_urdfs id belongs to; raises :class:`ReservedObjectError` for 950-999."""
    if object_id in RESERVED_OBJECT_IDS:
        raise ReservedObjectError(
            f"random_urdfs object {object_id:03d} is reserved for the held-out evaluation (objects "
            f"{RESERVED_OBJECT_IDS.start}-{RESERVED_OBJECT_IDS.stop - 1}) and must never be rendered for "
            "training, tuning or selection. Use train objects 000-899 or val objects 900-949.")
    for split, ids in SPLIT_OBJECT_IDS.items():
        if object_id in ids:
            return split
    raise ValueError(f"object id {object_id} does not exist: random_urdfs has ids 000-{NUM_RANDOM_URDFS - 1:03d}")


def parse_object_id(token: str) -> int:
    """``"7"``/``"007"``/``"random_urdfs/007/007.obj"`` -> 7. Reserved ids and named pybullet_data
    meshes (``duck``, ``teddy_vhacd.urdf``, ...) raise :class:`ReservedObjectError`; other
    tokens raise ``ValueError``."""
    text = str(token).strip()
    match = re.fullmatch(r"\d+", text) or re.search(r"random_urdfs[/\\](\d+)", text)
    if match is None:
        raise ReservedObjectError(
            f"{token!r} is not a random_urdfs id. The named meshes shipped in pybullet_data (duck, teddy, "
            "mug, bunny, ...) are reserved for the held-out evaluation and cannot be generated; "
            "pass numeric ids 0-949 (train 0-899, val 900-949).")
    object_id = int(match.group(1) if match.re.groups else match.group(0))
    split_of_object(object_id)  # raises for reserved / out-of-range ids
    return object_id


def _select_objects(config: GenerateConfig) -> Dict[str, List[int]]:
    selected: Dict[str, List[int]] = {split: [] for split in config.splits}
    if config.object_ids is not None:
        for token in config.object_ids:
            object_id = parse_object_id(token)
            split = split_of_object(object_id)
            if split not in selected:
                raise ValueError(f"object {object_id:03d} belongs to split '{split}', which is not in "
                                 f"--splits {' '.join(config.splits)}")
            if object_id not in selected[split]:
                selected[split].append(object_id)
        return {split: sorted(ids) for split, ids in selected.items() if ids}
    for split in config.splits:
        ids = list(SPLIT_OBJECT_IDS[split])
        selected[split] = ids if config.num_objects is None else ids[: config.num_objects]
    return selected


# ------------------------------------------------------------------------------------------------
# meshes


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


def normalisation(vertices: np.ndarray, object_radius: float = 1.0) -> Tuple[np.ndarray, float]:
    """``(centre, scale)`` such that ``scale * (vertices - centre)`` has its bounding-box centre at
    the origin and its largest vertex norm equal to ``object_radius``."""
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    if radius <= 0:
        raise ValueError("degenerate mesh: all vertices coincide")
    return centre, object_radius / radius


# ------------------------------------------------------------------------------------------------
# cameras


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


# ------------------------------------------------------------------------------------------------
# rendering


class TinyRenderer:
    """pybullet's CPU TinyRenderer on a private DIRECT connection; one mesh scene at a time.

    ``render(c2w)`` returns ``(rgb uint8 [H, W, 3] on a white background, mask bool [H, W])`` for a
    camera-to-world in OpenGL axes; the image matches :func:`intrinsics_for` (``fx = fy =
    (H/2)/tan(fov/2)``, principal point at the image centre).
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
                 offset: Sequence[float] = (0.0, 0.0, 0.0)) -> int:
        """Add an OBJ drawn at ``scale * v + offset`` for each file vertex ``v``."""
        p = self._p
        shape = p.createVisualShape(p.GEOM_MESH, fileName=str(obj_path), meshScale=[float(scale)] * 3,
                                    rgbaColor=list(map(float, rgba)),
                                    visualFramePosition=list(map(float, offset)), physicsClientId=self.client)
        if shape < 0:
            raise RuntimeError(f"pybullet could not load mesh {obj_path}")
        return p.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, basePosition=[0.0, 0.0, 0.0],
                                 physicsClientId=self.client)

    def render(self, c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        # pybullet wants OpenGL's view matrix (world-to-camera) as 16 floats in column-major order.
        w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))
        view = w2c.T.reshape(-1).tolist()
        _, _, rgba, _, seg = self._p.getCameraImage(self.width, self.height, viewMatrix=view,
                                                    projectionMatrix=self.projection,
                                                    renderer=self._p.ER_TINY_RENDERER,
                                                    physicsClientId=self.client, **self.light)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(self.height, self.width, 4)[..., :3].copy()
        mask = np.asarray(seg).reshape(self.height, self.width) >= 0
        rgb[~mask] = 255
        return rgb, mask


def _near_far(config: GenerateConfig) -> Tuple[float, float]:
    return 0.5 * (config.camera_distance - config.object_radius), config.camera_distance + 2.0 * config.object_radius + 1.0


def object_cameras(config: GenerateConfig, object_id: int, split: str) -> np.ndarray:
    """``[V, 4, 4]`` camera-to-world (OpenGL axes) of one object, deterministic in (seed, object id)."""
    if split == "train":
        rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), int(object_id)]))
        azimuth, elevation = train_camera_angles(rng, config.views_per_object, config.elevation_range_degrees)
    else:
        azimuth, elevation = spiral_camera_angles(config.eval_views_per_object, config.elevation_range_degrees)
    return np.stack([look_at(camera_position(a, e, config.camera_distance)) for a, e in zip(azimuth, elevation)])


def render_object(renderer: TinyRenderer, asset: MeshAsset, c2ws: np.ndarray,
                  object_radius: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Normalise ``asset`` into the sphere of ``object_radius`` and render it from each camera.
    Returns ``(images uint8 [V, H, W, 3], masks bool [V, H, W])``."""
    centre, scale = normalisation(asset.vertices, object_radius)
    renderer.clear()
    renderer.add_mesh(asset.obj_path, asset.rgba, scale=scale, offset=-scale * centre)
    images, masks = zip(*(renderer.render(c2w) for c2w in c2ws))
    return np.stack(images), np.stack(masks)


# ------------------------------------------------------------------------------------------------
# output bookkeeping


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _prepare_output(config: GenerateConfig, selected: Dict[str, List[int]]) -> dict:
    """Check the output folder and clear the splits about to be written; return dataset.json's old splits."""
    root = config.output_dir
    old = _read_json(root / "dataset.json") if (root / "dataset.json").is_file() else None
    kept_splits: dict = {}
    if old is not None:
        same = old.get("settings") == config.render_settings()
        others = {s: ids for s, ids in old.get("splits", {}).items() if s not in selected}
        if others and not same:
            if not config.overwrite:
                raise ValueError(
                    f"{root / 'dataset.json'}: this folder holds splits {', '.join(others)} generated with different "
                    "settings; the dataset would mix settings. Use another --output-dir, the same settings, or "
                    "--overwrite (which drops those splits from dataset.json).")
        elif same:
            kept_splits = others
    for split in selected:
        split_dir = root / split
        if split_dir.exists() and any(split_dir.iterdir()):
            if (split_dir / "protocol.json").is_file() or config.overwrite:
                shutil.rmtree(split_dir)
            else:
                raise ValueError(f"{split_dir}: folder exists and was not written by {_GENERATOR_NAME}; "
                                 "choose another --output-dir or pass --overwrite to replace it")
    return kept_splits


def _protocol(config: GenerateConfig, split: str, ids: List[int]) -> dict:
    focal, cx, cy = intrinsics_for(config.resolution, config.fov_degrees)
    spiral = split != "train"
    return {
        "generator": _GENERATOR_NAME,
        "format_version": _FORMAT_VERSION,
        "split": split,
        "object_ids": [f"{i:03d}" for i in ids],
        "camera_layout": "spiral" if spiral else "random",
        "views_per_object": config.eval_views_per_object if spiral else config.views_per_object,
        "input_view_index": config.input_view_index if spiral else None,
        "target_views": "all views except input_view_index" if spiral else None,
        "spiral": ("azimuth_k = 360*k/N degrees, elevation_k = low + (high-low)*k/(N-1)" if spiral else None),
        "resolution": config.resolution,
        "intrinsics": {"fx": focal, "fy": focal, "cx": cx, "cy": cy},
        "fov_degrees": config.fov_degrees,
        "camera_distance": config.camera_distance,
        "object_radius": config.object_radius,
        "elevation_range_degrees": list(config.elevation_range_degrees),
        "background": [1.0, 1.0, 1.0],
        "seed": config.seed,
    }


# ------------------------------------------------------------------------------------------------
# entry points


def generate(config: GenerateConfig) -> Dict[str, List[Path]]:
    """Generate the dataset described by ``config``; returns ``{split: [object folders]}``.

    Raises:
        ReservedObjectError: a reserved object was requested.
        ValueError: invalid settings, or the output folder holds data this run must not overwrite.
    """
    _validate(config)
    selected = _select_objects(config)
    root = Path(config.output_dir)
    config.output_dir = root
    kept_splits = _prepare_output(config, selected)
    focal, cx, cy = intrinsics_for(config.resolution, config.fov_degrees)
    near, far = _near_far(config)
    half_fov = math.radians(config.fov_degrees) / 2.0
    if math.asin(config.object_radius / config.camera_distance) > half_fov:
        print(f"warning: an object of radius {config.object_radius} at distance {config.camera_distance} may not fit "
              f"in a {config.fov_degrees} degree field of view", file=sys.stderr)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    total = sum(len(ids) for ids in selected.values())
    written: Dict[str, List[Path]] = {}
    start = time.perf_counter()
    with TinyRenderer(config.resolution, config.resolution, config.fov_degrees, near, far,
                      config.light_direction) as renderer, \
            Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TimeElapsedColumn(), TimeRemainingColumn(), disable=not config.progress) as progress:
        task = progress.add_task("rendering objects", total=total)
        for split, ids in selected.items():
            _write_json(root / split / "protocol.json", _protocol(config, split, ids))
            written[split] = []
            for object_id in ids:
                progress.update(task, description=f"{split} {object_id:03d}")
                asset = load_random_urdf(object_id)
                c2ws = object_cameras(config, object_id, split)
                images, _ = render_object(renderer, asset, c2ws, config.object_radius)
                folder = write_srn_object(root / split / asset.name, images, c2ws, focal, cx, cy,
                                          config.resolution, config.resolution)
                written[split].append(folder)
                progress.advance(task)
    seconds = time.perf_counter() - start

    splits_record = dict(kept_splits)
    splits_record.update({split: [f"{i:03d}" for i in ids] for split, ids in selected.items()})
    _write_json(root / "dataset.json", {
        "generator": _GENERATOR_NAME,
        "format_version": _FORMAT_VERSION,
        "format": "SRN (pixelNeRF layout): <split>/<object>/rgb/*.png, pose/*.txt (OpenCV camera-to-world), "
                  "intrinsics.txt",
        "source": "pybullet_data/random_urdfs (train 000-899, val 900-949; 950-999 reserved)",
        "world": "+Z up, objects normalised into the sphere of object_radius around the origin",
        "settings": config.render_settings(),
        "splits": {s: splits_record[s] for s in sorted(splits_record)},
    })
    if config.progress:
        num_images = sum(len(f) * (config.views_per_object if s == "train" else config.eval_views_per_object)
                         for s, f in written.items())
        print(f"wrote {total} objects, {num_images} images of {config.resolution}x{config.resolution} "
              f"to {root} in {seconds:.1f} s", file=sys.stderr)
    return written


def main(args: Optional[Sequence[str]] = None) -> Dict[str, List[Path]]:
    """Parse ``args`` (default: ``sys.argv[1:]``) with tyro and run :func:`generate`."""
    import tyro

    config = tyro.cli(GenerateConfig, args=args)
    return generate(config)


def entrypoint() -> None:
    """Console script ``nerfdiff-generate-data``: errors in settings are printed without a traceback."""
    try:
        main()
    except ValueError as exc:  # includes ReservedObjectError
        print(f"nerfdiff-generate-data: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    entrypoint()
