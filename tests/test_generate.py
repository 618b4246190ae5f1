"""The pybullet dataset generator (nerfdiff_ns.data.generate): layout, determinism, reserved objects and
camera-math consistency (rendered pixels vs the written poses and intrinsics)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nerfdiff_ns.data import generate as gen
from nerfdiff_ns.data.generate import GenerateConfig, ReservedObjectError, generate
from nerfdiff_ns.data.sources.primitives import rotation_y
from nerfdiff_ns.data.srn import load_srn_object

pytest.importorskip("pybullet")


def _tiny(root: Path, **kw) -> GenerateConfig:
    base = dict(output_dir=root, num_objects=2, views_per_object=4, eval_views_per_object=5, resolution=16,
                progress=False)
    base.update(kw)
    return GenerateConfig(**base)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _project(points: np.ndarray, c2w: np.ndarray, intrinsics) -> np.ndarray:
    """Pinhole projection with nerfstudio conventions (OpenGL camera, pixel centres at +0.5): [N, 2] (u, v)."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    w2c = np.linalg.inv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -pc[:, 2]
    assert np.all(depth > 0), "point behind the camera"
    return np.stack([cx + fx * pc[:, 0] / depth, cy - fy * pc[:, 1] / depth], axis=-1)


# ------------------------------------------------------------------------------------------------
# layout


def test_generate_layout_and_metadata(tmp_path: Path):
    out = generate(_tiny(tmp_path, input_view_index=2))
    assert {s: [p.name for p in f] for s, f in out.items()} == {"train": ["000", "001"], "val": ["900", "901"]}
    for folder, n in [(tmp_path / "train" / "001", 4), (tmp_path / "val" / "900", 5)]:
        assert sorted(p.name for p in (folder / "rgb").iterdir()) == [f"{i:06d}.png" for i in range(n)]
        assert sorted(p.name for p in (folder / "pose").iterdir()) == [f"{i:06d}.txt" for i in range(n)]
        lines = (folder / "intrinsics.txt").read_text().splitlines()
        f = 8 / math.tan(math.radians(22.5))
        assert [float(v) for v in lines[0].split()] == pytest.approx([f, 8.0, 8.0, 0.0])
        assert lines[1:] == ["0. 0. 0.", "1.", "16 16"]
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["splits"] == {"train": ["000", "001"], "val": ["900", "901"]}
    assert meta["settings"]["resolution"] == 16 and meta["settings"]["seed"] == 0
    assert meta["settings"]["elevation_range_degrees"] == [-10.0, 60.0]
    val = json.loads((tmp_path / "val" / "protocol.json").read_text())
    assert val["camera_layout"] == "spiral" and val["input_view_index"] == 2 and val["views_per_object"] == 5
    assert val["object_ids"] == ["900", "901"]
    train = json.loads((tmp_path / "train" / "protocol.json").read_text())
    assert train["camera_layout"] == "random" and train["views_per_object"] == 4


def test_val_cameras_form_a_spiral(tmp_path: Path):
    generate(_tiny(tmp_path, splits=("val",), num_objects=1, eval_views_per_object=8))
    obj = load_srn_object(tmp_path / "val" / "900")
    pos = obj.c2w[:, :3, 3].numpy().astype(np.float64)
    azimuth = np.degrees(np.arctan2(pos[:, 1], pos[:, 0])) % 360
    elevation = np.degrees(np.arcsin(pos[:, 2] / np.linalg.norm(pos, axis=1)))
    np.testing.assert_allclose(azimuth, np.arange(8) * 45.0, atol=1e-4)
    np.testing.assert_allclose(elevation, np.linspace(-10, 60, 8), atol=1e-4)


def test_train_cameras_random_in_range(tmp_path: Path):
    config = _tiny(tmp_path, views_per_object=64, elevation_range_degrees=(5.0, 30.0))
    c2w = gen.object_cameras(config, 3, "train")
    pos = c2w[:, :3, 3]
    elevation = np.degrees(np.arcsin(pos[:, 2] / np.linalg.norm(pos, axis=1)))
    assert elevation.min() >= 5.0 and elevation.max() <= 30.0 and elevation.std() > 3
    azimuth = np.degrees(np.arctan2(pos[:, 1], pos[:, 0])) % 360
    assert np.histogram(azimuth, bins=4, range=(0, 360))[0].min() >= 5  # spread over all quadrants
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 2.7)


