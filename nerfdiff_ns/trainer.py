"""nerfstudio Trainer for NerfDiff: run length from the NGD schedule, atomic checkpoints.

* ``max_num_iterations = -1`` (the default here) means "K' * N + final iterations of the NGD
  schedule" (K' = the diffusion steps run, after ``skip_pinned_steps``; it needs the bundle's noise
  schedule), so changing ``--pipeline.ngd.*`` changes the run length with it; the learning-rate decay over
  the final iterations (``nerfdiff_ns/lr_decay.py``) takes its length from the same schedule.
* nerfstudio 1.1.5 writes checkpoints in place; a crash mid-write loses the run. We write to a
  temporary file in the same folder and rename it over the target.
* A photo prepared by the ``nerfdiff-image`` dataparser (image, mask, camera JSON, preview) is
  copied into the run's output folder, ``<base_dir>/prepared/``, so the run records what it saw.
* ``<base_dir>/camera_paths/orbit.json``: an orbit around the object starting at the input view,
  for ``ns-render camera-path`` (``nerfdiff_ns/camera_path.py`` says why not ``ns-render spiral``).
* ns-train writes ``config.yml`` before the trainer exists; a run refused for bad input (a flag, the photo,
  the bundle) would leave a folder holding only that file. Such a folder is removed with the error.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Optional, Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig

from nerfdiff_ns.lr_decay import fill_final_decay
from nerfdiff_ns.training.checkpoint import atomic_torch_save


@dataclass
class NerfDiffTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: NerfDiffTrainer)
    max_num_iterations: int = -1
    """NeRF iterations; -1 follows the NGD schedule (the diffusion steps that run * nerf_iters_per_step + final_iters)."""


def schedule_iterations(config: TrainerConfig) -> int:
    """NeRF iterations of the run's NGD schedule (``NGDConfig.total_iters`` of the steps it will run)."""
    ngd = getattr(config.pipeline, "ngd", None)
    if ngd is None:
        return 1
    bundle = getattr(getattr(config.pipeline, "model", None), "bundle", None)
    if ngd.mode == "feed-forward" or bundle is None:
        return ngd.total_iters()
    from nerfdiff_ns.bundle import load_bundle
    from nerfdiff_ns.errors import FlagError
    from nerfdiff_ns.ngd import ngd_step_timesteps

    loaded = load_bundle(bundle)
    if not loaded.config.has_cdm:
        if ngd.mode != "input-only":
            raise FlagError(f"{bundle} is a NeRF-only bundle (no diffusion model), which --pipeline.ngd.mode {ngd.mode} "
                            "needs: pass --pipeline.ngd.mode feed-forward or input-only, or a bundle with a CDM")
        return ngd.total_iters()  # without the CDM's noise schedule: the full K steps' budget
    return ngd.total_iters(len(ngd_step_timesteps(ngd, loaded.load_train_scheduler())))


@contextmanager
def discard_refused_run(base_dir: Path) -> Iterator[None]:
    """On a user error (bad flag, photo or bundle), remove ``base_dir`` if it holds nothing but ns-train's
    ``config.yml`` (and its now empty parents below the output folder), then let the error through."""
    try:
        yield
    except Exception as exc:
        from nerfdiff_ns.cli import is_user_error

        base_dir = Path(base_dir)
        if is_user_error(exc) and base_dir.is_dir() and [p.name for p in base_dir.iterdir()] == ["config.yml"]:
            shutil.rmtree(base_dir)
            for parent in list(base_dir.parents)[:2]:  # <method>/ and <experiment>/, if this run was all they held
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
        raise


class NerfDiffTrainer(Trainer):
    config: NerfDiffTrainerConfig

    def __init__(self, config: NerfDiffTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        with discard_refused_run(config.get_base_dir()):
            self._configure(config)
        super().__init__(config, local_rank, world_size)

    @staticmethod
    def _configure(config: NerfDiffTrainerConfig) -> None:
        """Check the flags and derive the run length and the rate decay from the NGD schedule."""
        ngd = getattr(config.pipeline, "ngd", None)
        if ngd is not None:  # bad --pipeline.ngd.* flags fail before the bundle loads
            from nerfdiff_ns.ngd import check_ngd_config

            check_ngd_config(ngd)
        if config.max_num_iterations < 0:
            config.max_num_iterations = max(1, schedule_iterations(config))
        fill_final_decay(config.optimizers, config.max_num_iterations, ngd.final_iters if ngd is not None else 0)

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        with discard_refused_run(self.base_dir):
            super().setup(test_mode)
        self.orbit_path: Optional[Path] = None
        if self.local_rank == 0:
            self.save_prepared_input()
            self.save_orbit_camera_path()

    def train(self) -> None:
        super().train()
        if self.local_rank == 0 and self.orbit_path is not None:
            self.print_orbit_command()

    def save_prepared_input(self) -> Optional[Path]:
        """Copy the prepared photo's files into ``<base_dir>/prepared``; None when the input was not prepared."""
        parser = getattr(getattr(self.pipeline, "datamanager", None), "dataparser", None)
        files = getattr(parser, "prepared_files", None)
        if not files:
            return None
        from nerfstudio.utils.rich_utils import CONSOLE
        from rich.markup import escape

        target = self.base_dir / "prepared"
        target.mkdir(parents=True, exist_ok=True)
        for path in files.values():
            shutil.copy2(path, target / Path(path).name)
        CONSOLE.print(f"[bold]nerfdiff-image:[/] prepared input and preview saved to {escape(str(target))}")
        return target

    def save_orbit_camera_path(self) -> Optional[Path]:
        """Write ``<base_dir>/camera_paths/orbit.json`` and print the ``ns-render`` command that uses it
        (again when training ends, where the user is looking)."""
        model = getattr(self.pipeline, "module", self.pipeline).model
        if not hasattr(model, "input_c2w"):
            return None
        from nerfdiff_ns.camera_path import orbit_camera_path
        from nerfdiff_ns.evaluation.report import write_json

        self.orbit_path = self.base_dir / "camera_paths" / "orbit.json"
        write_json(self.orbit_path, orbit_camera_path(model.input_c2w[0], model.input_intrinsics[0], model.input_size))
        self.print_orbit_command()
        return self.orbit_path

    def print_orbit_command(self) -> None:
        from nerfstudio.utils.rich_utils import CONSOLE
        from rich.markup import escape

        config = self.base_dir / "config.yml"
        CONSOLE.print(
            f"[bold]orbit video:[/] ns-render camera-path --load-config {escape(str(config))} "
            f"--camera-path-filename {escape(str(self.orbit_path))} --output-path orbit.mp4 --downscale-factor 0.25"
        )

    def save_checkpoint(self, step: int) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path: Path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        atomic_torch_save(state, ckpt_path)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("step-*.ckpt"):
                if old != ckpt_path:
                    old.unlink()
