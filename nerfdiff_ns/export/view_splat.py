"""``nerfdiff-view-splat splat.ply``: serve 3D Gaussians in the browser with viser and render camera moves live.

Every camera move of a connected browser is rendered with the Gaussian rasteriser (gsplat on
CUDA; the CPU fallback at the run's resolution, which is what keeps it interactive on a CPU) and
sent back as the scene's background image. The PLY's ``comment nerfdiff`` lines give the starting
camera and resolution; other 3DGS PLYs fall back to the shipped bundle's camera distribution.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro

from nerfdiff_ns.data.cameras import azimuth_elevation, orbit_pose
from nerfdiff_ns.export.rasterize import rasterize
from nerfdiff_ns.export.splat_ply import GaussianCloud, read_splat_ply

GL_FROM_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def camera_defaults(cloud: GaussianCloud) -> dict:
    """Resolution, fov, distance, background and input pose from the PLY, else from the shipped bundle."""
    meta = dict(cloud.meta)
    if not {"image_size", "fov_degrees", "distance"} <= set(meta):
        from nerfdiff_ns.bundle import load_bundle
        from nerfdiff_ns.data.dataparsers import default_bundle_path

        cams = load_bundle(default_bundle_path()).config.cameras
        meta.setdefault("image_size", [cams.image_size, cams.image_size])
        meta.setdefault("fov_degrees", cams.fov_degrees)
        meta.setdefault("distance", cams.distance)
    meta.setdefault("background", [1.0, 1.0, 1.0])
    if "input_c2w" not in meta:
        meta["input_c2w"] = orbit_pose(float(meta["distance"]), 0.0, 20.0).tolist()
    return meta


def pinhole(fov_degrees: float, height: int, width: int) -> torch.Tensor:
    """``fx, fy, cx, cy`` of a square-pixel camera with vertical field of view ``fov_degrees``."""
    f = 0.5 * height / math.tan(math.radians(fov_degrees) / 2)
    return torch.tensor([f, f, width / 2.0, height / 2.0])


def viser_c2w(wxyz: np.ndarray, position: np.ndarray) -> torch.Tensor:
    """A viser camera (OpenCV axes, world +z up as the server is set up) -> our c2w (OpenGL axes)."""
    from scipy.spatial.transform import Rotation

    w, x, y, z = (float(v) for v in wxyz)
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.from_numpy(Rotation.from_quat([x, y, z, w]).as_matrix()).float()
    c2w[:3, 3] = torch.as_tensor(np.asarray(position, np.float32))
    return c2w @ GL_FROM_CV


@torch.no_grad()
def render_cloud_views(cloud: GaussianCloud, c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int,
                       background, rasterizer: str = "auto") -> np.ndarray:
    """``[C, H, W, 3]`` float images of the cloud (on CUDA when available)."""
    dev = torch.device("cuda" if torch.cuda.is_available() and rasterizer != "torch" else "cpu")
    means, quats, scales, opac, cols = (t.to(dev) for t in cloud.render_params())
    frames = []
    for cam in c2w:
        rgb, _ = rasterize(means, quats, scales, opac, cols, cam[None].to(dev), intrinsics.to(dev), width, height,
                           torch.as_tensor(background, dtype=torch.float32, device=dev), rasterizer)  # type: ignore[arg-type]
        frames.append(rgb[0].clamp(0, 1).cpu().numpy())
    return np.stack(frames)


def orbit_frames(cloud: GaussianCloud, num_frames: int, resolution: Optional[int] = None, elevation: Optional[float] = None,
                 distance: Optional[float] = None, fov_degrees: Optional[float] = None, rasterizer: str = "auto") -> np.ndarray:
    """Frames of a full orbit starting at the input camera's azimuth (``[F, H, W, 3]`` in [0, 1])."""
    meta = camera_defaults(cloud)
    az0, el0, d0 = azimuth_elevation(torch.tensor(meta["input_c2w"]))
    res = resolution or int(meta["image_size"][0])
    c2w = torch.stack([orbit_pose(distance or d0, az0 + 360.0 * i / num_frames, el0 if elevation is None else elevation)
                       for i in range(num_frames)])
    intr = pinhole(fov_degrees or float(meta["fov_degrees"]), res, res)
    return render_cloud_views(cloud, c2w, intr, res, res, meta["background"], rasterizer)


