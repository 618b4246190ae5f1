"""Periodic validation during pretraining: feed-forward novel-view PSNR on a few val objects.

A quick signal for the training log (source view 0, about four targets per object), not the
benchmark protocol: that is ``nerfdiff-eval``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF, SourceView


@torch.no_grad()
def feed_forward_psnr(
    nerf: ImageConditionedNeRF, dataset: Any, num_objects: int, device: torch.device
) -> tuple[Optional[float], Optional[torch.Tensor]]:
    """(mean PSNR over objects' targets, an [N*H, 3*W, 3] panel of input | render | target), or (None, None)."""
    if dataset is None or len(dataset) == 0:
        return None, None
    was_training = nerf.training
    nerf.eval()
    psnrs, panels = [], []
    try:
        for idx in range(min(num_objects, len(dataset))):
            obj = dataset.load_object(idx)
            imgs, c2w = obj.images.to(device), obj.c2w.to(device)
            h, w = imgs.shape[1:3]
            k = obj.intrinsics.to(device)[None]
            tri = nerf.encode(imgs[:1])
            source = SourceView(c2w[:1], k, (h, w))
            targets = list(range(1, imgs.shape[0], max(1, imgs.shape[0] // 4)))
            for t in targets:
                out = nerf.render_image(tri, source, c2w[t : t + 1], k, h, w)
                mse = F.mse_loss(out["rgb"][0], imgs[t])
                psnrs.append(float(-10 * torch.log10(mse)))
            panels.append(torch.cat([imgs[0], out["rgb"][0].clamp(0, 1), imgs[targets[-1]]], 1))
    finally:
        nerf.train(was_training)
    return float(np.mean(psnrs)), torch.cat(panels, 0).cpu()
