"""``procedural-tables``: tables assembled from primitives, deterministic from the object id.

Object frame: +X along the table's length, +Z up, floor at z = 0, mirror symmetric about y = 0.
A top (rectangular or round, dining or coffee height) on four legs (square or round, tapered,
optional apron and lower shelf), a pedestal (column on a disc or a cross of feet) or two trestle
ends joined by a stretcher. The top and the base are coloured from different materials.
"""

from __future__ import annotations


from nerfdiff_ns.data.sources.ids import object_rng
from nerfdiff_ns.data.sources.palette import distinct_colour, draw_colour, shade
from nerfdiff_ns.data.sources.parts import PartList, PartsAsset
from nerfdiff_ns.data.sources.primitives import box, disc, rod

__all__ = ["make_table", "STYLES", "YAW_DEGREES"]

SOURCE = "procedural-tables"
STYLES = ("four-legs", "pedestal", "trestle")
YAW_DEGREES = -35.0
"""Canonical pose: the table's long axis points to azimuth -35 degrees, so the input view (azimuth 0)
sees the top obliquely."""


def _four_legs(parts: PartList, rng, length: float, width: float, h: float, top_t: float, round_top: bool,
               colour, params: dict) -> None:
    r = rng.uniform(0.02, 0.045)
    square = bool(rng.uniform() < 0.55)
    taper = rng.uniform(0.55, 1.0) if rng.uniform() < 0.5 else 1.0
    inset = rng.uniform(0.03, 0.1)
    hx, hy = (0.62 * length / 2, 0.62 * width / 2) if round_top else (length / 2 - inset - r, width / 2 - inset - r)
    z_top = h - top_t
    for name, x in (("leg_pos", hx), ("leg_neg", -hx)):
        parts.add_pair(name, rod([x, hy, z_top], [x, hy, 0.0], r, square=square, end_scale=taper), colour)
    apron = (not round_top) and rng.uniform() < 0.55
    shelf = rng.uniform() < 0.25
    params.update(leg_radius=r, square_legs=square, taper=taper, apron=apron, shelf=shelf)
    if apron:
        ah = rng.uniform(0.05, 0.11)
        za = z_top - ah / 2
        parts.add_pair("apron_long", box([0.0, hy, za], [2 * hx, 0.02, ah]), colour)
        parts.add("apron_end_pos", box([hx, 0.0, za], [0.02, 2 * hy, ah]), colour)
        parts.add("apron_end_neg", box([-hx, 0.0, za], [0.02, 2 * hy, ah]), colour)
    if shelf:
        zs = rng.uniform(0.12, 0.25) * h
        parts.add("shelf", box([0.0, 0.0, zs], [2 * hx + 2 * r, 2 * hy + 2 * r, 0.025]), shade(colour, 1.1))


def _pedestal(parts: PartList, rng, h: float, top_t: float, size: float, colour, params: dict) -> None:
    col_r = rng.uniform(0.035, 0.07)
    foot = str(rng.choice(["disc", "cross"]))
    params.update(column_radius=col_r, foot=foot)
    parts.add("column", rod([0.0, 0.0, 0.03], [0.0, 0.0, h - top_t], col_r, sections=12), colour)
    reach = rng.uniform(0.25, 0.4) * size
    if foot == "disc":
        parts.add("foot", disc([0.0, 0.0, 0.02], reach, 0.04), colour)
    else:
        parts.add("foot_x", box([0.0, 0.0, 0.03], [2 * reach, 0.06, 0.06]), colour)
        parts.add("foot_y", box([0.0, 0.0, 0.03], [0.06, 2 * reach, 0.06]), colour)


def _trestle(parts: PartList, rng, length: float, width: float, h: float, top_t: float, colour,
             params: dict) -> None:
    x_end = length / 2 * rng.uniform(0.6, 0.8)
    thick = rng.uniform(0.04, 0.08)
    panel_w = width * rng.uniform(0.3, 0.6)
    params.update(trestle_x=x_end, trestle_thickness=thick)
    for name, x in (("end_pos", x_end), ("end_neg", -x_end)):
        parts.add(name, box([x, 0.0, 0.5 * (h - top_t)], [thick, panel_w, h - top_t]), colour)
        parts.add(f"{name}_foot", box([x, 0.0, 0.03], [thick * 1.6, width * 0.85, 0.06]), colour)
    parts.add("stretcher", box([0.0, 0.0, 0.35 * h], [2 * x_end, thick * 0.8, 0.06]), colour)


def make_table(object_id: int) -> PartsAsset:
    """The table with id ``object_id`` (refuses reserved ids); a pure function of the id."""
    rng = object_rng(SOURCE, object_id)
    style = str(rng.choice(STYLES, p=[0.6, 0.22, 0.18]))
    coffee = rng.uniform() < 0.25
    h = rng.uniform(0.38, 0.5) if coffee else rng.uniform(0.68, 0.78)
    round_top = style == "pedestal" and rng.uniform() < 0.7 or style == "four-legs" and rng.uniform() < 0.2
    length = rng.uniform(0.8, 1.6) if not round_top else rng.uniform(0.7, 1.2)
    width = rng.uniform(0.5, 0.9) if not round_top else length
    if style == "trestle":
        round_top = False
        length = max(length, 1.1)
    top_t = rng.uniform(0.025, 0.07)
    top_family = str(rng.choice(["wood", "paint"], p=[0.7, 0.3]))
    top = draw_colour(rng, top_family)
    base_family = str(rng.choice(["wood", "metal", "paint"], p=[0.45, 0.35, 0.2]))
    base = distinct_colour(rng, base_family, [top], 0.25)
    params: dict = {"style": style, "coffee": coffee, "height": h, "round_top": round_top, "length": length,
                    "width": width, "top_thickness": top_t}
    parts = PartList(axis=1)
    if round_top:
        parts.add("top", disc([0.0, 0.0, h - top_t / 2], length / 2, top_t, sections=28), top)
    else:
        parts.add("top", box([0.0, 0.0, h - top_t / 2], [length, width, top_t]), top)
    if style == "four-legs":
        _four_legs(parts, rng, length, width, h, top_t, round_top, base, params)
    elif style == "pedestal":
        _pedestal(parts, rng, h, top_t, min(length, width) if not round_top else length, base, params)
    else:
        _trestle(parts, rng, length, width, h, top_t, base, params)
    return parts.asset(f"{object_id:03d}", params, yaw_degrees=YAW_DEGREES)
