"""``procedural-chairs``: chairs assembled from primitives, deterministic from the object id.

Object frame: +X is the chair's front, +Y its left, +Z up, floor at z = 0; every chair is mirror
symmetric about the plane y = 0. Four styles share one grammar of parts:

* ``side``: a seat (box, round or trapezoid), four legs (square or round, tapered, splayed) or a
  tubular sled base, optional stretchers (H or box) and arms, and a back on two rear posts filled
  with a panel, vertical slats, horizontal rails or a crest rail;
* ``office``: a cushioned seat on a gas column and a five-spoke base with casters, a padded back on a
  spine, optional arms;
* ``armchair``: upholstered blocks (base, seat cushion, arms, back) on short legs;
* ``bar``: a bar chair, tall legs with a foot ring (box stretchers) and a low back.

Frames are wood, paint or metal; seats and backs are fabric or a contrasting wood, so at least two
part colours show from most views.
"""

from __future__ import annotations

import math
from typing import List

import numpy as np

from nerfdiff_ns.data.sources.ids import object_rng
from nerfdiff_ns.data.sources.palette import distinct_colour, draw_colour, shade
from nerfdiff_ns.data.sources.parts import PartList, PartsAsset
from nerfdiff_ns.data.sources.primitives import box, disc, rod, rotation_y

__all__ = ["make_chair", "STYLES"]

SOURCE = "procedural-chairs"
STYLES = ("side", "office", "armchair", "bar")
_STYLE_P = (0.62, 0.14, 0.14, 0.10)
YAW_DEGREES = -40.0
"""Canonical pose: the chair's front faces azimuth -40 degrees, so the evaluation input view (azimuth 0)
sees it three-quarter on, as a person would photograph a chair."""


def _half_positions(count: int, half_width: float) -> List[float]:
    """``count`` positions evenly spread over [-half_width, half_width], returned for y >= 0 only
    (y = 0 included when count is odd) so each is placed once and mirrored."""
    ys = np.linspace(-half_width, half_width, count) if count > 1 else np.zeros(1)
    return [float(y) for y in ys if y >= -1e-12]


def _place(parts: PartList, name: str, make, y: float, rgba) -> None:
    """Add ``make(y)`` mirrored to -y, or once if it sits on the mirror plane."""
    if abs(y) < 1e-12:
        parts.add(name, make(0.0), rgba)
    else:
        parts.add_pair(name, make(abs(y)), rgba)


def _frame_colours(rng: np.random.Generator, metal_bias: float = 0.0):
    family = rng.choice(["wood", "paint", "metal"], p=np.array([0.55, 0.2, 0.25 + metal_bias]) / (1 + metal_bias))
    frame = draw_colour(rng, str(family))
    if rng.uniform() < 0.72:
        cover = distinct_colour(rng, "fabric", [frame], 0.3)
    else:
        cover = distinct_colour(rng, "wood" if family != "wood" else "paint", [frame], 0.3)
    return str(family), frame, cover


def _back_fill(parts: PartList, rng, kind: str, x_post: float, half_w: float, z0: float, z1: float,
               tilt: float, post_r: float, frame, cover) -> None:
    """Fill the back between the rear posts (x_post, +-half_w) from z0 to z1, leaning back by ``tilt`` deg."""
    rot = rotation_y(-tilt)
    lean = math.tan(math.radians(tilt))

    def at(z: float) -> float:  # x of the back plane at height z
        return x_post - lean * (z - z0)

    thick = rng.uniform(0.018, 0.035)
    inner = half_w - post_r
    if kind == "panel":
        lo = z0 + rng.uniform(0.0, 0.35) * (z1 - z0)
        zc = 0.5 * (lo + z1)
        parts.add("back_panel", box([at(zc), 0.0, zc], [thick * 1.3, 2 * inner, z1 - lo], rot), cover)
    elif kind == "slats":
        count = int(rng.integers(2, 6))
        rail_h = rng.uniform(0.04, 0.08)
        zc = z1 - rail_h / 2
        parts.add("top_rail", box([at(zc), 0.0, zc], [thick, 2 * inner, rail_h], rot), frame)
        zb = z0 + rng.uniform(0.03, 0.1)
        parts.add("low_rail", box([at(zb), 0.0, zb], [thick, 2 * inner, 0.03], rot), frame)
        slat_w = min(rng.uniform(0.025, 0.07), 1.6 * inner / count)
        slat_colour = frame if rng.uniform() < 0.6 else cover
        zm = 0.5 * (zb + z1 - rail_h)
        for i, y in enumerate(_half_positions(count, inner - slat_w)):
            _place(parts, f"slat{i}", lambda yy: box([at(zm), yy, zm], [thick * 0.8, slat_w, z1 - rail_h - zb], rot),
                   y, slat_colour)
    elif kind == "rails":
        count = int(rng.integers(2, 5))
        rail_h = rng.uniform(0.035, 0.07)
        rail_colour = frame if rng.uniform() < 0.5 else cover
        for i, zc in enumerate(np.linspace(z1 - rail_h / 2, z0 + 0.45 * (z1 - z0), count)):
            parts.add(f"rail{i}", box([at(zc), 0.0, zc], [thick, 2 * inner, rail_h], rot), rail_colour)
    else:  # crest: one deep rail at the top
        crest_h = rng.uniform(0.1, 0.22)
        zc = z1 - crest_h / 2
        parts.add("crest", box([at(zc), 0.0, zc], [thick * 1.2, 2 * half_w + 0.02, crest_h], rot), cover)


