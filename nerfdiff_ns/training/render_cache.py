"""Render cache of the CDM-only stage (``--freeze-nerf``): the frozen NeRF's conditions, rendered once.

With the NeRF frozen, its render of a (source view, target view) pair never changes, yet a live
step re-renders it (about 60 % of a CDM-only step on the CPU). So before training, a fixed set of
(object, source view, target view) triples is rendered once, without jitter (as NGD renders its
conditions at test time), and each step draws its samples from these triples and runs the UNet
alone. Which triples: per object, ``render_cache_pairs`` pairs whose targets run through random
orders of the object's views (each view once per round), each with a uniformly drawn other view
as the source; deterministic from the seed.

Each step's samples come from their own generator (``sample_generator(seed, step, index)``), so
the global batch stays the same for any number of processes and after a resume. Under DDP every
rank renders an equal share of the triples and the shares are all-gathered. The cache is written
to ``<output_dir>/render_cache.safetensors`` with a key (NeRF weights, data, settings) and reused
while the key matches, so resuming a long CDM stage does not render again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.training.augment import augment_sample
from nerfdiff_ns.training.batches import draw_diffusion_inputs, rank_samples, stack_samples
from nerfdiff_ns.training.config import PretrainConfig
from nerfdiff_ns.training.distributed import DistInfo, sample_generator
from nerfdiff_ns.training.progress import make_progress

CACHE_FILE = "render_cache.safetensors"
CACHE_FORMAT = "nerfdiff-render-cache-1"
_CACHE_STREAM = 0x5EED_CAC4E  # separates the triples' random stream from the steps' (seed, step, index) streams


@dataclass
class RenderCache:
    """Triples ``object_index, source_view, target_view [N]`` (long) and their renders ``[N, res, res, 3 + E]``
    (RGB, then the CDM's extra conditions)."""

    object_index: torch.Tensor
    source_view: torch.Tensor
    target_view: torch.Tensor
    renders: torch.Tensor
    key: str

    def __len__(self) -> int:
        return int(self.object_index.shape[0])

    @property
    def megabytes(self) -> float:
        return self.renders.numel() * self.renders.element_size() / 2**20


def cache_triples(dataset: Any, pairs_per_object: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(object, source view, target view) of every cached sample, ``pairs_per_object`` per object."""
    if pairs_per_object < 1:
        raise FlagError(f"--render-cache-pairs must be >= 1, got {pairs_per_object}")
    objects, sources, targets = [], [], []
    for obj_idx in range(len(dataset)):
        views = dataset.load_object(obj_idx).num_views
        state = np.random.SeedSequence([seed, _CACHE_STREAM, obj_idx]).generate_state(2, dtype=np.uint64)
        gen = torch.Generator().manual_seed(int(state[0] % (2**63)))
        rounds = math.ceil(pairs_per_object / views)
        tgt = torch.cat([torch.randperm(views, generator=gen) for _ in range(rounds)])[:pairs_per_object]
        if views > 1:
            src = torch.randint(views - 1, (pairs_per_object,), generator=gen)
            src = src + (src >= tgt).long()  # any view but the target
        else:
            src = tgt.clone()  # a one-view object: the source is its own target (as draw_sample does)
        objects.append(torch.full((pairs_per_object,), obj_idx, dtype=torch.long))
        sources.append(src)
        targets.append(tgt)
    return torch.cat(objects), torch.cat(sources), torch.cat(targets)


def triple_inputs(dataset: Any, objects: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """Source image, cameras and target image of the given triples, stacked on ``device``."""
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("source_image", "source_c2w", "target_image", "target_c2w",
                                                           "intrinsics")}
    for o, s, t in zip(objects.tolist(), sources.tolist(), targets.tolist()):
        obj = dataset.load_object(o)
        rows["source_image"].append(obj.images[s])
        rows["source_c2w"].append(obj.c2w[s])
        rows["target_image"].append(obj.images[t])
        rows["target_c2w"].append(obj.c2w[t])
        rows["intrinsics"].append(obj.intrinsics)
    return {k: torch.stack(v).to(device) for k, v in rows.items()}


def cache_key(nerf: torch.nn.Module, dataset: Any, cfg: PretrainConfig) -> str:
    """SHA-256 of everything the cached renders depend on: NeRF weights and config, data, settings."""
    digest = hashlib.sha256()
    settings = {"format": CACHE_FORMAT, "nerf": json.loads(json.dumps(cfg.nerf.to_dict(), default=str)),
                "render_resolution": cfg.render_resolution, "pairs": cfg.render_cache_pairs, "seed": cfg.seed,
                "objects": [str(f) for f in getattr(dataset, "folders", [])]}
    if cfg.cdm.conditions:  # only when set, so caches of RGB-only runs keep their keys
        settings["conditions"] = list(cfg.cdm.conditions)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, value in sorted(nerf.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load(path: Path, key: str) -> RenderCache | None:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            return None
        t = load_file(str(path))
        return RenderCache(t["object_index"], t["source_view"], t["target_view"], t["renders"], key)
    except (SafetensorError, OSError, KeyError, ValueError):
        return None  # corrupt or foreign: render again (and overwrite it)


def _save(path: Path, cache: RenderCache) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tensors = {"object_index": cache.object_index, "source_view": cache.source_view, "target_view": cache.target_view,
               "renders": cache.renders.contiguous()}
    save_file(tensors, str(tmp), metadata={"format": CACHE_FORMAT, "key": cache.key})
    os.replace(tmp, path)


def _all_gather_rows(local: torch.Tensor, total: int, dist_info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's equal-size shard (padded) in rank order and trim to ``total`` rows."""
    if dist_info.world_size == 1:
        return local
    import torch.distributed as dist

    shards = [torch.empty_like(local) for _ in range(dist_info.world_size)]
    dist.all_gather(shards, local.contiguous())
    return torch.cat(shards)[:total]


@torch.no_grad()
def render_triples(model: Any, dataset: Any, objects: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor,
                   chunk: int, device: torch.device, progress: Any = None, task: Any = None) -> torch.Tensor:
    """Renders ``[N, res, res, 3]`` (CPU, float32) of the triples by the joint model's batched, jitter-free render."""
    out = []
    for start in range(0, len(objects), chunk):
        sl = slice(start, start + chunk)
        inputs = triple_inputs(dataset, objects[sl], sources[sl], targets[sl], device)
        render, _ = model.render_targets(inputs["source_image"], inputs["source_c2w"], inputs["target_c2w"],
                                         inputs["intrinsics"], jitter=False)
        out.append(render.float().cpu())
        if progress is not None:
            progress.update(task, advance=len(objects[sl]))
    res = model.cfg.render_resolution
    return torch.cat(out) if out else torch.zeros(0, res, res, model.cfg.condition_channels())


def build_render_cache(model: Any, dataset: Any, cfg: PretrainConfig, dist_info: DistInfo, device: torch.device,
                       path: Path | None = None, show_progress: bool = True) -> RenderCache:
    """Load the cache at ``path`` when its key matches, else render it (sharded over ranks) and save it (rank 0)."""
    key = cache_key(model.nerf, dataset, cfg)
    path = Path(cfg.output_dir) / CACHE_FILE if path is None else path
    cached = _load(path, key)
    if cached is not None:
        if dist_info.is_main:
            print(f"[nerfdiff] render cache: {len(cached)} triples ({cached.megabytes:.0f} MiB) loaded from {path}")
        return cached
    objects, sources, targets = cache_triples(dataset, cfg.render_cache_pairs, cfg.seed)
    total = len(objects)
    share = math.ceil(total / dist_info.world_size)
    mine = slice(dist_info.rank * share, min(total, (dist_info.rank + 1) * share))
    start = time.perf_counter()
    progress = make_progress("render cache", disable=not (show_progress and dist_info.is_main), info=False)
    with progress:
        task = progress.add_task("render", total=len(objects[mine]))
        local = render_triples(model, dataset, objects[mine], sources[mine], targets[mine], max(1, cfg.batch_size),
                               device, progress, task)
    res = cfg.render_resolution
    padded = torch.zeros(share, res, res, cfg.condition_channels())
    padded[: local.shape[0]] = local
    renders = _all_gather_rows(padded.to(device), total, dist_info).cpu()
    cache = RenderCache(objects, sources, targets, renders, key)
    if dist_info.is_main:
        _save(path, cache)
        print(f"[nerfdiff] render cache: {total} triples ({cache.megabytes:.0f} MiB) rendered in "
              f"{time.perf_counter() - start:.1f} s -> {path}")
    return cache


def make_cached_batch(dataset: Any, cache: RenderCache, cfg: PretrainConfig, step: int, dist_info: DistInfo,
                      device: torch.device) -> dict[str, Any]:
    """This rank's share of a CDM-only batch: each sample one cached triple (drawn from its own generator),
    its images and cameras, its cached render, and the CDM's timestep, noise and condition drop."""
    sampler = cfg.cdm.timestep_sampler()
    samples = []
    for j in rank_samples(cfg, dist_info):
        gen = sample_generator(cfg.seed, step, j)
        i = int(torch.randint(len(cache), (1,), generator=gen))
        obj = dataset.load_object(int(cache.object_index[i]))
        s, t = int(cache.source_view[i]), int(cache.target_view[i])
        sample = {"source_image": obj.images[s], "source_c2w": obj.c2w[s], "target_image": obj.images[t],
                  "target_c2w": obj.c2w[t], "intrinsics": obj.intrinsics, "render": cache.renders[i]}
        draw_diffusion_inputs(sample, cfg, gen, sampler)
        augment_sample(sample, cfg.augment, gen)  # drawn last: runs without it keep their streams
        samples.append(sample)
    return stack_samples(samples, cfg, device)


__all__ = ["CACHE_FILE", "RenderCache", "build_render_cache", "cache_key", "cache_triples", "make_cached_batch",
           "render_triples", "triple_inputs"]
