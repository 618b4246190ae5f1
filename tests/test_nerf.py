"""The single-image NeRF: triplane geometry, volume rendering maths, and that it can learn."""

from __future__ import annotations

import math

import pytest
import torch

from nerfdiff_ns.nerf.encoder import EncoderConfig
from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF, NeRFConfig, SourceView
from nerfdiff_ns.nerf.rays import camera_rays, image_pixels, world_to_camera
from nerfdiff_ns.nerf.renderer import alpha_composite, importance_samples, ray_sphere_bounds, stratified_samples
from nerfdiff_ns.nerf.triplane import normalized_coordinates, sample_triplane

SIZE = 16
STEPS = 150
FOCAL = 20.0
INTRINSICS = torch.tensor([[FOCAL, FOCAL, SIZE / 2, SIZE / 2]])


def one_hot_triplane(plane: int, row: int, col: int, size: int = SIZE) -> torch.Tensor:
    tri = torch.zeros(1, 3, 1, size, size)
    tri[0, plane, 0, row, col] = 1.0
    return tri


@pytest.mark.parametrize("px,py,depth", [(3, 11, 2.3), (12, 4, 3.1), (8, 8, 2.7)])
def test_frustum_xy_plane_is_pixel_aligned(px: int, py: int, depth: float) -> None:
    """A point on the ray through pixel (px, py) reads exactly texel (py, px) of the xy plane."""
    x = (px + 0.5 - SIZE / 2) / FOCAL * depth
    y = -(py + 0.5 - SIZE / 2) / FOCAL * depth
    point = torch.tensor([[[x, y, -depth]]])
    coords = normalized_coordinates(point, "frustum", torch.tensor([2.7]), 1.0, INTRINSICS, (SIZE, SIZE))
    value = sample_triplane(one_hot_triplane(0, py, px), coords)
    assert value.item() == pytest.approx(1.0, abs=1e-5)
    # inverse depth: near edge (d - r) -> -1, far edge (d + r) -> +1
    near = normalized_coordinates(torch.tensor([[[0.0, 0.0, -1.7]]]), "frustum", torch.tensor([2.7]), 1.0, INTRINSICS, (SIZE, SIZE))
    far = normalized_coordinates(torch.tensor([[[0.0, 0.0, -3.7]]]), "frustum", torch.tensor([2.7]), 1.0, INTRINSICS, (SIZE, SIZE))
    assert near[0, 0, 2].item() == pytest.approx(-1.0, abs=1e-5)
    assert far[0, 0, 2].item() == pytest.approx(1.0, abs=1e-5)


def test_camera_mode_coordinates_and_planes() -> None:
    """Camera mode: box of half-size r around the object centre at depth d; image axes keep their orientation."""
    d, r = 2.5, 1.0
    point = torch.tensor([[[0.5, 0.25, -(d + 0.75)]]])  # right, up, behind the centre
    coords = normalized_coordinates(point, "camera", torch.tensor([d]), r)
    assert coords[0, 0].tolist() == pytest.approx([0.5, -0.25, 0.75])
    # texel centres: a = (2 col + 1)/S - 1. Pick the texel containing the point on each plane.
    to_idx = lambda v: int((v + 1) / 2 * SIZE)  # noqa: E731
    a, b, c = coords[0, 0].tolist()
    for plane, (u, v) in enumerate([(a, b), (a, c), (b, c)]):
        tri = one_hot_triplane(plane, to_idx(v), to_idx(u))
        value = sample_triplane(tri, normalized_coordinates(
            torch.tensor([[[((to_idx(a) + 0.5) * 2 / SIZE - 1) * r, -((to_idx(b) + 0.5) * 2 / SIZE - 1) * r,
                            -(d + ((to_idx(c) + 0.5) * 2 / SIZE - 1) * r)]]]), "camera", torch.tensor([d]), r))
        assert value.item() == pytest.approx(1.0, abs=1e-5), f"plane {plane}"


def test_concat_aggregation_keeps_planes_apart() -> None:
    tri = torch.arange(3, dtype=torch.float32).view(1, 3, 1, 1, 1).expand(1, 3, 1, 4, 4).contiguous()
    coords = torch.zeros(1, 5, 3)
    assert sample_triplane(tri, coords, "concat")[0, 0].tolist() == [0.0, 1.0, 2.0]
    assert sample_triplane(tri, coords, "sum")[0, 0].tolist() == [3.0]


