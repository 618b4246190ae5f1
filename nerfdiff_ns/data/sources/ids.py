"""Object ids and splits shared by every source: train 000-899, val 900-949, 950-999 reserved.

The reserved ids are held out for an external evaluation (shared DESIGN.md section 3): no source
may render them, so no model is ever trained, tuned or selected on them.
"""

from __future__ import annotations

import re
import zlib
from typing import Dict

import numpy as np

__all__ = ["NUM_OBJECT_IDS", "SPLIT_OBJECT_IDS", "RESERVED_OBJECT_IDS", "ReservedObjectError", "split_of_object",
           "parse_object_id", "object_rng"]

NUM_OBJECT_IDS = 1000
SPLIT_OBJECT_IDS: Dict[str, range] = {"train": range(0, 900), "val": range(900, 950)}
"""Ids of each split the generator may write (the same for every source)."""
RESERVED_OBJECT_IDS = range(950, 1000)
"""Held out for an external evaluation: never rendered, trained, tuned or selected on."""


class ReservedObjectError(ValueError):
    """A reserved (held-out) object was requested."""


def split_of_object(object_id: int, source: str = "random_urdfs") -> str:
    """The split an object id belongs to; raises :class:`ReservedObjectError` for 950-999."""
    if object_id in RESERVED_OBJECT_IDS:
        raise ReservedObjectError(
            f"{source} object {object_id:03d} is reserved for the held-out evaluation (objects "
            f"{RESERVED_OBJECT_IDS.start}-{RESERVED_OBJECT_IDS.stop - 1}) and must never be rendered for "
            "training, tuning or selection. Use train objects 000-899 or val objects 900-949.")
    for split, ids in SPLIT_OBJECT_IDS.items():
        if object_id in ids:
            return split
    raise ValueError(f"object id {object_id} does not exist: {source} has ids 000-{NUM_OBJECT_IDS - 1:03d}")


def parse_object_id(token: str, source: str = "random_urdfs") -> int:
    """``"7"``/``"007"``/``"random_urdfs/007/007.obj"`` -> 7. Reserved ids raise :class:`ReservedObjectError`.

    For random_urdfs a non-numeric token names one of pybullet_data's named meshes (``duck``,
    ``teddy_vhacd.urdf``, ...), which are reserved too; for a procedural source it is a plain
    ``ValueError``."""
    text = str(token).strip()
    match = re.fullmatch(r"\d+", text)
    if match is None and source == "random_urdfs":
        match = re.search(r"random_urdfs[/\\](\d+)", text)
    if match is None:
        if source == "random_urdfs":
            raise ReservedObjectError(
                f"{token!r} is not a random_urdfs id. The named meshes shipped in pybullet_data (duck, teddy, "
                "mug, bunny, ...) are reserved for the held-out evaluation and cannot be generated; "
                "pass numeric ids 0-949 (train 0-899, val 900-949).")
        raise ValueError(f"{token!r} is not a {source} object id: pass numeric ids 0-949 "
                         "(train 0-899, val 900-949)")
    object_id = int(match.group(1) if match.re.groups else match.group(0))
    split_of_object(object_id, source)  # raises for reserved / out-of-range ids
    return object_id


def object_rng(source: str, object_id: int) -> np.random.Generator:
    """The RNG that decides a procedural object's shape and colours: a function of (source, id) only,
    so the same id gives the same mesh, bit for bit, whatever else is generated and whatever --seed.
    Refuses reserved ids."""
    split_of_object(object_id, source)
    return np.random.default_rng(np.random.SeedSequence([zlib.crc32(source.encode()), int(object_id)]))
