"""Symmetry augmentation of pretraining samples: a mirrored world and permuted colour channels.

The CDM of random_urdfs over-fits its 900 training objects (benchmarks/README.md: +0.45 dB over the
render on training objects, +0.1 dB on val). Two symmetries of the data make new, equally plausible
samples from each one, for both the NeRF and the CDM:

* ``hflip``: the whole scene mirrored in the plane x = 0. A camera ``c2w`` becomes ``F c2w F`` with
  ``F = diag(-1, 1, 1, 1)``: its centre mirrored, its frame mirrored back to a right-handed one, so that
  a point's camera-space x is negated and every image is flipped left-right (principal point
  ``cx -> W - cx``). The relative camera the CDM sees becomes ``F rel F``, the pose of the mirrored pair.
* ``channels``: the RGB channels permuted, the same permutation for every image of the sample (source,
  target, render). Valid where colours are drawn without regard to channel (one random colour per
  random_urdfs blob, a white background and white light); not for data whose colours have a meaning.

One random choice per sample, from the sample's own generator, so batches stay deterministic from
(seed, step, index) for any number of processes. Extra render channels after RGB (depth, opacity,
features) are flipped but never permuted.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from nerfdiff_ns.errors import FlagError

Augmentation = Literal["hflip", "channels"]
AUGMENTATIONS: tuple[str, ...] = ("hflip", "channels")
_IMAGE_KEYS = ("source_image", "target_image", "render")
_CAMERA_KEYS = ("source_c2w", "target_c2w")
_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def check_augmentations(augment: Sequence[str]) -> None:
    """Unknown names fail before any data or model work."""
    unknown = [a for a in augment if a not in AUGMENTATIONS]
    if unknown:
        raise FlagError(f"--augment {' '.join(unknown)}: unknown augmentation; choose from {', '.join(AUGMENTATIONS)}")


def mirror_c2w(c2w: torch.Tensor) -> torch.Tensor:
    """``F c2w F`` with ``F = diag(-1, 1, 1, 1)``: the camera of the scene mirrored in x = 0."""
    mirror = _MIRROR.to(device=c2w.device, dtype=c2w.dtype)
    return mirror @ c2w @ mirror


def mirror_sample(sample: dict[str, torch.Tensor]) -> None:
    """Mirror a sample's scene in place: images flipped left-right ([H, W, C]), cameras and principal point mirrored."""
    for key in _IMAGE_KEYS:
        if key in sample:
            sample[key] = sample[key].flip(1)
    for key in _CAMERA_KEYS:
        sample[key] = mirror_c2w(sample[key])
    intrinsics = sample["intrinsics"].clone()
    width = sample["source_image"].shape[1]
    intrinsics[2] = width - intrinsics[2]
    sample["intrinsics"] = intrinsics


def permute_channels(sample: dict[str, torch.Tensor], order: torch.Tensor) -> None:
    """Reorder the RGB channels of every image of a sample in place (extra render channels stay where they are)."""
    for key in _IMAGE_KEYS:
        if key in sample:
            image = sample[key]
            sample[key] = torch.cat([image[..., :3][..., order], image[..., 3:]], dim=-1)


def augment_sample(sample: dict[str, torch.Tensor], augment: Sequence[str], gen: torch.Generator) -> None:
    """Apply the configured symmetries to one sample in place: ``hflip`` with probability 1/2, ``channels`` as a
    uniformly drawn channel order (the identity among them). Draws nothing when ``augment`` is empty, so runs
    without it keep their random streams."""
    if not augment:
        return
    flip = bool(torch.rand((1,), generator=gen) < 0.5)
    order = torch.randperm(3, generator=gen)
    if "hflip" in augment and flip:
        mirror_sample(sample)
    if "channels" in augment:
        permute_channels(sample, order)


__all__ = ["AUGMENTATIONS", "Augmentation", "augment_sample", "check_augmentations", "mirror_c2w", "mirror_sample",
           "permute_channels"]
