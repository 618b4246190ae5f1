"""nerfstudio Pipeline that runs NeRF-guided distillation during ``ns-train nerfdiff``.

The frozen CDM lives in a plain (non-``nn.Module``) holder: it is loaded lazily on the first
training step, never written into nerfstudio checkpoints, and never loaded by ``ns-render``,
``ns-viewer``, ``ns-eval`` or ``ns-export`` (those only build the NeRF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from nerfdiff_ns.data.cameras import virtual_cameras
from nerfdiff_ns.datamanager import NerfDiffDataManagerConfig
from nerfdiff_ns.live_viewer import LiveViewer, LiveViewerConfig, input_fov_radians, make_ngd_controls
from nerfdiff_ns.model import NerfDiffModelConfig
from nerfdiff_ns.ngd import NGDConfig, VirtualViewDiffusion


@dataclass
class NerfDiffPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: NerfDiffPipeline)
    datamanager: NerfDiffDataManagerConfig = field(default_factory=NerfDiffDataManagerConfig)  # type: ignore[assignment]
    """Input view + virtual views."""
    model: NerfDiffModelConfig = field(default_factory=NerfDiffModelConfig)  # type: ignore[assignment]
    """The image-conditioned NeRF being finetuned."""
    ngd: NGDConfig = field(default_factory=NGDConfig)
    """NeRF-guided distillation schedule and knobs."""
    cdm_device: Optional[str] = None
    """Device of the diffusion model (default: the pipeline's device)."""
    live_viewer: LiveViewerConfig = field(default_factory=LiveViewerConfig)
    """Viewer cadence while NGD trains: refresh period, resolution cap, start at the input camera."""


class NerfDiffPipeline(VanillaPipeline):
    config: NerfDiffPipelineConfig

    def __init__(
        self,
        config: NerfDiffPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[torch.cuda.amp.GradScaler] = None,
    ) -> None:
        parser_cfg = config.datamanager.dataparser
        if hasattr(parser_cfg, "bundle") and parser_cfg.bundle is None:
            parser_cfg.bundle = config.model.bundle  # camera defaults and background come from the same bundle
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.__dict__["_diffusion"] = None  # plain attribute: not a submodule, never checkpointed
        self.__dict__["_virtual_c2w"] = None
        self.ngd_progress: Dict[str, float] = {}
        self._make_viewer_controls()

    # ---- viewer ---------------------------------------------------------------------------
    def _make_viewer_controls(self) -> None:
        """NGD controls in the viewer panel (public attributes: nerfstudio finds them on the pipeline)."""
        controls = make_ngd_controls(self.config.ngd)
        if controls:
            self.viewer_gamma = controls["gamma"]
            self.viewer_cfg = controls["cfg"]
            self.viewer_progress = controls["progress"]

    # ---- NGD ------------------------------------------------------------------------------
    @property
    def diffusion(self) -> VirtualViewDiffusion:
        if self.__dict__["_diffusion"] is None:
            self.__dict__["_diffusion"] = self._load_diffusion()
        return self.__dict__["_diffusion"]

    def _load_diffusion(self) -> VirtualViewDiffusion:
        return self.make_diffusion(self.virtual_c2w)

    def make_diffusion(self, virtual_c2w: torch.Tensor) -> VirtualViewDiffusion:
        """Load the bundle's frozen CDM (EMA by default) and set up trajectories for ``virtual_c2w [V, 4, 4]``."""
        from nerfdiff_ns.bundle import load_bundle

        bundle = load_bundle(self.config.model.bundle)
        device = self.config.cdm_device or self.device
        cdm = bundle.load_cdm(device, ema=self.config.ngd.use_ema)
        scheduler = bundle.load_train_scheduler()
        model = self.model
        return VirtualViewDiffusion(cdm, scheduler, self.config.ngd, model.input_image, model.input_c2w[0], virtual_c2w)

    @property
    def virtual_c2w(self) -> torch.Tensor:
        if self.__dict__["_virtual_c2w"] is None:
            cams = self.model.bundle_config.cameras
            elev = self.config.ngd.elevation_range_degrees or cams.elevation_range_degrees
            self.__dict__["_virtual_c2w"] = virtual_cameras(
                self.model.input_c2w[0].cpu(), self.config.ngd.num_virtual_views, self.config.ngd.azimuth_spread_degrees, tuple(elev)
            )
        return self.__dict__["_virtual_c2w"]

    def virtual_intrinsics(self, size: int) -> torch.Tensor:
        """Virtual views share the input camera's field of view, at the CDM's resolution."""
        height = self.model.input_size[0]
        fx, fy, _, _ = self.model.input_intrinsics[0].tolist()
        scale = size / height
        return torch.tensor([fx * scale, fy * scale, size / 2, size / 2])

    @torch.no_grad()
    def render_virtual_views(self, size: int, kinds: tuple[str, ...] = (), chunk: int = 8192) -> torch.Tensor:
        """Current NeRF renders ``[V, size, size, 3 + E]`` of the virtual cameras: RGB, then the extra CDM
        conditions ``kinds`` (see ``cdm.conditions``).

        All views' rays go through the one triplane as a single ray set, in chunks of ``chunk`` rays
        (8 views at 32 px are one call), instead of one ``render_image`` per view.
        """
        from nerfdiff_ns.cdm.conditions import render_condition_views

        model = self.model
        c2w = self.virtual_c2w.to(self.device)
        k = self.virtual_intrinsics(size).to(self.device)
        was_training = model.training
        model.eval()
        renders = render_condition_views(model.nerf, model.triplane, model.source, c2w, k, size, kinds, chunk)
        model.train(was_training)
        return renders

    def advance_ngd(self, step: int) -> None:
        """Run the diffusion work that is due before NeRF iteration ``step``."""
        ngd = self.config.ngd
        if ngd.mode in ("input-only", "feed-forward"):
            return
        diffusion = self.diffusion
        size = diffusion.resolution[0]
        kinds = diffusion.condition_kinds
        dm = self.datamanager
        if ngd.mode == "sample-then-fit":
            if dm.virtual_cameras is None:
                targets = diffusion.sample_independently(self.render_virtual_views(size, kinds))
                self._set_virtual(targets, size)
            return
        if ngd.mode == "sds":  # pure score distillation: no virtual targets, only the SDS loss (sds_loss)
            return
        if dm.virtual_cameras is None:
            self._set_virtual(diffusion.start(self.render_virtual_views(size, kinds)), size)
        if not diffusion.done and step >= diffusion.step_index * ngd.nerf_iters_per_step:
            targets = diffusion.step(self.render_virtual_views(size, kinds))
            dm.update_virtual_targets(targets)
            info = diffusion.last_info
            self.ngd_progress = {"diffusion_step": float(diffusion.step_index), "t": float(info.t), "w_t": float(info.w_t)}
            if hasattr(self, "viewer_progress"):
                self.viewer_progress.value = (
                    f"step {diffusion.step_index}/{len(diffusion.timesteps)}  t={info.t}  w_t={info.w_t:.3f}"
                )

    def _set_virtual(self, targets: torch.Tensor, size: int) -> None:
        k = self.virtual_intrinsics(size)
        self.datamanager.set_virtual_views(self.virtual_c2w, k, size, size, targets)

    def sds_loss(self, step: int) -> torch.Tensor:
        """Score distillation on one random virtual view rendered with gradients."""
        from nerfdiff_ns.cdm.conditions import condition_image
        from nerfdiff_ns.cdm.baselines import sds_gradient, sds_loss
        from nerfdiff_ns.cdm.unet import to_diffusion_range
        from nerfdiff_ns.nerf.rays import camera_rays, image_pixels

        diffusion = self.diffusion
        size = diffusion.resolution[0]
        view = step % self.virtual_c2w.shape[0]
        c2w = self.virtual_c2w[view : view + 1].to(self.device)
        k = self.virtual_intrinsics(size).to(self.device)[None]
        o, d = camera_rays(c2w, k, image_pixels(size, size, self.device)[None])
        out = self.model.nerf.render_rays(self.model.triplane, self.model.source, o, d, jitter=True,
                                          features="features" in diffusion.condition_kinds)
        image = to_diffusion_range(out["rgb"].view(1, size, size, 3).permute(0, 3, 1, 2))
        renders = None  # the CDM's condition is the image itself, plus its extra channels when it has any
        if diffusion.condition_kinds:
            cond = condition_image({k: v.detach() for k, v in out.items()}, diffusion.condition_kinds,
                                   c2w[:, :3, 3].norm(dim=-1), self.model.nerf.config.object_radius)
            renders = to_diffusion_range(cond.view(1, size, size, -1).permute(0, 3, 1, 2)).to(diffusion.device)
        rel = None if diffusion.relative is None else diffusion.relative[view : view + 1]
        grad, _ = sds_gradient(diffusion.cdm, diffusion.scheduler, image.to(diffusion.device), diffusion.source, rel,
                               renders=renders, cfg_scale=self.config.ngd.cfg_scale, generator=diffusion.generator)
        return sds_loss(image, grad.to(image.device)) / (size * size)

    # ---- nerfstudio hooks -----------------------------------------------------------------
    def get_train_loss_dict(self, step: int):
        self.advance_ngd(step)
        ray_bundle, batch = self.datamanager.next_train(step)
        model_outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        if self.config.ngd.mode == "sds":
            loss_dict["sds_loss"] = self.sds_loss(step)
        if self.config.ngd.mode == "feed-forward":  # keep the predicted triplane: zero loss, zero Adam update
            loss_dict = {key: value * 0.0 for key, value in loss_dict.items()}
        for key, value in self.ngd_progress.items():
            metrics_dict[f"ngd_{key}"] = torch.tensor(value)
        return model_outputs, loss_dict, metrics_dict

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        trainer = training_callback_attributes.trainer
        viewer = getattr(trainer, "viewer_state", None) if trainer is not None else None
        if viewer is not None:
            model = self.model
            fov = input_fov_radians(model.input_intrinsics[0], model.input_size[0])
            self.live_viewer = LiveViewer(viewer, getattr(trainer, "train_lock", None), model.input_c2w[0].cpu(), fov,
                                          self.config.live_viewer).install()
            callbacks.append(
                TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._show_virtual_views,
                                 update_every_num_iters=max(1, self.config.ngd.nerf_iters_per_step), args=[viewer])
            )
        return callbacks

    def _show_virtual_views(self, viewer: Any, step: int) -> None:
        """Draw the virtual cameras as frustums carrying their current targets in the viewer."""
        dm = self.datamanager
        if dm.virtual_cameras is None or dm.virtual_targets is None:
            return
        try:
            import viser.transforms as vtf
            from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

            server = viewer.viser_server
            cams = dm.virtual_cameras
            for i in range(len(cams)):
                c2w = cams.camera_to_worlds[i].numpy()
                rot = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(math.pi)
                fov = 2 * math.atan(float(cams.cy[i]) / float(cams.fy[i]))
                image = (dm.virtual_targets[i].numpy() * 255).astype("uint8")
                server.scene.add_camera_frustum(
                    name=f"/nerfdiff_virtual_views/{i:02d}", fov=fov, aspect=1.0, scale=viewer.config.camera_frustum_scale,
                    color=(255, 120, 0), image=image, wxyz=rot.wxyz, position=c2w[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO,
                )
        except Exception as err:  # never stop training over a drawing problem
            print(f"[nerfdiff] could not draw virtual views in the viewer: {err}")
