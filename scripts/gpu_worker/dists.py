"""Which installed distributions a bare GPU worker has, which it lacks, and where their files are.

Shared by ``pack.py`` (copies what the worker lacks) and ``bare_python.py`` (simulates the worker
here). The worker is assumed to have torch with its own requirements, plus numpy and Pillow
(compiled, Python-version specific, and required by diffusers itself): everything else the
pretraining imports travels in the pack. Requirement closures come from the installed metadata
(``importlib.metadata`` + ``packaging``), so they follow whatever versions this venv holds.
"""

from __future__ import annotations

import importlib.metadata as md
import sysconfig
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

WORKER_BASE = ("torch", "numpy", "pillow")
"""What a lent GPU machine is taken to have installed (with torch's own requirements)."""


def distribution(name: str) -> md.Distribution:
    try:
        return md.distribution(name)
    except md.PackageNotFoundError as err:
        raise SystemExit(f"package {name!r} is not installed in this environment ({Path(sysconfig.get_paths()['purelib'])}); "
                         "install it here first, or drop it from the pack.") from err


def requirement_closure(names: tuple[str, ...] | list[str]) -> dict[str, md.Distribution]:
    """``names`` and everything they require (no extras; markers evaluated for this interpreter)."""
    env = default_environment()
    found: dict[str, md.Distribution] = {}
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional requirement this environment does not have
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            todo.append(canonicalize_name(req.name))
    return found


def top_level_paths(dist: md.Distribution) -> list[Path]:
    """The entries a distribution put directly into site-packages (package dirs, modules, .dist-info, .libs)."""
    root = Path(str(dist.locate_file("")))
    names = set()
    for file in dist.files or []:
        parts = Path(str(file)).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue
        names.add(parts[0])
    return sorted(root / n for n in names if (root / n).exists())


def compiled_files(path: Path) -> list[Path]:
    """Extension modules under ``path`` (a file or a package folder)."""
    if path.is_file():
        return [path] if path.suffix == ".so" else []
    return sorted(path.rglob("*.so"))


def is_version_specific(so_file: Path) -> bool:
    """True for ``*.cpython-311-*.so`` (one Python version only); abi3 / plain ``.so`` load on any CPython 3."""
    return ".cpython-" in so_file.name
