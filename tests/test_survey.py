"""A training split is checked whole before pretraining (nerfdiff_ns.data.survey): every object a batch could draw
must share one image size and camera, have two views and sit inside the object sphere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfdiff_ns.data.camera_rig import camera_position, intrinsics_for, look_at
from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.multiview import MultiViewDataset, load_object_folder, read_object_cameras
from nerfdiff_ns.data.srn import list_srn_objects, write_srn_object
from nerfdiff_ns.data.survey import background_warning, survey_training_objects
from nerfdiff_ns.training.batches import estimate_camera_distribution


def write_object(folder: Path, views: int = 3, height: int = 8, width: int = 8, fov: float = 45.0,
                 distance: float = 2.7, backdrop: float = 1.0) -> Path:
    """A tiny SRN object: a grey square on a ``backdrop`` border, cameras around the origin at ``distance``."""
    images = np.full((views, height, width, 3), backdrop, dtype=np.float32)
    images[:, height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 0.4
    c2w = np.stack([look_at(camera_position(360.0 * i / views, 20.0, distance)) for i in range(views)])
    focal, _, _ = intrinsics_for(height, fov)
    return write_srn_object(folder, images, c2w, focal, width / 2, height / 2, height, width)


def split(tmp_path: Path, *objects: dict) -> list[Path]:
    for index, kwargs in enumerate(objects):
        write_object(tmp_path / "train" / f"{index:03d}", **kwargs)
    return list_srn_objects(tmp_path, "train")


def test_a_good_split_passes_and_gives_the_camera_distribution(tmp_path):
    folders = split(tmp_path, {}, {"views": 4})
    warnings: list[str] = []
    cameras = survey_training_objects(folders, 1.0, warnings.append)
    assert warnings == [] and [c.num_views for c in cameras] == [3, 4]
    dist = estimate_camera_distribution(cameras)
    assert dist.image_size == 8 and dist.fov_degrees == pytest.approx(45.0, abs=1e-3)
    assert dist.distance == pytest.approx(2.7, abs=1e-4)
    assert dist.elevation_range_degrees == pytest.approx((20.0, 20.0), abs=1e-3)
    assert background_warning(cameras, (1.0, 1.0, 1.0)) is None
    # the cameras alone equal those of the decoded object, and a dataset handed them loads the same object
    obj = load_object_folder(folders[1])
    assert torch.equal(cameras[1].c2w, obj.c2w) and torch.equal(cameras[1].intrinsics, obj.intrinsics)
    assert (cameras[1].height, cameras[1].width) == (obj.height, obj.width)
    from_survey = MultiViewDataset(folders, cameras=cameras).load_object(1)
    assert torch.equal(from_survey.images, obj.images) and torch.equal(from_survey.c2w, obj.c2w)
    with pytest.raises(ValueError, match="1 cameras for 2 object folders"):
        MultiViewDataset(folders, cameras=cameras[:1])


@pytest.mark.parametrize("bad, message", [
    ({"views": 1}, r"object '001' has 1 view.*at least 2"),
    ({"height": 6}, r"images are 6x8 \(HxW\).*square.*crop or pad"),
    ({"height": 12, "width": 12}, r"1 object\(s\) \('001'\) have images of another size than the 1 with 8x8 "
                                  r"\(object '001': 12x12\).*resize"),
    ({"fov": 80.0}, r"1 object\(s\) \('001'\) have another vertical field of view than the 45\.0° of the others "
                    r"\(object '001': 80\.0°\)"),
    ({"distance": 0.8}, r"001/pose/000000\.txt: the camera of 000000\.png \(object '001'\) is 0\.80 from the origin, "
                        r"inside the object sphere of radius 1"),
])
def test_objects_pretraining_cannot_use_are_refused_by_name(tmp_path, bad, message):
    folders = split(tmp_path, {}, bad)
    with pytest.raises(DataError, match=message) as info:
        survey_training_objects(folders, 1.0)
    assert "Fix:" in str(info.value) and "001" in str(info.value)


def test_the_odd_object_is_named_even_when_it_comes_first(tmp_path):
    folders = split(tmp_path, {"height": 12, "width": 12, "fov": 60.0}, {}, {})
    with pytest.raises(DataError, match=r"\('000'\) have images of another size than the 2 with 8x8"):
        survey_training_objects(folders, 1.0)
    folders = split(tmp_path / "fov", {"fov": 60.0}, {}, {})
    with pytest.raises(DataError, match=r"000/intrinsics\.txt: 1 object\(s\) \('000'\) have another vertical field"):
        survey_training_objects(folders, 1.0)


def test_a_scaled_up_scene_is_warned_about(tmp_path):
    folders = split(tmp_path, {"distance": 12.0}, {"distance": 12.0})
    warnings: list[str] = []
    survey_training_objects(folders, 1.0, warnings.append)
    assert len(warnings) == 1 and "scale the camera translations down" in warnings[0]


def test_another_backdrop_is_warned_about(tmp_path):
    cameras = survey_training_objects(split(tmp_path, {"backdrop": 0.0}, {"backdrop": 0.0}), 1.0)
    line = background_warning(cameras, (1.0, 1.0, 1.0))
    assert line is not None and "2 of 2 objects" in line and "--nerf.background" in line
    assert background_warning(cameras, (0.0, 0.0, 0.0)) is None


def test_transforms_json_scenes_read_their_cameras_from_headers(tmp_path):
    srn = write_object(tmp_path / "srn" / "obj", views=2)
    scene = tmp_path / "tj" / "obj"
    (scene / "images").mkdir(parents=True)
    obj = load_object_folder(srn)
    frames = []
    for i, (path, c2w) in enumerate(zip(obj.image_paths, obj.c2w)):
        (scene / "images" / path.name).write_bytes(path.read_bytes())
        frames.append({"file_path": f"images/{path.name}", "transform_matrix": c2w.tolist()})
    fx, fy, cx, cy = obj.intrinsics.tolist()
    (scene / "transforms.json").write_text(json.dumps({"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "frames": frames}))
    cameras = read_object_cameras(scene)
    assert cameras.camera_file == scene / "transforms.json" and cameras.num_views == 2
    assert torch.allclose(cameras.c2w, obj.c2w) and torch.allclose(cameras.intrinsics, obj.intrinsics)
    assert torch.equal(cameras.load().images, obj.images)


def test_a_root_of_object_folders_says_to_move_them_into_train(tmp_path):
    write_object(tmp_path / "flat" / "000")
    with pytest.raises(DataError, match=r"holds object folders itself \(000\).*move the object folders into"):
        list_srn_objects(tmp_path / "flat", "train")
    (tmp_path / "srn" / "cars_train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"folders there: cars_train.*rename or symlink"):
        list_srn_objects(tmp_path / "srn", "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"contains no objects.*transforms\.json"):
        list_srn_objects(tmp_path / "empty", "train")
