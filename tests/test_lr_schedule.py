"""Learning-rate schedule of pretraining: the warm-up, constant and cosine shapes, and that the
trainer's optimiser really runs at them (so a resumed or DDP run gets the same rates)."""

from __future__ import annotations

import math

import pytest

from nerfdiff_ns.pretrain import Trainer, parse_config
from nerfdiff_ns.training.lr_schedule import lr_factor


def test_warmup_then_constant():
    assert [lr_factor(s, 4, 20) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(19, 4, 20) == 1.0


def test_cosine_decays_from_one_to_the_floor():
    factors = [lr_factor(s, 10, 110, "cosine", 0.1) for s in range(120)]
    assert factors[9] == 1.0  # warm-up ends at the full rate
    assert factors[10] == pytest.approx(1.0)  # decay starts there
    assert factors[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half way: the mean of 1 and the floor
    assert factors[110] == pytest.approx(0.1) and factors[119] == pytest.approx(0.1)  # floor, never below
    decay = factors[10:111]
    assert all(a >= b for a, b in zip(decay, decay[1:])), "cosine decay must never rise"
    assert factors[35] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))


@pytest.mark.parametrize("kwargs, flag", [({"schedule": "linear"}, "--lr-schedule"), ({"schedule": "cosine", "min_factor": 1.5}, "--lr-min-factor")])
def test_bad_settings_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        lr_factor(0, 1, 10, **kwargs)


def test_trainer_runs_at_the_scheduled_rates(tiny_data, tmp_path):
    cfg = parse_config([
        "--preset", "test", "--data", str(tiny_data), "--output-dir", str(tmp_path), "--no-log-tensorboard",
        "--steps", "6", "--lr-warmup-steps", "2", "--lr-schedule", "cosine", "--lr-min-factor", "0.2",
        "--learning-rate", "1e-3", "--cdm.learning-rate", "5e-4", "--steps-per-checkpoint", "100",
    ])
    trainer = Trainer(cfg)
    seen = []
    for step in range(6):
        trainer.train_step()
        seen.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
        factor = lr_factor(step, 2, 6, "cosine", 0.2)
        assert seen[-1] == pytest.approx({"nerf": 1e-3 * factor, "cdm": 5e-4 * factor})
    assert seen[1]["nerf"] == pytest.approx(1e-3) and seen[5]["nerf"] == pytest.approx(1e-3 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.75))))


def test_trainer_refuses_a_bad_floor_before_reading_any_data(tmp_path):
    # the data folder does not exist: the schedule's error must come first, before minutes of data and cache work
    cfg = parse_config(["--preset", "test", "--data", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "run"),
                        "--no-log-tensorboard", "--lr-schedule", "cosine", "--lr-min-factor", "1.5"])
    with pytest.raises(ValueError, match="--lr-min-factor must lie in"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()
