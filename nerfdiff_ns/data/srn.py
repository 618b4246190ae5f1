"""SRN-format multi-view folders (the pixelNeRF / NerfDiff layout) and pose conventions.

Layout::

    <root>/<split>/<object_id>/
        rgb/000000.png ...        images (any size; all views of an object the same size)
        pose/000000.txt ...       4x4 camera-to-world, OpenCV camera axes (x right, y down, z forward),
                                  16 whitespace-separated numbers on 1 or 4 lines, matched to images by stem
        intrinsics.txt            line 1 "f cx cy 0.", ..., last line "H W" (pixelNeRF writes
                                  "f cx cy 0." / "0. 0. 0." / "1." / "H W")

In memory (docs/ARCHITECTURE.md) cameras use nerfstudio's convention: the same world frame, but
OpenGL camera axes (x right, y up, looking along -z). The two differ by ``diag(1, -1, -1)`` on the
rotation columns, applied on read (:func:`srn_pose_to_nerfstudio`) and write
(:func:`nerfstudio_pose_to_srn`) only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Sequence, TypeVar, Union

import numpy as np
import torch

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.images import Background, save_rgb, shared_image_size
from nerfdiff_ns.data.views import MultiViewObject, ObjectCameras

__all__ = [
    "OPENCV_TO_OPENGL",
    "IMAGE_EXTENSIONS",
    "SRNIntrinsics",
    "srn_pose_to_nerfstudio",
    "nerfstudio_pose_to_srn",
    "read_intrinsics",
    "read_pose",
    "load_srn_object",
    "read_srn_cameras",
    "write_srn_object",
    "list_srn_objects",
    "is_srn_object",
    "is_object_folder",
]

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])
"""Right-multiplying a camera-to-world rotation by this flips its camera y and z axes:
OpenCV (y down, z forward) <-> OpenGL (y up, looking along -z). It is its own inverse."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

#: tolerance on ``R^T R - I`` and on the bottom row when checking that a pose is a rigid transform
RIGID_TOLERANCE = 1e-2

PoseT = TypeVar("PoseT", torch.Tensor, np.ndarray)


class SRNIntrinsics(NamedTuple):
    """Contents of an SRN ``intrinsics.txt``: focal length and principal point in pixels of an
    image of ``height x width`` pixels (square pixels: fx = fy = focal)."""

    focal: float
    cx: float
    cy: float
    height: int
    width: int


# ----------------------------------------------------------------------------------------------
# pose conventions


def _flip_camera_axes(c2w: PoseT) -> PoseT:
    if isinstance(c2w, torch.Tensor):
        if c2w.shape[-2:] not in ((4, 4), (3, 4)):
            raise ValueError(f"c2w must be [..., 4, 4] or [..., 3, 4], got {tuple(c2w.shape)}")
        flip = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=c2w.dtype, device=c2w.device)
        return c2w * flip  # broadcasts over columns: negates columns 1 and 2 (camera y, z)
    arr = np.asarray(c2w)
    if arr.shape[-2:] not in ((4, 4), (3, 4)):
        raise ValueError(f"c2w must be [..., 4, 4] or [..., 3, 4], got {arr.shape}")
    flip = np.array([1.0, -1.0, -1.0, 1.0], dtype=arr.dtype if arr.dtype.kind == "f" else np.float64)
    return arr * flip


def srn_pose_to_nerfstudio(c2w: PoseT) -> PoseT:
    """SRN/OpenCV camera-to-world ``[..., 4, 4]`` (or ``[..., 3, 4]``) -> nerfstudio/OpenGL axes.

    Negates the camera y and z axes (rotation columns 1 and 2); the position is unchanged.
    Torch in -> torch out (same dtype/device), numpy in -> numpy out. Exact (sign flips only).
    """
    return _flip_camera_axes(c2w)


def nerfstudio_pose_to_srn(c2w: PoseT) -> PoseT:
    """nerfstudio/OpenGL camera-to-world -> SRN/OpenCV axes; the exact inverse of
    :func:`srn_pose_to_nerfstudio` (the flip is its own inverse)."""
    return _flip_camera_axes(c2w)


# ----------------------------------------------------------------------------------------------
# reading


