"""The CDM's pixel-aligned conditions rendered from the NeRF: RGB plus optional extra channels.

GeNVS conditions its diffusion model on a rendered feature image; here the NeRF's render of the
target view is the image condition, and a CDM may also ask for the NeRF's geometry at that view:

* ``depth``:   expected depth of the visible surface, mapped to [0, 1] over the object's depth range
               [d - r, d + r] (d = camera distance from the centre, r = object radius), so a near
               surface is 0 and the far side of the bounding sphere 1;
* ``opacity``: accumulated opacity (1 on the object, 0 on the background);
* ``features``: GeNVS's condition: the F triplane features the NeRF's MLP decodes, composited along
               each ray with the colour's weights and squashed to (0, 1) by a sigmoid (0.5 where the
               ray misses the object). F is the NeRF's feature width, recorded in the CDM's config
               (``feature_condition_channels``) so the bundle's NeRF and CDM are checked to agree.

A condition image is ``[B, H, W, 3 + E]`` in [0, 1], channels in the order RGB, then ``kinds`` in the
given order (E = 1 per depth or opacity, F for features: ``extra_condition_channels``); the CDM
records ``condition_kinds`` in its config (and so in every bundle), and pretraining, the render
cache, NGD, the benchmarks and ``nerfdiff-sample`` all build the image here, so the channels mean the
same thing everywhere. Only the RGB channels are ever a guidance target.
"""

from __future__ import annotations

from typing import Sequence

import torch

CONDITION_KINDS = ("depth", "opacity", "features")


def check_condition_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """Validated tuple of condition names (each known, none repeated)."""
    kinds = tuple(str(k) for k in kinds)
    unknown = [k for k in kinds if k not in CONDITION_KINDS]
    if unknown:
        raise ValueError(f"unknown CDM condition {unknown[0]!r}: choose from {CONDITION_KINDS}")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"CDM conditions repeat a name: {kinds}")
    return kinds


def extra_condition_channels(kinds: Sequence[str], feature_channels: int) -> int:
    """E: channels the conditions ``kinds`` add after the RGB render (``feature_channels`` F for features)."""
    kinds = check_condition_kinds(kinds)
    if "features" in kinds and feature_channels <= 0:
        raise ValueError("the 'features' condition needs the NeRF's feature width: feature_condition_channels > 0")
    return sum(feature_channels if kind == "features" else 1 for kind in kinds)


def cdm_condition_kinds(cdm) -> tuple[str, ...]:
    """The extra conditions a CDM expects after the RGB render (its config's ``condition_kinds``; older
    CDMs have none)."""
    return tuple(getattr(cdm.config, "condition_kinds", ()) or ())


def condition_image(out: dict[str, torch.Tensor], kinds: Sequence[str], camera_distance: torch.Tensor,
                    object_radius: float) -> torch.Tensor:
    """NeRF render outputs (``rgb [B, ..., 3]``, ``depth``/``accumulation [B, ..., 1]``, ``features [B, ..., F]``
    when asked for) -> ``[B, ..., 3 + E]``.

    ``camera_distance [B]``: each view's camera distance from the object centre.
    """
    channels = [out["rgb"]]
    for kind in kinds:
        if kind == "depth":
            depth = out["depth"]
            d = camera_distance.to(depth).view(-1, *([1] * (depth.dim() - 1)))
            channels.append(((depth - (d - object_radius)) / (2.0 * object_radius)).clamp(0.0, 1.0))
        elif kind == "opacity":
            channels.append(out["accumulation"].clamp(0.0, 1.0))
        elif kind == "features":
            if "features" not in out:
                raise ValueError("the 'features' condition needs a render with features: render_rays(..., features=True)")
            channels.append(torch.sigmoid(out["features"]))
        else:
            raise ValueError(f"unknown CDM condition {kind!r}: choose from {CONDITION_KINDS}")
    return torch.cat(channels, -1)


def render_condition_views(nerf, triplane: torch.Tensor, source, c2w: torch.Tensor, intrinsics: torch.Tensor,
                           size: int, kinds: Sequence[str], chunk: int = 8192) -> torch.Tensor:
    """Condition images ``[V, size, size, 3 + E]`` of views ``c2w [V, 4, 4]`` of ONE object's triplane.

    All views' rays go through the triplane as one ray set, in chunks of ``chunk`` rays (8 views at
    32 px are a single chunk), instead of one ``render_image`` per view.
    """
    from nerfdiff_ns.nerf.rays import camera_rays, image_pixels

    views = c2w.shape[0]
    k = intrinsics.reshape(-1, 4).expand(views, 4)
    origins, dirs = camera_rays(c2w, k, image_pixels(size, size, c2w.device)[None].expand(views, -1, -1))
    origins, dirs = origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3)
    features = "features" in kinds
    parts = [nerf.render_rays(triplane, source, origins[:, i : i + chunk], dirs[:, i : i + chunk], features=features)
             for i in range(0, origins.shape[1], chunk)]
    keys = ("rgb", "depth", "accumulation") + (("features",) if features else ())
    out = {key: torch.cat([p[key] for p in parts], 1).view(views, size, size, -1) for key in keys}
    return condition_image(out, kinds, c2w[:, :3, 3].norm(dim=-1), nerf.config.object_radius).clamp(0.0, 1.0)


def widen_condition_inputs(state: dict[str, torch.Tensor], extra: int, key: str = "unet.conv_in.weight"
                           ) -> dict[str, torch.Tensor]:
    """An RGB-only CDM's weights for a CDM that also takes ``extra`` condition channels: the first conv's
    input channels [x_t (3) | render (3) | source (3)] become [x_t | render | extra (zero weights) | source],
    so the widened CDM starts out computing exactly what the RGB-only one did and learns to use the extras."""
    weight = state[key]
    if weight.shape[1] != 9:
        raise ValueError(f"{key} has {weight.shape[1]} input channels; only a 9-channel (RGB-only) CDM can be widened")
    wide = weight.new_zeros(weight.shape[0], 9 + extra, *weight.shape[2:])
    wide[:, :6] = weight[:, :6]
    wide[:, 6 + extra :] = weight[:, 6:]
    return {**state, key: wide}


__all__ = ["CONDITION_KINDS", "cdm_condition_kinds", "check_condition_kinds", "condition_image", "extra_condition_channels",
           "render_condition_views", "widen_condition_inputs"]
