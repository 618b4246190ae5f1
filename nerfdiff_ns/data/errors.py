"""The one exception type raised for bad data on disk.

Every reader in :mod:`nerfdiff_ns.data` raises :class:`DataError` (a ``ValueError``) when a file is
missing, unreadable or malformed. The message always names the offending file, says what is wrong
with it and how to fix it, so that a user can act on it without reading the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data: a missing, unreadable or malformed file or folder.

    Args:
        path: the file or folder at fault (kept as ``self.path``).
        problem: what is wrong, e.g. ``"pose has 12 numbers, expected 16"``.
        fix: how to fix it, e.g. ``"write the 4x4 camera-to-world matrix row by row"``.

    ``str(error)`` reads ``"<path>: <problem>. Fix: <fix>"``.
    """

    def __init__(self, path: Union[str, Path, None], problem: str, fix: Optional[str] = None):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        self.fix = fix
        message = problem if self.path is None else f"{self.path}: {problem}"
        if fix:
            message = f"{message.rstrip('.')}. Fix: {fix}"
        super().__init__(message)

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.problem, self.fix))
