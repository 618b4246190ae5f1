"""The bookkeeping files of a generated dataset and the rules for writing into an existing folder.

``<root>/dataset.json`` records the generator, the source, the render settings and the ids of each
split; ``<root>/<split>/protocol.json`` records the split's cameras and, for val, the fixed input
view of the evaluation protocol. A split this tool wrote before is replaced; a folder it did not
write, or splits made with other settings, are kept unless ``--overwrite``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from nerfdiff_ns.data.camera_rig import intrinsics_for
from nerfdiff_ns.errors import FlagError

__all__ = ["GENERATOR_NAME", "FORMAT_VERSION", "read_json", "write_json", "prepare_output", "protocol",
           "dataset_record"]

GENERATOR_NAME = "nerfdiff-generate-data"
FORMAT_VERSION = 1


def read_json(path: Path) -> Optional[dict]:
    """The JSON object in ``path``, or None when it is missing or not an object."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _same_settings(old: dict, new: dict) -> bool:
    old = dict(old)
    old.setdefault("source", "random-urdfs")  # datasets written before sources existed
    return old == new


def prepare_output(config, selected: Dict[str, List[int]]) -> dict:
    """Check the output folder and clear the splits about to be written; return dataset.json's
    splits that stay (same settings, not rewritten now)."""
    root = Path(config.output_dir)
    old = read_json(root / "dataset.json") if (root / "dataset.json").is_file() else None
    kept_splits: dict = {}
    if old is not None:
        same = _same_settings(old.get("settings") or {}, config.render_settings())
        others = {s: ids for s, ids in old.get("splits", {}).items() if s not in selected}
        if others and not same:
            if not config.overwrite:
                raise FlagError(
                    f"{root / 'dataset.json'}: this folder holds splits {', '.join(others)} generated with different "
                    "settings or another --source; the dataset would mix them. Use another --output-dir, the same "
                    "settings, or --overwrite (which drops those splits from dataset.json).")
        elif same:
            kept_splits = others
    for split in selected:
        split_dir = root / split
        if split_dir.exists() and any(split_dir.iterdir()):
            if (split_dir / "protocol.json").is_file() or config.overwrite:
                shutil.rmtree(split_dir)
            else:
                raise FlagError(f"{split_dir}: folder exists and was not written by {GENERATOR_NAME}; "
                                "choose another --output-dir or pass --overwrite to replace it")
    return kept_splits


def protocol(config, split: str, ids: List[int]) -> dict:
    """``<split>/protocol.json``: cameras, intrinsics and (val) the fixed input view."""
    focal, cx, cy = intrinsics_for(config.resolution, config.fov_degrees)
    spiral = split != "train"
    return {
        "generator": GENERATOR_NAME,
        "format_version": FORMAT_VERSION,
        "source": config.source,
        "split": split,
        "object_ids": [f"{i:03d}" for i in ids],
        "camera_layout": "spiral" if spiral else "random",
        "views_per_object": config.eval_views_per_object if spiral else config.views_per_object,
        "input_view_index": config.input_view_index if spiral else None,
        "target_views": "all views except input_view_index" if spiral else None,
        "spiral": ("azimuth_k = 360*k/N degrees, elevation_k = low + (high-low)*k/(N-1)" if spiral else None),
        "resolution": config.resolution,
        "intrinsics": {"fx": focal, "fy": focal, "cx": cx, "cy": cy},
        "fov_degrees": config.fov_degrees,
        "camera_distance": config.camera_distance,
        "object_radius": config.object_radius,
        "elevation_range_degrees": list(config.elevation_range_degrees),
        "background": [1.0, 1.0, 1.0],
        "seed": config.seed,
    }


def dataset_record(config, source_description: str, splits: Dict[str, List[str]]) -> dict:
    """``dataset.json``: what made the dataset and which ids each split holds."""
    return {
        "generator": GENERATOR_NAME,
        "format_version": FORMAT_VERSION,
        "format": "SRN (pixelNeRF layout): <split>/<object>/rgb/*.png, pose/*.txt (OpenCV camera-to-world), "
                  "intrinsics.txt",
        "source": source_description,
        "world": "+Z up, objects normalised into the sphere of object_radius around the origin",
        "settings": config.render_settings(),
        "splits": {s: splits[s] for s in sorted(splits)},
    }
