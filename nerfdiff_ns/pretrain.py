"""``nerfdiff-pretrain``: train the single-image NeRF and the 3D-aware CDM jointly on multi-view data.

Per step, for each object of the global batch: pick a source and a target view, encode the
source, render the whole target view at ``render_resolution`` and take

    L = ||render_t - I_t||^2 [+ w_s ||render_s - I_s||^2] + lambda * L_diffusion(CDM | render_t, I_s).

With ``cdm.enabled False`` this is plain feed-forward NeRF training.

Scale: one CPU, one GPU, or many through ``torchrun`` (DDP; gloo on CPU, nccl on GPU). We use
torchrun + DDP rather than accelerate because the loop needs exact control of what each rank sees:
every random choice of a sample (object, views, jitter, timestep, noise, CFG drop) comes from a
generator seeded by (seed, step, global sample index), so the global batch is identical for any
number of processes and a resumed run continues the same trajectory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nerfdiff_ns.bundle import BundleConfig, CameraDistribution, save_bundle
from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF, NeRFConfig, SourceView
from nerfdiff_ns.nerf.rays import camera_rays, image_pixels
from nerfdiff_ns.training import checkpoint as ckpt
from nerfdiff_ns.training.presets import load_preset


@dataclass
class CDMConfig:
    """The 3D-aware conditional diffusion model and how it is trained."""

    enabled: bool = True
    """Train the CDM jointly with the NeRF (False: feed-forward NeRF only)."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """UNet widths per level."""
    layers_per_block: int = 1
    """ResNet blocks per UNet level."""
    attention_levels: tuple[bool, ...] = (False, False, True)
    """Self-attention per level."""
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    """What the UNet predicts (paper: epsilon)."""
    camera_embedding_dim: int = 64
    """Width of the relative-camera embedding (0 disables the camera input)."""
    condition_dropout_prob: float = 0.1
    """Probability of dropping all conditions in training (enables classifier-free guidance)."""
    loss_weight: float = 1.0
    """lambda: weight of the diffusion loss."""
    backprop_into_nerf: bool = False
    """Let the diffusion loss train the NeRF through its rendering (paper's joint variant)."""
    num_train_timesteps: int = 1000
    """Diffusion steps of the noise schedule."""
    beta_schedule: str = "squaredcos_cap_v2"
    """diffusers beta schedule."""
    ema_decay: float = 0.999
    """EMA decay of the CDM weights (the bundle ships the EMA)."""
    learning_rate: float = 2e-4
    """Adam learning rate of the CDM."""


@dataclass
class PretrainConfig:
    """Joint NeRF + CDM pretraining on an SRN-format dataset."""

    preset: str = "tiny"
    """Preset from configs/pretrain/ (tiny, srn-128) or a JSON file; flags after it override it."""
    data: Path = Path("data/synth")
    """Dataset root with train/ and val/ in SRN format (make one with nerfdiff-generate-data)."""
    output_dir: Path = Path("runs/pretrain")
    """Run folder: checkpoints/, tensorboard events, bundle/."""
    nerf: NeRFConfig = field(default_factory=NeRFConfig)
    """Single-image NeRF architecture."""
    cdm: CDMConfig = field(default_factory=CDMConfig)
    """Diffusion model and its training."""
    steps: int = 2000
    """Total optimisation steps."""
    batch_size: int = 8
    """Global batch: objects per step across all processes (must divide by the process count)."""
    render_resolution: int = 32
    """Resolution at which the target view is rendered for the NeRF loss and the CDM condition."""
    source_view_weight: float = 0.5
    """Weight of the source-view reconstruction term (0 disables)."""
    source_rays: int = 256
    """Rays per object for the source-view term."""
    learning_rate: float = 1e-3
    """Adam learning rate of the NeRF."""
    lr_warmup_steps: int = 100
    """Linear warm-up steps for both models."""
    grad_clip: float = 1.0
    """Max gradient norm (0 disables)."""
    mixed_precision: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    seed: int = 0
    """Seed of every random choice; runs with the same seed and global batch are identical."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    steps_per_log: int = 10
    """Scalars to tensorboard every N steps."""
    steps_per_checkpoint: int = 200
    """Checkpoint (and bundle export) every N steps."""
    steps_per_eval: int = 500
    """Validation PSNR and images every N steps (0 disables)."""
    num_eval_objects: int = 4
    """Validation objects used for the periodic evaluation."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep."""
    resume: bool = True
    """Continue from the latest checkpoint in output_dir when there is one."""
    max_bad_steps: int = 10
    """Stop after this many consecutive non-finite losses (each is skipped and logged)."""
    log_tensorboard: bool = True
    """Write tensorboard events to output_dir."""
    log_jsonl: bool = True
    """Append every step's losses (or a skipped marker) to output_dir/losses.jsonl (rank 0)."""
    init_from: Path | None = None
    """Start from this bundle's weights (NeRF, CDM and its EMA) instead of random ones; the architecture
    must match. Ignored when output_dir already has a checkpoint (that run resumes instead)."""
    freeze_nerf: bool = False
    """Train only the CDM: the NeRF renders its conditions without gradients and is not updated. A second
    stage after joint training (with --init-from) that spends every step's compute on the diffusion model."""


# ---------------------------------------------------------------------------------------------
# distributed helpers


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def all_reduce_mean(value: torch.Tensor, dist_info: DistInfo) -> torch.Tensor:
    if dist_info.world_size == 1:
        return value
    import torch.distributed as dist

    value = value.clone()
    dist.all_reduce(value)
    return value / dist_info.world_size


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    """Independent stream for one sample of one step, identical whatever the process layout."""
    state = np.random.SeedSequence([seed, step, index]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] % (2**63)))