def test_regenerating_replaces_split_and_refuses_foreign_folders(tmp_path: Path):
    generate(_tiny(tmp_path, num_objects=3, splits=("train",)))
    generate(_tiny(tmp_path, num_objects=1, splits=("train",)))
    assert [p.name for p in (tmp_path / "train").iterdir() if p.is_dir()] == ["000"]
    with pytest.raises(ValueError, match="different settings"):
        generate(_tiny(tmp_path, splits=("val",), resolution=32))  # would mix settings in one dataset
    foreign = tmp_path / "other"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "my_file.txt").write_text("precious")
    with pytest.raises(ValueError, match="not written by"):
        generate(_tiny(foreign, splits=("train",)))
    assert (foreign / "train" / "my_file.txt").read_text() == "precious"


# ------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_gives_identical_files(tmp_path: Path):
    generate(_tiny(tmp_path / "a", seed=7))
    generate(_tiny(tmp_path / "b", seed=7))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) > 20 and a.keys() == b.keys()
    for name in a:  # PNGs, poses, intrinsics, protocol.json and dataset.json
        assert a[name] == b[name], name
    generate(_tiny(tmp_path / "c", seed=8))
    c = _files(tmp_path / "c")
    assert c["train/000/pose/000000.txt"] != a["train/000/pose/000000.txt"]
    assert c["val/900/pose/000003.txt"] == a["val/900/pose/000003.txt"]  # val spiral is fixed


def test_per_object_rng_does_not_depend_on_selection(tmp_path: Path):
    generate(_tiny(tmp_path / "all", num_objects=3, splits=("train",)))
    generate(_tiny(tmp_path / "one", num_objects=None, object_ids=("2",), splits=("train",)))
    a, b = _files(tmp_path / "all" / "train" / "002"), _files(tmp_path / "one" / "train" / "002")
    assert a == b and len(a) == 9


def test_orientations_add_turned_copies_of_train_objects(tmp_path: Path):
    generate(_tiny(tmp_path / "one", num_objects=2))
    generate(_tiny(tmp_path / "three", num_objects=2, orientations=3))
    one, three = _files(tmp_path / "one"), _files(tmp_path / "three")
    folders = sorted(p.name for p in (tmp_path / "three" / "train").iterdir() if p.is_dir())
    assert folders == ["000", "000r1", "000r2", "001", "001r1", "001r2"]
    record = json.loads((tmp_path / "three" / "dataset.json").read_text())
    assert record["splits"]["train"] == ["000", "000r1", "000r2", "001", "001r1", "001r2"]
    assert record["splits"]["val"] == ["900", "901"]  # val objects are rendered as stored, once
    for name in one:  # the meshes as stored and the val split are the files of --orientations 1
        if name != "dataset.json":
            assert three[name] == one[name], name
    # each copy has its own cameras and its own turn, and neither depends on the selection
    assert three["train/000r1/pose/000000.txt"] != three["train/000/pose/000000.txt"]
    assert three["train/000r1/rgb/000000.png"] != three["train/000r2/rgb/000000.png"]
    generate(_tiny(tmp_path / "alone", num_objects=None, object_ids=("1",), splits=("train",), orientations=3))
    assert _files(tmp_path / "alone" / "train" / "001r2") == _files(tmp_path / "three" / "train" / "001r2")
    angles = [gen.copy_turn_degrees(0, 1, copy) for copy in range(4)]
    assert angles[0] == 0.0 and len(set(angles)) == 4 and all(0.0 <= a < 360.0 for a in angles)


# ------------------------------------------------------------------------------------------------
# reserved objects and argument checks


@pytest.mark.parametrize("token", ["950", "999", "0975", "duck", "teddy_vhacd.urdf", "random_urdfs/960/960.obj",
                                   "bunny.obj"])
def test_reserved_objects_are_refused(tmp_path: Path, token: str):
    with pytest.raises(ReservedObjectError, match="reserved"):
        generate(_tiny(tmp_path, num_objects=None, object_ids=(token,)))
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(ReservedObjectError):
        gen.parse_object_id(token)