def _parse_numbers(path: Path, text: str, what: str) -> list[float]:
    try:
        return [float(tok) for tok in text.split()]
    except ValueError as exc:
        raise DataError(path, f"{what} contains a non-numeric value ({exc})",
                        "the file must contain only whitespace-separated numbers") from exc


def read_intrinsics(path: Union[str, Path]) -> SRNIntrinsics:
    """Read an SRN ``intrinsics.txt`` (first line ``f cx cy 0``, last line ``H W``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "intrinsics file not found",
                        "every SRN object folder needs intrinsics.txt (first line 'f cx cy 0', last line 'H W')")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"could not read intrinsics ({exc})", "replace it with a text file") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    fix = "write line 1 as 'f cx cy 0.' and the last line as 'H W' (pixelNeRF layout: 'f cx cy 0.' / '0. 0. 0.' / '1.' / 'H W')"
    if len(lines) < 2:
        raise DataError(path, f"malformed intrinsics: {len(lines)} non-empty line(s), expected at least 2", fix)
    first = _parse_numbers(path, lines[0], "intrinsics")
    last = _parse_numbers(path, lines[-1], "intrinsics")
    if len(first) < 3:
        raise DataError(path, f"malformed intrinsics: first line has {len(first)} numbers, expected 'f cx cy 0'", fix)
    if len(last) != 2:
        raise DataError(path, f"malformed intrinsics: last line has {len(last)} numbers, expected 'H W'", fix)
    focal, cx, cy = first[:3]
    if not all(math.isfinite(v) for v in (focal, cx, cy)) or focal <= 0:
        raise DataError(path, f"malformed intrinsics: focal {focal}, cx {cx}, cy {cy} (focal must be > 0, all finite)", fix)
    height, width = last
    if not (math.isfinite(height) and math.isfinite(width)) or height != int(height) or width != int(width) \
            or height < 1 or width < 1:
        raise DataError(path, f"malformed intrinsics: image size '{lines[-1].strip()}' is not two positive integers", fix)
    return SRNIntrinsics(float(focal), float(cx), float(cy), int(height), int(width))


def _check_rigid(path: Path, mat: np.ndarray) -> None:
    fix = "write a camera-to-world rigid transform [R t; 0 0 0 1] with R a rotation matrix"
    if not np.all(np.isfinite(mat)):
        raise DataError(path, "malformed pose: contains NaN or infinity", fix)
    if np.abs(mat[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > RIGID_TOLERANCE:
        raise DataError(path, f"malformed pose: bottom row is {mat[3].tolist()}, expected [0, 0, 0, 1]", fix)
    rot = mat[:3, :3]
    err = np.abs(rot.T @ rot - np.eye(3)).max()
    det = np.linalg.det(rot)
    if err > RIGID_TOLERANCE or det <= 0:
        raise DataError(path, f"malformed pose: not a rigid transform (|R^T R - I| = {err:.3g}, det R = {det:.3g})", fix)


def read_pose(path: Union[str, Path]) -> np.ndarray:
    """Read one SRN pose file: a 4x4 camera-to-world matrix in OpenCV camera axes, as written
    (float64, no axis conversion). Accepts 16 numbers on 1 or 4 lines; checks it is a finite
    rigid transform."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "pose file not found", "write one pose/<stem>.txt per rgb/<stem>.png")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"could not read pose ({exc})", "replace it with a text file") from exc
    numbers = _parse_numbers(path, text, "pose")
    if len(numbers) != 16:
        raise DataError(path, f"malformed pose: {len(numbers)} numbers, expected 16 (a 4x4 matrix)",
                        "write the 4x4 camera-to-world matrix row by row, 16 numbers on 1 or 4 lines")
    mat = np.asarray(numbers, dtype=np.float64).reshape(4, 4)
    _check_rigid(path, mat)
    return mat


