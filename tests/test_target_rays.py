"""Pretraining's --target-rays: the target-view NeRF loss over K random pixels with gradients, the CDM's
condition rendered whole without them. CPU only, on the tiny generated dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.nerf.image_nerf import SourceView
from nerfdiff_ns.pretrain import Trainer, parse_config
from nerfdiff_ns.training.batches import make_batch, resize_hwc
from nerfdiff_ns.training.distributed import DistInfo
from nerfdiff_ns.training.phases import PhaseTimer


def make_trainer(data: Path, out: Path, *flags: str) -> Trainer:
    return Trainer(parse_config(["--preset", "test", "--data", str(data), "--output-dir", str(out),
                                 "--no-log-tensorboard", "--batch-size", "3", *flags]))


def test_batches_draw_target_pixels_last(tiny_data, tmp_path):
    plain = make_trainer(tiny_data, tmp_path / "plain")
    rays = make_trainer(tiny_data, tmp_path / "rays", "--target-rays", "40")
    a = make_batch(plain.dataset, plain.cfg, 7, plain.dist, plain.device)
    b = make_batch(rays.dataset, rays.cfg, 7, rays.dist, rays.device)
    index = b.pop("target_pixel_index")
    assert index.shape == (3, 40) and index.dtype == torch.int64
    assert 0 <= int(index.min()) and int(index.max()) < rays.cfg.render_resolution**2
    assert all(len(set(row.tolist())) == 40 for row in index)  # distinct pixels
    assert not torch.equal(index[0], index[1])  # each sample draws its own
    # drawn after everything else, so the rest of the batch is the one a run without the flag sees
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if k != "jitter") and a["jitter"] == b["jitter"]


def test_each_rank_draws_its_samples_pixels(tiny_data, tmp_path):
    """A DDP rank's pixels are its rows of the one-process batch: the run is the same in any layout."""
    trainer = make_trainer(tiny_data, tmp_path, "--target-rays", "40", "--batch-size", "4")
    whole = make_batch(trainer.dataset, trainer.cfg, 3, DistInfo(), trainer.device)["target_pixel_index"]
    halves = [make_batch(trainer.dataset, trainer.cfg, 3, DistInfo(rank=r, world_size=2), trainer.device)
              for r in (0, 1)]
    assert torch.equal(torch.cat([h["target_pixel_index"] for h in halves]), whole)


def test_pixel_indices_render_the_same_rays_as_the_whole_view(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path, "--target-rays", "50")
    model = trainer.model
    batch = make_batch(trainer.dataset, trainer.cfg, 0, trainer.dist, trainer.device)
    source = SourceView(batch["source_c2w"], batch["intrinsics"], tuple(batch["source_image"].shape[1:3]))
    with torch.no_grad():
        triplanes = model.nerf.encode(batch["source_image"])
        whole = model.render_target_pixels(triplanes, source, batch["target_c2w"], None, False, None)
        some = model.render_target_pixels(triplanes, source, batch["target_c2w"], batch["target_pixel_index"], False, None)
    index = batch["target_pixel_index"][..., None].expand(-1, -1, whole.shape[-1])
    torch.testing.assert_close(some, whole.gather(1, index))


def test_the_nerf_loss_is_over_the_pixels_and_the_condition_carries_no_gradient(tiny_data, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_data, tmp_path, "--target-rays", "50")
    model = trainer.model
    batch = make_batch(trainer.dataset, trainer.cfg, 0, trainer.dist, trainer.device)
    seen = {}
    real = model.render_target_rays

    def spy(b):
        seen["out"] = real(b)
        return seen["out"]

    monkeypatch.setattr(model, "render_target_rays", spy)
    with PhaseTimer("cpu") as timer:
        losses = model(batch)
    render, pixel_rgb, _ = seen["out"]
    res = trainer.cfg.render_resolution
    assert render.shape == (3, res, res, 3) and not render.requires_grad  # the whole view, for the CDM
    assert pixel_rgb.shape == (3, 50, 3) and pixel_rgb.requires_grad
    target = resize_hwc(batch["target_image"], res).permute(0, 2, 3, 1).reshape(3, -1, 3)
    expected = F.mse_loss(pixel_rgb, target.gather(1, batch["target_pixel_index"][..., None].expand(-1, -1, 3)))
    torch.testing.assert_close(losses["nerf_loss"], expected)
    assert {"encode", "render_target", "render_target_rays", "render_source", "cdm_loss"} == set(timer.seconds)
    # the diffusion loss alone reaches the CDM and not the NeRF (its condition was rendered without gradients)
    model.zero_grad(set_to_none=True)
    losses["diffusion_loss"].backward(retain_graph=True)
    assert all(p.grad is None for p in model.nerf.parameters())
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.cdm.parameters())
    losses["nerf_loss"].backward()
    assert all(p.grad is not None for p in model.nerf.encoder.parameters())


def test_nerf_only_training_renders_only_the_pixels(tiny_data, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_data, tmp_path, "--target-rays", "32", "--cdm.no-enabled", "--steps", "4")
    rendered = []
    real = trainer.nerf.render_rays

    def count(triplanes, source, origins, *args, **kwargs):
        rendered.append(origins.shape[1])
        return real(triplanes, source, origins, *args, **kwargs)

    monkeypatch.setattr(trainer.nerf, "render_rays", count)
    losses = [trainer.train_step() for _ in range(4)]
    assert rendered == [32, trainer.cfg.source_rays] * 4  # no whole target view without a CDM to condition
    assert all(step is not None and step["nerf_loss"] > 0 for step in losses)
    assert losses[-1]["train_psnr"] == pytest.approx(-10 * torch.log10(torch.tensor(losses[-1]["nerf_loss"])).item())


@pytest.mark.parametrize("flags, named", [
    (("--target-rays", "-1"), "--target-rays -1"),
    (("--target-rays", "100000"), "--target-rays 100000"),
    (("--target-rays", "64", "--cdm.backprop-into-nerf"), "--cdm.backprop-into-nerf"),
])
def test_bad_target_rays_are_refused(tiny_data, tmp_path, flags, named):
    with pytest.raises(FlagError, match=named):
        make_trainer(tiny_data, tmp_path / "run", *flags)
    assert not (tmp_path / "run").exists()
