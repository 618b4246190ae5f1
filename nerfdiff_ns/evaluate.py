"""nerfdiff-eval: the single-image view-synthesis benchmark (SRN protocol, DESIGN §3).

For every object of an SRN-format split: the protocol's input view is the one real image, every
other view (or ``--max-eval-views`` of them, evenly spaced) is a target. Each method turns the
input image into predictions of the targets; metrics are averaged per object, then over objects.

Methods (the ablations of DESIGN §1.3, all from the same code):

* ``feed-forward``    the bundle's NeRF, triplane predicted by the encoder, no finetuning;
* ``ngd``             NeRF-guided distillation (the method);
* ``input-only``      finetuning on the input view alone (control: does the CDM help at all?);
* ``sample-then-fit`` sample every virtual view with the CDM first, then fit the NeRF to them;
* ``sds``             score distillation on renders of the virtual views;
* ``cdm-only``        no NeRF finetuning: one full DDIM sample per target view from the CDM,
  conditioned on the feed-forward render of that view and the input image (geometry-free, 3DiM-like).

Every NeRF method runs exactly what ``ns-train nerfdiff-tiny`` (or ``nerfdiff``, ``--base-method``)
runs, in this process: the method's TrainerConfig with the object as a ``nerfdiff-srn-object``
dataparser, ``pipeline.ngd.mode`` set to the method, then ``Trainer.setup(); Trainer.train()``; the
evaluation views are rendered with ``model.get_outputs_for_camera``.

Outputs under ``--output-dir``::

    objects/<id>.json    per method: metrics (mean over the object's targets), per-view values, time, memory
    objects/<id>.png     rows = a few targets; columns = input, ground truth, one per method
    videos/<id>_<method>.mp4   360-degree orbit at the input camera's distance and elevation
    summary.json / summary.md  mean +- std over objects per method (rebuilt from all objects/*.json)

Runs resume (objects with a JSON are skipped) and shard (``--shard i/n``); ``nerfdiff-eval merge
DIR [DIR ...]`` (or ``nerfdiff-eval-merge``) rebuilds the summary from several output folders.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import json
import math
import os
import random
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
import tyro

from nerfdiff_ns.data.dataparsers import default_bundle_path
from nerfdiff_ns.metrics import HIGHER_IS_BETTER, METRICS, MetricSuite, mean_or_none
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
        raise ValueError(f"unknown base method {name!r}; pick one of {sorted(specs)}")
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


# ---------------------------------------------------------------------------------------------
# objects, shards


def parse_shard(shard: str) -> Tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not match:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {shard}: need n >= 1 and 0 <= i < n")
    return index, count


def _is_object(folder: Path) -> bool:
    from nerfdiff_ns.data.srn import is_srn_object

    return folder.is_dir() and (is_srn_object(folder) or (folder / "transforms.json").is_file())


def list_objects(data: Path) -> List[Path]:
    """Object folders of a split folder (natural order), or ``[data]`` for one object folder."""
    from nerfdiff_ns.data.errors import DataError
    from nerfdiff_ns.data.srn import list_srn_objects

    data = Path(data)
    if not data.exists():
        raise DataError(data, "not found", "pass an SRN split folder (e.g. data/synth32/val) or one object folder with --data")
    if _is_object(data):
        return [data]
    if not data.is_dir():
        raise DataError(data, "is not a folder", "pass an SRN split folder or one object folder with --data")
    try:
        return list_srn_objects(data.parent, data.name)
    except DataError:
        splits = sorted(p.name for p in data.iterdir() if p.is_dir() and any(_is_object(q) for q in p.iterdir()))
        pick = next((s for s in ("val", "test") if s in splits), splits[0] if splits else "")
        hint = f" (it has splits: {', '.join(splits)}; pass e.g. {data / pick})" if splits else ""
        raise DataError(data, f"holds no object folders{hint}", "pass an SRN split folder or one object folder with --data") from None


def select_objects(objects: Sequence[Path], num_objects: int, shard: str) -> List[Tuple[int, Path]]:
    """(index, folder) of the first ``num_objects`` objects that belong to shard ``i/n``."""
    index, count = parse_shard(shard)
    chosen = list(objects)[: num_objects] if num_objects > 0 else list(objects)
    return [(i, obj) for i, obj in enumerate(chosen) if i % count == index]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device


# ---------------------------------------------------------------------------------------------
# measuring


def _proc_status_kb(key: str) -> Optional[int]:
    try:
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory of a block: CUDA ``max_memory_allocated`` on CUDA, else the process RSS high-water
    mark (``VmHWM``, reset through ``/proc/self/clear_refs``; falls back to the whole-process peak)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.result: Dict[str, Any] = {}

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        self.cuda = self.device.startswith("cuda") and torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM to the current RSS
            self.reset = True
        except OSError:
            pass
        self.rss_before = _proc_status_kb("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        hwm = _proc_status_kb("VmHWM")
        kind = "cpu_rss_hwm" if self.reset else "cpu_rss_hwm_whole_process"
        if hwm is None:
            try:
                import resource

                hwm = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux
                kind = "cpu_ru_maxrss_whole_process"
            except Exception:
                kind = "unavailable"
        rss_mb = None if hwm is None else hwm / 1024.0
        self.result = {
            "peak_memory_mb": rss_mb, "memory_kind": kind, "peak_rss_mb": rss_mb,
            "rss_before_mb": None if self.rss_before is None else self.rss_before / 1024.0,
        }
        if self.cuda:
            torch.cuda.synchronize()
            self.result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            self.result["memory_kind"] = "cuda_max_memory_allocated"


def _now(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


# ---------------------------------------------------------------------------------------------
# running one method through nerfstudio's Trainer


def _set_random_seed(seed: int) -> None:
    """What ``ns-train``'s train_loop does before building the trainer."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _reset_nerfstudio_globals() -> None:
    """nerfstudio keeps writers and profilers in module globals; every Trainer.setup() appends to them."""
    from nerfstudio.utils import profiler, writer

    for w in list(writer.EVENT_WRITERS):
        tb = getattr(w, "tb_writer", None)
        if tb is not None:
            with contextlib.suppress(Exception):
                tb.close()
    writer.EVENT_WRITERS.clear()
    writer.EVENT_STORAGE.clear()
    writer.GLOBAL_BUFFER.clear()
    profiler.PROFILER.clear()


