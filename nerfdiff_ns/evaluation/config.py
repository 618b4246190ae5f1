"""``nerfdiff-eval`` settings: the methods, the CLI dataclasses, and the ns-train configs they start from."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Tuple

import tyro

from nerfdiff_ns.data.dataparsers import default_bundle_path
from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.ngd import NGDConfig, NGDMode


MethodName = Literal["feed-forward", "ngd", "input-only", "cdm-only", "sample-then-fit", "sds"]
ALL_METHODS: Tuple[str, ...] = ("feed-forward", "ngd", "input-only", "cdm-only", "sample-then-fit", "sds")
NERF_METHODS: Tuple[str, ...] = ("feed-forward", "ngd", "input-only", "sample-then-fit", "sds")
BaseMethod = Literal["nerfdiff-tiny", "nerfdiff"]
RESULT_FORMAT = "nerfdiff-eval-object"
SUMMARY_FORMAT = "nerfdiff-eval-summary"
FORMAT_VERSION = 1


@dataclass
class EvalNGDConfig(NGDConfig):
    """NGDConfig without ``mode`` on the command line: each method sets its own."""

    mode: tyro.conf.Suppress[NGDMode] = "ngd"  # type: ignore[assignment]


def ngd_for(knobs: NGDConfig, mode: str) -> NGDConfig:
    """A plain ``NGDConfig`` (what ns-train builds) with the user's knobs and the method's mode."""
    values = {f.name: copy.deepcopy(getattr(knobs, f.name)) for f in dataclasses.fields(NGDConfig)}
    values["mode"] = mode
    return NGDConfig(**values)


def base_trainer_config(name: str):
    """A fresh (deep) copy of the TrainerConfig ``ns-train <name>`` starts from."""
    from nerfdiff_ns import config as method_configs

    specs = {"nerfdiff-tiny": method_configs.nerfdiff_tiny_method, "nerfdiff": method_configs.nerfdiff_method}
    if name not in specs:
        raise FlagError(f"unknown base method {name!r}; pick one of {sorted(specs)}")
    return copy.deepcopy(specs[name].config)


@dataclass
class EvalConfig:
    """Benchmark single-image view synthesis on an SRN-format split (see the module docstring)."""

    data: Path
    """SRN-format split folder (e.g. data/synth32/val: object folders and protocol.json with
    input_view_index) or one object folder (rgb/, pose/, intrinsics.txt, or a transforms.json scene)."""
    bundle: Path = field(default_factory=default_bundle_path)
    """Pretrained bundle (NeRF + CDM) every method starts from."""
    output_dir: Path = Path("outputs/eval")
    """Where objects/, videos/, summary.json and summary.md are written."""
    methods: Tuple[MethodName, ...] = ("feed-forward", "ngd", "input-only", "cdm-only")
    """Methods to run, in this order: feed-forward, ngd, input-only, cdm-only, sample-then-fit, sds."""
    num_objects: int = 0
    """Evaluate the first N objects of the split (sorted by id; 0 = all)."""
    max_eval_views: int = 0
    """Targets per object: at most this many of the non-input views, evenly spaced (0 = all other views)."""
    input_view: Optional[int] = None
    """Input view index (default: the split's protocol.json input_view_index, else 0)."""
    shard: str = "0/1"
    """'i/n': process only the objects whose index (among the selected ones) % n == i."""
    base_method: BaseMethod = "nerfdiff-tiny"
    """The ns-train method whose TrainerConfig the NeRF methods run (defaults of --ngd.* follow it)."""
    ngd: EvalNGDConfig = field(default_factory=EvalNGDConfig)
    """NGD knobs (pipeline.ngd) for every NeRF method, the mode aside (each method sets it); cdm-only
    uses --ngd.diffusion-steps DDIM steps, --ngd.cfg-scale, --ngd.use-ema and --ngd.seed."""
    rays_per_batch: Optional[int] = None
    """Rays per NeRF iteration (pipeline.datamanager.train_num_rays_per_batch; default: the base method's)."""
    input_view_weight: Optional[float] = None
    """lambda_input, loss weight of input-view rays (pipeline.datamanager.input_view_weight; default: the base method's)."""
    lr_triplane: Optional[float] = None
    """Adam learning rate of the triplane (default: the base method's)."""
    lr_field: Optional[float] = None
    """Adam learning rate of the decoder MLP (default: the base method's)."""
    lr_final_factor: Optional[float] = None
    """Both learning rates at the last iteration / while the targets move, decayed over the final iterations
    (optimizers.*.scheduler.final_factor; 1 = constant; default: the base method's)."""
    rgb_loss: Optional[Literal["mse", "l1"]] = None
    """Photometric loss of the NeRF methods (pipeline.model.rgb_loss; default: the base method's)."""
    mask_loss_weight: Optional[float] = None
    """lambda_mask of the input view's opacity-vs-foreground loss (pipeline.model.mask_loss_weight; default: the base method's)."""
    opacity_entropy_weight: Optional[float] = None
    """lambda_opaque of the binary-entropy loss on every ray's opacity (pipeline.model.opacity_entropy_weight; default: the base method's)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of the NeRF and the CDM (machine.device_type); auto = cuda when available."""
    seed: Optional[int] = None
    """Seed of every method on every object. None keeps what ns-train uses (machine.seed 42, --ngd.seed);
    an integer sets both nerfstudio's machine.seed (python/numpy/torch) and the NGD/CDM noise seed."""
    videos: bool = True
    """Write a 360-degree orbit video per object and NeRF method (--no-videos to skip)."""
    video_frames: int = 24
    """Frames of each orbit video."""
    video_fps: int = 12
    """Frame rate of the orbit videos."""
    video_min_size: int = 128
    """Videos are upscaled (nearest neighbour, integer factor) to at least this many pixels per side."""
    grid_views: int = 4
    """Target views (rows) in the per-object comparison grid PNG (0 = no grid)."""
    cdm_batch_size: int = 16
    """Target views sampled together by cdm-only."""
    lpips: bool = True
    """Compute LPIPS when torchvision's backbone weights are already on disk (nothing is downloaded)."""
    overwrite: bool = False
    """Re-evaluate objects that already have objects/<id>.json (default: skip them, i.e. resume)."""
    keep_scratch: bool = False
    """Keep each run's nerfstudio folder (config.yml, checkpoint, tensorboard) under <output-dir>/scratch."""
    verbose: bool = False
    """Show nerfstudio's own console output and warnings (silenced by default)."""
    progress: bool = True
    """Show a progress bar over objects."""


@dataclass
class MergeConfig:
    """Build summary.json / summary.md from the objects/*.json of one or more nerfdiff-eval output folders
    (e.g. the shards of one benchmark)."""

    inputs: tyro.conf.Positional[Tuple[Path, ...]]
    """Output folders of nerfdiff-eval runs (each with objects/*.json)."""
    output_dir: Optional[Path] = None
    """Where summary.json and summary.md go (default: the first input folder)."""
