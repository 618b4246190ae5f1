"""Surface-consistent starting noise: shared across views, still white noise within each view."""

import math

import pytest
import torch

from nerfdiff_ns.cdm.surface_noise import surface_consistent_noise, surface_points
from nerfdiff_ns.data.cameras import virtual_cameras


def _sphere_views(views: int = 6, size: int = 24, radius: float = 0.6):
    """Depth of a sphere of `radius` at the origin seen from `views` cameras at distance 2.7."""
    from nerfdiff_ns.nerf.rays import camera_rays, image_pixels

    c2w0 = torch.eye(4)
    c2w0[2, 3] = 2.7
    c2w = virtual_cameras(c2w0, views, 360.0, (0.0, 30.0))
    focal = size / (2 * math.tan(math.radians(22.5)))
    k = torch.tensor([focal, focal, size / 2, size / 2])
    o, d = camera_rays(c2w, k.expand(views, 4), image_pixels(size, size)[None].expand(views, -1, -1))
    b = (o * d).sum(-1)
    disc = b**2 - ((o * o).sum(-1) - radius**2)
    hit = disc > 0
    depth = torch.where(hit, -b - disc.clamp(min=0).sqrt(), torch.full_like(b, 4.0))
    return c2w, k, depth.view(views, size, size, 1), hit.view(views, size, size), focal


def test_views_share_noise_where_they_see_the_same_cell():
    c2w, k, depth, hit, focal = _sphere_views()
    size = depth.shape[1]
    points = surface_points(c2w, k, size, depth)
    assert torch.allclose(points[hit].norm(dim=-1), torch.full((int(hit.sum()),), 0.6), atol=1e-4)
    cell = 2.7 / focal
    noise = surface_consistent_noise(points, hit, cell, 3, torch.Generator().manual_seed(0))
    assert noise.shape == (6, 3, size, size)
    flat = noise.permute(0, 2, 3, 1).reshape(6, -1, 3)
    # values used in two views: only on the object, and far more often than chance (never, for floats)
    shared = 0
    for a in range(6):
        for b in range(a + 1, 6):
            same = (flat[a][:, None, :] == flat[b][None, :, :]).all(-1)
            rows = same.any(1)
            assert bool(hit.view(6, -1)[a][rows].all())
            shared += int(rows.sum())
    assert shared > 0.2 * int(hit.sum())


def test_each_view_stays_white_noise():
    c2w, k, depth, hit, focal = _sphere_views(views=4, size=32)
    points = surface_points(c2w, k, 32, depth)
    noise = surface_consistent_noise(points, hit, 2.0 * 2.7 / focal, 3, torch.Generator().manual_seed(1))
    for view in noise.permute(0, 2, 3, 1).reshape(4, -1, 3):
        assert torch.unique(view, dim=0).shape[0] == view.shape[0]  # no value used twice in one view
        assert abs(float(view.mean())) < 0.1 and abs(float(view.std()) - 1.0) < 0.1


def test_background_and_seed():
    c2w, k, depth, hit, focal = _sphere_views(views=3)
    points = surface_points(c2w, k, depth.shape[1], depth)
    a = surface_consistent_noise(points, hit, 0.1, 3, torch.Generator().manual_seed(5))
    b = surface_consistent_noise(points, hit, 0.1, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    none = surface_consistent_noise(points, torch.zeros_like(hit), 0.1, 3, torch.Generator().manual_seed(5))
    flat = none.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.unique(flat, dim=0).shape[0] == flat.shape[0]  # nothing visible: all independent
    with pytest.raises(ValueError, match="cell_size"):
        surface_consistent_noise(points, hit, 0.0)


def test_trajectories_start_from_given_noise():
    from diffusers import DDPMScheduler

    from nerfdiff_ns.cdm.guidance import NGDTrajectories

    renders = torch.rand(2, 3, 8, 8) * 2 - 1
    noise = torch.randn(2, 3, 8, 8)
    traj = NGDTrajectories(DDPMScheduler(num_train_timesteps=100)).init(renders, noise=noise)
    assert torch.equal(traj.noise, noise) and torch.equal(traj.targets, renders)
    with pytest.raises(ValueError, match="noise has shape"):
        NGDTrajectories(DDPMScheduler(num_train_timesteps=100)).init(renders, noise=noise[:1])