def test_reserved_ids_refused_everywhere_and_split_ranges():
    for object_id in (950, 999):
        with pytest.raises(ReservedObjectError):
            gen.load_random_urdf(object_id)
    assert gen.split_of_object(0) == "train" and gen.split_of_object(899) == "train"
    assert gen.split_of_object(900) == "val" and gen.split_of_object(949) == "val"
    with pytest.raises(ValueError, match="does not exist"):
        gen.split_of_object(1000)
    assert gen.parse_object_id("007") == 7 and gen.parse_object_id("random_urdfs/012/012.obj") == 12
    selected = gen._select_objects(GenerateConfig(num_objects=None))
    assert selected["train"] == list(range(900)) and selected["val"] == list(range(900, 950))


def test_cli_refuses_reserved_objects(tmp_path: Path, monkeypatch, capsys):
    with pytest.raises(ReservedObjectError):
        gen.main(["--output-dir", str(tmp_path), "--object-ids", "990", "--no-progress"])
    monkeypatch.setattr("sys.argv", ["nerfdiff-generate-data", "--output-dir", str(tmp_path), "--object-ids",
                                     "12", "955", "--no-progress"])
    with pytest.raises(SystemExit) as info:
        gen.entrypoint()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "955" in err and "reserved" in err and "Traceback" not in err
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("kw, match", [
    (dict(object_ids=("901",), num_objects=None, splits=("train",)), "not in --splits"),
    (dict(input_view_index=5), "input-view-index"),
    (dict(camera_distance=0.9), "camera-distance"),
    (dict(elevation_range_degrees=(-10.0, 90.0)), "elevation"),
    (dict(object_ids=("1",)), "either --num-objects or --object-ids"),
    (dict(orientations=0), "orientations"),
    (dict(orientations=2, source="procedural-chairs"), "random-urdfs only"),
])
def test_invalid_settings(tmp_path: Path, kw: dict, match: str):
    with pytest.raises(ValueError, match=match):
        generate(_tiny(tmp_path, **kw))


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        gen.main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ["--output-dir", "--splits", "--num-objects", "--object-ids", "--views-per-object",
                 "--eval-views-per-object", "--input-view-index", "--resolution", "--fov-degrees",
                 "--camera-distance", "--object-radius", "--elevation-range-degrees", "--light-direction", "--seed",
                 "--overwrite", "--progress", "--orientations"]:
        assert flag in text, flag
    for doc in ["random_urdfs 000-899", "reserved", "fixed input view index", "Vertical field of view",
                "byte-identical"]:
        assert doc in text, doc


# ------------------------------------------------------------------------------------------------
# camera math: rendered pixels agree with the written poses + intrinsics


def test_look_at_and_normalisation():
    c2w = gen.look_at(gen.camera_position(30.0, 20.0, 2.7))
    np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-12)
    assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(-c2w[:3, 2], -c2w[:3, 3] / 2.7, atol=1e-12)  # looks at the origin
    assert c2w[2, 0] == pytest.approx(0.0, abs=1e-12) and c2w[2, 1] > 0  # no roll, +Z up
    asset = gen.load_random_urdf(5)
    centre, scale = gen.normalisation(asset.vertices, 1.0)
    v = scale * (asset.vertices - centre)
    assert np.linalg.norm(v, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(v.min(0) + v.max(0), 0.0, atol=1e-9)  # bbox centred on the origin


def _cube_obj(path: Path, half: float) -> Path:
    verts = list(itertools.product([-half, half], repeat=3))
    faces = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1), (2, 3, 7), (2, 7, 6), (0, 2, 6),
             (0, 6, 4), (1, 5, 7), (1, 7, 3)]
    path.write_text("".join(f"v {a} {b} {c}\n" for a, b, c in verts)
                    + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces))
    return path


def _cube_centroid_errors(tmp_path: Path, pixel_centre_fix: bool) -> np.ndarray:
    """Render a small cube centred at an off-centre world point from 24 cameras; return the per-view
    (du, dv) between its silhouette centroid and the projection of its centre through the
    intrinsics + poses the generator writes."""
    res, point = 64, np.array([0.35, -0.25, 0.3])
    config = GenerateConfig(resolution=res)
    f, cx, cy = gen.intrinsics_for(res, config.fov_degrees)
    c2ws = gen.object_cameras(config, 1, "train")
    obj_path = _cube_obj(tmp_path / "cube.obj", 0.1)
    errors = []
    with gen.TinyRenderer(res, res, config.fov_degrees, *gen._near_far(config),
                          pixel_centre_fix=pixel_centre_fix) as renderer:
        renderer.add_mesh(obj_path, (1.0, 0.0, 0.0, 1.0), scale=1.0, offset=point)
        for c2w in c2ws:
            rgb, mask = renderer.render(c2w)
            assert mask.sum() >= 20  # the cube is several pixels wide
            assert np.all(rgb[~mask] == 255) and np.all(rgb[mask, 0] > rgb[mask, 1])  # red cube on white
            rows, cols = np.nonzero(mask)
            (u, v), = _project(point[None], c2w, (f, f, cx, cy))
            errors.append([cols.mean() + 0.5 - u, rows.mean() + 0.5 - v])
    return np.array(errors)


