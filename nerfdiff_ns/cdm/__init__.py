"""The 3D-aware conditional diffusion model (CDM) and NeRF-guided distillation (DESIGN §1.2, §1.3).

Pure torch + diffusers (no nerfstudio import) so it runs on bare GPU workers. Every image tensor
in this package is [B, 3, H, W] in [-1, 1]; convert project images ([0, 1]) at the boundary with
`to_diffusion_range` / `from_diffusion_range`.
"""

from .baselines import sample_cdm, sds_gradient, sds_loss
from .guidance import NGDStepInfo, NGDTrajectories, nerf_guidance_weight, nerf_guided_update
from .schedule import (
    alpha_sigma,
    ddim_step,
    diffusion_loss,
    eps_from_prediction,
    eps_from_x0,
    make_sampling_scheduler,
    make_train_scheduler,
    ngd_timesteps,
    noisy_from_x0,
    training_target,
    x0_from_prediction,
)
from .unet import ConditionalDiffusionModel, from_diffusion_range, relative_camera, to_diffusion_range

__all__ = [
    "ConditionalDiffusionModel",
    "NGDStepInfo",
    "NGDTrajectories",
    "alpha_sigma",
    "ddim_step",
    "diffusion_loss",
    "eps_from_prediction",
    "eps_from_x0",
    "from_diffusion_range",
    "make_sampling_scheduler",
    "make_train_scheduler",
    "nerf_guidance_weight",
    "nerf_guided_update",
    "ngd_timesteps",
    "noisy_from_x0",
    "relative_camera",
    "sample_cdm",
    "sds_gradient",
    "sds_loss",
    "to_diffusion_range",
    "training_target",
    "x0_from_prediction",
]
