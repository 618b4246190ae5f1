"""Readers, writers and the multi-view dataset (nerfdiff_ns.data: images, views, srn, transforms_json, multiview)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.images import load_rgb, save_rgb
from nerfdiff_ns.data.multiview import MultiViewDataset, load_object_folder
from nerfdiff_ns.data.srn import (
    OPENCV_TO_OPENGL,
    list_srn_objects,
    load_srn_object,
    nerfstudio_pose_to_srn,
    read_intrinsics,
    read_pose,
    srn_pose_to_nerfstudio,
    write_srn_object,
)
from nerfdiff_ns.data.transforms_json import load_transforms_scene
from nerfdiff_ns.data.views import MultiViewObject


# ------------------------------------------------------------------------------------------------
# helpers / fixtures (kept in this file on purpose: tests/conftest.py belongs to another module)


def _look_at(position, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL camera-to-world looking at ``target`` (independent of the generator's implementation)."""
    position = np.asarray(position, dtype=np.float64)
    back = position - np.asarray(target, dtype=np.float64)
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(back, right), back, position
    return c2w


def _random_rigid(rng: np.random.Generator, n: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.linalg.det(q))[:, None, None]  # proper rotations
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :3] = q
    out[:, :3, 3] = rng.normal(size=(n, 3))
    return out


def _cameras(n: int, radius: float = 2.5) -> np.ndarray:
    return np.stack([_look_at([radius * math.cos(a), radius * math.sin(a), 0.7])
                     for a in np.linspace(0, 2 * math.pi, n, endpoint=False)])


def _write_object(folder: Path, num_views: int = 4, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_views, size, size, 3), dtype=np.uint8)
    c2w = _cameras(num_views)
    write_srn_object(folder, images, c2w, fx=10.0, cx=size / 2, cy=size / 2, height=size, width=size)
    return images, c2w


@pytest.fixture
def srn_object(tmp_path: Path) -> Path:
    folder = tmp_path / "obj"
    _write_object(folder)
    return folder


@pytest.fixture(scope="module")
def generated_dataset(tmp_path_factory) -> Path:
    """A real tiny dataset from the pybullet generator: 2 train + 2 val objects, 16x16."""
    pytest.importorskip("pybullet")
    from nerfdiff_ns.data.generate import GenerateConfig, generate

    root = tmp_path_factory.mktemp("gen")
    generate(GenerateConfig(output_dir=root, num_objects=2, views_per_object=5, eval_views_per_object=6,
                            resolution=16, progress=False))
    return root


# ------------------------------------------------------------------------------------------------
# pose conventions


def test_pose_roundtrip_is_exact_for_numpy_and_torch():
    rng = np.random.default_rng(0)
    poses = _random_rigid(rng, 7)
    ns = srn_pose_to_nerfstudio(poses)
    assert isinstance(ns, np.ndarray) and ns.dtype == np.float64
    assert np.array_equal(nerfstudio_pose_to_srn(ns), poses)
    # the conversion is the documented diag(1, -1, -1) on the rotation columns; translation untouched
    assert np.array_equal(ns[:, :3, :3], poses[:, :3, :3] @ OPENCV_TO_OPENGL)
    assert np.array_equal(ns[:, :3, 3], poses[:, :3, 3])
    assert not np.array_equal(ns, poses)

    t = torch.from_numpy(poses).float()
    t_ns = srn_pose_to_nerfstudio(t)
    assert isinstance(t_ns, torch.Tensor) and t_ns.dtype == torch.float32
    assert torch.equal(nerfstudio_pose_to_srn(t_ns), t)
    assert torch.equal(srn_pose_to_nerfstudio(t[:, :3, :]), t_ns[:, :3, :])  # [..., 3, 4] works too


def test_pose_conversion_keeps_viewing_direction():
    """An OpenCV camera looks along +z; after conversion the OpenGL camera looks along -z, same ray."""
    c2w_gl = _look_at([2.0, -1.0, 1.0])
    c2w_cv = nerfstudio_pose_to_srn(c2w_gl)
    to_origin = -c2w_gl[:3, 3] / np.linalg.norm(c2w_gl[:3, 3])
    np.testing.assert_allclose(c2w_cv[:3, 2], to_origin, atol=1e-12)   # OpenCV: +z forward
    np.testing.assert_allclose(-c2w_gl[:3, 2], to_origin, atol=1e-12)  # OpenGL: -z forward
    assert c2w_cv[2, 1] < 0 < c2w_gl[2, 1]  # OpenCV y points down in the world, OpenGL y up


