"""Where a pretraining step's time goes (training/phases.py): nested phase timing, the profiler ranges it
marks, and a real train step split into its phases. CPU only."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nerfdiff_ns.pretrain import Trainer, parse_config
from nerfdiff_ns.training.phases import PhaseTimer, op_table, phase


def test_nested_phases_are_timed_under_their_path():
    with PhaseTimer("cpu") as timer:
        for _ in range(2):
            with phase("outer"):
                time.sleep(0.01)
                with phase("inner"):
                    time.sleep(0.02)
    table = {row["phase"]: row for row in timer.table(steps=2)}
    assert list(table) == ["outer/inner", "outer"]  # the order phases end in
    assert table["outer"]["calls_per_step"] == table["outer/inner"]["calls_per_step"] == 1
    assert table["outer/inner"]["seconds_per_step"] >= 0.02
    assert table["outer"]["seconds_per_step"] >= table["outer/inner"]["seconds_per_step"] + 0.01


def test_phases_outside_a_timer_are_profiler_ranges_only():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with phase("work"):
            torch.ones(64, 64) @ torch.ones(64, 64)
    names = {event.key for event in prof.key_averages()}
    assert "nerfdiff/work" in names and "aten::mm" in names
    with PhaseTimer("cpu") as timer:
        pass
    assert timer.table(steps=1) == []  # nothing was charged to a timer that was not active
    ops = [row["op"] for row in op_table(prof, steps=1)]
    assert "aten::mm" in ops and not any(op.startswith("nerfdiff/") for op in ops)


def test_op_table_ranks_ops_by_their_kernels_time_once():
    """On CUDA key_averages() lists the CPU-side ops (with the device time of the kernels each launched), the
    kernels themselves and the ranges again on the GPU side: only the first are ranked, so no time counts twice."""
    from torch.autograd import DeviceType

    def row(key, device_type, self_cpu, self_device, count=2):
        return SimpleNamespace(key=key, device_type=device_type, self_cpu_time_total=self_cpu,
                               self_device_time_total=self_device, count=count)

    rows = [row("aten::mm", DeviceType.CPU, 50.0, 3000.0), row("aten::grid_sampler_2d_backward", DeviceType.CPU, 20.0, 9000.0),
            row("Optimizer.step#Adam.step", DeviceType.CPU, 400.0, 0.0), row("nerfdiff/backward", DeviceType.CPU, 5.0, 10.0),
            row("void grid_sampler_2d_backward_kernel<float>", DeviceType.CUDA, 0.0, 9000.0),
            row("ampere_sgemm_64x64_nn", DeviceType.CUDA, 0.0, 3000.0),
            row("Optimizer.step#Adam.step", DeviceType.CUDA, 0.0, 12000.0)]
    table = op_table(SimpleNamespace(key_averages=lambda: rows), steps=2)
    assert [r["op"] for r in table] == ["aten::grid_sampler_2d_backward", "aten::mm", "Optimizer.step#Adam.step"]
    assert [r["share"] for r in table] == [0.75, 0.25, 0.0]
    assert table[0]["self_device_ms_per_step"] == 4.5 and table[0]["calls_per_step"] == 1


def test_one_timer_at_a_time():
    with PhaseTimer("cpu"):
        with pytest.raises(RuntimeError, match="already active"):
            with PhaseTimer("cpu"):
                pass
    with PhaseTimer("cpu"):  # the first one ended: a new one may start
        pass


def test_a_train_step_splits_into_its_phases(tiny_data: Path, tmp_path: Path):
    cfg = parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(tmp_path),
                        "--no-log-tensorboard", "--steps", "4"])
    trainer = Trainer(cfg)
    trainer.train_step()
    start = time.perf_counter()
    with PhaseTimer("cpu") as timer:
        for _ in range(2):
            assert trainer.train_step() is not None
    wall = (time.perf_counter() - start) / 2
    table = {row["phase"]: row for row in timer.table(steps=2)}
    expected = {"batch", "forward", "forward/encode", "forward/render_target", "forward/render_source",
                "forward/cdm_loss", "loss_check", "backward", "clip", "optimizer", "ema", "stats"}
    assert set(table) == expected
    assert all(row["calls_per_step"] == 1 and row["seconds_per_step"] > 0 for row in table.values())
    top_level = sum(row["seconds_per_step"] for name, row in table.items() if "/" not in name)
    inside_forward = sum(row["seconds_per_step"] for name, row in table.items() if name.startswith("forward/"))
    assert top_level <= wall and inside_forward <= table["forward"]["seconds_per_step"]

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer.train_step()
    ops = op_table(prof, steps=1, top=100_000)
    names = [row["op"] for row in ops]
    assert "aten::grid_sampler_2d" in names and "aten::grid_sampler_2d_backward" in names
    assert sum(row["share"] for row in ops) == pytest.approx(1.0)
    assert ops == sorted(ops, key=lambda row: row["share"], reverse=True)
