"""Metrics glue: score every method's renders of one object against its targets into objects/<id>.json.

The record holds, per method, the mean of each metric over the object's target views, the
per-view values, the iterations, time and memory; plus the settings that decide the numbers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from nerfdiff_ns.evaluation.config import FORMAT_VERSION, NERF_METHODS, RESULT_FORMAT, EvalConfig, base_trainer_config
from nerfdiff_ns.evaluation.method_run import EvalViews, run_method
from nerfdiff_ns.evaluation.report import comparison_grid, grid_rows, write_json
from nerfdiff_ns.metrics import METRICS, MetricSuite, mean_or_none


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
        "lr_final_factor": (cfg.lr_final_factor if cfg.lr_final_factor is not None
                            else tc.optimizers["triplane"]["scheduler"].final_factor),
        "rgb_loss": cfg.rgb_loss if cfg.rgb_loss is not None else tc.pipeline.model.rgb_loss,
        "mask_loss_weight": cfg.mask_loss_weight if cfg.mask_loss_weight is not None else tc.pipeline.model.mask_loss_weight,
        "opacity_entropy_weight": (cfg.opacity_entropy_weight if cfg.opacity_entropy_weight is not None
                                   else tc.pipeline.model.opacity_entropy_weight),
        "machine_seed": int(cfg.seed) if cfg.seed is not None else int(tc.machine.seed),
        "max_eval_views": cfg.max_eval_views,
        "input_view": cfg.input_view,
        "device": device,
    }


def object_pixels(images: torch.Tensor, background: Optional[torch.Tensor] = None,
                  masks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Which ground-truth pixels ``[V, H, W]`` are the object: the alpha of RGBA views when there is one (it also
    counts object pixels of the background colour), else the pixels off the background colour (white by default)."""
    from nerfdiff_ns.datamanager import foreground_mask

    if masks is not None:
        return masks[..., 0] > 0.5
    background = background if background is not None else torch.ones(3)
    return torch.stack([foreground_mask(image, background)[..., 0] > 0 for image in images])


def split_opacity(accumulation: torch.Tensor, on_object: torch.Tensor) -> Dict[str, Optional[float]]:
    """Mean accumulated opacity ``[V, H, W, 1]`` on the object pixels (ideal 1) and on the background (ideal 0)."""
    acc = accumulation[..., 0]
    return {"object": float(acc[on_object].mean()) if on_object.any() else None,
            "background": float(acc[~on_object].mean()) if (~on_object).any() else None}


def opacity_on(accumulation: torch.Tensor, views: EvalViews) -> Dict[str, Optional[float]]:
    """The NeRF's mean accumulated opacity at the targets on the ground truth's object pixels (ideal 1) and on
    its background pixels (ideal 0: background-coloured fog, which PSNR cannot see on the background it was trained on)."""
    return split_opacity(accumulation, object_pixels(views.images, views.background, views.masks))


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
        if run.accumulation is not None:
            record["methods"][method]["opacity"] = opacity_on(run.accumulation, views)
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