# ---------------------------------------------------------------------------------------------
# data


def estimate_camera_distribution(dataset: Any, max_objects: int = 20) -> CameraDistribution:
    """Camera distance, FOV, elevation range and image size seen in the training data."""
    distances, elevations = [], []
    fov = image_size = None
    for idx in range(min(len(dataset), max_objects)):
        obj = dataset.load_object(idx)
        pos = obj.c2w[:, :3, 3]
        dist = pos.norm(dim=-1)
        distances.append(dist)
        elevations.append(torch.rad2deg(torch.asin((pos[:, 2] / dist).clamp(-1, 1))))
        fy = float(obj.intrinsics[1])
        fov = math.degrees(2 * math.atan(obj.images.shape[1] / 2 / fy))
        image_size = int(obj.images.shape[1])
    d = torch.cat(distances)
    e = torch.cat(elevations)
    return CameraDistribution(
        distance=float(d.mean()), fov_degrees=float(fov), image_size=int(image_size),
        elevation_range_degrees=(float(e.min()), float(e.max())),
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


# ---------------------------------------------------------------------------------------------
# the joint model (one nn.Module so DDP sees one forward)


class JointModel(nn.Module):
    def __init__(self, cfg: PretrainConfig, nerf: ImageConditionedNeRF, cdm: nn.Module | None, scheduler: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.nerf = nerf
        self.cdm = cdm
        self.scheduler = scheduler

    def render_views(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode each source view; render its whole target view and (optionally) a few source pixels."""
        cfg = self.cfg
        nerf = self.nerf
        src_imgs = batch["source_image"]
        height = src_imgs.shape[1]
        source = SourceView(batch["source_c2w"], batch["intrinsics"], (height, src_imgs.shape[2]))
        triplanes = nerf.encode(src_imgs)
        res = cfg.render_resolution
        k_render = scale_intrinsics(batch["intrinsics"], height, res)
        pixels = image_pixels(res, res, src_imgs.device)
        renders, src_preds = [], []
        for b, gen in enumerate(batch["generators"]):
            o, d = camera_rays(batch["target_c2w"][b : b + 1], k_render[b : b + 1], pixels[None])
            sub = SourceView(source.c2w[b : b + 1], source.intrinsics[b : b + 1], source.image_size)
            renders.append(nerf.render_rays(triplanes[b : b + 1], sub, o, d, jitter=True, generator=gen)["rgb"])
            if cfg.source_view_weight > 0 and not cfg.freeze_nerf:
                sel = batch["source_pixels"][b : b + 1]
                o, d = camera_rays(batch["source_c2w"][b : b + 1], batch["intrinsics"][b : b + 1], sel)
                src_preds.append(nerf.render_rays(triplanes[b : b + 1], sub, o, d, jitter=True, generator=gen)["rgb"])
        render = torch.cat(renders).view(-1, res, res, 3)
        return render, (torch.cat(src_preds) if src_preds else None)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if cfg.freeze_nerf:  # the NeRF only supplies the CDM's conditions: no graph, no update
            with torch.no_grad():
                render, src_pred = self.render_views(batch)
        else:
            render, src_pred = self.render_views(batch)
        target_small = resize_hwc(batch["target_image"], cfg.render_resolution).permute(0, 2, 3, 1)
        # A frozen NeRF's reconstruction error is reported ("nerf_mse"), not optimised (only *_loss terms are).
        losses = {"nerf_mse" if cfg.freeze_nerf else "nerf_loss": F.mse_loss(render, target_small)}
        if src_pred is not None:
            losses["source_loss"] = cfg.source_view_weight * F.mse_loss(src_pred, batch["source_pixel_rgb"])
        if self.cdm is not None:
            from nerfdiff_ns.cdm.schedule import diffusion_loss
            from nerfdiff_ns.cdm.unet import relative_camera, to_diffusion_range

            cond = render.permute(0, 3, 1, 2)
            if not cfg.cdm.backprop_into_nerf:
                cond = cond.detach()
            src_imgs = batch["source_image"]
            x0 = to_diffusion_range(batch["target_image"].permute(0, 3, 1, 2))
            rel = relative_camera(batch["source_c2w"], batch["target_c2w"]) if self.cdm.config.camera_embedding_dim > 0 else None
            loss, _ = diffusion_loss(
                self.cdm, x0, to_diffusion_range(cond), to_diffusion_range(src_imgs.permute(0, 3, 1, 2)), rel,
                self.scheduler, timesteps=batch["timesteps"], noise=batch["noise"], drop_conditions=batch["drop"],
            )
            losses["diffusion_loss"] = cfg.cdm.loss_weight * loss
        losses["render"] = render.detach()
        return losses


def make_batch(dataset: Any, cfg: PretrainConfig, step: int, dist_info: DistInfo, device: torch.device) -> dict[str, Any]:
    """This rank's share of the global batch, every random choice drawn per sample."""
    per_rank = cfg.batch_size // dist_info.world_size
    first = dist_info.rank * per_rank
    samples, gens = [], []
    for j in range(first, first + per_rank):
        gen = sample_generator(cfg.seed, step, j)
        sample = draw_sample(dataset, gen)
        h, w = sample["source_image"].shape[:2]
        idx = torch.randint(h * w, (cfg.source_rays,), generator=gen)
        sample["source_pixels"] = torch.stack([idx % w, idx // w], -1)
        sample["source_pixel_rgb"] = sample["source_image"].reshape(-1, 3)[idx]
        if cfg.cdm.enabled:
            sample["timesteps"] = torch.randint(cfg.cdm.num_train_timesteps, (1,), generator=gen)
            sample["noise"] = torch.randn((3, h, w), generator=gen)
            sample["drop"] = torch.rand((1,), generator=gen) < cfg.cdm.condition_dropout_prob
        samples.append(sample)
        gens.append(gen)
    batch: dict[str, Any] = {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}
    if cfg.cdm.enabled:
        batch["timesteps"] = batch["timesteps"].view(-1)
        batch["drop"] = batch["drop"].view(-1)
    batch["generators"] = gens
    return batch


# ---------------------------------------------------------------------------------------------
# building, checkpointing, exporting


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


def config_to_json(cfg: PretrainConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), default=str, indent=2)


# Settings that change what the weights mean; a checkpoint only resumes with the same values.
# (Learning rates, loss weights, sample counts, steps ... may change between runs.)
NERF_RENDER_ONLY_KEYS = ("mlp_implementation", "num_coarse_samples", "num_fine_samples")
CDM_ARCHITECTURE_KEYS = (
    "enabled", "block_out_channels", "layers_per_block", "attention_levels", "prediction_type",
    "camera_embedding_dim", "num_train_timesteps", "beta_schedule",
)


def architecture_differences(saved_config_json: str, cfg: PretrainConfig) -> list[str]:
    """``["nerf.triplane_channels: 8 (checkpoint) != 16 (now)", ...]`` for the architecture settings."""
    saved = json.loads(saved_config_json)
    now = json.loads(config_to_json(cfg))
    keys = [("nerf", k) for k in now["nerf"] if k not in NERF_RENDER_ONLY_KEYS]
    keys += [("cdm", k) for k in CDM_ARCHITECTURE_KEYS]
    diffs = []
    for section, key in keys:
        old, new = saved.get(section, {}).get(key), now[section].get(key)
        if old != new:
            diffs.append(f"{section}.{key}: {old!r} (checkpoint) != {new!r} (now)")
    return diffs


class Trainer:
    """Owns the models, optimisers, EMA and the loop; ``run()`` trains to ``cfg.steps``."""

    def __init__(self, cfg: PretrainConfig) -> None:
        from nerfdiff_ns.data.multiview import MultiViewDataset

        if cfg.device == "auto":
            device_type = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device_type = cfg.device
        self.dist = init_distributed(device_type)
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} must divide by the number of processes {self.dist.world_size}")
        self.device = torch.device(device_type, self.dist.local_rank) if device_type == "cuda" else torch.device("cpu")
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.dataset = MultiViewDataset.from_split(cfg.data, "train", background=cfg.nerf.background)
        self.val_dataset = None
        if (Path(cfg.data) / "val").is_dir():
            self.val_dataset = MultiViewDataset.from_split(cfg.data, "val", background=cfg.nerf.background)
        self.cameras = estimate_camera_distribution(self.dataset)
        self.nerf = ImageConditionedNeRF(cfg.nerf, device=self.device)
        self.cdm = self.scheduler = self.ema = None
        if cfg.cdm.enabled:
            cdm, self.scheduler = build_cdm(cfg)
            self.cdm = cdm.to(self.device)
            self.ema = copy.deepcopy(self.cdm).requires_grad_(False)
        if cfg.freeze_nerf:
            if self.cdm is None:
                raise ValueError("--freeze-nerf trains only the CDM: it needs --cdm.enabled True.")
            self.nerf.requires_grad_(False)  # DDP and the optimiser then ignore the NeRF
        self.model = JointModel(cfg, self.nerf, self.cdm, self.scheduler)
        self.ddp_model: nn.Module = self.model
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.dist.local_rank] if device_type == "cuda" else None
            )
        groups = [] if cfg.freeze_nerf else [{"params": list(self.nerf.parameters()), "lr": cfg.learning_rate, "name": "nerf"}]
        if self.cdm is not None:
            groups.append({"params": list(self.cdm.parameters()), "lr": cfg.cdm.learning_rate, "name": "cdm"})
        self.optimizer = torch.optim.Adam(groups)
        self.base_lrs = [g["lr"] for g in groups]
        self.step = 0
        self.bad_steps = 0
        self.skipped_steps = 0
        self.ckpt_dir = Path(cfg.output_dir) / "checkpoints"
        self.jsonl_path = Path(cfg.output_dir) / "losses.jsonl" if (cfg.log_jsonl and self.dist.is_main) else None
        self.writer = None
        if self.dist.is_main and cfg.log_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(cfg.output_dir) / "tensorboard"))
        self.init_steps = 0  # steps the --init-from bundle had been trained for
        resumed = cfg.resume and self.maybe_resume()
        if cfg.init_from is not None and not resumed:
            self.init_from_bundle(Path(cfg.init_from))
        self._start_jsonl()

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "nerf": self.nerf.state_dict(),
            "cdm": self.cdm.state_dict() if self.cdm is not None else {},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "optimizer": self.optimizer.state_dict(),
            "rng": ckpt.rng_state(),
            "bad_steps": self.bad_steps,
            "skipped_steps": self.skipped_steps,
            "config": config_to_json(self.cfg),
            "init_steps": self.init_steps,
        }

    def save(self) -> None:
        if not self.dist.is_main:
            return
        ckpt.atomic_torch_save(self.state(), self.ckpt_dir / f"step-{self.step:09d}.pt")
        ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        self.export_bundle()

    def init_from_bundle(self, path: Path) -> None:
        """Copy a bundle's NeRF and CDM (EMA too, when it has one) into this run's models."""
        from nerfdiff_ns.bundle import BundleError, load_bundle

        bundle = load_bundle(path)
        saved = {"nerf": dataclasses.asdict(bundle.config.nerf), "cdm": bundle.config.extra.get("pretrain_config", {}).get("cdm", {})}
        diffs = architecture_differences(json.dumps(saved, default=str), self.cfg)
        if not bundle.config.has_cdm:
            diffs = [d for d in diffs if not d.startswith("cdm.")]
        if diffs:
            raise BundleError(
                f"--init-from {path} has a different architecture ({'; '.join(diffs)}). Use the preset and flags the "
                "bundle was trained with (its training_config.json), or drop --init-from to start from scratch."
            )
        self.nerf.load_state_dict(bundle.load_nerf("cpu").state_dict())
        if self.cdm is not None:
            if not bundle.config.has_cdm:
                raise BundleError(f"--init-from {path} has no CDM; pass a bundle trained with the CDM enabled.")
            self.cdm.load_state_dict(bundle.load_cdm("cpu", ema=False).state_dict())
            self.ema.load_state_dict(bundle.load_cdm("cpu", ema=True).state_dict())
        self.init_steps = int(bundle.config.extra.get("trained_steps", 0)) + int(bundle.config.extra.get("init_steps", 0))
        if self.dist.is_main:
            print(f"[nerfdiff] initialised from bundle {path} ({self.init_steps} steps trained before)")

    def maybe_resume(self) -> bool:
        """Load the latest checkpoint of output_dir; False when there is none."""
        path = ckpt.latest_checkpoint(self.ckpt_dir)
        if path is None:
            return False
        state = ckpt.load_checkpoint(path)
        diffs = architecture_differences(state["config"], self.cfg) if "config" in state else []
        if diffs:
            raise RuntimeError(
                f"checkpoint {path} was trained with a different architecture ({'; '.join(diffs)}). Resume with the "
                "same preset and flags, or pass --no-resume / a new --output-dir to start fresh."
            )
        try:
            self.nerf.load_state_dict(state["nerf"])
            if self.cdm is not None:
                self.cdm.load_state_dict(state["cdm"])
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise RuntimeError(
                f"checkpoint {path} does not match this configuration ({err}). Resume with the same preset and "
                "flags, or pass --no-resume / a new --output-dir to start fresh."
            ) from err
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.bad_steps = int(state.get("bad_steps", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.init_steps = int(state.get("init_steps", 0))
        if self.dist.is_main:
            print(f"[nerfdiff] resumed from {path} at step {self.step}")
        return True

    def export_bundle(self, path: Path | None = None) -> Path:
        from nerfdiff_ns.cdm.schedule import make_sampling_scheduler

        cfg = self.cfg
        bundle_cfg = BundleConfig(
            nerf=dataclasses.replace(cfg.nerf, mlp_implementation="torch" if self.nerf.implementation == "torch" else "auto"),
            cameras=self.cameras,
            extra={"trained_steps": self.step, "init_steps": self.init_steps, "init_from": str(cfg.init_from) if cfg.init_from else None,
                   "dataset": str(cfg.data), "pretrain_config": json.loads(config_to_json(cfg))},
        )
        sampling = None
        if self.cdm is not None:
            sampling = make_sampling_scheduler(
                num_train_timesteps=cfg.cdm.num_train_timesteps, beta_schedule=cfg.cdm.beta_schedule,
                prediction_type=cfg.cdm.prediction_type,
            )
        return save_bundle(path or Path(cfg.output_dir) / "bundle", bundle_cfg, self.nerf, self.cdm, self.ema, sampling)

    # -- per-step log ---------------------------------------------------------------------------
    def _start_jsonl(self) -> None:
        """A fresh run empties losses.jsonl; a resumed one drops the records after its checkpoint."""
        if self.jsonl_path is None:
            return
        kept = []
        if self.step > 0 and self.jsonl_path.is_file():
            for line in self.jsonl_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                if isinstance(record, dict) and int(record.get("step", 0)) <= self.step:
                    kept.append(json.dumps(record))
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.jsonl_path.with_name(f".{self.jsonl_path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.jsonl_path)

    def _log_jsonl(self, record: dict[str, Any]) -> None:
        if self.jsonl_path is not None:
            with open(self.jsonl_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _skip_step(self, reason: str) -> None:
        """Drop this step's update; stop after ``max_bad_steps`` in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_steps += 1
        if self.dist.is_main:
            print(f"[nerfdiff] step {self.step}: {reason}, step skipped ({self.bad_steps} in a row, {self.skipped_steps} in all)")
            if self.writer:
                self.writer.add_scalar("train/skipped_nonfinite", self.skipped_steps, self.step)
        if self.bad_steps >= self.cfg.max_bad_steps:
            raise FloatingPointError(
                f"{self.bad_steps} consecutive non-finite losses or gradients at step {self.step} (limit "
                f"--max-bad-steps {self.cfg.max_bad_steps}). Lower --learning-rate or --cdm.learning-rate, disable "
                "--mixed-precision, or resume from an earlier checkpoint."
            )
        self.step += 1
        self._log_jsonl({"step": self.step, "skipped": True, "reason": reason})

    # -- loop ---------------------------------------------------------------------------------
    def lr_factor(self) -> float:
        return min(1.0, (self.step + 1) / max(1, self.cfg.lr_warmup_steps))

    def train_step(self) -> dict[str, float] | None:
        cfg = self.cfg
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.lr_factor()
        batch = make_batch(self.dataset, cfg, self.step, self.dist, self.device)
        use_amp = cfg.mixed_precision and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = self.ddp_model(batch)
        losses = {k: v for k, v in out.items() if k.endswith("_loss")}
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        finite = torch.isfinite(all_reduce_mean(total.detach().float(), self.dist))
        if not bool(finite):
            self._skip_step("non-finite loss")
            return None
        total.backward()
        # The norm is always measured (max_norm inf scales by exactly 1) so non-finite gradients
        # (finite loss, overflowing backward) are caught before they reach the weights.
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if not bool(torch.isfinite(all_reduce_mean(grad_norm.detach().float(), self.dist))):
            self._skip_step("non-finite gradient")
            return None
        self.bad_steps = 0
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                decay = ema_decay(cfg.cdm.ema_decay, self.step)
                for e, p in zip(self.ema.parameters(), self.cdm.parameters()):
                    e.lerp_(p, 1.0 - decay)
        self.step += 1
        stats = {k: float(all_reduce_mean(v.detach().float(), self.dist)) for k, v in losses.items()}
        stats["total_loss"] = sum(stats.values())
        if "nerf_mse" in out:
            stats["nerf_mse"] = float(all_reduce_mean(out["nerf_mse"].detach().float(), self.dist))
        stats["grad_norm"] = float(grad_norm)
        with torch.no_grad():
            target = resize_hwc(batch["target_image"], cfg.render_resolution).permute(0, 2, 3, 1)
            mse = all_reduce_mean(F.mse_loss(out["render"], target).float(), self.dist)
            stats["train_psnr"] = float(-10 * torch.log10(mse.clamp(min=1e-10)))
        self._log_jsonl({"step": self.step, **stats})
        return stats

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Novel-view PSNR of the feed-forward NeRF on validation objects (source view 0)."""
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return {}
        self.nerf.eval()
        psnrs, panels = [], []
        for idx in range(min(self.cfg.num_eval_objects, len(self.val_dataset))):
            obj = self.val_dataset.load_object(idx)
            imgs, c2w = obj.images.to(self.device), obj.c2w.to(self.device)
            h, w = imgs.shape[1:3]
            k = obj.intrinsics.to(self.device)[None]
            tri = self.nerf.encode(imgs[:1])
            source = SourceView(c2w[:1], k, (h, w))
            targets = list(range(1, imgs.shape[0], max(1, imgs.shape[0] // 4)))
            for t in targets:
                out = self.nerf.render_image(tri, source, c2w[t : t + 1], k, h, w)
                mse = F.mse_loss(out["rgb"][0], imgs[t])
                psnrs.append(float(-10 * torch.log10(mse)))
            panels.append(torch.cat([imgs[0], out["rgb"][0].clamp(0, 1), imgs[targets[-1]]], 1))
        self.nerf.train()
        if self.writer:
            self.writer.add_image("val/input_render_target", torch.cat(panels, 0).cpu(), self.step, dataformats="HWC")
        return {"val_psnr": float(np.mean(psnrs))}

    def run(self) -> dict[str, float]:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        cfg = self.cfg
        last: dict[str, float] = {}
        progress = Progress(
            TextColumn("[bold]pretrain"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            disable=not self.dist.is_main,
        )
        start = time.time()
        with progress:
            task = progress.add_task("train", total=cfg.steps, completed=self.step, info="")
            while self.step < cfg.steps:
                stats = self.train_step()
                if stats is None:  # skipped; still checkpoint on schedule (and at the end)
                    if self.step % cfg.steps_per_checkpoint == 0 or self.step == cfg.steps:
                        self.save()
                    progress.update(task, completed=self.step, info=f"skipped {self.skipped_steps} non-finite")
                    continue
                last = stats
                if self.dist.is_main and self.writer and self.step % cfg.steps_per_log == 0:
                    for key, value in stats.items():
                        self.writer.add_scalar(f"train/{key}", value, self.step)
                    self.writer.add_scalar("train/steps_per_sec", self.step / max(1e-6, time.time() - start), self.step)
                if cfg.steps_per_eval and self.step % cfg.steps_per_eval == 0 and self.dist.is_main:
                    last.update(self.evaluate())
                    if self.writer:
                        for key, value in last.items():
                            if key.startswith("val"):
                                self.writer.add_scalar(f"val/{key}", value, self.step)
                if self.step % cfg.steps_per_checkpoint == 0 or self.step == cfg.steps:
                    self.save()
                progress.update(task, completed=self.step, info=f"loss {stats['total_loss']:.4f} psnr {stats['train_psnr']:.2f}")
        if self.writer:
            self.writer.flush()
        return last


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
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        (Path(cfg.output_dir) / "pretrain_config.json").write_text(config_to_json(cfg))
    trainer = Trainer(cfg)
    try:
        stats = trainer.run()
    finally:
        if trainer.dist.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if trainer.dist.is_main:
        print(json.dumps({"step": trainer.step, **stats}))
        print(f"[nerfdiff] bundle: {Path(cfg.output_dir) / 'bundle'}")


if __name__ == "__main__":
    entrypoint()
