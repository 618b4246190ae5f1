"""Material colours for procedural objects, drawn per part from named families.

Furniture reads as furniture when its frame is wood or metal and its cushions are fabric, so the
sources draw a frame colour and an upholstery colour from different families and jitter them a
little per object (so colours vary continuously across ids, not only among a few swatches).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = ["FAMILIES", "draw_colour", "distinct_colour", "shade"]

RGB = Tuple[float, float, float]

FAMILIES: Dict[str, Tuple[RGB, ...]] = {
    "wood": ((0.78, 0.61, 0.42), (0.62, 0.42, 0.24), (0.47, 0.30, 0.17), (0.33, 0.21, 0.12),
             (0.70, 0.45, 0.28), (0.86, 0.74, 0.55)),
    "paint": ((0.93, 0.93, 0.91), (0.13, 0.13, 0.14), (0.20, 0.33, 0.52), (0.62, 0.14, 0.13),
              (0.28, 0.45, 0.32), (0.90, 0.74, 0.25)),
    "metal": ((0.72, 0.73, 0.76), (0.16, 0.16, 0.17), (0.50, 0.51, 0.54), (0.70, 0.58, 0.32)),
    "fabric": ((0.78, 0.16, 0.14), (0.16, 0.24, 0.55), (0.10, 0.50, 0.52), (0.88, 0.64, 0.14),
               (0.45, 0.52, 0.20), (0.50, 0.50, 0.54), (0.92, 0.45, 0.12), (0.20, 0.56, 0.30),
               (0.90, 0.84, 0.70), (0.46, 0.25, 0.56), (0.85, 0.45, 0.55), (0.25, 0.25, 0.28)),
    "ceramic": ((0.96, 0.96, 0.94), (0.20, 0.36, 0.66), (0.80, 0.20, 0.18), (0.16, 0.16, 0.18),
                (0.30, 0.60, 0.45), (0.95, 0.78, 0.30), (0.60, 0.78, 0.88), (0.88, 0.55, 0.62)),
    "car": ((0.80, 0.10, 0.10), (0.12, 0.22, 0.55), (0.92, 0.92, 0.92), (0.12, 0.12, 0.13),
            (0.62, 0.64, 0.67), (0.95, 0.75, 0.10), (0.15, 0.45, 0.25), (0.40, 0.60, 0.85),
            (0.90, 0.45, 0.10)),
}


def draw_colour(rng: np.random.Generator, family: str, jitter: float = 0.04) -> RGB:
    """A swatch of ``family`` with a small per-object jitter in brightness and per channel."""
    swatches = FAMILIES[family]
    base = np.asarray(swatches[int(rng.integers(len(swatches)))])
    colour = base * rng.uniform(1.0 - jitter * 2, 1.0 + jitter * 2) + rng.uniform(-jitter, jitter, 3)
    return tuple(float(c) for c in np.clip(colour, 0.0, 1.0))  # type: ignore[return-value]


def distinct_colour(rng: np.random.Generator, family: str, avoid: Sequence[RGB], min_distance: float = 0.25,
                    tries: int = 16) -> RGB:
    """A colour of ``family`` at least ``min_distance`` (RGB Euclidean) from every colour in ``avoid``,
    so neighbouring parts stay distinguishable in a 32 px image."""
    best, best_d = None, -1.0
    for _ in range(tries):
        colour = draw_colour(rng, family)
        d = min((float(np.linalg.norm(np.subtract(colour, a))) for a in avoid), default=1e9)
        if d >= min_distance:
            return colour
        if d > best_d:
            best, best_d = colour, d
    return best  # type: ignore[return-value]


def shade(colour: Sequence[float], factor: float) -> RGB:
    """``colour`` darkened (factor < 1) or lightened (factor > 1), clipped to [0, 1]."""
    return tuple(float(min(max(c * factor, 0.0), 1.0)) for c in colour)  # type: ignore[return-value]
