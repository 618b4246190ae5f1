"""3D Gaussians from the finetuned NeRF: initialised from its density field, refined against its renders.

Initialisation puts one Gaussian on every grid point of the visible part of the field (density
above a floor, minus the interior that opaque neighbours hide), coloured by the field, sized by
the grid spacing and as opaque as one grid cell of that density. Refinement renders the NeRF from
many views once and fits means, scales, rotations, opacities and colours to those images (and the
Gaussians' alpha to the NeRF's accumulation) with Adam; held-out views score it by PSNR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from nerfdiff_ns.data.cameras import azimuth_elevation, orbit_pose
from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.export import ExportError
from nerfdiff_ns.export.density import density_grid, query_field
from nerfdiff_ns.export.rasterize import Backend, rasterize
from nerfdiff_ns.export.splat_ply import SH_C0, GaussianCloud


@dataclass
class FitConfig:
    """Settings of the Gaussian initialisation and refinement."""

    init_resolution: Optional[int] = None
    """Grid points per axis for the initial Gaussians (default: 1.5x the bundle's triplane resolution)."""
    min_cell_alpha: float = 0.02
    """Keep grid points whose cell is at least this opaque, 1 - exp(-density * spacing)."""
    max_gaussians: int = 2500
    """Cap on the number of Gaussians (a random subset, enlarged to cover the same area, beyond it)."""
    num_views: int = 48
    """NeRF renders to fit (around the object, in the bundle's elevation range, plus the input view)."""
    num_holdout_views: int = 8
    """Further NeRF renders at other angles, only to score the fit."""
    resolution: Optional[int] = None
    """Render size of the fitting views (default: the run's input resolution)."""
    steps: int = 150
    """Adam steps."""
    views_per_step: int = 3
    """Views per Adam step."""
    lr_means: float = 1e-3
    """Adam learning rate of the Gaussians' centres (world units; the object sphere has radius 1)."""
    lr_scales: float = 1e-2
    """Adam learning rate of the log scales."""
    lr_quats: float = 1e-2
    """Adam learning rate of the rotation quaternions."""
    lr_opacities: float = 5e-2
    """Adam learning rate of the logit opacities."""
    lr_colors: float = 2e-2
    """Adam learning rate of the degree-0 SH colour coefficients."""
    alpha_weight: float = 0.1
    """Weight of the L1 loss between the Gaussians' alpha and the NeRF's accumulation."""
    seed: int = 0
    """Seed of the held-out cameras, the subsampling and the view order."""
    rasterizer: Backend = "auto"
    """auto (gsplat on CUDA, else the CPU fallback), gsplat, or torch."""
    progress: bool = True
    """Show a progress bar while refining."""

    def check(self) -> None:
        """Refuse settings that cannot fit (before the run loads); each error names its flag."""
        at_least = {"max-gaussians": (self.max_gaussians, 1), "num-views": (self.num_views, 1),
                    "num-holdout-views": (self.num_holdout_views, 1), "steps": (self.steps, 0),
                    "views-per-step": (self.views_per_step, 1), "init-resolution": (self.init_resolution, 2),
                    "resolution": (self.resolution, 1)}
        for flag, (value, low) in at_least.items():
            if value is not None and value < low:
                raise FlagError(f"--{flag} {value}: must be >= {low}")
        if not 0.0 < self.min_cell_alpha < 1.0:
            raise FlagError(f"--min-cell-alpha {self.min_cell_alpha}: an opacity, must lie in (0, 1)")
        for flag in ("lr_means", "lr_scales", "lr_quats", "lr_opacities", "lr_colors"):
            if getattr(self, flag) <= 0:
                raise FlagError(f"--{flag.replace('_', '-')} {getattr(self, flag)}: a learning rate, must be > 0")
        if self.alpha_weight < 0:
            raise FlagError(f"--alpha-weight {self.alpha_weight}: must be >= 0 (0 turns the alpha loss off)")


@dataclass
class ViewSet:
    """NeRF renders used as targets: ``c2w [V, 4, 4]``, ``rgb [V, H, W, 3]``, ``acc [V, H, W, 1]``."""

    c2w: torch.Tensor
    rgb: torch.Tensor
    acc: torch.Tensor
    intrinsics: torch.Tensor
    height: int
    width: int


@dataclass
class FitResult:
    cloud: GaussianCloud
    num_initial: int
    holdout_psnr_init: float
    holdout_psnr: float
    train_psnr: float
    losses: list[float] = field(default_factory=list)


def scaled_intrinsics(run, resolution: int) -> tuple[torch.Tensor, int, int]:
    """The input camera's intrinsics rescaled to a square ``resolution`` render."""
    h, w = run.image_size
    s = resolution / float(w)
    return run.intrinsics * torch.tensor([s, resolution / float(h), s, resolution / float(h)]), resolution, resolution


def init_from_field(run, resolution: int, min_cell_alpha: float = 0.02, max_gaussians: int = 2500,
                    seed: int = 0) -> GaussianCloud:
    """Gaussians on the visible grid points of the density field (see the module docstring)."""
    grid = density_grid(run, resolution)
    h = grid.spacing
    alpha = 1.0 - torch.exp(-grid.density * h)
    candidate = alpha >= min_cell_alpha
    opaque = (alpha >= 0.5).float()[None, None]
    # interior: all 26 neighbours opaque (a min-pool), so no ray reaches the point
    interior = (-F.max_pool3d(-opaque, 3, stride=1, padding=1))[0, 0] > 0.5
    keep = candidate & ~interior
    if not bool(keep.any()):
        raise ExportError(run.config_path, f"the density field is empty: no grid cell reaches opacity {min_cell_alpha} "
                          f"(max density {float(grid.density.max()):.3g})",
                          "lower --min-cell-alpha, or check that the run trained (its renders should show the object)")
    pts = grid.points()[keep]
    cell_alpha = alpha[keep]
    size = h * 0.6
    if pts.shape[0] > max_gaussians:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(pts.shape[0], generator=gen)[:max_gaussians]
        size = size * math.sqrt(pts.shape[0] / max_gaussians)  # the same surface with fewer, larger splats
        pts, cell_alpha = pts[idx], cell_alpha[idx]
    _, rgb = query_field(run, pts)
    n = pts.shape[0]
    opacity = cell_alpha.clamp(0.05, 0.9)
    return GaussianCloud(
        means=pts.clone(),
        log_scales=torch.full((n, 3), math.log(size)),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        logit_opacities=torch.logit(opacity),
        sh_dc=(rgb.clamp(0, 1) - 0.5) / SH_C0,
    )


def fitting_cameras(run, num_views: int, num_holdout: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fitting cameras (the input view first, then a golden-angle spiral) and held-out cameras (random)."""
    az0, _, dist = azimuth_elevation(run.source_c2w)
    lo, hi = run.bundle_config.cameras.elevation_range_degrees
    train = [run.source_c2w.float()]
    for i in range(1, num_views):
        train.append(orbit_pose(dist, az0 + 137.50776 * i, lo + (hi - lo) * ((i * 0.618034) % 1.0)))
    gen = torch.Generator().manual_seed(seed + 1)
    hold = [orbit_pose(dist, az0 + 360.0 * float(torch.rand(1, generator=gen)), lo + (hi - lo) * float(torch.rand(1, generator=gen)))
            for _ in range(num_holdout)]
    return torch.stack(train), torch.stack(hold) if hold else torch.zeros(0, 4, 4)


@torch.no_grad()
def render_nerf_views(run, c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> ViewSet:
    """NeRF renders ``rgb`` and ``accumulation`` of every camera (one at a time, on the run's device)."""
    rgbs, accs = [], []
    dev = run.triplane.device
    for cam in c2w:
        out = run.nerf.render_image(run.triplane, run.source, cam[None].to(dev), intrinsics[None].to(dev), height, width)
        rgbs.append(out["rgb"][0].float().cpu())
        accs.append(out["accumulation"][0].float().cpu())
    return ViewSet(c2w, torch.stack(rgbs), torch.stack(accs), intrinsics, height, width)


def render_cloud(cloud: GaussianCloud, c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int,
                 background: torch.Tensor, backend: Backend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``rgb [C, H, W, 3]``, ``alpha [C, H, W, 1]`` of a cloud from cameras ``c2w [C, 4, 4]``."""
    means, quats, scales, opac, cols = cloud.render_params()
    return rasterize(means, quats, scales, opac, cols, c2w, intrinsics, width, height, background, backend)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10.0 * torch.log10(F.mse_loss(a.clamp(0, 1), b.clamp(0, 1)).clamp(min=1e-10)))


@torch.no_grad()
def views_psnr(cloud: GaussianCloud, views: ViewSet, background: torch.Tensor, backend: Backend = "auto") -> float:
    """PSNR of the cloud's renders against the NeRF's over all views (pooled MSE)."""
    if views.c2w.shape[0] == 0:
        return float("nan")
    dev = cloud.means.device
    preds = [render_cloud(cloud, views.c2w[i : i + 1].to(dev), views.intrinsics.to(dev), views.height, views.width,
                          background.to(dev), backend)[0].cpu() for i in range(views.c2w.shape[0])]
    return psnr(torch.cat(preds), views.rgb)


def refine(cloud: GaussianCloud, views: ViewSet, background: torch.Tensor, cfg: FitConfig,
           device: torch.device = torch.device("cpu")) -> tuple[GaussianCloud, list[float]]:
    """Fit the cloud's parameters to the NeRF renders (Adam, L1 on rgb + weighted L1 on alpha)."""
    params = {
        "means": cloud.means.detach().clone().to(device).requires_grad_(True),
        "log_scales": cloud.log_scales.detach().clone().to(device).requires_grad_(True),
        "quats": cloud.quats.detach().clone().to(device).requires_grad_(True),
        "logit_opacities": cloud.logit_opacities.detach().clone().to(device).requires_grad_(True),
        "sh_dc": cloud.sh_dc.detach().clone().to(device).requires_grad_(True),
    }
    lrs = {"means": cfg.lr_means, "log_scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "logit_opacities": cfg.lr_opacities, "sh_dc": cfg.lr_colors}
    opt = torch.optim.Adam([{"params": [p], "lr": lrs[k], "name": k} for k, p in params.items()], eps=1e-15)
    gen = torch.Generator().manual_seed(cfg.seed)
    bg = background.to(device)
    target_rgb, target_acc = views.rgb.to(device), views.acc.to(device)
    intr = views.intrinsics.to(device)
    losses: list[float] = []
    from rich.progress import Progress

    with Progress(disable=not cfg.progress, transient=True) as bar:
        task = bar.add_task("refining Gaussians", total=cfg.steps)
        for _ in range(cfg.steps):
            idx = torch.randperm(views.c2w.shape[0], generator=gen)[: cfg.views_per_step]
            current = GaussianCloud(params["means"], params["log_scales"], params["quats"], params["logit_opacities"], params["sh_dc"])
            rgb, alpha = render_cloud(current, views.c2w[idx].to(device), intr, views.height, views.width, bg, cfg.rasterizer)
            loss = (rgb - target_rgb[idx]).abs().mean() + cfg.alpha_weight * (alpha - target_acc[idx]).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                params["log_scales"].clamp_(max=math.log(0.5))
            losses.append(loss.item())
            bar.advance(task)
    keep = torch.sigmoid(params["logit_opacities"].detach()) >= 1.0 / 255.0
    if not bool(keep.any()):
        keep[:] = True
    out = GaussianCloud(*(params[k].detach()[keep].cpu() for k in ("means", "log_scales", "quats", "logit_opacities", "sh_dc")))
    out.quats = F.normalize(out.quats, dim=-1)
    return out, losses


def fit_gaussians(run, cfg: FitConfig) -> FitResult:
    """Initialise from the field, render the NeRF targets, refine, and score on held-out views."""
    nerf_cfg = run.nerf.config
    init_res = cfg.init_resolution or max(24, int(1.5 * nerf_cfg.triplane_resolution))
    cloud = init_from_field(run, init_res, cfg.min_cell_alpha, cfg.max_gaussians, cfg.seed)
    res = cfg.resolution or run.image_size[1]
    intr, h, w = scaled_intrinsics(run, res)
    train_c2w, hold_c2w = fitting_cameras(run, cfg.num_views, cfg.num_holdout_views, cfg.seed)
    train = render_nerf_views(run, train_c2w, intr, h, w)
    hold = render_nerf_views(run, hold_c2w, intr, h, w)
    bg = run.background
    dev = run.triplane.device
    psnr_init = views_psnr(cloud.to(dev), hold, bg, cfg.rasterizer)
    refined, losses = refine(cloud, train, bg, cfg, dev)
    cam = run.bundle_config.cameras
    refined.meta = {"image_size": [h, w], "intrinsics": [round(float(v), 5) for v in intr],
                    "distance": round(float(run.source_c2w[:3, 3].norm()), 5), "fov_degrees": round(float(cam.fov_degrees), 4),
                    "background": [float(v) for v in bg], "input_c2w": [[round(float(v), 6) for v in row] for row in run.source_c2w]}
    return FitResult(refined, len(cloud), psnr_init, views_psnr(refined.to(dev), hold, bg, cfg.rasterizer),
                     views_psnr(refined.to(dev), train, bg, cfg.rasterizer), losses)


__all__ = ["FitConfig", "FitResult", "ViewSet", "fit_gaussians", "fitting_cameras", "init_from_field", "psnr",
           "refine", "render_cloud", "render_nerf_views", "scaled_intrinsics", "views_psnr"]
