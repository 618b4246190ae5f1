"""The baselines NGD is compared with (DESIGN §5): the CDM sampled alone, and score distillation (SDS).

Both use the CDM's prediction over views as NGD does (``guidance.cdm_prediction``); neither has a NeRF in its
diffusion loop. Images are [V, 3, H, W] in [-1, 1].
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .guidance import cdm_prediction, expand_views
from .schedule import alpha_sigma, ddim_step, eps_from_prediction, ngd_timesteps, noisy_from_x0, standard_noise
from .unet import ConditionalDiffusionModel, resize_to

__all__ = ["sample_cdm", "sds_gradient", "sds_loss"]


@torch.no_grad()
def sample_cdm(
    model: ConditionalDiffusionModel,
    scheduler: SchedulerMixin,
    renders: torch.Tensor,
    source_image: torch.Tensor,
    relative_cameras: Optional[torch.Tensor] = None,
    num_steps: int = 50,
    cfg_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
    t_start: Optional[float] = None,
    clip_x0: bool = True,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """CDM-only baseline: deterministic DDIM (eta = 0) per view, no NeRF guidance -> [V,3,H,W] in [-1,1].

    From pure noise at t = T-1 (`t_start=None`), or SDEdit-style from the render noised to
    `t_start` (a fraction of T-1, as in `ngd_timesteps`). Steps: `ngd_timesteps(num_steps, t_max, 0)`,
    each step going straight to the next listed timestep and finally to the clean end.
    The output has the resolution of `renders` ([V,3+E,h,w]: RGB, then the CDM's extra conditions).
    """
    renders = renders.detach().float()
    image = renders[:, :3]
    views = renders.shape[0]
    source_image = expand_views(source_image.detach(), views)
    relative_cameras = expand_views(relative_cameras, views)
    t_max = 1.0 if t_start is None else float(t_start)
    timesteps = ngd_timesteps(num_steps, t_max, 0.0, scheduler.config.num_train_timesteps).tolist()
    noise = standard_noise(image, generator)
    z = noise if t_start is None else noisy_from_x0(scheduler, image, noise, timesteps[0])
    kind = model.config.prediction_type
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        pred = cdm_prediction(model, z, t, renders, source_image, relative_cameras, cfg_scale, chunk_size)
        z, _ = ddim_step(scheduler, z, pred, t, t_prev, kind, clip_x0)
    return z


@torch.no_grad()
def sds_gradient(
    model: ConditionalDiffusionModel,
    scheduler: SchedulerMixin,
    images: torch.Tensor,
    source_image: torch.Tensor,
    relative_cameras: Optional[torch.Tensor] = None,
    renders: Optional[torch.Tensor] = None,
    cfg_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
    t_range: Tuple[float, float] = (0.02, 0.98),
    timesteps: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    weighting: str = "sigma2",
) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Score-distillation gradient on images: g = w(t) (eps^(z_t, t | R, I_s) - eps), z_t = alpha x + sigma eps.

    `images` [V,3,H,W] in [-1,1] are the NeRF renders being optimised (read only here); the CDM's
    render condition R defaults to `images` (pass `renders` to differ). t ~ U[t_range] (fractions of
    T-1) per view unless `timesteps` is given. w(t): "sigma2" = sigma_t^2 = 1 - alphas_cumprod
    (DreamFusion) or "uniform" = 1. The UNet Jacobian is skipped, as in SDS; apply with `sds_loss`.
    """
    images = images.detach().float()
    views = images.shape[0]
    last = scheduler.config.num_train_timesteps - 1
    if timesteps is None:
        lo, hi = round(t_range[0] * last), round(t_range[1] * last)
        gen_device = generator.device if generator is not None else images.device
        timesteps = torch.randint(lo, hi + 1, (views,), generator=generator, device=gen_device)
    timesteps = timesteps.to(images.device).long()
    if noise is None:
        noise = standard_noise(images, generator)
    renders = images if renders is None else resize_to(renders.detach().float(), tuple(images.shape[-2:]))
    source_image = expand_views(source_image.detach(), views)
    relative_cameras = expand_views(relative_cameras, views)

    alpha, sigma = alpha_sigma(scheduler, timesteps, images.device)
    z = alpha * images + sigma * noise
    pred = model.predict_with_cfg(z, timesteps, renders, source_image, relative_cameras, cfg_scale).float()
    eps_hat = eps_from_prediction(scheduler, z, pred, timesteps, model.config.prediction_type)
    if weighting == "sigma2":
        w = sigma**2
    elif weighting == "uniform":
        w = torch.ones_like(sigma)
    else:
        raise ValueError(f"weighting must be 'sigma2' or 'uniform', got {weighting!r}")
    grad = w * (eps_hat - noise)
    return grad, {"timesteps": timesteps, "grad_norm": float(grad.norm() / views)}


def sds_loss(images: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Surrogate loss whose gradient w.r.t. `images` is `grad / V` (V = images.shape[0]).

    0.5 * sum((images - stopgrad(images - grad))^2) / V: backpropagate it into the NeRF.
    """
    target = (images - grad).detach()
    return 0.5 * F.mse_loss(images, target, reduction="sum") / images.shape[0]