@contextlib.contextmanager
def nerfstudio_session(verbose: bool) -> Iterator[None]:
    """Silence nerfstudio's console and warnings (unless verbose); clean its globals afterwards."""
    import rich
    from nerfstudio.utils.rich_utils import CONSOLE

    consoles = [CONSOLE, rich.get_console()]  # nerfstudio's console; its `track` bars use rich's global one
    quiet = [c.quiet for c in consoles]
    _reset_nerfstudio_globals()
    with warnings.catch_warnings():
        if not verbose:
            for c in consoles:
                c.quiet = True
            warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for c, q in zip(consoles, quiet):
                c.quiet = q
            _reset_nerfstudio_globals()


def make_trainer_config(cfg: EvalConfig, obj: Path, mode: str, scratch: Path, device: str):
    """The TrainerConfig ``ns-train <base-method> ... nerfdiff-srn-object --data <obj>`` would run."""
    from nerfdiff_ns.data.dataparsers import SRNObjectDataParserConfig

    tc = base_trainer_config(cfg.base_method)
    tc.pipeline.model.bundle = Path(cfg.bundle)
    tc.pipeline.datamanager.dataparser = SRNObjectDataParserConfig(
        data=Path(obj), input_view=cfg.input_view, max_eval_views=cfg.max_eval_views
    )
    ngd = ngd_for(cfg.ngd, mode)
    if cfg.seed is not None:
        ngd.seed = int(cfg.seed)
        tc.machine.seed = int(cfg.seed)
    tc.pipeline.ngd = ngd
    dm = tc.pipeline.datamanager
    if cfg.rays_per_batch is not None:
        dm.train_num_rays_per_batch = int(cfg.rays_per_batch)
    if cfg.input_view_weight is not None:
        dm.input_view_weight = float(cfg.input_view_weight)
    if cfg.lr_triplane is not None:
        tc.optimizers["triplane"]["optimizer"].lr = float(cfg.lr_triplane)
    if cfg.lr_field is not None:
        tc.optimizers["field"]["optimizer"].lr = float(cfg.lr_field)
    tc.output_dir = Path(scratch)
    tc.experiment_name = Path(obj).name
    tc.timestamp = mode
    tc.vis = "tensorboard"  # no viewer server, no wandb; nerfstudio's eval-image iterations still run
    tc.viewer.quit_on_train_completion = True
    tc.machine.device_type = device  # type: ignore[assignment]
    tc.logging.local_writer.enable = False
    tc.logging.profiler = "none"
    return tc


