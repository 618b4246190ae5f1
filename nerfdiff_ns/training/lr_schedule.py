"""Learning-rate factor per optimisation step: linear warm-up, then constant or cosine decay.

Why a decay: a stage that continues a trained CDM (``--init-from``) at a constant rate keeps
bouncing around the minimum; annealing the rate over the stage's last steps lets the weights (and
their EMA) settle. The factor is a pure function of the step, so a resumed run and a DDP run use
exactly the rates of an uninterrupted one-process run.

    warm-up:  f(s) = (s + 1) / W                                       for s < W
    constant: f(s) = 1                                                  for s >= W
    cosine:   f(s) = m + (1 - m) * (1 + cos(pi * p)) / 2,  p = (s - W) / (S - W) clipped to [0, 1]

with W = warm-up steps, S = the run's total steps and m = the final factor (``lr_min_factor``).
The same shape as diffusers' ``get_cosine_schedule_with_warmup`` (half a cycle), with a floor m.
"""

from __future__ import annotations

import math
from typing import Literal

from nerfdiff_ns.errors import FlagError

LRSchedule = Literal["constant", "cosine"]
LR_SCHEDULES = ("constant", "cosine")


def check_lr_schedule(schedule: str, min_factor: float) -> None:
    """Bad --lr-schedule / --lr-min-factor settings, named (the trainer calls this before any data work)."""
    if schedule not in LR_SCHEDULES:
        raise FlagError(f"--lr-schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if not 0.0 <= min_factor <= 1.0:
        raise FlagError(f"--lr-min-factor must lie in [0, 1], got {min_factor}")


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "constant", min_factor: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimisation step ``step`` (0-based)."""
    check_lr_schedule(schedule, min_factor)
    warmup = max(1, warmup_steps)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total_steps - warmup)))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
