"""The live viewer without a browser: cadence, lock hand-over, input-camera pose, NGD panel controls."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import torch

from nerfdiff_ns.data.cameras import orbit_pose
from nerfdiff_ns.live_viewer import LiveViewer, LiveViewerConfig, input_fov_radians, make_ngd_controls, viser_camera_pose
from nerfdiff_ns.ngd import NGDConfig


class FakeMachine:
    def __init__(self) -> None:
        self.actions: list[str] = []

    def action(self, action) -> None:
        self.actions.append(action.action)


class FakeServer:
    def __init__(self, clients: dict) -> None:
        self.clients = clients

    def get_clients(self) -> dict:
        return self.clients


class FakeViewer:
    """The parts of nerfstudio's ViewerState that LiveViewer uses."""

    def __init__(self, training_state: str = "training") -> None:
        self.render_statemachines = {7: FakeMachine()}
        self.viser_server = FakeServer({7: object()})
        self.trainer = type("T", (), {"training_state": training_state})()
        self.last_move_time = 0.0
        self.step = 0
        self.readouts: list[int] = []

    def get_camera_state(self, client):
        return "camera"

    def update_step(self, step: int) -> None:
        self.readouts.append(step)


def _live(viewer: FakeViewer, refresh: float, lock=None) -> LiveViewer:
    cfg = LiveViewerConfig(refresh_seconds=refresh, start_at_input_camera=False, lock_handoff_seconds=0.2)
    return LiveViewer(viewer, lock, orbit_pose(2.7, 0.0, 20.0), 0.8, cfg)


def test_refreshes_on_a_wall_clock_cadence_and_moves_the_step_readout(monkeypatch) -> None:
    viewer = FakeViewer()
    live = _live(viewer, refresh=2.0)
    clock = [100.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    for step in range(10):  # 0.5 s per iteration: a refresh every 4 iterations
        live.update_scene(step)
        clock[0] += 0.5
    assert viewer.render_statemachines[7].actions == ["step"] * 3
    assert viewer.readouts == [0, 4, 8]
    assert viewer.step == 9


def test_no_refresh_while_paused_and_no_crash_without_clients() -> None:
    paused = FakeViewer(training_state="paused")
    _live(paused, refresh=0.0).update_scene(5)
    assert paused.render_statemachines[7].actions == [] and paused.readouts == []
    empty = FakeViewer()
    empty.render_statemachines = {}
    _live(empty, refresh=0.0).update_scene(5)
    assert empty.readouts == [] and empty.step == 5


def test_a_client_without_a_camera_yet_is_skipped() -> None:
    viewer = FakeViewer()

    def no_camera(client):
        raise AssertionError("viser: camera not received yet")

    viewer.get_camera_state = no_camera  # type: ignore[method-assign]
    _live(viewer, refresh=0.0).update_scene(3)
    assert viewer.render_statemachines[7].actions == [] and viewer.readouts == [3]


def test_refresh_waits_for_the_render_thread_to_take_the_training_lock() -> None:
    """After a refresh the next iteration must queue behind the render, not starve it."""
    lock = threading.Lock()
    viewer = FakeViewer()
    taken = []

    class Renderer(FakeMachine):
        def action(self, action) -> None:
            super().action(action)

            def render() -> None:
                time.sleep(0.05)
                with lock:
                    taken.append(time.time())
                    time.sleep(0.1)

            threading.Thread(target=render, daemon=True).start()

    viewer.render_statemachines = {7: Renderer()}
    _live(viewer, refresh=0.0, lock=lock).update_scene(1)
    returned = time.time()
    with lock:  # what the training loop does next: it waits for the render to finish
        pass
    assert taken and taken[0] <= returned + 1e-3


def test_input_camera_pose_round_trips_through_viser_and_nerfstudio_conventions() -> None:
    """viser derives its camera from position/look_at/up; nerfstudio reads it back as the input c2w."""
    import viser.transforms as vtf
    from viser._viser import CameraHandle

    scale = 10.0
    for azimuth, elevation in [(0.0, -10.0), (35.0, 20.0), (200.0, 55.0)]:
        c2w = orbit_pose(2.7, azimuth, elevation)
        position, look_at, up = viser_camera_pose(c2w, scale)
        assert np.allclose(look_at, 0.0, atol=1e-5)  # an orbit camera looks at the object centre
        handle = CameraHandle(None)  # type: ignore[arg-type]  # viser's own maths, no client needed
        state = handle._state
        state.position, state.look_at, state.up_direction = position, look_at, up
        handle._update_wxyz()
        rotation = (vtf.SO3(state.wxyz) @ vtf.SO3.from_x_radians(np.pi)).as_matrix()  # nerfstudio's get_camera_state
        assert np.allclose(rotation, c2w[:3, :3].double().numpy(), atol=1e-5)
        assert np.allclose(position / scale, c2w[:3, 3].double().numpy(), atol=1e-6)


def test_input_fov_matches_the_pinhole_intrinsics() -> None:
    fy = 16.0 / np.tan(np.radians(45.0) / 2)
    assert input_fov_radians(torch.tensor([fy, fy, 16.0, 16.0]), 32) == pytest.approx(np.radians(45.0))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_panel_controls_change_what_the_running_diffusion_uses() -> None:
    """Set gamma and CFG through the very viser GUI elements the panel shows; the next NGD step uses them."""
    import viser

    from tests.test_ngd import _diffusion

    diffusion = _diffusion(gamma=1.0)
    ngd: NGDConfig = diffusion.config
    messages: list[str] = []
    controls = make_ngd_controls(ngd, log=messages.append)
    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    try:
        for element in controls.values():
            element.install(server)
        controls["gamma"].gui_handle.value = 1e9
        controls["cfg"].gui_handle.value = 2.5
        deadline = time.time() + 10
        while (ngd.guidance_gamma != 1e9 or ngd.cfg_scale != 2.5) and time.time() < deadline:
            time.sleep(0.02)  # viser runs GUI callbacks on its own thread pool
    finally:
        server.stop()
    assert ngd.guidance_gamma == 1e9 and ngd.cfg_scale == 2.5
    assert any("gamma set to 1e+09" in m for m in messages) and any("CFG scale set to 2.5" in m for m in messages)
    renders = torch.rand(3, 8, 8, 3)
    diffusion.start(torch.rand(3, 8, 8, 3))
    targets = diffusion.step(renders)
    assert diffusion.last_info.w_t == 1.0  # gamma 1e9 pins the targets to the renders
    assert torch.allclose(targets, renders, atol=1e-6)