def _side_chair(parts: PartList, rng, params: dict, bar: bool = False) -> None:
    family, frame, cover = _frame_colours(rng)
    w, d = rng.uniform(0.40, 0.58), rng.uniform(0.38, 0.52)
    h = rng.uniform(0.68, 0.80) if bar else rng.uniform(0.40, 0.50)
    t = rng.uniform(0.03, 0.09)
    seat_shape = str(rng.choice(["box", "round", "trapezoid"], p=[0.7, 0.12, 0.18]))
    legs = "four" if bar else str(rng.choice(["four", "sled"], p=[0.8, 0.2] if family == "metal" else [0.95, 0.05]))
    r = rng.uniform(0.018, 0.034) if legs == "four" else rng.uniform(0.012, 0.02)
    square = bool(rng.uniform() < (0.6 if family == "wood" else 0.25)) and legs == "four"
    taper = rng.uniform(0.55, 1.0) if rng.uniform() < 0.5 else 1.0
    splay = rng.uniform(0.0, 0.07) if (rng.uniform() < 0.4 or bar) else 0.0
    inset = rng.uniform(0.015, 0.05)
    back_h = rng.uniform(0.16, 0.3) if bar else rng.uniform(0.32, 0.58)
    tilt = rng.uniform(0.0, 14.0)
    back = str(rng.choice(["panel", "slats", "rails", "crest"], p=[0.35, 0.3, 0.2, 0.15]))
    arms = (not bar) and rng.uniform() < 0.25
    stretch = str(rng.choice(["none", "H", "box"], p=[0.5, 0.25, 0.25])) if legs == "four" else "none"
    if bar:
        stretch = "box"
    params.update(seat=(w, d, h, t), seat_shape=seat_shape, legs=legs, leg_radius=r, square_legs=square,
                  taper=taper, splay=splay, back=back, back_height=back_h, tilt=tilt, arms=arms, stretchers=stretch)

    seat_colour = cover if rng.uniform() < 0.85 else frame
    zs = h - t / 2
    if seat_shape == "round":
        radius = 0.5 * min(w, d) + 0.02
        parts.add("seat", disc([0.0, 0.0, zs], radius, t), seat_colour)
        hx, hy = radius * 0.72, radius * 0.72
    else:
        seat = box([0.0, 0.0, zs], [d, w, t])
        if seat_shape == "trapezoid":  # wider at the front
            v = np.array(seat.vertices)
            v[:, 1] *= np.where(v[:, 0] > 0, 1.0, rng.uniform(0.78, 0.9))
            seat = seat._replace(vertices=v)
        parts.add("seat", seat, seat_colour)
        hx, hy = d / 2 - inset - r, w / 2 - inset - r
        if seat_shape == "trapezoid":
            hy = hy * 0.9
    z_leg_top = h - t
    rear_x = -hx
    if legs == "four":
        for name, x in (("front_leg", hx), ("rear_leg", -hx)):
            top = [x, hy, z_leg_top]
            foot = [x + np.sign(x) * splay * h, hy + splay * h, 0.0]
            parts.add_pair(name, rod(top, foot, r, square=square, end_scale=taper), frame)
        zr = rng.uniform(0.12, 0.25) * h if not bar else 0.3 * h
        def leg_at(x: float, z: float) -> List[float]:  # point on the (splayed) leg at height z
            k = (z_leg_top - z) / z_leg_top
            return [x + np.sign(x) * splay * h * k, hy + splay * h * k, z]
        sr = 0.6 * r * (0.5 + 0.5 * taper)
        if stretch in ("H", "box"):
            parts.add_pair("side_stretcher", rod(leg_at(hx, zr), leg_at(-hx, zr), sr, square=square), frame)
        if stretch == "H":
            y = leg_at(0.0, zr)[1]
            parts.add("mid_stretcher", rod([0.0, -y, zr], [0.0, y, zr], sr, square=square), frame)
        if stretch == "box":
            for name, x in (("front_stretcher", hx), ("rear_stretcher", -hx)):
                p = leg_at(x, zr * 1.15)
                parts.add(name, rod([p[0], -p[1], p[2]], p, sr, square=square), frame)
    else:  # sled: a tube loop per side, runner on the floor
        fx = d / 2 - inset
        parts.add_pair("runner", rod([fx + 0.04, hy, r], [-fx - 0.02, hy, r], r), frame)
        parts.add_pair("front_upright", rod([fx, hy, r], [fx * 0.9, hy, z_leg_top], r), frame)
        parts.add_pair("rear_upright", rod([-fx, hy, r], [-fx * 0.9, hy, z_leg_top], r), frame)
        parts.add_pair("seat_rail", rod([fx * 0.9, hy, z_leg_top], [-fx * 0.9, hy, z_leg_top], r), frame)
        rear_x = -fx * 0.9
    # back: two posts rising from the rear of the seat, leaning back by `tilt`
    lean = math.tan(math.radians(tilt))
    z_top = h + back_h
    post_r = r * (0.9 if legs == "four" else 1.0)
    post_x = min(rear_x, -d / 2 + inset + post_r) if seat_shape != "round" else rear_x
    post_y = hy
    parts.add_pair("back_post", rod([post_x, post_y, z_leg_top], [post_x - lean * (z_top - z_leg_top), post_y, z_top],
                                    post_r, square=square), frame)
    _back_fill(parts, rng, back, post_x, post_y, h, z_top, tilt, post_r, frame, cover)
    if len(parts.colours()) < 2:  # an all-frame chair: upholster the seat so its parts read apart
        parts.recolour("seat", cover)
    if arms:
        za = h + rng.uniform(0.17, 0.25)
        ax = hx * rng.uniform(0.8, 1.05)
        x_back = post_x - lean * (za - z_leg_top)
        arm_y = post_y + rng.uniform(0.0, 0.03)
        parts.add_pair("arm_post", rod([ax, arm_y, z_leg_top], [ax, arm_y, za], post_r, square=square), frame)
        arm_colour = frame if rng.uniform() < 0.6 else cover
        arm_w = rng.uniform(0.03, 0.06)
        parts.add_pair("arm_rest", box([0.5 * (ax + 0.05 + x_back), arm_y, za],
                                       [ax + 0.05 - x_back, arm_w, 0.03]), arm_colour)


