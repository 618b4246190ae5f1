"""Noise-schedule helpers on diffusers schedulers, with the math written out.

Notation (variance-preserving diffusion, as in diffusers and the NerfDiff paper):

    z_t = alpha_t * x0 + sigma_t * eps,   alpha_t = sqrt(alphas_cumprod[t]),
                                          sigma_t = sqrt(1 - alphas_cumprod[t]),  alpha^2 + sigma^2 = 1
    v_t = alpha_t * eps - sigma_t * x0    (v-prediction target, = scheduler.get_velocity)

so  x0 = (z - sigma * eps) / alpha = alpha * z - sigma * v  and  eps = (z - alpha * x0) / sigma
= sigma * z + alpha * v. A negative timestep means "after the last step": alpha = 1, sigma = 0
(diffusers' DDIM `set_alpha_to_one=True`).

Images here are x0 in [-1, 1] (see `unet.to_diffusion_range`). All helpers take the scheduler
first because it owns `alphas_cumprod`; training uses `DDPMScheduler`, sampling `DDIMScheduler`,
both built from the same arguments so their `alphas_cumprod` are identical.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

TimestepLike = Union[int, torch.Tensor]
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _scheduler_kwargs(num_train_timesteps: int, beta_schedule: str, prediction_type: str) -> Dict[str, Any]:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    # clip_sample=False: clamping of x0 is our explicit option (guidance.py), never hidden here.
    return dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,
    )


def make_train_scheduler(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "squaredcos_cap_v2",
    prediction_type: str = "epsilon",
) -> DDPMScheduler:
    """DDPM scheduler for training (`add_noise`, `get_velocity`). Cosine betas suit small images."""
    return DDPMScheduler(**_scheduler_kwargs(num_train_timesteps, beta_schedule, prediction_type))


def make_sampling_scheduler(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "squaredcos_cap_v2",
    prediction_type: str = "epsilon",
    from_scheduler: Optional[SchedulerMixin] = None,
) -> DDIMScheduler:
    """DDIM scheduler with the same betas as the training one (or copied from `from_scheduler`)."""
    if from_scheduler is not None:
        cfg = from_scheduler.config
        num_train_timesteps, beta_schedule = cfg.num_train_timesteps, cfg.beta_schedule
        prediction_type = cfg.prediction_type
    return DDIMScheduler(
        **_scheduler_kwargs(num_train_timesteps, beta_schedule, prediction_type),
        set_alpha_to_one=True,
        timestep_spacing="leading",
    )


def alpha_sigma(scheduler: SchedulerMixin, t: TimestepLike, device: Optional[torch.device] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t), float32, shape [B, 1, 1, 1] (B = number of timesteps given).

    Negative t -> (1, 0), the clean end of a DDIM trajectory.
    """
    t = torch.as_tensor(t).reshape(-1)
    device = device if device is not None else t.device
    # diffusers moves alphas_cumprod to the data's device in add_noise; index a CPU copy instead.
    acp = scheduler.alphas_cumprod.detach().to(device="cpu", dtype=torch.float32)
    t_cpu = t.to("cpu").long()
    abar = torch.where(t_cpu >= 0, acp[t_cpu.clamp(min=0)], torch.ones((), dtype=torch.float32))
    abar = abar.to(device).view(-1, 1, 1, 1)
    return abar.sqrt(), (1.0 - abar).sqrt()


def _prediction_type(scheduler: SchedulerMixin, prediction_type: Optional[str]) -> str:
    return prediction_type if prediction_type is not None else scheduler.config.prediction_type


def x0_from_prediction(
    scheduler: SchedulerMixin,
    z: torch.Tensor,
    pred: torch.Tensor,
    t: TimestepLike,
    prediction_type: Optional[str] = None,
) -> torch.Tensor:
    """Denoised estimate x0 from a model output (eps: (z - sigma eps)/alpha; v: alpha z - sigma v)."""
    alpha, sigma = alpha_sigma(scheduler, t, z.device)
    kind = _prediction_type(scheduler, prediction_type)
    if kind == "epsilon":
        return (z - sigma * pred) / alpha
    if kind == "v_prediction":
        return alpha * z - sigma * pred
    if kind == "sample":
        return pred
    raise ValueError(f"unknown prediction_type {kind!r}")


def eps_from_prediction(
    scheduler: SchedulerMixin,
    z: torch.Tensor,
    pred: torch.Tensor,
    t: TimestepLike,
    prediction_type: Optional[str] = None,
) -> torch.Tensor:
    """Noise estimate from a model output (eps: itself; v: sigma z + alpha v)."""
    alpha, sigma = alpha_sigma(scheduler, t, z.device)
    kind = _prediction_type(scheduler, prediction_type)
    if kind == "epsilon":
        return pred
    if kind == "v_prediction":
        return sigma * z + alpha * pred
    if kind == "sample":
        return (z - alpha * pred) / sigma
    raise ValueError(f"unknown prediction_type {kind!r}")


def eps_from_x0(scheduler: SchedulerMixin, z: torch.Tensor, x0: torch.Tensor, t: TimestepLike) -> torch.Tensor:
    """The noise that makes `z` consistent with `x0` at t: (z - alpha x0) / sigma."""
    alpha, sigma = alpha_sigma(scheduler, t, z.device)
    return (z - alpha * x0) / sigma


def noisy_from_x0(scheduler: SchedulerMixin, x0: torch.Tensor, eps: torch.Tensor, t: TimestepLike) -> torch.Tensor:
    """z_t = alpha_t x0 + sigma_t eps (same as `scheduler.add_noise`, also for negative t)."""
    alpha, sigma = alpha_sigma(scheduler, t, x0.device)
    return alpha * x0 + sigma * eps


