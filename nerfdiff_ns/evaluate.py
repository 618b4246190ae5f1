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

The code lives in ``nerfdiff_ns.evaluation`` (config, objects, method_run, memory, scoring,
report, runner); this module is the command line and keeps the public names.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional, Sequence

from nerfdiff_ns.evaluation.config import (
    ALL_METHODS,
    FORMAT_VERSION,
    NERF_METHODS,
    RESULT_FORMAT,
    SUMMARY_FORMAT,
    BaseMethod,
    EvalConfig,
    EvalNGDConfig,
    MergeConfig,
    MethodName,
    base_trainer_config,
    ngd_for,
)
from nerfdiff_ns.evaluation.memory import PeakMemory
from nerfdiff_ns.evaluation.method_run import (
    EvalViews,
    MethodRun,
    cdm_only_predictions,
    make_trainer_config,
    nerfstudio_session,
    orbit_cameras,
    render_cameras,
    run_method,
)
from nerfdiff_ns.evaluation.objects import list_objects, parse_shard, resolve_device, select_objects
from nerfdiff_ns.evaluation.report import (
    comparison_grid,
    grid_rows,
    load_records,
    summarize,
    summary_markdown,
    write_json,
    write_summary,
    write_video,
)
from nerfdiff_ns.evaluation.runner import run_evaluation, run_merge
from nerfdiff_ns.evaluation.scoring import evaluate_object, settings_of
from nerfdiff_ns.ngd import NGDConfig

__all__ = [
    "ALL_METHODS", "FORMAT_VERSION", "NERF_METHODS", "RESULT_FORMAT", "SUMMARY_FORMAT", "BaseMethod", "EvalConfig",
    "EvalNGDConfig", "EvalViews", "MergeConfig", "MethodName", "MethodRun", "PeakMemory", "base_trainer_config",
    "cdm_only_predictions", "comparison_grid", "entrypoint", "evaluate_object", "grid_rows", "list_objects",
    "load_records", "make_trainer_config", "merge_entrypoint", "nerfstudio_session", "ngd_for", "orbit_cameras",
    "parse_args", "parse_shard", "render_cameras", "resolve_device", "run_evaluation", "run_merge", "run_method",
    "select_objects", "settings_of", "summarize", "summary_markdown", "write_json", "write_summary", "write_video",
]


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
