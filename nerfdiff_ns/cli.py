"""Console-script entry points of every ``nerfdiff-*`` command.

Each command's module is imported only when that command runs (plugin import stays cheap), and
every command runs inside :func:`friendly_errors`, so bad input (a ``DataError``, ``BundleError`` or
``FlagError``) prints one clear paragraph and exits non-zero without a Python traceback.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from typing import Callable

EXIT_USER_ERROR = 2


def is_user_error(exc: BaseException) -> bool:
    """A ``DataError``, ``FlagError`` or ``BundleError`` (and nothing else): bad input the user can fix.

    ``BundleError`` is looked up in ``sys.modules`` only: if ``nerfdiff_ns.bundle`` was never
    imported, nothing can have raised one, and the check stays free for every other ns-* command.
    """
    from nerfdiff_ns.data.errors import DataError
    from nerfdiff_ns.errors import FlagError

    if isinstance(exc, (DataError, FlagError)):
        return True
    bundle = sys.modules.get("nerfdiff_ns.bundle")
    return bundle is not None and isinstance(exc, bundle.BundleError)


def format_user_error(exc: BaseException, prog: str) -> str:
    """One paragraph: ``<prog>: error: <file>: <what is wrong>. Fix: <how>``, wrapped at 100 columns
    without breaking paths."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return textwrap.fill(f"{prog}: error: {text}", width=100, subsequent_indent="  ",
                         break_long_words=False, break_on_hyphens=False)


def friendly_errors(main: Callable[[], object], prog: str) -> None:
    """Run ``main``; user-facing errors become one paragraph on stderr and exit code 2 (no traceback)."""
    try:
        main()
    except Exception as exc:
        if not is_user_error(exc):
            raise
        print(format_user_error(exc, prog), file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None


def _command(module: str, func: str, prog: str) -> Callable[[], None]:
    def run() -> None:
        friendly_errors(lambda: getattr(importlib.import_module(module), func)(), prog)

    run.__name__ = prog.replace("-", "_")
    run.__doc__ = f"``{prog}``: see ``{module}``."
    return run


pretrain = _command("nerfdiff_ns.pretrain", "entrypoint", "nerfdiff-pretrain")
generate_data = _command("nerfdiff_ns.data.generate", "entrypoint", "nerfdiff-generate-data")
evaluate = _command("nerfdiff_ns.evaluate", "entrypoint", "nerfdiff-eval")
sample = _command("nerfdiff_ns.sample", "entrypoint", "nerfdiff-sample")
prepare = _command("nerfdiff_ns.prepare", "entrypoint", "nerfdiff-prepare")
export = _command("nerfdiff_ns.export.cli", "entrypoint", "nerfdiff-export")
view_splat = _command("nerfdiff_ns.export.view_splat", "entrypoint", "nerfdiff-view-splat")
