"""Make nerfstudio 1.1.5's own tools work on this stack, without the user setting anything.

* torch >= 2.6 loads checkpoints with ``weights_only=True``; nerfstudio 1.1.5 checkpoints hold a few
  numpy objects (scalars in optimizer/scheduler state), so ``ns-render``/``ns-eval``/``ns-viewer``/
  ``ns-export`` fail. We allowlist exactly those numpy types with
  ``torch.serialization.add_safe_globals`` -- the weights-only protection stays on.
* ``ns-render`` writes videos through mediapy, which needs an ``ffmpeg`` executable; when none is on
  PATH we point mediapy at the one the ``imageio-ffmpeg`` wheel ships.

* ``ns-train`` with our methods: a ``DataError`` or ``BundleError`` (bad photo, camera file, mask
  or bundle) prints one clear paragraph instead of a traceback. A ``sys.excepthook`` that handles
  those two types only and hands every other exception to the hook it replaced, so no other
  ns-* behaviour changes.

``install()`` runs when nerfstudio loads our entry points (every ``ns-*`` command), so it must be
cheap and must never raise.
"""

from __future__ import annotations

import os
import shutil
import sys
from types import TracebackType
from typing import Callable, Optional, Type

_INSTALLED = False


def safe_checkpoint_globals() -> list[object]:
    """The numpy types nerfstudio checkpoints contain, and nothing else."""
    import numpy as np

    found: list[object] = [np.dtype, np.ndarray]
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    found += [scalar, _reconstruct]
    # dtype classes pickled by numpy >= 1.25 (e.g. numpy.dtypes.Float64DType)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType", "UInt8DType"):
            if hasattr(dtypes, name):
                found.append(getattr(dtypes, name))
    return found


def allow_nerfstudio_checkpoints() -> None:
    import torch

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add(safe_checkpoint_globals())


def use_bundled_ffmpeg() -> None:
    """Put imageio-ffmpeg's binary on this process's PATH as ``ffmpeg`` when there is none.

    ``ns-render`` checks ``shutil.which("ffmpeg")`` and mediapy runs ``ffmpeg`` by name, so a link
    named ``ffmpeg`` in a private folder at the front of PATH serves both.
    """
    if shutil.which("ffmpeg"):
        return
    import tempfile
    from pathlib import Path

    try:
        import imageio_ffmpeg

        exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
        for base in (Path.home() / ".cache" / "nerfdiff" / "bin", Path(tempfile.gettempdir()) / "nerfdiff-bin"):
            try:
                base.mkdir(parents=True, exist_ok=True)
                link = base / "ffmpeg"
                if not (link.exists() and link.resolve() == exe.resolve()):
                    tmp = base / f".ffmpeg-{os.getpid()}"
                    tmp.unlink(missing_ok=True)
                    tmp.symlink_to(exe)
                    os.replace(tmp, link)
                os.environ["PATH"] = f"{base}{os.pathsep}{os.environ.get('PATH', '')}"
                return
            except OSError:
                continue
    except Exception as err:  # never break an ns-* command over video support
        print(f"[nerfdiff] no ffmpeg found ({err}); ns-render can still write image sequences.")


def make_excepthook(previous: Callable[..., object]) -> Callable[[Type[BaseException], BaseException, Optional[TracebackType]], None]:
    """An excepthook that prints our user errors as one paragraph and passes all else to ``previous``."""

    def hook(exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
        try:
            from nerfdiff_ns.cli import format_user_error, is_user_error

            if is_user_error(exc):
                prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "nerfdiff"
                print(format_user_error(exc, prog), file=sys.stderr)
                return  # the interpreter still exits with status 1
        except Exception:  # never hide the real error behind a failure of this hook
            pass
        previous(exc_type, exc, tb)

    hook.nerfdiff_user_errors = True  # type: ignore[attr-defined]
    return hook


def install_excepthook() -> None:
    if not getattr(sys.excepthook, "nerfdiff_user_errors", False):
        sys.excepthook = make_excepthook(sys.excepthook)


def install() -> None:
    """Idempotent; called from ``nerfdiff_ns.config`` at entry-point load."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    try:
        install_excepthook()
        allow_nerfstudio_checkpoints()
        use_bundled_ffmpeg()
    except Exception as err:
        print(f"[nerfdiff] compatibility set-up skipped: {err}")