# ------------------------------------------------------------------------------------------------
# SRN reading / writing


def test_write_then_load_srn_object_roundtrip(tmp_path: Path):
    folder = tmp_path / "chair_1"
    images, c2w = _write_object(folder, num_views=3, size=8)
    assert sorted(p.name for p in (folder / "rgb").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert sorted(p.name for p in (folder / "pose").iterdir()) == ["000000.txt", "000001.txt", "000002.txt"]
    assert (folder / "intrinsics.txt").read_text().splitlines() == ["10 4 4 0.", "0. 0. 0.", "1.", "8 8"]
    # files hold OpenCV poses
    np.testing.assert_allclose(read_pose(folder / "pose" / "000001.txt"), nerfstudio_pose_to_srn(c2w[1]), atol=1e-8)

    obj = load_srn_object(folder)
    assert obj.object_id == "chair_1"
    assert (obj.num_views, obj.height, obj.width) == (3, 8, 8)
    assert obj.images.dtype == torch.float32 and obj.c2w.dtype == torch.float32
    assert torch.equal(obj.images, torch.from_numpy(images).float() / 255.0)
    np.testing.assert_allclose(obj.c2w.numpy(), c2w, atol=1e-6)
    assert obj.intrinsics.tolist() == [10.0, 10.0, 4.0, 4.0]
    assert [p.name for p in obj.image_paths] == ["000000.png", "000001.png", "000002.png"]


def test_float_images_are_written_as_rounded_8bit(tmp_path: Path):
    img = torch.tensor([[[0.0, 0.5, 1.0], [1.2, -0.1, 0.25]]])  # [1, 2, 3]
    write_srn_object(tmp_path / "o", img[None], _cameras(1), fx=5.0, cx=1.0, cy=0.5, height=1, width=2)
    arr = np.asarray(Image.open(tmp_path / "o" / "rgb" / "000000.png"))
    assert arr.tolist() == [[[0, 128, 255], [255, 0, 64]]]


def test_pose_file_on_one_line_and_sorting_by_stem(tmp_path: Path):
    folder = tmp_path / "o"
    images, c2w = _write_object(folder, num_views=3)
    # rename to unpadded names: 0, 2, 10 -> must be sorted numerically, poses matched by stem
    for src, dst in zip(["000000", "000001", "000002"], ["10", "2", "0"]):
        (folder / "rgb" / f"{src}.png").rename(folder / "rgb" / f"{dst}.png")
        (folder / "pose" / f"{src}.txt").rename(folder / "pose" / f"{dst}.txt")
    pose_text = (folder / "pose" / "2.txt").read_text()
    (folder / "pose" / "2.txt").write_text(" ".join(pose_text.split()))  # 16 numbers on one line
    obj = load_srn_object(folder)
    assert [p.stem for p in obj.image_paths] == ["0", "2", "10"]
    np.testing.assert_allclose(obj.c2w.numpy(), c2w[[2, 1, 0]], atol=1e-6)
    assert torch.equal(obj.images[2], torch.from_numpy(images[0]).float() / 255)


def test_intrinsics_scaled_when_images_differ_from_declared_size(tmp_path: Path):
    folder = tmp_path / "o"
    _write_object(folder, num_views=2, size=8)
    # declare a 16x32 (HxW) camera: images are 8x8 -> x scaled by 1/4, y by 1/2
    (folder / "intrinsics.txt").write_text("40. 16. 8. 0.\n0. 0. 0.\n1.\n16 32\n")
    assert read_intrinsics(folder / "intrinsics.txt") == (40.0, 16.0, 8.0, 16, 32)
    obj = load_srn_object(folder)
    assert obj.intrinsics.tolist() == [10.0, 20.0, 4.0, 4.0]


def test_rgba_images_composited_on_background(tmp_path: Path):
    folder = tmp_path / "o"
    _write_object(folder, num_views=2, size=4)
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # transparent red everywhere ...
    rgba[0, 0, 3] = 255  # ... except one opaque pixel
    Image.fromarray(rgba).save(folder / "rgb" / "000001.png")
    obj = load_srn_object(folder, background=(0.0, 0.0, 1.0))
    assert obj.images[1, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert obj.images[1, 2, 3].tolist() == [0.0, 0.0, 1.0]


def test_srn_input_view_alpha_becomes_the_mask_losss_target(tmp_path: Path):
    """An RGBA input view gives nerfdiff-srn-object its mask (the mask loss's target); an RGB one gives none."""
    from nerfdiff_ns.data.dataparsers import SRNObjectDataParserConfig

    folder = tmp_path / "o"
    _write_object(folder, num_views=2, size=4)
    rgba = np.full((4, 4, 4), 255, dtype=np.uint8)  # white on white: only the alpha tells object from background
    rgba[..., 3] = 0
    rgba[1:3, 1:3, 3] = 255
    rgba[0, 0, 3] = 128
    Image.fromarray(rgba).save(folder / "rgb" / "000001.png")
    out = SRNObjectDataParserConfig(data=folder, input_view=1).setup().get_dataparser_outputs("train")
    mask = out.metadata["nerfdiff_input_mask"][..., 0]
    assert mask[1:3, 1:3].eq(1).all() and mask.sum() == pytest.approx(4 + 128 / 255)
    assert out.metadata["nerfdiff_input_image"].eq(1).all()
    plain = SRNObjectDataParserConfig(data=folder, input_view=0).setup().get_dataparser_outputs("train")
    assert "nerfdiff_input_mask" not in plain.metadata


def _break(folder: Path, case: str) -> str:
    """Break an SRN object folder; return a string the DataError message must contain."""
    if case == "missing_rgb":
        for p in (folder / "rgb").iterdir():
            p.unlink()
        (folder / "rgb").rmdir()
        return str(folder / "rgb")
    if case == "missing_pose_dir":
        for p in (folder / "pose").iterdir():
            p.unlink()
        (folder / "pose").rmdir()
        return str(folder / "pose")
    if case == "missing_intrinsics":
        (folder / "intrinsics.txt").unlink()
        return "intrinsics.txt"
    if case == "empty_rgb":
        for p in (folder / "rgb").iterdir():
            p.unlink()
        return str(folder / "rgb")
    if case == "pose_missing_for_image":
        (folder / "pose" / "000002.txt").unlink()
        return "000002.txt"
    if case == "count_mismatch":
        (folder / "pose" / "000099.txt").write_text((folder / "pose" / "000000.txt").read_text())
        return "000099.txt"
    if case == "unequal_sizes":
        Image.new("RGB", (5, 8)).save(folder / "rgb" / "000003.png")
        return "000003.png"
    if case == "corrupt_image":
        (folder / "rgb" / "000001.png").write_bytes(b"this is not a png")
        return "000001.png"
    if case == "truncated_image":
        data = (folder / "rgb" / "000001.png").read_bytes()
        (folder / "rgb" / "000001.png").write_bytes(data[: len(data) // 2])
        return "000001.png"
    if case == "pose_12_numbers":
        (folder / "pose" / "000000.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
        return "000000.txt"
    if case == "pose_nan":
        (folder / "pose" / "000000.txt").write_text("1 0 0 nan\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
        return "000000.txt"
    if case == "pose_not_rigid":
        (folder / "pose" / "000001.txt").write_text("2 0 0 0\n0 2 0 0\n0 0 2 0\n0 0 0 1\n")
        return "000001.txt"
    if case == "pose_reflection":
        (folder / "pose" / "000001.txt").write_text("-1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
        return "000001.txt"
    if case == "pose_text":
        (folder / "pose" / "000003.txt").write_text("one two three\n")
        return "000003.txt"
    if case == "intrinsics_one_line":
        (folder / "intrinsics.txt").write_text("10 4 4 0\n")
        return "intrinsics.txt"
    if case == "intrinsics_bad_size":
        (folder / "intrinsics.txt").write_text("10 4 4 0\n0 0 0\n1\n8 8 8\n")
        return "intrinsics.txt"
    if case == "intrinsics_negative_focal":
        (folder / "intrinsics.txt").write_text("-10 4 4 0\n0 0 0\n1\n8 8\n")
        return "intrinsics.txt"
    if case == "intrinsics_text":
        (folder / "intrinsics.txt").write_text("f cx cy 0\n0 0 0\n1\n8 8\n")
        return "intrinsics.txt"
    raise AssertionError(case)


BROKEN_CASES = ["missing_rgb", "missing_pose_dir", "missing_intrinsics", "empty_rgb", "pose_missing_for_image",
                "count_mismatch", "unequal_sizes", "corrupt_image", "truncated_image", "pose_12_numbers", "pose_nan",
                "pose_not_rigid", "pose_reflection", "pose_text", "intrinsics_one_line", "intrinsics_bad_size",
                "intrinsics_negative_focal", "intrinsics_text"]


@pytest.mark.parametrize("case", BROKEN_CASES)
def test_broken_srn_object_raises_data_error_naming_the_file(srn_object: Path, case: str):
    expected = _break(srn_object, case)
    with pytest.raises(DataError) as info:
        load_srn_object(srn_object)
    message = str(info.value)
    assert expected in message, message
    assert "Fix:" in message  # every error says how to fix it
    assert isinstance(info.value, ValueError)


def test_broken_object_raises_through_dataset(srn_object: Path):
    _break(srn_object, "pose_not_rigid")
    ds = MultiViewDataset([srn_object])
    with pytest.raises(DataError, match="000001.txt"):
        ds[0]


def test_list_srn_objects(tmp_path: Path):
    with pytest.raises(DataError, match="dataset root not found"):
        list_srn_objects(tmp_path / "nope", "train")
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError) as info:
        list_srn_objects(tmp_path, "train")
    assert str(tmp_path / "train") in str(info.value) and "folders there: val" in str(info.value)
    with pytest.raises(DataError, match="contains no objects"):
        list_srn_objects(tmp_path, "val")
    for name in ["10", "2", "b", "a"]:
        _write_object(tmp_path / "train" / name, num_views=1, size=2)
    (tmp_path / "train" / "protocol.json").write_text("{}")
    (tmp_path / "train" / "not_an_object").mkdir()
    assert [p.name for p in list_srn_objects(tmp_path, "train")] == ["2", "10", "a", "b"]


# ------------------------------------------------------------------------------------------------
# image loading


def test_load_rgb_modes(tmp_path: Path):
    rgb = np.array([[[10, 20, 30], [200, 100, 0]]], dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = load_rgb(tmp_path / "rgb.png")
    assert out.shape == (1, 2, 3) and out.dtype == torch.float32
    assert torch.equal(out, torch.from_numpy(rgb).float() / 255)

    rgba = np.array([[[255, 0, 0, 128], [0, 255, 0, 0]]], dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    a = 128 / 255
    np.testing.assert_allclose(load_rgb(tmp_path / "rgba.png").numpy(),
                               [[[1.0, 1 - a, 1 - a], [1.0, 1.0, 1.0]]], atol=1e-6)  # on white
    np.testing.assert_allclose(load_rgb(tmp_path / "rgba.png", background=(0.0, 0.0, 0.0)).numpy(),
                               [[[a, 0.0, 0.0], [0.0, 0.0, 0.0]]], atol=1e-6)

    Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8), mode="L").save(tmp_path / "gray.png")
    gray = load_rgb(tmp_path / "gray.png")
    assert gray.shape == (1, 3, 3)
    np.testing.assert_allclose(gray.numpy(), np.repeat(np.array([[0, 100, 255]])[..., None] / 255, 3, -1), atol=1e-7)

    la = Image.fromarray(np.array([[[100, 255], [50, 0]]], dtype=np.uint8), mode="LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_allclose(load_rgb(tmp_path / "la.png", background=(0.0, 0.5, 1.0)).numpy(),
                               [[[100 / 255] * 3, [0.0, 0.5, 1.0]]], atol=1e-6)

    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "pal.png")
    assert load_rgb(tmp_path / "pal.png").tolist() == [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    pal.save(tmp_path / "pal_t.png", transparency=1)  # palette index 1 transparent
    assert load_rgb(tmp_path / "pal_t.png", background=(0.0, 1.0, 0.0)).tolist() == [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]


def test_load_rgb_16bit(tmp_path: Path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode in ("I;16", "I")  # really a 16-bit file
    out = load_rgb(tmp_path / "g16.png")
    np.testing.assert_allclose(out[..., 0].numpy(), values / 65535.0, atol=1e-7)
    assert torch.equal(out[..., 0], out[..., 2])
    # mode "I" (32-bit int holding 16-bit values, as older Pillow opened 16-bit PNGs) is scaled the same way
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "gI.tif")
    with Image.open(tmp_path / "gI.tif") as im:
        assert im.mode == "I"
    np.testing.assert_allclose(load_rgb(tmp_path / "gI.tif")[..., 1].numpy(), values / 65535.0, atol=1e-7)


def test_load_rgb_errors(tmp_path: Path):
    with pytest.raises(DataError, match="image not found") as info:
        load_rgb(tmp_path / "missing.png")
    assert "missing.png" in str(info.value)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="bad.png"):
        load_rgb(tmp_path / "bad.png")
    with pytest.raises(DataError, match="not a file"):
        load_rgb(tmp_path)


def test_save_rgb_roundtrip(tmp_path: Path):
    img = torch.rand(5, 7, 3)
    path = save_rgb(tmp_path / "sub" / "x.png", img)
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (7, 5)
    assert (load_rgb(path) - img).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError):
        save_rgb(tmp_path / "y.png", torch.rand(5, 7))


# ------------------------------------------------------------------------------------------------
# MultiViewObject


def test_multiview_object_validates_shapes():
    obj = MultiViewObject("a", torch.rand(3, 4, 5, 3), torch.eye(4).repeat(3, 1, 1), torch.tensor([1.0, 1, 2, 2]), [])
    assert (obj.num_views, obj.height, obj.width) == (3, 4, 5)
    obj34 = MultiViewObject("b", torch.rand(2, 4, 5, 3), torch.eye(4)[:3].repeat(2, 1, 1), torch.ones(4))
    assert obj34.c2w.shape == (2, 4, 4) and torch.equal(obj34.c2w[1], torch.eye(4))
    with pytest.raises(ValueError, match="images"):
        MultiViewObject("c", torch.rand(4, 5, 3), torch.eye(4)[None], torch.ones(4))
    with pytest.raises(ValueError, match="c2w"):
        MultiViewObject("c", torch.rand(2, 4, 5, 3), torch.eye(4)[None], torch.ones(4))
    with pytest.raises(ValueError, match="intrinsics"):
        MultiViewObject("c", torch.rand(1, 4, 5, 3), torch.eye(4)[None], torch.ones(3))
    with pytest.raises(ValueError, match="float"):
        MultiViewObject("c", torch.zeros(1, 4, 5, 3, dtype=torch.uint8), torch.eye(4)[None], torch.ones(4))


# ------------------------------------------------------------------------------------------------
# transforms.json


def _write_transforms_scene(folder: Path, n: int = 3, size: int = 6, meta: dict | None = None,
                            with_ext: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    c2w = _cameras(n)
    (folder / "images").mkdir(parents=True)
    frames = []
    for i in range(n):
        Image.fromarray(images[i]).save(folder / "images" / f"f_{i}.png")
        frames.append({"file_path": f"./images/f_{i}" + (".png" if with_ext else ""),
                       "transform_matrix": c2w[i].tolist()})
    data = {"frames": frames}
    data.update(meta if meta is not None else {"fl_x": 7.0, "fl_y": 8.0, "cx": 3.0, "cy": 2.5, "w": size, "h": size})
    (folder / "transforms.json").write_text(json.dumps(data))
    return images, c2w


def test_transforms_scene_top_level_intrinsics(tmp_path: Path):
    images, c2w = _write_transforms_scene(tmp_path / "scene")
    obj = load_transforms_scene(tmp_path / "scene")
    assert obj.object_id == "scene"
    assert torch.equal(obj.images, torch.from_numpy(images).float() / 255)
    np.testing.assert_allclose(obj.c2w.numpy(), c2w, atol=1e-6)  # already OpenGL: used as is
    assert obj.intrinsics.tolist() == [7.0, 8.0, 3.0, 2.5]
    assert load_object_folder(tmp_path / "scene").intrinsics.tolist() == [7.0, 8.0, 3.0, 2.5]  # auto-detected


def test_transforms_scene_camera_angle_x_and_paths_without_extension(tmp_path: Path):
    angle = 0.6911112070083618  # Blender synthetic
    _write_transforms_scene(tmp_path / "s", size=6, meta={"camera_angle_x": angle}, with_ext=False)
    obj = load_transforms_scene(tmp_path / "s" / "transforms.json")
    f = 0.5 * 6 / math.tan(0.5 * angle)
    np.testing.assert_allclose(obj.intrinsics.numpy(), [f, f, 3.0, 3.0], rtol=1e-6)


def test_transforms_scene_per_frame_intrinsics(tmp_path: Path):
    _write_transforms_scene(tmp_path / "s", n=2, meta={})
    data = json.loads((tmp_path / "s" / "transforms.json").read_text())
    for frame in data["frames"]:
        frame.update({"fl_x": 5.0, "cx": 3.0, "cy": 3.0, "w": 12, "h": 12})  # declared for 12x12, images 6x6
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(data))
    assert load_transforms_scene(tmp_path / "s").intrinsics.tolist() == [2.5, 2.5, 1.5, 1.5]

    data["frames"][1]["fl_x"] = 6.0
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="shared intrinsics") as info:
        load_transforms_scene(tmp_path / "s")
    assert "transforms.json" in str(info.value) and "frame 1" in str(info.value)


@pytest.mark.parametrize("case", ["missing_image", "bad_json", "no_frames", "no_focal", "distortion", "bad_matrix",
                                  "fisheye", "missing_json"])
def test_transforms_scene_errors(tmp_path: Path, case: str):
    folder = tmp_path / "s"
    _write_transforms_scene(folder)
    path = folder / "transforms.json"
    data = json.loads(path.read_text())
    expected = "transforms.json"
    if case == "missing_image":
        (folder / "images" / "f_1.png").unlink()
        expected = "f_1"
    elif case == "bad_json":
        path.write_text("{not json")
    elif case == "no_frames":
        data["frames"] = []
    elif case == "no_focal":
        for key in ("fl_x", "fl_y"):
            data.pop(key)
    elif case == "distortion":
        data["k1"] = 0.1
    elif case == "bad_matrix":
        data["frames"][2]["transform_matrix"] = [[1, 0, 0], [0, 1, 0]]
    elif case == "fisheye":
        data["camera_model"] = "OPENCV_FISHEYE"
    elif case == "missing_json":
        path.unlink()
    if case not in ("bad_json", "missing_json", "missing_image"):
        path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=expected):
        load_transforms_scene(folder)


# ------------------------------------------------------------------------------------------------
# the generated dataset through the readers and MultiViewDataset


def test_generated_dataset_loads_with_consistent_cameras(generated_dataset: Path):
    folders = list_srn_objects(generated_dataset, "train")
    assert [f.name for f in folders] == ["000", "001"]
    assert [f.name for f in list_srn_objects(generated_dataset, "val")] == ["900", "901"]
    obj = load_srn_object(folders[0])
    assert obj.images.shape == (5, 16, 16, 3)
    assert obj.images.min() >= 0 and obj.images.max() <= 1
    assert torch.all(obj.images[:, 0, 0] == 1.0)  # white background in the corner
    assert (obj.images < 0.99).any(dim=-1).float().mean() > 0.05  # the object is visible
    f = 8 / math.tan(math.radians(22.5))
    np.testing.assert_allclose(obj.intrinsics.numpy(), [f, f, 8.0, 8.0], rtol=1e-6)
    positions = obj.c2w[:, :3, 3]
    np.testing.assert_allclose(positions.norm(dim=-1).numpy(), 2.7, rtol=1e-6)
    forward = -obj.c2w[:, :3, 2]  # OpenGL cameras look along -z ...
    np.testing.assert_allclose(forward.numpy(), (-positions / positions.norm(dim=-1, keepdim=True)).numpy(),
                               atol=1e-6)  # ... at the origin
    assert torch.all(obj.c2w[:, 2, 1] > 0)  # camera up has a +Z (world up) component
    rot = obj.c2w[:, :3, :3]
    np.testing.assert_allclose((rot.transpose(1, 2) @ rot).numpy(), np.tile(np.eye(3), (5, 1, 1)), atol=1e-6)


def test_multiview_dataset_items(generated_dataset: Path):
    ds = MultiViewDataset.from_split(generated_dataset, "train", num_target_views=3)
    assert len(ds) == 2
    torch.manual_seed(0)
    item = ds[1]
    assert set(item) == {"object_index", "source_image", "source_c2w", "source_view", "target_images", "target_c2w",
                         "target_views", "intrinsics"}
    assert item["object_index"] == 1
    assert item["source_image"].shape == (16, 16, 3) and item["source_c2w"].shape == (4, 4)
    assert item["target_images"].shape == (3, 16, 16, 3) and item["target_c2w"].shape == (3, 4, 4)
    assert item["target_views"].dtype == torch.long and item["target_views"].shape == (3,)
    assert item["intrinsics"].shape == (4,)
    obj = ds.load_object(1)
    assert torch.equal(item["source_image"], obj.images[item["source_view"]])
    assert torch.equal(item["target_c2w"], obj.c2w[item["target_views"]])
    for _ in range(30):  # targets distinct from the source and from each other
        it = ds[0]
        views = it["target_views"].tolist()
        assert it["source_view"] not in views and len(set(views)) == 3
        assert all(0 <= v < 5 for v in views + [it["source_view"]])
    # global torch RNG drives the draw: same seed -> same stream
    torch.manual_seed(123)
    first = [(ds[i % 2]["source_view"], ds[i % 2]["target_views"].tolist()) for i in range(10)]
    torch.manual_seed(123)
    second = [(ds[i % 2]["source_view"], ds[i % 2]["target_views"].tolist()) for i in range(10)]
    assert first == second
    assert len({s for s, _ in first}) > 1  # and it does vary
    # objects are cached
    assert ds.load_object(0) is ds.load_object(0)
    uncached = MultiViewDataset(ds.folders, cache=False)  # cache=False: every call reads the object again
    first_load, second_load = uncached.load_object(0), uncached.load_object(0)
    assert first_load is not second_load and torch.equal(first_load.images, second_load.images)


def test_multiview_dataset_fixed_source_and_collate(generated_dataset: Path):
    ds = MultiViewDataset.from_split(generated_dataset, "val", num_target_views=2, source_view=0)
    torch.manual_seed(0)
    for _ in range(20):
        it = ds[1]
        assert it["source_view"] == 0 and 0 not in it["target_views"].tolist()
    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=False)
    batch = next(iter(loader))
    assert batch["source_image"].shape == (2, 16, 16, 3)
    assert batch["target_images"].shape == (2, 2, 16, 16, 3)
    assert batch["target_views"].shape == (2, 2) and batch["source_view"].tolist() == [0, 0]
    assert batch["object_index"].tolist() == [0, 1] and batch["intrinsics"].shape == (2, 4)
    with pytest.raises(DataError, match="source_view=6"):
        MultiViewDataset.from_split(generated_dataset, "val", source_view=6)[0]


def test_multiview_dataset_few_views_and_mixed_formats(tmp_path: Path):
    _write_object(tmp_path / "single", num_views=1, size=4)
    _write_object(tmp_path / "two", num_views=2, size=4)
    _write_transforms_scene(tmp_path / "scene", n=3, size=4)
    ds = MultiViewDataset([tmp_path / "single", tmp_path / "two", tmp_path / "scene"], num_target_views=3)
    it = ds[0]  # one view: the source is the only target
    assert it["source_view"] == 0 and it["target_views"].tolist() == [0, 0, 0]
    for _ in range(10):  # two views: targets drawn with replacement from the non-source view
        it = ds[1]
        assert it["target_views"].tolist() == [1 - it["source_view"]] * 3
    it = ds[2]
    assert it["target_images"].shape == (3, 4, 4, 3)
    assert ds.load_object(2).intrinsics.tolist() == [7.0, 8.0, 3.0, 2.5]  # read from transforms.json


def test_eval_view_indices_are_the_evenly_spaced_non_input_views():
    from nerfdiff_ns.data.views import MultiViewObject

    def obj(views: int) -> MultiViewObject:
        return MultiViewObject("o", torch.zeros(views, 2, 2, 3), torch.eye(4).expand(views, 4, 4).clone(), torch.ones(4))

    # 23 non-input views, 8 wanted: step 23/8, indices int(i * 2.875) of [1..23]
    assert obj(24).eval_view_indices(0, 8) == [1, 3, 6, 9, 12, 15, 18, 21]
    assert obj(24).eval_view_indices(5, 0) == [i for i in range(24) if i != 5]  # 0 = every other view
    assert obj(4).eval_view_indices(2, 8) == [0, 1, 3]  # fewer than asked: all of them
    assert obj(1).eval_view_indices(0, 8) == [0]  # a lone view is scored against itself
