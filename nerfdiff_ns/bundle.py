"""Pretrained bundle: one folder every consumer loads through ``load_bundle``.

```
bundle/
  config.json          format + version, NeRF architecture, camera distribution, background
  nerf.safetensors     the image-conditioned NeRF (encoder + decoder MLP)
  cdm/                 the conditional diffusion model, diffusers ``save_pretrained`` format
  cdm_ema/             its EMA weights (what NGD uses), same format
  scheduler/           the diffusers noise scheduler config
  README.md            model card
```
No pickles: weights are safetensors, everything else JSON. Writes go to a temporary sibling
folder that replaces the old bundle in one rename, so a crash never leaves half a bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF, NeRFConfig

if TYPE_CHECKING:
    from torch import nn

BUNDLE_FORMAT = "nerfdiff-bundle"
BUNDLE_VERSION = 1


class BundleError(ValueError):
    """A bundle is missing, partial, corrupt or does not match the code; the message says how to fix it."""


@dataclass
class CameraDistribution:
    """Where the training cameras were: NGD places virtual views and defaults input cameras from this."""

    distance: float = 2.7
    """Camera distance to the object centre."""
    fov_degrees: float = 45.0
    """Vertical field of view."""
    elevation_range_degrees: tuple[float, float] = (-10.0, 60.0)
    """Range of camera elevations seen in training."""
    image_size: int = 64
    """Resolution of the training images."""


@dataclass
class BundleConfig:
    nerf: NeRFConfig
    cameras: CameraDistribution = field(default_factory=CameraDistribution)
    has_cdm: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance: training command, steps, dataset, validation figures."""

    def to_json(self) -> dict[str, Any]:
        cams = self.cameras
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "nerf": self.nerf.to_dict(),
            "cameras": {**cams.__dict__, "elevation_range_degrees": list(cams.elevation_range_degrees)},
            "background": list(self.nerf.background),
            "has_cdm": self.has_cdm,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> "BundleConfig":
        if not isinstance(data, dict):
            raise BundleError(f"{where} holds a JSON {type(data).__name__}, not a nerfdiff bundle config; re-export the bundle.")
        if data.get("format") != BUNDLE_FORMAT:
            raise BundleError(
                f"{where} is not a nerfdiff bundle config (format={data.get('format')!r}, expected {BUNDLE_FORMAT!r}); "
                "point to a folder written by `nerfdiff-pretrain`, or re-export the bundle."
            )
        if data.get("format_version") != BUNDLE_VERSION:
            raise BundleError(
                f"{where} has bundle format version {data.get('format_version')}, this nerfdiff-ns reads "
                f"version {BUNDLE_VERSION}: re-export the bundle with this version or install the matching nerfdiff-ns."
            )
        try:
            nerf = NeRFConfig.from_dict(data["nerf"])
            cams = dict(data.get("cameras", {}))
            cams["elevation_range_degrees"] = tuple(cams.get("elevation_range_degrees", (-10.0, 60.0)))
            return cls(nerf=nerf, cameras=CameraDistribution(**cams), has_cdm=bool(data.get("has_cdm")), extra=data.get("extra", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise BundleError(f"{where} does not match this nerfdiff-ns ({err!r}); re-export the bundle.") from err


@dataclass
class Bundle:
    """A loaded bundle folder; heavy parts (NeRF weights, CDM) load on request."""

    path: Path
    config: BundleConfig

    def load_nerf(self, device: torch.device | str = "cpu") -> ImageConditionedNeRF:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        weights = self.path / "nerf.safetensors"
        if not weights.is_file():
            raise BundleError(f"{weights} is missing: the bundle {self.path} is partial; re-export or re-download it.")
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as err:
            raise BundleError(f"{weights} is corrupt ({err}); re-export or re-download the bundle.") from err
        try:
            nerf = ImageConditionedNeRF(self.config.nerf, device="cpu")
        except Exception as err:  # an architecture this code cannot build
            raise BundleError(
                f"the NeRF architecture in {self.path / 'config.json'} cannot be built ({err!r}); the bundle was "
                "written by another nerfdiff-ns version or the file was edited: re-export it."
            ) from err
        _load_state_checked(nerf, state, weights)
        return nerf.to(device)

    def load_cdm(self, device: torch.device | str = "cpu", ema: bool = True) -> "nn.Module":
        """The frozen diffusion model (EMA weights by default), in eval mode."""
        from nerfdiff_ns.cdm.unet import ConditionalDiffusionModel

        folder = self.path / ("cdm_ema" if ema and (self.path / "cdm_ema").is_dir() else "cdm")
        if not self.config.has_cdm or not folder.is_dir():
            raise BundleError(
                f"{self.path} has no diffusion model ({folder.name}/ missing); NGD needs a bundle made by "
                "`nerfdiff-pretrain` with the CDM enabled."
            )
        try:
            model = ConditionalDiffusionModel.from_pretrained(
                str(folder), local_files_only=True, low_cpu_mem_usage=_low_cpu_mem_usage()
            )
        except Exception as err:  # diffusers raises several types for broken folders
            raise BundleError(
                f"could not load the diffusion model from {folder} ({err}); the bundle is partial or corrupt: "
                "re-export or re-download it."
            ) from err
        return model.to(device).eval().requires_grad_(False)

    def load_scheduler_config(self) -> dict[str, Any]:
        path = self.path / "scheduler" / "scheduler_config.json"
        if not path.is_file():
            raise BundleError(f"{path} is missing: the bundle {self.path} is partial; re-export or re-download it.")
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            raise BundleError(f"{path} is not valid JSON ({err}); re-export or re-download the bundle.") from err

    def load_train_scheduler(self) -> Any:
        """The diffusers training scheduler (betas, timesteps, prediction type) the CDM was trained with."""
        from nerfdiff_ns.cdm.schedule import make_train_scheduler

        cfg = self.load_scheduler_config()
        return make_train_scheduler(
            num_train_timesteps=cfg["num_train_timesteps"], beta_schedule=cfg["beta_schedule"],
            prediction_type=cfg.get("prediction_type", "epsilon"),
        )


def _low_cpu_mem_usage() -> bool:
    """diffusers' meta-device loading needs `accelerate`; without it diffusers falls back to plain loading
    anyway but warns on every load (4x per nerfdiff-eval object). Ask for plain loading up front then."""
    from diffusers.utils import is_accelerate_available

    return bool(is_accelerate_available())


def _load_state_checked(module: "nn.Module", state: dict[str, torch.Tensor], where: Path) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            part for part in (
                f"missing {missing[:4]}" if missing else "",
                f"unexpected {unexpected[:4]}" if unexpected else "",
                f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:3]]}" if wrong else "",
            ) if part
        )
        raise BundleError(
            f"{where} does not match the architecture in config.json ({detail}). The bundle was written by a "
            "different configuration or version; re-export it. (tiny-cuda-nn and torch MLP weights also differ: "
            "set mlp_implementation to the one the bundle was trained with.)"
        )
    module.load_state_dict(state)


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open a bundle folder (validates config.json; weights load lazily through the ``Bundle``)."""
    root = Path(path).expanduser()
    if root.is_file() and root.name == "config.json":
        raise BundleError(f"{root} is a bundle's config file; pass the bundle folder that holds it: {root.parent}")
    if not root.is_dir():
        previous = root.with_name(f".{root.name}.old")
        hint = (
            f" A save was interrupted while swapping folders: {previous} holds the previous complete bundle; "
            f"rename it to {root}." if (previous / "config.json").is_file() else ""
        )
        raise BundleError(
            f"bundle folder {root} does not exist. Train one with `nerfdiff-pretrain` or point to the shipped "
            f"one (see README: Pretrained bundles).{hint}"
        )
    cfg_path = root / "config.json"
    if not cfg_path.is_file() and (root / "bundle" / "config.json").is_file():
        raise BundleError(f"{root} is a training run's folder; its bundle is {root / 'bundle'}: pass that folder")
    if not cfg_path.is_file():
        raise BundleError(
            f"{cfg_path} is missing: {root} is not a nerfdiff bundle (or a partial one); point to the bundle "
            "folder itself, or re-export / re-download it."
        )
    try:
        data = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise BundleError(f"{cfg_path} is not valid JSON ({err}); the bundle is corrupt: re-export or re-download it.") from err
    return Bundle(path=root, config=BundleConfig.from_json(data, cfg_path))


def save_bundle(
    path: str | os.PathLike[str],
    config: BundleConfig,
    nerf: "nn.Module",
    cdm: "nn.Module | None" = None,
    cdm_ema: "nn.Module | None" = None,
    scheduler: Any | None = None,
    model_card: str | None = None,
) -> Path:
    """Write a bundle atomically (temporary folder + rename)."""
    from safetensors.torch import save_file

    root = Path(path).expanduser()
    root.parent.mkdir(parents=True, exist_ok=True)
    config.has_cdm = cdm is not None
    # Not tempfile.mkdtemp: its folder is mode 0700, and the rename would make the bundle unreadable
    # to other users. A plain mkdir honours the umask like every other folder.
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / "config.json").write_text(json.dumps(config.to_json(), indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in nerf.state_dict().items()}, str(tmp / "nerf.safetensors"))
        if cdm is not None:
            cdm.save_pretrained(str(tmp / "cdm"))
        if cdm_ema is not None:
            cdm_ema.save_pretrained(str(tmp / "cdm_ema"))
        if scheduler is not None:
            scheduler.save_pretrained(str(tmp / "scheduler"))
        if model_card:
            (tmp / "README.md").write_text(model_card)
        replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def replace_dir(new: Path, target: Path) -> None:
    """Swap ``new`` into ``target`` so that one of the two complete folders always exists."""
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    # (without a target, an ``old`` left by an interrupted swap is the last complete bundle: it is
    # removed only once ``new`` is in place)
    try:
        os.replace(new, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)  # put the previous bundle back
        raise
    if old.exists():
        shutil.rmtree(old)
