"""NeRF-guided distillation (NGD, DESIGN §1.3); the CDM-only and SDS baselines are in ``baselines.py``.

NGD keeps, for every virtual view pi, a current target image I^pi (an x0 estimate) and a noise
eps^pi. One diffusion step at timestep t, with R^pi the NeRF's current rendering of pi:

    z    = alpha_t I + sigma_t eps                      re-noise the current estimate
    eps^ = CDM(z, t | R, I_s)                            (classifier-free guidance optional)
    x0^  = (z - sigma_t eps^) / alpha_t                  (or alpha z - sigma v for v-prediction)
    I    = x0^ + w_t (R - x0^),  w_t = min(1, gamma sigma_t^2 / alpha_t^2)     guidance_form="x0"
    eps  = (z - alpha_t I) / sigma_t                     keep (I, eps) consistent with z

With gamma = 0 this is exactly deterministic DDIM (eta = 0): the next z = alpha' x0^ + sigma' eps^.

guidance_form="epsilon" is the paper's way of writing the guidance, a correction of the noise
prediction by a gamma (sigma_t / alpha_t)-scaled term (classifier-guidance style). Treat R as a
Gaussian observation of x0, log p(R | z_t) = -|R - x0^(z_t)|^2 / (2 tau^2), take
d x0^ / d z_t ~ 1 / alpha_t and apply classifier guidance eps~ = eps^ - sigma_t grad_z log p:

    eps~ = eps^ - gamma (sigma_t / alpha_t) (R - x0^),   gamma = 1 / tau^2
    I    = (z - sigma_t eps~) / alpha_t = x0^ + gamma sigma_t^2 / alpha_t^2 (R - x0^)
    eps  = eps~

i.e. the same pull toward R with the UNCLAMPED weight gamma sigma^2 / alpha^2: identical to the
x0 form while that weight is <= 1, and extrapolating past R (weight > 1) at high noise where the
x0 form stops at R. The x0 form is the project default.

guidance_form="paper" is the update exactly as the paper's Algorithm 1 writes it, per view:

    Z   = alpha_t I + sigma_t eps
    eps = eps_phi(Z, I_s) + gamma (sigma_t / alpha_t) (I - R)       I = the current target, before this step
    I   = (Z - sigma_t eps) / alpha_t  = x0^ + gamma sigma_t^2 / alpha_t^2 (R - I)

The correction is driven by the gap between the CURRENT target and the render, not by x0^ - R,
and its weight w = gamma sigma^2 / alpha^2 is not clamped. Consequences, tested in
tests/test_guidance.py: gamma = 0 is DDIM; when the CDM reproduces the target (x0^ = I) it equals
the epsilon form; when I = R (e.g. the first step, targets initialised to the renders) the
correction vanishes and I <- x0^. Viewed as a recursion on the gap e = I - R at a fixed render,
e' = (x0^ - R) - w e: for w > 1 the gap alternates in sign and grows, so at high noise with a
large gamma the paper form is only kept in range by `clip_x0` (or a gamma small enough that
w <= 1 over the trajectory).

Stochastic trajectories (`NGDTrajectories.renoise`, NGDConfig.eta): between two steps t > t' each
view's noise may be partly redrawn as DDIM does (Song et al. 2021, eq. 12), keeping the variance of z':

    s    = eta sqrt(sigma_t'^2 / sigma_t^2 (1 - alpha_t^2 / alpha_t'^2))
    eps' = (sqrt(sigma_t'^2 - s^2) eps + s xi) / sigma_t',   xi ~ N(0, I)

so z' = alpha_t' I + sigma_t' eps' is DDIM's x_t'. eta = 0 keeps eps (deterministic, Algorithm 1);
eta = 1 is the DDPM ancestral step.

Clamping: with `clip_x0=True` (default) x0^ is clamped to [-1, 1] (and eps^ re-derived from it) and
the final I is clamped too; eps always follows I. Exactness tests run with clip_x0=False.

All images are in [-1, 1] ([V, 3, H, W]); see `unet.to_diffusion_range`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .schedule import alpha_sigma, eps_from_prediction, eps_from_x0, standard_noise, x0_from_prediction
from .unet import ConditionalDiffusionModel, from_diffusion_range, resize_to

GUIDANCE_FORMS = ("x0", "epsilon", "paper")


def nerf_guidance_weight(
    alpha: Union[float, torch.Tensor], sigma: Union[float, torch.Tensor], gamma: Union[float, torch.Tensor]
) -> Union[float, torch.Tensor]:
    """w_t = min(1, gamma sigma^2 / alpha^2): strong pull to the NeRF at high noise, weak at low. gamma may be
    per view ([V, 1, 1, 1], NGDConfig.far_side_gamma)."""
    w = gamma * sigma**2 / alpha**2
    return w.clamp(max=1.0) if torch.is_tensor(w) else min(1.0, w)


def nerf_guided_update(
    z: torch.Tensor,
    x0_hat: torch.Tensor,
    eps_hat: torch.Tensor,
    render: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    gamma: Union[float, torch.Tensor],
    guidance_form: str = "x0",
    clip_x0: bool = False,
    current: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One NGD correction: (x0^, eps^) consistent with z -> new (target I, noise eps, weight).

    `eps_hat` must satisfy z = alpha x0_hat + sigma eps_hat. The new eps is written as eps^ minus a
    correction instead of (z - alpha I)/sigma; the two are equal, this one has no cancellation.
    `current` is the target I from before this step (z = alpha I + sigma eps_prev); only the
    "paper" form uses it, and requires it. Returned weight: the weight of the pull toward R actually
    applied ([B,1,1,1]; unclamped in the epsilon and paper forms).
    """
    delta = render - x0_hat
    if guidance_form == "paper":
        if current is None:
            raise ValueError("guidance_form='paper' needs `current`, the target I from before this step")
        weight = gamma * sigma**2 / alpha**2
        eps = eps_hat + gamma * (sigma / alpha) * (current - render)  # Algorithm 1, verbatim
        target = x0_hat + weight * (render - current)  # = (z - sigma eps) / alpha
    elif guidance_form == "x0":
        weight = nerf_guidance_weight(alpha, sigma, gamma)
        target = torch.lerp(x0_hat, render, weight)  # x0^ + w (R - x0^); exactly R when w = 1
        eps = eps_hat - (alpha / sigma) * weight * delta
    elif guidance_form == "epsilon":
        weight = gamma * sigma**2 / alpha**2
        eps = eps_hat - gamma * (sigma / alpha) * delta  # the paper's eps-space correction
        target = torch.lerp(x0_hat, render, weight)  # = (z - sigma eps) / alpha
    else:
        raise ValueError(f"guidance_form must be one of {GUIDANCE_FORMS}, got {guidance_form!r}")
    if clip_x0:
        clipped = target.clamp(-1.0, 1.0)
        eps = eps - (alpha / sigma) * (clipped - target)  # = (z - alpha clipped) / sigma
        target = clipped
    return target, eps, weight.expand(target.shape[0], 1, 1, 1)


