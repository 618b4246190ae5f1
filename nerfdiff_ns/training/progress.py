"""Progress bars for pretraining: rich when installed, else a plain line every few percent.

Why the fallback: the pretraining loop also runs on bare GPU workers that have torch, diffusers and
safetensors but nothing else (no nerfstudio, maybe no rich); the loop must not fail there for a bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class _PlainProgress:
    """The subset of ``rich.progress.Progress`` the loop uses, printing ``label done/total`` lines."""

    def __init__(self, label: str, disable: bool) -> None:
        self.label, self.disable = label, disable
        self.total, self.completed, self.info, self._last = 0.0, 0.0, "", -1.0
        self._start = time.time()

    def __enter__(self) -> "_PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._print(force=True)

    def add_task(self, description: str, total: float = 0, completed: float = 0, **fields: Any) -> int:
        self.total, self.completed, self.info = float(total or 0), float(completed), str(fields.get("info", ""))
        return 0

    def update(self, task: int, completed: float | None = None, advance: float | None = None, info: str | None = None,
               **_: Any) -> None:
        if completed is not None:
            self.completed = float(completed)
        if advance is not None:
            self.completed += float(advance)
        if info is not None:
            self.info = info
        self._print()

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def _print(self, force: bool = False) -> None:
        if self.disable or self.total <= 0:
            return
        fraction = self.completed / self.total
        if force or fraction - self._last >= 0.05:
            self._last = fraction
            print(f"[nerfdiff] {self.label} {int(self.completed)}/{int(self.total)} "
                  f"({time.time() - self._start:.0f} s) {self.info}".rstrip(), file=sys.stderr, flush=True)


def make_progress(label: str, disable: bool = False, info: bool = True) -> Any:
    """A rich progress bar (label, bar, done/total, elapsed, eta[, info field]) or the plain fallback."""
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    except ImportError:
        return _PlainProgress(label, disable)
    columns = [TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, disable=disable)


def log_line(progress: Any, message: str) -> None:
    """One line above a rich bar (its console), or to stderr beside the plain fallback."""
    console = getattr(progress, "console", None)
    if console is not None:
        console.print(f"[nerfdiff] {message}", markup=False, highlight=False, soft_wrap=True)
    else:
        print(f"[nerfdiff] {message}", file=sys.stderr, flush=True)
