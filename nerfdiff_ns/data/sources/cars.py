"""``procedural-cars``: cars assembled from primitives, deterministic from the object id.

Object frame: +X is the car's front, +Z up, ground at z = 0, mirror symmetric about y = 0. A body
(a box whose hood and boot slope down), a greenhouse of dark glass (a prism whose top is shorter
and narrower than its base, so the windscreen and rear window lean) under a roof in the body
colour, four wheels (tyre and hub), head- and tail-lights and bumpers. Body styles: sedan,
hatchback, SUV, van and pickup (a short cab and an open bed).
"""

from __future__ import annotations

import numpy as np

from nerfdiff_ns.data.sources.ids import object_rng
from nerfdiff_ns.data.sources.palette import draw_colour, shade
from nerfdiff_ns.data.sources.parts import PartList, PartsAsset
from nerfdiff_ns.data.sources.primitives import Mesh, box, rod

__all__ = ["make_car", "STYLES", "YAW_DEGREES"]

SOURCE = "procedural-cars"
STYLES = ("sedan", "hatchback", "suv", "van", "pickup")
YAW_DEGREES = -40.0
"""Canonical pose: the car's front faces azimuth -40 degrees, so the input view sees it three-quarter on."""
GLASS = (0.16, 0.19, 0.24)
TYRE = (0.07, 0.07, 0.08)


def _prism(x0: float, x1: float, half_w: float, z0: float, z1: float, front_in: float, rear_in: float,
           side_in: float, front_drop: float = 0.0, rear_drop: float = 0.0) -> Mesh:
    """A box from x0 (rear) to x1 (front) whose top face is pulled in by ``front_in`` / ``rear_in``
    along X and ``side_in`` along Y, and whose top front / rear edges are lowered by ``front_drop`` /
    ``rear_drop`` (a car's greenhouse, or its body with a sloping hood and boot)."""
    b = box([0.5 * (x0 + x1), 0.0, 0.5 * (z0 + z1)], [x1 - x0, 2 * half_w, z1 - z0])
    v = np.array(b.vertices)
    top = v[:, 2] > 0.5 * (z0 + z1)
    front, rear = v[:, 0] > 0.5 * (x0 + x1), v[:, 0] < 0.5 * (x0 + x1)
    v[top & front, 0] -= front_in
    v[top & rear, 0] += rear_in
    v[top, 1] *= (half_w - side_in) / half_w
    v[top & front, 2] -= front_drop
    v[top & rear, 2] -= rear_drop
    return Mesh(v, b.faces)


