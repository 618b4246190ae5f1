"""nerfstudio Trainer for NerfDiff: run length from the NGD schedule, atomic checkpoints.

* ``max_num_iterations = -1`` (the default here) means "K * N + final iterations of the NGD
  schedule", so changing ``--pipeline.ngd.*`` changes the run length with it.
* nerfstudio 1.1.5 writes checkpoints in place; a crash mid-write loses the run. We write to a
  temporary file in the same folder and rename it over the target.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type

import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig


@dataclass
class NerfDiffTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: NerfDiffTrainer)
    max_num_iterations: int = -1
    """NeRF iterations; -1 follows the NGD schedule (diffusion_steps * nerf_iters_per_step + final_iters)."""


class NerfDiffTrainer(Trainer):
    config: NerfDiffTrainerConfig

    def __init__(self, config: NerfDiffTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        if config.max_num_iterations < 0:
            ngd = getattr(config.pipeline, "ngd", None)
            config.max_num_iterations = max(1, ngd.total_iters if ngd is not None else 1)
        super().__init__(config, local_rank, world_size)

    def save_checkpoint(self, step: int) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path: Path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{ckpt_path.name}.", dir=self.checkpoint_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(state, handle)
            os.replace(tmp, ckpt_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("step-*.ckpt"):
                if old != ckpt_path:
                    old.unlink()
