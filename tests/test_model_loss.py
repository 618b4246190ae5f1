"""The NeRF's photometric loss during NGD: L1 fits the median of disagreeing targets, MSE their mean."""

from types import SimpleNamespace

import pytest
import torch

from nerfdiff_ns.model import NerfDiffModel, NerfDiffModelConfig


def _loss(kind: str, rgb: torch.Tensor, batch: dict) -> torch.Tensor:
    holder = SimpleNamespace(config=NerfDiffModelConfig(rgb_loss=kind))
    return NerfDiffModel.get_loss_dict(holder, {"rgb": rgb}, batch)["rgb_loss"]


def test_default_is_l1_and_weights_apply():
    assert NerfDiffModelConfig().rgb_loss == "l1"
    rgb = torch.tensor([[0.2, 0.2, 0.2], [0.5, 0.5, 0.5]])
    target = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    weight = torch.tensor([[3.0], [1.0]])
    batch = {"image": target, "weight": weight}
    assert float(_loss("l1", rgb, batch)) == pytest.approx((3 * 0.2 + 1 * 0.5) / 4)
    assert float(_loss("mse", rgb, batch)) == pytest.approx((3 * 0.04 + 1 * 0.25) / 4)
    assert float(_loss("l1", rgb, {"image": target})) == pytest.approx((0.2 + 0.5) / 2)


@pytest.mark.parametrize("kind, expected", [("l1", 0.0), ("mse", 1.0 / 3.0)])
def test_disagreeing_targets_median_vs_mean(kind: str, expected: float):
    """Three views see one ray: two say black, one says white (drawn detail that does not agree)."""
    value = torch.full((1, 3), 0.5, requires_grad=True)
    target = torch.tensor([[0.0] * 3, [0.0] * 3, [1.0] * 3])
    opt = torch.optim.Adam([value], lr=0.01)
    for _ in range(600):
        opt.zero_grad()
        _loss(kind, value.expand(3, 3), {"image": target}).backward()
        opt.step()
    assert float(value.mean()) == pytest.approx(expected, abs=0.03)


@pytest.mark.parametrize("flag, expected", [(None, "l1"), ("mse", "mse")])
def test_nerfdiff_eval_passes_the_loss_to_every_nerf_method(flag, expected, tmp_path):
    """`nerfdiff-eval --rgb-loss` reaches the TrainerConfig each method runs, and the record says which loss ran."""
    from nerfdiff_ns.evaluation.config import EvalConfig
    from nerfdiff_ns.evaluation.method_run import make_trainer_config
    from nerfdiff_ns.evaluation.scoring import settings_of

    cfg = EvalConfig(data=tmp_path, rgb_loss=flag)
    for mode in ("ngd", "input-only", "sds"):
        tc = make_trainer_config(cfg, tmp_path / "900", mode, tmp_path / "scratch", "cpu")
        assert tc.pipeline.model.rgb_loss == expected
    assert settings_of(cfg, "cpu")["rgb_loss"] == expected
