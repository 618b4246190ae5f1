"""nerfstudio / Blender ``transforms.json`` scenes as :class:`MultiViewObject`.

Supported keys (nerfstudio data conventions):

* intrinsics ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` at the top level or per frame (a
  per-frame value overrides the top-level one), or Blender's ``camera_angle_x`` (horizontal field
  of view in radians; ``fx = 0.5 * w / tan(camera_angle_x / 2)``). Missing ``fl_y`` -> ``fl_x``;
  missing ``cx``/``cy`` -> image centre; missing ``w``/``h`` -> the image size.
* ``frames``: each with ``file_path`` (relative to the json's folder, with or without extension,
  e.g. Blender's ``./train/r_0``) and ``transform_matrix`` (4x4 or 3x4 camera-to-world, already in
  OpenGL camera axes: used as is).

All frames must share intrinsics (one camera), because :class:`MultiViewObject` stores one set.
Distortion is not supported: non-zero ``k1..k4``/``p1``/``p2`` or a fisheye/equirectangular
``camera_model`` raise :class:`DataError`. Images whose size differs from ``w``/``h`` get
proportionally scaled intrinsics. The scene is used in its own world frame; the project expects
objects normalised into the unit sphere around the origin.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.images import Background, shared_image_size
from nerfdiff_ns.data.srn import IMAGE_EXTENSIONS, RIGID_TOLERANCE
from nerfdiff_ns.data.views import MultiViewObject, ObjectCameras

__all__ = ["load_transforms_scene", "read_transforms_cameras", "find_transforms_file"]

_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_SUPPORTED_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "PERSPECTIVE")


def find_transforms_file(folder: Union[str, Path]) -> Path:
    """``folder/transforms.json``, or ``folder`` itself when it is a json file."""
    folder = Path(folder)
    return folder if folder.suffix.lower() == ".json" else folder / "transforms.json"


def _number(path: Path, where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(path, f"{where}: '{key}' is {value!r}, expected a finite number",
                        f"set '{key}' to a number")
    return float(value)


def _resolve_image(path: Path, base: Path, file_path: str, index: int) -> Path:
    candidate = (base / file_path)
    if candidate.is_file():
        return candidate
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        with_ext = candidate.with_name(candidate.name + ext)
        if with_ext.is_file():
            return with_ext
    raise DataError(candidate, f"image not found (frame {index} of {path.name}, file_path {file_path!r})",
                    f"check 'file_path' (relative to {base}); tried the name as given and with "
                    f"{'/'.join(IMAGE_EXTENSIONS)} appended")


def _matrix(path: Path, frame: dict, index: int) -> np.ndarray:
    fix = "give 'transform_matrix' as a 4x4 (or 3x4) camera-to-world rigid transform, OpenGL camera axes"
    if "transform_matrix" not in frame:
        raise DataError(path, f"frame {index} has no 'transform_matrix'", fix)
    try:
        mat = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"frame {index}: 'transform_matrix' is not a numeric matrix ({exc})", fix) from exc
    if mat.shape == (3, 4):
        mat = np.concatenate([mat, [[0.0, 0.0, 0.0, 1.0]]], axis=0)
    if mat.shape != (4, 4):
        raise DataError(path, f"frame {index}: 'transform_matrix' has shape {mat.shape}, expected (4, 4)", fix)
    if not np.all(np.isfinite(mat)):
        raise DataError(path, f"frame {index}: 'transform_matrix' contains NaN or infinity", fix)
    rot = mat[:3, :3]
    err = np.abs(rot.T @ rot - np.eye(3)).max()
    if err > RIGID_TOLERANCE or np.linalg.det(rot) <= 0 or np.abs(mat[3] - [0, 0, 0, 1]).max() > RIGID_TOLERANCE:
        raise DataError(path, f"frame {index}: 'transform_matrix' is not a rigid transform "
                        f"(|R^T R - I| = {err:.3g}, det R = {np.linalg.det(rot):.3g})", fix)
    return mat


def load_transforms_scene(folder: Union[str, Path], background: Background = (1.0, 1.0, 1.0)) -> MultiViewObject:
    """Load a nerfstudio/Blender ``transforms.json`` scene (``folder/transforms.json`` or a json
    path) as a :class:`MultiViewObject`; see :func:`read_transforms_cameras`."""
    return read_transforms_cameras(folder).load(background)


def read_transforms_cameras(folder: Union[str, Path]) -> ObjectCameras:
    """A ``transforms.json`` scene's cameras and image files, reading only the images' headers;
    ``object_id`` is the folder name. Frames keep file order.

    Raises:
        DataError: naming the json or image at fault (missing/invalid json, no frames, missing
            image, malformed matrix, missing or per-frame-different intrinsics, distortion).
    """
    path = find_transforms_file(folder)
    base = path.parent
    if not path.is_file():
        raise DataError(path, "transforms.json not found", "point to a folder that contains transforms.json")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"could not parse json ({exc})", "fix the json syntax") from exc
    if not isinstance(meta, dict):
        raise DataError(path, "top level is not a json object", "write {\"frames\": [...], ...}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(path, "no 'frames' list (or it is empty)",
                        "add 'frames': [{'file_path': ..., 'transform_matrix': [[...]]}, ...]")

    model = meta.get("camera_model")
    if model is not None and str(model).upper() not in _SUPPORTED_MODELS:
        raise DataError(path, f"camera_model {model!r} is not supported (pinhole cameras only)",
                        "undistort/reproject the images to a pinhole camera first")

    image_paths: list[Path] = []
    matrices: list[np.ndarray] = []
    cameras: list[dict] = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame:
            raise DataError(path, f"frame {i} has no 'file_path'", "give every frame a 'file_path' to its image")
        for key in _DISTORTION_KEYS:
            value = frame.get(key, meta.get(key, 0.0))
            if _number(path, f"frame {i}", key, value) != 0.0:
                raise DataError(path, f"frame {i}: distortion '{key}' = {value} is not supported",
                                "undistort the images (e.g. with ns-process-data) and set the coefficients to 0")
        frame_model = frame.get("camera_model")
        if frame_model is not None and str(frame_model).upper() not in _SUPPORTED_MODELS:
            raise DataError(path, f"frame {i}: camera_model {frame_model!r} is not supported",
                            "undistort/reproject the images to a pinhole camera first")
        cam = {key: _number(path, f"frame {i}", key, frame.get(key, meta.get(key)))
               for key in _INTRINSIC_KEYS if frame.get(key, meta.get(key)) is not None}
        cameras.append(cam)
        image_paths.append(_resolve_image(path, base, str(frame["file_path"]), i))
        matrices.append(_matrix(path, frame, i))

    for i, cam in enumerate(cameras[1:], start=1):
        if cam != cameras[0]:
            diff = sorted(k for k in set(cam) | set(cameras[0]) if cam.get(k) != cameras[0].get(k))
            raise DataError(path, f"frame {i} has different intrinsics from frame 0 ({', '.join(diff)}); "
                            "shared intrinsics are required",
                            "use one camera for all frames (put fl_x/fl_y/cx/cy/w/h at the top level)")
    cam = cameras[0]
    if "fl_x" not in cam and "camera_angle_x" not in cam:
        raise DataError(path, "no focal length: neither 'fl_x' nor 'camera_angle_x' is given",
                        "add 'fl_x' (pixels) or 'camera_angle_x' (radians)")

    height, width = shared_image_size(image_paths, "all frames of a scene must have the same size")

    # Intrinsics are given for a w x h image; scale them to the size actually on disk.
    w = cam.get("w", float(width))
    h = cam.get("h", float(height))
    if w <= 0 or h <= 0:
        raise DataError(path, f"image size w={w}, h={h} is not positive", "fix 'w' and 'h'")
    if "fl_x" in cam:
        fl_x = cam["fl_x"]
    else:
        fl_x = 0.5 * w / math.tan(0.5 * cam["camera_angle_x"])
    if "fl_y" in cam:
        fl_y = cam["fl_y"]
    elif "camera_angle_y" in cam:
        fl_y = 0.5 * h / math.tan(0.5 * cam["camera_angle_y"])
    else:
        fl_y = fl_x
    if not (fl_x > 0 and fl_y > 0 and math.isfinite(fl_x) and math.isfinite(fl_y)):
        raise DataError(path, f"focal length fl_x={fl_x}, fl_y={fl_y} is not positive",
                        "fix 'fl_x'/'fl_y' or 'camera_angle_x' (radians, in (0, pi))")
    cx = cam.get("cx", w / 2.0)
    cy = cam.get("cy", h / 2.0)
    sx, sy = width / w, height / h
    intrinsics = torch.tensor([fl_x * sx, fl_y * sy, cx * sx, cy * sy], dtype=torch.float32)
    c2w = torch.from_numpy(np.stack(matrices)).to(torch.float32)
    object_id = base.name if base.name else str(base.resolve().name)
    return ObjectCameras(object_id=object_id, folder=base, camera_file=path, image_paths=image_paths, c2w=c2w,
                         intrinsics=intrinsics, height=height, width=width)
