"""NGD in the plugin: virtual cameras, and the guidance limits seen through VirtualViewDiffusion."""

from __future__ import annotations

import math

import pytest
import torch

from nerfdiff_ns.data.cameras import azimuth_elevation, look_at, orbit_pose, virtual_cameras
from nerfdiff_ns.ngd import NGDConfig, VirtualViewDiffusion, ngd_step_timesteps


@pytest.mark.parametrize("spread", [360.0, 120.0])
def test_virtual_cameras_look_at_the_centre_at_the_configured_distance_and_angles(spread: float) -> None:
    source = orbit_pose(2.7, 30.0, 15.0)
    cams = virtual_cameras(source, 6, azimuth_spread_deg=spread, elevation_range_deg=(5.0, 45.0), distance=3.0)
    assert cams.shape == (6, 4, 4)
    for c2w in cams:
        centre = c2w[:3, 3]
        assert float(centre.norm()) == pytest.approx(3.0, abs=1e-5)
        forward = -c2w[:3, 2]  # OpenGL: the camera looks along -z
        assert torch.allclose(forward, -centre / centre.norm(), atol=1e-5)
        assert torch.allclose(c2w[:3, :3] @ c2w[:3, :3].T, torch.eye(3), atol=1e-5)
        assert float(c2w[2, 1]) > 0  # camera up points to world +Z
        az, el, _ = azimuth_elevation(c2w)
        assert 5.0 - 1e-4 <= el <= 45.0 + 1e-4
        offset = (az - 30.0 + 180.0) % 360.0 - 180.0
        assert abs(offset) <= spread / 2 + 1e-4 and abs(offset) > 1e-3  # spread around the input, never on it
    azimuths = sorted(round(azimuth_elevation(c)[0], 3) for c in cams)
    assert len(set(azimuths)) == 6


def test_look_at_projects_the_target_to_the_image_centre() -> None:
    c2w = look_at(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.1, 0.2, -0.1]))
    target_cam = c2w[:3, :3].T @ (torch.tensor([0.1, 0.2, -0.1]) - c2w[:3, 3])
    assert abs(float(target_cam[0])) < 1e-5 and abs(float(target_cam[1])) < 1e-5 and float(target_cam[2]) < 0


def _diffusion(gamma: float, guidance_form: str = "x0", **ngd) -> VirtualViewDiffusion:
    from nerfdiff_ns.cdm.schedule import make_train_scheduler
    from nerfdiff_ns.cdm.unet import ConditionalDiffusionModel

    torch.manual_seed(0)
    cdm = ConditionalDiffusionModel(sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
                                    attention_levels=(False, False), camera_embedding_dim=8).eval()
    source = orbit_pose(2.7, 0.0, 20.0)
    cams = virtual_cameras(source, 3)
    ngd = {"diffusion_steps": 4, **ngd}
    cfg = NGDConfig(guidance_gamma=gamma, guidance_form=guidance_form, **ngd)  # type: ignore[arg-type]
    return VirtualViewDiffusion(cdm, make_train_scheduler(), cfg, torch.rand(8, 8, 3), source, cams)


def test_huge_gamma_makes_the_targets_the_nerf_renders() -> None:
    diffusion = _diffusion(gamma=1e9)
    renders = torch.rand(3, 8, 8, 3)
    diffusion.start(torch.rand(3, 8, 8, 3))
    while not diffusion.done:
        targets = diffusion.step(renders)
        assert diffusion.last_info.w_t == 1.0
        assert torch.allclose(targets, renders, atol=1e-6)


def test_zero_gamma_follows_the_cdm_alone() -> None:
    """gamma = 0: the targets are the CDM's own x0 estimates, whatever the NeRF renders after the start."""
    a, b = _diffusion(gamma=0.0), _diffusion(gamma=0.0)
    start = torch.rand(3, 8, 8, 3)
    a.start(start)
    b.start(start)
    assert torch.equal(a.trajectories.noise, b.trajectories.noise)
    for _ in range(2):
        # the render only enters as the CDM's condition: with identical conditions the trajectories agree
        cond = torch.rand(3, 8, 8, 3)
        ta, tb = a.step(cond), b.step(cond)
        assert a.last_info.w_t == 0.0
        assert torch.allclose(ta, tb)
        x0 = (a.last_info.x0.permute(0, 2, 3, 1) + 1) / 2
        assert torch.allclose(ta, x0.clamp(0, 1), atol=1e-6)
    assert not math.isnan(float(ta.sum()))


