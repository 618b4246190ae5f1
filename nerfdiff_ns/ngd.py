"""NeRF-guided distillation schedule (DESIGN §1.3), independent of nerfstudio.

``NGDSchedule`` says, for NeRF iteration ``i``, whether a diffusion step is due and at which
timestep; ``VirtualViewDiffusion`` owns the frozen CDM and the per-view trajectories and turns
renders of the virtual views into new targets. The nerfstudio pipeline and the evaluation CLI
both drive these two, so ``ns-train nerfdiff`` and the benchmark run the same algorithm.

Modes (ablations from the same code):
* ``ngd``             lock-step trajectories with NeRF guidance (the method);
* ``input-only``      finetune on the input view alone (control: does the CDM help at all?);
* ``sample-then-fit`` sample every virtual view fully with the CDM first, then fit (iterative-dataset-update-style baseline);
* ``sds``             score distillation on renders of the virtual views;
* ``feed-forward``    no finetuning at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

import torch

from nerfdiff_ns.errors import FlagError

NGDMode = Literal["ngd", "input-only", "sample-then-fit", "sds", "feed-forward"]


@dataclass
class NGDConfig:
    """Every knob of NeRF-guided distillation."""

    mode: NGDMode = "ngd"
    """ngd | input-only | sample-then-fit | sds | feed-forward."""
    num_virtual_views: int = 8
    """Virtual cameras around the input view."""
    azimuth_spread_degrees: float = 360.0
    """Azimuth range the virtual views cover, centred on the input view."""
    elevation_range_degrees: Optional[tuple[float, float]] = None
    """Elevation range of the virtual views (default: the bundle's training range)."""
    diffusion_steps: int = 25
    """K: reverse-diffusion steps, each followed by NeRF iterations."""
    nerf_iters_per_step: int = 10
    """N: NeRF iterations between diffusion steps."""
    final_iters: int = 200
    """NeRF iterations on the final targets after the last diffusion step."""
    t_max: float = 0.98
    """Start of the trajectory, as a fraction of the training timesteps."""
    t_min: float = 0.02
    """End of the trajectory, as a fraction of the training timesteps."""
    guidance_gamma: float = 1.0
    """gamma: NeRF guidance strength, w_t = min(1, gamma sigma_t^2 / alpha_t^2)."""
    far_side_gamma: Optional[float] = None
    """gamma of a virtual view opposite the input view (None: every view gets guidance_gamma). Views in between
    interpolate geometrically by s = (1 - cos angle) / 2: gamma_v = gamma (far_side_gamma / gamma)^s, the angle
    taken between the two cameras' positions around the object. A large value pins the unseen side to the
    NeRF's render, where the input view predicts little, and leaves the CDM its say next to the input view."""
    skip_pinned_steps: bool = True
    """Drop the diffusion steps (and their NeRF iterations) where the x0-form weight w_t is 1: there the
    new target is exactly the render and the trajectory's noise is unchanged, so the CDM's output is
    discarded and the NeRF would only fit its own render. The kept steps keep their timesteps. Only
    for guidance_form 'x0' (the other forms do not clamp w_t). With eta > 0 the dropped steps would also have
    redrawn noise; the kept ones then form a coarser stochastic DDIM schedule, one redraw per kept step."""
    guidance_form: Literal["x0", "epsilon", "paper"] = "x0"
    """'x0': I = x0^ + w (R - x0^), w = min(1, gamma sigma^2/alpha^2) (the project's form); 'epsilon': the same
    pull with w unclamped, written as an eps correction; 'paper': Algorithm 1 verbatim, eps = eps_phi +
    gamma (sigma/alpha)(I - R) with I the target before the step (unclamped weight; see cdm/guidance.py)."""
    cfg_scale: float = 1.0
    """Classifier-free guidance scale of the CDM (1 = off)."""
    eta: float = 0.0
    """DDIM stochasticity between diffusion steps: 0 keeps each view's noise for the whole trajectory (Algorithm 1,
    deterministic); 1 redraws its ancestral (DDPM) share before every step; in between, DDIM's eta. Only NGD's
    trajectories: the cdm-only baseline samples with deterministic DDIM, and SDS draws fresh noise anyway."""
    use_ema: bool = True
    """Use the bundle's EMA weights of the CDM."""
    seed: int = 0
    """Seed of the trajectories' noise."""

    def total_iters(self, num_steps: Optional[int] = None) -> int:
        """NeRF iterations of the whole schedule: K' * N + final, with K' the number of diffusion steps
        actually run (``num_steps``, see ``ngd_step_timesteps``; default K). Every finetuning mode gets
        the same count, so the ablations are compared with NGD at an equal NeRF budget."""
        if self.mode == "feed-forward":
            return 0
        steps = self.diffusion_steps if num_steps is None else num_steps
        return steps * self.nerf_iters_per_step + self.final_iters


def check_ngd_config(config: NGDConfig, prefix: str = "--pipeline.ngd.") -> None:
    """Refuse NGD settings that cannot run or silently mean something else (a negative gamma unpins every step),
    before the bundle and the CDM load; ``prefix`` is how the calling command spells the group's flags."""
    def bad(flag: str, value: object, rule: str) -> FlagError:
        return FlagError(f"{prefix}{flag} {value}: {rule}")

    for flag, value in (("num-virtual-views", config.num_virtual_views), ("diffusion-steps", config.diffusion_steps)):
        if value < 1:
            raise bad(flag, value, "needs at least 1")
    for flag, value in (("nerf-iters-per-step", config.nerf_iters_per_step), ("final-iters", config.final_iters)):
        if value < 0:
            raise bad(flag, value, "is a number of NeRF iterations, >= 0")
    if not 0.0 <= config.t_min <= config.t_max <= 1.0:
        raise FlagError(f"{prefix}t-min {config.t_min} and {prefix}t-max {config.t_max}: need 0 <= t-min <= t-max <= 1 "
                        "(fractions of the training timesteps)")
    if not 0.0 < config.azimuth_spread_degrees <= 360.0:
        raise bad("azimuth-spread-degrees", config.azimuth_spread_degrees, "must lie in (0, 360]")
    if config.guidance_gamma < 0:
        raise bad("guidance-gamma", config.guidance_gamma, "must be >= 0 (0 = no NeRF guidance, 8 = the default pull)")
    if config.far_side_gamma is not None and (config.far_side_gamma <= 0 or config.guidance_gamma <= 0):
        raise FlagError(f"{prefix}far-side-gamma {config.far_side_gamma} with {prefix}guidance-gamma "
                        f"{config.guidance_gamma}: both must be > 0 to interpolate between them; leave far-side-gamma "
                        "unset for one gamma everywhere")
    if config.cfg_scale < 0:
        raise bad("cfg-scale", config.cfg_scale, "must be >= 0 (1 = off)")
    if not 0.0 <= config.eta <= 1.0:
        raise bad("eta", config.eta, "must lie in [0, 1] (0 = deterministic trajectories, 1 = DDPM ancestral steps)")


def ngd_step_timesteps(config: NGDConfig, scheduler) -> torch.Tensor:
    """The timesteps of the diffusion steps NGD runs: K evenly spaced from t_max to t_min
    (``ngd_timesteps``), less the pinned ones when ``skip_pinned_steps`` (x0 form).

    Why skipping is exact for the trajectories: with w_t = 1 the x0 form sets I = R and
    eps = (z - alpha_t R) / sigma_t = eps_prev + alpha_t (R_prev - R) / sigma_t, which is eps_prev while
    the NeRF holds still. The last step is always kept, so a schedule never ends up empty.
    """
    from nerfdiff_ns.cdm.guidance import nerf_guidance_weight
    from nerfdiff_ns.cdm.schedule import alpha_sigma, ngd_timesteps

    timesteps = ngd_timesteps(config.diffusion_steps, config.t_max, config.t_min, scheduler.config.num_train_timesteps)
    if not config.skip_pinned_steps or config.guidance_form != "x0":
        return timesteps
    alpha, sigma = alpha_sigma(scheduler, timesteps)
    # a step is pinned only when every view is: the smallest per-view gamma decides
    gamma = config.guidance_gamma if config.far_side_gamma is None else min(config.guidance_gamma, config.far_side_gamma)
    weights = nerf_guidance_weight(alpha.view(-1), sigma.view(-1), gamma)
    keep = weights < 1.0
    keep[-1] = True
    return timesteps[keep]


def view_farness(source_c2w: torch.Tensor, virtual_c2w: torch.Tensor) -> torch.Tensor:
    """(1 - cos angle) / 2 per virtual view, [V, 1, 1, 1]: 0 beside the input camera, 1 opposite it (the angle
    between the cameras' positions around the object)."""
    source = torch.nn.functional.normalize(source_c2w[:3, 3].float().cpu(), dim=0)
    virtual = torch.nn.functional.normalize(virtual_c2w[:, :3, 3].float().cpu(), dim=1)
    return ((1.0 - (virtual @ source).clamp(-1.0, 1.0)) / 2.0).view(-1, 1, 1, 1)


def view_gammas(gamma: float, far_side_gamma: Optional[float], farness: torch.Tensor) -> Union[float, torch.Tensor]:
    """NeRF guidance strength per view: gamma (far_side_gamma / gamma)^farness, geometric between the two;
    plain gamma for every view without far_side_gamma."""
    if far_side_gamma is None:
        return gamma
    if far_side_gamma <= 0 or gamma <= 0:
        raise ValueError(f"far_side_gamma ({far_side_gamma}) and guidance_gamma ({gamma}) must be > 0 to interpolate "
                         "between them; leave far_side_gamma unset for one gamma everywhere")
    return gamma * (far_side_gamma / gamma) ** farness


class VirtualViewDiffusion:
    """Frozen CDM + one reverse-diffusion trajectory per virtual view."""

    def __init__(self, cdm, scheduler, config: NGDConfig, source_image01: torch.Tensor, source_c2w: torch.Tensor,
                 virtual_c2w: torch.Tensor) -> None:
        from nerfdiff_ns.cdm.conditions import cdm_condition_kinds
        from nerfdiff_ns.cdm.guidance import NGDTrajectories
        from nerfdiff_ns.cdm.unet import relative_camera

        self.cdm = cdm
        self.scheduler = scheduler
        self.config = config
        device = next(cdm.parameters()).device
        self.device = device
        size = int(cdm.config.sample_size)
        self.resolution = (size, size)
        from nerfdiff_ns.cdm.unet import resize_to, to_diffusion_range

        self.source = to_diffusion_range(resize_to(source_image01.permute(2, 0, 1)[None].float().to(device), self.resolution))
        self.relative = None
        if getattr(cdm.config, "camera_embedding_dim", 0) > 0:
            self.relative = relative_camera(source_c2w[None].expand(virtual_c2w.shape[0], 4, 4).to(device), virtual_c2w.to(device))
        self.farness = view_farness(source_c2w, virtual_c2w).to(device)
        view_gammas(config.guidance_gamma, config.far_side_gamma, self.farness)  # a bad far_side_gamma fails here, not mid-run
        self.timesteps = ngd_step_timesteps(config, scheduler)
        self.trajectories = NGDTrajectories(scheduler)
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.step_index = 0
        self.last_info = None
        # The extra NeRF-rendered channels this CDM expects after the RGB render (cdm.conditions)
        self.condition_kinds: tuple[str, ...] = cdm_condition_kinds(cdm)

    def _cond(self, renders01: torch.Tensor) -> torch.Tensor:
        """[V, H, W, 3 + E] in [0, 1] (RGB, extra conditions) -> [V, 3 + E, h, w] in [-1, 1] at CDM resolution."""
        from nerfdiff_ns.cdm.unet import resize_to, to_diffusion_range

        return to_diffusion_range(resize_to(renders01.permute(0, 3, 1, 2).float().to(self.device), self.resolution))

    def start(self, renders01: torch.Tensor) -> torch.Tensor:
        self.trajectories.init(self._cond(renders01).cpu(), self.generator)
        self.trajectories.targets = self.trajectories.targets.to(self.device)
        self.trajectories.noise = self.trajectories.noise.to(self.device)
        return self.targets01()

    @property
    def done(self) -> bool:
        return self.step_index >= len(self.timesteps)

    @torch.no_grad()
    def step(self, renders01: torch.Tensor, gamma: Optional[float] = None, cfg_scale: Optional[float] = None) -> torch.Tensor:
        """One guided reverse step for every view; returns the new targets ``[V, H, W, 3]`` in [0, 1]."""
        t = int(self.timesteps[self.step_index])
        base = self.config.guidance_gamma if gamma is None else gamma  # the viewer may change it mid-run
        self.last_info = self.trajectories.step(
            self.cdm, t, self._cond(renders01), self.source, self.relative,
            gamma=view_gammas(base, self.config.far_side_gamma, self.farness),
            cfg_scale=self.config.cfg_scale if cfg_scale is None else cfg_scale,
            guidance_form=self.config.guidance_form,
        )
        self.step_index += 1
        if self.config.eta > 0 and not self.done:
            self.trajectories.renoise(t, int(self.timesteps[self.step_index]), self.config.eta, self.generator)
        return self.targets01()

    @torch.no_grad()
    def sample_independently(self, renders01: torch.Tensor, num_steps: Optional[int] = None, views: slice = slice(None)) -> torch.Tensor:
        """CDM-only: a full DDIM sample per view conditioned on the given renders (no NeRF in the loop).

        ``views`` selects which virtual views ``renders01`` belong to (for chunked sampling); the
        noise comes from this object's generator, one stream across chunks.
        """
        from nerfdiff_ns.cdm.baselines import sample_cdm
        from nerfdiff_ns.cdm.schedule import make_sampling_scheduler
        from nerfdiff_ns.cdm.unet import from_diffusion_range

        sampler = make_sampling_scheduler(from_scheduler=self.scheduler)
        count = renders01.shape[0]
        relative = None if self.relative is None else self.relative[views]
        out = sample_cdm(
            self.cdm, sampler, self._cond(renders01), self.source.expand(count, -1, -1, -1), relative,
            num_steps=num_steps or self.config.diffusion_steps, cfg_scale=self.config.cfg_scale, generator=self.generator,
        )
        return from_diffusion_range(out).clamp(0, 1).permute(0, 2, 3, 1)

    def targets01(self) -> torch.Tensor:
        """Current targets ``[V, H, W, 3]`` in [0, 1]."""
        return self.trajectories.targets_01().clamp(0, 1).permute(0, 2, 3, 1)
