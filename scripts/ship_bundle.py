"""Export a pretraining run's latest checkpoint as the shipped bundle, with its model card.

    python scripts/ship_bundle.py --run runs/tiny --data data/synth32 --dest nerfdiff_ns/assets/bundle-tiny

The recipe that produced the shipped tiny bundle (README: "Shipped model"):

    nerfdiff-generate-data --output-dir data/synth32 --resolution 32
    nerfdiff-pretrain --preset tiny --data data/synth32 --output-dir runs/tiny --steps 3000 \
        --steps-per-checkpoint 100 --steps-per-eval 200
    python scripts/ship_bundle.py --run runs/tiny --data data/synth32 --dest nerfdiff_ns/assets/bundle-tiny
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
    preset: str = "tiny"
    """Preset the run used."""
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

    trainer = Trainer(parse_config(["--preset", cfg.preset, "--data", str(cfg.data), "--output-dir", str(cfg.run),
                                    "--no-log-tensorboard", "--no-log-jsonl"]))
    if not cfg.ema:
        trainer.ema = None
    steps, seconds = run_wall_time(cfg.run)
    size = None
    path = trainer.export_bundle(cfg.dest)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    card = [
        f"# nerfdiff-ns bundle: {cfg.dest.name}",
        "",
        f"- **Training data**: `{cfg.data}` — pybullet_data `random_urdfs` train split (objects 000–899, "
        "24 random views each) rendered by `nerfdiff-generate-data --output-dir data/synth32 --resolution 32`.",
        f"- **Command**: `nerfdiff-pretrain --preset {cfg.preset} --data {cfg.data} --output-dir {cfg.run} "
        "--steps 3000 --steps-per-checkpoint 100 --steps-per-eval 200`, stopped and exported at the checkpoint below.",
        f"- **Steps**: {trainer.step} (batch {trainer.cfg.batch_size} objects/step).",
        f"- **Wall time**: {seconds / 60:.0f} min from the first to the last logged step ({steps}), on "
        f"{platform.processor() or platform.machine()} with 2 CPU cores, shared with development work (tests, "
        "benchmarks), so slower than on an idle machine.",
        f"- **CDM weights**: {'EMA' if cfg.ema else 'raw (not EMA): at decay 0.999 without warm-up, a run this short still had a large share of the random initialisation in its EMA'}.",
        f"- **Size**: {size / 2**20:.1f} MiB.",
        f"- **Export**: `python scripts/ship_bundle.py --run {cfg.run} --data {cfg.data} --dest {cfg.dest}`.",
        "",
    ]
    if cfg.notes and cfg.notes.is_file():
        card += ["## Validation", "", cfg.notes.read_text()]
    (path / "README.md").write_text("\n".join(card) + "\n")
    (path / "training_config.json").write_text(json.dumps(json.loads((cfg.run / "pretrain_config.json").read_text()), indent=2))
    ckpt_dir = path / "checkpoints"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    print(f"bundle: {path} ({size / 2**20:.1f} MiB, step {trainer.step})")
    return path


if __name__ == "__main__":
    main(tyro.cli(ShipConfig))
