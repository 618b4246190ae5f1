"""Pretraining batches: one (object, source view, target view) sample per generator, stacked per rank.

Also the camera distribution of a dataset (what a bundle records for NGD and photo input) and
the small resize helpers the joint model shares.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from nerfdiff_ns.bundle import CameraDistribution
from nerfdiff_ns.data.views import ObjectCameras
from nerfdiff_ns.nerf.jitter import step_jitter_seed
from nerfdiff_ns.training.augment import augment_sample
from nerfdiff_ns.training.config import PretrainConfig
from nerfdiff_ns.training.distributed import DistInfo, sample_generator
from nerfdiff_ns.training.timesteps import TimestepSampler


def estimate_camera_distribution(cameras: Sequence[ObjectCameras]) -> CameraDistribution:
    """Camera distance, FOV, elevation range and image size over every training object (``data.survey`` has
    checked that they share one image size and field of view)."""
    positions = torch.cat([cam.c2w[:, :3, 3] for cam in cameras])
    distances = positions.norm(dim=-1)
    elevations = torch.rad2deg(torch.asin((positions[:, 2] / distances).clamp(-1, 1)))
    return CameraDistribution(
        distance=float(distances.mean()), fov_degrees=float(cameras[0].fov_y_degrees), image_size=int(cameras[0].height),
        elevation_range_degrees=(float(elevations.min()), float(elevations.max())),
    )


def draw_sample(dataset: Any, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One (object, source view, target view) triple from the sample's own generator."""
    obj_idx = int(torch.randint(len(dataset), (1,), generator=gen))
    obj = dataset.load_object(obj_idx)
    views = torch.randperm(obj.images.shape[0], generator=gen)
    src, tgt = int(views[0]), int(views[1 % len(views)])
    return {
        "source_image": obj.images[src], "source_c2w": obj.c2w[src],
        "target_image": obj.images[tgt], "target_c2w": obj.c2w[tgt],
        "intrinsics": obj.intrinsics,
    }


def resize_hwc(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, H, W, 3]`` -> ``[B, 3, size, size]`` (antialiased)."""
    x = images.permute(0, 3, 1, 2)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def scale_intrinsics(intrinsics: torch.Tensor, from_size: int, to_size: int) -> torch.Tensor:
    return intrinsics * (to_size / from_size)


def draw_diffusion_inputs(sample: dict[str, torch.Tensor], cfg: PretrainConfig, gen: torch.Generator,
                          sampler: TimestepSampler) -> None:
    """The CDM's random inputs of one sample, from its generator: timestep, noise, condition drop."""
    h, w = sample["source_image"].shape[:2]
    sample["timesteps"] = sampler.sample(1, gen)
    sample["noise"] = torch.randn((3, h, w), generator=gen)
    sample["drop"] = torch.rand((1,), generator=gen) < cfg.cdm.condition_dropout_prob
    if cfg.cdm.render_start_prob > 0:  # drawn after the others, so runs without it keep their streams
        start = torch.rand((1,), generator=gen) < cfg.cdm.render_start_prob
        low_t = torch.randint(cfg.cdm.render_start_min_t, cfg.cdm.render_start_max_t + 1, (1,), generator=gen)
        sample["render_start"] = start
        sample["timesteps"] = torch.where(start, low_t, sample["timesteps"])


def stack_samples(samples: list[dict[str, torch.Tensor]], cfg: PretrainConfig, device: torch.device) -> dict[str, Any]:
    """Per-sample dicts -> one batch dict on ``device``."""
    batch: dict[str, Any] = {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}
    if cfg.cdm.enabled:
        batch["timesteps"] = batch["timesteps"].view(-1)
        batch["drop"] = batch["drop"].view(-1)
        if "render_start" in batch:
            batch["render_start"] = batch["render_start"].view(-1)
    return batch


def uses_target_rays(cfg: PretrainConfig) -> bool:
    """Whether the target-view NeRF loss of this run is over ``--target-rays`` random pixels (not every pixel)."""
    return cfg.target_rays > 0 and not cfg.freeze_nerf


def rank_samples(cfg: PretrainConfig, dist_info: DistInfo) -> range:
    """Global indices of this rank's samples in the batch of ``cfg.batch_size``."""
    per_rank = cfg.batch_size // dist_info.world_size
    return range(dist_info.rank * per_rank, (dist_info.rank + 1) * per_rank)


def make_batch(dataset: Any, cfg: PretrainConfig, step: int, dist_info: DistInfo, device: torch.device) -> dict[str, Any]:
    """This rank's share of the global batch, every random choice drawn per sample; the render jitter is the
    step's (``jitter``: its seed, the global batch and this rank's first row; see ``nerf.jitter``)."""
    samples = []
    sampler = cfg.cdm.timestep_sampler() if cfg.cdm.enabled else None
    indices = rank_samples(cfg, dist_info)
    for j in indices:
        gen = sample_generator(cfg.seed, step, j)
        sample = draw_sample(dataset, gen)
        augment_sample(sample, cfg.augment, gen)  # before the source pixels are drawn from its image
        h, w = sample["source_image"].shape[:2]
        idx = torch.randint(h * w, (cfg.source_rays,), generator=gen)
        sample["source_pixels"] = torch.stack([idx % w, idx // w], -1)
        sample["source_pixel_rgb"] = sample["source_image"].reshape(-1, 3)[idx]
        if sampler is not None:
            draw_diffusion_inputs(sample, cfg, gen, sampler)
        if uses_target_rays(cfg):  # drawn last, so runs without --target-rays keep their streams
            pixels = torch.randperm(cfg.render_resolution**2, generator=gen)  # K distinct pixels
            sample["target_pixel_index"] = pixels[: cfg.target_rays]
        samples.append(sample)
    batch = stack_samples(samples, cfg, device)
    batch["jitter"] = (step_jitter_seed(cfg.seed, step), cfg.batch_size, indices.start)
    return batch
