"""Pretraining settings: the tyro dataclasses of ``nerfdiff-pretrain`` and which of them are architecture.

Kept apart from the loop so presets, bundles and benchmarks can read a configuration without
building models. ``architecture_differences`` decides whether a checkpoint or an ``--init-from``
bundle may be loaded into a run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.nerf.image_nerf import NeRFConfig
from nerfdiff_ns.training.augment import Augmentation
from nerfdiff_ns.training.lr_schedule import LRSchedule
from nerfdiff_ns.training.timesteps import TimestepSampler


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
    dropout: float = 0.0
    """Dropout in the UNet's ResNet blocks during training (a regulariser for a CDM that over-fits few training
    objects, as Improved DDPM used on CIFAR-10; inactive when sampling). Not part of the architecture: a bundle
    trained without it continues with it."""
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
    timestep_sampling: Literal["uniform", "band"] = "uniform"
    """Training timesteps: 'uniform' over [0, T), or 'band': with probability --cdm.timestep-band-prob from the
    low-noise band [0, --cdm.timestep-band-max], else uniform (NGD trusts the CDM mostly at low noise)."""
    timestep_band_max: int = 250
    """Last timestep of the low-noise band ('band' sampling)."""
    timestep_band_prob: float = 0.7
    """Share of training samples drawn from the band ('band' sampling); the rest are uniform over [0, T)."""

    conditions: tuple[Literal["depth", "opacity", "features"], ...] = ()
    """Extra pixel-aligned conditions rendered from the NeRF at the target view and given to the CDM after the
    RGB render: depth, opacity (geometry hints), features (GeNVS's rendered feature image: the triplane
    features the NeRF's MLP decodes, one channel each). Recorded in the bundle; NGD renders them from the NeRF
    being finetuned. () = RGB render only (the paper)."""
    render_start_prob: float = 0.0
    """Share of training samples noised from the NeRF's render of the target view instead of the target itself,
    z = alpha_t R + sigma_t eps, still regressed toward the target (render-start training). NGD evaluates the
    CDM exactly there, on re-noised renders at low noise; a CDM trained only on re-noised targets learns to keep
    a blurry render. 0 = off (the paper's training)."""
    render_start_max_t: int = 250
    """Render-start samples draw t uniformly from [--cdm.render-start-min-t, --cdm.render-start-max-t] (where NGD
    trusts the CDM)."""
    render_start_min_t: int = 0
    """First timestep of render-start samples. Above 0, the lowest timesteps are trained only on re-noised targets,
    so there the CDM keeps drawing detail, while the band above corrects the render (random_urdfs experiment,
    benchmarks/README.md)."""
    render_start_snr_gamma: float = 5.0
    """Min-SNR-gamma weight min(SNR, gamma)/SNR of render-start samples: their noise target grows as 1/sigma at
    low t, this weights them as an x0 error instead."""

    def timestep_sampler(self) -> "TimestepSampler":
        """The training-timestep distribution these settings describe (validates them)."""
        return TimestepSampler(self.num_train_timesteps, self.timestep_sampling, self.timestep_band_max,
                               self.timestep_band_prob)

    def check_render_start(self) -> None:
        """Bad --cdm.render-start-* settings fail before any data or model work."""
        if not 0.0 <= self.render_start_prob <= 1.0:
            raise FlagError(f"--cdm.render-start-prob {self.render_start_prob} must be a probability in [0, 1]")
        if not 0 <= self.render_start_max_t < self.num_train_timesteps:
            raise FlagError(f"--cdm.render-start-max-t {self.render_start_max_t} must lie in "
                            f"[0, {self.num_train_timesteps - 1}] (a timestep of the noise schedule)")
        if not 0 <= self.render_start_min_t <= self.render_start_max_t:
            raise FlagError(f"--cdm.render-start-min-t {self.render_start_min_t} must lie in "
                            f"[0, --cdm.render-start-max-t {self.render_start_max_t}]")
        if self.render_start_snr_gamma <= 0:
            raise FlagError(f"--cdm.render-start-snr-gamma must be positive, got {self.render_start_snr_gamma}")


@dataclass
class PretrainConfig:
    """Joint NeRF + CDM pretraining on an SRN-format dataset."""

    preset: str = "tiny"
    """Preset from configs/pretrain/ (tiny, tiny-64, srn-128; test for the test suite) or a JSON file; flags after
    it override it."""
    data: Path = Path("data/synth")
    """Dataset root with train/ (and val/ for the periodic evaluation), one folder per object in the SRN layout or
    with a transforms.json (README, "Data format"; make one with nerfdiff-generate-data)."""
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
    target_rays: int = 0
    """Rays per object for the target-view NeRF loss: 0 renders every pixel of the target view with gradients;
    K > 0 takes the loss over K distinct random pixels of it (pixelNeRF trains on 128 rays per object), and a CDM that
    trains beside it gets the whole render as its condition, rendered without gradients. K = 256 of 32² leaves
    a quarter of the target rays' backward. Ignored with --freeze-nerf (nothing is backpropagated into the NeRF);
    not with --cdm.backprop-into-nerf, whose diffusion loss needs the whole render's gradients."""
    learning_rate: float = 1e-3
    """Adam learning rate of the NeRF."""
    lr_warmup_steps: int = 100
    """Linear warm-up steps for both models."""
    lr_schedule: LRSchedule = "constant"
    """After the warm-up: constant, or cosine decay to --lr-min-factor times the rate at the last step
    (lets a continued stage settle; see training/lr_schedule.py)."""
    lr_min_factor: float = 0.1
    """Final learning rate as a fraction of the base rate, for --lr-schedule cosine."""
    grad_clip: float = 1.0
    """Max gradient norm (0 disables)."""
    mixed_precision: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    seed: int = 0
    """Seed of every random choice; runs with the same seed and global batch are identical."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    loader_workers: int = 0
    """Worker processes that build the next batches while the device trains (a torch DataLoader; the run is the
    same). 0 builds each batch in the training process, which suits the CPU (workers would take its cores); on
    a GPU, 4-8 hide the batch assembly (0.25-0.5 s a step at batch 1024 on this project's CPU)."""
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
    must match. A NeRF-only run (--cdm.no-enabled) takes the NeRF alone. Ignored when output_dir already has a
    checkpoint (that run resumes instead)."""
    init_cdm_from: Path | None = None
    """Take the CDM and its EMA from this bundle instead of --init-from's (whose NeRF is still used). For a
    resolution change: finetune a 32² bundle's NeRF at 64² (--cdm.no-enabled), then train the CDM at 64² on it
    starting from the 32² CDM (README, "64²"). Ignored when output_dir already has a checkpoint."""
    freeze_nerf: bool = False
    """Train only the CDM: the NeRF renders its conditions without gradients and is not updated. A second
    stage after joint training (with --init-from) that spends every step's compute on the diffusion model."""
    render_cache: bool = True
    """With --freeze-nerf: render the frozen NeRF's conditions once, before training, for a fixed set of (object,
    source view, target view) triples (without jitter, as NGD renders), so each step runs the UNet alone. Stored
    in output_dir/render_cache.safetensors and reused on resume while the NeRF and the data are unchanged.
    --no-render-cache renders every step's samples live (any view pair, jittered)."""
    render_cache_pairs: int = 24
    """(source, target) view pairs per training object in the render cache: the targets run through a random
    order of the object's views (each view once per round), each with a random other view as the source."""
    augment: tuple[Augmentation, ...] = ()
    """Symmetries that make new samples from each one (training/augment.py): 'hflip' mirrors the scene (images
    flipped, cameras mirrored), 'channels' permutes the RGB channels of all of a sample's images alike (only for
    data whose colours are drawn without regard to channel, such as random_urdfs). () = none."""

    def feature_condition_channels(self) -> int:
        """F of the CDM's 'features' condition: the NeRF's feature width (0 when the CDM does not take it)."""
        from nerfdiff_ns.nerf.triplane import feature_dim

        wanted = self.cdm.enabled and "features" in self.cdm.conditions
        return feature_dim(self.nerf.triplane_channels, self.nerf.aggregation) if wanted else 0

    def condition_channels(self) -> int:
        """3 + E: channels of the render condition the CDM reads (RGB, then ``cdm.conditions``)."""
        from nerfdiff_ns.cdm.conditions import extra_condition_channels

        kinds = self.cdm.conditions if self.cdm.enabled else ()
        return 3 + extra_condition_channels(kinds, self.feature_condition_channels())


def config_to_json(cfg: PretrainConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), default=str, indent=2)


# Settings that change what the weights mean; a checkpoint only resumes with the same values.
# (Learning rates, loss weights, sample counts, steps ... may change between runs.)
NERF_RENDER_ONLY_KEYS = ("mlp_implementation", "num_coarse_samples", "num_fine_samples")
CDM_ARCHITECTURE_KEYS = (
    "enabled", "block_out_channels", "layers_per_block", "attention_levels", "prediction_type",
    "camera_embedding_dim", "num_train_timesteps", "beta_schedule", "conditions",
)
# Resolution settings the convolutional ('unet') encoder's and the CDM's weights do not depend on: an
# --init-from bundle trained at another resolution starts a run at this one (e.g. 32² -> 64²).
RESOLUTION_KEYS = ("nerf.image_size", "nerf.triplane_resolution")
# What an architecture setting meant before it existed (older checkpoints and bundles lack the key).
ARCHITECTURE_DEFAULTS = {("cdm", "conditions"): []}


def architecture_differences(saved_config_json: str, cfg: PretrainConfig, source: str = "checkpoint") -> list[str]:
    """``["nerf.triplane_channels: 8 (checkpoint) != 16 (now)", ...]`` for the architecture settings; ``source``
    names where the saved settings come from."""
    saved = json.loads(saved_config_json)
    now = json.loads(config_to_json(cfg))
    for side in (saved, now):  # written by bundle export (the ViT/DINOv2 config it resolved), not a setting
        encoder = side.get("nerf", {}).get("encoder")
        if isinstance(encoder, dict):
            encoder.pop("backbone_config", None)
    keys = [("nerf", k) for k in now["nerf"] if k not in NERF_RENDER_ONLY_KEYS]
    keys += [("cdm", k) for k in CDM_ARCHITECTURE_KEYS]
    diffs = []
    for section, key in keys:
        old = saved.get(section, {}).get(key, ARCHITECTURE_DEFAULTS.get((section, key)))
        new = now[section].get(key)
        if old != new:
            diffs.append(f"{section}.{key}: {old!r} ({source}) != {new!r} (now)")
    return diffs


# Settings that may differ between the runs of one output folder without changing the trajectory.
RESUME_NEUTRAL_KEYS = ("resume", "output_dir", "steps_per_log", "steps_per_checkpoint", "steps_per_eval",
                       "keep_checkpoints", "log_tensorboard", "log_jsonl", "loader_workers", "device",
                       "init_from", "init_cdm_from")  # (a resume ignores --init-from)


def resumed_setting_changes(saved_config_json: str, cfg: PretrainConfig) -> list[str]:
    """``["batch_size: 8 -> 4", ...]``: training settings a resumed run changes (allowed, but the run then no longer
    follows the trajectory an uninterrupted one would, so the user hears about it)."""
    def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(leaves(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    saved, now = leaves(json.loads(saved_config_json)), leaves(json.loads(config_to_json(cfg)))
    neutral = set(RESUME_NEUTRAL_KEYS)
    if cfg.lr_schedule == "constant":  # a cosine rate depends on the step count; a constant one does not
        neutral.add("steps")
    if "data" in saved and Path(str(saved["data"])).resolve() == Path(str(now["data"])).resolve():
        neutral.add("data")  # the same folder spelt another way
    return [f"{key}: {saved[key]!r} -> {now[key]!r}" for key in now
            if key in saved and saved[key] != now[key] and key not in neutral]
