"""Pretraining renders all objects of a batch in one call: equal to rendering them one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nerfdiff_ns.nerf.image_nerf import SourceView
from nerfdiff_ns.nerf.jitter import StepJitter, batch_jitter
from nerfdiff_ns.nerf.rays import camera_rays, image_pixels
from nerfdiff_ns.pretrain import JointModel, Trainer, make_batch, parse_config, scale_intrinsics


def _trainer(data: Path, out: Path) -> Trainer:
    cfg = parse_config(["--preset", "test", "--data", str(data), "--output-dir", str(out), "--no-log-tensorboard",
                        "--batch-size", "3", "--no-resume"])
    return Trainer(cfg)


def _per_object(model: JointModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: one render_rays call per object, each with its own rows of the step's jitter (the former loop)."""
    cfg, nerf = model.cfg, model.nerf
    src = batch["source_image"]
    height = src.shape[1]
    triplanes = nerf.encode(src)
    res = cfg.render_resolution
    k_render = scale_intrinsics(batch["intrinsics"], height, res)
    pixels = image_pixels(res, res, src.device)
    renders, src_preds = [], []
    jitter = batch_jitter(batch, src.device)
    for b in range(len(jitter)):
        gen = jitter.row(b)  # object b's rows of the step's draws: its target render, then its source pixels
        sub = SourceView(batch["source_c2w"][b : b + 1], batch["intrinsics"][b : b + 1], (height, src.shape[2]))
        o, d = camera_rays(batch["target_c2w"][b : b + 1], k_render[b : b + 1], pixels[None])
        renders.append(nerf.render_rays(triplanes[b : b + 1], sub, o, d, jitter=True, generator=gen)["rgb"])
        o, d = camera_rays(batch["source_c2w"][b : b + 1], batch["intrinsics"][b : b + 1], batch["source_pixels"][b : b + 1])
        src_preds.append(nerf.render_rays(triplanes[b : b + 1], sub, o, d, jitter=True, generator=gen)["rgb"])
    return torch.cat(renders).view(-1, res, res, 3), torch.cat(src_preds)


def test_batched_render_views_equals_the_per_object_renders(tiny_data, tmp_path):
    trainer = _trainer(tiny_data, tmp_path)
    assert trainer.cfg.source_view_weight > 0
    with torch.no_grad():
        # make_batch twice: identical samples and the same step jitter
        batched = trainer.model.render_views(make_batch(trainer.dataset, trainer.cfg, 5, trainer.dist, trainer.device))
        looped = _per_object(trainer.model, make_batch(trainer.dataset, trainer.cfg, 5, trainer.dist, trainer.device))
    assert batched[0].shape == looped[0].shape == (3, trainer.cfg.render_resolution, trainer.cfg.render_resolution, 3)
    torch.testing.assert_close(batched[0], looped[0], rtol=1e-5, atol=1e-6)  # jittered, still the same samples
    torch.testing.assert_close(batched[1], looped[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched[0][0], batched[0][1])  # three different objects/views, not one repeated


def test_batched_render_rays_without_jitter_and_with_step_jitter(tiny_data, tmp_path):
    trainer = _trainer(tiny_data, tmp_path)
    nerf = trainer.nerf
    batch = make_batch(trainer.dataset, trainer.cfg, 0, trainer.dist, trainer.device)
    src = batch["source_image"]
    source = SourceView(batch["source_c2w"], batch["intrinsics"], tuple(src.shape[1:3]))
    pixels = image_pixels(8, 8)[None].expand(3, -1, -1)
    k = scale_intrinsics(batch["intrinsics"], src.shape[1], 8)
    o, d = camera_rays(batch["target_c2w"], k, pixels)
    with torch.no_grad():
        tri = nerf.encode(src)
        whole = nerf.render_rays(tri, source, o, d)
        for b in range(3):
            sub = SourceView(source.c2w[b : b + 1], source.intrinsics[b : b + 1], source.image_size)
            one = nerf.render_rays(tri[b : b + 1], sub, o[b : b + 1], d[b : b + 1])
            for key in ("rgb", "depth", "accumulation"):
                torch.testing.assert_close(whole[key][b : b + 1], one[key], rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="2 jitter rows for a batch of 3 objects"):
            nerf.render_rays(tri, source, o, d, jitter=True, generator=StepJitter(0, 3, 0, 2, "cpu"))


def test_ngd_renders_all_virtual_views_in_one_ray_set_equal_to_one_view_at_a_time(tiny_data, tmp_path):
    """NerfDiffPipeline.render_virtual_views batches the views' rays; it must equal render_image per view."""
    from types import SimpleNamespace

    from nerfdiff_ns.data.cameras import virtual_cameras
    from nerfdiff_ns.pipeline import NerfDiffPipeline

    trainer = _trainer(tiny_data, tmp_path)
    nerf = trainer.nerf.eval()
    batch = make_batch(trainer.dataset, trainer.cfg, 0, trainer.dist, trainer.device)
    src = batch["source_image"][:1]
    source = SourceView(batch["source_c2w"][:1], batch["intrinsics"][:1], tuple(src.shape[1:3]))
    with torch.no_grad():
        triplane = nerf.encode(src)
    c2w = virtual_cameras(batch["source_c2w"][0], 5, 360.0, (0.0, 30.0))
    k = torch.tensor([12.0, 12.0, 6.0, 6.0])
    fake = SimpleNamespace(model=SimpleNamespace(nerf=nerf, triplane=triplane, source=source, training=False,
                                                 eval=lambda: None, train=lambda flag: None),
                           virtual_c2w=c2w, device=torch.device("cpu"), virtual_intrinsics=lambda size: k)
    batched = NerfDiffPipeline.render_virtual_views(fake, 12, chunk=100)  # chunks that cut across views
    with torch.no_grad():
        looped = torch.cat([nerf.render_image(triplane, source, c2w[i : i + 1], k[None], 12, 12)["rgb"]
                            for i in range(5)]).clamp(0, 1)
    assert batched.shape == (5, 12, 12, 3)
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched[0], batched[2])


def test_render_image_of_several_views_with_one_triplane_equals_one_view_at_a_time(tiny_data, tmp_path):
    """One object's triplane rendered at V cameras in one render_image call (points [V, N, 3] against a
    [1, ...] triplane). Before sample_triplane broadcast the triplane, its grid reshape paired the
    V rows' points with the wrong planes: the renders were garbage, with no error."""
    trainer = _trainer(tiny_data, tmp_path)
    nerf = trainer.nerf
    batch = make_batch(trainer.dataset, trainer.cfg, 0, trainer.dist, trainer.device)
    src = batch["source_image"][:1]
    source = SourceView(batch["source_c2w"][:1], batch["intrinsics"][:1], tuple(src.shape[1:3]))
    c2w, k = batch["target_c2w"], scale_intrinsics(batch["intrinsics"], src.shape[1], 8)
    with torch.no_grad():
        tri = nerf.encode(src)
        together = nerf.render_image(tri, source, c2w, k, 8, 8)
        for v in range(3):
            one = nerf.render_image(tri, source, c2w[v : v + 1], k[v : v + 1], 8, 8)
            for key in ("rgb", "depth", "accumulation"):
                torch.testing.assert_close(together[key][v : v + 1], one[key], rtol=1e-5, atol=1e-6)
        two = nerf.encode(batch["source_image"][:2])
        with pytest.raises(ValueError, match="2 triplanes for 3 rows"):
            nerf.render_image(two, source, c2w, k, 8, 8)
