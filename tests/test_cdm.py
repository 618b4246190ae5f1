"""The conditional diffusion model and its schedule helpers (nerfdiff_ns.cdm.unet / schedule)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from nerfdiff_ns.cdm import (
    ConditionalDiffusionModel,
    ddim_step,
    diffusion_loss,
    eps_from_prediction,
    eps_from_x0,
    from_diffusion_range,
    make_sampling_scheduler,
    make_train_scheduler,
    ngd_timesteps,
    relative_camera,
    to_diffusion_range,
    training_target,
    x0_from_prediction,
)

SIZE = 8


def tiny_model(seed: int = 0, **overrides) -> ConditionalDiffusionModel:
    torch.manual_seed(seed)
    config = dict(
        sample_size=SIZE,
        block_out_channels=(8, 16),
        layers_per_block=1,
        camera_embedding_dim=16,
        condition_dropout_prob=0.2,
    )
    config.update(overrides)
    return ConditionalDiffusionModel(**config).eval()


def batch(seed: int, b: int = 3, size: int = SIZE):
    g = torch.Generator().manual_seed(seed)
    noisy = torch.randn(b, 3, size, size, generator=g)
    render = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    source = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    camera = torch.randn(b, 12, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    return noisy, t, render, source, camera


# ---------------------------------------------------------------- model conditioning


@torch.no_grad()
def test_prediction_depends_on_each_condition():
    model = tiny_model()
    noisy, t, render, source, camera = batch(1)
    base = model(noisy, t, render, source, camera)
    assert base.shape == (3, 3, SIZE, SIZE)
    for changed in (
        model(noisy, t, render.flip(-1), source, camera),
        model(noisy, t, render, -source, camera),
        model(noisy, t, render, source, camera + 1.0),
    ):
        assert (changed - base).abs().max() > 1e-4


@torch.no_grad()
def test_dropped_samples_ignore_conditions_and_use_zeros():
    model = tiny_model()
    noisy, t, render, source, camera = batch(2)
    _, _, render2, source2, camera2 = batch(3)
    all_drop = torch.ones(3, dtype=torch.bool)
    a = model(noisy, t, render, source, camera, drop_conditions=all_drop)
    b = model(noisy, t, render2, source2, camera2, drop_conditions=True)
    assert torch.equal(a, b)
    zeros = model(noisy, t, torch.zeros_like(render), torch.zeros_like(source), torch.zeros_like(camera))
    assert torch.allclose(a, zeros, atol=1e-6)

    # A mixed mask only nulls the selected samples.
    mixed = torch.tensor([True, False, True])
    c = model(noisy, t, render, source, camera, drop_conditions=mixed)
    d = model(noisy, t, render2, source2, camera2, drop_conditions=mixed)
    assert torch.allclose(c[mixed], d[mixed], atol=1e-6)
    assert (c[~mixed] - d[~mixed]).abs().max() > 1e-4


@torch.no_grad()
def test_conditions_are_resized_to_the_cdm_resolution():
    model = tiny_model()
    noisy, t, render, source, camera = batch(4)
    big_render = torch.nn.functional.interpolate(render, scale_factor=2, mode="nearest")
    out = model(noisy, t, big_render, source, camera)
    assert out.shape == noisy.shape
    # The render is bilinearly (anti-aliased) resized to the noisy image's resolution inside forward.
    resized = torch.nn.functional.interpolate(big_render, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    assert torch.allclose(out, model(noisy, t, resized, source, camera), atol=1e-6)
    # A constant image survives any resize, so only its content matters, not its resolution.
    flat = torch.full((3, 3, 3, 5), 0.25)
    assert torch.allclose(model(noisy, t, flat, source, camera),
                          model(noisy, t, torch.full_like(render, 0.25), source, camera), atol=1e-5)


def test_camera_is_required_when_configured():
    model = tiny_model()
    noisy, t, render, source, _ = batch(5)
    with pytest.raises(ValueError, match="relative_camera"):
        model(noisy, t, render, source)
    no_cam = tiny_model(camera_embedding_dim=0)
    assert no_cam(noisy, t, render, source).shape == noisy.shape


@torch.no_grad()
def test_cfg_scale_one_is_conditional_and_scale_s_mixes_linearly():
    model = tiny_model()
    noisy, t, render, source, camera = batch(6)
    cond = model(noisy, t, render, source, camera)
    uncond = model(noisy, t, render, source, camera, drop_conditions=True)
    assert torch.equal(model.predict_with_cfg(noisy, t, render, source, camera, 1.0), cond)
    for scale in (0.0, 3.0):
        guided = model.predict_with_cfg(noisy, t, render, source, camera, scale)
        assert torch.allclose(guided, uncond + scale * (cond - uncond), atol=1e-5)


def test_drop_mask_follows_config_probability():
    model = tiny_model(condition_dropout_prob=0.25)
    mask = model.sample_drop_mask(20000, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - 0.25) < 0.02
    assert not tiny_model(condition_dropout_prob=0.0).sample_drop_mask(100).any()


@torch.no_grad()
def test_save_pretrained_round_trip_is_bit_exact(tmp_path):
    model = tiny_model(prediction_type="v_prediction", attention_levels=(False, True))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists()
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = ConditionalDiffusionModel.from_pretrained(tmp_path).eval()
    assert loaded.config.prediction_type == "v_prediction"
    assert loaded.config.camera_embedding_dim == 16
    assert tuple(loaded.config.block_out_channels) == (8, 16)
    noisy, t, render, source, camera = batch(7)
    assert torch.equal(model(noisy, t, render, source, camera), loaded(noisy, t, render, source, camera))


def test_block_types_from_attention_levels():
    model = tiny_model(attention_levels=(True, False))
    names = [type(b).__name__ for b in model.unet.down_blocks]
    assert names == ["AttnDownBlock2D", "DownBlock2D"]
    with pytest.raises(ValueError):
        tiny_model(prediction_type="sample")


# ---------------------------------------------------------------- schedule helpers


def test_range_conversions_and_relative_camera():
    img = torch.rand(2, 3, 4, 4)
    assert torch.allclose(from_diffusion_range(to_diffusion_range(img)), img, atol=1e-7)
    assert to_diffusion_range(torch.zeros(1)).item() == -1.0

    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[1, :3, 3] = torch.tensor([0.0, 0.0, 2.0])
    assert torch.allclose(relative_camera(c2w[0], c2w[0]), torch.eye(4)[:3, :4].reshape(12))
    rel = relative_camera(c2w[0], c2w[1]).reshape(3, 4)
    assert torch.allclose(rel[:, 3], torch.tensor([0.0, 0.0, 2.0]))


@pytest.mark.parametrize("beta_schedule", ["squaredcos_cap_v2", "linear"])
def test_add_noise_then_x0_from_true_prediction_recovers_x0(beta_schedule):
    sched = make_train_scheduler(beta_schedule=beta_schedule)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 3, SIZE, SIZE, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 250, 500, 750, 900])
    z = sched.add_noise(x0, noise, t)
    assert torch.allclose(x0_from_prediction(sched, z, noise, t, "epsilon"), x0, atol=1e-5)
    v = training_target(sched, x0, noise, t, "v_prediction")
    assert torch.allclose(x0_from_prediction(sched, z, v, t, "v_prediction"), x0, atol=1e-5)
    assert torch.allclose(eps_from_prediction(sched, z, v, t, "v_prediction"), noise, atol=1e-5)
    assert torch.allclose(eps_from_x0(sched, z, x0, t), noise, atol=1e-4)
    assert torch.equal(training_target(sched, x0, noise, t, "epsilon"), noise)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_step_matches_diffusers(prediction_type, clip):
    ours = make_sampling_scheduler(prediction_type=prediction_type)
    ref = make_sampling_scheduler(prediction_type=prediction_type)
    ref.register_to_config(clip_sample=clip)
    ref.set_timesteps(10)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, SIZE, SIZE, generator=g)
    for t in ref.timesteps.tolist():
        pred = torch.randn(z.shape, generator=g) * 1.5
        out = ref.step(pred, t, z, eta=0.0, use_clipped_model_output=clip)
        z_ours, x0 = ddim_step(ours, z, pred, t, t - 100, prediction_type, clip_x0=clip)
        assert torch.allclose(x0, out.pred_original_sample, atol=1e-5)
        assert torch.allclose(z_ours, out.prev_sample, atol=1e-5)
        z = out.prev_sample


def test_sampling_scheduler_shares_the_training_betas():
    train = make_train_scheduler(beta_schedule="linear", prediction_type="v_prediction")
    sample = make_sampling_scheduler(from_scheduler=train)
    assert isinstance(sample, DDIMScheduler)
    assert sample.config.prediction_type == "v_prediction"
    assert torch.equal(sample.alphas_cumprod, train.alphas_cumprod)
    assert not sample.config.clip_sample


def test_ngd_timesteps():
    ts = ngd_timesteps(5, t_max=0.98, t_min=0.02, num_train_timesteps=1000)
    assert ts.dtype == torch.long
    assert ts[0].item() == round(0.98 * 999) and ts[-1].item() == round(0.02 * 999)
    assert bool((ts[1:] < ts[:-1]).all())
    assert ngd_timesteps(50, 1.0, 0.0, num_train_timesteps=10).tolist() == list(range(9, -1, -1))
    assert ngd_timesteps(1, 0.5, 0.1, 1001).tolist() == [500]
    with pytest.raises(ValueError):
        ngd_timesteps(5, t_max=2.0, t_min=0.0)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_diffusion_loss_falls_with_adam(prediction_type):
    model = tiny_model(prediction_type=prediction_type, condition_dropout_prob=0.1).train()
    sched = make_train_scheduler(prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, SIZE, SIZE, generator=g) * 2 - 1
    render = (x0 + 0.3 * torch.randn(x0.shape, generator=g)).clamp(-1, 1)
    source = x0.flip(-1)
    camera = torch.randn(4, 12, generator=g)
    no_drop = torch.zeros(4, dtype=torch.bool)

    def held_out_loss() -> float:
        with torch.no_grad():
            losses = [
                diffusion_loss(model, x0, render, source, camera, sched, torch.Generator().manual_seed(100 + k),
                               drop_conditions=no_drop)[0].item()
                for k in range(8)
            ]
        return sum(losses) / len(losses)

    before = held_out_loss()
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_gen = torch.Generator().manual_seed(1)
    for _ in range(100):
        loss, info = diffusion_loss(model, x0, render, source, camera, sched, train_gen)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert info["loss_per_sample"].shape == (4,)
    after = held_out_loss()
    assert after < 0.7 * before, (before, after)


def test_diffusion_loss_backpropagates_into_the_render():
    model = tiny_model()
    sched = make_train_scheduler()
    noisy, _, render, source, camera = batch(8)
    render = render.clone().requires_grad_(True)
    loss, _ = diffusion_loss(model, noisy.clamp(-1, 1), render, source, camera, sched,
                             torch.Generator().manual_seed(0), drop_conditions=torch.zeros(3, dtype=torch.bool))
    loss.backward()
    assert render.grad is not None and render.grad.abs().sum() > 0