@dataclass
class EvalViews:
    """The evaluation views of one object as the datamanager holds them."""

    names: List[str]
    cameras: Any  # nerfstudio Cameras [V]
    images: torch.Tensor  # [V, H, W, 3]
    input_image: torch.Tensor  # [H, W, 3]
    input_index: int
    input_name: str


def eval_views_of(pipeline) -> EvalViews:
    dm = pipeline.datamanager
    dataset = dm.eval_dataset
    images = torch.stack([dataset.get_image_float32(i)[..., :3] for i in range(len(dataset))])
    parser = dm.dataparser
    index = parser.input_index()
    input_name = Path(dm.train_dataset.image_filenames[0]).stem if len(dm.train_dataset.image_filenames) else str(index)
    return EvalViews(
        names=[Path(p).stem for p in dataset.image_filenames], cameras=dataset.cameras, images=images,
        input_image=pipeline.model.input_image.detach().float().cpu(), input_index=index, input_name=input_name,
    )


@torch.no_grad()
def render_cameras(model, cameras) -> torch.Tensor:
    """``[V, H, W, 3]`` renders of nerfstudio ``cameras`` with ``model.get_outputs_for_camera`` (eval mode)."""
    was_training = model.training
    model.eval()
    out = [model.get_outputs_for_camera(cameras[i : i + 1])["rgb"].detach().float().cpu().clamp(0, 1) for i in range(len(cameras))]
    model.train(was_training)
    return torch.stack(out)


