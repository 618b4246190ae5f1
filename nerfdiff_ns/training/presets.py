"""Presets: JSON files in the repository's ``configs/`` folder that override dataclass defaults."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from nerfdiff_ns.errors import FlagError

T = TypeVar("T")

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


def preset_path(kind: str, name: str) -> Path:
    """``configs/<kind>/<name>.json``; a path to a JSON file is accepted as well."""
    candidate = Path(name)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    path = CONFIGS_DIR / kind / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS_DIR / kind).glob("*.json"))
        raise FlagError(f"unknown {kind} preset {name!r}: choose one of {known} or give a path to a JSON file.")
    return path


def apply_overrides(instance: T, overrides: dict[str, Any], where: str = "") -> T:
    """Return a copy of a (nested) dataclass with JSON values applied; unknown keys are errors."""
    fields = {f.name: f for f in dataclasses.fields(instance)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(type(instance))
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in fields:
            raise FlagError(f"{where or type(instance).__name__}: unknown setting {key!r} (known: {sorted(fields)})")
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = apply_overrides(current, value, f"{where}.{key}" if where else key)
        else:
            changes[key] = _coerce(value, hints.get(key))
    return dataclasses.replace(instance, **changes)  # type: ignore[type-var]


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return value if value is None else _coerce(value, args[0] if len(args) == 1 else None)
    if hint is Path or (isinstance(hint, type) and issubclass(hint, Path)):
        return Path(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def load_preset(kind: str, name: str, base: T) -> T:
    path = preset_path(kind, name)
    return apply_overrides(base, json.loads(path.read_text()), where=str(path))
