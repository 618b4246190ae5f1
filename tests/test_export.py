"""Mesh and 3D Gaussian export of a finished run (nerfdiff-export, nerfdiff-view-splat).

The run is the shipped bundle's feed-forward NeRF of the generated example object 904 (a real
val object, 32 px), trained once per module with `ns-train nerfdiff-tiny --pipeline.ngd.mode
feed-forward`: real geometry, so silhouette IoU and render PSNR mean something.
Thresholds were measured on this run (see the tests' comments) and set with a margin.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfdiff_ns.data.dataparsers import default_bundle_path
from nerfdiff_ns.export import ExportError

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
EXAMPLE = Path(__file__).resolve().parents[1] / "nerfdiff_ns" / "assets" / "examples" / "904"


@pytest.fixture(scope="module")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_run")
    proc = subprocess.run(
        [str(BIN / "ns-train"), "nerfdiff-tiny", "--output-dir", str(out), "--vis", "tensorboard", "--experiment-name", "exp",
         "--timestamp", "ff", "--pipeline.model.bundle", str(default_bundle_path()), "--pipeline.ngd.mode", "feed-forward",
         "nerfdiff-srn-object", "--data", str(EXAMPLE), "--max-eval-views", "2"],
        cwd=out, env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "exp" / "nerfdiff-tiny" / "ff" / "config.yml"


@pytest.fixture(scope="module")
def run(run_config: Path):
    from nerfdiff_ns.export.load import load_run

    return load_run(run_config, "cpu")


# ---- cameras and rasteriser (no run needed) ---------------------------------------------------
def test_viewmat_matches_nerf_rays() -> None:
    """A point on the NeRF's ray through pixel (i, j) projects to gsplat pixel (i + 0.5, j + 0.5), in front."""
    from nerfdiff_ns.data.cameras import orbit_pose
    from nerfdiff_ns.export.rasterize import intrinsics_matrix, viewmats_from_c2w
    from nerfdiff_ns.nerf.rays import camera_rays

    c2w = orbit_pose(2.7, 33.0, 21.0)[None]
    intr = torch.tensor([[30.0, 28.0, 15.0, 17.0]])
    pix = torch.tensor([[[3, 5], [20, 9], [0, 31]]])
    origins, dirs = camera_rays(c2w, intr, pix)
    pts = origins + 2.0 * dirs
    vm, K = viewmats_from_c2w(c2w), intrinsics_matrix(intr, 1)
    cam = pts[0] @ vm[0, :3, :3].T + vm[0, :3, 3]
    assert bool((cam[:, 2] > 0).all())  # OpenCV: z forward
    uv = (cam @ K[0].T)[:, :2] / cam[:, 2:]
    assert torch.allclose(uv, pix[0].float() + 0.5, atol=1e-4)


def _reference_composite(means2d, conics, opac, cols, depths, width, height, bg):
    """Per-pixel loop of gsplat's forward rules, to check the vectorised CPU path."""
    img = np.zeros((height, width, 3))
    order = np.argsort(depths)
    for y in range(height):
        for x in range(width):
            T, c = 1.0, np.zeros(3)
            for g in order:
                dx, dy = x + 0.5 - means2d[g, 0], y + 0.5 - means2d[g, 1]
                q = 0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
                if q < 0:
                    continue
                a = min(0.99, opac[g] * math.exp(-q))
                if a < 1 / 255:
                    continue
                if T * (1 - a) <= 1e-4:
                    break
                c += a * T * cols[g]
                T *= 1 - a
            img[y, x] = c + T * bg
    return img


def test_cpu_rasteriser_follows_gsplat_rules() -> None:
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    from nerfdiff_ns.data.cameras import orbit_pose
    from nerfdiff_ns.export.rasterize import intrinsics_matrix, rasterize_torch, viewmats_from_c2w

    gen = torch.Generator().manual_seed(0)
    n, w, h = 40, 12, 10
    means = (torch.rand(n, 3, generator=gen) - 0.5) * 0.8
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.08 + 0.02
    opac = torch.rand(n, generator=gen) * 0.9 + 0.05
    cols = torch.rand(n, 3, generator=gen)
    vm = viewmats_from_c2w(orbit_pose(2.5, 10.0, 20.0)[None])
    K = intrinsics_matrix(torch.tensor([14.0, 14.0, 6.0, 5.0]), 1)
    bg = torch.tensor([1.0, 1.0, 1.0])
    rgb, alpha = rasterize_torch(means, quats, scales, opac, cols, vm, K, w, h, bg[None], tile_size=4)
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False, False)
    radii, m2d, depths, conics, _ = _fully_fused_projection(means, covars, vm, K, w, h)
    vis = radii[0] > 0
    ref = _reference_composite(m2d[0][vis].numpy(), conics[0][vis].numpy(), opac[vis].numpy(), cols[vis].numpy(),
                               depths[0][vis].numpy(), w, h, bg.numpy())
    # the tiled path also drops a Gaussian from tiles outside its 3-sigma box (as gsplat does): tiny differences
    assert np.abs(rgb[0].numpy() - ref).max() < 0.02
    assert float(alpha.max()) > 0.5  # the scene is not empty
    # gradients reach every parameter
    means.requires_grad_(True)
    rgb2, _ = rasterize_torch(means, quats, scales, opac, cols, vm, K, w, h, bg[None])
    rgb2.sum().backward()
    assert means.grad is not None and float(means.grad.abs().sum()) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for gsplat's rasterization (CPU-only machine)")
