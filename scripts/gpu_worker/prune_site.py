"""Make the pack's site/ work beside the worker's own packages; run with the worker's Python before site/ is on
the path: ``python prune_site.py WORK/site``.

Why: site/ comes first on PYTHONPATH, so the versions tested here are the ones used. That can clash
with what the worker already has. On the lent H200, diffusers imports the worker's peft, which imports
the worker's transformers, which imports regex: the packed regex, built for this project's Python
3.11 only (no pure-Python fallback), then broke every import of diffusers' UNet. Two steps:

1. drop packed packages whose compiled parts are for another Python where the worker has its own;
2. check that pretraining's imports load (diffusers' UNet and schedulers); if not, drop every packed
   package the worker also has (the worker's versions then win) and check again.

Exit status 1, with the import error, when neither works.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

CHECK = "from diffusers import UNet2DModel, DDIMScheduler, DDPMScheduler; import safetensors.torch, tyro"
"""What pretraining imports beyond torch, numpy and Pillow, as the import the loop will make."""


def packed_packages(site: Path) -> list[Path]:
    return [p for p in sorted(site.iterdir())
            if (p.is_dir() and not p.name.endswith((".dist-info", ".libs", ".data")) and p.name != "__pycache__")
            or (p.suffix == ".py" and p.is_file())]


def foreign_builds(site: Path, ext_suffix: str) -> list[Path]:
    """Top-level packages in ``site`` with version-specific extensions, none of them for ``ext_suffix``."""
    found = []
    for top in packed_packages(site):
        compiled = [f for f in top.rglob("*.so") if ".cpython-" in f.name] if top.is_dir() else []
        if compiled and not any(f.name.endswith(ext_suffix) for f in compiled):
            found.append(top)
    return found


def worker_has(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def dist_infos_of(site: Path, name: str) -> list[Path]:
    """The ``*.dist-info`` folders in ``site`` whose RECORD installs the top-level ``name``."""
    found = []
    for info in site.glob("*.dist-info"):
        record = info / "RECORD"
        tops = {line.split(",", 1)[0].split("/", 1)[0] for line in record.read_text().splitlines()} if record.is_file() else set()
        if name in tops or f"{name}.py" in tops:
            found.append(info)
    return found


def remove(top: Path, why: str) -> None:
    """Remove a packed package and its metadata: a version check (transformers checks huggingface_hub's) reads the
    metadata first on the path, so leaving ours would report our version for the worker's code."""
    for info in dist_infos_of(top.parent, top.stem):
        shutil.rmtree(info)
    shutil.rmtree(top) if top.is_dir() else top.unlink()
    print(f"[worker] {top.stem}: {why}; using the worker's own")


def imports_load(site: Path) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, cwd=site)
    return proc.returncode == 0, (proc.stderr.strip().splitlines() or [""])[-1]


def main(site: Path) -> int:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ""
    for top in foreign_builds(site, suffix):
        if worker_has(top.stem):
            remove(top, "the packed build is for another Python")
    ok, error = imports_load(site)
    if ok:
        return 0
    print(f"[worker] with the packed versions first, pretraining's imports fail ({error}); "
          "letting the worker's own versions win where it has them")
    for top in packed_packages(site):
        if worker_has(top.stem):
            remove(top, "the worker has this package")
    ok, error = imports_load(site)
    if not ok:
        print(f"[worker] pretraining's imports still fail: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
