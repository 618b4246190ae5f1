"""Extra pixel-aligned CDM conditions (depth, opacity, rendered features) and render-start training.

The conditions round-trip through pretraining, the render cache, bundle save/load and NGD; an
RGB-only CDM widened to take them computes what it computed before; render-start samples noise
the render and regress toward the target.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nerfdiff_ns.cdm.conditions import condition_image, render_condition_views, widen_condition_inputs
from nerfdiff_ns.nerf.image_nerf import SourceView
from nerfdiff_ns.pretrain import Trainer, make_batch, parse_config
from nerfdiff_ns.training.render_cache import triple_inputs


def cdm_channels(cdm) -> int:
    """Channels of the render condition a CDM reads (3 + E)."""
    return 3 + cdm.extra_condition_channels

KINDS = ("depth", "opacity", "features")
FEATURES = 8  # the test preset's triplane channels (sum aggregation): the width of the 'features' condition
EXTRA = 2 + FEATURES  # channels after the RGB: depth, opacity, features


def test_condition_image_maps_depth_over_the_object_range_and_keeps_opacity():
    out = {"rgb": torch.full((2, 4, 3), 0.5),
           "depth": torch.tensor([1.7, 2.7, 3.7, 5.0]).view(1, 4, 1).expand(2, 4, 1),
           "accumulation": torch.tensor([1.0, 0.5, 0.0, 1.2]).view(1, 4, 1).expand(2, 4, 1)}
    image = condition_image(out, ("depth", "opacity"), torch.tensor([2.7, 3.7]), object_radius=1.0)
    assert image.shape == (2, 4, 5)
    torch.testing.assert_close(image[..., :3], out["rgb"])
    torch.testing.assert_close(image[0, :, 3], torch.tensor([0.0, 0.5, 1.0, 1.0]))  # d - r .. d + r -> 0 .. 1, clamped
    torch.testing.assert_close(image[1, :, 3], torch.tensor([0.0, 0.0, 0.5, 1.0]))  # per-view camera distance
    torch.testing.assert_close(image[0, :, 4], torch.tensor([1.0, 0.5, 0.0, 1.0]))
    assert condition_image(out, ("opacity",), torch.tensor([2.7, 2.7]), 1.0).shape == (2, 4, 4)
    feats = torch.tensor([-30.0, 0.0, 30.0]).view(1, 1, 3).expand(2, 4, 3)
    image = condition_image({**out, "features": feats}, ("features", "opacity"), torch.tensor([2.7, 2.7]), 1.0)
    torch.testing.assert_close(image[0, 0, 3:6], torch.tensor([0.0, 0.5, 1.0]))  # squashed to (0, 1) by a sigmoid
    torch.testing.assert_close(image[..., 6], out["accumulation"][..., 0].clamp(max=1.0))  # in the order asked for
    with pytest.raises(ValueError, match="features=True"):
        condition_image(out, ("features",), torch.tensor([2.7, 2.7]), 1.0)
    with pytest.raises(ValueError, match="unknown CDM condition"):
        condition_image(out, ("normals",), torch.tensor([2.7, 2.7]), 1.0)


@pytest.fixture(scope="module")
def conditions_run(tiny_data, tmp_path_factory):
    """Two pretraining steps with depth + opacity conditions and render-start samples; the bundle it exports."""
    out = tmp_path_factory.mktemp("cond")
    cfg = parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(out), "--steps", "2",
                        "--no-log-tensorboard", "--cdm.conditions", *KINDS, "--cdm.render-start-prob", "0.5"])
    trainer = Trainer(cfg)
    trainer.run()
    return trainer, out / "bundle"


def test_rendered_features_are_the_triplane_features_composited_like_the_colour():
    from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF, NeRFConfig
    from nerfdiff_ns.nerf.rays import camera_rays, image_pixels

    nerf = ImageConditionedNeRF(NeRFConfig(image_size=16, triplane_channels=8, triplane_resolution=16,
                                           num_coarse_samples=12, num_fine_samples=6))
    c2w = torch.eye(4)[None]
    c2w[0, 2, 3] = 2.7
    k = torch.tensor([[20.0, 20.0, 8.0, 8.0]])
    source = SourceView(c2w, k, (16, 16))
    o, d = camera_rays(c2w, k, image_pixels(16, 16, "cpu")[None])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        random_planes = torch.randn(1, 3, 8, 16, 16, generator=g)
        plain = nerf.render_rays(random_planes, source, o, d, jitter=True, generator=torch.Generator().manual_seed(1))
        rich = nerf.render_rays(random_planes, source, o, d, jitter=True, generator=torch.Generator().manual_seed(1),
                                features=True)
        assert "features" not in plain and rich["features"].shape == (1, 256, nerf.feature_channels)
        for key in ("rgb", "depth", "accumulation"):  # asking for features changes nothing else
            torch.testing.assert_close(rich[key], plain[key])
        # constant planes: every point's feature is the sum over the 3 planes, so the render is opacity x 3c
        flat = nerf.render_rays(torch.full((1, 3, 8, 16, 16), 0.25), source, o, d, features=True)
    torch.testing.assert_close(flat["features"], flat["accumulation"].expand(-1, -1, 8) * 0.75, rtol=0, atol=1e-3)
    assert float(flat["accumulation"].min()) < 0.01  # rays that miss the object render (close to) zero features


def test_conditions_train_and_round_trip_through_the_bundle(conditions_run):
    from nerfdiff_ns.bundle import load_bundle

    trainer, bundle_path = conditions_run
    assert trainer.cdm.config.condition_kinds in (KINDS, list(KINDS))
    assert trainer.cdm.unet.conv_in.in_channels == 9 + EXTRA  # x_t 3 + render 3 + depth 1 + opacity 1 + F + source 3
    assert cdm_channels(trainer.cdm) == 3 + EXTRA
    bundle = load_bundle(bundle_path)
    cdm = bundle.load_cdm("cpu")
    assert tuple(cdm.config.condition_kinds) == KINDS and cdm.config.feature_condition_channels == FEATURES
    torch.testing.assert_close(cdm.unet.conv_in.weight, trainer.ema.unet.conv_in.weight)
    batch = make_batch(trainer.dataset, trainer.cfg, 0, trainer.dist, trainer.device)
    with torch.no_grad():
        render, _ = trainer.model.render_views(batch, jitter=False)
    assert render.shape[-1] == 3 + EXTRA and float(render[..., 3:].min()) >= 0.0 and float(render[..., 3:].max()) <= 1.0
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match=f"{3 + EXTRA}-channel render condition"):
        cdm(x, 10, x, x, torch.zeros(1, 12))  # an RGB-only condition is refused, with the fix named


def test_cached_conditions_equal_live_renders_and_ngd_renders(conditions_run, tmp_path):
    trainer, bundle_path = conditions_run
    stage = parse_config(["--preset", "test", "--data", str(trainer.cfg.data), "--output-dir", str(tmp_path),
                          "--no-log-tensorboard", "--init-from", str(bundle_path), "--freeze-nerf",
                          "--cdm.conditions", *KINDS])
    cdm_stage = Trainer(stage)
    cache = cdm_stage.render_cache
    res = stage.render_resolution
    assert cache.renders.shape == (len(cache), res, res, 3 + EXTRA)
    pick = torch.tensor([0, len(cache) - 1])
    inputs = triple_inputs(cdm_stage.dataset, cache.object_index[pick], cache.source_view[pick],
                           cache.target_view[pick], cdm_stage.device)
    nerf = cdm_stage.nerf
    for row, i in enumerate(pick.tolist()):
        src = inputs["source_image"][row : row + 1]
        k = inputs["intrinsics"][row : row + 1]
        source = SourceView(inputs["source_c2w"][row : row + 1], k, tuple(src.shape[1:3]))
        with torch.no_grad():  # what NGD renders for a virtual view: the same channels
            ngd = render_condition_views(nerf, nerf.encode(src), source, inputs["target_c2w"][row : row + 1],
                                         k * (res / src.shape[1]), res, KINDS)[0]
        torch.testing.assert_close(cache.renders[i], ngd, rtol=1e-5, atol=1e-5)


def test_ngd_steps_with_a_conditioned_cdm(conditions_run, tiny_data):
    """VirtualViewDiffusion reads the bundle's conditions; the pipeline renders them; targets stay RGB."""
    from nerfdiff_ns.bundle import load_bundle
    from nerfdiff_ns.data.cameras import virtual_cameras
    from nerfdiff_ns.data.multiview import MultiViewDataset
    from nerfdiff_ns.ngd import NGDConfig, VirtualViewDiffusion
    from nerfdiff_ns.pipeline import NerfDiffPipeline

    _, bundle_path = conditions_run
    bundle = load_bundle(bundle_path)
    nerf = bundle.load_nerf("cpu").eval()
    obj = MultiViewDataset.from_split(tiny_data, "val").load_object(0)
    with torch.no_grad():
        triplane = nerf.encode(obj.images[:1])
    source = SourceView(obj.c2w[:1], obj.intrinsics[None], tuple(obj.images.shape[1:3]))
    c2w = virtual_cameras(obj.c2w[0], 4, 360.0, (0.0, 30.0))
    cdm = bundle.load_cdm("cpu")
    size = int(cdm.config.sample_size)
    k = obj.intrinsics * (size / obj.images.shape[1])
    fake = SimpleNamespace(model=SimpleNamespace(nerf=nerf, triplane=triplane, source=source, training=False,
                                                 eval=lambda: None, train=lambda flag: None),
                           virtual_c2w=c2w, device=torch.device("cpu"), virtual_intrinsics=lambda s: k)
    diffusion = VirtualViewDiffusion(cdm, bundle.load_train_scheduler(), NGDConfig(diffusion_steps=3, guidance_gamma=8.0),
                                     obj.images[0], obj.c2w[0], c2w)
    assert diffusion.condition_kinds == KINDS
    renders = NerfDiffPipeline.render_virtual_views(fake, size, diffusion.condition_kinds)
    assert renders.shape == (4, size, size, 3 + EXTRA)
    start = diffusion.start(renders)
    torch.testing.assert_close(start, renders[..., :3], rtol=1e-5, atol=1e-5)  # targets start at the RGB render
    while not diffusion.done:  # the unpinned steps of the 3-step schedule (see ngd_step_timesteps)
        targets = diffusion.step(NerfDiffPipeline.render_virtual_views(fake, size, diffusion.condition_kinds))
    assert targets.shape == (4, size, size, 3) and bool(torch.isfinite(targets).all())
    assert diffusion.done
    samples = diffusion.sample_independently(renders, num_steps=2)
    assert samples.shape == (4, size, size, 3)


