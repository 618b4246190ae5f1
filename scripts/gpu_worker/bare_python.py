"""Make a Python here that sees only what a bare GPU worker has: torch (+ its requirements), numpy, Pillow.

``python scripts/gpu_worker/bare_python.py DEST`` writes ``DEST/site/`` (symlinks to those
distributions in this venv, metadata included) and ``DEST/bin/python``, a wrapper that starts this
interpreter with ``-S -s`` (no site-packages, no user site, no .pth files) and appends
``DEST/site`` to ``PYTHONPATH``. Anything else (nerfstudio, pybullet, viser, tensorboard,
transformers, even diffusers and tyro) is then simply not installed: importing it raises
``ModuleNotFoundError`` and ``importlib.util.find_spec``/``importlib.metadata`` do not see it, as
on the worker. Run ``DEST/bin/python`` (or ``PYTHON=DEST/bin/python bash run.sh``) to check a pack.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dists import WORKER_BASE, requirement_closure, top_level_paths  # noqa: E402


def make_bare_python(dest: Path, base: tuple[str, ...] = WORKER_BASE) -> Path:
    """Build the bare site and the wrapper under ``dest``; returns the wrapper's path."""
    site = dest / "site"
    site.mkdir(parents=True, exist_ok=True)
    for dist in requirement_closure(base).values():
        for path in top_level_paths(dist):
            link = site / path.name
            if not link.exists():
                link.symlink_to(path)
    wrapper = dest / "bin" / "python"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(
        "#!/bin/sh\n"
        "# A bare GPU worker's Python: only torch (+ requirements), numpy and Pillow are installed.\n"
        f'export PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}"\n'
        f'exec {shlex.quote(sys.executable)} -S -s "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="folder for site/ and bin/python (created)")
    parser.add_argument("--base", nargs="+", default=list(WORKER_BASE),
                        help=f"distributions the worker has (default: {' '.join(WORKER_BASE)}; their requirements too)")
    args = parser.parse_args()
    wrapper = make_bare_python(args.dest.resolve(), tuple(args.base))
    print(wrapper)
    if os.environ.get("PYTHONPATH"):
        print("note: PYTHONPATH is set in this shell; the wrapper keeps it in front of the bare site", file=sys.stderr)


if __name__ == "__main__":
    main()