def ddim_stochastic_share(
    alpha: torch.Tensor, sigma: torch.Tensor, alpha_next: torch.Tensor, sigma_next: torch.Tensor, eta: float
) -> torch.Tensor:
    """DDIM's s for a step t -> t' (t' less noisy): eta sqrt(sigma'^2 / sigma^2 (1 - alpha^2 / alpha'^2)).
    s <= sigma' for eta <= 1, so the kept share sqrt(sigma'^2 - s^2) is real."""
    return eta * torch.sqrt(((sigma_next**2 / sigma**2) * (1.0 - alpha**2 / alpha_next**2)).clamp(min=0.0))


@dataclass
class NGDStepInfo:
    """Diagnostics of one NGD step (for logs and the viewer)."""

    t: int
    w_t: float  # x0-space guidance weight applied at t
    mean_abs_x0_minus_render: float  # mean |x0^ - R| over views and pixels, [-1, 1] units
    x0: torch.Tensor  # the CDM's own estimate x0^ before guidance, [V, 3, H, W], [-1, 1]


def expand_views(x: Optional[torch.Tensor], views: int) -> Optional[torch.Tensor]:
    """A per-view input ([V, ...]) from one shared by all views ([1, ...]), or as given."""
    if x is None or x.shape[0] == views:
        return x
    if x.shape[0] == 1:
        return x.expand(views, *x.shape[1:])
    raise ValueError(f"expected a leading dimension of 1 or {views}, got {tuple(x.shape)}")


def cdm_prediction(
    model: ConditionalDiffusionModel,
    z: torch.Tensor,
    t: int,
    renders: torch.Tensor,
    source_image: torch.Tensor,
    relative_cameras: Optional[torch.Tensor],
    cfg_scale: float,
    chunk_size: Optional[int],
) -> torch.Tensor:
    """CFG prediction for all views, in chunks of `chunk_size` views (None = one batch), float32."""
    views = z.shape[0]
    chunk = chunk_size or views
    timesteps = torch.full((views,), int(t), dtype=torch.long, device=z.device)
    outs = []
    for s in range(0, views, chunk):
        sl = slice(s, s + chunk)
        cams = relative_cameras[sl] if relative_cameras is not None else None
        outs.append(
            model.predict_with_cfg(z[sl], timesteps[sl], renders[sl], source_image[sl], cams, cfg_scale).float()
        )
    return torch.cat(outs)