def ddim_step(
    scheduler: SchedulerMixin,
    z: torch.Tensor,
    pred: torch.Tensor,
    t: TimestepLike,
    t_prev: TimestepLike,
    prediction_type: Optional[str] = None,
    clip_x0: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Deterministic DDIM (eta = 0) from t to any earlier t_prev (negative = clean end).

    Returns (z_prev, x0) with z_prev = alpha_prev x0 + sigma_prev eps. With `clip_x0`, x0 is clamped
    to [-1, 1] and eps re-derived from it (diffusers' `use_clipped_model_output=True`).
    """
    x0 = x0_from_prediction(scheduler, z, pred, t, prediction_type)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = eps_from_x0(scheduler, z, x0, t)
    else:
        eps = eps_from_prediction(scheduler, z, pred, t, prediction_type)
    return noisy_from_x0(scheduler, x0, eps, t_prev), x0


def training_target(
    scheduler: SchedulerMixin,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """What the network regresses: eps, v (`scheduler.get_velocity`) or x0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def standard_noise(like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """float32 N(0, I) of ``like``'s shape on ``like``'s device, drawn on ``generator``'s device (so a CPU generator
    gives the same stream whatever the model's device)."""
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=torch.float32).to(like.device)


def diffusion_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    nerf_render: torch.Tensor,
    source_image: torch.Tensor,
    relative_camera: Optional[torch.Tensor],
    scheduler: SchedulerMixin,
    generator: Optional[torch.Generator] = None,
    timesteps: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    drop_conditions: Optional[torch.Tensor] = None,
    start: Optional[torch.Tensor] = None,
    sample_weights: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Denoising loss for one batch: MSE(model(z_t, t | render, source, camera), target).

    ``start`` (default x0) is the image that is noised, z_t = alpha_t start + sigma_t eps; the network
    still regresses toward x0, i.e. the noise target becomes eps* = (z_t - alpha_t x0) / sigma_t
    (render-start training: ``start`` = the NeRF's render, as NGD re-noises it). ``sample_weights``
    [B] weight the per-sample losses (mean of weighted losses).

    x0, nerf_render, source_image in [-1, 1], [B, 3, *, *]. Unless given, t ~ U{0..T-1}, eps ~ N(0, I)
    and the CFG drop mask ~ Bernoulli(model.config.condition_dropout_prob) come from `generator`
    (pass `drop_conditions=torch.zeros(B, dtype=bool)` to evaluate without drops). Gradients flow
    into `nerf_render` unless the caller detaches it (the joint-training switch of DESIGN §1.2).
    """
    batch = x0.shape[0]
    if timesteps is None:
        gen_device = generator.device if generator is not None else x0.device
        timesteps = torch.randint(
            0, scheduler.config.num_train_timesteps, (batch,), generator=generator, device=gen_device
        )
    timesteps = timesteps.to(x0.device).long()
    if noise is None:
        noise = standard_noise(x0, generator).to(x0)
    if drop_conditions is None:
        drop_conditions = model.sample_drop_mask(batch, generator)
    drop_conditions = drop_conditions.to(x0.device)

    prediction_type = model.config.prediction_type
    if start is None:
        noisy = scheduler.add_noise(x0, noise, timesteps)
        target = training_target(scheduler, x0, noise, timesteps, prediction_type)
    else:
        noisy = noisy_from_x0(scheduler, start, noise, timesteps)
        target = training_target(scheduler, x0, eps_from_x0(scheduler, noisy, x0, timesteps), timesteps, prediction_type)
    pred = model(noisy, timesteps, nerf_render, source_image, relative_camera, drop_conditions=drop_conditions)
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    loss = per_sample.mean() if sample_weights is None else (per_sample * sample_weights.to(per_sample)).mean()
    info = {
        "timesteps": timesteps.detach(),
        "drop_fraction": float(drop_conditions.float().mean()),
        "loss_per_sample": per_sample.detach(),
    }
    return loss, info


def min_snr_weight(scheduler: SchedulerMixin, t: torch.Tensor, snr_gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma loss weight of an epsilon loss, min(SNR_t, gamma) / SNR_t (Hang et al. 2023), [B].

    SNR = alpha^2 / sigma^2; (sigma / alpha)^2 times an epsilon MSE is the x0 MSE, so at low noise this
    weights x0 errors by gamma instead of letting eps* = (z - alpha x0) / sigma blow up as sigma -> 0.
    """
    alpha, sigma = alpha_sigma(scheduler, t)
    snr = (alpha**2 / sigma.clamp(min=1e-6) ** 2).view(-1)
    return snr.clamp(max=snr_gamma) / snr


def ngd_timesteps(
    num_steps: int,
    t_max: float = 0.98,
    t_min: float = 0.02,
    num_train_timesteps: int = 1000,
) -> torch.Tensor:
    """K descending integer timesteps, evenly spaced from t_max down to t_min.

    t_max, t_min are FRACTIONS in [0, 1] of the last training timestep (T - 1): 1.0 -> T-1 (pure
    noise end), 0.0 -> 0. Rounded to integers; repeated values (K > range) are removed, so the
    result can be shorter than K. Avoid t_max = 1 with cosine betas for x0 estimates: alpha ~ 0.
    """
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min <= t_max <= 1 (fractions of T-1), got t_min={t_min}, t_max={t_max}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    last = num_train_timesteps - 1
    ts = torch.linspace(t_max * last, t_min * last, num_steps, dtype=torch.float64).round().long()
    return torch.unique_consecutive(ts)
