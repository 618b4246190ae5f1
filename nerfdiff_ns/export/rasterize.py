"""Render 3D Gaussians: gsplat's ``rasterization`` on CUDA, a torch path on the CPU.

Cameras come in the project's convention (nerfstudio world, OpenGL camera axes: x right, y up,
looking along -z; intrinsics ``fx, fy, cx, cy`` with pixel centres at +0.5). gsplat wants OpenCV
view matrices (world-to-camera, y down, z forward), so :func:`viewmats_from_c2w` flips the camera's
y and z axes and inverts. gsplat's pixel centres are also at +0.5, so intrinsics carry over.

The CPU path uses gsplat's own pure-torch projection (``gsplat.cuda._torch_impl``: covariance
from quaternion and scale, EWA projection with the same 0.3 px low-pass, near plane and radius
culling) and composites densely in torch with gsplat's rules (alpha = min(0.99, o e^-q), skip
alpha < 1/255, stop once transmittance would fall to 1e-4). gsplat's reference compositor
(``_rasterize_to_pixels``) calls its CUDA kernels and cannot run without them.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch

Backend = Literal["auto", "gsplat", "torch"]
_announced: set[str] = set()


def viewmats_from_c2w(c2w: torch.Tensor) -> torch.Tensor:
    """nerfstudio ``c2w [C, 4, 4]`` (or ``[C, 3, 4]``, OpenGL axes) -> gsplat OpenCV world-to-camera ``[C, 4, 4]``."""
    c2w = c2w.float()
    if c2w.shape[-2] == 3:
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], device=c2w.device).expand(c2w.shape[0], 1, 4)
        c2w = torch.cat([c2w, bottom], dim=-2)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], device=c2w.device))
    return torch.linalg.inv(c2w @ flip)


def intrinsics_matrix(intrinsics: torch.Tensor, num: int) -> torch.Tensor:
    """``fx, fy, cx, cy`` (``[4]`` or ``[C, 4]``) -> ``K [C, 3, 3]``."""
    intr = intrinsics.float().reshape(-1, 4).expand(num, 4)
    K = torch.zeros(num, 3, 3, device=intr.device)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = intr[:, 0], intr[:, 1], intr[:, 2], intr[:, 3], 1.0
    return K


def gsplat_available(device: torch.device) -> tuple[bool, str]:
    """Whether gsplat's CUDA rasteriser can run here, and why not."""
    if device.type != "cuda":
        return False, "tensors are on the CPU and gsplat's rasterization needs CUDA"
    try:
        from gsplat.cuda._backend import _C

        if _C is None:
            return False, "gsplat's CUDA extension is not built"
    except Exception as err:  # noqa: BLE001 - JIT build failures come as many types
        return False, f"gsplat's CUDA extension failed to load ({type(err).__name__})"
    return True, "CUDA device and gsplat's CUDA extension present"


def resolve_backend(backend: Backend, device: torch.device, announce: bool = True) -> str:
    """Pick the rasteriser; print one line saying which and why (once per process and choice)."""
    ok, why = gsplat_available(device)
    if backend == "gsplat" and not ok:
        raise RuntimeError(f"--rasterizer gsplat asked for, but {why}; use --rasterizer torch or auto")
    chosen = "gsplat" if backend == "gsplat" or (backend == "auto" and ok) else "torch"
    if announce and chosen not in _announced:
        _announced.add(chosen)
        if chosen == "gsplat":
            print(f"[nerfdiff] Gaussian rasteriser: gsplat rasterization on {device} ({why}).")
        else:
            reason = why if backend == "auto" else "asked for with --rasterizer torch"
            print(f"[nerfdiff] Gaussian rasteriser: CPU fallback (gsplat's torch projection + torch compositing), since {reason}.")
    return chosen


