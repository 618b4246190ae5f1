"""A viewer that stays live while NGD runs, also on a CPU.

nerfstudio 1.1.5 re-renders the viewport every ``render_freq`` steps, estimated from ray
throughput for 512 px renders; on a CPU that is ~1,600 steps, longer than a whole NGD run, and the
"Step" readout only moves when it renders. The training loop also holds ``train_lock`` for whole
iterations (diffusion steps included) and grabs it again at once, so the render thread can starve.
:class:`LiveViewer` replaces that cadence for our methods with a wall-clock one
(``refresh_seconds``), caps the viewport resolution to what the method renders in well under a
second, hands the lock to the render thread after each refresh, and opens new browser tabs at the
input camera so the first view frames the object as the input photo does.

:func:`make_ngd_controls` builds the panel's NGD controls; their callbacks write the very
:class:`~nerfdiff_ns.ngd.NGDConfig` the running diffusion reads at every step.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from nerfdiff_ns.ngd import NGDConfig


@dataclass
class LiveViewerConfig:
    """How the nerfstudio viewer behaves while our methods train."""

    refresh_seconds: float = 2.0
    """Re-render the viewport with the current NeRF at least this often while training (wall clock)."""
    max_resolution: int = 128
    """Cap of the viewer's 'Max res' slider at start (the user can raise it in the panel)."""
    start_at_input_camera: bool = True
    """Point every newly opened browser tab at the input camera."""
    lock_handoff_seconds: float = 1.0
    """After a refresh, wait up to this long for the render thread to take the training lock."""


