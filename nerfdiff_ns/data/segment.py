"""Offline foreground segmentation of one object photo: no downloaded weights.

Two classical methods, both seeded by the image border (a photo of one object has background
all around it):

* ``border-colour``: a model of the border's colour (a robust fit in CIE Lab that allows a lighting
  gradient); pixels far from it are the object. Exact on a plain backdrop, even a noisy one.
* ``grabcut``: OpenCV's GrabCut, its background colour model seeded from the border strip (and,
  when given, from a first mask), the rest "probably object". Copes with a backdrop of several colours.

``auto`` uses the border colour when the border is uniform (then refines it with GrabCut) and
GrabCut alone otherwise, and reports that the background is not uniform so the caller can warn.
``rembg`` (a U^2-Net matting model) is used only when it is installed and asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import cv2
import numpy as np

from nerfdiff_ns.data.errors import DataError

__all__ = ["Segmentation", "BorderModel", "border_model", "segment", "clean_mask"]

Segmentation = Literal["auto", "grabcut", "border-colour", "rembg"]

UNIFORM_DELTA_E = 12.0
"""A border pixel within this CIE76 distance of the median border colour counts as 'backdrop'."""
UNIFORM_FRACTION = 0.9
"""The border is uniform when at least this share of its pixels is backdrop."""
SEGMENT_MAX_SIDE = 640
"""Segmentation runs on the photo scaled to at most this many pixels on its longer side."""
MAX_HOLE_SHARE = 0.002
"""Enclosed background regions up to this share of the object's area are filled (specks, highlights); larger
ones are the backdrop seen through the object (between a chair's slats or legs) and stay background."""
SHADOW_WEIGHT = 0.5
"""Weight of lightness below the backdrop's in the border-colour distance: soft shadows stay background,
a dark object (a lightness drop over twice the threshold) stays object."""


@dataclass
class BorderModel:
    """The backdrop's colour, fitted to the image border: a plane in CIE Lab over the image
    (colour = a + b x + c y), so that a lighting gradient across a plain wall still counts as uniform."""

    coefficients: np.ndarray  # [3, 3]: rows (1, x / W, y / H) -> Lab (L 0..100)
    spread: float  # robust spread of the border's residuals, delta E (CIE76)
    uniform_fraction: float  # share of border pixels within UNIFORM_DELTA_E of the fitted colour

    @property
    def uniform(self) -> bool:
        return self.uniform_fraction >= UNIFORM_FRACTION

    def close_to(self, rgb: tuple[float, float, float], tolerance: float = 2.0) -> bool:
        """Whether the backdrop is this colour everywhere on the border (delta E below ``tolerance``)."""
        target = _lab(np.asarray(rgb, np.float32).reshape(1, 1, 3))[0, 0]
        corners = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1]], np.float32) @ self.coefficients
        return self.uniform and bool(np.linalg.norm(corners - target, axis=-1).max() < tolerance)

    def predict(self, height: int, width: int) -> np.ndarray:
        """``[H, W, 3]`` Lab colour the backdrop would have at every pixel."""
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        design = np.stack([np.ones_like(xx), xx / width, yy / height], -1)
        return design @ self.coefficients


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2Lab)


def _border_width(height: int, width: int) -> int:
    return max(1, round(0.02 * min(height, width)))