def rasterize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    c2w: torch.Tensor,
    intrinsics: torch.Tensor,
    width: int,
    height: int,
    background: Optional[torch.Tensor] = None,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``N`` Gaussians (world means, wxyz quats, scales, opacities in [0, 1], rgb) into ``C`` views.

    Returns ``rgb [C, H, W, 3]`` and ``alpha [C, H, W, 1]``; differentiable on both paths.
    """
    viewmats = viewmats_from_c2w(c2w.to(means.device))
    Ks = intrinsics_matrix(intrinsics.to(means.device), viewmats.shape[0])
    bg = None if background is None else background.to(means.device).float().reshape(1, 3).expand(viewmats.shape[0], 3)
    if resolve_backend(backend, means.device) == "gsplat":
        from gsplat import rasterization

        rgb, alpha, _ = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                      backgrounds=bg, rasterize_mode="classic")
        return rgb, alpha
    return rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, bg)


def rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int,
                    backgrounds: Optional[torch.Tensor] = None, tile_size: int = 4, tiles_per_chunk: int = 16):
    """The CPU path (see the module docstring); same inputs as ``gsplat.rasterization`` minus options.

    Like gsplat, each Gaussian only reaches the tiles its 3-sigma radius overlaps; per tile the
    overlapping Gaussians (depth-sorted, padded per chunk of similar tiles) are composited densely.
    """
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False, triu=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmats, Ks, width, height)
    out_rgb, out_alpha = [], []
    for cam in range(viewmats.shape[0]):
        keep = (radii[cam] > 0).nonzero().squeeze(-1)
        order = keep[torch.argsort(depths[cam, keep])]
        rgb, alpha = _composite_tiles(means2d[cam, order], conics[cam, order], opacities[order], colors[order],
                                      radii[cam, order], width, height, tile_size, tiles_per_chunk)
        if backgrounds is not None:
            rgb = rgb + (1.0 - alpha) * backgrounds[cam]
        out_rgb.append(rgb)
        out_alpha.append(alpha)
    return torch.stack(out_rgb), torch.stack(out_alpha)


def _tile_lists(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int, tile: int) -> torch.Tensor:
    """``[T, K]`` depth-ordered Gaussian indices per tile (``-1`` pads), from each Gaussian's radius box."""
    tw, th = (width + tile - 1) // tile, (height + tile - 1) // tile
    r = radii.float()
    x0 = ((means2d[:, 0] - r) / tile).floor().clamp(0, tw - 1).long()
    x1 = ((means2d[:, 0] + r) / tile).floor().clamp(0, tw - 1).long()
    y0 = ((means2d[:, 1] - r) / tile).floor().clamp(0, th - 1).long()
    y1 = ((means2d[:, 1] + r) / tile).floor().clamp(0, th - 1).long()
    span = int(max(int((x1 - x0).max()) if len(r) else 0, int((y1 - y0).max()) if len(r) else 0)) + 1
    off = torch.arange(span, device=means2d.device)
    tx = x0[:, None, None] + off[None, None, :]  # [M, 1, S]
    ty = y0[:, None, None] + off[None, :, None]  # [M, S, 1]
    ok = (tx <= x1[:, None, None]) & (ty <= y1[:, None, None])
    gid = torch.arange(len(r), device=means2d.device)[:, None, None].expand_as(ok)
    tile_id = (ty * tw + tx).expand_as(ok)
    gid, tile_id = gid[ok], tile_id[ok]
    tile_id, perm = torch.sort(tile_id, stable=True)  # stable: keeps depth order inside each tile
    gid = gid[perm]
    counts = torch.bincount(tile_id, minlength=tw * th)
    k = max(int(counts.max()) if counts.numel() else 0, 1)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(gid), device=means2d.device) - starts[tile_id]
    lists = torch.full((tw * th, k), -1, dtype=torch.long, device=means2d.device)
    lists[tile_id, slot] = gid
    return lists


def _composite_tiles(m2d, con, opa, col, radii, width: int, height: int, tile: int, tiles_per_chunk: int):
    """Front-to-back compositing with gsplat's alpha rules, tile by tile; ``rgb [H, W, C]``, ``alpha [H, W, 1]``.

    Tiles are processed busiest-last in chunks, each padded only to its own busiest tile, so the
    few crowded tiles in the middle of the object do not make every tile pay for their length.
    """
    dev = m2d.device
    tw, th = (width + tile - 1) // tile, (height + tile - 1) // tile
    lists = _tile_lists(m2d, radii, width, height, tile)
    counts = (lists >= 0).sum(-1)
    order = torch.argsort(counts)
    iy, ix = torch.meshgrid(torch.arange(tile, device=dev), torch.arange(tile, device=dev), indexing="ij")
    ty, tx = torch.meshgrid(torch.arange(th, device=dev), torch.arange(tw, device=dev), indexing="ij")
    px = (tx.reshape(-1, 1) * tile + ix.reshape(1, -1)).float() + 0.5  # [T, P] pixel centres
    py = (ty.reshape(-1, 1) * tile + iy.reshape(1, -1)).float() + 0.5
    rgb_tiles = torch.zeros(tw * th, tile * tile, col.shape[-1], device=dev, dtype=col.dtype)
    alpha_tiles = torch.zeros(tw * th, tile * tile, 1, device=dev, dtype=col.dtype)
    rgb_parts, alpha_parts, done = [], [], []
    for s in range(0, order.numel(), tiles_per_chunk):
        sel = order[s : s + tiles_per_chunk]
        k = int(counts[sel].max())
        if k == 0:
            continue
        idx = lists[sel, :k]
        valid = idx >= 0
        g = idx.clamp(min=0)
        dx = px[sel, :, None] - m2d[g, 0][:, None, :]  # [T, P, K]
        dy = py[sel, :, None] - m2d[g, 1][:, None, :]
        c = con[g]
        q = 0.5 * (c[..., 0][:, None] * dx * dx + c[..., 2][:, None] * dy * dy) + c[..., 1][:, None] * dx * dy
        a = torch.clamp_max(opa[g][:, None] * torch.exp(-q), 0.99)
        a = torch.where((q >= 0) & (a >= 1.0 / 255.0) & valid[:, None], a, torch.zeros_like(a))
        trans_after = torch.cumprod(1.0 - a, dim=-1)
        trans_before = torch.cat([torch.ones_like(a[..., :1]), trans_after[..., :-1]], dim=-1)
        w = a * trans_before * (trans_after > 1e-4)
        rgb_parts.append(torch.einsum("tpk,tkc->tpc", w, col[g]))
        alpha_parts.append(w.sum(-1, keepdim=True))
        done.append(sel)
    if done:  # index_put (out of place) keeps autograd happy
        sel = torch.cat(done)
        rgb_tiles = rgb_tiles.index_put((sel,), torch.cat(rgb_parts))
        alpha_tiles = alpha_tiles.index_put((sel,), torch.cat(alpha_parts))
    rgb = rgb_tiles.view(th, tw, tile, tile, -1).permute(0, 2, 1, 3, 4).reshape(th * tile, tw * tile, -1)
    alpha = alpha_tiles.view(th, tw, tile, tile, 1).permute(0, 2, 1, 3, 4).reshape(th * tile, tw * tile, 1)
    return rgb[:height, :width], alpha[:height, :width]


__all__ = ["intrinsics_matrix", "rasterize", "rasterize_torch", "resolve_backend", "viewmats_from_c2w"]