def orbit_cameras(model, frames: int):
    """A 360-degree orbit at the input camera's distance and elevation, with the input's intrinsics."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    from nerfdiff_ns.data.cameras import azimuth_elevation, orbit_pose

    az, el, dist = azimuth_elevation(model.input_c2w[0].detach().float().cpu())
    c2w = torch.stack([orbit_pose(dist, az + 360.0 * k / frames, el) for k in range(frames)])
    fx, fy, cx, cy = model.input_intrinsics[0].detach().float().cpu().tolist()
    height, width = model.input_size
    ones = torch.ones(frames, 1)
    return Cameras(
        camera_to_worlds=c2w[:, :3, :4], fx=ones * fx, fy=ones * fy, cx=ones * cx, cy=ones * cy,
        width=width, height=height, camera_type=CameraType.PERSPECTIVE,
    )


def _upscale_factor(height: int, width: int, min_size: int) -> int:
    return max(1, math.ceil(min_size / max(1, min(height, width))))


def _to_uint8(frames: torch.Tensor, factor: int) -> np.ndarray:
    x = frames.clamp(0, 1)
    if factor > 1:
        x = x.repeat_interleave(factor, dim=-3).repeat_interleave(factor, dim=-2)
    return (x * 255.0).round().to(torch.uint8).numpy()


def write_video(path: Path, frames: torch.Tensor, fps: int, min_size: int) -> Path:
    """Write ``[F, H, W, 3]`` frames in [0, 1] as an H.264 mp4 with imageio-ffmpeg's bundled ffmpeg."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    arr = _to_uint8(frames, _upscale_factor(height, width, min_size))
    if arr.shape[1] % 2 or arr.shape[2] % 2:  # yuv420p needs even sides: pad with the last row/column
        arr = np.pad(arr, ((0, 0), (0, arr.shape[1] % 2), (0, arr.shape[2] % 2), (0, 0)), mode="edge")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = imageio_ffmpeg.write_frames(str(tmp), (arr.shape[2], arr.shape[1]), fps=fps, macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for frame in arr:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    os.replace(tmp, path)
    return path


@dataclass
class MethodRun:
    renders: torch.Tensor  # [V, H, W, 3]
    views: EvalViews
    cost: Dict[str, Any]
    iterations: int
    video: Optional[Path] = None


@torch.no_grad()
def cdm_only_predictions(pipeline, cameras, batch_size: int) -> torch.Tensor:
    """CDM-only: a full DDIM sample per target view, conditioned on the feed-forward NeRF's render of
    that view (rendered at the CDM's resolution, like NGD's virtual views) and the input image;
    returned at the target views' size ``[V, H, W, 3]``."""
    from nerfdiff_ns.cdm.unet import resize_to

    model = pipeline.model
    ngd = pipeline.config.ngd
    c2w = torch.eye(4).repeat(len(cameras), 1, 1)
    c2w[:, :3, :4] = cameras.camera_to_worlds.float().cpu()
    diffusion = pipeline.make_diffusion(c2w)
    size = diffusion.resolution[0]
    device = pipeline.device
    height, width = int(cameras.height[0]), int(cameras.width[0])
    k = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], -1).float().cpu()
    k = k * torch.tensor([size / width, size / height, size / width, size / height])
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(cameras), max(1, batch_size)):
        sl = slice(start, start + max(1, batch_size))
        cond = model.nerf.render_image(model.triplane, model.source, c2w[sl].to(device), k[sl].to(device), size, size)["rgb"]
        sample = diffusion.sample_independently(cond.clamp(0, 1), views=sl)  # [v, size, size, 3]
        outputs.append(resize_to(sample.permute(0, 3, 1, 2).float(), (height, width)).permute(0, 2, 3, 1).clamp(0, 1).cpu())
    model.train(was_training)
    return torch.cat(outputs)


def run_method(cfg: EvalConfig, obj: Path, method: str, scratch_root: Path, device: str, video_path: Optional[Path]) -> MethodRun:
    """Run one method on one object through nerfstudio's Trainer; render every evaluation view."""
    mode = "feed-forward" if method == "cdm-only" else method
    scratch = scratch_root / f"{obj.name}-{method}"
    tc = make_trainer_config(cfg, obj, mode, scratch, device)
    cost: Dict[str, Any] = {}
    try:
        with nerfstudio_session(cfg.verbose):
            with PeakMemory(device) as memory:
                t0 = _now(device)
                tc.set_timestamp()
                tc.save_config()
                _set_random_seed(tc.machine.seed)
                trainer = tc.setup(local_rank=0, world_size=1)
                trainer.setup()
                pipeline = trainer.pipeline
                model = pipeline.model
                t1 = _now(device)
                iterations = 0
                if method == "feed-forward":
                    # Nothing to train: ns-train's feed-forward mode would run one iteration with a zeroed
                    # loss (a zero Adam step). Rendering the encoder's triplane directly is the same NeRF.
                    if not torch.equal(model.triplane.detach(), model.initial_triplane):
                        raise RuntimeError("feed-forward: the triplane differs from the encoder's prediction")
                elif method == "cdm-only":
                    pass
                else:
                    iterations = int(trainer.config.max_num_iterations)
                    trainer.train()
                t2 = _now(device)
                cameras = pipeline.datamanager.eval_dataset.cameras
                if method == "cdm-only":
                    renders = cdm_only_predictions(pipeline, cameras, cfg.cdm_batch_size)
                    t3 = _now(device)
                    cost.update(seconds_setup=t1 - t0, seconds_fit=t3 - t2, seconds_render=0.0)
                else:
                    pipeline.eval()
                    renders = render_cameras(model, cameras)
                    t3 = _now(device)
                    cost.update(seconds_setup=t1 - t0, seconds_fit=t2 - t1, seconds_render=t3 - t2)
                cost["seconds"] = t3 - t0
            cost.update(memory.result)
            views = eval_views_of(pipeline)  # ground truth, outside the timed block
            video = None
            if video_path is not None and method in NERF_METHODS:
                t4 = _now(device)
                pipeline.eval()
                frames = render_cameras(model, orbit_cameras(model, cfg.video_frames))
                video = write_video(video_path, frames, cfg.video_fps, cfg.video_min_size)
                cost["seconds_video"] = _now(device) - t4
            trainer.shutdown()
            del trainer, pipeline, model
    finally:
        if not cfg.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return MethodRun(renders=renders, views=views, cost=cost, iterations=iterations, video=video)


