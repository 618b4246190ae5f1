"""Assemble everything a bare GPU worker needs to pretrain and export a bundle into one folder.

A lent GPU machine has torch (and, we assume, numpy and Pillow) but cannot install packages, and
what travels to it is limited to 64 MiB. The pack holds:

    run.sh          unpacks the rest, puts it on PYTHONPATH, runs ``python -m nerfdiff_ns.pretrain``
                    under a time limit and copies the bundle to $OUT
    code.tar.gz     nerfdiff_ns/ (without its shipped assets) and configs/ (the presets)
    site.tar.gz     the pure-Python packages pretraining imports that the worker lacks (diffusers,
                    safetensors, tyro, rich and their requirements, copied from this venv)
    data.tar.gz     an SRN-format dataset (train/ and val/), generated here or given with --data
    MANIFEST.json   versions, sizes, and the compiled files with the Python they were built for

Usage: ``python scripts/gpu_worker/pack.py worker-pack`` (procedural chairs at 32 px), or
``--data data/procedural-chairs-srn`` to pack a dataset you already have. Then on the worker
``OUT=... bash worker-pack/run.sh --preset tiny --device cuda --steps 3000``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dists import (  # noqa: E402
    WORKER_BASE,
    compiled_files,
    distribution,
    is_version_specific,
    requirement_closure,
    top_level_paths,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGES = ("diffusers", "safetensors", "tyro", "rich")
"""What pretraining imports besides torch, numpy and Pillow (found by running it in bare_python.py)."""
MIB = 1024 * 1024


def _skip(path: str) -> bool:
    parts = Path(path).parts
    return "__pycache__" in parts or path.endswith((".pyc", ".pyo"))


def _tar(out: Path, members: list[tuple[Path, str]]) -> None:
    """Write ``out`` (.tar.gz) with each (source path, name in the archive); caches and .pyc left out."""
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        for src, name in members:
            tar.add(src, arcname=name, filter=lambda info: None if _skip(info.name) else info)


def pack_code(out: Path) -> None:
    """nerfdiff_ns/ without assets/ (the shipped bundles are not needed to train) and configs/."""
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            parts = Path(info.name).parts
            return None if _skip(info.name) or parts[:3] == ("code", "nerfdiff_ns", "assets") else info

        tar.add(REPO / "nerfdiff_ns", arcname="code/nerfdiff_ns", filter=keep)
        tar.add(REPO / "configs", arcname="code/configs", filter=keep)


def pack_site(out: Path, packages: tuple[str, ...]) -> dict:
    """The requirement closure of ``packages`` minus what the worker has; returns the manifest part."""
    worker = requirement_closure(WORKER_BASE)
    for name in packages:
        distribution(name)  # a clear error when one is not installed here
    chosen = {name: dist for name, dist in requirement_closure(list(packages)).items() if name not in worker}
    members: list[tuple[Path, str]] = []
    manifest: dict = {"packages": {}, "requires_python": {}, "version_specific_compiled": {}, "portable_compiled": {}}
    for name, dist in sorted(chosen.items()):
        tops = top_level_paths(dist)
        members += [(p, f"site/{p.name}") for p in tops]
        manifest["packages"][name] = dist.version
        if dist.metadata.get("Requires-Python"):
            manifest["requires_python"][name] = dist.metadata["Requires-Python"]
        for top in tops:
            for so in compiled_files(top):
                key = "version_specific_compiled" if is_version_specific(so) else "portable_compiled"
                manifest[key].setdefault(name, []).append(so.name)
    _tar(out, members)
    manifest["worker_python"] = _pythons_allowed(manifest["requires_python"])
    return manifest


def _pythons_allowed(requires: dict[str, str]) -> list[str]:
    """The CPython 3.x versions every packed package (and nerfdiff_ns) declares support for."""
    from packaging.specifiers import SpecifierSet

    own = distribution("nerfdiff-ns").metadata.get("Requires-Python") or ""
    specs = [SpecifierSet(s) for s in [*requires.values(), own] if s]
    return [f"3.{minor}" for minor in range(8, 16) if all(f"3.{minor}" in spec for spec in specs)]


def pack_data(out: Path, data: Path | None, source: str, resolution: int, num_objects: int | None) -> dict:
    """Tar an SRN dataset root (train/ and val/) as ``data/``; generate one first when none is given."""
    label = str(data) if data is not None else f"generated here: {source}, {resolution} px"
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            from nerfdiff_ns.data.generate import GenerateConfig, generate

            data = Path(tmp) / "data"
            generate(GenerateConfig(output_dir=data, source=source, resolution=resolution,  # type: ignore[arg-type]
                                    num_objects=num_objects, progress=True))
        if not (data / "train").is_dir():
            raise SystemExit(f"{data} has no train/ folder: give an SRN dataset root made by nerfdiff-generate-data")
        _tar(out, [(data, "data")])
        counts = {split: sum(1 for p in (data / split).iterdir() if p.is_dir()) for split in ("train", "val") if (data / split).is_dir()}
    return {"dataset": label, "objects": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="pack folder to write (replaced if it holds an earlier pack)")
    parser.add_argument("--data", type=Path, default=None, help="existing SRN dataset root to pack (default: generate one)")
    parser.add_argument("--source", default="procedural-chairs", help="nerfdiff-generate-data --source when generating")
    parser.add_argument("--resolution", type=int, default=32, help="image size when generating (match the preset)")
    parser.add_argument("--num-objects", type=int, default=None, help="objects per split when generating (default: all)")
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES),
                        help=f"distributions to carry with their requirements (default: {' '.join(PACKAGES)})")
    parser.add_argument("--limit-mib", type=float, default=64.0, help="refuse a pack larger than this")
    args = parser.parse_args()

    out: Path = args.out
    if out.exists():
        if not (out / "MANIFEST.json").is_file():
            raise SystemExit(f"{out} exists and is not a pack made by this script: choose another folder or remove it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy2(HERE / "run.sh", out / "run.sh")
    shutil.copy2(HERE / "prune_site.py", out / "prune_site.py")
    pack_code(out / "code.tar.gz")
    manifest = {
        "packed_with_python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "worker_must_have": list(WORKER_BASE),
        **pack_site(out / "site.tar.gz", tuple(args.packages)),
        **pack_data(out / "data.tar.gz", args.data, args.source, args.resolution, args.num_objects),
    }
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    manifest["sizes_bytes"] = sizes
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    for name, size in sizes.items():
        print(f"  {name:16s} {size / MIB:7.2f} MiB")
    print(f"  {'total':16s} {total / MIB:7.2f} MiB  -> {out}")
    print(f"  the worker's Python must be one of {manifest['worker_python']} (Requires-Python of the packed packages)")
    if manifest["version_specific_compiled"]:
        print(f"  compiled for Python {platform.python_version()} only (the worker's own copy or the pure-Python "
              f"fallback is used elsewhere): {sorted(manifest['version_specific_compiled'])}")
    if total > args.limit_mib * MIB:
        raise SystemExit(f"the pack is {total / MIB:.1f} MiB, over --limit-mib {args.limit_mib}: pack fewer objects "
                         "(--num-objects) or a lower --resolution")


if __name__ == "__main__":
    main()
