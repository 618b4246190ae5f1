"""Pinhole rays in nerfstudio's convention (OpenGL camera axes, pixel centres at +0.5)."""

from __future__ import annotations

import torch


def pixel_directions(intrinsics: torch.Tensor, pixels_xy: torch.Tensor) -> torch.Tensor:
    """Camera-frame directions ``[B, R, 3]`` (z = -1) through pixel coordinates ``[B, R, 2]`` (x, y)."""
    fx, fy, cx, cy = (v.view(-1, 1) for v in intrinsics.unbind(-1))
    x = (pixels_xy[..., 0] + 0.5 - cx) / fx
    y = -(pixels_xy[..., 1] + 0.5 - cy) / fy
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


def camera_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, pixels_xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space origins and unit directions ``[B, R, 3]`` for integer pixel coordinates ``[B, R, 2]``."""
    dirs_cam = pixel_directions(intrinsics, pixels_xy.to(c2w.dtype))
    dirs = torch.einsum("bij,brj->bri", c2w[:, :3, :3], dirs_cam)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def image_pixels(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """All pixel coordinates ``[H * W, 2]`` (x, y) in row-major order."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def world_to_camera(c2w: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points ``[B, N, 3]`` in world coordinates -> each camera's frame (rigid ``c2w [B, 4, 4]``)."""
    rot, trans = c2w[:, :3, :3], c2w[:, :3, 3]
    return torch.einsum("bji,bnj->bni", rot, points - trans[:, None])


def directions_to_camera(c2w: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Directions ``[B, N, 3]`` in world coordinates -> each camera's frame."""
    return torch.einsum("bji,bnj->bni", c2w[:, :3, :3], directions)