def test_point_lands_where_written_intrinsics_and_pose_predict(tmp_path: Path):
    errors = _cube_centroid_errors(tmp_path, pixel_centre_fix=True)
    assert np.abs(errors.mean(axis=0)).max() < 0.15  # no systematic offset (sub-pixel)
    assert np.abs(errors).max() < 0.75  # every view within a pixel
    # TinyRenderer on its own samples pixels half a pixel off the centre; the generator corrects it.
    raw = _cube_centroid_errors(tmp_path, pixel_centre_fix=False)
    assert 0.35 < raw[:, 0].mean() < 0.65 and -0.65 < raw[:, 1].mean() < -0.35


@pytest.mark.parametrize("copy", [0, 1])
def test_silhouettes_match_projected_mesh_through_files(tmp_path: Path, copy: int):
    """Render real objects, read the written files back, project the normalised mesh vertices with the
    read pose + intrinsics and compare with the rendered silhouette; for a turned copy (--orientations)
    the vertices are first turned about y by the copy's angle."""
    config = _tiny(tmp_path, splits=("train",), num_objects=None, object_ids=("3", "17"), resolution=32,
                   views_per_object=6, orientations=copy + 1)
    generate(config)
    edge_errors = []
    with gen.TinyRenderer(32, 32, config.fov_degrees, *gen._near_far(config)) as renderer:
        for object_id in (3, 17):
            obj = load_srn_object(tmp_path / "train" / gen.copy_name(f"{object_id:03d}", copy))
            asset = gen.load_random_urdf(object_id)
            turn = gen.copy_turn_degrees(config.seed, object_id, copy)
            images, masks = gen.render_object(renderer, asset, obj.c2w.double().numpy(), config.object_radius, turn)
            # the written PNGs are exactly these renders
            np.testing.assert_array_equal(images, np.round(obj.images.numpy() * 255).astype(np.uint8))
            centre, scale = gen.normalisation(asset.vertices, config.object_radius)
            verts = scale * (asset.vertices - centre) @ rotation_y(turn).T
            for c2w, mask in zip(obj.c2w.double().numpy(), masks):
                uv = _project(verts, c2w, obj.intrinsics)
                rows, cols = np.nonzero(mask)
                # silhouette centroid near the image centre (the object sits at the origin)
                assert abs(cols.mean() + 0.5 - 16) < 6 and abs(rows.mean() + 0.5 - 16) < 6
                # rasterised extent vs projected vertex extent; pixel centres inside the silhouette
                # lie within half a pixel of its edge
                edge_errors.append([cols.min() + 0.5 - uv[:, 0].min(), cols.max() + 0.5 - uv[:, 0].max(),
                                    rows.min() + 0.5 - uv[:, 1].min(), rows.max() + 0.5 - uv[:, 1].max()])
                # every projected vertex falls on (or within a pixel of) the silhouette
                padded = np.pad(mask, 1)
                dilated = np.zeros_like(mask)
                for di, dj in itertools.product((0, 1, 2), repeat=2):
                    dilated |= padded[di:di + 32, dj:dj + 32]
                inside = (uv >= 0).all(1) & (uv < 32).all(1)
                assert inside.all()
                assert dilated[uv[:, 1].astype(int), uv[:, 0].astype(int)].all()
    edge_errors = np.array(edge_errors)
    assert np.abs(edge_errors).max() < 1.6
    # min edges lie inside (+), max edges inside (-), by about half a pixel on average: no shift. (Checked
    # on the meshes as stored: a turned copy can show a spike thinner than a pixel edge-on at one side,
    # which shifts this mean without any error; the wrong turn fails the vertex check above.)
    if copy == 0:
        np.testing.assert_allclose(edge_errors.mean(axis=0), [0.5, -0.5, 0.5, -0.5], atol=0.25)