def test_constant_density_matches_analytic_transmittance() -> None:
    """Accumulation of a homogeneous medium is 1 - exp(-sigma L), whatever the sampling."""
    near = torch.full((4, 1), 1.0)
    far = torch.tensor([[1.5], [2.0], [3.0], [4.0]])
    sigma = 0.8
    for jitter in (False, True):
        samples = stratified_samples(near, far, 37, jitter)
        density = torch.full(samples.t.shape, sigma)
        rgb = torch.ones(*samples.t.shape, 3) * torch.tensor([0.2, 0.4, 0.6])
        out = alpha_composite(density, rgb, samples, torch.zeros(3))
        expected = 1 - torch.exp(-sigma * (far - near))
        assert torch.allclose(out["accumulation"], expected, atol=1e-6)
        assert torch.allclose(out["rgb"], expected * torch.tensor([0.2, 0.4, 0.6]), atol=1e-6)
    # and through the whole importance-sampling path: merged bins still tile [near, far]
    from nerfdiff_ns.nerf.renderer import merge_samples

    coarse = stratified_samples(near, far, 8, True)
    fine = importance_samples(coarse, torch.rand(coarse.t.shape), 16, True)
    merged, _ = merge_samples(coarse, fine)
    assert torch.allclose(merged.deltas.sum(-1, keepdim=True), far - near, atol=1e-6)
    out = alpha_composite(torch.full(merged.t.shape, sigma), torch.ones(*merged.t.shape, 3), merged, torch.zeros(3))
    assert torch.allclose(out["accumulation"], 1 - torch.exp(-sigma * (far - near)), atol=1e-6)


def test_importance_samples_follow_the_weights() -> None:
    near, far = torch.zeros(1, 1), torch.ones(1, 1)
    coarse = stratified_samples(near, far, 10, False)
    weights = torch.zeros(1, 10)
    weights[0, 6] = 1.0
    fine = importance_samples(coarse, weights, 64, True, torch.Generator().manual_seed(0))
    inside = ((fine >= 0.6) & (fine <= 0.7)).float().mean()
    assert inside > 0.9


def test_ray_sphere_bounds() -> None:
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far = ray_sphere_bounds(origins, dirs, 1.0)
    assert near[0].item() == pytest.approx(2.0) and far[0].item() == pytest.approx(4.0)
    assert near[1].item() == far[1].item()  # miss: zero-length interval


def test_rays_follow_nerfstudio_convention() -> None:
    """Pixel (cx, cy) looks along -z; a pixel to the right/below looks right/down (OpenGL axes)."""
    c2w = torch.eye(4)[None]
    k = torch.tensor([[10.0, 10.0, 2.0, 2.0]])
    pix = torch.tensor([[[1.5, 1.5], [3.0, 1.5], [1.5, 3.0]]]) - 0.0
    o, d = camera_rays(c2w, k, pix - 0.0)
    assert torch.allclose(d[0, 0], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    assert d[0, 1, 0] > 0 and d[0, 2, 1] < 0
    pts = torch.randn(1, 5, 3)
    pose = torch.eye(4)[None]
    pose[0, :3, 3] = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(world_to_camera(pose, pts + pose[0, :3, 3]), pts, atol=1e-6)


def tiny_nerf(parameterization: str = "frustum") -> ImageConditionedNeRF:
    cfg = NeRFConfig(
        image_size=SIZE, triplane_channels=8, triplane_resolution=SIZE, parameterization=parameterization,  # type: ignore[arg-type]
        encoder=EncoderConfig(channels=(16, 32)), mlp_hidden=32, mlp_layers=2, num_coarse_samples=16, num_fine_samples=8,
        mlp_implementation="torch",
    )
    return ImageConditionedNeRF(cfg)


@pytest.mark.parametrize("parameterization", ["frustum", "camera"])
def test_overfit_one_object_raises_psnr(parameterization: str) -> None:
    """Feed-forward NeRF fits a synthetic two-colour sphere's views (source -> other views) above 20 dB."""
    torch.manual_seed(0)
    from nerfdiff_ns.data.cameras import orbit_pose

    poses = torch.stack([orbit_pose(2.7, az, 20.0) for az in (0.0, 40.0, 80.0, 120.0)])
    k = INTRINSICS.expand(4, 4)
    # ground truth by analytic ray casting of a sphere (radius 0.6), red above z=0, green below
    pixels = image_pixels(SIZE, SIZE)[None].expand(4, -1, -1)
    o, d = camera_rays(poses, k, pixels)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 0.36
    disc = b * b - c
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp(min=0))
    z = (o + t[..., None] * d)[..., 2]
    color = torch.where((z > 0)[..., None], torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.8, 0.2]))
    images = torch.where(hit[..., None], color, torch.ones(3)).view(4, SIZE, SIZE, 3)

    nerf = tiny_nerf(parameterization)
    opt = torch.optim.Adam(nerf.parameters(), lr=5e-3)
    source = SourceView(poses[:1], k[:1], (SIZE, SIZE))
    for step in range(STEPS):
        tri = nerf.encode(images[:1])
        target = 1 + step % 3
        out = nerf.render_rays(tri, source, o[target : target + 1], d[target : target + 1], jitter=True)
        loss = (out["rgb"] - images[target].view(1, -1, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tri = nerf.encode(images[:1])
        render = nerf.render_image(tri, source, poses[2:3], k[:1], SIZE, SIZE)["rgb"]
    psnr = -10 * math.log10(float((render[0] - images[2]).pow(2).mean()))
    assert psnr > 20.0, psnr
