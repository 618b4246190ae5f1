"""Image metrics of the benchmark (pure torch; nothing is ever downloaded).

Every function takes ``[V, H, W, 3]`` (or one ``[H, W, 3]``) float images in ``[0, 1]`` and returns
one value per view, so the evaluation can average per object and then over objects (DESIGN §3).

* ``psnr``, ``ssim`` (torchmetrics' Gaussian SSIM, 11 px window, sigma 1.5 -- the same SSIM the
  nerfstudio model reports);
* ``lpips_vgg``, ``lpips_alex`` (torchmetrics LPIPS) only when torchvision's ImageNet backbone
  checkpoint is already in the torch hub cache; otherwise ``None`` and a note says why;
* ``sharpness``: Laplacian energy of the prediction / Laplacian energy of the ground truth
  (mean squared response of the 3x3 Laplacian on luma, valid pixels only). Blurry renders < 1,
  identical images == 1, noise or over-sharpening > 1;
* offline perceptual metrics from ``piq``: ``haarpsi``, ``gmsd`` and ``ms_ssim`` (``None`` where the
  image is smaller than the metric needs: MS-SSIM with 5 scales and an 11 px window needs 161 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

__all__ = [
    "METRICS",
    "HIGHER_IS_BETTER",
    "MetricSuite",
    "laplacian_energy",
    "lpips_checkpoint",
    "ms_ssim_min_size",
    "mse_to_psnr",
    "psnr",
    "sharpness_ratio",
    "ssim",
]

METRICS = ("psnr", "ssim", "lpips_vgg", "lpips_alex", "sharpness", "haarpsi", "gmsd", "ms_ssim")
"""Every metric the suite reports, in table order."""

HIGHER_IS_BETTER: Dict[str, Optional[bool]] = {
    "psnr": True, "ssim": True, "lpips_vgg": False, "lpips_alex": False, "sharpness": None,
    "haarpsi": True, "gmsd": False, "ms_ssim": True,
}
"""Direction of each metric (``sharpness``: closer to 1 is better)."""

_LUMA = (0.299, 0.587, 0.114)
_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
MS_SSIM_KERNEL = 11
MS_SSIM_SCALES = 5


def _views(images: torch.Tensor) -> torch.Tensor:
    """``[H, W, 3]`` or ``[V, H, W, 3]`` -> ``[V, 3, H, W]`` float32 (CHW for the networks)."""
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [H, W, 3] or [V, H, W, 3], got {tuple(images.shape)}")
    return images.detach().float().permute(0, 3, 1, 2).contiguous()


def _pair(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p, g = _views(pred), _views(gt).to(pred.device)
    if p.shape != g.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} differ in shape")
    return p.clamp(0, 1), g.clamp(0, 1)


def mse_to_psnr(mse: torch.Tensor | float) -> torch.Tensor:
    """PSNR in dB of images in [0, 1]: ``-10 log10(mse)`` (mse floored at 1e-10, i.e. at most 100 dB)."""
    mse = torch.as_tensor(mse, dtype=torch.float64)
    return -10.0 * torch.log10(mse.clamp(min=1e-10))


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-view PSNR ``[V]`` (float64), the MSE taken over all pixels and channels of a view."""
    p, g = _pair(pred, gt)
    mse = (p.double() - g.double()).pow(2).flatten(1).mean(1)
    return mse_to_psnr(mse)


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-view SSIM ``[V]`` (Gaussian window 11, sigma 1.5, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    p, g = _pair(pred, gt)
    return structural_similarity_index_measure(p, g, data_range=1.0, reduction="none").reshape(-1).double()


def laplacian_energy(images: torch.Tensor) -> torch.Tensor:
    """Per-view mean squared 3x3 Laplacian response of the luma ``[V]`` (valid pixels, no padding)."""
    x = _views(images).clamp(0, 1).double()
    luma = (x * torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    kernel = torch.tensor(_LAPLACIAN, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    return F.conv2d(luma, kernel).pow(2).flatten(1).mean(1)


def sharpness_ratio(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-view Laplacian-energy ratio prediction / ground truth ``[V]``: < 1 blurrier, 1 identical.

    A flat ground truth (no edges at all) gives NaN: the ratio is undefined there.
    """
    p, g = _pair(pred, gt)
    num, den = laplacian_energy(p.permute(0, 2, 3, 1)), laplacian_energy(g.permute(0, 2, 3, 1))
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.full_like(num, float("nan")))


def ms_ssim_min_size(kernel_size: int = MS_SSIM_KERNEL, scales: int = MS_SSIM_SCALES) -> int:
    """Smallest image side MS-SSIM accepts: ``(kernel - 1) * 2**(scales - 1) + 1`` (161 by default)."""
    return (kernel_size - 1) * 2 ** (scales - 1) + 1


_LPIPS_BACKBONES = {"vgg": ("vgg16", "VGG16_Weights"), "alex": ("alexnet", "AlexNet_Weights")}


def lpips_checkpoint(net: str) -> Path:
    """Where torchvision keeps the ImageNet backbone LPIPS ``net`` ('vgg' or 'alex') needs."""
    import torchvision

    weights = getattr(torchvision.models, _LPIPS_BACKBONES[net][1]).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


@dataclass
class MetricSuite:
    """All metrics for prediction/ground-truth pairs; LPIPS networks are built once, lazily.

    ``notes`` collects one sentence per metric that could not be computed (reported once, not per view).
    """

    device: str | torch.device = "cpu"
    lpips: bool = True
    """Compute LPIPS when the backbone weights are on disk (never downloads)."""
    notes: Dict[str, str] = field(default_factory=dict)
    _lpips_nets: Dict[str, Optional[torch.nn.Module]] = field(default_factory=dict)

    def _lpips_net(self, net: str) -> Optional[torch.nn.Module]:
        if net in self._lpips_nets:
            return self._lpips_nets[net]
        module = None
        key = f"lpips_{net}"
        if not self.lpips:
            self.notes[key] = "LPIPS disabled (--no-lpips)."
        else:
            ckpt = lpips_checkpoint(net)
            if not ckpt.is_file():
                self.notes[key] = (
                    f"torchvision's {_LPIPS_BACKBONES[net][0]} ImageNet weights are not on disk ({ckpt}); "
                    "LPIPS is reported as null because this tool never downloads. Put the file there to enable it."
                )
            else:
                try:
                    from torchmetrics.functional.image.lpips import _NoTrainLpips

                    module = _NoTrainLpips(net=net).to(self.device).eval()
                except Exception as err:  # a corrupt checkpoint, a torchmetrics API change, ...
                    self.notes[key] = f"LPIPS ({net}) could not be built: {err!r}"
        self._lpips_nets[net] = module
        return module

    @torch.no_grad()
    def _lpips(self, net: str, p: torch.Tensor, g: torch.Tensor) -> Optional[torch.Tensor]:
        module = self._lpips_net(net)
        if module is None:
            return None
        out = module(p.to(self.device), g.to(self.device), normalize=True)  # inputs in [0, 1]
        return out.reshape(-1).double().cpu()

    def _piq(self, name: str, p: torch.Tensor, g: torch.Tensor) -> Optional[torch.Tensor]:
        import piq

        try:
            if name == "ms_ssim":
                need = ms_ssim_min_size()
                if min(p.shape[-2:]) < need:
                    self.notes[name] = (
                        f"MS-SSIM ({MS_SSIM_SCALES} scales, {MS_SSIM_KERNEL} px window) needs images of at least "
                        f"{need}x{need} px; these are {p.shape[-2]}x{p.shape[-1]}: reported as null."
                    )
                    return None
                out = piq.multi_scale_ssim(p, g, data_range=1.0, reduction="none")
            elif name == "haarpsi":
                out = piq.haarpsi(p, g, data_range=1.0, reduction="none")
            elif name == "gmsd":
                out = piq.gmsd(p, g, data_range=1.0, reduction="none")
            else:
                raise KeyError(name)
        except (AssertionError, ValueError, RuntimeError) as err:  # piq asserts on too-small images
            self.notes[name] = f"{name} not computable on {p.shape[-2]}x{p.shape[-1]} images ({err}): reported as null."
            return None
        return out.reshape(-1).double().cpu()

    @torch.no_grad()
    def per_view(self, pred: torch.Tensor, gt: torch.Tensor) -> Dict[str, Optional[List[float]]]:
        """``{metric: [one value per view] or None}`` for ``[V, H, W, 3]`` predictions and ground truths."""
        p, g = _pair(pred.cpu(), gt.cpu())
        hwc_p, hwc_g = p.permute(0, 2, 3, 1), g.permute(0, 2, 3, 1)
        values: Dict[str, Optional[torch.Tensor]] = {
            "psnr": psnr(hwc_p, hwc_g),
            "ssim": ssim(hwc_p, hwc_g),
            "lpips_vgg": self._lpips("vgg", p, g),
            "lpips_alex": self._lpips("alex", p, g),
            "sharpness": sharpness_ratio(hwc_p, hwc_g),
            "haarpsi": self._piq("haarpsi", p, g),
            "gmsd": self._piq("gmsd", p, g),
            "ms_ssim": self._piq("ms_ssim", p, g),
        }
        return {k: (None if v is None else [float(x) for x in v]) for k, v in values.items()}


def mean_or_none(values: Optional[List[float]]) -> Optional[float]:
    """Mean of the finite values (``None`` when there are none)."""
    if not values:
        return None
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(sum(finite) / len(finite)) if finite else None
