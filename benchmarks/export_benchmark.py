"""Mesh and 3D Gaussian export of one finished run: time, file size, fit quality, render fps, pictures.

What is measured
----------------
1. ``nerfdiff-export mesh`` (threshold calibration + marching cubes + vertex colours + writing)
   and ``nerfdiff-export gaussians`` (initialisation, NeRF target renders, refinement, writing):
   wall time after the run is loaded, and the size of each file (.glb / .ply / .obj, splat .ply).
2. Quality: the mesh's silhouette IoU against the NeRF's accumulation > 0.5 from the input view
   and from the held-out views; the Gaussians' PSNR against the NeRF's renders at held-out views.
3. Frames per second at the same resolution and camera (a held-out view; the run's resolution and 4x it): the NeRF's
   ``render_image`` against the Gaussian rasteriser (gsplat on CUDA, else the CPU fallback),
   ``warmup`` untimed frames, then the median of ``repeats`` timed frames.
4. Pictures (``--pictures-dir``): per view, NeRF render | mesh (ray-cast vertex colours) | splat,
   upscaled with nearest-neighbour for viewing.

Run ``python benchmarks/export_benchmark.py --help`` for the options.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from nerfdiff_ns.export.gaussians import FitConfig  # noqa: E402


@dataclass
class Args:
    load_config: Path
    """config.yml of a finished nerfdiff run."""
    output_dir: Path = Path("/tmp/nerfdiff-export-bench")
    """Where the exported files go."""
    output_json: Optional[Path] = None
    """Result JSON (default: benchmarks/results/export_<device>.json)."""
    splat_path: Optional[Path] = None
    """Measure this existing splat PLY instead of fitting one (no Gaussian export time then)."""
    pictures_dir: Optional[Path] = Path("benchmarks/results/export")
    """Where the comparison PNGs go (None: no pictures)."""
    device: str = "auto"
    """cuda, cpu or auto."""
    render_resolution: Optional[int] = None
    """Resolution of the quality comparison and pictures (default: the run's input resolution)."""
    warmup: int = 1
    """Untimed frames before timing each renderer."""
    repeats: int = 3
    """Timed frames per renderer (the median is reported)."""
    fps_resolutions: tuple[int, ...] = ()
    """Square resolutions of the fps comparison (default: the run's input resolution and 4x it)."""
    picture_scale: int = 4
    """Nearest-neighbour upscaling of the 32 px pictures."""
    fit: FitConfig = field(default_factory=FitConfig)
    """Settings of the Gaussian fit (as `nerfdiff-export gaussians`)."""


def _row(*images: np.ndarray, scale: int) -> np.ndarray:
    pad = np.ones((images[0].shape[0], 1, 3), np.float32)
    row = np.concatenate([x for im in images for x in (im, pad)][:-1], axis=1)
    return np.repeat(np.repeat(row, scale, 0), scale, 1)


def orbit_pictures(run, mesh, cloud, folder: Path, frames: int = 6, res: int = 64) -> None:
    """``orbit_nerf_vs_splat.png`` (input image + NeRF orbit over the splat's orbit, input elevation) and
    ``mesh_orbit.png`` (the mesh's vertex colours with headlight shading, 96 px, 20 degrees elevation)."""
    import trimesh
    from PIL import Image

    from nerfdiff_ns.data.cameras import azimuth_elevation, orbit_pose
    from nerfdiff_ns.export.view_splat import camera_defaults, orbit_frames, pinhole
    from nerfdiff_ns.nerf.rays import camera_rays, image_pixels

    meta = camera_defaults(cloud)
    az0, el0, d0 = azimuth_elevation(torch.tensor(meta["input_c2w"]))
    intr = pinhole(float(meta["fov_degrees"]), res, res)
    c2w = [orbit_pose(d0, az0 + 360.0 * i / frames, el0) for i in range(frames)]
    nerf = [run.nerf.render_image(run.triplane, run.source, c[None].to(run.triplane.device), intr[None].to(run.triplane.device),
                                  res, res)["rgb"][0].cpu().numpy() for c in c2w]
    splat = orbit_frames(cloud, frames, res)
    gt = run.model.input_image.cpu().numpy()
    gt = np.repeat(np.repeat(gt, max(1, res // gt.shape[0]), 0), max(1, res // gt.shape[1]), 1)[:res, :res]
    top, bottom = _row(gt, *nerf, scale=2), _row(np.ones_like(gt), *splat, scale=2)
    sheet = np.concatenate([top, np.ones((4, top.shape[1], 3), np.float32), bottom])
    Image.fromarray((np.clip(sheet, 0, 1) * 255).astype(np.uint8)).save(folder / "orbit_nerf_vs_splat.png")
    shaded, mesh_intr = [], pinhole(float(meta["fov_degrees"]), 96, 96)
    vc = mesh.visual.vertex_colors[:, :3] / 255.0
    for i in range(frames):
        cam = orbit_pose(d0, az0 + 360.0 * i / frames, 20.0)
        o, d = camera_rays(cam[None], mesh_intr[None], image_pixels(96, 96)[None])
        o, d = o[0].numpy().astype(np.float64), d[0].numpy().astype(np.float64)
        img = np.ones((96 * 96, 3))
        locs, ri, ti = mesh.ray.intersects_location(o, d, multiple_hits=False)
        if len(ri):
            bary = trimesh.triangles.points_to_barycentric(mesh.triangles[ti], locs)
            col = (vc[mesh.faces[ti]] * bary[..., None]).sum(1)
            img[ri] = np.clip(col * (0.35 + 0.65 * np.abs((mesh.face_normals[ti] * d[ri]).sum(-1)))[:, None], 0, 1)
        shaded.append(img.reshape(96, 96, 3).astype(np.float32))
    Image.fromarray((np.clip(_row(*shaded, scale=1), 0, 1) * 255).astype(np.uint8)).save(folder / "mesh_orbit.png")
    print(f"wrote {folder / 'orbit_nerf_vs_splat.png'} and {folder / 'mesh_orbit.png'}")


def main(args: Args) -> dict:
    from PIL import Image

    from nerfdiff_ns.export.density import default_grid_resolution
    from nerfdiff_ns.export.gaussians import fit_gaussians, fitting_cameras, render_cloud, render_nerf_views, scaled_intrinsics
    from nerfdiff_ns.export.load import load_run
    from nerfdiff_ns.export.mesh import calibrate_threshold, extract_mesh, mask_iou, render_mesh, save_mesh
    from nerfdiff_ns.export.splat_ply import read_splat_ply, write_splat_ply

    device = _common.resolve_device(args.device)
    facts = _common.machine_facts(device)
    _common.print_facts(facts)
    t0 = time.perf_counter()
    run = load_run(args.load_config, device)
    load_s = time.perf_counter() - t0
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    # 1. mesh
    t0 = time.perf_counter()
    res = default_grid_resolution(run.nerf.config)
    level, calib_iou = calibrate_threshold(run, res)
    mesh = extract_mesh(run, res, level)
    mesh_s = time.perf_counter() - t0
    sizes = {}
    for suffix in (".glb", ".ply", ".obj"):
        t1 = time.perf_counter()
        path = save_mesh(mesh, out / f"mesh{suffix}")
        sizes[f"mesh{suffix}"] = {"bytes": path.stat().st_size, "write_s": round(time.perf_counter() - t1, 3)}

    # 2. Gaussians
    fit = None
    if args.splat_path is None:
        t0 = time.perf_counter()
        fit = fit_gaussians(run, args.fit)
        splat = write_splat_ply(out / "splat.ply", fit.cloud, 3)
        gauss_s = time.perf_counter() - t0
    else:
        splat, gauss_s = args.splat_path, float("nan")
    sizes["splat.ply"] = {"bytes": splat.stat().st_size}
    cloud = read_splat_ply(splat)

    # 3. quality and fps on held-out views at one resolution
    res_px = args.render_resolution or run.image_size[1]
    intr, h, w = scaled_intrinsics(run, res_px)
    _, hold_c2w = fitting_cameras(run, args.fit.num_views, args.fit.num_holdout_views, args.fit.seed)
    cams = torch.cat([run.source_c2w[None], hold_c2w])
    nerf_views = render_nerf_views(run, cams, intr, h, w)
    dev = run.triplane.device
    splat_rgb, _ = render_cloud(cloud.to(dev), cams.to(dev), intr.to(dev), h, w, run.background.to(dev), args.fit.rasterizer)
    splat_rgb = splat_rgb.cpu()
    mesh_imgs, ious = [], []
    for i in range(len(cams)):
        img, mask = render_mesh(mesh, cams[i], intr, h, w, tuple(run.background.tolist()))
        mesh_imgs.append(img)
        ious.append(mask_iou(mask, nerf_views.acc[i, ..., 0].numpy() > 0.5))
    psnrs = [float(-10 * torch.log10(((splat_rgb[i].clamp(0, 1) - nerf_views.rgb[i]) ** 2).mean())) for i in range(len(cams))]

    cam0 = cams[1:2].to(dev)
    means, quats, scales, opac, cols = (t.to(dev) for t in cloud.render_params())
    from nerfdiff_ns.export.rasterize import rasterize

    fps_rows = []
    for px in args.fps_resolutions or (res_px, 4 * res_px):
        k_intr, kh, kw = scaled_intrinsics(run, px)
        k_intr = k_intr.to(dev)
        with torch.no_grad():
            nerf_t = _common.timed_repeats(
                lambda: run.nerf.render_image(run.triplane, run.source, cam0, k_intr[None], kh, kw), args.warmup, args.repeats, device)
            splat_t = _common.timed_repeats(
                lambda: rasterize(means, quats, scales, opac, cols, cam0, k_intr, kw, kh, run.background.to(dev), args.fit.rasterizer),
                args.warmup, args.repeats, device)
        row = {"resolution": [kh, kw], "nerf_fps": round(1.0 / _common.median(nerf_t), 3),
               "gaussian_fps": round(1.0 / _common.median(splat_t), 3)}
        row["speedup"] = round(row["gaussian_fps"] / row["nerf_fps"], 2)
        fps_rows.append(row)
    fps = {"nerf_samples_per_ray": run.nerf.config.num_coarse_samples + run.nerf.config.num_fine_samples,
           "gaussians": len(cloud), "rasterizer": args.fit.rasterizer, "by_resolution": fps_rows}

    # 4. pictures
    if args.pictures_dir is not None:
        args.pictures_dir.mkdir(parents=True, exist_ok=True)
        rows = [_row(nerf_views.rgb[i].numpy(), mesh_imgs[i], splat_rgb[i].clamp(0, 1).numpy(), scale=args.picture_scale)
                for i in range(min(4, len(cams)))]
        sheet = np.concatenate([np.concatenate([r, np.ones((2, r.shape[1], 3), np.float32)]) for r in rows])
        name = args.pictures_dir / "nerf_mesh_splat.png"
        Image.fromarray((np.clip(sheet, 0, 1) * 255).astype(np.uint8)).save(name)
        print(f"wrote {name} (rows: input view, then held-out views; columns: NeRF | mesh | Gaussians)")
        orbit_pictures(run, mesh, cloud, args.pictures_dir)

    result = {
        "benchmark": "export",
        "machine": facts,
        "config": {"load_config": str(args.load_config), "fit": {k: v for k, v in vars(args.fit).items()}},
        "load_s": round(load_s, 2),
        "mesh": {"export_s": round(mesh_s, 2), "resolution": res, "density_threshold": round(level, 4),
                 "calibration_iou": round(calib_iou, 4), "vertices": len(mesh.vertices), "faces": len(mesh.faces),
                 "iou_input_view": round(ious[0], 4), "iou_held_out_mean": round(float(np.mean(ious[1:])), 4)},
        "gaussians": {"export_s": round(gauss_s, 2), "count": len(cloud), "splat_path": str(splat),
                      "initial": fit.num_initial if fit else None,
                      "holdout_psnr_init_db": round(fit.holdout_psnr_init, 2) if fit else None,
                      "holdout_psnr_db": round(float(np.mean(psnrs[1:])), 2) if fit is None else round(fit.holdout_psnr, 2),
                      "train_psnr_db": round(fit.train_psnr, 2) if fit else None, "psnr_input_view_db": round(psnrs[0], 2)},
        "files": sizes,
        "fps": fps,
    }
    _common.print_table("Export", ["what", "seconds", "count", "quality"], [
        ["mesh", result["mesh"]["export_s"], result["mesh"]["faces"], f"IoU input {ious[0]:.3f}, held-out {np.mean(ious[1:]):.3f}"],
        ["gaussians", result["gaussians"]["export_s"], len(cloud), f"held-out PSNR {result['gaussians']['holdout_psnr_db']:.2f} dB"
         + (f" (init {fit.holdout_psnr_init:.2f})" if fit else " (given --splat-path)")],
    ])
    _common.print_table("Files", ["file", "bytes"], [[k, v["bytes"]] for k, v in sizes.items()])
    _common.print_table("Render fps (one held-out view)", ["resolution", "NeRF fps", "Gaussian fps", "speed-up"],
                        [[f"{r['resolution'][0]}x{r['resolution'][1]}", r["nerf_fps"], r["gaussian_fps"], r["speedup"]] for r in fps_rows])
    path = args.output_json or _common.BENCH_DIR / "results" / f"export_{device.split(':')[0]}.json"
    _common.write_json(path, result)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
