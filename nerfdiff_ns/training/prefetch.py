"""Batches built ahead by DataLoader worker processes while the device trains (``--loader-workers``).

Why: a batch is assembled on the CPU, one sample at a time (its generator, object, views, pixels,
CDM inputs): 0.25-0.5 s at batch 1024 on this project's CPU (benchmarks/batch_host_cost.py). In the
training process that time adds to every GPU step; in workers it overlaps with the previous steps.
A batch depends only on (seed, step, rank), so the workers build exactly the batches the training
process would: the run is the same.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.errors import FlagError

DATA_ERROR_KEY = "__data_error__"


class StepBatches(Dataset):
    """Item i is the batch of step ``start + i`` (built on the CPU by ``make(step)``)."""

    def __init__(self, make: Callable[[int], dict[str, Any]], start: int, stop: int) -> None:
        self.make, self.start, self.stop = make, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.make(self.start + index)
        except DataError as err:  # DataLoader would re-raise it as a RuntimeError: hand it over as data instead
            return {DATA_ERROR_KEY: ("" if err.path is None else str(err.path), err.problem, err.fix or "")}


def _ignore_sigint(worker_id: int) -> None:
    """Workers leave SIGINT to the training process. A time limit (``timeout --signal=INT``) or Ctrl-C signals
    the whole process group; a worker that stopped on it would make the training process's next batch fail
    ("worker exited unexpectedly") before its SIGINT stop could save the checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class BatchPrefetcher:
    """``get(step)`` returns step's batch on ``device``; ``workers`` processes keep the next ones ready.

    Steps must be asked for in order (a training loop's); asking for any other step restarts the
    workers from it (a resume, or a benchmark that skips ahead).
    """

    def __init__(self, make: Callable[[int], dict[str, Any]], stop: int, workers: int, device: torch.device,
                 prefetch_factor: int = 2) -> None:
        if workers < 1:
            raise FlagError(f"--loader-workers {workers}: a prefetcher needs at least one worker (0 builds batches "
                            "in the training process, without one)")
        self.make, self.stop, self.workers, self.device = make, stop, workers, device
        self.prefetch_factor = prefetch_factor
        self._batches: Iterator[dict[str, Any]] | None = None
        self._next_step = -1

    def _start(self, step: int) -> None:
        self.close()
        loader = DataLoader(StepBatches(self.make, step, self.stop), batch_size=None, shuffle=False,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            prefetch_factor=self.prefetch_factor, worker_init_fn=_ignore_sigint)
        self._batches, self._next_step = iter(loader), step

    def get(self, step: int) -> dict[str, Any]:
        if step >= self.stop:
            raise IndexError(f"step {step} is past the last step {self.stop - 1}")
        if self._batches is None or step != self._next_step:
            self._start(step)
        batch = next(self._batches)
        self._next_step += 1
        if DATA_ERROR_KEY in batch:  # a bad file met by a worker: the same error as without workers
            path, problem, fix = batch[DATA_ERROR_KEY]
            raise DataError(path or None, problem, fix or None)
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def close(self) -> None:
        """Stop the workers (the next ``get`` starts new ones)."""
        self._batches = None
        self._next_step = -1


__all__ = ["BatchPrefetcher", "StepBatches"]