def test_an_rgb_only_cdm_widened_to_conditions_predicts_as_before(tiny_bundle, tmp_path):
    from nerfdiff_ns.bundle import load_bundle
    from nerfdiff_ns.cdm.unet import ConditionalDiffusionModel

    data, bundle_path = tiny_bundle
    rgb_cdm = load_bundle(bundle_path).load_cdm("cpu")
    config = {**dict(rgb_cdm.config), "condition_kinds": KINDS, "feature_condition_channels": FEATURES}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    wide = ConditionalDiffusionModel(**config)
    wide.load_state_dict(widen_condition_inputs(rgb_cdm.state_dict(), EXTRA))
    g = torch.Generator().manual_seed(0)
    size = int(rgb_cdm.config.sample_size)
    x, render, src = (torch.randn(2, 3, size, size, generator=g) for _ in range(3))
    extras = torch.rand(2, EXTRA, size, size, generator=g)
    cam = torch.randn(2, 12, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(wide(x, torch.tensor([5, 400]), torch.cat([render, extras], 1), src, cam),
                                   rgb_cdm(x, torch.tensor([5, 400]), render, src, cam), rtol=1e-5, atol=1e-5)
    # and --init-from widens the bundle's CDM the same way
    cfg = parse_config(["--preset", "test", "--data", str(data), "--output-dir", str(tmp_path), "--no-log-tensorboard",
                        "--init-from", str(bundle_path), "--freeze-nerf", "--no-render-cache", "--cdm.conditions", *KINDS])
    trainer = Trainer(cfg)
    torch.testing.assert_close(trainer.ema.unet.conv_in.weight, wide.unet.conv_in.weight)  # the bundle's EMA
    raw = widen_condition_inputs(load_bundle(bundle_path).load_cdm("cpu", ema=False).state_dict(), EXTRA)
    torch.testing.assert_close(trainer.cdm.unet.conv_in.weight, raw["unet.conv_in.weight"])
    assert float(trainer.cdm.unet.conv_in.weight[:, 6 : 6 + EXTRA].abs().max()) == 0.0  # the new inputs start at zero


def test_render_start_samples_noise_the_render_and_regress_toward_the_target(tiny_data, tmp_path, monkeypatch):
    from nerfdiff_ns.cdm.schedule import alpha_sigma, diffusion_loss, min_snr_weight
    from nerfdiff_ns.cdm.unet import ConditionalDiffusionModel

    cfg = parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(tmp_path),
                        "--no-log-tensorboard", "--batch-size", "8", "--cdm.render-start-prob", "0.5",
                        "--cdm.render-start-max-t", "40"])
    trainer = Trainer(cfg)
    flags, steps = [], []
    for step in range(6):
        batch = make_batch(trainer.dataset, cfg, step, trainer.dist, trainer.device)
        flags.append(batch["render_start"])
        steps.append(batch["timesteps"][batch["render_start"]])
    flags = torch.cat(flags)
    assert 0.2 < float(flags.float().mean()) < 0.8  # about half of 48 samples
    assert int(torch.cat(steps).max()) <= 40
    # the joint model noises the render for the flagged samples and the target for the others
    import nerfdiff_ns.cdm.schedule as schedule

    seen_start = {}
    real_loss = schedule.diffusion_loss

    def spy(*args, **kwargs):
        seen_start.update(kwargs)
        return real_loss(*args, **kwargs)

    batch = make_batch(trainer.dataset, cfg, 0, trainer.dist, trainer.device)
    flag = batch["render_start"]
    assert bool(flag.any()) and not bool(flag.all())
    monkeypatch.setattr(schedule, "diffusion_loss", spy)
    with torch.no_grad():
        out = trainer.model(batch)
    render = out["render"].permute(0, 3, 1, 2) * 2 - 1
    target = batch["target_image"].permute(0, 3, 1, 2) * 2 - 1
    torch.testing.assert_close(seen_start["start"][flag], render[flag])
    torch.testing.assert_close(seen_start["start"][~flag], target[~flag])
    assert bool((seen_start["sample_weights"][~flag] == 1).all()) and bool((seen_start["sample_weights"][flag] < 1).all())
    # the loss with a start image: z = alpha S + sigma eps, target eps* = (z - alpha x0) / sigma
    model = ConditionalDiffusionModel(sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
                                      attention_levels=(False, False), camera_embedding_dim=0)
    sched = trainer.scheduler
    g = torch.Generator().manual_seed(1)
    x0, start, render, src, noise = (torch.rand(2, 3, 8, 8, generator=g) * 2 - 1 for _ in range(5))
    t = torch.tensor([10, 200])
    drop = torch.zeros(2, dtype=torch.bool)
    seen = {}
    model.register_forward_hook(lambda m, args, out: seen.update(z=args[0], pred=out))
    loss, info = diffusion_loss(model, x0, render, src, None, sched, timesteps=t, noise=noise, drop_conditions=drop,
                                start=start, sample_weights=torch.tensor([0.5, 1.0]))
    alpha, sigma = alpha_sigma(sched, t)
    torch.testing.assert_close(seen["z"], alpha * start + sigma * noise)
    eps_star = (seen["z"] - alpha * x0) / sigma
    per = ((seen["pred"] - eps_star) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(info["loss_per_sample"], per)
    torch.testing.assert_close(loss, (per * torch.tensor([0.5, 1.0])).mean())
    # min-SNR-5 weights: gamma / SNR at low noise (= 5 x the x0 error), 1 once SNR <= 5
    w = min_snr_weight(sched, torch.tensor([10, 900]))
    snr10 = float((alpha[0] / sigma[0]) ** 2)
    assert abs(float(w[0]) - 5.0 / snr10) < 1e-4 and float(w[1]) == 1.0
    for bad in (["--cdm.render-start-prob", "1.5"], ["--cdm.render-start-max-t", "1000"]):
        with pytest.raises(ValueError, match="render-start"):
            Trainer(parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(tmp_path / "bad"),
                                  "--no-log-tensorboard", *bad]))


def test_render_start_band_draws_its_timesteps_between_min_and_max(tiny_data, tmp_path):
    """--cdm.render-start-min-t keeps the lowest timesteps for re-noised targets only."""
    cfg = parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(tmp_path),
                        "--no-log-tensorboard", "--batch-size", "8", "--cdm.render-start-prob", "0.5",
                        "--cdm.render-start-min-t", "20", "--cdm.render-start-max-t", "40"])
    trainer = Trainer(cfg)
    batches = [make_batch(trainer.dataset, cfg, step, trainer.dist, trainer.device) for step in range(6)]
    steps = torch.cat([batch["timesteps"][batch["render_start"]] for batch in batches])
    assert steps.numel() > 10 and int(steps.min()) >= 20 and int(steps.max()) <= 40
    assert int(steps.max()) - int(steps.min()) >= 10  # spread over the band, not one value
    with pytest.raises(ValueError, match="render-start-min-t"):
        Trainer(parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(tmp_path / "bad"),
                              "--no-log-tensorboard", "--cdm.render-start-prob", "0.5",
                              "--cdm.render-start-min-t", "50", "--cdm.render-start-max-t", "40"]))
