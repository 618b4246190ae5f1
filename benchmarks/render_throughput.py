"""Rendering throughput of our image-conditioned NeRF against nerfstudio's nerfacto, and encoding cost.

What is measured
----------------
1. Rays per second of ``ImageConditionedNeRF.render_rays`` (eval mode, ``torch.no_grad``) and of
   nerfstudio's ``NerfactoModel.forward`` (collider + proposal sampling + field + compositing, eval
   mode, no grad), on the same machine, the same batch of rays and the same number of field
   samples per ray:

   * ours:     ``num_coarse`` stratified + ``num_fine`` importance samples (default 64 + 32 = 96,
     the srn-128 preset's counts), with the NeRF architecture of ``--preset`` (default srn-128);
   * nerfacto: ``sum(nerfacto_proposal_samples)`` proposal samples + ``nerfacto_nerf_samples``
     samples of the main field (default 32 + 16 + 48 = 96; nerfacto's own default is 256 + 96 + 48),
     its default hash-grid fields with ``implementation="torch"`` (no tiny-cuda-nn on CPU).

   The rays are ``num_rays`` random pixels (fixed seed) of a 128 x 128, 45-degree view from 2.7
   units away, looking at the origin (the camera set-up of our synthetic data). Each model gets
   ``warmup`` untimed calls, then ``repeats`` timed calls on the whole batch; we report the median.
   Neither model is trained: with fixed sample counts the cost does not depend on the weights.

2. Encoding one input image (``ImageConditionedNeRF.encode``, ``[1, S, S, 3]`` at the encoder's
   resolution S) with the tiny and srn-128 NeRF configurations: median time, and peak memory
   measured in a fresh subprocess per configuration. On the CPU peak memory is the process's RSS
   high-water mark (VmHWM, reset through /proc/self/clear_refs once the model and the input exist)
   minus its RSS at that moment, i.e. the extra memory encoding needs; the table also gives the
   process's whole-life RSS peak (imports of torch & co. included). On CUDA it is
   ``torch.cuda.max_memory_allocated()`` minus the memory allocated before encoding.

Run ``python benchmarks/render_throughput.py --help`` for the options.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import tyro

import _common as common


@dataclass
class RenderBenchConfig:
    """Rays/s of our NeRF vs nerfacto (same rays, same samples per ray) and encoder time/peak memory."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device to benchmark on (auto = CUDA when available)."""
    preset: str = "srn-128"
    """Pretraining preset whose NeRF architecture (triplane, MLP) is rendered: tiny or srn-128."""
    num_rays: int = 8192
    """Rays per render call (one batch, no chunking)."""
    warmup: int = 2
    """Untimed calls before timing."""
    repeats: int = 5
    """Timed calls; the median is reported."""
    num_coarse: int = 64
    """Our stratified samples per ray."""
    num_fine: int = 32
    """Our importance samples per ray."""
    nerfacto_proposal_samples: tuple[int, ...] = (32, 16)
    """nerfacto proposal samples per ray, one entry per proposal network."""
    nerfacto_nerf_samples: int = 48
    """nerfacto samples per ray of its main field."""
    nerfacto_implementation: Literal["torch", "tcnn"] = "torch"
    """nerfacto field implementation (tcnn needs tiny-cuda-nn and CUDA)."""
    mlp_implementation: Literal["auto", "torch", "tcnn"] = "torch"
    """Our decoder MLP implementation (auto = tiny-cuda-nn on CUDA when installed)."""
    encode_presets: tuple[str, ...] = ("tiny", "srn-128")
    """NeRF configurations whose encoding of one image is timed (empty: skip)."""
    encode_warmup: int = 2
    """Untimed encodings before timing."""
    encode_repeats: int = 10
    """Timed encodings; the median is reported."""
    skip_render: bool = False
    """Only run the encoding benchmark."""
    threads: Optional[int] = None
    """torch.set_num_threads for every measurement (default: torch's choice)."""
    output_json: Optional[Path] = None
    """Write all figures and the machine facts to this JSON file."""


# ---------------------------------------------------------------------------------------------
# shared set-up


def nerf_config(preset: str, mlp_implementation: str = "torch"):
    """The NeRFConfig of a pretraining preset (configs/pretrain/<preset>.json)."""
    from nerfdiff_ns.pretrain import PretrainConfig
    from nerfdiff_ns.training.presets import load_preset

    cfg = load_preset("pretrain", preset, PretrainConfig(preset=preset)).nerf
    cfg.mlp_implementation = mlp_implementation  # type: ignore[assignment]
    return cfg


