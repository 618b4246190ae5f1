"""Stop pretraining cleanly on SIGINT: finish the step, checkpoint, export the bundle, then exit.

Why: a time limit (``timeout --signal=INT``, the GPU worker's ``run.sh``) or a Ctrl-C used to land
mid-step and lose everything since the last scheduled checkpoint. The first SIGINT only sets a flag
that the loop reads between steps, so the checkpoint holds a whole step and resumes exactly; a second
SIGINT raises ``KeyboardInterrupt`` at once, as usual.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Optional


class GracefulStop:
    """Context manager: ``requested`` turns True on the first SIGINT (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
