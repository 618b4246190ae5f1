"""Volume rendering with stratified and importance sampling, in plain torch.

Why not nerfstudio's samplers: pretraining renders rays of many objects at once, each reading its
own triplane, and runs on bare GPU workers without nerfstudio; these few functions keep the
math explicit and batched as ``[B, R, S]`` (objects, rays, samples).

Samples are described by bin *edges* ``[..., S + 1]`` from near to far and one position per bin,
so the optical thicknesses ``density * (edge[i + 1] - edge[i])`` add up over exactly
``far - near``: a constant-density medium reproduces ``1 - exp(-sigma (far - near))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from nerfdiff_ns.nerf.jitter import StepJitter

Generators = Union[torch.Generator, StepJitter, None]


@dataclass
class Samples:
    """Sample positions along rays: ``t [..., S]`` inside bins ``edges [..., S + 1]``."""

    t: torch.Tensor
    edges: torch.Tensor

    @property
    def deltas(self) -> torch.Tensor:
        return self.edges[..., 1:] - self.edges[..., :-1]


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Uniform noise: from a ``torch.Generator`` on its own device (CPU generators stay reproducible on CUDA
    runs), or a pretraining step's ``StepJitter`` (this process's rows of one draw for the global batch, so the
    jitter of a sample is the same whatever the process layout and whether it is rendered alone).
    """
    if isinstance(generator, StepJitter):
        return generator.draw(shape, like.dtype).to(like.device)
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, device=device, dtype=like.dtype, generator=generator).to(like.device)


def stratified_samples(
    near: torch.Tensor, far: torch.Tensor, num_samples: int, jitter: bool, generator: Generators = None
) -> Samples:
    """``num_samples`` equal bins between near and far ``[..., 1]``; one point per bin (jittered in training)."""
    steps = torch.linspace(0.0, 1.0, num_samples + 1, device=near.device, dtype=near.dtype)
    edges = near + (far - near) * steps
    if jitter:
        u = _rand(edges.shape[:-1] + (num_samples,), near, generator)
    else:
        u = torch.full(edges.shape[:-1] + (num_samples,), 0.5, device=near.device, dtype=near.dtype)
    t = edges[..., :-1] + (edges[..., 1:] - edges[..., :-1]) * u
    return Samples(t=t, edges=edges)


def alpha_composite(
    density: torch.Tensor, rgb: torch.Tensor, samples: Samples, background: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Classic emission-absorption compositing.

    Args:
        density: ``[..., S]`` non-negative densities.
        rgb: ``[..., S, 3]`` colours.
        background: ``[3]`` colour behind the medium.
    Returns ``rgb [..., 3]``, ``depth [..., 1]`` (expected depth of the visible surface, clamped to
    the ray's bounds), ``accumulation [..., 1]`` and ``weights [..., S]``.
    """
    optical = density * samples.deltas
    alpha = 1.0 - torch.exp(-optical)
    # transmittance before each sample: exp(-sum of previous optical thickness)
    transmittance = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(optical[..., :1]), optical[..., :-1]], -1), -1))
    weights = alpha * transmittance
    accumulation = weights.sum(-1, keepdim=True)
    color = (weights.unsqueeze(-1) * rgb).sum(-2) + (1.0 - accumulation) * background
    near, far = samples.edges[..., :1], samples.edges[..., -1:]
    depth = (weights * samples.t).sum(-1, keepdim=True) / accumulation.clamp(min=1e-6)
    depth = torch.maximum(torch.minimum(depth, far), near)
    return {"rgb": color, "depth": depth, "accumulation": accumulation, "weights": weights}


def importance_samples(
    coarse: Samples, weights: torch.Tensor, num_samples: int, jitter: bool, generator: Generators = None
) -> torch.Tensor:
    """Draw ``num_samples`` positions ``[..., N]`` from the piecewise-constant PDF of the coarse weights."""
    pdf = weights.detach() + 1e-5
    pdf = pdf / pdf.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], -1).clamp(max=1.0)
    shape = cdf.shape[:-1] + (num_samples,)
    if jitter:
        u = _rand(shape, cdf, generator)
    else:
        u = (torch.arange(num_samples, device=cdf.device, dtype=cdf.dtype) + 0.5) / num_samples
        u = u.expand(shape).contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    edges = coarse.edges.detach()
    e_lo, e_hi = edges.gather(-1, idx - 1), edges.gather(-1, idx)
    frac = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp(min=1e-8)).clamp(0.0, 1.0)
    return e_lo + frac * (e_hi - e_lo)


def merge_samples(coarse: Samples, fine_t: torch.Tensor) -> tuple[Samples, torch.Tensor]:
    """Union of coarse and fine positions, sorted; returns the new samples and the sort order.

    New bin edges sit halfway between neighbouring positions, with near and far kept at the ends,
    so the bins still tile ``[near, far]`` exactly.
    """
    t_all, order = torch.sort(torch.cat([coarse.t, fine_t.detach()], -1), dim=-1)
    mids = 0.5 * (t_all[..., 1:] + t_all[..., :-1])
    edges = torch.cat([coarse.edges[..., :1], mids, coarse.edges[..., -1:]], -1)
    return Samples(t=t_all, edges=edges), order


def ray_sphere_bounds(
    origins: torch.Tensor, directions: torch.Tensor, radius: float, min_near: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Near/far ``[..., 1]`` where rays cross the sphere of ``radius`` around the origin.

    Rays that miss get ``near == far`` (zero-length bins: they render pure background).
    """
    dd = (directions * directions).sum(-1, keepdim=True)
    od = (origins * directions).sum(-1, keepdim=True)
    oo = (origins * origins).sum(-1, keepdim=True)
    disc = od * od - dd * (oo - radius * radius)
    root = torch.sqrt(disc.clamp(min=0.0))
    near = ((-od - root) / dd).clamp(min=min_near)
    far = ((-od + root) / dd).clamp(min=min_near)
    hit = disc > 0
    far = torch.where(hit, far, near)
    return near, far
