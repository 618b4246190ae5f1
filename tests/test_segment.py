"""The offline segmentation keeps thin parts and the backdrop seen through an object.

A chair-like drawing on a white backdrop: a seat, 2-px legs, and a back whose large window shows the
backdrop. The legs must be object (the mask loss would otherwise train them transparent) and the window
background; a small backdrop-coloured speck inside the seat (a highlight) is filled.
"""

from __future__ import annotations

import numpy as np
import pytest

from nerfdiff_ns.data.segment import MAX_HOLE_SHARE, clean_mask, segment


def chair_drawing() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rgb = np.ones((260, 400, 3), np.float32)
    parts = {name: np.zeros((260, 400), bool) for name in ("seat", "legs", "back", "window", "speck")}
    parts["seat"][120:140, 150:250] = True
    for x in (152, 246):
        parts["legs"][140:230, x:x + 2] = True
    parts["back"][40:120, 150:160] = parts["back"][40:120, 240:250] = parts["back"][40:50, 150:250] = True
    parts["back"][110:120, 150:250] = True
    parts["window"][50:110, 160:240] = True  # enclosed by the back's frame: the backdrop seen through it
    parts["speck"][128:130, 200:202] = True
    rgb[parts["seat"]] = (0.7, 0.1, 0.1)
    rgb[parts["legs"]] = rgb[parts["back"]] = (0.4, 0.4, 0.45)
    rgb[parts["speck"]] = 1.0
    return rgb, parts


@pytest.mark.parametrize("method", ["auto", "border-colour"])
def test_thin_legs_are_object_and_the_window_is_backdrop(method: str) -> None:
    rgb, parts = chair_drawing()
    mask, _, _ = segment(rgb, method)
    assert mask[parts["legs"]].mean() > 0.9
    assert mask[parts["seat"]].all() and mask[parts["back"]].mean() > 0.95
    assert not mask[52:108, 162:238].any()  # the window, less the pixel that the 3x3 blur gives its frame
    assert mask[parts["speck"]].all()


def test_clean_mask_fills_only_small_holes() -> None:
    square = np.zeros((100, 100), bool)
    square[10:90, 10:90] = True
    area = square.sum()
    small, large = square.copy(), square.copy()
    small[40:43, 40:43] = False
    side = int(np.ceil(np.sqrt(2 * MAX_HOLE_SHARE * area)))
    large[30:30 + side, 30:30 + side] = False
    assert clean_mask(small).sum() == area
    assert clean_mask(large).sum() == large.sum()
