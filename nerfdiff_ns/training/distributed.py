"""Process layout for pretraining: torchrun/DDP set-up, cross-rank means, and per-sample random streams.

Every random choice of a sample comes from ``sample_generator(seed, step, global index)``, so
the global batch is the same for any number of processes and after a resume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def all_reduce_mean(value: torch.Tensor, dist_info: DistInfo) -> torch.Tensor:
    if dist_info.world_size == 1:
        return value
    import torch.distributed as dist

    value = value.clone()
    dist.all_reduce(value)
    return value / dist_info.world_size


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    """Independent stream for one sample of one step, identical whatever the process layout."""
    state = np.random.SeedSequence([seed, step, index]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] % (2**63)))