def make_car(object_id: int) -> PartsAsset:
    """The car with id ``object_id`` (refuses reserved ids); a pure function of the id."""
    rng = object_rng(SOURCE, object_id)
    style = str(rng.choice(STYLES, p=[0.32, 0.24, 0.2, 0.1, 0.14]))
    length = 1.0
    width = rng.uniform(0.40, 0.47)
    clearance = rng.uniform(0.1, 0.13) if style in ("suv", "pickup") else rng.uniform(0.05, 0.08)
    body_h = rng.uniform(0.13, 0.18)
    wheel_r = rng.uniform(0.085, 0.105) if style not in ("suv", "pickup") else rng.uniform(0.1, 0.125)
    cabin_h = {"van": rng.uniform(0.2, 0.26), "suv": rng.uniform(0.15, 0.19)}.get(style, rng.uniform(0.11, 0.15))
    paint = draw_colour(rng, "car")
    metal = draw_colour(rng, "metal")
    params = {"style": style, "width": width, "clearance": clearance, "body_height": body_h, "wheel_radius": wheel_r,
              "cabin_height": cabin_h}
    parts = PartList(axis=1)
    hw = width / 2
    z_body, z_belt = clearance, clearance + body_h
    hood_drop = rng.uniform(0.02, 0.05)
    nose_in, tail_in = rng.uniform(0.03, 0.07), rng.uniform(0.0, 0.03)
    tail_drop = hood_drop * rng.uniform(0.0, 0.6)
    parts.add("body", _prism(-length / 2, length / 2, hw, z_body, z_belt, nose_in, tail_in, 0.01,
                             front_drop=hood_drop, rear_drop=tail_drop), paint)
    # greenhouse: where it starts and ends along the body
    if style == "sedan":
        x_rear, x_front = -0.32, rng.uniform(0.12, 0.2)
    elif style == "hatchback":
        x_rear, x_front = -0.47, rng.uniform(0.1, 0.2)
    elif style == "suv":
        x_rear, x_front = -0.48, rng.uniform(0.12, 0.2)
    elif style == "van":
        x_rear, x_front = -0.49, rng.uniform(0.3, 0.4)
    else:  # pickup: short cab, open bed behind it
        x_rear, x_front = -0.08, rng.uniform(0.12, 0.2)
    front_slope = rng.uniform(0.09, 0.14) if style != "van" else rng.uniform(0.05, 0.1)
    rear_slope = {"sedan": rng.uniform(0.07, 0.11), "pickup": 0.02}.get(style, rng.uniform(0.02, 0.05))
    z_roof = z_belt + cabin_h
    roof_t = 0.03
    parts.add("glass", _prism(x_rear, x_front, hw - 0.015, z_belt - hood_drop * 0.2, z_roof - roof_t, front_slope,
                              rear_slope, 0.04), GLASS)
    # the roof follows the glass's top face
    roof_x0, roof_x1 = x_rear + rear_slope, x_front - front_slope
    parts.add("roof", box([0.5 * (roof_x0 + roof_x1), 0.0, z_roof - roof_t / 2],
                          [roof_x1 - roof_x0 + 0.02, 2 * (hw - 0.05), roof_t]), paint)
    if style == "pickup":
        bed_colour = shade(paint, 0.6)
        parts.add("bed_floor", box([-0.29, 0.0, z_belt - 0.01], [0.40, 2 * hw - 0.04, 0.02]), bed_colour)
        parts.add_pair("bed_wall", box([-0.29, hw - 0.015, z_belt + 0.02], [0.42, 0.03, 0.04]), paint)
        parts.add("tailgate", box([-0.485, 0.0, z_belt + 0.02], [0.03, 2 * hw, 0.04]), paint)
    # wheels: tyres along Y with a lighter hub on the outside
    overhang = rng.uniform(0.15, 0.2)
    tyre_w = rng.uniform(0.06, 0.08)
    for name, x in (("front", length / 2 - overhang), ("rear", -length / 2 + overhang + 0.02)):
        y_out = hw - 0.005
        parts.add_pair(f"{name}_tyre", rod([x, y_out - tyre_w, wheel_r], [x, y_out, wheel_r], wheel_r, sections=14),
                       TYRE)
        parts.add_pair(f"{name}_hub", rod([x, y_out, wheel_r], [x, y_out + 0.006, wheel_r], wheel_r * 0.55,
                                          sections=10), metal)
    # lights and bumpers
    z_lamp = z_belt - hood_drop - rng.uniform(0.02, 0.035)
    lamp_w = rng.uniform(0.06, 0.1)
    head = (0.96, 0.94, 0.8)
    # on the sloping nose / tail faces: x recedes linearly with height from the bottom edge to the top edge
    x_head = length / 2 - nose_in * (z_lamp - z_body) / (z_belt - hood_drop - z_body) - 0.003
    x_tail = -length / 2 + tail_in * (z_lamp - z_body) / (z_belt - tail_drop - z_body) + 0.003
    parts.add_pair("headlight", box([x_head, hw - lamp_w / 2 - 0.02, z_lamp], [0.012, lamp_w, 0.03]), head)
    parts.add_pair("taillight", box([x_tail, hw - lamp_w / 2 - 0.02, z_lamp], [0.012, lamp_w, 0.03]),
                   (0.75, 0.06, 0.06))
    bumper = shade(paint, 0.45) if rng.uniform() < 0.5 else (0.15, 0.15, 0.16)
    for name, x in (("front_bumper", length / 2), ("rear_bumper", -length / 2)):
        parts.add(name, box([x, 0.0, z_body + 0.02], [0.04, 2 * hw + 0.01, 0.04]), bumper)
    return parts.asset(f"{object_id:03d}", params, yaw_degrees=YAW_DEGREES)