def make_ngd_controls(ngd: NGDConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Viewer elements (``gamma``, ``cfg``, ``progress``) whose callbacks update ``ngd`` in place.

    Returns an empty dict when nerfstudio's viewer extras are missing (training still works).
    """
    try:
        from nerfstudio.viewer.viewer_elements import ViewerNumber, ViewerText
    except Exception:
        return {}

    class FineNumber(ViewerNumber):
        """nerfstudio's ViewerNumber lets viser infer the step from the default (8.0 -> 1); NGD knobs need 0.1."""

        def _create_gui_handle(self, viser_server: Any) -> None:
            self.gui_handle = viser_server.gui.add_number(
                self.name, self.default_value, step=0.1, disabled=self.disabled, visible=self.visible, hint=self.hint
            )

    def set_gamma(handle: Any) -> None:
        ngd.guidance_gamma = float(handle.value)
        log(f"[nerfdiff] viewer: NGD guidance gamma set to {ngd.guidance_gamma:g}")

    def set_cfg(handle: Any) -> None:
        ngd.cfg_scale = float(handle.value)
        log(f"[nerfdiff] viewer: CDM CFG scale set to {ngd.cfg_scale:g}")

    return {
        "gamma": FineNumber("NGD guidance gamma", ngd.guidance_gamma, cb_hook=set_gamma,
                              hint="Pull of each virtual view toward the NeRF render (larger = closer to the NeRF)"),
        "cfg": FineNumber("CDM CFG scale", ngd.cfg_scale, cb_hook=set_cfg,
                            hint="Classifier-free guidance of the diffusion model (1 = off)"),
        "progress": ViewerText("NGD progress", "not started", disabled=True),
    }


def viser_camera_pose(c2w: torch.Tensor, scale_ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nerfstudio ``c2w`` (OpenGL axes) -> viser ``position``, ``look_at`` and ``up_direction``.

    The look-at point is where the optical axis passes closest to the object centre (the origin),
    so an orbit camera looks at the origin and any other camera keeps its own direction.
    """
    pose = c2w.detach().double().cpu().numpy()
    position, forward, up = pose[:3, 3], -pose[:3, 2], pose[:3, 1]
    depth = max(float(-(position @ forward)), 1e-3)
    return position * scale_ratio, (position + depth * forward) * scale_ratio, up


class LiveViewer:
    """Wall-clock render cadence and input-camera start for a nerfstudio ``ViewerState``."""

    def __init__(self, viewer: Any, train_lock: Optional[threading.Lock], input_c2w: torch.Tensor,
                 input_fov_radians: float, config: LiveViewerConfig) -> None:
        self.viewer = viewer
        self.train_lock = train_lock
        self.input_c2w = input_c2w
        self.input_fov = input_fov_radians
        self.config = config
        self.last_refresh = -math.inf
        self.refreshes = 0
        self.input_frustum_hidden = False

    def install(self) -> "LiveViewer":
        """Replace the viewer's cadence, cap its resolution, and start new clients at the input camera."""
        viewer = self.viewer
        viewer.update_scene = self.update_scene  # the Trainer calls this after every iteration
        try:
            viewer.control_panel._max_res.value = int(self.config.max_resolution)
        except Exception as err:  # a viewer without the slider still works, just slower
            print(f"[nerfdiff] viewer: could not cap the render resolution ({err})")
        if self.config.start_at_input_camera:
            viewer.viser_server.on_client_connect(self._on_connect)
            for client in viewer.viser_server.get_clients().values():
                self._on_connect(client)
        return self

    # ---- camera ---------------------------------------------------------------------------
    def _on_connect(self, client: Any) -> None:
        """Move the client's camera to the input view once the browser has reported its own camera."""
        done = threading.Event()

        def first_update(_: Any) -> None:
            if not done.is_set():
                done.set()
                self.point_at_input(client)

        client.camera.on_update(first_update)

    def point_at_input(self, client: Any) -> None:
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

        position, look_at, up = viser_camera_pose(self.input_c2w, VISER_NERFSTUDIO_SCALE_RATIO)
        with client.atomic():
            client.camera.fov = float(self.input_fov)
            client.camera.up_direction = tuple(up)
            client.camera.position = tuple(position)
            client.camera.look_at = tuple(look_at)

    def _hide_input_frustum(self) -> None:
        """The view starts inside the input camera, so its frustum would cover it: hide it ("Show Train Cams" brings it back)."""
        viewer = self.viewer
        if not getattr(viewer, "camera_handles", None):
            return
        self.input_frustum_hidden = True
        viewer.set_camera_visibility(False)
        if getattr(viewer, "hide_images", None) is not None and viewer.hide_images.visible:
            viewer.toggle_cameravis_button()

    # ---- cadence --------------------------------------------------------------------------
    def update_scene(self, step: int, num_rays_per_batch: Optional[int] = None) -> None:
        """Called by the Trainer after each iteration, outside ``train_lock``."""
        from nerfstudio.viewer.render_state_machine import RenderAction

        viewer = self.viewer
        viewer.step = step
        if self.config.start_at_input_camera and not self.input_frustum_hidden:
            self._hide_input_frustum()
        if not viewer.render_statemachines:
            return
        while time.time() - viewer.last_move_time < 0.1:  # the user is moving the camera: let it render
            time.sleep(0.05)
        trainer = viewer.trainer
        if trainer is not None and trainer.training_state != "training":
            return
        now = time.time()
        if now - self.last_refresh < self.config.refresh_seconds:
            return
        self.last_refresh = now
        clients = viewer.viser_server.get_clients()
        triggered = False
        for client_id, client in clients.items():
            machine = viewer.render_statemachines.get(client_id)
            camera_state = _camera_state(viewer, client) if machine is not None else None
            if machine is not None and camera_state is not None:
                machine.action(RenderAction("step", camera_state))
                triggered = True
        viewer.update_step(step)
        self.refreshes += 1
        if triggered:
            self._hand_over_lock()

    def _hand_over_lock(self) -> None:
        """Wait until the render thread holds ``train_lock``, so the next iteration waits for its render."""
        lock = self.train_lock
        if lock is None:
            return
        deadline = time.time() + self.config.lock_handoff_seconds
        while not lock.locked() and time.time() < deadline:
            time.sleep(0.005)


def _camera_state(viewer: Any, client: Any) -> Any:
    """The client's camera, or None before the browser has sent one (viser asserts on that)."""
    try:
        return viewer.get_camera_state(client)
    except AssertionError:
        return None


def input_fov_radians(intrinsics: torch.Tensor, height: int) -> float:
    """Vertical field of view of a pinhole camera ``[fx, fy, cx, cy]`` with ``height`` rows."""
    return 2.0 * math.atan((height / 2.0) / float(intrinsics[1]))
