"""Image files <-> float RGB tensors.

:func:`load_rgb` turns any image file PIL can read into a ``[H, W, 3]`` float32 tensor in ``[0, 1]``:
alpha is composited on a background colour (white by default, like SRN renders), grayscale and
palette images become RGB, and 16-bit images are scaled by 65535 (not truncated to 8 bits).
:func:`save_rgb` writes the inverse as an 8-bit RGB PNG. :func:`load_channels` keeps the channels as
stored (alpha included) for photo preparation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from nerfdiff_ns.data.errors import DataError

__all__ = ["load_rgb", "load_channels", "save_rgb", "image_size", "Background"]

Background = Union[Sequence[float], torch.Tensor, np.ndarray]

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _background_array(background: Background) -> np.ndarray:
    if isinstance(background, torch.Tensor):
        background = background.detach().cpu().numpy()
    bg = np.asarray(background, dtype=np.float32).reshape(-1)
    if bg.shape != (3,) or not np.all(np.isfinite(bg)):
        raise ValueError(f"background must be 3 finite floats in [0, 1] (r, g, b), got {background!r}")
    return np.clip(bg, 0.0, 1.0)


def _to_float_channels(im: Image.Image) -> np.ndarray:
    """Return a float32 ``[H, W, C]`` array in [0, 1] with C in {1, 2, 3, 4} (L, LA, RGB, RGBA)."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit grayscale PNGs open as I;16 (or I, 32-bit int holding 0..65535, on some Pillow versions).
        arr = np.asarray(im).astype(np.float64) / 65535.0
        return np.clip(arr, 0.0, 1.0).astype(np.float32)[..., None]
    if mode == "F":
        return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)[..., None]
    if mode in ("L", "LA", "RGB", "RGBA"):
        converted = im
    elif mode == "1":
        converted = im.convert("L")
    elif mode == "La":
        converted = im.convert("LA")
    elif mode in ("P", "PA", "RGBa"):
        # Palette images may carry transparency (tRNS); RGBA keeps it either way.
        converted = im.convert("RGBA")
    else:  # CMYK, YCbCr, LAB, HSV, ...
        converted = im.convert("RGB")
    arr = np.asarray(converted, dtype=np.uint8).astype(np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


def load_channels(path: Union[str, Path], exif_transpose: bool = False) -> np.ndarray:
    """Load an image file as float32 ``[H, W, C]`` in ``[0, 1]``, C in {1, 2, 3, 4} (L, LA, RGB, RGBA).

    ``exif_transpose`` applies the EXIF orientation (phone photos are often stored sideways); photo
    preparation turns it on, dataset readers keep the stored pixels.

    Raises:
        DataError: the file does not exist, or it is not a readable image; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "image not found", "check the path, or regenerate/re-download the dataset")
    if not path.is_file():
        raise DataError(path, "image path is not a file", "point to an image file, not a folder")
    try:
        with Image.open(path) as im:
            im.load()  # decode now so truncated or corrupt files fail here, not later
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
            return _to_float_channels(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            path,
            f"could not read image ({type(exc).__name__}: {exc})",
            "the file is corrupt, truncated or not an image: replace it with a valid PNG/JPEG",
        ) from exc


def load_rgb(path: Union[str, Path], background: Background = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Load an image file as ``[H, W, 3]`` float32 RGB in ``[0, 1]``.

    Args:
        path: any image file Pillow can read (PNG, JPEG, ...).
        background: RGB colour in [0, 1] that transparent pixels are composited on
            (``rgb * alpha + background * (1 - alpha)``).

    Raises:
        DataError: the file does not exist, or it is not a readable image (truncated, corrupt,
            not an image); the message names the file.
    """
    bg = _background_array(background)
    arr = load_channels(path)
    channels = arr.shape[-1]
    if channels in (2, 4):
        color, alpha = arr[..., :-1], arr[..., -1:]
        if channels == 2:
            color = np.repeat(color, 3, axis=-1)
        rgb = color * alpha + bg * (1.0 - alpha)
    elif channels == 1:
        rgb = np.repeat(arr, 3, axis=-1)
    else:
        rgb = arr
    return torch.from_numpy(np.ascontiguousarray(np.clip(rgb, 0.0, 1.0), dtype=np.float32))


def load_alpha(path: Union[str, Path]) -> Optional[torch.Tensor]:
    """The image's alpha channel as ``[H, W, 1]`` float32 in ``[0, 1]``, or None when it has no transparency.

    The mask loss prefers this over inferring the object from the background colour, which cannot tell an
    object pixel of exactly that colour (a white mug on white) from the background."""
    arr = load_channels(path)
    if arr.shape[-1] not in (2, 4):
        return None
    return torch.from_numpy(np.ascontiguousarray(arr[..., -1:], dtype=np.float32))


def image_size(path: Union[str, Path]) -> tuple[int, int]:
    """``(height, width)`` of an image file, reading only its header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image not found", "check the path, or regenerate/re-download the dataset")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"could not read image ({type(exc).__name__}: {exc})",
                        "replace it with a valid PNG/JPEG") from exc
    return height, width


def shared_image_size(paths: Sequence[Path], fix: str) -> tuple[int, int]:
    """``(height, width)`` of images that must share one size (the views of one object), from their headers; a
    :class:`DataError` names the first that differs, with ``fix``."""
    height, width = image_size(paths[0])
    for path in paths[1:]:
        size = image_size(path)
        if size != (height, width):
            raise DataError(path, f"image is {size[0]}x{size[1]} (HxW) but {paths[0].name} is {height}x{width}", fix)
    return height, width


def _to_uint8(image: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0)
    return np.ascontiguousarray(np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8))


def save_rgb(path: Union[str, Path], image: Union[torch.Tensor, np.ndarray]) -> Path:
    """Write ``[H, W, 3]`` RGB (float in [0, 1], clamped and rounded; or uint8) as an 8-bit PNG.

    Parent folders are created. The output is byte-for-byte deterministic for the same pixels.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_to_uint8(image)).save(path, format="PNG")
    return path
