"""The orbit camera path: nerfstudio reads back the input camera as its first frame, then a full circle."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from nerfdiff_ns.camera_path import orbit_c2ws, orbit_camera_path
from nerfdiff_ns.data.cameras import azimuth_elevation, orbit_pose


def test_orbit_path_round_trips_through_nerfstudio(tmp_path: Path) -> None:
    from nerfstudio.cameras.camera_paths import get_path_from_json

    input_c2w = orbit_pose(2.7, 30.0, 25.0)
    intrinsics = torch.tensor([40.0, 40.0, 16.0, 16.0])
    from nerfdiff_ns.evaluation.report import write_json

    path = tmp_path / "o.json"
    write_json(path, orbit_camera_path(input_c2w, intrinsics, (32, 32), seconds=1.0, fps=8))
    cameras = get_path_from_json(json.loads(path.read_text()))

    assert len(cameras) == 8
    torch.testing.assert_close(cameras.camera_to_worlds[0], input_c2w[:3].float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(cameras.fy[:, 0].float(), torch.full((8,), 40.0), atol=1e-3, rtol=0)
    assert float(cameras.cx[0]) == 16.0 and int(cameras.height[0]) == 32
    azimuths = []
    for c2w in cameras.camera_to_worlds:
        az, el, dist = azimuth_elevation(c2w)
        assert math.isclose(dist, 2.7, abs_tol=1e-4) and math.isclose(el, 25.0, abs_tol=1e-3)
        # the camera looks along -z at the object centre
        torch.testing.assert_close(-c2w[:3, 2], -c2w[:3, 3] / c2w[:3, 3].norm(), atol=1e-5, rtol=0)
        azimuths.append(az)
    steps = [(b - a) % 360.0 for a, b in zip(azimuths, azimuths[1:] + azimuths[:1])]
    assert all(math.isclose(s, 45.0, abs_tol=1e-3) for s in steps), steps


def test_orbit_needs_a_frame() -> None:
    import pytest

    with pytest.raises(ValueError, match="at least one frame"):
        orbit_c2ws(orbit_pose(2.0, 0.0, 10.0), 0)
