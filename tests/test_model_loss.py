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


def test_foreground_mask_is_the_input_where_it_is_not_the_background_colour():
    from nerfdiff_ns.datamanager import foreground_mask

    image = torch.ones(4, 4, 3)
    image[1:3, 1:3] = torch.tensor([0.2, 0.9, 0.4])
    image[0, 0] = torch.tensor([1.0, 1.0, 254.5 / 255.0])  # within the tolerance: background (codec noise)
    mask = foreground_mask(image, torch.ones(3))
    assert mask.shape == (4, 4, 1)
    assert mask[..., 0].sum() == 4 and bool(mask[1:3, 1:3].eq(1).all())
    grey = torch.full((2, 2, 3), 0.5)
    grey[0, 1] = 1.0  # white on a grey background is foreground
    assert foreground_mask(grey, torch.full((3,), 0.5))[..., 0].tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_mask_loss_pulls_input_ray_opacity_to_the_foreground_and_ignores_virtual_rays():
    accumulation = torch.tensor([[0.9], [0.3], [0.5], [0.0]])
    batch = {"image": torch.zeros(4, 3), "foreground": torch.tensor([[1.0], [0.0], [float("nan")], [float("nan")]])}
    outputs = {"rgb": torch.zeros(4, 3), "accumulation": accumulation}
    on = SimpleNamespace(config=NerfDiffModelConfig(mask_loss_weight=2.0))
    losses = NerfDiffModel.get_loss_dict(on, outputs, batch)
    assert float(losses["mask_loss"]) == pytest.approx(2.0 * (0.1 + 0.3) / 2)
    assert float(losses["rgb_loss"]) == 0.0
    off = SimpleNamespace(config=NerfDiffModelConfig(mask_loss_weight=0.0))
    assert "mask_loss" not in NerfDiffModel.get_loss_dict(off, outputs, batch)
    assert NerfDiffModelConfig().mask_loss_weight == 1.0  # on by default
    with pytest.raises(ValueError, match="mask-loss-weight -1.0 is negative"):
        NerfDiffModel.populate_modules(SimpleNamespace(config=NerfDiffModelConfig(mask_loss_weight=-1.0)))


def test_batches_carry_the_input_mask_and_nan_for_virtual_rays():
    from nerfstudio.cameras.cameras import Cameras

    from nerfdiff_ns.data.cameras import orbit_pose, virtual_cameras
    from nerfdiff_ns.datamanager import NerfDiffDataManager, NerfDiffDataManagerConfig, foreground_mask

    def camera(c2w: torch.Tensor) -> Cameras:
        n = c2w.shape[0]
        return Cameras(camera_to_worlds=c2w[:, :3, :4], fx=torch.full((n, 1), 8.0), fy=torch.full((n, 1), 8.0),
                       cx=torch.full((n, 1), 4.0), cy=torch.full((n, 1), 4.0), width=8, height=8)

    image = torch.ones(8, 8, 3)
    image[2:6, 2:6] = 0.3
    source = orbit_pose(2.7, 0.0, 20.0)
    holder = SimpleNamespace(
        config=NerfDiffDataManagerConfig(), train_count=0, device="cpu", generator=torch.Generator().manual_seed(0),
        train_pixel_sampler=SimpleNamespace(num_rays_per_batch=64), input_camera=camera(source[None]),
        input_pixels=torch.cat([image, foreground_mask(image, torch.ones(3))], -1), virtual_cameras=None, virtual_targets=None,
    )
    holder._sample_view = lambda *args: NerfDiffDataManager._sample_view(holder, *args)
    _, batch = NerfDiffDataManager.next_train(holder, 0)
    is_object = batch["image"].sub(1.0).abs().amax(-1, keepdim=True) > 0.1
    assert torch.equal(batch["foreground"], is_object.float())  # each input ray's mask matches its own pixel
    holder.virtual_cameras = camera(virtual_cameras(source, 2))
    holder.virtual_targets = torch.rand(2, 8, 8, 3)
    _, batch = NerfDiffDataManager.next_train(holder, 1)
    n_input = round(64 * holder.config.input_ray_fraction)
    assert not torch.isnan(batch["foreground"][:n_input]).any() and torch.isnan(batch["foreground"][n_input:]).all()


@pytest.mark.parametrize("flag, expected", [(None, 1.0), (0.0, 0.0), (0.5, 0.5)])
def test_nerfdiff_eval_passes_the_mask_loss_weight(flag, expected, tmp_path):
    from nerfdiff_ns.evaluation.config import EvalConfig
    from nerfdiff_ns.evaluation.method_run import make_trainer_config
    from nerfdiff_ns.evaluation.scoring import settings_of

    cfg = EvalConfig(data=tmp_path, mask_loss_weight=flag)
    tc = make_trainer_config(cfg, tmp_path / "900", "ngd", tmp_path / "scratch", "cpu")
    assert tc.pipeline.model.mask_loss_weight == expected
    assert settings_of(cfg, "cpu")["mask_loss_weight"] == expected


def test_opacity_entropy_pushes_each_ray_to_clear_or_opaque():
    from nerfdiff_ns.model import binary_entropy

    assert float(binary_entropy(torch.tensor([0.5]))) == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert float(binary_entropy(torch.tensor([0.0, 1.0]))) == pytest.approx(0.0, abs=1e-3)
    assert float(binary_entropy(torch.tensor([0.2, 0.8]))) == pytest.approx(0.5004, abs=1e-4)
    outputs = {"rgb": torch.zeros(3, 3), "accumulation": torch.tensor([[0.3], [0.7], [0.5]], requires_grad=True)}
    batch = {"image": torch.zeros(3, 3), "foreground": torch.full((3, 1), float("nan"))}
    on = SimpleNamespace(config=NerfDiffModelConfig(opacity_entropy_weight=0.5))
    loss = NerfDiffModel.get_loss_dict(on, outputs, batch)["opacity_entropy_loss"]
    assert float(loss) == pytest.approx(0.5 * float(binary_entropy(outputs["accumulation"])))
    loss.backward()
    grad = outputs["accumulation"].grad[:, 0]
    assert grad[0] > 0 and grad[1] < 0 and grad[2].abs() < 1e-6  # gradient descent: 0.3 -> 0, 0.7 -> 1
    off = SimpleNamespace(config=NerfDiffModelConfig())
    assert "opacity_entropy_loss" not in NerfDiffModel.get_loss_dict(off, outputs, batch)  # off by default
    with pytest.raises(ValueError, match="opacity-entropy-weight -0.1 is negative"):
        NerfDiffModel.populate_modules(SimpleNamespace(config=NerfDiffModelConfig(mask_loss_weight=0.0, opacity_entropy_weight=-0.1)))


@pytest.mark.parametrize("flag, expected", [(None, 0.0), (0.2, 0.2)])
def test_nerfdiff_eval_passes_the_opacity_entropy_weight(flag, expected, tmp_path):
    from nerfdiff_ns.evaluation.config import EvalConfig
    from nerfdiff_ns.evaluation.method_run import make_trainer_config
    from nerfdiff_ns.evaluation.scoring import settings_of

    cfg = EvalConfig(data=tmp_path, opacity_entropy_weight=flag)
    tc = make_trainer_config(cfg, tmp_path / "900", "ngd", tmp_path / "scratch", "cpu")
    assert tc.pipeline.model.opacity_entropy_weight == expected
    assert settings_of(cfg, "cpu")["opacity_entropy_weight"] == expected
