"""Export a pretraining run's latest checkpoint as the shipped bundle, with its model card.

    python scripts/ship_bundle.py --run runs/tiny-cdm --data data/synth32 --dest nerfdiff_ns/assets/bundle-tiny --ema \
        --notes runs/tiny-cdm-card.md

The recipe of the shipped tiny bundle (README: "Shipped model"), two stages of the same CLI:

    nerfdiff-generate-data --output-dir data/synth32 --resolution 32
    # stage 1: joint NeRF + CDM training (2,000 steps at batch 8)
    nerfdiff-pretrain --preset tiny --data data/synth32 --output-dir runs/tiny --steps 2000 \
        --steps-per-checkpoint 100 --steps-per-eval 200
    python scripts/ship_bundle.py --run runs/tiny --data data/synth32 --dest runs/bundle-stage1
    # stage 2: the CDM alone on the frozen stage-1 NeRF (3x the images/s of joint training on a CPU). The shipped
    # bundle's stage 2 rendered its conditions live: add --no-render-cache to reproduce it exactly (the default
    # render cache trains on a fixed set of jitter-free renders, another 3x faster).
    nerfdiff-pretrain --preset tiny --data data/synth32 --output-dir runs/tiny-cdm --init-from runs/bundle-stage1 \
        --freeze-nerf --steps 8000 --batch-size 16 --steps-per-eval 0 --steps-per-checkpoint 250
    python scripts/ship_bundle.py --run runs/tiny-cdm --data data/synth32 --dest nerfdiff_ns/assets/bundle-tiny --ema
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro


@dataclass
class ShipConfig:
    run: Path = Path("runs/tiny")
    """Pretraining run folder (checkpoints/, tensorboard/, pretrain_config.json)."""
    data: Path = Path("data/synth32")
    """The dataset the run trained on."""
    dest: Path = Path("nerfdiff_ns/assets/bundle-tiny")
    """Where to write the bundle."""
    ema: bool = False
    """Ship the EMA weights of the CDM (off when the run is too short for its EMA to forget the initialisation)."""
    notes: Optional[Path] = None
    """Markdown file with validation figures to append to the model card."""


def run_wall_time(run: Path) -> tuple[int, float]:
    """(last logged step, seconds from the first to the last logged scalar) from tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    scalars = acc.Scalars("train/total_loss")
    return scalars[-1].step, scalars[-1].wall_time - scalars[0].wall_time


def main(cfg: ShipConfig) -> Path:
    from nerfdiff_ns.pretrain import Trainer, parse_config

    run_cfg = json.loads((cfg.run / "pretrain_config.json").read_text())
    # The run's own settings (its pretrain_config.json as the preset), so the bundle records what trained it;
    # --no-render-cache: exporting needs the weights only, never the stage's cache of renders
    trainer = Trainer(parse_config(["--preset", str(cfg.run / "pretrain_config.json"), "--data", str(cfg.data),
                                    "--output-dir", str(cfg.run), "--no-log-tensorboard", "--no-log-jsonl",
                                    "--no-render-cache"]))
    if trainer.step == 0:
        raise SystemExit(f"{cfg.run} has no checkpoint to export")
    if not cfg.ema:
        trainer.ema = None
    steps, seconds = run_wall_time(cfg.run)
    path = trainer.export_bundle(cfg.dest)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    # The card's command: the run's stage and the settings that differ from the preset
    stage = ["--freeze-nerf"] if run_cfg.get("freeze_nerf") else []
    if run_cfg.get("init_from"):
        stage += ["--init-from", str(run_cfg["init_from"])]
    cdm_cfg = run_cfg.get("cdm", {})
    arch = ["--cdm.conditions", *cdm_cfg["conditions"]] if cdm_cfg.get("conditions") else []
    knobs = [f"--cdm.learning-rate {cdm_cfg['learning_rate']:g}"] if "learning_rate" in cdm_cfg else []
    if cdm_cfg.get("timestep_sampling", "uniform") != "uniform":
        knobs.append(f"--cdm.timestep-sampling {cdm_cfg['timestep_sampling']}")
    if cdm_cfg.get("render_start_prob", 0.0) > 0:
        knobs.append(f"--cdm.render-start-prob {cdm_cfg['render_start_prob']:g}")
    if run_cfg.get("lr_schedule", "constant") != "constant":
        knobs.append(f"--lr-schedule {run_cfg['lr_schedule']} --lr-min-factor {run_cfg.get('lr_min_factor', 0.1):g}")
    if run_cfg.get("seed", 0):
        knobs.append(f"--seed {run_cfg['seed']}")
    if run_cfg.get("freeze_nerf") and run_cfg.get("render_cache", True):
        knobs.append(f"--render-cache-pairs {run_cfg.get('render_cache_pairs', 24)}")
    command = (f"nerfdiff-pretrain --preset {run_cfg['preset']} --data {cfg.data} --output-dir {cfg.run} --steps "
               f"{run_cfg['steps']} --batch-size {run_cfg['batch_size']} {' '.join(stage + arch + knobs)}").strip()
    dataset = cfg.data / "dataset.json"
    settings = json.loads(dataset.read_text()).get("settings", {}) if dataset.is_file() else {}
    source = settings.get("source", "random-urdfs")
    resolution = settings.get("resolution", run_cfg["render_resolution"])
    card = [
        f"# nerfdiff-ns bundle: {cfg.dest.name}",
        "",
        f"- **Training data**: `{cfg.data}` — the `{source}` train split (objects 000–899, 24 random views each) "
        f"rendered by `nerfdiff-generate-data --source {source} --output-dir {cfg.data} --resolution {resolution}`.",
        f"- **Command (last stage)**: `{command}`, stopped and exported at the checkpoint below.",
        f"- **Steps (last stage)**: {trainer.step} (batch {run_cfg['batch_size']} objects/step)"
        + (f", after {trainer.init_steps} earlier steps in the bundle it started from." if trainer.init_steps else "."),
        f"- **Wall time (last stage)**: {seconds / 60:.0f} min from the first to the last logged step ({steps}), on "
        f"{platform.processor() or platform.machine()} with 2 CPU cores, shared with development work (tests, "
        "benchmarks), so slower than on an idle machine.",
        f"- **CDM weights**: {'EMA (decay 0.999 with warm-up)' if cfg.ema else 'raw (not EMA)'}.",
        f"- **Size**: {size / 2**20:.1f} MiB.",
        f"- **Export**: `python scripts/ship_bundle.py --run {cfg.run} --data {cfg.data} --dest {cfg.dest}"
        f"{' --ema' if cfg.ema else ''}`.",
        "",
    ]
    if cfg.notes and cfg.notes.is_file():
        card += [cfg.notes.read_text()]
    (path / "README.md").write_text("\n".join(card) + "\n")
    (path / "training_config.json").write_text(json.dumps(json.loads((cfg.run / "pretrain_config.json").read_text()), indent=2))
    ckpt_dir = path / "checkpoints"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    print(f"bundle: {path} ({size / 2**20:.1f} MiB, step {trainer.step})")
    return path


if __name__ == "__main__":
    main(tyro.cli(ShipConfig))
