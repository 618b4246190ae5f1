"""Open a finished NerfDiff run from its ``config.yml`` through nerfstudio's ``eval_setup``.

Checks come first so that bad input fails with a clear message instead of nerfstudio's
``sys.exit`` or an assertion: the file must exist, be a nerfstudio config of a nerfdiff method,
and have checkpoints next to it (they are found beside the config even when the run folder was
moved or the command runs from another directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nerfdiff_ns.export import ExportError

NERFDIFF_METHODS = ("nerfdiff", "nerfdiff-tiny")


@dataclass
class LoadedRun:
    """The finetuned NeRF of one run and what exports need from it."""

    config_path: Path
    model: "torch.nn.Module"  # nerfdiff_ns.model.NerfDiffModel
    step: int
    device: torch.device

    @property
    def nerf(self):
        return self.model.nerf

    @property
    def triplane(self) -> torch.Tensor:
        return self.model.triplane

    @property
    def source(self):
        return self.model.source

    @property
    def bundle_config(self):
        return self.model.bundle_config

    @property
    def radius(self) -> float:
        return float(self.model.nerf.config.object_radius)

    @property
    def background(self) -> torch.Tensor:
        return torch.tensor(self.model.nerf.config.background, dtype=torch.float32)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.model.input_size

    @property
    def intrinsics(self) -> torch.Tensor:
        """Input camera intrinsics ``[4]`` (fx, fy, cx, cy) in pixels."""
        return self.model.input_intrinsics[0].detach().cpu()

    @property
    def source_c2w(self) -> torch.Tensor:
        return self.model.input_c2w[0].detach().cpu()


def read_method_name(config_path: Path) -> str:
    """The ``method_name`` of a nerfstudio ``config.yml`` (clear errors for a missing/foreign file)."""
    import yaml

    config_path = Path(config_path)
    if not config_path.is_file():
        raise ExportError(config_path, "config not found",
                          "pass --load-config the config.yml that ns-train wrote in outputs/<experiment>/<method>/<timestamp>/")
    try:
        import nerfdiff_ns.config  # noqa: F401  (registers the methods the YAML refers to)

        config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except Exception as err:  # yaml errors, unknown python tags of other plugins
        raise ExportError(config_path, f"is not a readable nerfstudio config ({type(err).__name__}: {err})",
                          "pass the config.yml of a finished `ns-train nerfdiff ...` run") from err
    name = getattr(config, "method_name", None)
    if name not in NERFDIFF_METHODS:
        raise ExportError(config_path, f"is a run of method {name!r}, not of nerfdiff ({' / '.join(NERFDIFF_METHODS)})",
                          "nerfdiff-export reads NerfDiff runs; for other methods use nerfstudio's ns-export")
    return name


def load_run(config_path: Path, device: str = "auto") -> LoadedRun:
    """Load the run's pipeline (inference mode) and return its model in eval mode without gradients."""
    from nerfstudio.utils.eval_utils import eval_setup

    if device == "cuda" and not torch.cuda.is_available():  # the flag first, before any file is read
        from nerfdiff_ns.errors import FlagError

        raise FlagError("--device cuda: this machine has no CUDA device torch can use; pass --device cpu (or auto)")
    config_path = Path(config_path)
    read_method_name(config_path)
    ckpt_dir = config_path.parent / "nerfstudio_models"
    if not ckpt_dir.is_dir() or not list(ckpt_dir.glob("step-*.ckpt")):
        raise ExportError(ckpt_dir, "holds no step-*.ckpt checkpoint",
                          "export a run that saved at least one checkpoint (ns-train saves every --steps-per-save steps and at the end)")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))

    def _update(config):
        config.relative_model_dir = ckpt_dir.resolve()  # absolute: wins over output_dir/experiment/... in get_checkpoint_dir
        config.machine.device_type = dev.type
        return config

    _, pipeline, ckpt_path, step = eval_setup(config_path, test_mode="inference", update_config_callback=_update)
    model = pipeline.model
    from nerfdiff_ns.model import NerfDiffModel

    if not isinstance(model, NerfDiffModel):
        raise ExportError(config_path, f"built a {type(model).__name__}, not a NerfDiffModel", "pass the config.yml of a nerfdiff run")
    model.eval().requires_grad_(False)
    model.to(dev)
    return LoadedRun(config_path=config_path, model=model, step=int(step), device=dev)


__all__ = ["LoadedRun", "NERFDIFF_METHODS", "load_run", "read_method_name"]
