"""One method on one object, run exactly as ``ns-train`` runs it: nerfstudio's Trainer in this process.

The method's TrainerConfig with the object as a ``nerfdiff-srn-object`` dataparser and
``pipeline.ngd.mode`` set; then ``Trainer.setup(); Trainer.train()``; the evaluation views are
rendered with ``model.get_outputs_for_camera``. cdm-only samples the CDM per target view instead.
"""

from __future__ import annotations

import contextlib
import gc
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from nerfdiff_ns.data.images import load_alpha
from nerfdiff_ns.evaluation.config import NERF_METHODS, EvalConfig, base_trainer_config, ngd_for
from nerfdiff_ns.evaluation.memory import PeakMemory, synced_clock
from nerfdiff_ns.evaluation.report import write_video


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
    if cfg.lr_final_factor is not None:
        for group in ("triplane", "field"):
            tc.optimizers[group]["scheduler"].final_factor = float(cfg.lr_final_factor)
    if cfg.rgb_loss is not None:
        tc.pipeline.model.rgb_loss = cfg.rgb_loss
    if cfg.mask_loss_weight is not None:
        tc.pipeline.model.mask_loss_weight = float(cfg.mask_loss_weight)
    if cfg.opacity_entropy_weight is not None:
        tc.pipeline.model.opacity_entropy_weight = float(cfg.opacity_entropy_weight)
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
    background: Optional[torch.Tensor] = None  # [3] the colour the images are composited on
    masks: Optional[torch.Tensor] = None  # [V, H, W, 1] the targets' alpha when every one has it (RGBA views)


def eval_views_of(pipeline) -> EvalViews:
    dm = pipeline.datamanager
    dataset = dm.eval_dataset
    images = torch.stack([dataset.get_image_float32(i)[..., :3] for i in range(len(dataset))])
    parser = dm.dataparser
    index = parser.input_index()
    input_name = Path(dm.train_dataset.image_filenames[0]).stem if len(dm.train_dataset.image_filenames) else str(index)
    alphas = [load_alpha(p) for p in dataset.image_filenames]
    masks = torch.stack(alphas) if alphas and all(a is not None and a.shape[:2] == images.shape[1:3] for a in alphas) else None
    return EvalViews(
        names=[Path(p).stem for p in dataset.image_filenames], cameras=dataset.cameras, images=images,
        input_image=pipeline.model.input_image.detach().float().cpu(), input_index=index, input_name=input_name,
        background=dataset._dataparser_outputs.alpha_color, masks=masks,
    )


@torch.no_grad()
def render_outputs(model, cameras, keys: Sequence[str] = ("rgb",)) -> Dict[str, torch.Tensor]:
    """``{key: [V, H, W, C]}``: the outputs ``keys`` (e.g. ``rgb``, ``accumulation``) of one render pass per camera
    with ``model.get_outputs_for_camera`` (eval mode), clamped to [0, 1]."""
    was_training = model.training
    model.eval()
    per_view = [model.get_outputs_for_camera(cameras[i : i + 1]) for i in range(len(cameras))]
    model.train(was_training)
    return {key: torch.stack([out[key].detach().float().cpu().clamp(0, 1) for out in per_view]) for key in keys}


def render_cameras(model, cameras) -> torch.Tensor:
    """``[V, H, W, 3]`` renders of nerfstudio ``cameras`` with ``model.get_outputs_for_camera`` (eval mode)."""
    return render_outputs(model, cameras)["rgb"]


def orbit_cameras(model, frames: int):
    """A 360-degree orbit at the input camera's distance and elevation, with the input's intrinsics."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    from nerfdiff_ns.camera_path import orbit_c2ws

    c2w = orbit_c2ws(model.input_c2w[0], frames)
    fx, fy, cx, cy = model.input_intrinsics[0].detach().float().cpu().tolist()
    height, width = model.input_size
    ones = torch.ones(frames, 1)
    return Cameras(
        camera_to_worlds=c2w[:, :3, :4], fx=ones * fx, fy=ones * fy, cx=ones * cx, cy=ones * cy,
        width=width, height=height, camera_type=CameraType.PERSPECTIVE,
    )


@dataclass
class MethodRun:
    renders: torch.Tensor  # [V, H, W, 3]
    views: EvalViews
    cost: Dict[str, Any]
    iterations: int
    video: Optional[Path] = None
    accumulation: Optional[torch.Tensor] = None  # [V, H, W, 1] the NeRF's opacity at the targets (NeRF methods)


@torch.no_grad()
def cdm_only_predictions(pipeline, cameras, batch_size: int) -> torch.Tensor:
    """CDM-only: a full DDIM sample per target view, conditioned on the feed-forward NeRF's render of
    that view (rendered at the CDM's resolution, like NGD's virtual views) and the input image;
    returned at the target views' size ``[V, H, W, 3]``."""
    from nerfdiff_ns.cdm.conditions import render_condition_views
    from nerfdiff_ns.cdm.unet import resize_to

    model = pipeline.model
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
        cond = render_condition_views(model.nerf, model.triplane, model.source, c2w[sl].to(device), k[sl].to(device),
                                      size, diffusion.condition_kinds)
        sample = diffusion.sample_independently(cond, views=sl)  # [v, size, size, 3]
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
                t0 = synced_clock(device)
                tc.set_timestamp()
                tc.save_config()
                _set_random_seed(tc.machine.seed)
                trainer = tc.setup(local_rank=0, world_size=1)
                trainer.setup()
                pipeline = trainer.pipeline
                model = pipeline.model
                t1 = synced_clock(device)
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
                t2 = synced_clock(device)
                cameras = pipeline.datamanager.eval_dataset.cameras
                accumulation = None  # the NeRF's opacity at the targets, from the same render pass as the colour
                if method == "cdm-only":
                    renders = cdm_only_predictions(pipeline, cameras, cfg.cdm_batch_size)
                    t3 = synced_clock(device)
                    cost.update(seconds_setup=t1 - t0, seconds_fit=t3 - t2, seconds_render=0.0)
                else:
                    pipeline.eval()
                    outputs = render_outputs(model, cameras, ("rgb", "accumulation"))
                    renders, accumulation = outputs["rgb"], outputs["accumulation"]
                    t3 = synced_clock(device)
                    cost.update(seconds_setup=t1 - t0, seconds_fit=t2 - t1, seconds_render=t3 - t2)
                cost["seconds"] = t3 - t0
            cost.update(memory.result)
            views = eval_views_of(pipeline)  # ground truth, outside the timed block
            video = None
            if video_path is not None and method in NERF_METHODS:
                t4 = synced_clock(device)
                pipeline.eval()
                frames = render_cameras(model, orbit_cameras(model, cfg.video_frames))
                video = write_video(video_path, frames, cfg.video_fps, cfg.video_min_size)
                cost["seconds_video"] = synced_clock(device) - t4
            trainer.shutdown()
            del trainer, pipeline, model
    finally:
        if not cfg.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return MethodRun(renders=renders, views=views, cost=cost, iterations=iterations, video=video, accumulation=accumulation)
