"""Object sources of ``nerfdiff-generate-data``: name -> a function from object id to a renderable asset.

* ``random-urdfs``: pybullet_data's procedural blobs (one OBJ, one colour each);
* ``procedural-chairs``, ``procedural-tables``, ``procedural-mugs``, ``procedural-cars``: objects assembled from
  primitives with trimesh, mirror symmetric, coloured per part, a pure function of the id.

Every source uses the same ids and splits (:mod:`nerfdiff_ns.data.sources.ids`): train 000-899,
val 900-949, 950-999 reserved and refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Literal, Union

from nerfdiff_ns.data.sources.ids import split_of_object
from nerfdiff_ns.data.sources.parts import PartsAsset
from nerfdiff_ns.data.sources.random_urdfs import MeshAsset, load_random_urdf
from nerfdiff_ns.errors import FlagError

__all__ = ["Source", "SourceName", "SOURCES", "get_source", "load_asset"]

SourceName = Literal["random-urdfs", "procedural-chairs", "procedural-tables", "procedural-mugs", "procedural-cars"]
"""The --source choices (kept equal to ``SOURCES``' keys by tests/test_procedural.py)."""


@dataclass(frozen=True)
class Source:
    """One source: the name used on the command line and in dataset.json, and its asset loader."""

    name: str
    description: str
    load: Callable[[int], Union[MeshAsset, PartsAsset]]
    error_name: str
    """How error messages name the source (random_urdfs keeps pybullet_data's folder name)."""


def _chair(object_id: int) -> PartsAsset:
    from nerfdiff_ns.data.sources.chairs import make_chair

    return make_chair(object_id)


def _table(object_id: int) -> PartsAsset:
    from nerfdiff_ns.data.sources.tables import make_table

    return make_table(object_id)


def _mug(object_id: int) -> PartsAsset:
    from nerfdiff_ns.data.sources.mugs import make_mug

    return make_mug(object_id)


def _car(object_id: int) -> PartsAsset:
    from nerfdiff_ns.data.sources.cars import make_car

    return make_car(object_id)


SOURCES: Dict[str, Source] = {
    "random-urdfs": Source("random-urdfs", "pybullet_data/random_urdfs (train 000-899, val 900-949; 950-999 reserved)",
                           load_random_urdf, "random_urdfs"),
    "procedural-chairs": Source("procedural-chairs", "procedural chairs assembled from primitives with trimesh "
                                "(train 000-899, val 900-949; 950-999 reserved)", _chair, "procedural-chairs"),
    "procedural-tables": Source("procedural-tables", "procedural tables assembled from primitives with trimesh "
                                "(train 000-899, val 900-949; 950-999 reserved)", _table, "procedural-tables"),
    "procedural-mugs": Source("procedural-mugs", "procedural mugs assembled from primitives with trimesh "
                              "(train 000-899, val 900-949; 950-999 reserved)", _mug, "procedural-mugs"),
    "procedural-cars": Source("procedural-cars", "procedural cars assembled from primitives with trimesh "
                              "(train 000-899, val 900-949; 950-999 reserved)", _car, "procedural-cars"),
}


def get_source(name: str) -> Source:
    """The source called ``name``; a ``ValueError`` listing the choices otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise FlagError(f"unknown --source {name!r}: choose from {', '.join(SOURCES)}") from None


def load_asset(source: str, object_id: int) -> Union[MeshAsset, PartsAsset]:
    """Object ``object_id`` of ``source`` (refuses reserved ids before building anything)."""
    src = get_source(source)
    split_of_object(object_id, src.error_name)
    return src.load(object_id)