def test_cpu_fallback_matches_gsplat_cuda() -> None:
    from nerfdiff_ns.data.cameras import orbit_pose
    from nerfdiff_ns.export.rasterize import gsplat_available, rasterize

    ok, why = gsplat_available(torch.device("cuda"))
    if not ok:
        pytest.skip(why)
    gen = torch.Generator().manual_seed(0)
    n = 500
    args = ((torch.rand(n, 3, generator=gen) - 0.5) * 1.2, torch.randn(n, 4, generator=gen),
            torch.rand(n, 3, generator=gen) * 0.05 + 0.01, torch.rand(n, generator=gen), torch.rand(n, 3, generator=gen))
    c2w = torch.stack([orbit_pose(2.7, a, 20.0) for a in (0.0, 120.0)])
    intr = torch.tensor([38.6, 38.6, 16.0, 16.0])
    bg = torch.ones(3)
    cpu, cpu_a = rasterize(*args, c2w, intr, 32, 32, bg, backend="torch")
    gpu, gpu_a = rasterize(*(a.cuda() for a in args), c2w.cuda(), intr.cuda(), 32, 32, bg.cuda(), backend="gsplat")
    assert float((cpu - gpu.cpu()).abs().mean()) < 2e-3
    assert float((cpu - gpu.cpu()).abs().max()) < 0.05
    assert float((cpu_a - gpu_a.cpu()).abs().mean()) < 2e-3


# ---- PLY -------------------------------------------------------------------------------------
def _cloud(n: int = 7):
    from nerfdiff_ns.export.splat_ply import GaussianCloud

    gen = torch.Generator().manual_seed(1)
    return GaussianCloud(torch.randn(n, 3, generator=gen), torch.randn(n, 3, generator=gen), torch.randn(n, 4, generator=gen),
                         torch.randn(n, generator=gen), torch.randn(n, 3, generator=gen), meta={"image_size": [32, 32]})


def test_ply_has_exactly_the_3dgs_fields_and_round_trips(tmp_path: Path) -> None:
    from plyfile import PlyData

    from nerfdiff_ns.export.splat_ply import field_names, read_splat_ply, write_splat_ply
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    cloud = _cloud()
    path = write_splat_ply(tmp_path / "splat.ply", cloud, sh_degree=3)
    ply = PlyData.read(str(path))
    names = [p.name for p in ply["vertex"].properties]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == expected == field_names(3)
    assert all(dt == "<f4" for _, dt in ply["vertex"].data.dtype.descr)  # float32 little-endian
    back = read_splat_ply(path)
    for key in ("means", "log_scales", "quats", "logit_opacities", "sh_dc"):
        assert torch.equal(getattr(back, key), getattr(cloud, key).float()), key
    assert back.sh_rest is not None and back.sh_rest.shape == (7, 15, 3) and float(back.sh_rest.abs().max()) == 0.0
    assert back.meta == {"image_size": [32, 32]}
    # byte-identical vertex data to nerfstudio's own writer given the same columns
    cols = OrderedDict((name, np.asarray(ply["vertex"][name], np.float32)) for name in names)
    ns_path = tmp_path / "ns.ply"
    ExportGaussianSplat.write_ply(str(ns_path), 7, cols)
    ours, theirs = path.read_bytes(), ns_path.read_bytes()
    end = b"end_header\n"
    assert ours.split(end)[1] == theirs.split(end)[1]
    strip = lambda b: [l for l in b.split(end)[0].split(b"\n") if not l.startswith(b"comment")]  # noqa: E731
    assert strip(ours) == strip(theirs)
    # degree 0: no f_rest at all (what splatfacto with sh_degree 0 writes)
    assert [p.name for p in PlyData.read(str(write_splat_ply(tmp_path / "d0.ply", cloud, 0)))["vertex"].properties] == field_names(0)


