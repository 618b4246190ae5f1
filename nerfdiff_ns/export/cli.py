"""``nerfdiff-export``: a finished NerfDiff run -> a coloured mesh, 3D Gaussians (3DGS PLY), orbit videos.

    nerfdiff-export mesh --load-config outputs/.../config.yml --output-path object.glb
    nerfdiff-export gaussians --load-config outputs/.../config.yml --output-path splat.ply --video orbit.mp4
    nerfdiff-export video --splat-path splat.ply --output-path orbit.mp4
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import torch
import tyro

from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.export.gaussians import FitConfig


def check_video_seconds(seconds: float, flag: str) -> None:
    """A video needs a positive length."""
    if seconds <= 0:
        raise FlagError(f"{flag} {seconds}: a video length, must be > 0")


@dataclass
class ExportMesh:
    """Marching cubes on the finetuned NeRF's density inside the object sphere; vertex colours from the field."""

    load_config: Path
    """config.yml of a finished `ns-train nerfdiff` / `nerfdiff-tiny` run."""
    output_path: Path = Path("mesh.glb")
    """Output mesh: .glb, .ply or .obj (all carry vertex colours)."""
    resolution: Optional[int] = None
    """Grid points per axis over the object sphere's bounding cube (default: 2x the bundle's triplane resolution, at least 64)."""
    density_threshold: Optional[float] = None
    """Iso-level of the surface (default: calibrated so the mesh's silhouettes match the NeRF's accumulation > 0.5)."""
    min_component_fraction: float = 0.01
    """Drop connected pieces with fewer than this fraction of the faces (floaters); 0 keeps everything."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = cuda when available."""

    def main(self) -> dict:
        from nerfdiff_ns.export.density import default_grid_resolution
        from nerfdiff_ns.export.load import load_run
        from nerfdiff_ns.export.mesh import MESH_SUFFIXES, ExportError, calibrate_threshold, extract_mesh, save_mesh

        if self.output_path.suffix.lower() not in MESH_SUFFIXES:
            raise ExportError(self.output_path, f"has suffix {self.output_path.suffix!r}", f"use one of {', '.join(MESH_SUFFIXES)}")
        if self.resolution is not None and self.resolution < 8:
            raise FlagError(f"--resolution {self.resolution}: marching cubes needs at least 8 grid points per axis "
                            "(leave it unset for 2x the triplane's resolution, at least 64)")
        if not 0.0 <= self.min_component_fraction < 1.0:
            raise FlagError(f"--min-component-fraction {self.min_component_fraction}: a share of the faces, in [0, 1)")
        if self.density_threshold is not None and self.density_threshold <= 0:
            raise FlagError(f"--density-threshold {self.density_threshold}: a density, must be > 0")
        start = time.perf_counter()
        run = load_run(self.load_config, self.device)
        loaded = time.perf_counter()
        res = self.resolution or default_grid_resolution(run.nerf.config)
        level, iou = (self.density_threshold, None)
        if level is None:
            level, iou = calibrate_threshold(run, res)
        mesh = extract_mesh(run, res, level, where=self.load_config, min_component_fraction=self.min_component_fraction)
        save_mesh(mesh, self.output_path)
        summary = {"output": str(self.output_path), "vertices": len(mesh.vertices), "faces": len(mesh.faces),
                   "resolution": res, "density_threshold": round(float(level), 4),
                   "calibration_iou": None if iou is None else round(iou, 4),
                   "bytes": self.output_path.stat().st_size, "load_s": round(loaded - start, 2),
                   "export_s": round(time.perf_counter() - loaded, 2)}
        print(f"[nerfdiff] mesh: {json.dumps(summary)}")
        return summary


