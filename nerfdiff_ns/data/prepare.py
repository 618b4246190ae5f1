"""Photo preparation: turn any photo of one object into the input the bundle was trained on.

A user's photo is not a generated view: the object is off-centre, at some size, on some background,
in a frame of any shape. :func:`prepare_photo` (used by ``nerfdiff-prepare`` and by the
``nerfdiff-image`` dataparser) does, in order:

1. Foreground: the image's alpha channel if it has a real one, else a mask file, else an offline
   segmentation (:mod:`nerfdiff_ns.data.segment`; no downloaded weights).
2. Framing: crop to the object's bounding box, recentre it, and scale it so its longest side spans
   the share of the frame that training objects span (:attr:`Framing.target_fill`); pad to square
   on the bundle's background and resize to the bundle's resolution, antialiased.
3. Camera: the bundle's distance and field of view, elevation given or the middle of the bundle's range.

It also collects warnings a user can act on (object cut by the border, mask nearly empty or nearly
full, cluttered background without a mask). No nerfstudio import: this runs anywhere.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.images import load_channels
from nerfdiff_ns.data.segment import Segmentation, segment
from nerfdiff_ns.errors import FlagError

__all__ = ["Framing", "PreparedPhoto", "prepare_photo", "write_prepared", "TYPICAL_FILL_OF_SPHERE"]

TYPICAL_FILL_OF_SPHERE = 0.796
"""Median longest bounding-box side of a training object, as a share of its bounding sphere's
projected diameter. Measured on 800 generated random_urdfs views (100 train objects x 8 random
cameras, 128 px, distance 2.7, fov 45 deg): median fill 0.766 of the frame (10-90 %: 0.64-0.88),
while a unit sphere spans tan(asin(1/2.7)) / tan(22.5 deg) = 0.963. Random blobs scaled so their
farthest vertex is at radius 1 rarely reach the sphere's full width in every direction."""

FRAMED_FILL, FRAMED_OFFSET = (0.84, 1.15), 0.08
"""An image at the bundle's resolution counts as framed already when its object's longest side is
within the training views' 10-90 % range (0.64-0.88 of the frame, relative to the median 0.766)
and its bounding-box centre within their 90th-percentile offset (2.5 px at 32 px) of the centre."""

EMPTY_SHARE, FULL_SHARE = 0.005, 0.9
"""A mask covering less / more than this share of the photo draws a warning."""


@dataclass
class Framing:
    """The bundle's training framing: what a prepared photo must look like."""

    resolution: int = 64
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    distance: float = 2.7
    fov_degrees: float = 45.0
    object_radius: float = 1.0
    elevation_range_degrees: tuple[float, float] = (-10.0, 60.0)
    fill: Optional[float] = None
    """Override of the object's longest side as a share of the frame (default: the training data's)."""

    def __post_init__(self) -> None:
        check_fill(self.fill)

    @property
    def sphere_fill(self) -> float:
        """Share of the frame a sphere of ``object_radius`` at ``distance`` spans."""
        ratio = min(1.0, self.object_radius / self.distance)
        return math.tan(math.asin(ratio)) / math.tan(math.radians(self.fov_degrees) / 2)

    @property
    def target_fill(self) -> float:
        return float(self.fill) if self.fill is not None else TYPICAL_FILL_OF_SPHERE * self.sphere_fill

    @classmethod
    def from_bundle_config(cls, config, fill: Optional[float] = None) -> "Framing":
        """From a :class:`nerfdiff_ns.bundle.BundleConfig`."""
        cams, nerf = config.cameras, config.nerf
        return cls(resolution=int(nerf.image_size), background=tuple(float(c) for c in nerf.background),
                   distance=float(cams.distance), fov_degrees=float(cams.fov_degrees),
                   object_radius=float(nerf.object_radius),
                   elevation_range_degrees=tuple(float(e) for e in cams.elevation_range_degrees), fill=fill)

    @classmethod
    def from_bundle(cls, path: Union[str, Path], fill: Optional[float] = None) -> "Framing":
        from nerfdiff_ns.bundle import load_bundle

        return cls.from_bundle_config(load_bundle(path).config, fill)