# ---------------------------------------------------------------------------------------------
# one object


def _json_safe(value: Any) -> Any:
    """NaN/inf -> null, tuples -> lists, paths -> str (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    return value


def write_json(path: Path, data: Any) -> None:
    """Atomic write: a crash never leaves a half-written JSON (which resume would then skip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def grid_rows(num_views: int, rows: int) -> List[int]:
    if rows <= 0 or num_views == 0:
        return []
    rows = min(rows, num_views)
    return [int(i * num_views / rows) for i in range(rows)]


def comparison_grid(input_image: torch.Tensor, gt: torch.Tensor, renders: Dict[str, torch.Tensor], rows: List[int],
                    min_cell: int = 64, gap: int = 2) -> torch.Tensor:
    """``[H', W', 3]`` grid: one row per target view; columns input, ground truth, each method."""
    import torch.nn.functional as F

    height, width = gt.shape[1:3]
    inp = input_image
    if tuple(inp.shape[:2]) != (height, width):
        inp = F.interpolate(inp.permute(2, 0, 1)[None], size=(height, width), mode="bilinear", antialias=True)[0].permute(1, 2, 0)
    factor = _upscale_factor(height, width, min_cell)
    cells = []
    for r in rows:
        row = [inp, gt[r]] + [renders[m][r] for m in renders]
        cells.append(row)
    ch, cw = height * factor, width * factor
    ncols = len(cells[0])
    canvas = torch.full((len(rows) * (ch + gap) - gap, ncols * (cw + gap) - gap, 3), 0.5)
    for i, row in enumerate(cells):
        for j, image in enumerate(row):
            big = image.clamp(0, 1).repeat_interleave(factor, 0).repeat_interleave(factor, 1)
            canvas[i * (ch + gap) : i * (ch + gap) + ch, j * (cw + gap) : j * (cw + gap) + cw] = big
    return canvas


def settings_of(cfg: EvalConfig, device: str) -> Dict[str, Any]:
    """Everything that decides the numbers (stored with each object; merge warns when they differ)."""
    tc = base_trainer_config(cfg.base_method)
    dm = tc.pipeline.datamanager
    ngd = dataclasses.asdict(cfg.ngd)
    ngd.pop("mode")
    if cfg.seed is not None:
        ngd["seed"] = int(cfg.seed)
    return {
        "bundle": str(Path(cfg.bundle).resolve()),
        "base_method": cfg.base_method,
        "ngd": ngd,
        "rays_per_batch": cfg.rays_per_batch if cfg.rays_per_batch is not None else dm.train_num_rays_per_batch,
        "input_view_weight": cfg.input_view_weight if cfg.input_view_weight is not None else dm.input_view_weight,
        "lr_triplane": cfg.lr_triplane if cfg.lr_triplane is not None else tc.optimizers["triplane"]["optimizer"].lr,
        "lr_field": cfg.lr_field if cfg.lr_field is not None else tc.optimizers["field"]["optimizer"].lr,
        "machine_seed": int(cfg.seed) if cfg.seed is not None else int(tc.machine.seed),
        "max_eval_views": cfg.max_eval_views,
        "input_view": cfg.input_view,
        "device": device,
    }


def evaluate_object(cfg: EvalConfig, obj: Path, suite: MetricSuite, device: str, on_method=None) -> Dict[str, Any]:
    """Run every method on one object, write objects/<id>.json (+ grid, videos); return the record."""
    out = Path(cfg.output_dir)
    object_id = obj.name
    record: Dict[str, Any] = {
        "format": RESULT_FORMAT, "format_version": FORMAT_VERSION, "object_id": object_id,
        "object_dir": str(obj.resolve()), "settings": settings_of(cfg, device), "methods": {},
    }
    renders: Dict[str, torch.Tensor] = {}
    reference: Optional[EvalViews] = None
    for method in cfg.methods:
        if on_method is not None:
            on_method(method)
        video_path = out / "videos" / f"{object_id}_{method}.mp4" if cfg.videos and method in NERF_METHODS else None
        run = run_method(cfg, obj, method, out / "scratch", device, video_path)
        views = run.views
        if reference is None:
            reference = views
            record.update(
                input_view=views.input_index, input_view_name=views.input_name, eval_views=views.names,
                num_eval_views=len(views.names), image_size=list(views.images.shape[1:3]),
            )
        elif views.names != reference.names or not torch.equal(views.images, reference.images):
            raise RuntimeError(f"{obj}: method {method} saw different evaluation views than {cfg.methods[0]}")
        per_view = suite.per_view(run.renders, views.images)
        record["methods"][method] = {
            "metrics": {name: mean_or_none(per_view[name]) for name in METRICS},
            "per_view": per_view,
            "iterations": run.iterations,
            **run.cost,
            "video": None if run.video is None else str(run.video.relative_to(out)) if run.video.is_relative_to(out) else str(run.video),
        }
        renders[method] = run.renders
    assert reference is not None
    record["metric_notes"] = dict(suite.notes)
    rows = grid_rows(len(reference.names), cfg.grid_views)
    if rows:
        from nerfdiff_ns.data.images import save_rgb

        grid = comparison_grid(reference.input_image, reference.images, renders, rows)
        save_rgb(out / "objects" / f"{object_id}.png", grid)
        record["grid"] = {"file": f"objects/{object_id}.png", "rows": [reference.names[r] for r in rows],
                          "columns": ["input", "ground truth", *renders.keys()]}
    write_json(out / "objects" / f"{object_id}.json", record)  # last: its presence marks the object done
    return record


# ---------------------------------------------------------------------------------------------
# summary


def load_records(dirs: Sequence[Path]) -> Dict[str, Dict[str, Any]]:
    """Every ``objects/*.json`` of the given output folders, by object id (a later folder wins on duplicates)."""
    records: Dict[str, Dict[str, Any]] = {}
    for d in dirs:
        folder = Path(d) / "objects"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist: is {d} a nerfdiff-eval output folder?")
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError) as err:
                raise ValueError(f"{path} is not valid JSON ({err}); delete it to re-evaluate that object") from err
            if data.get("format") != RESULT_FORMAT:
                continue
            records[str(data["object_id"])] = data
    return records