def _office_chair(parts: PartList, rng, params: dict) -> None:
    metal = draw_colour(rng, "metal")
    cover = distinct_colour(rng, "fabric", [metal], 0.25)
    w, d = rng.uniform(0.45, 0.56), rng.uniform(0.42, 0.52)
    h, t = rng.uniform(0.44, 0.52), rng.uniform(0.07, 0.11)
    spoke = rng.uniform(0.26, 0.33)
    back_h, tilt = rng.uniform(0.4, 0.65), rng.uniform(4.0, 16.0)
    arms = rng.uniform() < 0.6
    params.update(seat=(w, d, h, t), spoke=spoke, back_height=back_h, tilt=tilt, arms=arms)
    parts.add("seat", box([0.0, 0.0, h - t / 2], [d, w, t]), cover)
    z_base = 0.07
    parts.add("column", rod([0.0, 0.0, z_base], [0.0, 0.0, h - t], rng.uniform(0.022, 0.035)), metal)
    parts.add("hub", disc([0.0, 0.0, z_base], 0.05, 0.04, sections=10), metal)
    wheel = shade(metal, 0.5)
    for k, angle in enumerate((0.0, 72.0, 144.0)):
        a = math.radians(angle)
        end = [spoke * math.cos(a), spoke * math.sin(a), z_base - 0.01]
        arm = rod([0.0, 0.0, z_base], end, 0.018, square=True)
        caster = disc([end[0], end[1], 0.025], 0.028, 0.03, sections=8)
        if angle == 0.0:
            parts.add("spoke0", arm, metal)
            parts.add("caster0", caster, wheel)
        else:
            parts.add_pair(f"spoke{k}", arm, metal)
            parts.add_pair(f"caster{k}", caster, wheel)
    x_back = -d / 2 + 0.02
    lean = math.tan(math.radians(tilt))
    z0 = h + rng.uniform(0.04, 0.1)
    z1 = h + back_h
    zc = 0.5 * (z0 + z1)
    parts.add("spine", rod([x_back * 0.5, 0.0, h - t], [x_back - 0.03 - lean * (zc - h), 0.0, zc], 0.02,
                           square=True), metal)
    parts.add("back_pad", box([x_back - lean * (zc - h), 0.0, zc], [rng.uniform(0.05, 0.09), w * rng.uniform(0.85, 1.0),
                                                                   z1 - z0], rotation_y(-tilt)), cover)
    if arms:
        za = h + rng.uniform(0.18, 0.24)
        y = w / 2 + 0.02
        parts.add_pair("arm_post", rod([-0.05, y, h - t], [-0.05, y, za], 0.017, square=True), metal)
        parts.add_pair("arm_pad", box([0.0, y, za], [rng.uniform(0.2, 0.28), 0.055, 0.03]), shade(metal, 0.4))