@dataclass
class PreparedPhoto:
    """The prepared input and everything needed to show and check what was done."""

    image: np.ndarray  # [N, N, 3] float32 on the background
    mask: np.ndarray  # [N, N] float32 in [0, 1]
    camera: dict  # camera JSON (nerfdiff-image --camera-file shortcuts)
    source_path: Path
    source_rgb: np.ndarray  # [H, W, 3] the photo as loaded (alpha composited on the background)
    source_mask: np.ndarray  # [H, W] bool, the foreground used
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 of the object in the photo (pixel edges)
    crop: tuple[float, float, float]  # x0, y0, side of the square taken from the photo
    foreground: str  # where the mask came from
    framing: Framing
    warnings: list[str] = field(default_factory=list)
    reframed: bool = True
    """False when the image was already framed like a training view and kept pixel for pixel."""

    @property
    def scale(self) -> float:
        """Output pixels per photo pixel."""
        return self.framing.resolution / self.crop[2]

    def transform_intrinsics(self, fx: float, fy: float, cx: float, cy: float) -> tuple[float, float, float, float]:
        """Pinhole intrinsics of the original photo -> those of the prepared image (crop + scale)."""
        x0, y0, _ = self.crop
        s = self.scale
        return fx * s, fy * s, (cx - x0) * s, (cy - y0) * s

    def summary(self) -> str:
        x0, y0, x1, y1 = self.bbox
        h, w = self.source_rgb.shape[:2]
        n = self.framing.resolution
        done = (f"centred, longest side {self.framing.target_fill:.0%} of a {n}x{n} frame" if self.reframed else
                "already framed like a training view, kept as it is")
        return (f"{self.source_path.name} ({w}x{h}): foreground from {self.foreground}; object {x1 - x0:.0f}x{y1 - y0:.0f} px "
                f"at ({(x0 + x1) / 2:.0f}, {(y0 + y1) / 2:.0f}) -> {done}; camera: distance "
                f"{self.camera['distance']:.2f}, fov {self.camera['fov_degrees']:.1f} deg, elevation "
                f"{self.camera['elevation_degrees']:.1f} deg")


def _alpha_is_real(alpha: np.ndarray) -> bool:
    return bool((alpha < 0.98).mean() > 1e-3)


def _load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "mask not found" if not path.exists() else "mask path is not a file",
                        "pass an existing mask image (white = object, black = background) with --mask, or leave --mask out")
    arr = load_channels(path, exif_transpose=True)
    if arr.shape[-1] in (2, 4) and _alpha_is_real(arr[..., -1]):
        mask = arr[..., -1]  # a cut-out saved with transparency: its alpha is the mask
    else:
        mask = arr[..., : min(3, arr.shape[-1])].mean(-1)
    if mask.shape != shape:
        raise DataError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} px but the image is {shape[1]}x{shape[0]}",
                        "give a mask of the same size as the image (white = object, black = background)")
    return mask.astype(np.float32)


def _touching_sides(mask: np.ndarray, margin: int) -> list[str]:
    height, width = mask.shape
    strips = {"top": mask[:margin], "bottom": mask[-margin:], "left": mask[:, :margin].T, "right": mask[:, -margin:].T}
    sides = []
    for name, strip in strips.items():
        hits = int(strip.any(axis=0).sum())
        if hits >= max(2, 0.01 * strip.shape[1]):
            sides.append(name)
    return sides


