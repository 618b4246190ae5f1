"""Host-side cost of one pretraining step: the work a GPU waits on, measured on this machine's CPU.

What is measured (tiny preset, a dataset on disk, every object loaded once before timing)
---------------------------------------------------------------------------------------
* ``make_batch``: assembling one rank's batch sample by sample (generator, object, views, source
  pixels, the CDM's timestep, noise and condition drop), in the training process.
* render jitter, the former way: one CPU ``torch.Generator`` per object and a Python loop over the
  objects, for the step's four draws (target rays coarse and fine, source rays coarse and fine;
  rays x samples numbers each) as ``renderer._rand`` drew them until 2026-12-04. On a GPU these
  numbers were then copied to the device.
* render jitter, now: ``StepJitter`` (``nerf.jitter``), the same four draws, each one ``torch.rand``
  call for the whole global batch from the step's generator on the device (here the CPU; with
  ``--device cuda``, the GPU).
* with ``--loader-workers N``: the training process's wait for each batch from ``BatchPrefetcher``
  while a device step of ``--device-step-s`` seconds (a sleep, standing in for the GPU's work) runs.

The H200 step this bounded (2026-12-04, ``scripts/gpu_worker/throughput.sh``): tiny batch 256 0.324 s,
batch 1024 0.958 s. Run ``python benchmarks/batch_host_cost.py --help`` for the options.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

import _common as common


@dataclass
class HostCostConfig:
    """Per-step host cost of pretraining batches and render jitter, per batch size."""

    data: Path = Path("data/synth32")
    """Dataset root with train/ (make it with nerfdiff-generate-data --output-dir data/synth32 --resolution 32)."""
    preset: str = "tiny"
    """Pretraining preset (rays per view, samples per ray, CDM on or off)."""
    batch_sizes: tuple[int, ...] = (256, 1024)
    """Objects per step to measure."""
    repeats: int = 3
    """Timed repeats of each figure (the median is printed)."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the new jitter is computed (the former was always drawn on the CPU)."""
    loader_workers: int = 0
    """Also measure the batch wait with this many --loader-workers (0 skips it)."""
    device_step_s: float = 0.3
    """Seconds a simulated device step takes while the workers build the next batches."""
    augment: tuple[str, ...] = ()
    """Pretraining's --augment (hflip, channels): its per-sample cost lands in make_batch."""
    threads: int = 1
    """torch threads of this process (a training process on a GPU machine draws its batches on one)."""
    output_json: Optional[Path] = None
    """Write the figures and the machine facts to this JSON file."""


def main(cfg: HostCostConfig) -> dict:
    import torch

    from nerfdiff_ns.nerf.jitter import StepJitter, step_jitter_seed
    from nerfdiff_ns.pretrain import Trainer, parse_config
    from nerfdiff_ns.training.distributed import sample_generator

    torch.set_num_threads(cfg.threads)
    device = common.resolve_device(cfg.device)
    facts = common.machine_facts(device)
    facts["torch_threads"] = cfg.threads
    common.print_facts(facts)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="nerfdiff-host-cost-") as tmp:
        for batch in cfg.batch_sizes:
            run_cfg = parse_config(["--preset", cfg.preset, "--data", str(cfg.data), "--output-dir", f"{tmp}/{batch}",
                                    "--no-log-tensorboard", "--no-resume", "--device", "cpu", "--batch-size", str(batch),
                                    "--steps", "1000", "--loader-workers", str(cfg.loader_workers),
                                    *(["--augment", *cfg.augment] if cfg.augment else [])])
            trainer = Trainer(run_cfg)
            for idx in range(len(trainer.dataset)):  # warm the object cache, as a long run has it
                trainer.dataset.load_object(idx)
            make = trainer.batch_maker(torch.device("cpu"))
            batch_s = common.timed_repeats(lambda: make(7), 1, cfg.repeats, "cpu")
            rays = run_cfg.render_resolution ** 2
            draws = [(rays, run_cfg.nerf.num_coarse_samples), (rays, run_cfg.nerf.num_fine_samples),
                     (run_cfg.source_rays, run_cfg.nerf.num_coarse_samples), (run_cfg.source_rays, run_cfg.nerf.num_fine_samples)]
            draws = [d for d in draws if d[1] > 0]

            def former() -> None:
                gens = [sample_generator(0, 7, j) for j in range(batch)]
                for r, s in draws:
                    torch.cat([torch.rand((1, r, s), generator=g) for g in gens])

            def now() -> None:
                jitter = StepJitter(step_jitter_seed(0, 7), batch, 0, batch, device)
                for r, s in draws:
                    jitter.draw((batch, r, s))

            former_s = common.timed_repeats(former, 1, cfg.repeats, "cpu")
            now_s = common.timed_repeats(now, 1, cfg.repeats, device)
            wait = None
            if cfg.loader_workers > 0:
                waits = []
                for step in range(cfg.repeats + 2):
                    start = time.perf_counter()
                    trainer.step = step
                    trainer.next_batch()
                    waits.append(time.perf_counter() - start)
                    time.sleep(cfg.device_step_s)
                trainer.prefetcher.close()
                wait = common.median(waits[2:])  # after the workers' start-up and first batches
            numbers = batch * sum(r * s for r, s in draws)
            results.append({"batch_size": batch, "make_batch_s": batch_s, "jitter_numbers": numbers,
                            "jitter_former_s": former_s, "jitter_now_s": now_s, "loader_workers": cfg.loader_workers,
                            "device_step_s": cfg.device_step_s, "batch_wait_s": wait})
            rows.append([batch, common.median(batch_s), f"{numbers / 1e6:.1f} M", common.median(former_s),
                         common.median(now_s), "n/a" if wait is None else wait])
    common.print_table(
        f"host cost per pretraining step ({cfg.preset} preset{', --augment ' + ' '.join(cfg.augment) if cfg.augment else ''}; "
        f"median of {cfg.repeats}; jitter now on {device})",
        ["batch", "make_batch s", "jitter numbers", "jitter former s (CPU generators)", "jitter now s (StepJitter)",
         f"batch wait s ({cfg.loader_workers} workers, {cfg.device_step_s} s device step)"],
        rows,
    )
    payload = {"benchmark": "batch_host_cost", "machine": facts, "config": cfg.__dict__, "results": results}
    common.write_json(cfg.output_json, payload)
    return payload


if __name__ == "__main__":
    main(tyro.cli(HostCostConfig, description=__doc__))
    sys.exit(0)