def test_paper_guidance_form_reaches_the_trajectories() -> None:
    """NGDConfig(guidance_form='paper') drives Algorithm 1: at the first step the targets are the renders, so
    the correction gamma (s/a)(I - R) is zero and I <- x0^; afterwards it differs from the epsilon form."""
    paper, eps = _diffusion(gamma=2.0, guidance_form="paper"), _diffusion(gamma=2.0, guidance_form="epsilon")
    start = torch.rand(3, 8, 8, 3)
    paper.start(start)
    eps.start(start)
    first = paper.step(start)
    assert torch.allclose(first, ((paper.last_info.x0.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1), atol=1e-6)
    eps.step(start)
    renders = torch.rand(3, 8, 8, 3)
    assert not torch.allclose(paper.step(renders), eps.step(renders), atol=1e-3)


def test_pinned_steps_are_the_ones_with_full_guidance_weight() -> None:
    from nerfdiff_ns.cdm.schedule import alpha_sigma, make_train_scheduler

    sched = make_train_scheduler()
    full = ngd_step_timesteps(NGDConfig(diffusion_steps=25, guidance_gamma=8.0, skip_pinned_steps=False), sched)
    cfg = NGDConfig(diffusion_steps=25, guidance_gamma=8.0)
    kept = ngd_step_timesteps(cfg, sched)
    alpha, sigma = alpha_sigma(sched, full)
    weight = 8.0 * sigma.view(-1) ** 2 / alpha.view(-1) ** 2
    assert 0 < len(kept) < len(full)
    assert torch.equal(kept, full[weight < 1.0])  # the kept steps keep their timesteps
    assert cfg.total_iters(len(kept)) == len(kept) * cfg.nerf_iters_per_step + cfg.final_iters
    # per-view gammas: a step is pinned only when every view is, so the smallest gamma decides
    assert torch.equal(ngd_step_timesteps(NGDConfig(diffusion_steps=25, guidance_gamma=8.0, far_side_gamma=1e3), sched), kept)
    assert torch.equal(ngd_step_timesteps(NGDConfig(diffusion_steps=25, guidance_gamma=1e3, far_side_gamma=8.0), sched), kept)
    # the unclamped forms never pin a step; with every step pinned the last one still runs
    epsilon = NGDConfig(diffusion_steps=25, guidance_gamma=8.0, guidance_form="epsilon")
    assert torch.equal(ngd_step_timesteps(epsilon, sched), full)
    assert ngd_step_timesteps(NGDConfig(diffusion_steps=25, guidance_gamma=1e9), sched).tolist() == full[-1:].tolist()


def test_far_side_gamma_grows_with_the_angle_from_the_input_view() -> None:
    from nerfdiff_ns.ngd import view_farness, view_gammas

    source = orbit_pose(2.7, 0.0, 0.0)
    farness = view_farness(source, torch.stack([orbit_pose(2.7, az, 0.0) for az in (0.0, 90.0, 180.0)]))
    assert torch.allclose(farness.flatten(), torch.tensor([0.0, 0.5, 1.0]), atol=1e-6)
    gammas = view_gammas(8.0, 800.0, farness)
    assert torch.allclose(gammas.flatten(), torch.tensor([8.0, 80.0, 800.0]), rtol=1e-4)  # geometric in farness
    assert view_gammas(8.0, None, farness) == 8.0
    with pytest.raises(ValueError, match="far_side_gamma"):
        view_gammas(8.0, 0.0, farness)


def test_far_side_gamma_pins_only_the_far_views() -> None:
    """A huge far-side gamma makes the view opposite the input its render at every step, leaves the CDM its say
    next to the input, and with far_side_gamma = gamma the run is exactly the plain one."""
    from nerfdiff_ns.cdm.schedule import make_train_scheduler
    from nerfdiff_ns.cdm.unet import ConditionalDiffusionModel

    def run(**ngd) -> torch.Tensor:
        torch.manual_seed(0)
        cdm = ConditionalDiffusionModel(sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
                                        attention_levels=(False, False), camera_embedding_dim=8).eval()
        source = orbit_pose(2.7, 0.0, 20.0)
        cams = torch.stack([orbit_pose(2.7, az, 20.0) for az in (20.0, 180.0)])
        cfg = NGDConfig(diffusion_steps=4, guidance_gamma=0.5, **ngd)
        diffusion = VirtualViewDiffusion(cdm, make_train_scheduler(), cfg, torch.rand(8, 8, 3), source, cams)
        diffusion.start(renders)
        while not diffusion.done:
            targets = diffusion.step(renders)
        return targets

    renders = torch.rand(2, 8, 8, 3)
    pinned = run(far_side_gamma=1e12)
    assert torch.allclose(pinned[1], renders[1], atol=1e-5)  # the far view: its render
    assert not torch.allclose(pinned[0], renders[0], atol=1e-2)  # the near view: the CDM drew on it
    assert torch.allclose(run(far_side_gamma=0.5), run(), atol=1e-6)


def test_skipping_pinned_steps_leaves_the_trajectories_unchanged() -> None:
    """With the NeRF holding still, running the pinned steps (w_t = 1) changes neither target nor noise:
    the skipped schedule ends at the same targets."""
    full = _diffusion(gamma=8.0, diffusion_steps=25, skip_pinned_steps=False)
    skipped = _diffusion(gamma=8.0, diffusion_steps=25)
    assert len(skipped.timesteps) < len(full.timesteps)
    render = torch.rand(3, 8, 8, 3)
    full.start(render)
    skipped.start(render)
    while not full.done:
        t = int(full.timesteps[full.step_index])
        targets = full.step(render)
        if t not in skipped.timesteps.tolist():
            assert full.last_info.w_t == 1.0
            assert torch.allclose(targets, render, atol=1e-6)
    while not skipped.done:
        last = skipped.step(render)
    assert torch.allclose(last, targets, atol=1e-5)
    assert torch.allclose(skipped.trajectories.noise, full.trajectories.noise, atol=1e-4)


def test_ns_train_runs_the_kept_steps_only(tiny_bundle) -> None:
    import copy

    from nerfdiff_ns.bundle import load_bundle
    from nerfdiff_ns.config import nerfdiff_tiny_method
    from nerfdiff_ns.trainer import schedule_iterations

    config = copy.deepcopy(nerfdiff_tiny_method.config)
    config.pipeline.model.bundle = tiny_bundle[1]
    ngd = config.pipeline.ngd
    kept = len(ngd_step_timesteps(ngd, load_bundle(tiny_bundle[1]).load_train_scheduler()))
    assert kept < ngd.diffusion_steps
    assert schedule_iterations(config) == kept * ngd.nerf_iters_per_step + ngd.final_iters
    config.pipeline.ngd.mode = "feed-forward"
    assert schedule_iterations(config) == 0


def test_virtual_views_are_drawn_in_the_viewer_with_their_targets() -> None:
    """The pipeline's viewer callback puts one frustum per virtual view, carrying its current target."""
    from types import SimpleNamespace

    from nerfstudio.cameras.cameras import Cameras

    from nerfdiff_ns.pipeline import NerfDiffPipeline

    calls: list[dict] = []
    scene = SimpleNamespace(add_camera_frustum=lambda **kw: calls.append(kw))
    viewer = SimpleNamespace(viser_server=SimpleNamespace(scene=scene), config=SimpleNamespace(camera_frustum_scale=0.1))
    c2w = virtual_cameras(orbit_pose(2.7, 0.0, 20.0), 3)
    cams = Cameras(camera_to_worlds=c2w[:, :3, :4], fx=20.0, fy=20.0, cx=8.0, cy=8.0, width=16, height=16)
    targets = torch.rand(3, 16, 16, 3)
    fake = SimpleNamespace(datamanager=SimpleNamespace(virtual_cameras=cams, virtual_targets=targets))
    NerfDiffPipeline._show_virtual_views(fake, viewer, step=10)  # type: ignore[arg-type]
    assert len(calls) == 3
    assert [c["name"] for c in calls] == [f"/nerfdiff_virtual_views/{i:02d}" for i in range(3)]
    assert (calls[1]["image"] == (targets[1].numpy() * 255).astype("uint8")).all()
    assert calls[0]["fov"] == pytest.approx(2 * math.atan(8.0 / 20.0))
    assert torch.allclose(torch.tensor(calls[2]["position"]), c2w[2, :3, 3] * 10.0)


def test_cdm_only_sampling_cli_writes_one_png_per_target_view(tiny_bundle, tmp_path) -> None:
    from nerfdiff_ns.data.images import load_rgb
    from nerfdiff_ns.sample import SampleConfig, sample_views

    root, bundle = tiny_bundle
    obj = sorted(p for p in (root / "val").iterdir() if p.is_dir())[0]
    image = sorted((obj / "rgb").glob("*.png"))[0]
    cfg = SampleConfig(image=image, output_dir=tmp_path / "s", bundle=bundle, num_views=3, num_steps=2, device="cpu")
    written = sample_views(cfg)
    assert [p.name for p in written] == ["view_00.png", "view_01.png", "view_02.png"]
    sample = load_rgb(written[0])
    assert sample.shape[-1] == 3 and torch.isfinite(sample).all()
    assert (tmp_path / "s" / "render_02.png").is_file() and (tmp_path / "s" / "cameras.json").is_file()
    # same seed -> same samples; another seed -> different samples
    again = sample_views(SampleConfig(**{**cfg.__dict__, "output_dir": tmp_path / "t"}))
    assert torch.equal(load_rgb(again[1]), load_rgb(written[1]))
    other = sample_views(SampleConfig(**{**cfg.__dict__, "output_dir": tmp_path / "u", "seed": 1}))
    assert not torch.equal(load_rgb(other[1]), load_rgb(written[1]))
