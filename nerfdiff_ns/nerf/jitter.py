"""A pretraining step's render jitter: one draw for the whole global batch, on the device.

Why: pretraining renders the same whatever the process layout (1 vs 2 DDP ranks) and resumes
exactly. The jitter used to come from one CPU ``torch.Generator`` per object, drawn in a Python loop
and copied to the GPU: at batch 1024 (tiny preset) that was 52 M CPU numbers, 0.28-0.68 s per step
on this project's CPU (three runs of benchmarks/batch_host_cost.py), against a whole H200 step of
0.96 s. Here a step has one generator on the batch's device, seeded from (seed, step); each draw is
the whole *global* batch's ``[B_global, ...]`` block in one ``torch.rand`` call, and a rank keeps its
own rows. Every layout therefore sees the same numbers for the same sample; a rank of a W-process
run draws W times the numbers it keeps, which a GPU does in microseconds.

(A counter-based hash per object was tried first: the same values on CPU and CUDA, but int64
elementwise work: 11 s per batch-1024 step on the CPU, 9x ``torch.rand``'s time per number.)
"""

from __future__ import annotations

import numpy as np
import torch


def step_jitter_seed(seed: int, step: int) -> int:
    """The seed of a step's jitter generator; its own stream, apart from every sample's (seed, step, index)."""
    state = np.random.SeedSequence([seed, step, 0, 1]).generate_state(2, dtype=np.uint64)
    return int(state[0] % (2**63))


class StepJitter:
    """Uniform jitter of rows ``first_row .. first_row + rows - 1`` of a global batch of ``global_rows``.

    ``draw(shape)`` (``shape[0]`` = this process's rows) draws the next ``[global_rows, *shape[1:]]`` block
    from the step's generator and returns this process's rows of it. ``row(b)`` is object b's jitter
    alone, from the start of the step (what a one-object render of that sample uses).
    """

    def __init__(self, seed: int, global_rows: int, first_row: int, rows: int, device: torch.device | str) -> None:
        if not 0 <= first_row <= first_row + rows <= global_rows:
            raise ValueError(f"rows {first_row}..{first_row + rows - 1} outside a global batch of {global_rows}")
        self.seed, self.global_rows, self.first_row, self.rows = seed, global_rows, first_row, rows
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.rows

    def draw(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if shape[0] != self.rows:
            raise ValueError(f"{self.rows} jitter rows for a batch of {shape[0]} objects")
        block = torch.rand((self.global_rows, *shape[1:]), generator=self.generator, device=self.device, dtype=dtype)
        return block[self.first_row : self.first_row + self.rows]

    def row(self, index: int) -> "StepJitter":
        return StepJitter(self.seed, self.global_rows, self.first_row + index, 1, self.device)


def batch_jitter(batch: dict, device: torch.device) -> StepJitter:
    """The step's jitter for a batch from ``make_batch`` (its ``jitter`` entry: seed, global rows, first row)."""
    seed, global_rows, first_row = batch["jitter"]
    return StepJitter(seed, global_rows, first_row, int(batch["source_image"].shape[0]), device)


__all__ = ["StepJitter", "batch_jitter", "step_jitter_seed"]