def _armchair(parts: PartList, rng, params: dict) -> None:
    cover = draw_colour(rng, "fabric")
    cushion = shade(cover, rng.uniform(0.75, 0.9)) if rng.uniform() < 0.6 else distinct_colour(rng, "fabric",
                                                                                                [cover], 0.3)
    leg_colour = draw_colour(rng, str(rng.choice(["wood", "metal"], p=[0.75, 0.25])))
    w, d = rng.uniform(0.6, 0.78), rng.uniform(0.58, 0.72)
    leg_h = rng.uniform(0.06, 0.18)
    base_t, cush_t = rng.uniform(0.1, 0.16), rng.uniform(0.07, 0.11)
    arm_t, arm_h = rng.uniform(0.07, 0.14), rng.uniform(0.12, 0.22)
    back_t, back_h = rng.uniform(0.1, 0.16), rng.uniform(0.4, 0.62)
    params.update(seat=(w, d, leg_h + base_t + cush_t), arm=(arm_t, arm_h), back=(back_t, back_h))
    z_base = leg_h + base_t / 2
    parts.add("base", box([0.0, 0.0, z_base], [d, w, base_t]), cover)
    z_seat = leg_h + base_t
    inner_w = w - 2 * arm_t
    parts.add("cushion", box([back_t / 2 + 0.01, 0.0, z_seat + cush_t / 2], [d - back_t - 0.02, inner_w - 0.01, cush_t]),
              cushion)
    top_arm = z_seat + arm_h
    parts.add_pair("arm", box([0.0, w / 2 - arm_t / 2, 0.5 * (leg_h + top_arm)], [d, arm_t, top_arm - leg_h]), cover)
    top_back = z_seat + back_h
    parts.add("back", box([-d / 2 + back_t / 2, 0.0, 0.5 * (leg_h + top_back)], [back_t, inner_w, top_back - leg_h]),
              cover)
    lr = rng.uniform(0.02, 0.035)
    for name, x in (("front_leg", d / 2 - 0.05), ("rear_leg", -d / 2 + 0.05)):
        parts.add_pair(name, rod([x, w / 2 - 0.05, leg_h], [x, w / 2 - 0.05, 0.0], lr, square=True,
                                 end_scale=0.7), leg_colour)


def make_chair(object_id: int) -> PartsAsset:
    """The chair with id ``object_id`` (refuses reserved ids); a pure function of the id."""
    rng = object_rng(SOURCE, object_id)
    style = str(rng.choice(STYLES, p=_STYLE_P))
    params: dict = {"style": style}
    parts = PartList(axis=1)
    if style == "side":
        _side_chair(parts, rng, params)
    elif style == "bar":
        _side_chair(parts, rng, params, bar=True)
    elif style == "office":
        _office_chair(parts, rng, params)
    else:
        _armchair(parts, rng, params)
    return parts.asset(f"{object_id:03d}", params, yaw_degrees=YAW_DEGREES)