class SplatViewer:
    """A viser server that re-renders the Gaussians for each browser's camera."""

    def __init__(self, cloud: GaussianCloud, resolution: Optional[int] = None, rasterizer: str = "auto") -> None:
        self.cloud = cloud
        self.meta = camera_defaults(cloud)
        self.resolution = resolution or int(self.meta["image_size"][0])
        self.rasterizer = rasterizer
        self.last_ms = float("nan")

    def render(self, wxyz: np.ndarray, position: np.ndarray, fov_radians: float, aspect: float) -> np.ndarray:
        """One ``[H, W, 3]`` uint8 frame for a viser camera; the height is the viewer resolution."""
        h = self.resolution
        w = max(1, int(round(h * aspect)))
        start = time.perf_counter()
        img = render_cloud_views(self.cloud, viser_c2w(wxyz, position)[None], pinhole(math.degrees(fov_radians), h, w),
                                 h, w, self.meta["background"], self.rasterizer)[0]
        self.last_ms = 1000.0 * (time.perf_counter() - start)
        return (img * 255).astype(np.uint8)

    def serve(self, host: str = "0.0.0.0", port: int = 8080, max_seconds: Optional[float] = None):
        """Serve until interrupted (or ``max_seconds``); returns the server (stopped when ``max_seconds`` is set)."""
        import viser

        server = viser.ViserServer(host=host, port=port, label="nerfdiff splat")
        server.scene.set_up_direction("+z")
        info = server.gui.add_markdown(f"{len(self.cloud)} Gaussians, {self.resolution} px")
        slider = server.gui.add_slider("resolution", min=16, max=1024, step=16, initial_value=self.resolution)
        dirty: dict[int, object] = {}
        lock = threading.Lock()

        @slider.on_update
        def _(_event) -> None:
            self.resolution = int(slider.value)
            with lock:
                dirty.update(server.get_clients())

        @server.on_client_connect
        def _(client) -> None:
            c2w = torch.tensor(self.meta["input_c2w"])
            client.camera.position = c2w[:3, 3].numpy()
            client.camera.look_at = (0.0, 0.0, 0.0)
            client.camera.up_direction = (0.0, 0.0, 1.0)
            client.camera.fov = math.radians(float(self.meta["fov_degrees"]))

            @client.camera.on_update
            def _(_cam) -> None:
                with lock:
                    dirty[client.client_id] = client

        print(f"[nerfdiff] serving {len(self.cloud)} Gaussians at http://localhost:{port} (Ctrl+C to stop)")
        start = time.time()
        try:
            while max_seconds is None or time.time() - start < max_seconds:
                with lock:
                    todo = list(dirty.values())
                    dirty.clear()
                for client in todo:
                    cam = client.camera  # type: ignore[attr-defined]
                    client.scene.set_background_image(self.render(cam.wxyz, cam.position, cam.fov, cam.aspect), format="jpeg")  # type: ignore[attr-defined]
                    info.content = f"{len(self.cloud)} Gaussians, {self.resolution} px, {self.last_ms:.0f} ms/frame"
                time.sleep(0.01)
        except KeyboardInterrupt:
            pass
        if max_seconds is not None:
            server.stop()
        return server


@dataclass
class ViewSplat:
    """Serve a 3DGS PLY with viser and render camera moves interactively."""

    splat_path: tyro.conf.Positional[Path]
    """The .ply written by `nerfdiff-export gaussians` (or any float32 3DGS PLY)."""
    port: int = 8080
    """Port of the web viewer."""
    host: str = "0.0.0.0"
    """Address to listen on."""
    resolution: Optional[int] = None
    """Rendered image height (default: the run's resolution from the PLY; raise it on CUDA)."""
    rasterizer: Literal["auto", "gsplat", "torch"] = "auto"
    """auto (gsplat on CUDA, else the CPU fallback), gsplat, or torch."""
    max_seconds: Optional[float] = None
    """Stop after this many seconds (default: run until Ctrl+C)."""

    def main(self) -> None:
        cloud = read_splat_ply(self.splat_path)
        SplatViewer(cloud, self.resolution, self.rasterizer).serve(self.host, self.port, self.max_seconds)


def entrypoint() -> None:
    tyro.cli(ViewSplat).main()


__all__ = ["SplatViewer", "ViewSplat", "camera_defaults", "entrypoint", "orbit_frames", "pinhole", "viser_c2w"]