def _border_ring(height: int, width: int, ring: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[:ring], mask[-ring:], mask[:, :ring], mask[:, -ring:] = True, True, True, True
    return mask


def border_model(rgb: np.ndarray) -> BorderModel:
    """Fit the backdrop colour model to the outer 2 % of the image (at least one pixel), robustly:
    a least-squares fit, then a refit on the 75 % of border pixels it explains best (an object
    touching the border or a stray object there does not pull the fit)."""
    height, width = rgb.shape[:2]
    lab = _lab(cv2.GaussianBlur(rgb.astype(np.float32), (3, 3), 0))
    ring = _border_ring(height, width, _border_width(height, width))
    ys, xs = np.nonzero(ring)
    design = np.stack([np.ones(len(xs)), xs / width, ys / height], -1).astype(np.float64)
    target = lab[ring].astype(np.float64)
    coefficients = np.linalg.lstsq(design, target, rcond=None)[0]
    for _ in range(2):
        residual = np.linalg.norm(design @ coefficients - target, axis=-1)
        inliers = residual <= np.quantile(residual, 0.75)
        coefficients = np.linalg.lstsq(design[inliers], target[inliers], rcond=None)[0]
    residual = np.linalg.norm(design @ coefficients - target, axis=-1)
    median = float(np.median(residual))
    spread = median + 1.4826 * float(np.median(np.abs(residual - median)))
    return BorderModel(coefficients=coefficients.astype(np.float32), spread=spread,
                       uniform_fraction=float((residual < UNIFORM_DELTA_E).mean()))


def clean_mask(mask: np.ndarray, min_share: float = 0.05, max_hole_share: float = MAX_HOLE_SHARE) -> np.ndarray:
    """Remove specks and fill small holes: a 3x3 close mends one-pixel cracks; components holding less than
    ``min_share`` of the largest one's area go (specks of a noisy backdrop); enclosed holes up to
    ``max_hole_share`` of the object's area are filled (a highlight or a label of the backdrop's colour) and
    larger ones stay open (the backdrop seen through the object). No morphological opening: at photo scale
    any kernel that removes specks also erases a chair's 2-3 px legs, which the mask loss would then train
    transparent."""
    height, width = mask.shape
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if count <= 1:
        return m.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.nonzero(areas >= min_share * areas.max())[0]
    m = np.isin(labels, keep).astype(np.uint8)
    # holes: background regions that do not reach the image border
    inv = 1 - m
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    ring_labels = np.unique(labels[_border_ring(height, width, 1)])
    small = 1 + np.nonzero(stats[1:, cv2.CC_STAT_AREA] <= max_hole_share * m.sum())[0]
    holes = (inv == 1) & np.isin(labels, small) & ~np.isin(labels, ring_labels)
    return m.astype(bool) | holes


def segment_border_colour(rgb: np.ndarray, model: Optional[BorderModel] = None) -> np.ndarray:
    """Pixels whose (lightly blurred) colour is far from the backdrop's, cleaned up."""
    model = model or border_model(rgb)
    lab = _lab(cv2.GaussianBlur(rgb.astype(np.float32), (3, 3), 0))
    diff = lab - model.predict(*rgb.shape[:2])
    # a shadow on the backdrop is the backdrop's colour, darker: count lightness lost at half weight
    diff[..., 0] = np.where(diff[..., 0] < 0, SHADOW_WEIGHT * diff[..., 0], diff[..., 0])
    dist = np.linalg.norm(diff, axis=-1)
    threshold = max(UNIFORM_DELTA_E, 3.0 * model.spread)
    return clean_mask(dist > threshold)


def segment_grabcut(rgb: np.ndarray, seed: Optional[np.ndarray] = None, iterations: int = 5) -> np.ndarray:
    """GrabCut with the border strip as certain background; ``seed`` (a first mask) marks probable
    object/background elsewhere, without it everything inside the border is probably object."""
    height, width = rgb.shape[:2]
    image = np.ascontiguousarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., ::-1])  # OpenCV: BGR
    labels = np.full((height, width), cv2.GC_PR_FGD, np.uint8)
    if seed is not None:
        labels[~seed] = cv2.GC_PR_BGD
        if seed.any():
            k = max(1, round(0.02 * min(height, width)))
            inner = cv2.erode(seed.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)).astype(bool)
            labels[inner] = cv2.GC_FGD
    labels[_border_ring(height, width, _border_width(height, width))] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(image, labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate input (e.g. a single colour): keep the seed
        return seed if seed is not None else np.zeros((height, width), bool)
    return clean_mask((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))


def segment_rembg(rgb: np.ndarray) -> np.ndarray:
    """rembg's matting model (only when installed; it fetches its model the first time it runs)."""
    try:
        import rembg
    except ImportError as err:
        raise DataError(None, "--segmentation rembg was asked for but rembg is not installed",
                        "pip install rembg, or use --segmentation auto (offline, no downloads)") from err
    from PIL import Image

    image = Image.fromarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
    alpha = np.asarray(rembg.remove(image, only_mask=True), dtype=np.float32) / 255.0
    return clean_mask(alpha > 0.5)


def segment(rgb: np.ndarray, method: Segmentation = "auto", max_side: int = SEGMENT_MAX_SIDE) -> tuple[np.ndarray, str, BorderModel]:
    """Foreground mask ``[H, W]`` bool of an RGB float image, the method used, and the border model.

    Photos larger than ``max_side`` are segmented at that size (GrabCut on a 12-megapixel phone
    photo takes minutes) and the mask is scaled back up; the object's box moves by under a pixel
    of the small image, far below what a 32-128 px bundle resolves.
    """
    height, width = rgb.shape[:2]
    if max(height, width) > max_side:
        scale = max_side / max(height, width)
        small = cv2.resize(np.ascontiguousarray(rgb, np.float32), (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
        mask, used, model = segment(small, method, max_side)
        full = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
        return full, used, model
    model = border_model(rgb)
    if method == "rembg":
        return segment_rembg(rgb), "rembg", model
    if method == "border-colour":
        return segment_border_colour(rgb, model), "border-colour", model
    if method == "grabcut":
        return segment_grabcut(rgb), "grabcut", model
    if method != "auto":
        raise ValueError(f"unknown segmentation {method!r}")
    if model.uniform:
        first = segment_border_colour(rgb, model)
        if not first.any():
            return first, "border-colour", model
        refined = segment_grabcut(rgb, seed=first)
        # GrabCut can only help at the edges; if it moved far from the colour model, trust the model
        union = (first | refined).sum()
        agree = (first & refined).sum() / max(1, union)
        return (refined, "border-colour + grabcut", model) if agree > 0.8 else (first, "border-colour", model)
    return segment_grabcut(rgb), "grabcut", model
