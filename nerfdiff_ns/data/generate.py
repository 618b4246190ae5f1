"""``nerfdiff-generate-data``: render meshes into an SRN-format multi-view dataset on the CPU.

Sources (``--source``, :mod:`nerfdiff_ns.data.sources`): pybullet_data's ``random_urdfs`` (1,000
procedurally made blobs, one colour each) or procedural categories assembled from primitives with
trimesh (``procedural-chairs``, ``-tables``, ``-mugs``, ``-cars``: mirror symmetric,
coloured per part, a pure function of the object id). Renderer: pybullet's CPU TinyRenderer
(:mod:`nerfdiff_ns.data.render_pybullet`), no GPU, no display.

Object splits (docs: shared DESIGN.md section 3), the same for every source:

* ``train``: ids 000-899, ``views_per_object`` random cameras each (uniform azimuth, elevation
  uniform in ``elevation_range_degrees``);
* ``val``: ids 900-949, ``eval_views_per_object`` cameras on a spiral (azimuth evenly spaced over
  360 degrees starting at 0, elevation sweeping linearly from the low to the high end of the
  range); view ``input_view_index`` is the fixed input view of the evaluation protocol and every
  other view is a target (written to ``<root>/val/protocol.json``);
* ids 950-999 of every source and the named meshes of ``pybullet_data`` (duck, teddy, mug, ...)
  are **reserved for a held-out evaluation**: this tool refuses to render them.

Geometry: each object is normalised into the unit sphere (centre = bounding-box centre of its
vertices, scaled so the largest vertex distance from the centre is ``object_radius``), world +Z up.
Cameras (:mod:`nerfdiff_ns.data.camera_rig`) sit on a sphere of radius ``camera_distance`` looking
at the origin with +Z up; vertical field of view ``fov_degrees``; square images of ``resolution``
pixels with ``fx = fy = (H/2) / tan(fov/2)``, ``cx = W/2``, ``cy = H/2`` (pixel centres at +0.5).
The background is white. Poses are written in SRN's OpenCV camera axes.

Determinism: the same ``seed`` gives byte-identical PNGs and pose files; each object's camera RNG
is derived from ``(seed, object id)`` so an object's cameras do not depend on which other objects
are generated; a procedural object's shape depends on its id only.

From Python (e.g. a test fixture)::

    from nerfdiff_ns.data.generate import GenerateConfig, generate
    folders = generate(GenerateConfig(output_dir=tmp_path, num_objects=2, views_per_object=4,
                                      eval_views_per_object=4, resolution=16, progress=False))
    # folders == {"train": [tmp_path/"train"/"000", ...], "val": [tmp_path/"val"/"900", ...]}
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from nerfdiff_ns.data.camera_rig import (camera_position, camera_rig, intrinsics_for, look_at, near_far,
                                         spiral_camera_angles, train_camera_angles)
from nerfdiff_ns.data.dataset_record import dataset_record, prepare_output, protocol, write_json
from nerfdiff_ns.data.render_pybullet import TinyRenderer, render_object
from nerfdiff_ns.data.sources import SOURCES, SourceName, get_source, load_asset
from nerfdiff_ns.data.sources.ids import (NUM_OBJECT_IDS, RESERVED_OBJECT_IDS, SPLIT_OBJECT_IDS, ReservedObjectError,
                                          parse_object_id, split_of_object)
from nerfdiff_ns.data.sources.parts import normalisation
from nerfdiff_ns.data.sources.random_urdfs import MeshAsset, load_random_urdf, read_obj
from nerfdiff_ns.data.srn import write_srn_object
from nerfdiff_ns.errors import FlagError

__all__ = [
    "GenerateConfig", "generate", "main", "entrypoint", "ReservedObjectError", "SPLIT_OBJECT_IDS",
    "RESERVED_OBJECT_IDS", "NUM_OBJECT_IDS", "split_of_object", "parse_object_id", "MeshAsset", "read_obj",
    "load_random_urdf", "normalisation", "look_at", "camera_position", "train_camera_angles",
    "spiral_camera_angles", "intrinsics_for", "object_cameras", "copy_turn_degrees", "copy_name", "render_object",
    "TinyRenderer", "SOURCES",
]

NUM_RANDOM_URDFS = NUM_OBJECT_IDS
SplitName = Literal["train", "val"]


@dataclass
class GenerateConfig:
    """Render objects into an SRN-format multi-view dataset (pixelNeRF layout) on the CPU with
    pybullet's TinyRenderer. Sources: pybullet_data's random_urdfs blobs, or procedural chairs, tables,
    mugs or cars built from primitives. Splits: train = objects 000-899 (random cameras), val = 900-949
    (spiral cameras, fixed input view). Objects 950-999 of every source and the named pybullet_data
    meshes are reserved for held-out evaluation and are refused."""

    output_dir: Optional[Path] = None
    """Dataset root. Writes <output-dir>/<split>/<object-id>/{rgb/*.png, pose/*.txt, intrinsics.txt}
    (poses: OpenCV camera-to-world), <output-dir>/<split>/protocol.json and <output-dir>/dataset.json.
    A split folder that this tool wrote before is replaced. Default: data/urdf-srn for random-urdfs,
    data/<source>-srn for the others (e.g. data/procedural-chairs-srn)."""
    source: SourceName = "random-urdfs"
    """Objects to render: random-urdfs = pybullet_data's random_urdfs meshes (random blobs, one colour);
    procedural-chairs / procedural-tables / procedural-mugs / procedural-cars = objects assembled from
    primitives (seat, back, legs, ...; body, glass, wheels), mirror symmetric, coloured per part, the same
    mesh for the same id every time."""
    splits: Tuple[SplitName, ...] = ("train", "val")
    """Splits to generate: train = objects 000-899, val = 900-949 (random_urdfs 000-899 / 900-949 for random-urdfs)."""
    num_objects: Optional[int] = None
    """Objects per split: the first N ids of each split, in order (default: all, 900 train / 50 val)."""
    object_ids: Optional[Tuple[str, ...]] = None
    """Explicit object ids instead of --num-objects (e.g. 3 17 901); each goes to the split its id
    belongs to, which must be among --splits. Reserved objects (950-999, named meshes) are refused."""
    views_per_object: int = 24
    """Views per train object: random cameras, azimuth uniform in [0, 360), elevation uniform in the range."""
    eval_views_per_object: int = 24
    """Views per val object, on a spiral: azimuth 360*k/N degrees, elevation sweeping linearly from
    the low to the high end of the range."""
    orientations: int = 1
    """Renders of each train object (random-urdfs only): 1 = the mesh as stored; K > 1 adds K-1 copies,
    each turned by a random angle about the y axis and seen by its own random cameras, written as
    <id>r1 ... <id>r<K-1>. The blobs lie along y and spread alike across x and z, so a turned copy
    looks like another blob: more distinct shapes from the same 900 meshes. (For the shipped model it
    did not help: its NeRF renders turned blobs 0.7 dB worse; benchmarks/README.md.) Val objects are
    always rendered as stored."""
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
        keys = ("source", "views_per_object", "eval_views_per_object", "input_view_index", "resolution",
                "fov_degrees", "camera_distance", "object_radius", "elevation_range_degrees", "light_direction",
                "seed")
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in keys}


def _validate(config: GenerateConfig) -> None:
    get_source(config.source)
    if config.resolution < 4:
        raise FlagError(f"--resolution must be >= 4, got {config.resolution}")
    if not 0.0 < config.fov_degrees < 180.0:
        raise FlagError(f"--fov-degrees must be in (0, 180), got {config.fov_degrees}")
    if config.object_radius <= 0:
        raise FlagError(f"--object-radius must be > 0, got {config.object_radius}")
    if config.camera_distance <= config.object_radius:
        raise FlagError(f"--camera-distance ({config.camera_distance}) must exceed --object-radius "
                        f"({config.object_radius}): the camera would be inside the object's sphere")
    lo, hi = config.elevation_range_degrees
    if not -90.0 < lo <= hi < 90.0:
        raise FlagError(f"--elevation-range-degrees must satisfy -90 < low <= high < 90, got {(lo, hi)}")
    if config.views_per_object < 1 or config.eval_views_per_object < 1:
        raise FlagError("--views-per-object and --eval-views-per-object must be >= 1")
    if not 0 <= config.input_view_index < config.eval_views_per_object:
        raise FlagError(f"--input-view-index ({config.input_view_index}) must be in "
                        f"[0, {config.eval_views_per_object}) (--eval-views-per-object)")
    if config.orientations < 1:
        raise FlagError(f"--orientations must be >= 1, got {config.orientations}")
    if config.orientations > 1 and config.source != "random-urdfs":
        raise FlagError(f"--orientations applies to random-urdfs only: {config.source} objects stand upright, "
                        "and turning them about their up axis is what the cameras' azimuth already does")
    if config.num_objects is not None and config.num_objects < 1:
        raise FlagError(f"--num-objects must be >= 1, got {config.num_objects}")
    if config.num_objects is not None and config.object_ids is not None:
        raise FlagError("give either --num-objects or --object-ids, not both")
    if not config.splits:
        raise FlagError("--splits is empty: choose train and/or val")
    for split in config.splits:
        if split not in SPLIT_OBJECT_IDS:
            raise FlagError(f"unknown split {split!r}: choose from {', '.join(SPLIT_OBJECT_IDS)} "
                            "(the test objects 950-999 are reserved)")
    if len(config.light_direction) != 3 or not any(config.light_direction):
        raise FlagError(f"--light-direction must be a non-zero 3-vector, got {config.light_direction}")


def _select_objects(config: GenerateConfig) -> Dict[str, List[int]]:
    selected: Dict[str, List[int]] = {split: [] for split in config.splits}
    if config.object_ids is not None:
        name = get_source(config.source).error_name
        for token in config.object_ids:
            object_id = parse_object_id(token, name)
            split = split_of_object(object_id, name)
            if split not in selected:
                raise FlagError(f"object {object_id:03d} belongs to split '{split}', which is not in "
                                f"--splits {' '.join(config.splits)}")
            if object_id not in selected[split]:
                selected[split].append(object_id)
        return {split: sorted(ids) for split, ids in selected.items() if ids}
    for split in config.splits:
        ids = list(SPLIT_OBJECT_IDS[split])
        selected[split] = ids if config.num_objects is None else ids[: config.num_objects]
    return selected


def default_output_dir(source: str) -> Path:
    """Where a source's dataset goes without --output-dir (each source its own folder, so generating
    one never replaces another's)."""
    return Path("data/urdf-srn") if source == "random-urdfs" else Path(f"data/{source}-srn")


def _near_far(config: GenerateConfig) -> Tuple[float, float]:
    return near_far(config.camera_distance, config.object_radius)


def object_cameras(config: GenerateConfig, object_id: int, split: str, copy: int = 0) -> np.ndarray:
    """``[V, 4, 4]`` camera-to-world (OpenGL axes) of one object (or of its turned copy ``copy``),
    deterministic in (seed, object id, copy)."""
    return camera_rig(split, object_id, config.seed, config.views_per_object, config.eval_views_per_object,
                      config.elevation_range_degrees, config.camera_distance, copy)


def copy_turn_degrees(seed: int, object_id: int, copy: int) -> float:
    """The angle about y of an object's turned copy (``--orientations``): 0 for the mesh as stored, else
    uniform in [0, 360) from ``(seed, object id, copy)``, independent of which objects are generated."""
    if copy == 0:
        return 0.0
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(object_id), int(copy), 1]))
    return float(rng.uniform(0.0, 360.0))


def copy_name(name: str, copy: int) -> str:
    """The folder of an object's turned copy: ``<id>r<copy>`` (the mesh as stored keeps ``<id>``)."""
    return name if copy == 0 else f"{name}r{copy}"


def generate(config: GenerateConfig) -> Dict[str, List[Path]]:
    """Generate the dataset described by ``config``; returns ``{split: [object folders]}``.

    Raises:
        ReservedObjectError: a reserved object was requested.
        ValueError: invalid settings, or the output folder holds data this run must not overwrite.
    """
    _validate(config)
    selected = _select_objects(config)
    root = Path(config.output_dir) if config.output_dir is not None else default_output_dir(config.source)
    config.output_dir = root
    kept_splits = prepare_output(config, selected)
    focal, cx, cy = intrinsics_for(config.resolution, config.fov_degrees)
    if math.asin(config.object_radius / config.camera_distance) > math.radians(config.fov_degrees) / 2.0:
        print(f"warning: an object of radius {config.object_radius} at distance {config.camera_distance} may not fit "
              f"in a {config.fov_degrees} degree field of view", file=sys.stderr)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    copies = {split: config.orientations if split == "train" else 1 for split in selected}
    total = sum(len(ids) * copies[split] for split, ids in selected.items())
    written: Dict[str, List[Path]] = {}
    start = time.perf_counter()
    with TinyRenderer(config.resolution, config.resolution, config.fov_degrees, *_near_far(config),
                      config.light_direction) as renderer, \
            Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TimeElapsedColumn(), TimeRemainingColumn(), disable=not config.progress) as progress:
        task = progress.add_task("rendering objects", total=total)
        for split, ids in selected.items():
            write_json(root / split / "protocol.json", protocol(config, split, ids))
            written[split] = []
            for object_id in ids:
                progress.update(task, description=f"{split} {object_id:03d}")
                asset = load_asset(config.source, object_id)
                for copy in range(copies[split]):
                    c2ws = object_cameras(config, object_id, split, copy)
                    images, _ = render_object(renderer, asset, c2ws, config.object_radius,
                                              copy_turn_degrees(config.seed, object_id, copy))
                    folder = write_srn_object(root / split / copy_name(asset.name, copy), images, c2ws, focal, cx,
                                              cy, config.resolution, config.resolution)
                    written[split].append(folder)
                    progress.advance(task)
    seconds = time.perf_counter() - start

    splits_record = dict(kept_splits)
    splits_record.update({split: [folder.name for folder in folders] for split, folders in written.items()})
    write_json(root / "dataset.json", dataset_record(config, get_source(config.source).description, splits_record))
    if config.progress:
        num_images = sum(len(f) * (config.views_per_object if s == "train" else config.eval_views_per_object)
                         for s, f in written.items())
        copies_note = " (turned copies included)" if config.orientations > 1 else ""
        print(f"wrote {total} {config.source} objects{copies_note}, {num_images} images of "
              f"{config.resolution}x{config.resolution} to {root} in {seconds:.1f} s", file=sys.stderr)
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