def look_at_c2w(azimuth_deg: float, elevation_deg: float, distance: float) -> torch.Tensor:
    """``[4, 4]`` camera-to-world, OpenGL axes (looks along -z), +Z up, looking at the origin."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    pos = torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]) * distance
    forward = -pos / pos.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, pos
    return c2w


def intrinsics_for(size: int, fov_deg: float = 45.0) -> torch.Tensor:
    focal = size / 2 / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([focal, focal, size / 2, size / 2])


def make_rays(num_rays: int, device: str, size: int = 128) -> tuple[torch.Tensor, torch.Tensor, float]:
    """World origins and unit directions ``[1, R, 3]`` of random pixels of one view; pixel area."""
    from nerfdiff_ns.nerf.rays import camera_rays

    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(size * size, (num_rays,), generator=gen)
    pixels = torch.stack([idx % size, idx // size], -1)[None]
    k = intrinsics_for(size)
    origins, dirs = camera_rays(look_at_c2w(30.0, 20.0, 2.7)[None], k[None], pixels)
    return origins.to(device), dirs.to(device), float(1.0 / (k[0] * k[1]))


# ---------------------------------------------------------------------------------------------
# ours vs nerfacto


def build_ours(cfg: RenderBenchConfig, device: str):
    from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF, SourceView

    ncfg = nerf_config(cfg.preset, cfg.mlp_implementation)
    ncfg.num_coarse_samples, ncfg.num_fine_samples = cfg.num_coarse, cfg.num_fine
    nerf = ImageConditionedNeRF(ncfg, device=device).eval()
    size = ncfg.image_size
    with torch.no_grad():
        image = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1)).to(device)
        triplanes = nerf.encode(image)
    source = SourceView(look_at_c2w(0.0, 20.0, 2.7)[None].to(device), intrinsics_for(size)[None].to(device), (size, size))
    return nerf, triplanes, source


def build_nerfacto(cfg: RenderBenchConfig, device: str, near: float, far: float):
    """nerfacto with our sample counts; its LPIPS metric is replaced by a dummy (see below)."""
    import torchmetrics.image.lpip as lpip_module
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    class _NoLPIPS(torch.nn.Module):
        """Benchmark-only stand-in: NerfactoModel.populate_modules builds torchmetrics' LPIPS, whose
        AlexNet weights would be downloaded. Rendering never uses it, so we patch the class in the
        ``torchmetrics.image.lpip`` namespace (nerfacto imports it from there inside
        populate_modules) for the duration of the constructor only."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__()

    model_cfg = NerfactoModelConfig(
        implementation=cfg.nerfacto_implementation,
        num_proposal_samples_per_ray=tuple(cfg.nerfacto_proposal_samples),
        num_nerf_samples_per_ray=cfg.nerfacto_nerf_samples,
        num_proposal_iterations=len(cfg.nerfacto_proposal_samples),
        near_plane=near,
        far_plane=far,
        background_color="white",
    )
    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = _NoLPIPS  # type: ignore[misc]
    try:
        aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        model = model_cfg.setup(scene_box=SceneBox(aabb=aabb), num_train_data=1, metadata={})
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original  # type: ignore[misc]
    return model.to(device).eval()


def bench_render(cfg: RenderBenchConfig, device: str) -> dict:
    from nerfstudio.cameras.rays import RayBundle

    ours_total = cfg.num_coarse + cfg.num_fine
    nerfacto_total = sum(cfg.nerfacto_proposal_samples) + cfg.nerfacto_nerf_samples
    if ours_total != nerfacto_total:
        raise SystemExit(
            f"samples per ray differ: ours {cfg.num_coarse}+{cfg.num_fine}={ours_total}, nerfacto "
            f"{'+'.join(map(str, cfg.nerfacto_proposal_samples))}+{cfg.nerfacto_nerf_samples}={nerfacto_total}; make them equal."
        )
    origins, dirs, pixel_area = make_rays(cfg.num_rays, device)
    nerf, triplanes, source = build_ours(cfg, device)
    radius = nerf.config.object_radius
    nerfacto = build_nerfacto(cfg, device, near=2.7 - radius, far=2.7 + radius)
    bundle = RayBundle(
        origins=origins[0].contiguous(), directions=dirs[0].contiguous(),
        pixel_area=torch.full((cfg.num_rays, 1), pixel_area, device=device),
        camera_indices=torch.zeros((cfg.num_rays, 1), dtype=torch.long, device=device),
    )

    @torch.no_grad()
    def ours() -> None:
        nerf.render_rays(triplanes, source, origins, dirs)

    @torch.no_grad()
    def theirs() -> None:
        nerfacto(bundle)

    t_ours = common.median(common.timed_repeats(ours, cfg.warmup, cfg.repeats, device))
    t_theirs = common.median(common.timed_repeats(theirs, cfg.warmup, cfg.repeats, device))
    rows = {
        "ours": {"samples_per_ray": f"{cfg.num_coarse} coarse + {cfg.num_fine} fine = {ours_total}",
                 "median_s": t_ours, "rays_per_s": cfg.num_rays / t_ours,
                 "parameters": sum(p.numel() for p in nerf.field.parameters()) + triplanes.numel()},
        "nerfacto": {"samples_per_ray": f"proposal {'+'.join(map(str, cfg.nerfacto_proposal_samples))} + nerf "
                                        f"{cfg.nerfacto_nerf_samples} = {nerfacto_total}",
                     "median_s": t_theirs, "rays_per_s": cfg.num_rays / t_theirs,
                     "parameters": sum(p.numel() for p in nerfacto.parameters())},
    }
    return {"num_rays": cfg.num_rays, "samples_per_ray": ours_total, "preset": cfg.preset, "models": rows,
            "ours_over_nerfacto": rows["ours"]["rays_per_s"] / rows["nerfacto"]["rays_per_s"]}


