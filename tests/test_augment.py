"""Symmetry augmentation (training/augment.py): the mirrored scene is the scene seen in a mirror, channel
permutations act on every image of a sample alike, and both reach the pretraining batches."""

from __future__ import annotations

import math

import pytest
import torch

from nerfdiff_ns.cdm.unet import relative_camera
from nerfdiff_ns.nerf.rays import camera_rays, image_pixels
from nerfdiff_ns.training.augment import (augment_sample, check_augmentations, mirror_c2w, mirror_sample,
                                         permute_channels)

MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def look_at(eye: list[float]) -> torch.Tensor:
    """An OpenGL camera (looking down -z) at ``eye`` aimed at the origin, z up."""
    eye_t = torch.tensor(eye)
    back = eye_t / eye_t.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), back)
    right = right / right.norm()
    up = torch.linalg.cross(back, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, eye_t
    return c2w


def sample_of(height: int = 6, width: int = 8, extra: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "source_image": torch.rand(height, width, 3, generator=gen),
        "target_image": torch.rand(height, width, 3, generator=gen),
        "render": torch.rand(height, width, 3 + extra, generator=gen),
        "source_c2w": look_at([2.0, 0.5, 0.7]),
        "target_c2w": look_at([-0.4, 2.1, 0.3]),
        "intrinsics": torch.tensor([7.0, 7.0, 3.7, 3.1]),
    }


def test_mirrored_camera_sees_the_mirrored_world_in_a_flipped_image():
    """Pixel (x, y) of the mirrored camera looks along the mirror image of the ray through the original
    camera's pixel (W - 1 - x, y): the mirrored world, flipped left-right."""
    height, width = 6, 8
    sample = sample_of(height, width)
    c2w, intrinsics = sample["source_c2w"], sample["intrinsics"]
    mirror_sample(sample)
    pixels = image_pixels(height, width)
    origins, dirs = camera_rays(c2w[None], intrinsics[None], pixels[None])
    flipped = torch.stack([width - 1 - pixels[:, 0], pixels[:, 1]], -1)
    m_origins, m_dirs = camera_rays(sample["source_c2w"][None], sample["intrinsics"][None], flipped[None])
    torch.testing.assert_close(m_origins, origins * torch.tensor([-1.0, 1.0, 1.0]))
    torch.testing.assert_close(m_dirs, dirs * torch.tensor([-1.0, 1.0, 1.0]))
    rotation = sample["source_c2w"][:3, :3]
    assert math.isclose(float(torch.linalg.det(rotation)), 1.0, abs_tol=1e-5)  # still a camera, not a reflection
    torch.testing.assert_close(mirror_c2w(mirror_c2w(c2w)), c2w)


def test_mirror_flips_every_image_and_mirrors_the_relative_camera():
    sample = sample_of(extra=2)
    before = {k: v.clone() for k, v in sample.items()}
    mirror_sample(sample)
    for key in ("source_image", "target_image", "render"):
        torch.testing.assert_close(sample[key], before[key].flip(1))
    rel = relative_camera(before["source_c2w"], before["target_c2w"]).view(3, 4)
    rel_m = relative_camera(sample["source_c2w"], sample["target_c2w"]).view(3, 4)
    torch.testing.assert_close(rel_m, MIRROR[:3, :3] @ rel @ MIRROR)
    assert float(sample["intrinsics"][2]) == pytest.approx(8 - 3.7)


def test_channel_permutation_is_shared_by_the_images_and_spares_extra_channels():
    sample = sample_of(extra=2)
    before = {k: v.clone() for k, v in sample.items()}
    order = torch.tensor([2, 0, 1])
    permute_channels(sample, order)
    for key in ("source_image", "target_image"):
        torch.testing.assert_close(sample[key], before[key][..., order])
    torch.testing.assert_close(sample["render"][..., :3], before["render"][..., order])
    torch.testing.assert_close(sample["render"][..., 3:], before["render"][..., 3:])
    torch.testing.assert_close(sample["source_c2w"], before["source_c2w"])


def test_augment_draws_both_symmetries_and_nothing_when_off():
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    sample = sample_of()
    augment_sample(sample, (), gen)
    assert torch.equal(gen.get_state(), state)  # runs without augmentation keep their random streams
    torch.testing.assert_close(sample["source_image"], sample_of()["source_image"])

    flips, orders = 0, set()
    for seed in range(40):
        sample = sample_of()
        original = sample["source_image"].clone()
        augment_sample(sample, ("hflip", "channels"), torch.Generator().manual_seed(seed))
        flipped = not torch.equal(sample["source_c2w"], sample_of()["source_c2w"])
        flips += flipped
        base = original.flip(1) if flipped else original
        matches = [o for o in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
                   if torch.equal(sample["source_image"], base[..., list(o)])]
        assert len(matches) == 1
        orders.add(matches[0])
    assert 10 <= flips <= 30 and len(orders) == 6
    with pytest.raises(ValueError, match="--augment rotate"):
        check_augmentations(["hflip", "rotate"])


def _as_augmented(plain: dict, augmented: dict, row: int) -> bool:
    """Whether sample ``row`` of ``augmented`` is that of ``plain``, possibly mirrored, under some channel order."""
    for flip in (False, True):
        base = {k: plain[k][row] for k in ("source_image", "target_image", "render") if k in plain}
        if flip:
            base = {k: v.flip(1) for k, v in base.items()}
        for order in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
            if all(torch.equal(augmented[k][row][..., :3], v[..., list(order)]) for k, v in base.items()):
                mirrored = torch.equal(augmented["source_c2w"][row], mirror_c2w(plain["source_c2w"][row]))
                return mirrored == flip
    return False


def test_augmented_batches_train_the_cdm_from_the_cache_and_live(tiny_bundle, tmp_path):
    """Both batch builders apply the symmetry to the sample they would have drawn, and a step trains on it."""
    from nerfdiff_ns.pretrain import Trainer, parse_config
    from nerfdiff_ns.training.batches import make_batch
    from nerfdiff_ns.training.render_cache import make_cached_batch

    data, bundle = tiny_bundle

    def trainer(out: str, *flags: str) -> Trainer:
        return Trainer(parse_config(["--preset", "test", "--data", str(data), "--output-dir", str(tmp_path / out),
                                     "--no-log-tensorboard", "--init-from", str(bundle), "--freeze-nerf",
                                     "--batch-size", "8", *flags]))

    plain, augmented = trainer("plain"), trainer("aug", "--augment", "hflip", "channels")
    assert augmented.cfg.augment == ("hflip", "channels")
    for step in range(3):
        a = make_cached_batch(plain.dataset, plain.render_cache, plain.cfg, step, plain.dist, plain.device)
        b = make_cached_batch(augmented.dataset, augmented.render_cache, augmented.cfg, step, augmented.dist,
                              augmented.device)
        assert torch.equal(a["timesteps"], b["timesteps"]) and torch.equal(a["noise"], b["noise"])  # streams kept
        assert all(_as_augmented(a, b, row) for row in range(8))
    changed = [not torch.equal(a["source_image"][r], b["source_image"][r]) for r in range(8)]
    assert any(changed)
    c = make_batch(augmented.dataset, augmented.cfg, 0, augmented.dist, augmented.device)
    d = make_batch(plain.dataset, plain.cfg, 0, plain.dist, plain.device)
    assert all(_as_augmented(d, c, row) for row in range(8))
    assert any(not torch.equal(c["source_image"][r], d["source_image"][r]) for r in range(8))
    rows = c["source_pixels"]  # the source-view rays sample the augmented image
    for r in range(8):
        picked = c["source_image"][r][rows[r][:, 1], rows[r][:, 0]]
        torch.testing.assert_close(picked, c["source_pixel_rgb"][r])
    history = [augmented.train_step() for _ in range(2)]
    assert all(h is not None and math.isfinite(h["diffusion_loss"]) for h in history)
