"""Check a whole training split before pretraining starts, from camera files and image headers.

Why: a batch mixes objects drawn at random, so an object that cannot train (one view, another image size, a
corrupt file) would otherwise surface at whichever step first draws it, or never, and some mistakes (a non-square
image, a scaled scene, another field of view) train without any error into a wrong model. Reading every object's
cameras and image headers takes seconds for thousands of objects; what is refused here names the object and the
fix. The camera distribution a bundle records is computed from the same survey, over every object.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.images import load_rgb
from nerfdiff_ns.data.views import ObjectCameras

__all__ = ["survey_training_objects", "background_warning", "FOV_TOLERANCE", "MIN_SPHERE_FILL"]

FOV_TOLERANCE = 0.02
"""Largest relative difference of tan(fov/2) between two objects of a split (one camera model per split)."""

MIN_SPHERE_FILL = 0.25
"""Below this share of the half field of view, the object sphere is a speck in every view: warn."""

BACKGROUND_TOLERANCE = 0.15
"""Mean absolute difference of an image's border from the background colour that counts as another background."""


def survey_training_objects(
    folders: Sequence[Path], object_radius: float, warn: Optional[Callable[[str], None]] = None,
) -> list[ObjectCameras]:
    """Every object's cameras, refused with a :class:`DataError` where pretraining could not
    use it: fewer than 2 views, non-square images, an image size or field of view other than most objects', or a
    camera inside the object sphere. ``warn`` gets a line when the sphere fills little of the view."""
    from nerfdiff_ns.data.multiview import read_object_cameras

    cameras = [read_object_cameras(folder) for folder in folders]
    for cam in cameras:
        if cam.num_views < 2:
            raise DataError(cam.folder, f"object '{cam.object_id}' has {cam.num_views} view: pretraining pairs a source "
                            "view with another view of the same object, so each object needs at least 2",
                            "add views of this object, or move it out of the split")
        if cam.height != cam.width:
            raise DataError(cam.image_paths[0], f"images are {cam.height}x{cam.width} (HxW): the NeRF and the CDM "
                            "work on square images", "crop or pad every view to a square around the object (and "
                            "shift cx/cy by the crop), then resize all objects to one size")
    # one image size and one camera per split: the odd objects are the ones that differ from most
    sizes = Counter(cam.height for cam in cameras)
    size, count = sizes.most_common(1)[0]
    odd = [cam for cam in cameras if cam.height != size]
    if odd:
        raise DataError(odd[0].image_paths[0], f"{len(odd)} object(s) ({_names(odd)}) have images of another size than "
                        f"the {count} with {size}x{size} (object '{odd[0].object_id}': {odd[0].height}x{odd[0].width}): "
                        "a batch stacks views of many objects, so a split has one image size",
                        "resize every object's views to one size (scaling the intrinsics with them)")
    common = Counter(round(cam.fov_y_degrees, 1) for cam in cameras).most_common(1)[0][0]
    reference = math.tan(math.radians(common) / 2)
    odd = [cam for cam in cameras if abs(cam.tan_half_fov_y / reference - 1.0) > FOV_TOLERANCE]
    if odd:
        raise DataError(odd[0].camera_file, f"{len(odd)} object(s) ({_names(odd)}) have another vertical field of view "
                        f"than the {common:.1f}° of the others (object '{odd[0].object_id}': "
                        f"{odd[0].fov_y_degrees:.1f}°): the bundle records one camera for NGD and photos",
                        "render or crop every object with one field of view, or train on the objects that share it")
    for cam in cameras:
        distances = cam.c2w[:, :3, 3].norm(dim=-1)
        closest = int(distances.argmin())
        if float(distances[closest]) <= object_radius:
            raise DataError(cam.pose_file(closest), f"the camera of {cam.image_paths[closest].name} (object "
                            f"'{cam.object_id}') is {float(distances[closest]):.2f} from the origin, inside the object "
                            f"sphere of radius {object_radius:g}: the object must sit at the origin inside that sphere "
                            "with every camera outside it", "centre the object at the origin and scale the camera "
                            f"translations so the object fits in radius {object_radius:g} (the generated datasets put "
                            "cameras at 2.7)")
    fill = _sphere_fill(cameras, object_radius)
    if warn is not None and fill < MIN_SPHERE_FILL:
        warn(f"the object sphere (radius {object_radius:g}) spans only {fill:.0%} of the half field of view at the "
             "mean camera distance: if the objects fill more of the images, the scene is scaled up; scale the camera "
             f"translations down so each object fits in radius {object_radius:g}")
    return cameras


def background_warning(cameras: Sequence[ObjectCameras], background: Sequence[float], max_objects: int = 8) -> Optional[str]:
    """A line when the first view's border of most of the first ``max_objects`` objects is not ``background``: the
    NeRF composites on that colour, so a dataset on another backdrop trains toward a wrong one."""
    colour = torch.tensor([float(v) for v in background])
    off, means = 0, []
    checked = cameras[:max_objects]
    for cam in checked:
        image = load_rgb(cam.image_paths[0], tuple(colour.tolist()))
        border = torch.cat([image[0], image[-1], image[:, 0], image[:, -1]])
        means.append(border.mean(0))
        if float((border - colour).abs().mean()) > BACKGROUND_TOLERANCE:
            off += 1
    if off * 2 <= len(checked):
        return None
    mean = torch.stack(means).mean(0)
    return (f"the image borders of {off} of {len(checked)} objects average RGB ({', '.join(f'{v:.2f}' for v in mean)}), "
            f"not --nerf.background ({', '.join(f'{v:g}' for v in colour)}): the NeRF renders onto that colour. Set "
            "--nerf.background to the data's backdrop, or matte the objects onto it")


def _names(cameras: Sequence[ObjectCameras], shown: int = 5) -> str:
    names = ", ".join(f"'{cam.object_id}'" for cam in cameras[:shown])
    return names + (" ..." if len(cameras) > shown else "")


def _sphere_fill(cameras: Sequence[ObjectCameras], object_radius: float) -> float:
    """tan of the sphere's angular radius over tan(fov/2), at the mean camera distance of the split (outside the
    sphere: the survey has refused any camera inside it)."""
    distance = float(torch.cat([c.c2w[:, :3, 3].norm(dim=-1) for c in cameras]).mean())
    return math.tan(math.asin(object_radius / distance)) / cameras[0].tan_half_fov_y
