"""NGD's learning-rate decay over the final iterations: its shape, that the trainer gives it the NGD
schedule's length, and that nerfstudio's optimizers really run at those rates."""

from __future__ import annotations

import copy

import pytest
import torch

from nerfdiff_ns.lr_decay import FinalDecaySchedulerConfig, final_decay_factor


def test_constant_then_geometric_to_the_final_factor():
    factors = [final_decay_factor(s, 10, 4, 0.01) for s in range(12)]
    assert factors[:7] == [1.0] * 7  # the targets still move: full rate up to the start of the decay
    assert factors[8] == pytest.approx(0.1)  # half way in log space
    assert factors[10] == pytest.approx(0.01) and factors[11] == pytest.approx(0.01)  # floor, never below
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    assert [final_decay_factor(s, 10, 4, 1.0) for s in range(12)] == [1.0] * 12  # factor 1: constant


def test_decay_longer_than_the_run_starts_at_step_zero():
    assert final_decay_factor(0, 5, 50, 0.1) == 1.0
    assert final_decay_factor(5, 5, 50, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs, needle", [({"final_factor": 0.0, "max_steps": 10, "decay_iters": 2}, "final_factor"),
                                            ({"final_factor": 0.5}, "NerfDiffTrainer sets them")])
def test_bad_settings_name_the_problem(kwargs, needle):
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ValueError, match=needle):
        FinalDecaySchedulerConfig(**kwargs).setup().get_scheduler(optimizer, 1e-3)


def test_ns_train_and_nerfdiff_eval_refuse_a_bad_factor_before_loading_anything(tmp_path):
    """The trainer checks the factor in __init__ (before setup loads the bundle, here one that does not exist)."""
    from nerfdiff_ns.config import nerfdiff_tiny_method
    from nerfdiff_ns.evaluate import parse_args, run_evaluation
    from nerfdiff_ns.trainer import NerfDiffTrainer

    config = copy.deepcopy(nerfdiff_tiny_method.config)
    config.pipeline.ngd.mode = "feed-forward"  # its run length needs no bundle
    config.optimizers["field"]["scheduler"].final_factor = 1.5
    with pytest.raises(ValueError, match="--optimizers.field.scheduler.final-factor must be in"):
        NerfDiffTrainer(config)
    cfg = parse_args(["--data", str(tmp_path / "none"), "--bundle", str(tmp_path / "none"), "--output-dir",
                      str(tmp_path / "out"), "--lr-final-factor", "0"])
    with pytest.raises(ValueError, match="--lr-final-factor must be in"):
        run_evaluation(cfg)
    assert not (tmp_path / "out").exists()


def test_trainer_runs_the_optimizers_at_the_decayed_rates(tiny_bundle, tmp_path):
    """ns-train's config -> NerfDiffTrainer fills the run length -> nerfstudio's Optimizers step the rates."""
    from nerfstudio.engine.optimizers import Optimizers

    from nerfdiff_ns.config import nerfdiff_tiny_method
    from nerfdiff_ns.trainer import NerfDiffTrainer, schedule_iterations

    config = copy.deepcopy(nerfdiff_tiny_method.config)
    config.pipeline.model.bundle = tiny_bundle[1]
    config.output_dir = tmp_path
    for group in config.optimizers.values():
        group["scheduler"].final_factor = 0.1
    NerfDiffTrainer(config)
    total, final = config.max_num_iterations, config.pipeline.ngd.final_iters
    assert total == schedule_iterations(config) and final < total
    for group in config.optimizers.values():
        assert (group["scheduler"].max_steps, group["scheduler"].decay_iters) == (total, final)

    params = {name: [torch.nn.Parameter(torch.zeros(2))] for name in config.optimizers}
    optimizers = Optimizers(config.optimizers, params)
    rates: dict[str, list[float]] = {name: [] for name in config.optimizers}
    for step in range(total + 1):
        for name, optimizer in optimizers.optimizers.items():
            rates[name].append(optimizer.param_groups[0]["lr"])
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
    for name, lrs in rates.items():
        lr = config.optimizers[name]["optimizer"].lr
        assert lrs[: total - final + 1] == pytest.approx([lr] * (total - final + 1))  # constant while targets move
        assert lrs[total - final // 2] == pytest.approx(lr * 0.1 ** 0.5, rel=0.05)
        assert lrs[total] == pytest.approx(lr * 0.1)
