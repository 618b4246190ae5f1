"""``nerfdiff-pretrain``: train the single-image NeRF and the 3D-aware CDM jointly on multi-view data.

Per step, for each object of the global batch: pick a source and a target view, encode the
source, render the whole target view at ``render_resolution`` and take

    L = ||render_t - I_t||^2 [+ w_s ||render_s - I_s||^2] + lambda * L_diffusion(CDM | render_t, I_s).

With ``--cdm.no-enabled`` this is plain feed-forward NeRF training. With ``--freeze-nerf`` (a CDM-only
stage, usually after ``--init-from``) the frozen NeRF's renders are computed once into a render cache
and every step trains the UNet alone.

Scale: one CPU, one GPU, or many through ``torchrun`` (DDP; gloo on CPU, nccl on GPU). We use
torchrun + DDP rather than accelerate because the loop needs exact control of what each rank sees:
every random choice of a sample (object, views, jitter, timestep, noise, CFG drop) comes from a
generator seeded by (seed, step, global sample index), so the global batch is identical for any
number of processes and a resumed run continues the same trajectory.

The code lives in ``nerfdiff_ns.training`` (config, batches, joint_model, loop, persistence,
distributed, render_cache); this module is the command line and keeps the public names.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from nerfdiff_ns.training.batches import (
    draw_sample,
    estimate_camera_distribution,
    make_batch,
    resize_hwc,
    scale_intrinsics,
)
from nerfdiff_ns.training.config import (
    CDM_ARCHITECTURE_KEYS,
    NERF_RENDER_ONLY_KEYS,
    CDMConfig,
    PretrainConfig,
    architecture_differences,
    config_to_json,
)
from nerfdiff_ns.training.distributed import DistInfo, all_reduce_mean, init_distributed, sample_generator
from nerfdiff_ns.training.joint_model import JointModel, build_cdm, ema_decay
from nerfdiff_ns.training.loop import Trainer, check_flags
from nerfdiff_ns.training.presets import load_preset

__all__ = [
    "CDM_ARCHITECTURE_KEYS", "NERF_RENDER_ONLY_KEYS", "CDMConfig", "DistInfo", "JointModel", "PretrainConfig", "Trainer",
    "all_reduce_mean", "architecture_differences", "build_cdm", "config_to_json", "draw_sample", "ema_decay",
    "entrypoint", "estimate_camera_distribution", "init_distributed", "make_batch", "parse_config", "resize_hwc",
    "sample_generator", "scale_intrinsics",
]


def parse_config(argv: list[str] | None = None) -> PretrainConfig:
    """Load the preset named by ``--preset`` (default tiny), then let tyro apply every other flag."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    preset = "tiny"
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    base = load_preset("pretrain", preset, PretrainConfig(preset=preset))
    return tyro.cli(PretrainConfig, default=base, args=argv, description=__doc__)


def entrypoint() -> None:
    cfg = parse_config()
    check_flags(cfg)  # before the run folder is written
    output_dir = Path(cfg.output_dir)
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(cfg)  # a refused resume (other architecture, bad data) leaves the run's config as it was
    except BaseException:
        # a refused new run leaves no empty folder behind (rank 0 only: under DDP another rank may have made it)
        if created and int(os.environ.get("RANK", "0")) == 0 and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        (Path(cfg.output_dir) / "pretrain_config.json").write_text(config_to_json(cfg))
    try:
        stats = trainer.run()
    finally:
        if trainer.dist.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if trainer.dist.is_main:
        print(json.dumps({"step": trainer.step, **stats}))
        print(f"[nerfdiff] bundle: {Path(cfg.output_dir) / 'bundle'}")
    if getattr(trainer, "stop", None) is not None and trainer.stop.requested:
        sys.exit(130)  # the shell's code for SIGINT: stopped early, on purpose


if __name__ == "__main__":
    entrypoint()
