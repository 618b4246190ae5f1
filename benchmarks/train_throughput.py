"""Pretraining throughput (objects per second through a full ``Trainer.train_step``) and peak memory per preset.

What is measured
----------------
For each preset (default: tiny and srn-128) a small synthetic dataset is generated first, outside
the measurement, with ``nerfdiff_ns.data.generate`` (``num_objects`` train objects,
``views_per_object`` views, at the preset's encoder resolution) into a temporary folder. Then, in
a fresh Python process per preset (so one preset's memory cannot contaminate the next):

* ``nerfdiff_ns.pretrain.Trainer`` is built from the preset (``configs/pretrain/<preset>.json``)
  with the benchmark's batch size and device, no tensorboard, no evaluation, no resume;
* ``warmup_steps`` calls of ``train_step()`` are run untimed, then ``steps`` timed calls. A step is
  everything a real step does: drawing and loading the batch, encoding, rendering the target view
  at ``render_resolution`` and the source rays, the CDM loss, backward, clipping, Adam, EMA.
* images/s = batch_size x steps / total time of the timed steps (one image = one training object
  of the batch: one source view in, one rendered target view out);
* peak memory: on the CPU the process's RSS high-water mark (VmHWM from /proc/self/status; whole
  process, imports included), and separately the growth during the training steps over the RSS
  right before them; on CUDA also ``torch.cuda.max_memory_allocated()``.

Batch sizes: on CUDA the preset's own batch; on the CPU by default tiny 8 (its preset value) and
srn-128 2 (its preset's 32 does not fit a CPU time budget; "per preset on this CPU"). Override
with ``--batch-size``.

Run ``python benchmarks/train_throughput.py --help`` for the options.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

import _common as common

CPU_BATCH = {"tiny": 8, "srn-128": 2, "test": 2}
"""Default objects per step on the CPU (CUDA uses the preset's batch)."""


@dataclass
class TrainBenchConfig:
    """Pretraining images/s and peak memory per preset, on a small generated dataset."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device to benchmark on (auto = CUDA when available)."""
    presets: tuple[str, ...] = ("tiny", "srn-128")
    """Pretraining presets (configs/pretrain/<name>.json) to measure, each in a fresh process."""
    batch_size: Optional[int] = None
    """Objects per step for every preset (default: the preset's batch on CUDA; tiny 8, srn-128 2 on the CPU)."""
    warmup_steps: int = 2
    """Untimed train steps first (allocator warm-up, lazy initialisation, loading the objects)."""
    steps: int = 5
    """Timed train steps."""
    num_objects: int = 4
    """Train objects in the generated dataset."""
    views_per_object: int = 4
    """Views per generated object."""
    data_dir: Optional[Path] = None
    """Keep the generated datasets here (<data-dir>/<resolution>px); default: a temporary folder, deleted after."""
    threads: Optional[int] = None
    """torch.set_num_threads in the workers (default: torch's choice)."""
    freeze_nerf: bool = False
    """Measure the CDM-only stage (pretraining --freeze-nerf) instead of joint training. The frozen NeRF keeps its
    random initial weights: throughput does not depend on them."""
    render_cache: bool = True
    """With --freeze-nerf: the stage's render cache (built before the timed steps; its build time is reported
    apart). --no-render-cache renders the conditions live every step."""
    target_rays: int = 0
    """Pretraining's --target-rays: the target-view NeRF loss over this many random pixels per object (0 = every
    pixel; the CDM's condition is then rendered whole without gradients)."""
    nerf_only: bool = False
    """Measure the NeRF-only stage (pretraining --cdm.no-enabled) instead of joint training."""
    loader_workers: int = 0
    """Pretraining's --loader-workers: processes that build the next batches while the device trains (0 = in the
    training process, part of every timed step)."""
    profile_steps: int = 0
    """After the timed steps, where the time goes: this many steps with the device synchronised around each phase
    of the step (nerfdiff_ns/training/phases.py: batch, encode, render, CDM loss, backward, optimiser ...), then as
    many under torch.profiler for the ops that cost most (self device time on CUDA, self CPU time on the CPU). Both
    tables are printed and stored in the JSON; they do not change the images/s above (0 = no profile)."""
    output_json: Optional[Path] = None
    """Write all figures and the machine facts to this JSON file."""


def make_dataset(root: Path, resolution: int, num_objects: int, views: int) -> Path:
    """A train split of ``num_objects`` objects at ``resolution`` px (reused when it is already there)."""
    out = root / f"{resolution}px-{num_objects}x{views}"
    if not (out / "train").is_dir():  # generating needs pybullet and trimesh, which a bare GPU worker lacks
        from nerfdiff_ns.data.generate import GenerateConfig, generate

        generate(GenerateConfig(output_dir=out, splits=("train",), num_objects=num_objects, views_per_object=views,
                                resolution=resolution, progress=False))
    return out


def preset_config(preset: str):
    from nerfdiff_ns.pretrain import PretrainConfig
    from nerfdiff_ns.training.presets import load_preset

    return load_preset("pretrain", preset, PretrainConfig(preset=preset))


def train_worker(preset: str, data: str, output_dir: str, device: str, batch_size: int, warmup_steps: int, steps: int,
                 threads: Optional[int] = None, freeze_nerf: bool = False, render_cache: bool = True,
                 loader_workers: int = 0, profile_steps: int = 0, target_rays: int = 0, nerf_only: bool = False) -> dict:
    """Build the Trainer for one preset and time ``steps`` train steps; run in its own process."""
    import torch

    from nerfdiff_ns.pretrain import Trainer

    if threads:
        torch.set_num_threads(threads)
    cfg = dataclasses.replace(
        preset_config(preset), data=Path(data), output_dir=Path(output_dir), device=device, batch_size=batch_size,
        steps=warmup_steps + steps + 2 * profile_steps, steps_per_eval=0, log_tensorboard=False, resume=False, log_jsonl=False,
        freeze_nerf=freeze_nerf, render_cache=render_cache, loader_workers=loader_workers, target_rays=target_rays,
    )
    if nerf_only:
        cfg = dataclasses.replace(cfg, cdm=dataclasses.replace(cfg.cdm, enabled=False))
    setup_start = time.perf_counter()
    trainer = Trainer(cfg)
    setup_s = time.perf_counter() - setup_start
    for _ in range(warmup_steps):
        trainer.train_step()
    common.sync(device)
    setup_peak = common.peak_rss_mib()
    base_rss = common.current_rss_mib()
    exact = common.reset_peak_rss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    step_times = []
    for _ in range(steps):
        start = time.perf_counter()
        stats = trainer.train_step()
        common.sync(device)
        step_times.append(time.perf_counter() - start)
        if stats is None:
            raise RuntimeError("a benchmark step had a non-finite loss and was skipped")
    step_peak = common.peak_rss_mib()
    result = {
        "preset": preset, "device": device, "batch_size": batch_size,
        "image_size": cfg.nerf.image_size, "render_resolution": cfg.render_resolution,
        "samples_per_ray": cfg.nerf.num_coarse_samples + cfg.nerf.num_fine_samples,
        "cdm": cfg.cdm.enabled, "mixed_precision": bool(cfg.mixed_precision and device.startswith("cuda")),
        "warmup_steps": warmup_steps, "steps": steps, "step_times_s": step_times,
        "median_step_s": common.median(step_times),
        "images_per_s": batch_size * steps / sum(step_times),
        "peak_rss_mib": max(setup_peak, step_peak),
        "step_rss_growth_mib": step_peak - base_rss if exact else None,
        "nerf_parameters": sum(p.numel() for p in trainer.nerf.parameters()),
        "cdm_parameters": sum(p.numel() for p in trainer.cdm.parameters()) if trainer.cdm is not None else 0,
        "last_loss": stats["total_loss"],
        "freeze_nerf": freeze_nerf, "loader_workers": loader_workers, "target_rays": target_rays,
        "render_cache_triples": len(trainer.render_cache) if trainer.render_cache else 0,
        "trainer_setup_s": setup_s,
    }
    if device.startswith("cuda"):
        result["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if profile_steps > 0:
        result.update(profile_train_steps(trainer, device, profile_steps))
    return result


def profile_train_steps(trainer, device: str, steps: int) -> dict:
    """Per-phase seconds (synchronised) over ``steps`` train steps, then the costliest ops over as many more."""
    import torch

    from nerfdiff_ns.training.phases import PhaseTimer, op_table

    start = time.perf_counter()
    with PhaseTimer(device) as timer:
        for _ in range(steps):
            trainer.train_step()
    phased_step_s = (time.perf_counter() - start) / steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.train_step()
        common.sync(device)
    return {"profile_steps": steps, "phased_step_s": phased_step_s, "phases": timer.table(steps),
            "top_ops": op_table(prof, steps)}


def print_profile(result: dict) -> None:
    """The phase and op tables of one preset's ``--profile-steps`` run."""
    name = f"{result['preset']}, batch {result['batch_size']}"
    step = result["phased_step_s"]
    common.print_table(
        f"{name}: where a step's time goes ({result['profile_steps']} steps, device synchronised around each phase: "
        f"{step:.3f} s/step)", ["phase", "s/step", "share of step", "calls/step"],
        [[p["phase"], p["seconds_per_step"], f"{100 * p['seconds_per_step'] / step:.1f} %", p["calls_per_step"]]
         for p in result["phases"]],
    )
    on_device = any(op["self_device_ms_per_step"] > 0 for op in result["top_ops"])
    common.print_table(
        f"{name}: costliest ops by self {'device' if on_device else 'CPU'} time (torch.profiler)",
        ["op", "calls/step", "self CPU ms/step", "self device ms/step", "share"],
        [[op["op"], op["calls_per_step"], op["self_cpu_ms_per_step"], op["self_device_ms_per_step"],
          f"{100 * op['share']:.1f} %"] for op in result["top_ops"]],
    )


def main(cfg: TrainBenchConfig) -> dict:
    device = common.resolve_device(cfg.device)
    facts = common.machine_facts(device)
    if cfg.threads:
        facts["torch_threads"] = cfg.threads
    common.print_facts(facts)
    results = []
    with tempfile.TemporaryDirectory(prefix="nerfdiff-train-bench-") as tmp:
        data_root = Path(cfg.data_dir) if cfg.data_dir else Path(tmp)
        for preset in cfg.presets:
            pcfg = preset_config(preset)
            batch = cfg.batch_size or (pcfg.batch_size if device.startswith("cuda") else CPU_BATCH.get(preset, pcfg.batch_size))
            print(f"[{preset}] generating {cfg.num_objects} objects x {cfg.views_per_object} views at {pcfg.nerf.image_size}px ...", flush=True)
            data = make_dataset(data_root, pcfg.nerf.image_size, cfg.num_objects, cfg.views_per_object)
            print(f"[{preset}] batch {batch}: {cfg.warmup_steps} warm-up + {cfg.steps} timed steps in a fresh process ...", flush=True)
            results.append(common.run_worker("train_throughput", "train_worker", {
                "preset": preset, "data": str(data), "output_dir": str(Path(tmp) / f"run-{preset}"), "device": device,
                "batch_size": batch, "warmup_steps": cfg.warmup_steps, "steps": cfg.steps, "threads": cfg.threads,
                "freeze_nerf": cfg.freeze_nerf, "render_cache": cfg.render_cache, "loader_workers": cfg.loader_workers,
                "profile_steps": cfg.profile_steps, "target_rays": cfg.target_rays, "nerf_only": cfg.nerf_only,
            }))
    print()
    headers = ["preset", "batch", "image px", "render px", "samples/ray", "median s/step", "images/s", "peak RSS MiB",
               "RSS growth in steps MiB"]
    rows = [[r["preset"], r["batch_size"], r["image_size"], r["render_resolution"], r["samples_per_ray"], r["median_step_s"],
             r["images_per_s"], r["peak_rss_mib"], r["step_rss_growth_mib"] if r["step_rss_growth_mib"] is not None else "n/a"]
            for r in results]
    if device.startswith("cuda"):
        headers.append("peak CUDA MiB")
        for row, r in zip(rows, results):
            row.append(r["peak_cuda_allocated_mib"])
    if cfg.freeze_nerf:
        headers.append("cache triples / setup s")
        for row, r in zip(rows, results):
            row.append(f"{r['render_cache_triples']} / {r['trainer_setup_s']:.1f}")
    workers = f", {cfg.loader_workers} loader workers" if cfg.loader_workers else ""
    stage = ("CDM only on a frozen NeRF, " + ("render cache" if cfg.render_cache else "live renders")) if cfg.freeze_nerf \
        else ("NeRF only" if cfg.nerf_only else "NeRF + CDM")
    if cfg.target_rays and not cfg.freeze_nerf:
        stage += f", NeRF loss on {cfg.target_rays} target rays per object"
    common.print_table(
        f"pretraining throughput on {device} ({cfg.steps} timed steps after {cfg.warmup_steps} warm-up; {stage}, "
        f"full train_step{workers})",
        headers, rows,
    )
    for result in results:
        if "phases" in result:
            print_profile(result)
    payload = {"benchmark": "train_throughput", "machine": facts, "config": cfg.__dict__, "presets": results}
    common.write_json(cfg.output_json, payload)
    return payload


if __name__ == "__main__":
    main(tyro.cli(TrainBenchConfig, description=__doc__))
    sys.exit(0)
