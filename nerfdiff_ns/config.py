"""nerfstudio entry points: the ``nerfdiff`` methods and our dataparsers.

Loaded by every ``ns-*`` command, so it only builds config dataclasses: no model is constructed,
diffusers is not imported, nothing exits the process, and every default is a ``default_factory``.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from nerfdiff_ns import compat
from nerfdiff_ns.data.dataparsers import SingleImageDataParserConfig
from nerfdiff_ns.datamanager import NerfDiffDataManagerConfig
from nerfdiff_ns.live_viewer import LiveViewerConfig
from nerfdiff_ns.lr_decay import FinalDecaySchedulerConfig
from nerfdiff_ns.model import NerfDiffModelConfig
from nerfdiff_ns.ngd import NGDConfig
from nerfdiff_ns.pipeline import NerfDiffPipelineConfig
from nerfdiff_ns.trainer import NerfDiffTrainerConfig

compat.install()


def _device_type() -> str:
    """Run on the CPU without extra flags when there is no CUDA device."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


FINAL_LR_FACTOR = 1.0
"""Learning rate at NGD's last iteration / the rate while its targets move (nerfdiff_ns/lr_decay.py); 1 = constant."""


def _trainer(
    method_name: str, ngd: NGDConfig, rays: int, lr_triplane: float, lr_field: float, live_viewer: LiveViewerConfig
) -> NerfDiffTrainerConfig:
    trainer = NerfDiffTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=0,
        steps_per_eval_image=100,
        steps_per_eval_all_images=1_000_000,
        steps_per_save=100,
        mixed_precision=False,
        save_only_latest_checkpoint=True,
        pipeline=NerfDiffPipelineConfig(
            datamanager=NerfDiffDataManagerConfig(dataparser=SingleImageDataParserConfig(), train_num_rays_per_batch=rays),
            model=NerfDiffModelConfig(),
            ngd=ngd,
            live_viewer=live_viewer,
        ),
        optimizers={
            "triplane": {"optimizer": AdamOptimizerConfig(lr=lr_triplane, eps=1e-15),
                         "scheduler": FinalDecaySchedulerConfig(final_factor=FINAL_LR_FACTOR)},
            "field": {"optimizer": AdamOptimizerConfig(lr=lr_field, eps=1e-15),
                      "scheduler": FinalDecaySchedulerConfig(final_factor=FINAL_LR_FACTOR)},
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 13, quit_on_train_completion=True),
        vis="viewer",
    )
    trainer.machine.device_type = _device_type()  # type: ignore[assignment]
    return trainer


nerfdiff_method = MethodSpecification(
    config=_trainer(
        "nerfdiff",
        NGDConfig(num_virtual_views=16, diffusion_steps=50, nerf_iters_per_step=20, final_iters=500),
        rays=4096, lr_triplane=2e-3, lr_field=2e-4,
        live_viewer=LiveViewerConfig(refresh_seconds=1.0, max_resolution=256),
    ),
    description="NerfDiff: one image -> NeRF, finetuned by NeRF-guided distillation from a 3D-aware diffusion model.",
)


def _tiny_ngd() -> NGDConfig:
    """NGD of the CPU presets, tuned with the shipped bundles.

    gamma 8: tuned on val objects 900-902 with the shipped CDM (gamma 4 / 8 / 16: sharper vs. closer to the
    NeRF; README "The benchmark"); a small CDM needs a firmer pull toward the 3D-consistent render.
    16 virtual views: on chairs 900-905, NGD - feed-forward went from +0.13 dB (8 views) to +0.72 dB
    (benchmarks/README.md "NGD levers"): the NeRF distils what the CDM adds only where views cover it.
    With gamma 8, 20 of the 25 steps have w_t = 1 and are skipped (NGDConfig.skip_pinned_steps): 250 NeRF
    iterations instead of 450, +0.81 instead of +0.72 dB on chairs 900-905.
    """
    return NGDConfig(num_virtual_views=16, diffusion_steps=25, nerf_iters_per_step=10, final_iters=200, guidance_gamma=8.0)


TINY_LR_TRIPLANE = 8e-3
"""Adam rate of the finetuned triplane in the CPU presets (2e-3 before): chairs 900-919, NGD sharpness 0.193 -> 0.254,
SSIM +0.010, PSNR -0.05 dB at the same cost (benchmarks/README.md "NGD levers"). The 64 px preset shares it untuned."""

nerfdiff_tiny_method = MethodSpecification(
    config=_trainer(
        "nerfdiff-tiny", _tiny_ngd(), rays=1024, lr_triplane=TINY_LR_TRIPLANE, lr_field=2e-4,
        # the NeRF is 32 px; a 128 px viewport renders at 2 fps on 2 idle cores (benchmarks/export_benchmark.py), 512 px at ~1/16 of that
        live_viewer=LiveViewerConfig(refresh_seconds=2.0, max_resolution=128),
    ),
    description="NerfDiff CPU preset (32 px, 16 virtual views, a 25-step schedule whose pinned steps are skipped) matched to the shipped tiny bundles.",
)

nerfdiff_tiny64_method = MethodSpecification(
    # for a 64 px bundle (pretraining preset tiny-64): 4x the pixels per view, 2x the rays per batch
    config=_trainer("nerfdiff-tiny-64", _tiny_ngd(), rays=2048, lr_triplane=TINY_LR_TRIPLANE, lr_field=2e-4,
                    live_viewer=LiveViewerConfig(refresh_seconds=2.0, max_resolution=256)),
    description="NerfDiff 64 px CPU preset (nerfdiff-tiny's schedule, 2,048 rays) for bundles of the tiny-64 pretraining preset.",
)