def _natural_key(name: str) -> tuple:
    """Sort key: integer names by value ("2" < "10"), then the rest alphabetically."""
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def _list_images(rgb_dir: Path) -> list[Path]:
    images = [p for p in rgb_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    stems: dict[str, Path] = {}
    for img in images:
        if img.stem in stems:
            raise DataError(img, f"two images share the stem '{img.stem}' (also {stems[img.stem].name})",
                            "keep one image per view; poses are matched to images by file stem")
        stems[img.stem] = img
    return sorted(images, key=lambda p: _natural_key(p.stem))


def is_srn_object(folder: Union[str, Path]) -> bool:
    """True if ``folder`` looks like an SRN object (has ``rgb/``, ``pose/`` or ``intrinsics.txt``)."""
    folder = Path(folder)
    return (folder / "rgb").is_dir() or (folder / "pose").is_dir() or (folder / "intrinsics.txt").is_file()


def load_srn_object(folder: Union[str, Path], background: Background = (1.0, 1.0, 1.0)) -> MultiViewObject:
    """Load one SRN object folder into a :class:`MultiViewObject` (nerfstudio camera axes); see
    :func:`read_srn_cameras` for the layout and the errors."""
    return read_srn_cameras(folder).load(background)


def read_srn_cameras(folder: Union[str, Path]) -> ObjectCameras:
    """One SRN object's cameras and image files, without decoding the images (nerfstudio camera axes).

    Views are sorted by image file stem (numerically when stems are integers); each image's pose
    is ``pose/<stem>.txt``. When the images are not the size named in ``intrinsics.txt``, the
    focal length and principal point are scaled proportionally (as pixelNeRF does).

    Raises:
        DataError: naming the file or folder at fault (missing rgb/, pose/ or intrinsics.txt,
            missing pose for an image, image/pose count mismatch, unequal image sizes,
            unreadable image, malformed pose or intrinsics).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "object folder not found", "check the dataset root and split")
    rgb_dir, pose_dir, intr_path = folder / "rgb", folder / "pose", folder / "intrinsics.txt"
    layout = "expected <object>/rgb/*.png, <object>/pose/*.txt and <object>/intrinsics.txt (SRN layout)"
    if not rgb_dir.is_dir():
        raise DataError(rgb_dir, "missing rgb/ folder", layout)
    if not pose_dir.is_dir():
        raise DataError(pose_dir, "missing pose/ folder", layout)
    if not intr_path.is_file():
        raise DataError(intr_path, "missing intrinsics.txt", layout)
    intr = read_intrinsics(intr_path)

    image_paths = _list_images(rgb_dir)
    if not image_paths:
        raise DataError(rgb_dir, f"no images ({', '.join(IMAGE_EXTENSIONS)}) in rgb/", layout)
    pose_paths = sorted(pose_dir.glob("*.txt"), key=lambda p: _natural_key(p.stem))
    for img in image_paths:
        if not (pose_dir / f"{img.stem}.txt").is_file():
            raise DataError(pose_dir / f"{img.stem}.txt", f"pose missing for image {img.name}",
                            f"write pose/{img.stem}.txt (4x4 camera-to-world) or remove the image")
    if len(pose_paths) != len(image_paths):
        stems = {img.stem for img in image_paths}
        extra = [p.name for p in pose_paths if p.stem not in stems]
        raise DataError(pose_dir, f"image/pose count mismatch: {len(image_paths)} images in rgb/ but "
                        f"{len(pose_paths)} poses (poses without an image: {', '.join(extra[:5])}"
                        f"{' ...' if len(extra) > 5 else ''})",
                        "keep exactly one pose/<stem>.txt per rgb/<stem>.png")

    height, width = shared_image_size(image_paths, "all views of an object must have the same size: resize them "
                                      "consistently")

    poses = np.stack([read_pose(pose_dir / f"{p.stem}.txt") for p in image_paths])
    c2w = torch.from_numpy(srn_pose_to_nerfstudio(poses)).to(torch.float32)

    sx, sy = width / intr.width, height / intr.height
    intrinsics = torch.tensor([intr.focal * sx, intr.focal * sy, intr.cx * sx, intr.cy * sy], dtype=torch.float32)
    return ObjectCameras(object_id=folder.name, folder=folder, camera_file=intr_path, image_paths=image_paths, c2w=c2w,
                         intrinsics=intrinsics, height=height, width=width)


# ----------------------------------------------------------------------------------------------
# writing


def _fmt(value: float) -> str:
    value = float(value) + 0.0  # no "-0"
    return f"{value:.9g}"


def write_srn_object(
    folder: Union[str, Path],
    images: Union[torch.Tensor, np.ndarray, Sequence],
    c2w_nerfstudio: Union[torch.Tensor, np.ndarray],
    fx: float,
    cx: float,
    cy: float,
    height: int,
    width: int,
) -> Path:
    """Write one object in SRN format: ``rgb/000000.png``, ``pose/000000.txt`` (OpenCV axes),
    ``intrinsics.txt`` (pixelNeRF's 4 lines ``f cx cy 0.`` / ``0. 0. 0.`` / ``1.`` / ``H W``).

    Args:
        images: ``[V, H, W, 3]`` float in [0, 1] or uint8.
        c2w_nerfstudio: ``[V, 4, 4]`` camera-to-world in nerfstudio/OpenGL camera axes.
        fx, cx, cy: focal length and principal point in pixels (SRN stores one focal: fx = fy).
        height, width: image size; must match ``images``.

    Output is deterministic: the same inputs give byte-identical files.
    """
    folder = Path(folder)
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    poses = c2w_nerfstudio.detach().cpu().numpy() if isinstance(c2w_nerfstudio, torch.Tensor) else np.asarray(c2w_nerfstudio)
    poses = poses.astype(np.float64)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [V, H, W, 3], got {images.shape}")
    if images.shape[1:3] != (height, width):
        raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} but height x width is {height}x{width}")
    if poses.shape == (images.shape[0], 3, 4):
        poses = np.concatenate([poses, np.tile([[[0.0, 0.0, 0.0, 1.0]]], (poses.shape[0], 1, 1))], axis=1)
    if poses.shape != (images.shape[0], 4, 4):
        raise ValueError(f"c2w must be [V, 4, 4] with V={images.shape[0]}, got {poses.shape}")
    srn_poses = nerfstudio_pose_to_srn(poses)

    (folder / "rgb").mkdir(parents=True, exist_ok=True)
    (folder / "pose").mkdir(parents=True, exist_ok=True)
    for i, (image, pose) in enumerate(zip(images, srn_poses)):
        save_rgb(folder / "rgb" / f"{i:06d}.png", image)
        text = "\n".join(" ".join(_fmt(v) for v in row) for row in pose) + "\n"
        (folder / "pose" / f"{i:06d}.txt").write_text(text)
    (folder / "intrinsics.txt").write_text(
        f"{_fmt(fx)} {_fmt(cx)} {_fmt(cy)} 0.\n0. 0. 0.\n1.\n{int(height)} {int(width)}\n")
    return folder


# ----------------------------------------------------------------------------------------------
# listing


def is_object_folder(folder: Union[str, Path]) -> bool:
    """True for a folder that holds one object in either layout: SRN, or a ``transforms.json`` scene."""
    folder = Path(folder)
    return folder.is_dir() and (is_srn_object(folder) or (folder / "transforms.json").is_file())


def list_srn_objects(root: Union[str, Path], split: str) -> list[Path]:
    """Object folders of ``<root>/<split>``, sorted by name (numerically for integer names).

    A sub-folder counts as an object when it has ``rgb/``, ``pose/``, ``intrinsics.txt`` or a
    ``transforms.json``; other files (e.g. ``protocol.json``) and hidden folders are ignored.
    """
    root = Path(root)
    split_dir = root / split
    if not root.is_dir():
        raise DataError(root, "dataset root not found",
                        "check the path, or create a dataset with `nerfdiff-generate-data --output-dir ...`")
    layout = (f"the dataset root holds {split}/ (and val/ for evaluation) with one folder per object: SRN "
              "(<object>/rgb/*.png, <object>/pose/*.txt, <object>/intrinsics.txt) or <object>/transforms.json")
    if not split_dir.is_dir():
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if any(is_object_folder(p) for p in folders):
            raise DataError(split_dir, f"split folder '{split}' not found, and {root} holds object folders itself "
                            f"({', '.join(p.name for p in folders[:3])}{' ...' if len(folders) > 3 else ''})",
                            f"move the object folders into {split_dir}/ (and a few held-out ones into "
                            f"{root / 'val'}/); {layout}")
        names = ", ".join(p.name for p in folders) or "none"
        raise DataError(split_dir, f"split folder '{split}' not found (folders there: {names})",
                        f"{layout}: rename or symlink the folder that holds the objects to {split}/, or create a "
                        "dataset with `nerfdiff-generate-data --output-dir ...`")
    objects = [p for p in split_dir.iterdir() if not p.name.startswith(".") and is_object_folder(p)]
    if not objects:
        raise DataError(split_dir, "split folder contains no objects", layout)
    return sorted(objects, key=lambda p: _natural_key(p.name))
