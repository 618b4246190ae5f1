"""``procedural-mugs``: mugs assembled from primitives, deterministic from the object id.

Object frame: +Z up, the handle on the +X side in the XZ plane, mirror symmetric about y = 0. A
body (straight or tapered tube with a bottom), a handle (round loop or square loop), a darker or
white inside and an optional band in an accent colour (a simple texture).
"""

from __future__ import annotations

import numpy as np

from nerfdiff_ns.data.sources.ids import object_rng
from nerfdiff_ns.data.sources.palette import distinct_colour, draw_colour, shade
from nerfdiff_ns.data.sources.parts import PartList, PartsAsset
from nerfdiff_ns.data.sources.primitives import Mesh, arc_tube, disc, ring, rod

__all__ = ["make_mug", "YAW_DEGREES"]

SOURCE = "procedural-mugs"
YAW_DEGREES = 55.0
"""Canonical pose: the handle points to azimuth 55 degrees, so the input view (azimuth 0) sees it from the side."""


def _flare(mesh: Mesh, top_scale: float, z0: float, z1: float) -> Mesh:
    """Scale radii linearly with height: 1 at ``z0``, ``top_scale`` at ``z1`` (a tapered mug)."""
    v = np.array(mesh.vertices)
    s = 1.0 + (top_scale - 1.0) * np.clip((v[:, 2] - z0) / (z1 - z0), 0.0, 1.0)
    v[:, :2] *= s[:, None]
    return Mesh(v, mesh.faces)


def make_mug(object_id: int) -> PartsAsset:
    """The mug with id ``object_id`` (refuses reserved ids); a pure function of the id."""
    rng = object_rng(SOURCE, object_id)
    radius = rng.uniform(0.035, 0.055)
    height = radius * rng.uniform(1.4, 2.6)
    wall = radius * rng.uniform(0.08, 0.14)
    flare = rng.uniform(1.0, 1.3) if rng.uniform() < 0.4 else 1.0
    handle = str(rng.choice(["loop", "square"], p=[0.75, 0.25]))
    band = rng.uniform() < 0.5
    body = draw_colour(rng, "ceramic")
    brightness = float(np.mean(body))
    white_inside = brightness < 0.35 or (brightness < 0.75 and rng.uniform() < 0.5)
    inside = (0.96, 0.96, 0.94) if white_inside else shade(body, 0.55)  # always unlike the body
    handle_colour = body if rng.uniform() < 0.6 else distinct_colour(rng, "ceramic", [body], 0.3)
    params = {"radius": radius, "height": height, "wall": wall, "flare": flare, "handle": handle, "band": band}
    parts = PartList(axis=1)
    parts.add("wall", _flare(ring([0, 0, height / 2], radius - wall, radius, height, sections=24), flare, 0, height),
              body)
    parts.add("bottom", disc([0, 0, wall / 2], radius, wall, sections=24), body)
    parts.add("inside", disc([0, 0, wall + 0.001], radius - wall * 1.01, 0.002, sections=24), inside)
    if band:
        accent = distinct_colour(rng, "ceramic", [body], 0.35)
        zb, hb = height * rng.uniform(0.45, 0.7), height * rng.uniform(0.12, 0.25)
        scale_b = 1.0 + (flare - 1.0) * zb / height
        parts.add("band", ring([0, 0, zb], (radius - wall) * scale_b, radius * scale_b + 0.0015, hb, sections=24),
                  accent)
    tube = radius * rng.uniform(0.12, 0.2)
    zc = height * rng.uniform(0.45, 0.55)
    span = height * rng.uniform(0.28, 0.38)
    x0 = radius * (1.0 + (flare - 1.0) * zc / height) - tube * 0.5
    if handle == "loop":
        parts.add("handle", arc_tube([x0, 0, zc], span, tube, -90.0, 90.0, segments=9, sections=6), handle_colour)
    else:
        reach = span * rng.uniform(0.8, 1.2)
        for name, (a, b) in {"top": ([x0, 0, zc + span], [x0 + reach, 0, zc + span]),
                             "side": ([x0 + reach, 0, zc + span], [x0 + reach, 0, zc - span]),
                             "low": ([x0 + reach, 0, zc - span], [x0, 0, zc - span])}.items():
            parts.add(f"handle_{name}", rod(a, b, tube, sections=6, square=True), handle_colour)
    return parts.asset(f"{object_id:03d}", params, yaw_degrees=YAW_DEGREES)