def test_ply_bad_input(tmp_path: Path) -> None:
    from nerfdiff_ns.export.splat_ply import read_splat_ply, write_splat_ply

    with pytest.raises(ExportError, match="not found"):
        read_splat_ply(tmp_path / "none.ply")
    (tmp_path / "text.ply").write_text("hello")
    with pytest.raises(ExportError, match="not a PLY"):
        read_splat_ply(tmp_path / "text.ply")
    import trimesh

    trimesh.PointCloud(np.random.rand(5, 3)).export(tmp_path / "points.ply")
    with pytest.raises(ExportError, match="3DGS fields|float"):
        read_splat_ply(tmp_path / "points.ply")
    with pytest.raises(ExportError, match=r"\.ply"):
        write_splat_ply(tmp_path / "splat.txt", _cloud())


# ---- exports of a real run -------------------------------------------------------------------
def test_mesh_export(run, run_config: Path, tmp_path: Path) -> None:
    import trimesh

    from nerfdiff_ns.export.cli import main
    from nerfdiff_ns.export.mesh import Z_UP_TO_Y_UP, mask_iou, render_mesh

    summary = main(["mesh", "--load-config", str(run_config), "--output-path", str(tmp_path / "object.ply"), "--device", "cpu"])
    assert summary["vertices"] > 100 and summary["faces"] > 100
    mesh = trimesh.load(tmp_path / "object.ply", process=False)
    assert len(mesh.vertices) == summary["vertices"] and len(mesh.faces) == summary["faces"]
    vc = np.asarray(mesh.visual.vertex_colors)
    assert vc.shape == (len(mesh.vertices), 4) and vc[:, :3].std() > 1.0  # real colours, not one default colour
    assert float(np.linalg.norm(mesh.vertices, axis=1).max()) <= run.radius + 1e-5
    assert mesh.is_watertight and mesh.volume > 0  # closed, normals outward (standard tools rely on both)
    h, w = run.image_size
    nerf = run.nerf.render_image(run.triplane, run.source, run.source_c2w[None], run.intrinsics[None], h, w)
    _, mask = render_mesh(mesh, run.source_c2w, run.intrinsics, h, w)
    iou = mask_iou(mask, nerf["accumulation"][0, ..., 0].numpy() > 0.5)
    # measured 0.996 on this run (calibrated level 1.39; the 5-view calibration mean is 0.90); 0.85 leaves a margin
    assert iou > 0.85, iou
    for suffix in (".glb", ".obj"):
        out = tmp_path / f"object{suffix}"
        main(["mesh", "--load-config", str(run_config), "--output-path", str(out), "--resolution", "48",
              "--density-threshold", str(summary["density_threshold"]), "--device", "cpu"])
        loaded = trimesh.load(out, force="mesh", process=False)
        assert len(loaded.faces) > 100 and loaded.is_watertight and loaded.volume > 0
        if suffix == ".glb":  # written +Y up (glTF): turn back to the run's +Z up
            loaded.apply_transform(np.linalg.inv(Z_UP_TO_Y_UP))
        coarse = trimesh.load(tmp_path / "object.ply", process=False)
        assert np.allclose(loaded.bounds, coarse.bounds, atol=0.1), suffix  # same object, same frame (48 vs 64 grid)
        vis = loaded.visual
        colours = vis.vertex_colors if vis.kind == "vertex" else vis.to_color().vertex_colors
        assert np.asarray(colours)[:, :3].std() > 1.0, suffix


def test_gaussian_export_matches_nerf_at_held_out_views(run, run_config: Path, tmp_path: Path) -> None:
    from nerfdiff_ns.export.cli import main
    from nerfdiff_ns.export.splat_ply import field_names, read_splat_ply

    splat = tmp_path / "splat.ply"
    video = tmp_path / "orbit.mp4"
    summary = main(["gaussians", "--load-config", str(run_config), "--output-path", str(splat), "--device", "cpu",
                    "--steps", "40", "--max-gaussians", "1500", "--num-views", "16", "--num-holdout-views", "4",
                    "--views-per-step", "2", "--no-progress", "--video", str(video), "--video-seconds", "0.5"])
    cloud = read_splat_ply(splat)
    assert len(cloud) == summary["gaussians"] > 100
    from plyfile import PlyData

    assert [p.name for p in PlyData.read(str(splat))["vertex"].properties] == field_names(3)
    # refinement improves on the initialisation and matches the NeRF at held-out views; measured with these
    # settings (seeds 0, 1, 2): init 17.2-17.7 dB -> 32.1 / 29.3 / 28.3 dB. Defaults on the NGD run: README
    assert summary["holdout_psnr_db"] > summary["holdout_psnr_init_db"]
    assert summary["holdout_psnr_db"] > 24.0, summary
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    assert tuple(meta["size"]) == (32, 32) and sum(1 for _ in reader) == 12