class NGDTrajectories:
    """The V reverse-diffusion trajectories of NGD, advanced in lock-step with NeRF finetuning.

    Usage (pipeline): `traj = NGDTrajectories(scheduler).init(renders, generator)`; then for each t
    in `ngd_timesteps(...)`: re-render the virtual views, `traj.step(model, t, renders, ...)`, and
    finetune the NeRF on `traj.targets` (or `traj.targets_01()`).
    """

    def __init__(
        self,
        scheduler: SchedulerMixin,
        clip_x0: bool = True,
        chunk_size: Optional[int] = None,
    ) -> None:
        self.scheduler = scheduler
        self.clip_x0 = clip_x0
        self.chunk_size = chunk_size
        self.targets: Optional[torch.Tensor] = None  # I^pi, [V, 3, H, W] in [-1, 1]
        self.noise: Optional[torch.Tensor] = None  # eps^pi, [V, 3, H, W]

    @property
    def resolution(self) -> Tuple[int, int]:
        """(H, W) of the targets = the CDM resolution used for z."""
        if self.targets is None:
            raise RuntimeError("call init() first")
        return tuple(self.targets.shape[-2:])  # type: ignore[return-value]

    def init(
        self,
        renders: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        resolution: Optional[Tuple[int, int]] = None,
    ) -> "NGDTrajectories":
        """I^pi <- render (resized to `resolution`, default: as given), eps^pi ~ N(0, I) from `generator`.

        Only the render's RGB channels start the targets (extra condition channels are not images)."""
        renders = renders[:, :3].detach().float()
        if resolution is not None:
            renders = resize_to(renders, tuple(resolution))
        self.targets = renders.clone()
        self.noise = standard_noise(renders, generator)
        return self

    @torch.no_grad()
    def renoise(self, t: int, t_next: int, eta: float, generator: Optional[torch.Generator] = None) -> None:
        """Redraw the stochastic share of every view's noise before the step at ``t_next`` (module docstring).

        Why: with eta = 0 each view keeps one noise draw for the whole trajectory; fresh noise lets later
        steps commit to detail of their own instead of following the first draw."""
        if self.noise is None:
            raise RuntimeError("call init() first")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        if t_next >= t:
            raise ValueError(f"renoise goes from t = {t} to a less noisy t_next, got {t_next}")
        if eta == 0.0 or t_next < 0:
            return
        alpha, sigma = alpha_sigma(self.scheduler, int(t), self.noise.device)
        alpha_next, sigma_next = alpha_sigma(self.scheduler, int(t_next), self.noise.device)
        s = ddim_stochastic_share(alpha, sigma, alpha_next, sigma_next, eta)
        fresh = standard_noise(self.noise, generator)
        self.noise = (torch.sqrt((sigma_next**2 - s**2).clamp(min=0.0)) * self.noise + s * fresh) / sigma_next

    def targets_01(self) -> torch.Tensor:
        """Current targets in the project's [0, 1] range, [V, 3, H, W]."""
        if self.targets is None:
            raise RuntimeError("call init() first")
        return from_diffusion_range(self.targets)

    @torch.no_grad()
    def step(
        self,
        model: ConditionalDiffusionModel,
        t: int,
        renders: torch.Tensor,
        source_image: torch.Tensor,
        relative_cameras: Optional[torch.Tensor] = None,
        gamma: Union[float, torch.Tensor] = 1.0,
        cfg_scale: float = 1.0,
        guidance_form: str = "x0",
    ) -> NGDStepInfo:
        """Advance every trajectory by one step at integer timestep `t` (see module docstring).

        renders [V,3+E,h,w] (resized to the targets' resolution; RGB, then the CDM's extra conditions),
        source_image [1 or V,3,h,w], relative_cameras [V,12] or None, all images in [-1, 1]. The RGB
        channels are the guidance target R. Updates `targets` and `noise`.
        """
        if self.targets is None or self.noise is None:
            raise RuntimeError("call init() first")
        if guidance_form not in GUIDANCE_FORMS:
            raise ValueError(f"guidance_form must be one of {GUIDANCE_FORMS}, got {guidance_form!r}")
        t = int(t)
        if not 0 <= t < self.scheduler.config.num_train_timesteps:
            raise ValueError(f"timestep {t} outside [0, {self.scheduler.config.num_train_timesteps})")
        views = self.targets.shape[0]
        device = self.targets.device
        renders = resize_to(renders.detach().float().to(device), self.resolution)
        source_image = expand_views(source_image.detach().to(device), views)
        relative_cameras = expand_views(relative_cameras, views)

        alpha, sigma = alpha_sigma(self.scheduler, t, device)
        z = alpha * self.targets + sigma * self.noise
        pred = cdm_prediction(model, z, t, renders, source_image, relative_cameras, cfg_scale, self.chunk_size)
        kind = model.config.prediction_type
        x0_hat = x0_from_prediction(self.scheduler, z, pred, t, kind)
        if self.clip_x0:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
            eps_hat = eps_from_x0(self.scheduler, z, x0_hat, t)
        else:
            eps_hat = eps_from_prediction(self.scheduler, z, pred, t, kind)
        image = renders[:, :3]
        self.targets, self.noise, weight = nerf_guided_update(
            z, x0_hat, eps_hat, image, alpha, sigma, gamma, guidance_form, self.clip_x0, current=self.targets
        )
        return NGDStepInfo(
            t=t,
            w_t=float(weight.flatten()[0]),
            mean_abs_x0_minus_render=float((x0_hat - image).abs().mean()),
            x0=x0_hat,
        )
