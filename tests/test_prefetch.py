"""--loader-workers: batches built ahead in DataLoader workers are the batches the loop builds itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nerfdiff_ns.pretrain import Trainer, make_batch, parse_config
from nerfdiff_ns.training.prefetch import BatchPrefetcher


def _cfg(data: Path, out: Path, *flags: str):
    return parse_config(["--preset", "test", "--data", str(data), "--output-dir", str(out), "--no-log-tensorboard",
                         "--no-resume", "--steps", "4", *flags])


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:  # the step's jitter (seed, global rows, first row); a DataLoader hands tuples back as lists
            assert list(a[key]) == list(b[key]), key


def test_workers_train_exactly_like_the_training_process(tiny_data, tmp_path):
    here = Trainer(_cfg(tiny_data, tmp_path / "here"))
    ahead = Trainer(_cfg(tiny_data, tmp_path / "ahead", "--loader-workers", "2"))
    for _ in range(4):
        a, b = here.train_step(), ahead.train_step()
        assert a == b  # every loss, the gradient norm and the PSNR, to the bit
    for p, q in zip(here.nerf.parameters(), ahead.nerf.parameters()):
        assert torch.equal(p, q)
    assert ahead.prefetcher is not None


def test_the_prefetcher_restarts_when_asked_for_another_step(tiny_data, tmp_path):
    trainer = Trainer(_cfg(tiny_data, tmp_path, "--steps", "6"))
    built = lambda step: make_batch(trainer.dataset, trainer.cfg, step, trainer.dist, torch.device("cpu"))  # noqa: E731
    prefetcher = BatchPrefetcher(trainer.batch_maker(torch.device("cpu")), 6, 1, torch.device("cpu"))
    _same(prefetcher.get(0), built(0))
    _same(prefetcher.get(1), built(1))
    _same(prefetcher.get(4), built(4))  # a jump (a resume): workers restart from step 4
    _same(prefetcher.get(5), built(5))
    with pytest.raises(IndexError, match="past the last step 5"):
        prefetcher.get(6)
    prefetcher.close()
    with pytest.raises(ValueError, match="at least one worker"):
        BatchPrefetcher(built, 6, 0, torch.device("cpu"))


def test_a_negative_worker_count_is_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="--loader-workers -1"):
        Trainer(_cfg(tiny_data, tmp_path, "--loader-workers", "-1"))


def test_workers_serve_the_render_cache_stage_too(tiny_bundle, tmp_path):
    data, bundle = tiny_bundle
    flags = ("--init-from", str(bundle), "--freeze-nerf", "--steps", "3")
    here = Trainer(_cfg(data, tmp_path / "here", *flags))
    ahead = Trainer(_cfg(data, tmp_path / "ahead", *flags, "--loader-workers", "1"))
    assert here.render_cache is not None and ahead.render_cache is not None
    for _ in range(3):
        assert here.train_step() == ahead.train_step()
    assert here.prefetcher is None and ahead.prefetcher is not None  # the workers really built ahead's batches


def _pid_batch(step: int) -> dict:
    import os
    import time

    time.sleep(0.2 if step else 0.0)  # a worker busy building the next batch when the signal lands
    return {"pid": torch.tensor(os.getpid()), "step": torch.tensor(step)}


def test_workers_leave_a_sigint_to_the_training_process():
    """timeout --signal=INT and Ctrl-C signal the whole process group. A worker that stopped on it would make the
    training process's next batch fail ("worker exited unexpectedly") before its SIGINT stop saved a checkpoint."""
    import os
    import signal

    prefetcher = BatchPrefetcher(_pid_batch, 6, 1, torch.device("cpu"))
    first = prefetcher.get(0)
    os.kill(int(first["pid"]), signal.SIGINT)
    assert [int(prefetcher.get(step)["step"]) for step in range(1, 4)] == [1, 2, 3]
    prefetcher.close()