def _stats(values: List[Optional[float]]) -> Dict[str, Any]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(finite, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": len(finite)}


def _natural(name: str) -> tuple:
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def summarize(records: Dict[str, Dict[str, Any]], sources: Sequence[Path] = ()) -> Dict[str, Any]:
    """Mean and (population) std over objects of each method's per-object means."""
    ids = sorted(records, key=_natural)
    present = {m for r in records.values() for m in r.get("methods", {})}
    order = [m for m in ALL_METHODS if m in present] + sorted(present - set(ALL_METHODS))
    methods: Dict[str, Any] = {}
    for m in order:
        rows = [records[i]["methods"][m] for i in ids if m in records[i].get("methods", {})]
        methods[m] = {
            "num_objects": len(rows),
            "metrics": {name: _stats([r["metrics"].get(name) for r in rows]) for name in METRICS},
            "cost": {key: _stats([r.get(key) for r in rows]) for key in ("seconds", "seconds_fit", "peak_memory_mb")},
            "memory_kind": sorted({str(r.get("memory_kind")) for r in rows}),
        }
    notes: Dict[str, str] = {}
    settings: List[Dict[str, Any]] = []
    for i in ids:
        notes.update(records[i].get("metric_notes", {}))
        s = records[i].get("settings")
        if s not in settings:
            settings.append(s)
    return {
        "format": SUMMARY_FORMAT, "format_version": FORMAT_VERSION,
        "num_objects": len(ids), "objects": ids, "methods": methods, "metric_notes": notes,
        "settings": settings[0] if len(settings) == 1 else settings,
        "settings_consistent": len(settings) <= 1,
        "std": "population standard deviation over objects (ddof=0)",
        "sources": [str(Path(s)) for s in sources],
    }


def _fmt(stat: Dict[str, Any], digits: int) -> str:
    if stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def summary_markdown(summary: Dict[str, Any]) -> str:
    digits = {"psnr": 2, "seconds": 1, "seconds_fit": 1, "peak_memory_mb": 0}
    arrows = {k: ("↑" if v else "↓" if v is False else "→1") for k, v in HIGHER_IS_BETTER.items()}
    shown = [m for m in METRICS if any(s["metrics"][m]["n"] for s in summary["methods"].values())]
    lines = [
        "# nerfdiff-eval summary", "",
        f"Objects: {summary['num_objects']}. Mean ± std over objects of each object's mean over its target views.", "",
        "| method | objects | " + " | ".join(f"{m} {arrows[m]}" for m in shown) + " | seconds | peak MB |",
        "|---|---:|" + "---:|" * (len(shown) + 2),
    ]
    for name, s in summary["methods"].items():
        cells = [_fmt(s["metrics"][m], digits.get(m, 3)) for m in shown]
        cells += [_fmt(s["cost"]["seconds"], 1), _fmt(s["cost"]["peak_memory_mb"], 0)]
        lines.append(f"| {name} | {s['num_objects']} | " + " | ".join(cells) + " |")
    if summary.get("metric_notes"):
        lines += ["", "Notes (metrics shown as n/a or left out):"]
        for key, note in summary.get("metric_notes", {}).items():
            lines.append(f"- `{key}`: {note}")
    if not summary.get("settings_consistent", True):
        lines += ["", "**Warning:** the objects were evaluated with different settings (see summary.json)."]
    lines += ["", "sharpness = Laplacian energy of the prediction / of the ground truth (blur < 1, ground truth = 1).", ""]
    return "\n".join(lines)


def write_summary(output_dir: Path, sources: Sequence[Path]) -> Dict[str, Any]:
    summary = summarize(load_records(sources), sources)
    write_json(Path(output_dir) / "summary.json", summary)
    (Path(output_dir) / "summary.md").write_text(summary_markdown(summary))
    return summary


# ---------------------------------------------------------------------------------------------
# the CLI


def run_evaluation(cfg: EvalConfig) -> Dict[str, Any]:
    """Evaluate the selected objects; returns ``{"evaluated": [...], "skipped": [...], "summary": {...}}``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from nerfdiff_ns import compat
    from nerfdiff_ns.bundle import load_bundle

    compat.install()
    unknown = [m for m in cfg.methods if m not in ALL_METHODS]
    if unknown or not cfg.methods:
        raise ValueError(f"--methods: pick from {', '.join(ALL_METHODS)} (got {list(cfg.methods)})")
    if cfg.video_frames < 1 and cfg.videos:
        raise ValueError("--video-frames must be >= 1 (or pass --no-videos)")
    device = resolve_device(cfg.device)
    bundle = load_bundle(cfg.bundle)  # fail early, with the bundle's own message
    needs_cdm = [m for m in cfg.methods if m in ("ngd", "cdm-only", "sample-then-fit", "sds")]
    if needs_cdm and not bundle.config.has_cdm:
        raise ValueError(f"{cfg.bundle} has no diffusion model, which {needs_cdm} need: run feed-forward and input-only only")
    objects = select_objects(list_objects(cfg.data), cfg.num_objects, cfg.shard)
    out = Path(cfg.output_dir)
    (out / "objects").mkdir(parents=True, exist_ok=True)
    suite = MetricSuite(device=device, lpips=cfg.lpips)
    console = Console(stderr=True)
    evaluated, skipped = [], []
    progress = Progress(
        TextColumn("[bold]nerfdiff-eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, disable=not cfg.progress,
    )
    with progress:
        task = progress.add_task("objects", total=len(objects), info="")
        for _, obj in objects:
            path = out / "objects" / f"{obj.name}.json"
            if path.is_file() and not cfg.overwrite:
                done = set(json.loads(path.read_text()).get("methods", {}))
                missing = [m for m in cfg.methods if m not in done]
                if missing:
                    console.print(f"[yellow]{path} exists without {missing}: skipped (use --overwrite or another --output-dir)")
                skipped.append(obj.name)
                progress.advance(task)
                continue

            def show(method: str, name: str = obj.name) -> None:
                progress.update(task, info=f"{name}: {method}")

            record = evaluate_object(cfg, obj, suite, device, on_method=show)
            evaluated.append(obj.name)
            last = cfg.methods[-1]
            psnr = record["methods"][last]["metrics"]["psnr"]
            progress.update(task, info=f"{obj.name}: {last} psnr {psnr:.2f}" if psnr is not None else "")
            progress.advance(task)
    with contextlib.suppress(OSError):
        (out / "scratch").rmdir()  # only when empty (--keep-scratch keeps the runs)
    summary = write_summary(out, [out])
    for key, note in suite.notes.items():
        console.print(f"[dim]{key}: {note}")
    return {"evaluated": evaluated, "skipped": skipped, "summary": summary}


def run_merge(cfg: MergeConfig) -> Dict[str, Any]:
    if not cfg.inputs:
        raise ValueError("merge: pass at least one nerfdiff-eval output folder")
    out = Path(cfg.output_dir) if cfg.output_dir is not None else Path(cfg.inputs[0])
    out.mkdir(parents=True, exist_ok=True)
    return write_summary(out, list(cfg.inputs))


def _base_method_from(argv: Sequence[str]) -> str:
    name = "nerfdiff-tiny"
    for i, arg in enumerate(argv):
        if arg == "--base-method" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--base-method="):
            name = arg.split("=", 1)[1]
    return name if name in ("nerfdiff-tiny", "nerfdiff") else "nerfdiff-tiny"


def parse_args(argv: Optional[Sequence[str]] = None) -> EvalConfig:
    """Parse ``nerfdiff-eval`` flags; the --ngd.* defaults are those of ``--base-method``."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    base = _base_method_from(argv)
    base_ngd = base_trainer_config(base).pipeline.ngd
    knobs = EvalNGDConfig(**{f.name: getattr(base_ngd, f.name) for f in dataclasses.fields(NGDConfig)})
    default = EvalConfig(data=tyro.MISSING, base_method=base, ngd=knobs)  # type: ignore[arg-type]
    description = (__doc__ or "") + "\nSubcommand: `nerfdiff-eval merge DIR [DIR ...] [--output-dir OUT]` (see `nerfdiff-eval merge --help`)."
    return tyro.cli(EvalConfig, default=default, args=argv, description=description, prog="nerfdiff-eval")


def merge_entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    """``nerfdiff-eval-merge DIR [DIR ...]``: summary of several output folders."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = tyro.cli(MergeConfig, args=argv, description=MergeConfig.__doc__, prog="nerfdiff-eval merge")
    summary = run_merge(cfg)
    out = Path(cfg.output_dir) if cfg.output_dir is not None else Path(cfg.inputs[0])
    print(summary_markdown(summary))
    print(f"[nerfdiff-eval] summary: {out / 'summary.json'}")


def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    """``nerfdiff-eval [flags]`` runs the benchmark; ``nerfdiff-eval merge DIR ...`` merges output folders."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":
        merge_entrypoint(argv[1:])
        return
    cfg = parse_args(argv)
    result = run_evaluation(cfg)
    print(summary_markdown(result["summary"]))
    print(f"[nerfdiff-eval] evaluated {len(result['evaluated'])}, skipped {len(result['skipped'])} (already done); "
          f"summary: {Path(cfg.output_dir) / 'summary.json'}")


if __name__ == "__main__":
    entrypoint()