def _resample(channels: np.ndarray, fill_value: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Resample ``box`` (float pixel edges, may extend past the image) of ``[H, W, C]`` to ``size``²,
    antialiased (PIL's support-scaled bilinear, i.e. a triangle filter: no negative lobes, so where
    no object pixel contributes the result is exactly the background); outside the image is ``fill_value``."""
    height, width, count = channels.shape
    x0, y0, x1, y1 = box
    pad = int(math.ceil(max(0.0, -x0, -y0, x1 - width, y1 - height))) + 2
    out = np.empty((size, size, count), np.float32)
    for c in range(count):
        plane = np.pad(channels[..., c].astype(np.float32), pad, constant_values=float(fill_value[c]))
        im = Image.fromarray(plane)
        resized = im.resize((size, size), Image.Resampling.BILINEAR, box=(x0 + pad, y0 + pad, x1 + pad, y1 + pad))
        out[..., c] = np.asarray(resized, dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


PREPARATION_VERSION = 2
"""Part of the prepared-photo cache key: bump it when the preparation's output changes for the same photo
(2: the segmentation keeps thin parts and large see-through gaps), so ns-train does not reuse stale files."""


def check_fill(fill: Optional[float]) -> None:
    """``--fill`` beyond [0.05, 1] would crop the object (above 1) or shrink it to a few pixels."""
    if fill is not None and not 0.05 <= fill <= 1.0:
        raise FlagError(f"--fill must be in [0.05, 1] (the object's longest side as a share of the frame), got {fill}")


def check_elevation(elevation_degrees: Optional[float]) -> None:
    """An elevation at or past the poles is not a camera above the object's horizon."""
    if elevation_degrees is not None and not -90.0 < elevation_degrees < 90.0:
        raise FlagError(f"--elevation-degrees must lie in (-90, 90) (degrees above the object's horizon), "
                        f"got {elevation_degrees}")


def prepare_photo(
    path: Union[str, Path],
    framing: Framing,
    mask_path: Optional[Union[str, Path]] = None,
    segmentation: Segmentation = "auto",
    elevation_degrees: Optional[float] = None,
) -> PreparedPhoto:
    """Prepare one photo for the bundle whose framing is ``framing`` (see the module docstring).

    Raises:
        DataError: the image or mask is missing or unreadable, the mask has another size, or no
            object is found.
    """
    check_elevation(elevation_degrees)
    path = Path(path)
    bg = np.asarray(framing.background, np.float32)
    arr = load_channels(path, exif_transpose=True)
    channels = arr.shape[-1]
    colour = arr[..., : channels - (channels in (2, 4))]
    colour = np.repeat(colour, 3, axis=-1) if colour.shape[-1] == 1 else colour
    height, width = colour.shape[:2]
    warnings: list[str] = []
    segmented = False
    model = None
    if channels in (2, 4) and _alpha_is_real(arr[..., -1]):
        soft, foreground = arr[..., -1], "the image's alpha channel"
        if mask_path is not None:
            warnings.append(f"--mask {mask_path} was ignored: the image has its own alpha channel (remove the alpha or the --mask)")
    elif mask_path is not None:
        soft, foreground = _load_mask(Path(mask_path), (height, width)), f"the mask {Path(mask_path).name}"
    else:
        binary, method, model = segment(colour, segmentation)
        soft, foreground, segmented = binary.astype(np.float32), f"automatic segmentation ({method})", True
    source_mask = soft > 0.5
    where = path if mask_path is None or "alpha" in foreground else Path(mask_path)
    if not source_mask.any():
        raise DataError(where, f"no object found ({foreground} is empty)",
                        "give a mask with the object in white (--mask), or try another --segmentation")
    share = float(source_mask.mean())
    if share < EMPTY_SHARE:
        warnings.append(f"the mask covers almost nothing ({share:.1%} of the image, from {foreground}): the object is tiny "
                        "or the segmentation missed it; check the preview, give a --mask or photograph the object larger")
    elif share > FULL_SHARE:
        warnings.append(f"the mask covers almost everything ({share:.0%} of the image, from {foreground}): the background "
                        "was probably taken for the object; give a --mask, or photograph the object with background around it")
    if model is not None and not model.uniform:
        warnings.append(f"the background is not uniform (only {model.uniform_fraction:.0%} of the border is one colour) and "
                        "no mask was given: the automatic segmentation may keep clutter or cut the object; check the "
                        "preview and give --mask (white = object), or photograph the object on a plain backdrop")
    ring = max(1, round(0.02 * min(height, width))) + 1 if segmented else 1
    sides = _touching_sides(source_mask, ring)
    if sides:
        warnings.append(f"the object touches the {' and '.join(sides)} border of the image: it is probably cut off, and "
                        "the model will see a cut object; photograph it with some background all around")

    ys, xs = np.nonzero(source_mask)
    x0, x1, y0, y1 = float(xs.min()), float(xs.max() + 1), float(ys.min()), float(ys.max() + 1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0) / framing.target_fill
    size = framing.resolution
    soft = np.clip(soft, 0.0, 1.0)[..., None]
    composite = colour * soft + bg * (1.0 - soft)
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    longest = max(x1 - x0, y1 - y0) / framing.target_fill / size
    offset = max(abs(cx - size / 2), abs(cy - size / 2)) / size
    framed = FRAMED_FILL[0] <= longest <= FRAMED_FILL[1] and offset <= FRAMED_OFFSET
    reframed = not ((height, width) == (size, size) and framed)
    if not reframed:
        # already at the bundle's resolution and framed like a training view (a generated view, or an
        # image prepared before): resampling would only blur it. On the bundle's background, a
        # segmented image keeps even its soft edges.
        image = colour if model is not None and model.close_to(framing.background) else composite
        image, mask = image.astype(np.float32), soft[..., 0].astype(np.float32)
        box, side = (0.0, 0.0, float(size), float(size)), float(size)
    else:
        stacked = np.concatenate([composite, soft], axis=-1)
        out = _resample(stacked, np.concatenate([bg, [0.0]]), box, size)
        image, mask = out[..., :3], out[..., 3]

    lo, hi = framing.elevation_range_degrees
    elevation = (lo + hi) / 2 if elevation_degrees is None else float(elevation_degrees)
    if not lo - 1.0 <= elevation <= hi + 1.0:  # 1 deg slack: the range is measured from sampled cameras
        warnings.append(f"elevation {elevation:.1f} deg is outside the bundle's training range [{lo:.1f}, {hi:.1f}]: "
                        "novel views will be less reliable; pick --elevation-degrees inside it")
    camera = {"fov_degrees": framing.fov_degrees, "distance": framing.distance,
              "elevation_degrees": elevation, "azimuth_degrees": 0.0}
    return PreparedPhoto(image=image.astype(np.float32), mask=mask.astype(np.float32), camera=camera, source_path=path,
                         source_rgb=composite.astype(np.float32) if "alpha" in foreground else colour.astype(np.float32),
                         source_mask=source_mask, bbox=(x0, y0, x1, y1), crop=(box[0], box[1], side),
                         foreground=foreground, framing=framing, warnings=warnings, reframed=reframed)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def write_prepared(prepared: PreparedPhoto, output_dir: Union[str, Path], stem: str = "") -> dict[str, Path]:
    """Write ``image.png`` (what the model sees), ``mask.png``, ``camera.json`` (``--camera-file``
    format) and ``preview.png`` (photo with mask and crop | prepared), each atomically."""
    from nerfdiff_ns.data.preview import preview_image

    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(out, f"cannot create the output folder ({err})", "pick a writable --output-dir") from err
    prefix = f"{stem}_" if stem else ""
    paths = {name: out / f"{prefix}{name}" for name in ("image.png", "mask.png", "camera.json", "preview.png")}
    _atomic_write(paths["image.png"], lambda p: Image.fromarray(_to_u8(prepared.image)).save(p, format="PNG"))
    _atomic_write(paths["mask.png"], lambda p: Image.fromarray(_to_u8(prepared.mask)).save(p, format="PNG"))
    _atomic_write(paths["camera.json"], lambda p: p.write_text(json.dumps(prepared.camera, indent=2) + "\n"))
    _atomic_write(paths["preview.png"], lambda p: Image.fromarray(preview_image(prepared)).save(p, format="PNG"))
    return paths
