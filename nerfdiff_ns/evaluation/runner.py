"""The evaluation runner: every selected object through every method, resumable, with a progress bar."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Dict

from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.evaluation.config import ALL_METHODS, EvalConfig, MergeConfig
from nerfdiff_ns.evaluation.objects import list_objects, resolve_device, select_objects
from nerfdiff_ns.evaluation.report import json_safe, load_records, write_summary
from nerfdiff_ns.evaluation.scoring import evaluate_object, settings_of
from nerfdiff_ns.lr_decay import check_final_factor
from nerfdiff_ns.metrics import MetricSuite
from nerfdiff_ns.ngd import check_ngd_config


def run_evaluation(cfg: EvalConfig) -> Dict[str, Any]:
    """Evaluate the selected objects; returns ``{"evaluated": [...], "skipped": [...], "summary": {...}}``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from nerfdiff_ns import compat
    from nerfdiff_ns.bundle import load_bundle

    compat.install()
    unknown = [m for m in cfg.methods if m not in ALL_METHODS]
    if unknown or not cfg.methods:
        raise FlagError(f"--methods: pick from {', '.join(ALL_METHODS)} (got {list(cfg.methods)})")
    if cfg.video_frames < 1 and cfg.videos:
        raise FlagError("--video-frames must be >= 1 (or pass --no-videos)")
    if cfg.lr_final_factor is not None:
        check_final_factor(cfg.lr_final_factor, "--lr-final-factor")
    check_ngd_config(cfg.ngd, "--ngd.")
    device = resolve_device(cfg.device)
    bundle = load_bundle(cfg.bundle)  # fail early, with the bundle's own message
    needs_cdm = [m for m in cfg.methods if m in ("ngd", "cdm-only", "sample-then-fit", "sds")]
    if needs_cdm and not bundle.config.has_cdm:
        raise FlagError(f"{cfg.bundle} has no diffusion model, which {needs_cdm} need: run feed-forward and input-only only")
    objects = select_objects(list_objects(cfg.data), cfg.num_objects, cfg.shard)
    out = Path(cfg.output_dir)
    (out / "objects").mkdir(parents=True, exist_ok=True)
    suite = MetricSuite(device=device, lpips=cfg.lpips)
    console = Console(stderr=True)
    settings = json_safe(settings_of(cfg, device))  # as each object's JSON holds them
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
                previous = json.loads(path.read_text())
                if previous.get("settings") != settings:
                    raise FlagError(f"{path} was evaluated with other settings (bundle or flags; see its \"settings\"): "
                                    "pass --overwrite to re-evaluate, or use another --output-dir")
                done = set(previous.get("methods", {}))
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
        raise FlagError("merge: pass at least one nerfdiff-eval output folder")
    records = load_records(list(cfg.inputs))
    if not records:
        raise FlagError(f"merge: no nerfdiff-eval object results in {', '.join(map(str, cfg.inputs))} (objects/*.json)")
    out = Path(cfg.output_dir) if cfg.output_dir is not None else Path(cfg.inputs[0])
    out.mkdir(parents=True, exist_ok=True)
    return write_summary(out, list(cfg.inputs), records)