def test_viewer_renders_the_input_view(run, tmp_path: Path) -> None:
    from scipy.spatial.transform import Rotation

    from nerfdiff_ns.export.gaussians import init_from_field, render_cloud
    from nerfdiff_ns.export.splat_ply import read_splat_ply, write_splat_ply
    from nerfdiff_ns.export.view_splat import GL_FROM_CV, SplatViewer

    cloud = init_from_field(run, 24, max_gaussians=800)
    cloud.meta = {"image_size": [32, 32], "fov_degrees": 45.0, "distance": 2.7, "background": [1, 1, 1],
                  "input_c2w": run.source_c2w.tolist()}
    cloud = read_splat_ply(write_splat_ply(tmp_path / "s.ply", cloud, 0))
    viewer = SplatViewer(cloud)
    cv = run.source_c2w @ GL_FROM_CV  # what a viser client reports: OpenCV axes
    x, y, z, w = Rotation.from_matrix(cv[:3, :3].numpy()).as_quat()
    h = 32
    fov = 2 * math.atan(0.5 * h / float(run.intrinsics[1]))
    img = viewer.render(np.array([w, x, y, z]), cv[:3, 3].numpy(), fov, 1.0)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    ref, _ = render_cloud(cloud, run.source_c2w[None], run.intrinsics, 32, 32, run.background, "torch")
    assert np.abs(img.astype(np.float32) / 255 - ref[0].numpy()).max() < 0.02
    # the server starts, serves and stops
    import threading
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    answered: list[int] = []

    def fetch_page() -> None:  # what a browser does first: load the viewer's page while it serves
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1.0) as response:
                    answered.append(response.status)
                    return
            except OSError:
                time.sleep(0.02)

    client = threading.Thread(target=fetch_page, daemon=True)
    client.start()
    viewer.serve("127.0.0.1", port, max_seconds=3.0)  # returns: max_seconds ends it
    client.join(timeout=10)
    assert answered == [200]
    with pytest.raises(OSError):  # stopped: the page is no longer served
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2.0)


def test_bad_inputs(run, run_config: Path, tmp_path: Path) -> None:
    import yaml

    from nerfdiff_ns.export.gaussians import init_from_field
    from nerfdiff_ns.export.load import load_run
    from nerfdiff_ns.export.mesh import extract_mesh

    with pytest.raises(ExportError, match="config not found"):
        load_run(tmp_path / "missing" / "config.yml")
    other = yaml.load(run_config.read_text(), Loader=yaml.Loader)
    other.method_name = "nerfacto"
    (tmp_path / "other.yml").write_text(yaml.dump(other))
    with pytest.raises(ExportError, match="nerfacto.*not of nerfdiff"):
        load_run(tmp_path / "other.yml")
    (tmp_path / "no_ckpt").mkdir()
    (tmp_path / "no_ckpt" / "config.yml").write_text(run_config.read_text())
    with pytest.raises(ExportError, match="no step-.*ckpt"):
        load_run(tmp_path / "no_ckpt" / "config.yml")
    from nerfdiff_ns.export.cli import main

    with pytest.raises(ExportError, match="not a .ply path"):
        main(["gaussians", "--load-config", str(run_config), "--output-path", str(tmp_path / "splat.splat")])
    with pytest.raises(ExportError, match="has suffix"):
        main(["mesh", "--load-config", str(run_config), "--output-path", str(tmp_path / "mesh.stl")])
    with pytest.raises(ExportError, match="mesh format"):
        from nerfdiff_ns.export.mesh import save_mesh

        save_mesh(None, tmp_path / "mesh.stl")
    # an empty density field (a diverged run): the decoder's density output pinned far below zero
    last = [m for m in run.nerf.field.modules() if isinstance(m, torch.nn.Linear)][-1]
    saved_w, saved_b = last.weight.detach().clone(), last.bias.detach().clone()
    try:
        with torch.no_grad():
            last.weight[0].zero_()
            last.bias[0] = -60.0
        with pytest.raises(ExportError, match="never reaches the threshold"):
            extract_mesh(run, 24, 0.5)
        with pytest.raises(ExportError, match="density field is empty"):
            init_from_field(run, 24)
    finally:
        with torch.no_grad():
            last.weight.copy_(saved_w)
            last.bias.copy_(saved_b)
