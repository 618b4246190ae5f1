"""``nerfdiff-sample``: CDM-only novel views (the geometry-free baseline) written as PNGs.

Given an input image and target cameras, the bundle's NeRF renders each target view from the
input image alone; the frozen CDM then draws a full DDIM sample per view conditioned on that
render and the input image (no NeRF guidance, views sampled independently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch


@dataclass
class SampleConfig:
    """CDM-only novel views of one image."""

    image: Path
    """Input image (PNG/JPG; RGBA is composited on the bundle's background)."""
    output_dir: Path = Path("outputs/cdm-samples")
    """Where the PNGs go: view_XX.png (CDM sample) and render_XX.png (its NeRF condition)."""
    bundle: Optional[Path] = None
    """Pretrained bundle (default: the shipped tiny bundle)."""
    camera_file: Optional[Path] = None
    """Input camera JSON as for `ns-train ... nerfdiff-image --camera-file` (default: the bundle's cameras)."""
    num_views: int = 8
    """Target cameras on an orbit around the object (same distance and field of view as the input)."""
    azimuth_spread_degrees: float = 360.0
    """Azimuth range of the target cameras, centred on the input view."""
    elevation_degrees: Optional[tuple[float, float]] = None
    """Elevation range of the target cameras (default: the bundle's training range)."""
    num_steps: int = 50
    """DDIM steps per sample."""
    cfg_scale: float = 1.0
    """Classifier-free guidance scale (1 = off)."""
    use_ema: bool = True
    """Use the bundle's EMA weights when it has them."""
    seed: int = 0
    """Seed of the sampling noise."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""


def check_sample_config(cfg: SampleConfig) -> None:
    """Bad flags and a missing image fail before the bundle loads, naming this command's flags."""
    from nerfdiff_ns.data.dataparsers import check_image_path
    from nerfdiff_ns.errors import FlagError

    if cfg.num_views < 1:
        raise FlagError(f"--num-views {cfg.num_views}: needs at least 1 target camera")
    if cfg.num_steps < 1:
        raise FlagError(f"--num-steps {cfg.num_steps}: needs at least 1 DDIM step (50 is the default)")
    if cfg.cfg_scale < 0:
        raise FlagError(f"--cfg-scale {cfg.cfg_scale}: must be >= 0 (1 = off)")
    if not 0.0 < cfg.azimuth_spread_degrees <= 360.0:
        raise FlagError(f"--azimuth-spread-degrees {cfg.azimuth_spread_degrees}: must lie in (0, 360]")
    check_image_path(cfg.image, "--image")


def sample_views(cfg: SampleConfig) -> list[Path]:
    from nerfdiff_ns.cdm.conditions import cdm_condition_kinds, render_condition_views
    from nerfdiff_ns.bundle import load_bundle
    from nerfdiff_ns.data.cameras import virtual_cameras
    from nerfdiff_ns.data.dataparsers import SingleImageDataParserConfig, default_bundle_path
    from nerfdiff_ns.data.images import save_rgb
    from nerfdiff_ns.nerf.image_nerf import SourceView
    from nerfdiff_ns.ngd import NGDConfig, VirtualViewDiffusion

    check_sample_config(cfg)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    bundle_path = cfg.bundle or default_bundle_path()
    bundle = load_bundle(bundle_path)
    parser = SingleImageDataParserConfig(data=cfg.image, camera_file=cfg.camera_file, bundle=bundle_path).setup()
    meta = parser.get_dataparser_outputs("train").metadata
    image, c2w, intrinsics = meta["nerfdiff_input_image"], meta["nerfdiff_input_c2w"], meta["nerfdiff_input_intrinsics"]
    nerf = bundle.load_nerf(device).eval()
    cdm = bundle.load_cdm(device, ema=cfg.use_ema)
    scheduler = bundle.load_train_scheduler()
    elevations = cfg.elevation_degrees or bundle.config.cameras.elevation_range_degrees
    targets = virtual_cameras(c2w, cfg.num_views, cfg.azimuth_spread_degrees, tuple(elevations))
    size = int(cdm.config.sample_size)
    height = image.shape[0]
    fx, fy, _, _ = intrinsics.tolist()
    k = torch.tensor([[fx * size / height, fy * size / height, size / 2, size / 2]], device=device)
    with torch.no_grad():
        triplane = nerf.encode(image[None].to(device))
        source = SourceView(c2w[None].to(device), intrinsics[None].to(device), (image.shape[0], image.shape[1]))
        renders = render_condition_views(nerf, triplane, source, targets.to(device), k, size, cdm_condition_kinds(cdm))
        ngd = NGDConfig(num_virtual_views=cfg.num_views, cfg_scale=cfg.cfg_scale, use_ema=cfg.use_ema, seed=cfg.seed)
        diffusion = VirtualViewDiffusion(cdm, scheduler, ngd, image.to(device), c2w.to(device), targets)
        samples = diffusion.sample_independently(renders, num_steps=cfg.num_steps)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(len(targets)):
        written.append(save_rgb(cfg.output_dir / f"view_{i:02d}.png", samples[i].cpu()))
        save_rgb(cfg.output_dir / f"render_{i:02d}.png", renders[i, ..., :3].cpu())
    (cfg.output_dir / "cameras.json").write_text(json.dumps({
        "camera_to_world": targets.tolist(), "intrinsics": k[0].tolist(), "height": size, "width": size,
        "note": "nerfstudio world (object at the origin, +Z up), OpenGL camera axes",
    }, indent=2))
    return written


def entrypoint() -> None:
    import tyro

    paths = sample_views(tyro.cli(SampleConfig, description=__doc__))
    print(f"[nerfdiff] wrote {len(paths)} CDM samples to {paths[0].parent}")


if __name__ == "__main__":
    entrypoint()
