"""Which objects an evaluation run covers: the split's object folders, ``--num-objects``, ``--shard i/n``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Sequence, Tuple

import torch

from nerfdiff_ns.errors import FlagError


def parse_shard(shard: str) -> Tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not match:
        raise FlagError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise FlagError(f"--shard {shard}: need n >= 1 and 0 <= i < n")
    return index, count


def list_objects(data: Path) -> List[Path]:
    """Object folders of a split folder (natural order), or ``[data]`` for one object folder."""
    from nerfdiff_ns.data.errors import DataError
    from nerfdiff_ns.data.srn import is_object_folder, list_srn_objects

    data = Path(data)
    if not data.exists():
        raise DataError(data, "not found", "pass an SRN split folder (e.g. data/synth32/val) or one object folder with --data")
    if is_object_folder(data):
        return [data]
    if not data.is_dir():
        raise DataError(data, "is not a folder", "pass an SRN split folder or one object folder with --data")
    try:
        return list_srn_objects(data.parent, data.name)
    except DataError:
        splits = sorted(p.name for p in data.iterdir() if p.is_dir() and any(is_object_folder(q) for q in p.iterdir()))
        pick = next((s for s in ("val", "test") if s in splits), splits[0] if splits else "")
        hint = f" (it has splits: {', '.join(splits)}; pass e.g. {data / pick})" if splits else ""
        raise DataError(data, f"holds no object folders{hint}", "pass an SRN split folder or one object folder with --data") from None


def select_objects(objects: Sequence[Path], num_objects: int, shard: str) -> List[Tuple[int, Path]]:
    """(index, folder) of the first ``num_objects`` objects that belong to shard ``i/n``."""
    index, count = parse_shard(shard)
    chosen = list(objects)[: num_objects] if num_objects > 0 else list(objects)
    return [(i, obj) for i, obj in enumerate(chosen) if i % count == index]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device
