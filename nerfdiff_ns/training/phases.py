"""Named phases of a pretraining step, so a profile can say where a step's time goes.

``with phase("encode"):`` marks a region in two ways:

* always, as a ``torch.profiler.record_function`` range (``nerfdiff/encode``), which a torch profiler
  shows beside the ops inside it and which costs microseconds when no profiler runs;
* while a ``PhaseTimer`` is active, as a wall-clock interval with the device synchronised at both
  ends, so the time of queued GPU kernels is charged to the phase that launched them. The
  synchronisation slows the step a little; use it for the split, not for images/s.

Phases nest: a phase opened inside ``forward`` is recorded as ``forward/encode``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch

_active_timer: "PhaseTimer | None" = None


class PhaseTimer:
    """Accumulates synchronised wall-clock seconds per (nested) phase name over the steps it is active for."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[str] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> "PhaseTimer":
        global _active_timer
        if _active_timer is not None:
            raise RuntimeError("a PhaseTimer is already active: phases would be charged twice")
        _active_timer = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active_timer
        if _active_timer is self:
            _active_timer = None

    def table(self, steps: int) -> list[dict[str, float | str | int]]:
        """Per phase, in the order they first ended (inner before outer): mean seconds and calls per step."""
        return [{"phase": name, "seconds_per_step": total / steps, "calls_per_step": self.calls[name] / steps}
                for name, total in self.seconds.items()]


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Mark a region of a training step as phase ``name`` (see the module docstring)."""
    timer = _active_timer
    with torch.profiler.record_function(f"nerfdiff/{name}"):
        if timer is None:
            yield
            return
        timer._stack.append(name)
        key = "/".join(timer._stack)
        try:
            timer.sync()
            start = time.perf_counter()
            yield
            timer.sync()
            timer.seconds[key] += time.perf_counter() - start
            timer.calls[key] += 1
        finally:
            timer._stack.pop()


def op_table(profiler: "torch.profiler.profile", steps: int, top: int = 15) -> list[dict[str, float | str]]:
    """The ``top`` ops of a ``torch.profiler`` run, per step, ranked by the device time of the kernels each op
    launched itself (CUDA) or by its self CPU time (no CUDA). Only the CPU-side rows are ranked: on CUDA
    ``key_averages()`` also lists every kernel, and each range again on the GPU side, so summing all rows
    would count a kernel's time two or three times. Our phases (``nerfdiff/*``) are left out: they are
    ranges, not ops, and ``PhaseTimer`` times them."""
    from torch.autograd import DeviceType

    rows = [event for event in profiler.key_averages()
            if event.device_type == DeviceType.CPU and not event.key.startswith("nerfdiff/")]
    on_device = any(event.self_device_time_total > 0 for event in rows)
    key = (lambda e: float(e.self_device_time_total)) if on_device else (lambda e: float(e.self_cpu_time_total))
    total = sum(key(event) for event in rows) or 1.0
    return [{
        "op": event.key,
        "calls_per_step": event.count / steps,
        "self_cpu_ms_per_step": event.self_cpu_time_total / 1e3 / steps,
        "self_device_ms_per_step": event.self_device_time_total / 1e3 / steps,
        "share": key(event) / total,
    } for event in sorted(rows, key=key, reverse=True)[:top]]
