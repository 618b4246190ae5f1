"""Wall time and peak memory of a whole NeRF-guided distillation run per object (``ns-train nerfdiff-tiny``).

What is measured
----------------
For each object, one complete run of

    ns-train nerfdiff-tiny --vis tensorboard --output-dir TMP --pipeline.model.bundle BUNDLE \
        nerfdiff-srn-object --data OBJECT_FOLDER

in a subprocess under ``/usr/bin/time -v`` (GNU time), exactly as a user would start it:

* total wall time: process start to exit (imports, bundle and CDM loading, encoding the input
  view, all NGD iterations with their diffusion steps, periodic evaluation images, checkpoints);
* NGD loop time: nerfstudio's own profiler (on by default, ``--logging.profiler basic``) prints
  the mean duration of ``Trainer.train_iteration`` at exit; times the number of iterations
  (``max_num_iterations`` from the run's config.yml) that is the time spent in NeRF iterations
  and the diffusion steps run inside them; the rest of the wall time is start-up and overhead;
* peak memory: "Maximum resident set size" of GNU time (the RSS high-water mark of ns-train). Without
  /usr/bin/time: ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest child so far).
  On CUDA ns-train is started through a tiny launcher that also prints
  ``torch.cuda.max_memory_allocated()`` at exit.

Targets (issue): under 5 minutes and under 4 GB per object on 2 CPU cores.

NGD knobs left unset use the method's defaults (nerfdiff-tiny: 16 virtual views, 25 diffusion steps
of which the 5 with w_t < 1 run (``skip_pinned_steps``), x 10 NeRF iterations + 200 final iterations =
250 iterations). The run length follows the knobs (``max_num_iterations = -1``).

Run ``python benchmarks/ngd_timing.py --help`` for the options.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

import _common as common

TARGET_WALL_S = 300.0
TARGET_RSS_MIB = 4096.0
_CUDA_MARK = "@@CUDA_PEAK_MIB@@"


@dataclass
class NGDBenchConfig:
    """Wall time and peak memory of whole ns-train nerfdiff-tiny NGD runs, one per object."""

    bundle: Path = common.REPO_ROOT / "nerfdiff_ns" / "assets" / "bundle-tiny"
    """Pretrained bundle (NeRF + CDM) passed as --pipeline.model.bundle."""
    data_root: Path = Path("data/synth32/val")
    """SRN split folder whose object folders are used (sorted; protocol.json etc. are skipped)."""
    objects: tuple[Path, ...] = ()
    """Explicit object folders instead of the first --num-objects of --data-root."""
    num_objects: int = 1
    """How many objects of --data-root to run (one full NGD run each)."""
    method: str = "nerfdiff-tiny"
    """ns-train method."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = the method's default (CUDA when available); otherwise passed as --machine.device-type."""
    diffusion_steps: Optional[int] = None
    """--pipeline.ngd.diffusion-steps (default: the method's)."""
    nerf_iters_per_step: Optional[int] = None
    """--pipeline.ngd.nerf-iters-per-step (default: the method's)."""
    final_iters: Optional[int] = None
    """--pipeline.ngd.final-iters (default: the method's)."""
    num_virtual_views: Optional[int] = None
    """--pipeline.ngd.num-virtual-views (default: the method's)."""
    extra_args: tuple[str, ...] = ()
    """More ns-train arguments, inserted before the dataparser name (e.g. --pipeline.ngd.cfg-scale 2)."""
    keep_output: Optional[Path] = None
    """Keep the ns-train runs (and their logs) here; default: a temporary folder, deleted after."""
    timeout_s: float = 3600.0
    """Give up on a run after this many seconds."""
    output_json: Optional[Path] = None
    """Write all figures and the machine facts to this JSON file."""


