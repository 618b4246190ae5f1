"""The joint NeRF + CDM model of pretraining: one ``nn.Module`` so DDP sees one forward.

Forward: encode the source views, render every target view in one batched call, and return the
loss terms (``*_loss`` are optimised; ``nerf_mse`` is a frozen NeRF's reported error).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nerfdiff_ns.cdm.conditions import condition_image
from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF, SourceView
from nerfdiff_ns.nerf.jitter import StepJitter, batch_jitter
from nerfdiff_ns.nerf.rays import camera_rays, image_pixels
from nerfdiff_ns.training.batches import resize_hwc, scale_intrinsics
from nerfdiff_ns.training.config import PretrainConfig
from nerfdiff_ns.training.phases import phase


def batch_source_view(batch: dict[str, Any]) -> SourceView:
    """The source camera of each object of a training batch, as the NeRF's renderer takes it."""
    return SourceView(batch["source_c2w"], batch["intrinsics"], tuple(batch["source_image"].shape[1:3]))


class JointModel(nn.Module):
    def __init__(self, cfg: PretrainConfig, nerf: ImageConditionedNeRF, cdm: nn.Module | None, scheduler: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.nerf = nerf
        self.cdm = cdm
        self.scheduler = scheduler

    def render_targets(self, source_image: torch.Tensor, source_c2w: torch.Tensor, target_c2w: torch.Tensor,
                       intrinsics: torch.Tensor, jitter: bool = True,
                       jitter_rows: StepJitter | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the source views and render each object's whole target view at ``render_resolution``, all
        objects in one batched call ([B, R, S], one triplane per object) -> (renders [B, res, res, 3 + E], triplanes):
        RGB, then the CDM's extra conditions (``cfg.cdm.conditions``, see ``cdm.conditions``).

        With ``jitter_rows`` (the step's ``StepJitter``) the jitter of object b is its row of the step's draws,
        which a one-object render of it draws too, so the result equals rendering the objects one by one.
        """
        source = SourceView(source_c2w, intrinsics, tuple(source_image.shape[1:3]))
        with phase("encode"):
            triplanes = self.nerf.encode(source_image)
        with phase("render_target"):
            render = self.render_target_pixels(triplanes, source, target_c2w, None, jitter, jitter_rows, self.condition_kinds)
        res = self.cfg.render_resolution
        return render.view(source_image.shape[0], res, res, -1), triplanes

    @property
    def condition_kinds(self) -> tuple[str, ...]:
        return tuple(self.cfg.cdm.conditions) if self.cfg.cdm.enabled else ()

    def render_target_pixels(self, triplanes: torch.Tensor, source: SourceView, target_c2w: torch.Tensor,
                             pixel_index: torch.Tensor | None, jitter: bool, jitter_rows: StepJitter | None,
                             kinds: tuple[str, ...] = ()) -> torch.Tensor:
        """Render pixels ``pixel_index [B, K]`` (row-major indices; None = every pixel) of each target view at
        ``render_resolution`` -> ``[B, K, 3 + E]``: RGB, then the conditions ``kinds`` (``cdm.conditions``)."""
        res = self.cfg.render_resolution
        count, device = target_c2w.shape[0], target_c2w.device
        if pixel_index is None:
            pixels = image_pixels(res, res, device)[None].expand(count, -1, -1)
        else:
            pixels = torch.stack([pixel_index % res, pixel_index // res], -1)
        o, d = camera_rays(target_c2w, scale_intrinsics(source.intrinsics, source.image_size[0], res), pixels)
        out = self.nerf.render_rays(triplanes, source, o, d, jitter=jitter, generator=jitter_rows,
                                    features="features" in kinds)
        return condition_image(out, kinds, target_c2w[:, :3, 3].norm(dim=-1), self.nerf.config.object_radius)

    def render_source_pixels(self, batch: dict[str, Any], triplanes: torch.Tensor, jitter: bool,
                             rows: StepJitter | None) -> torch.Tensor | None:
        """The source-view term's prediction at the batch's ``source_pixels`` (None when the term is off)."""
        if self.cfg.source_view_weight <= 0 or self.cfg.freeze_nerf:
            return None
        with phase("render_source"):
            source = batch_source_view(batch)
            o, d = camera_rays(batch["source_c2w"], batch["intrinsics"], batch["source_pixels"])
            return self.nerf.render_rays(triplanes, source, o, d, jitter=jitter, generator=rows)["rgb"]

    def render_views(self, batch: dict[str, Any], jitter: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Target-view renders of a batch and (optionally) a few source pixels, with the step's jitter."""
        rows = batch_jitter(batch, batch["source_image"].device) if jitter else None
        render, triplanes = self.render_targets(batch["source_image"], batch["source_c2w"], batch["target_c2w"],
                                                batch["intrinsics"], jitter, rows)
        return render, self.render_source_pixels(batch, triplanes, jitter, rows)

    def render_target_rays(self, batch: dict[str, Any]) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """``--target-rays``: (the CDM's condition, the whole target render without gradients, or None without a
        CDM; the NeRF's RGB at the batch's ``target_pixel_index`` with gradients; the source-view prediction)."""
        rows = batch_jitter(batch, batch["source_image"].device)
        source = batch_source_view(batch)
        with phase("encode"):
            triplanes = self.nerf.encode(batch["source_image"])
        render = None
        if self.cdm is not None:
            res = self.cfg.render_resolution
            with phase("render_target"), torch.no_grad():
                render = self.render_target_pixels(triplanes, source, batch["target_c2w"], None, True, rows,
                                                   self.condition_kinds).view(triplanes.shape[0], res, res, -1)
        with phase("render_target_rays"):
            rgb = self.render_target_pixels(triplanes, source, batch["target_c2w"], batch["target_pixel_index"], True,
                                            rows)
        return render, rgb, self.render_source_pixels(batch, triplanes, True, rows)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        pixel_rgb = None
        if "render" in batch:  # conditions from the render cache (frozen NeRF, training.render_cache)
            if not cfg.freeze_nerf:
                raise ValueError("cached renders are only valid for a frozen NeRF (--freeze-nerf)")
            render, src_pred = batch["render"], None
        elif cfg.freeze_nerf:  # the NeRF only supplies the CDM's conditions: no graph, no update
            with torch.no_grad():
                render, src_pred = self.render_views(batch)
        elif "target_pixel_index" in batch:  # --target-rays
            render, pixel_rgb, src_pred = self.render_target_rays(batch)
        else:
            render, src_pred = self.render_views(batch)
        target_small = resize_hwc(batch["target_image"], cfg.render_resolution).permute(0, 2, 3, 1)
        if pixel_rgb is not None:  # the NeRF loss over the --target-rays pixels it rendered with gradients
            index = batch["target_pixel_index"][..., None].expand(-1, -1, 3)
            nerf_error = F.mse_loss(pixel_rgb, target_small.reshape(index.shape[0], -1, 3).gather(1, index))
        else:
            nerf_error = F.mse_loss(render[..., :3], target_small)  # the extra condition channels follow the RGB
        # A frozen NeRF's reconstruction error is reported ("nerf_mse"), not optimised (only *_loss terms are).
        losses = {"nerf_mse" if cfg.freeze_nerf else "nerf_loss": nerf_error}
        if src_pred is not None:
            losses["source_loss"] = cfg.source_view_weight * F.mse_loss(src_pred, batch["source_pixel_rgb"])
        if self.cdm is not None:
            with phase("cdm_loss"):
                self._add_diffusion_loss(batch, render, losses)
        if render is not None:  # the whole target render, for inspection (not a loss)
            losses["render"] = render[..., :3].detach()
        return losses

    def _add_diffusion_loss(self, batch: dict[str, Any], render: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        """The CDM's denoising loss on the batch's targets, conditioned on ``render`` (``diffusion_loss``)."""
        from nerfdiff_ns.cdm.schedule import diffusion_loss, min_snr_weight
        from nerfdiff_ns.cdm.unet import relative_camera, to_diffusion_range

        cfg = self.cfg
        cond = render.permute(0, 3, 1, 2)
        if not cfg.cdm.backprop_into_nerf:
            cond = cond.detach()
        src_imgs = batch["source_image"]
        x0 = to_diffusion_range(batch["target_image"].permute(0, 3, 1, 2))
        rel = relative_camera(batch["source_c2w"], batch["target_c2w"]) if self.cdm.config.camera_embedding_dim > 0 else None
        cond = to_diffusion_range(cond)
        start = weights = None
        if "render_start" in batch:  # render-start samples: noise the render, regress toward the target
            flag = batch["render_start"].view(-1, 1, 1, 1)
            render_start = cond[:, :3].detach()
            if render_start.shape[-2:] != x0.shape[-2:]:  # the render may be smaller than the image
                render_start = F.interpolate(render_start, size=x0.shape[-2:], mode="bilinear", align_corners=False)
            start = torch.where(flag, render_start, x0)
            snr_w = min_snr_weight(self.scheduler, batch["timesteps"], cfg.cdm.render_start_snr_gamma).to(x0)
            weights = torch.where(batch["render_start"], snr_w, torch.ones_like(snr_w))
        loss, _ = diffusion_loss(
            self.cdm, x0, cond, to_diffusion_range(src_imgs.permute(0, 3, 1, 2)), rel,
            self.scheduler, timesteps=batch["timesteps"], noise=batch["noise"], drop_conditions=batch["drop"],
            start=start, sample_weights=weights,
        )
        losses["diffusion_loss"] = cfg.cdm.loss_weight * loss


def build_cdm(cfg: PretrainConfig) -> tuple[nn.Module, Any]:
    from nerfdiff_ns.cdm.schedule import make_train_scheduler
    from nerfdiff_ns.cdm.unet import ConditionalDiffusionModel

    cdm = ConditionalDiffusionModel(
        sample_size=cfg.nerf.image_size,
        block_out_channels=tuple(cfg.cdm.block_out_channels),
        layers_per_block=cfg.cdm.layers_per_block,
        attention_levels=tuple(cfg.cdm.attention_levels),
        prediction_type=cfg.cdm.prediction_type,
        camera_embedding_dim=cfg.cdm.camera_embedding_dim,
        condition_dropout_prob=cfg.cdm.condition_dropout_prob,
        dropout=cfg.cdm.dropout,
        condition_kinds=tuple(cfg.cdm.conditions),
        feature_condition_channels=cfg.feature_condition_channels(),
    )
    scheduler = make_train_scheduler(
        num_train_timesteps=cfg.cdm.num_train_timesteps, beta_schedule=cfg.cdm.beta_schedule,
        prediction_type=cfg.cdm.prediction_type,
    )
    return cdm, scheduler


def ema_decay(max_decay: float, step: int) -> float:
    """EMA decay with warm-up, min(max_decay, (1 + step) / (10 + step)) as in diffusers' EMAModel.

    Without it a short run's EMA still holds much of the random initialisation
    (0.999 ** 1500 = 22 %).
    """
    return min(max_decay, (1.0 + step) / (10.0 + step))

