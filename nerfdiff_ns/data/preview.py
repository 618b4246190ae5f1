"""The side-by-side preview of a prepared photo: what was taken from the photo | what the model sees.

Left: the photo with the background dimmed, the mask outline (green), the object's bounding box
(yellow) and the square crop that became the input (cyan; it may reach past the photo, where the
background colour is padded in). Right: the prepared image, enlarged with nearest-neighbour so its
real pixels show. Below: where the mask came from and every warning.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from nerfdiff_ns.data.prepare import PreparedPhoto

PANEL = 256
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _text_block(lines: list[tuple[str, tuple[int, int, int]]], width: int) -> np.ndarray:
    wrapped: list[tuple[str, tuple[int, int, int]]] = []
    chars = max(20, width // 7)
    for text, colour in lines:
        wrapped += [(part, colour) for part in textwrap.wrap(text, chars)]
    block = np.full((10 + 16 * len(wrapped), width, 3), 255, np.uint8)
    for i, (text, colour) in enumerate(wrapped):
        cv2.putText(block, text, (6, 20 + 16 * i), FONT, 0.4, colour, 1, cv2.LINE_AA)
    return block


def preview_image(prepared: "PreparedPhoto") -> np.ndarray:
    """``[H, W, 3]`` uint8 preview (see the module docstring)."""
    src = prepared.source_rgb
    height, width = src.shape[:2]
    scale = min(PANEL / height, 1.6 * PANEL / width)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    mask = prepared.source_mask
    dimmed = np.where(mask[..., None], src, 0.35 * src + 0.65 * 0.5)
    left = cv2.resize(_u8(dimmed), (w, h), interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small_mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    left = np.ascontiguousarray(left)
    cv2.drawContours(left, contours, -1, (40, 200, 40), 1, cv2.LINE_AA)
    x0, y0, x1, y1 = (v * scale for v in prepared.bbox)
    cv2.rectangle(left, (round(x0), round(y0)), (round(x1) - 1, round(y1) - 1), (230, 190, 0), 1)
    cx0, cy0, side = (v * scale for v in prepared.crop)
    cv2.rectangle(left, (round(cx0), round(cy0)), (round(cx0 + side) - 1, round(cy0 + side) - 1), (0, 170, 230), 1)
    canvas_h = max(h, PANEL)
    left_panel = np.full((canvas_h, w, 3), 255, np.uint8)
    left_panel[(canvas_h - h) // 2 : (canvas_h - h) // 2 + h] = left
    right = cv2.resize(_u8(prepared.image), (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
    right_panel = np.full((canvas_h, PANEL, 3), 255, np.uint8)
    right_panel[(canvas_h - PANEL) // 2 : (canvas_h - PANEL) // 2 + PANEL] = right
    gap = np.full((canvas_h, 8, 3), 255, np.uint8)
    body = np.concatenate([left_panel, gap, right_panel], axis=1)
    n = prepared.framing.resolution
    left_title = _text_block([(f"photo {width}x{height}: mask (green), object box (yellow), crop (blue)", (0, 0, 0))], w)
    right_title = _text_block([(f"prepared {n}x{n} (model input)", (0, 0, 0))], PANEL)
    rows = max(left_title.shape[0], right_title.shape[0])
    pad = lambda block: np.concatenate([block, np.full((rows - block.shape[0], block.shape[1], 3), 255, np.uint8)])  # noqa: E731
    header = np.concatenate([pad(left_title), np.full((rows, 8, 3), 255, np.uint8), pad(right_title)], axis=1)
    done = (f"object scaled x{prepared.scale:.3f} to {prepared.framing.target_fill:.0%} of the frame" if prepared.reframed
            else "already framed like a training view: pixels kept")
    lines = [(f"foreground: {prepared.foreground}; {done}", (60, 60, 60))]
    lines += [(f"WARNING: {w_}", (200, 30, 30)) for w_ in prepared.warnings] or [("no warnings", (30, 130, 30))]
    footer = _text_block(lines, body.shape[1])
    return np.concatenate([header, body, footer], axis=0)
