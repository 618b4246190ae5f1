"""Camera-aligned triplane: where a point in the input camera's frame lands on the three planes.

Both parameterisations map a camera-frame point to three normalised coordinates
``(a, b, c)`` in ``[-1, 1]``:

* ``a`` runs left -> right across the input image,
* ``b`` runs top -> bottom across the input image,
* ``c`` runs near -> far along the viewing axis,

and the planes are indexed as ``xy = (a, b)``, ``xz = (a, c)``, ``yz = (b, c)``. Keeping the
image axes in the same orientation as the encoder's output is what makes the triplane
"camera aligned": the xy plane lines up with the input pixels.

``camera``  — axis-aligned box of half-size ``radius`` around the object centre, which sits at
              depth ``distance`` in front of the camera.
``frustum`` — the xy plane is indexed by the projected pixel position (pixel-aligned, like
              pixelNeRF) and the depth axis by inverse depth between ``distance ± radius``.

Coordinates follow ``grid_sample(align_corners=False)``: -1 is the outer edge of the first texel,
so in ``frustum`` mode a triplane of the input image's resolution has texel ``(i, j)`` exactly
under pixel ``(i, j)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Parameterization = Literal["camera", "frustum"]
Aggregation = Literal["sum", "concat"]

PLANE_AXES = ((0, 1), (0, 2), (1, 2))
"""Which of (a, b, c) index the xy, xz and yz planes (grid x first, grid y second)."""


def normalized_coordinates(
    points_cam: torch.Tensor,
    parameterization: Parameterization,
    distance: torch.Tensor,
    radius: float,
    intrinsics: torch.Tensor | None = None,
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Map camera-frame points (OpenGL axes, camera looks along -z) to ``(a, b, c)`` in [-1, 1].

    Args:
        points_cam: ``[B, N, 3]`` points in each input camera's frame.
        distance: ``[B]`` distance from the input camera to the object centre.
        radius: radius of the sphere that bounds the object.
        intrinsics: ``[B, 4]`` ``fx, fy, cx, cy`` of the input camera (``frustum`` only).
        image_size: ``(H, W)`` of the input image the intrinsics refer to (``frustum`` only).
    """
    x, y, z = points_cam.unbind(-1)
    depth = -z
    d = distance.view(-1, 1).to(points_cam)
    if parameterization == "camera":
        a = x / radius
        b = -y / radius
        c = (depth - d) / radius
    elif parameterization == "frustum":
        if intrinsics is None or image_size is None:
            raise ValueError("frustum parameterisation needs the input camera's intrinsics and image size")
        height, width = image_size
        fx, fy, cx, cy = (v.view(-1, 1).to(points_cam) for v in intrinsics.unbind(-1))
        safe_depth = depth.clamp(min=1e-6)
        px = fx * x / safe_depth + cx
        py = cy - fy * y / safe_depth
        a = 2.0 * px / width - 1.0
        b = 2.0 * py / height - 1.0
        inv_near, inv_far = 1.0 / (d - radius).clamp(min=1e-3), 1.0 / (d + radius)
        c = 2.0 * (1.0 / safe_depth - inv_near) / (inv_far - inv_near) - 1.0
    else:
        raise ValueError(f"unknown triplane parameterisation {parameterization!r}: use 'camera' or 'frustum'")
    return torch.stack((a, b, c), dim=-1)


def sample_triplane(
    triplanes: torch.Tensor, coords: torch.Tensor, aggregation: Aggregation = "sum"
) -> torch.Tensor:
    """Bilinearly sample ``[B, 3, C, S, S]`` triplanes at ``[B, N, 3]`` normalised coordinates.

    Returns ``[B, N, C]`` (sum) or ``[B, N, 3C]`` (concat). Points outside [-1, 1] read zeros.
    One triplane ``[1, ...]`` serves every row of ``coords`` (several views of one object): the rows
    are sampled as one point set. Any other batch mismatch is an error; folding the grids of B rows
    onto fewer planes would silently pair points with the wrong plane.
    """
    batch, num_planes, channels, size_h, size_w = triplanes.shape
    if num_planes != 3:
        raise ValueError(f"expected 3 planes, got {num_planes}")
    if coords.shape[0] != batch:
        if batch != 1:
            raise ValueError(f"{batch} triplanes for {coords.shape[0]} rows of points: pass one triplane per row, or one for all")
        rows, num = coords.shape[:2]
        return sample_triplane(triplanes, coords.reshape(1, rows * num, 3), aggregation).view(rows, num, -1)
    # each (i, j) pair of PLANE_AXES (i < j) as the strided slice i:j+1:j-i, a view: no index copies
    grids = torch.stack([coords[..., i : j + 1 : j - i] for i, j in PLANE_AXES], dim=1)  # [B, 3, N, 2]
    planes = triplanes.reshape(batch * 3, channels, size_h, size_w)
    grids = grids.reshape(batch * 3, 1, -1, 2)
    feats = F.grid_sample(planes, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
    feats = feats.view(batch, 3, channels, -1)  # [B, 3, C, N]
    # reduce over the planes in this layout, then transpose: summing a permuted view (and the MLP copying
    # its result) made sampling + decoding ~20 % slower on the CPU
    if aggregation == "sum":
        return feats.sum(dim=1).transpose(1, 2)
    if aggregation == "concat":
        return feats.flatten(1, 2).transpose(1, 2)
    raise ValueError(f"unknown triplane aggregation {aggregation!r}: use 'sum' or 'concat'")


def feature_dim(channels: int, aggregation: Aggregation) -> int:
    """Width of the per-point feature that ``sample_triplane`` returns."""
    return channels * (3 if aggregation == "concat" else 1)
