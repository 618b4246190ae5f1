"""The exception type for a command-line setting that cannot work.

``FlagError`` is a ``ValueError`` (so callers and tests that catch ``ValueError`` keep working) that every
``nerfdiff-*`` command and the ns-* excepthook print as one paragraph, without a traceback, like
``DataError`` and ``BundleError`` (``nerfdiff_ns/cli.py``). Its message names the flag, the value given and
what to pass instead. Checks of internal invariants stay plain ``ValueError``: those are bugs, and their
traceback is what a developer needs.
"""

from __future__ import annotations

__all__ = ["FlagError"]


class FlagError(ValueError):
    """A flag (or preset setting) the user gave is unknown, out of range or conflicts with another."""
