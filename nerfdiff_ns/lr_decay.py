"""Learning-rate decay over NGD's final iterations: constant while the targets move, then down to a fraction.

While the diffusion steps run, NGD's NeRF chases virtual targets that change every N iterations, so its rate
stays where it can follow them. Once the last targets are fixed (the ``final_iters``), a constant Adam rate keeps
the triplane bouncing around its fit; decaying it lets the NeRF settle on the targets, as nerfacto's exponential
decay does for a scene. The run's length comes from the NGD schedule, so ``NerfDiffTrainer`` fills in
``max_steps`` (and ``decay_iters`` from ``final_iters``) before the optimizers are built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from nerfdiff_ns.errors import FlagError


@dataclass
class FinalDecaySchedulerConfig(SchedulerConfig):
    """Constant rate, then an exponential decay to ``final_factor`` times it over the last ``decay_iters``."""

    _target: Type = field(default_factory=lambda: FinalDecayScheduler)
    final_factor: float = 1.0
    """Rate at the last iteration / the rate while the targets move (1 = constant; 0.1 = a tenth)."""
    decay_iters: int = -1
    """Iterations at the end of the run over which the rate decays; -1 = NGD's final_iters (set by the trainer)."""
    max_steps: int = -1
    """Iterations of the run; -1 = the trainer's max_num_iterations (the NGD schedule's)."""


def check_final_factor(value: float, name: str = "final_factor") -> None:
    """Refuse a factor outside (0, 1]: 0 would stop the fit, above 1 would raise the rate at the end."""
    if not 0.0 < value <= 1.0:
        raise FlagError(f"{name} must be in (0, 1], got {value}: 1 keeps the rate constant, 0.1 ends at a tenth")


def final_decay_factor(step: int, max_steps: int, decay_iters: int, final_factor: float) -> float:
    """Multiplier of the initial rate at ``step``: 1 before the last ``decay_iters`` iterations, then
    ``final_factor ** t`` with t going 0 -> 1 over them (geometric, like nerfacto's decay)."""
    start = max(0, max_steps - decay_iters)
    t = min(max(step - start, 0) / max(max_steps - start, 1), 1.0)
    return float(final_factor) ** t


class FinalDecayScheduler(Scheduler):
    config: FinalDecaySchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> LRScheduler:
        cfg = self.config
        check_final_factor(cfg.final_factor)
        if cfg.max_steps < 1 or cfg.decay_iters < 0:
            raise ValueError(
                f"FinalDecayScheduler needs max_steps >= 1 and decay_iters >= 0 (got {cfg.max_steps}, {cfg.decay_iters}); "
                "NerfDiffTrainer sets them from the NGD schedule, so build it through ns-train or NerfDiffTrainerConfig"
            )
        return LambdaLR(optimizer, lambda step: final_decay_factor(step, cfg.max_steps, cfg.decay_iters, cfg.final_factor))


def fill_final_decay(optimizers: dict, max_steps: int, final_iters: int) -> None:
    """Give every ``FinalDecaySchedulerConfig`` left at -1 the run's length and NGD's final iterations, and refuse a
    bad factor now, before the bundle and the CDM are loaded."""
    for name, group in optimizers.items():
        scheduler = group.get("scheduler")
        if isinstance(scheduler, FinalDecaySchedulerConfig):
            check_final_factor(scheduler.final_factor, f"--optimizers.{name}.scheduler.final-factor")
            if scheduler.max_steps < 0:
                scheduler.max_steps = int(max_steps)
            if scheduler.decay_iters < 0:
                scheduler.decay_iters = int(final_iters)