def pick_objects(cfg: NGDBenchConfig) -> list[Path]:
    if cfg.objects:
        return [Path(p).resolve() for p in cfg.objects]
    root = Path(cfg.data_root)
    if not root.is_dir():
        raise SystemExit(f"--data-root {root} does not exist (make one with nerfdiff-generate-data or pass --objects)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / "rgb").is_dir())
    if not folders:
        raise SystemExit(f"no SRN object folders (with rgb/) in {root}")
    return [p.resolve() for p in folders[: cfg.num_objects]]


def ngd_overrides(cfg: NGDBenchConfig) -> list[str]:
    """The NGD flags that were set (the run length follows them: ``max_num_iterations = -1``)."""
    knobs = {"diffusion-steps": cfg.diffusion_steps, "nerf-iters-per-step": cfg.nerf_iters_per_step,
             "final-iters": cfg.final_iters, "num-virtual-views": cfg.num_virtual_views}
    return [a for name, v in knobs.items() if v is not None for a in (f"--pipeline.ngd.{name}", str(v))]


def ns_train_command(cfg: NGDBenchConfig, obj: Path, out_dir: Path, overrides: list[str], device: str) -> list[str]:
    args = [cfg.method, "--vis", "tensorboard", "--output-dir", str(out_dir), "--pipeline.model.bundle", str(Path(cfg.bundle).resolve()),
            *overrides, *cfg.extra_args]
    if cfg.device != "auto":
        args += ["--machine.device-type", cfg.device]
    args += ["nerfdiff-srn-object", "--data", str(obj)]
    if device.startswith("cuda"):
        # same as the ns-train console script, plus the CUDA peak at exit
        code = ("import atexit, sys, torch; from nerfstudio.scripts.train import entrypoint; "
                f"atexit.register(lambda: print({_CUDA_MARK!r}, torch.cuda.max_memory_allocated() / 2**20, flush=True)); "
                "sys.argv = ['ns-train'] + sys.argv[1:]; entrypoint()")
        return [sys.executable, "-c", code, *args]
    ns_train = shutil.which("ns-train") or str(Path(sys.executable).with_name("ns-train"))
    return [ns_train, *args]


def parse_gnu_time(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if m := re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", text):
        out["peak_rss_mib"] = int(m.group(1)) / 1024.0
    if m := re.search(r"User time \(seconds\):\s*([\d.]+)", text):
        out["user_s"] = float(m.group(1))
    if m := re.search(r"System time \(seconds\):\s*([\d.]+)", text):
        out["system_s"] = float(m.group(1))
    return out


def parse_run(log: str, out_dir: Path) -> dict[str, Optional[float]]:
    """NGD loop time from nerfstudio's profiler line and the iteration count in config.yml."""
    mean = re.search(r"Trainer\.train_iteration\s*:\s*([\d.]+)", log)
    configs = sorted(out_dir.rglob("config.yml"))
    iters = None
    if configs:
        if m := re.search(r"^max_num_iterations:\s*(\d+)", configs[-1].read_text(), re.MULTILINE):
            iters = int(m.group(1))
    if iters is None:  # max_num_iterations = -1 follows the NGD schedule: the last checkpoint is step iters - 1
        steps = [int(p.stem.split("-")[1]) for p in out_dir.rglob("step-*.ckpt")]
        iters = max(steps) + 1 if steps else None
    cuda = re.search(re.escape(_CUDA_MARK) + r"\s+([\d.]+)", log)
    return {
        "iterations": iters,
        "mean_iteration_s": float(mean.group(1)) if mean else None,
        "ngd_loop_s": float(mean.group(1)) * iters if mean and iters else None,
        "peak_cuda_allocated_mib": float(cuda.group(1)) if cuda else None,
    }


def run_one(cfg: NGDBenchConfig, obj: Path, work: Path, overrides: list[str], device: str) -> dict:
    out_dir = work / obj.name
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = ns_train_command(cfg, obj, out_dir, overrides, device)
    gnu_time = Path("/usr/bin/time")
    time_file = out_dir / "gnu_time.txt"
    if gnu_time.is_file():
        cmd = [str(gnu_time), "-v", "-o", str(time_file), *cmd]
    env = {**os.environ, "COLUMNS": "200"}
    print(f"[{obj.name}] {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.REPO_ROOT, env=env, capture_output=True, text=True, timeout=cfg.timeout_s)
    wall = time.perf_counter() - start
    log = proc.stdout + "\n" + proc.stderr
    (out_dir / "ns-train.log").write_text(log)
    if proc.returncode != 0:
        raise RuntimeError(f"ns-train failed on {obj} (exit {proc.returncode}); log tail:\n{log[-4000:]}")
    result: dict = {"object": str(obj), "wall_s": wall, **parse_run(log, out_dir)}
    if time_file.is_file():
        result.update(parse_gnu_time(time_file.read_text()))
        result["peak_rss_method"] = "GNU time -v: Maximum resident set size"
    else:
        result["peak_rss_mib"] = common.max_rss_mib(resource.RUSAGE_CHILDREN)
        result["peak_rss_method"] = "getrusage(RUSAGE_CHILDREN).ru_maxrss (largest child so far)"
    ngd = result["ngd_loop_s"]
    result["other_s"] = wall - ngd if ngd is not None else None
    result["meets_time_target"] = wall < TARGET_WALL_S
    result["meets_memory_target"] = result["peak_rss_mib"] < TARGET_RSS_MIB
    return result


def main(cfg: NGDBenchConfig) -> dict:
    device = common.resolve_device(cfg.device)
    if not (Path(cfg.bundle) / "config.json").is_file():
        raise SystemExit(f"bundle {cfg.bundle} not found (config.json missing): train one with nerfdiff-pretrain or pass --bundle")
    facts = common.machine_facts(device)
    common.print_facts(facts)
    objects = pick_objects(cfg)
    overrides = ngd_overrides(cfg)
    results = []
    with tempfile.TemporaryDirectory(prefix="nerfdiff-ngd-bench-") as tmp:
        work = Path(cfg.keep_output) if cfg.keep_output else Path(tmp)
        for obj in objects:
            results.append(run_one(cfg, obj, work, overrides, device))
    print()
    headers = ["object", "iterations", "wall s", "NGD loop s", "other s", "mean iter ms", "peak RSS MiB", "CPU user+sys s",
               f"< {TARGET_WALL_S / 60:.0f} min", f"< {TARGET_RSS_MIB / 1024:.0f} GB"]
    rows = []
    for r in results:
        rows.append([Path(r["object"]).name, r["iterations"] or "?", r["wall_s"], r["ngd_loop_s"] if r["ngd_loop_s"] is not None else "?",
                     r["other_s"] if r["other_s"] is not None else "?",
                     1000 * r["mean_iteration_s"] if r["mean_iteration_s"] is not None else "?", r["peak_rss_mib"],
                     r.get("user_s", 0.0) + r.get("system_s", 0.0), "yes" if r["meets_time_target"] else "NO",
                     "yes" if r["meets_memory_target"] else "NO"])
    if device.startswith("cuda"):
        headers.append("peak CUDA MiB")
        for row, r in zip(rows, results):
            row.append(r["peak_cuda_allocated_mib"])
    common.print_table(
        f"{cfg.method} NGD run per object on {device} (bundle {cfg.bundle}; extra flags: {' '.join(overrides + list(cfg.extra_args)) or 'none'})",
        headers, rows,
    )
    payload = {"benchmark": "ngd_timing", "machine": facts, "config": cfg.__dict__, "ns_train_overrides": overrides,
               "targets": {"wall_s": TARGET_WALL_S, "peak_rss_mib": TARGET_RSS_MIB}, "runs": results}
    common.write_json(cfg.output_json, payload)
    return payload


if __name__ == "__main__":
    main(tyro.cli(NGDBenchConfig, description=__doc__))
    sys.exit(0)