@dataclass
class ExportGaussians:
    """3D Gaussians initialised from the NeRF's density and refined against NeRF renders (3DGS PLY)."""

    load_config: Path
    """config.yml of a finished `ns-train nerfdiff` / `nerfdiff-tiny` run."""
    output_path: Path = Path("splat.ply")
    """Output 3DGS PLY (the layout of nerfstudio's `ns-export gaussian-splat`)."""
    sh_degree: Literal[0, 1, 2, 3] = 3
    """SH degree written (the NeRF's colour is view-independent, so bands above 0 are zeros; 3 matches most viewers)."""
    video: Optional[Path] = None
    """Also write an orbit video of the Gaussians here (.mp4)."""
    video_seconds: float = 4.0
    """Length of the orbit video."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = cuda when available."""
    fit: Annotated[FitConfig, tyro.conf.arg(name="")] = field(default_factory=FitConfig)

    def main(self) -> dict:
        from nerfdiff_ns.export.gaussians import fit_gaussians
        from nerfdiff_ns.export.load import load_run
        from nerfdiff_ns.export import ExportError
        from nerfdiff_ns.export.splat_ply import write_splat_ply

        if self.output_path.suffix.lower() != ".ply":  # fail before minutes of fitting, not after
            raise ExportError(self.output_path, "is not a .ply path", "name the Gaussian output e.g. splat.ply")
        self.fit.check()
        if self.video is not None:
            check_video_seconds(self.video_seconds, "--video-seconds")
        start = time.perf_counter()
        run = load_run(self.load_config, self.device)
        loaded = time.perf_counter()
        result = fit_gaussians(run, self.fit)
        write_splat_ply(self.output_path, result.cloud, self.sh_degree)
        summary = {"output": str(self.output_path), "gaussians": len(result.cloud), "initial_gaussians": result.num_initial,
                   "holdout_psnr_init_db": round(result.holdout_psnr_init, 2), "holdout_psnr_db": round(result.holdout_psnr, 2),
                   "train_psnr_db": round(result.train_psnr, 2), "steps": self.fit.steps,
                   "bytes": self.output_path.stat().st_size, "load_s": round(loaded - start, 2),
                   "export_s": round(time.perf_counter() - loaded, 2)}
        print(f"[nerfdiff] gaussians: {json.dumps(summary)}")
        if self.video is not None:
            RenderVideo(self.output_path, self.video, seconds=self.video_seconds, rasterizer=self.fit.rasterizer).main()
        return summary


@dataclass
class RenderVideo:
    """Orbit video of a splat PLY around the object, starting at the input view (compare with `ns-render`)."""

    splat_path: Path
    """3DGS PLY written by `nerfdiff-export gaussians` (others work with --resolution/--distance/--fov-degrees)."""
    output_path: Path = Path("orbit.mp4")
    """Output video (.mp4)."""
    seconds: float = 4.0
    """Video length."""
    fps: int = 24
    """Frames per second."""
    resolution: Optional[int] = None
    """Frame size (default: the run's input resolution stored in the PLY)."""
    elevation_degrees: Optional[float] = None
    """Orbit elevation (default: the input camera's)."""
    distance: Optional[float] = None
    """Orbit radius (default: the input camera's distance)."""
    fov_degrees: Optional[float] = None
    """Vertical field of view (default: the input camera's)."""
    rasterizer: Literal["auto", "gsplat", "torch"] = "auto"
    """auto (gsplat on CUDA, else the CPU fallback), gsplat, or torch."""

    def main(self) -> dict:
        import mediapy
        import numpy as np

        from nerfdiff_ns import compat
        from nerfdiff_ns.export.splat_ply import read_splat_ply
        from nerfdiff_ns.export.view_splat import orbit_frames

        check_video_seconds(self.seconds, "--seconds")
        if self.fps < 1:
            raise FlagError(f"--fps {self.fps}: must be >= 1")
        for flag, value in (("--resolution", self.resolution), ("--distance", self.distance)):
            if value is not None and value <= 0:
                raise FlagError(f"{flag} {value}: must be > 0")
        if self.fov_degrees is not None and not 0.0 < self.fov_degrees < 180.0:
            raise FlagError(f"--fov-degrees {self.fov_degrees}: must lie in (0, 180)")
        compat.use_bundled_ffmpeg()
        cloud = read_splat_ply(self.splat_path)
        frames = orbit_frames(cloud, max(1, round(self.seconds * self.fps)), self.resolution, self.elevation_degrees,
                              self.distance, self.fov_degrees, self.rasterizer)
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        mediapy.write_video(self.output_path, (np.clip(frames, 0, 1) * 255).astype(np.uint8), fps=self.fps)
        print(f"[nerfdiff] video: {self.output_path} ({len(frames)} frames of {frames.shape[2]}x{frames.shape[1]})")
        return {"output": str(self.output_path), "frames": len(frames)}


Commands = Union[
    Annotated[ExportMesh, tyro.conf.subcommand("mesh")],
    Annotated[ExportGaussians, tyro.conf.subcommand("gaussians")],
    Annotated[RenderVideo, tyro.conf.subcommand("video")],
]


def main(args: Optional[list[str]] = None) -> dict:
    torch.set_grad_enabled(True)
    cmd = tyro.cli(Commands, args=args, description=__doc__)
    return cmd.main()


def entrypoint() -> None:
    main()


__all__ = ["ExportGaussians", "ExportMesh", "RenderVideo", "entrypoint", "main"]