# ---------------------------------------------------------------------------------------------
# encoding (runs in a fresh subprocess per preset through common.run_worker)


def encode_worker(preset: str, device: str, warmup: int, repeats: int, threads: Optional[int] = None) -> dict:
    """Median time and peak memory of encoding one image with a preset's NeRF; run in its own process."""
    import gc

    from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF

    if threads:
        torch.set_num_threads(threads)
    ncfg = nerf_config(preset)
    nerf = ImageConditionedNeRF(ncfg, device=device).eval()
    size = ncfg.image_size
    image = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1)).to(device)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        setup_peak = common.peak_rss_mib()
        base_rss = common.current_rss_mib()
        exact = common.reset_peak_rss()

    @torch.no_grad()
    def encode() -> None:
        nerf.encode(image)

    times = common.timed_repeats(encode, warmup, repeats, device)
    process_peak = common.peak_rss_mib()  # CPU RSS of the process (host side)
    if device.startswith("cuda"):
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
        how = "torch.cuda.max_memory_allocated - allocated before"
    else:
        process_peak = max(setup_peak, common.peak_rss_mib())
        peak_mib = common.peak_rss_mib() - base_rss
        how = "RSS high-water (VmHWM) over RSS once model+input exist" + ("" if exact else " (HWM not resettable: includes set-up)")
    return {
        "preset": preset, "image_size": size,
        "triplane": f"3 x {ncfg.triplane_channels} x {ncfg.triplane_resolution}^2",
        "encoder_parameters": sum(p.numel() for p in nerf.encoder.parameters()),
        "median_ms": 1000 * common.median(times), "peak_memory_mib": peak_mib, "peak_memory_method": how,
        "process_peak_rss_mib": process_peak,  # whole process incl. imports (VmHWM before + after the reset)
    }


def main(cfg: RenderBenchConfig) -> dict:
    device = common.resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    facts = common.machine_facts(device)
    common.print_facts(facts)
    result: dict = {"benchmark": "render_throughput", "machine": facts, "config": cfg.__dict__}
    if not cfg.skip_render:
        render = bench_render(cfg, device)
        result["render"] = render
        common.print_table(
            f"render_rays throughput: {cfg.num_rays} rays, {render['samples_per_ray']} samples/ray, no grad, eval "
            f"(ours: {cfg.preset} NeRF; median of {cfg.repeats} after {cfg.warmup} warm-up)",
            ["model", "samples per ray", "median s", "rays/s", "parameters (ours: MLP + triplane)"],
            [[name, r["samples_per_ray"], r["median_s"], r["rays_per_s"], r["parameters"]] for name, r in render["models"].items()],
        )
        print(f"ours / nerfacto rays/s ratio: {render['ours_over_nerfacto']:.3f}\n")
    encodes = [
        common.run_worker("render_throughput", "encode_worker",
                          {"preset": p, "device": device, "warmup": cfg.encode_warmup, "repeats": cfg.encode_repeats,
                           "threads": cfg.threads})
        for p in cfg.encode_presets
    ]
    if encodes:
        result["encode"] = encodes
        common.print_table(
            f"encode one image (fresh process per preset; median of {cfg.encode_repeats}; peak memory: {encodes[0]['peak_memory_method']})",
            ["preset", "input", "triplane", "encoder params", "median ms", "peak MiB", "process peak RSS MiB"],
            [[e["preset"], f"{e['image_size']}^2", e["triplane"], e["encoder_parameters"], e["median_ms"], e["peak_memory_mib"],
              e["process_peak_rss_mib"]] for e in encodes],
        )
    common.write_json(cfg.output_json, result)
    return result


if __name__ == "__main__":
    main(tyro.cli(RenderBenchConfig, description=__doc__))
    sys.exit(0)
