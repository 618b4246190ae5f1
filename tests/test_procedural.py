"""Procedural sources of nerfdiff-generate-data (procedural-chairs / -tables / -mugs): determinism from the
id, the reserved split, geometry (unit sphere, mirror symmetry), per-part colours in the rendered views and
the written folders read back through the SRN reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("trimesh")

from scipy.spatial import cKDTree  # noqa: E402

from nerfdiff_ns.data import generate as gen  # noqa: E402
from nerfdiff_ns.data.contact_sheet import ContactSheetConfig, contact_sheet  # noqa: E402
from nerfdiff_ns.data.generate import GenerateConfig, ReservedObjectError, generate  # noqa: E402
from nerfdiff_ns.data.multiview import MultiViewDataset, load_object_folder  # noqa: E402
from nerfdiff_ns.data.render_pybullet import TinyRenderer, load_scene  # noqa: E402
from nerfdiff_ns.data.sources import SOURCES, load_asset  # noqa: E402
from nerfdiff_ns.data.sources.chairs import STYLES as CHAIR_STYLES  # noqa: E402
from nerfdiff_ns.data.sources.chairs import make_chair  # noqa: E402
from nerfdiff_ns.data.sources.parts import asset_normalisation  # noqa: E402
from nerfdiff_ns.data.sources.primitives import rotation_z  # noqa: E402

PROCEDURAL = [name for name in SOURCES if name.startswith("procedural-")]
SAMPLE_IDS = list(range(0, 60)) + list(range(900, 950, 5))


def _tiny(root: Path, source: str = "procedural-chairs", **kw) -> GenerateConfig:
    base = dict(output_dir=root, source=source, num_objects=2, views_per_object=4, eval_views_per_object=6,
                resolution=32, progress=False)
    base.update(kw)
    return GenerateConfig(**base)


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# determinism and the split rule


@pytest.mark.parametrize("source", PROCEDURAL)
def test_same_id_gives_the_same_mesh_bit_for_bit(source: str):
    for object_id in (0, 417, 903):
        a, b = load_asset(source, object_id), load_asset(source, object_id)
        assert [p.name for p in a.parts] == [p.name for p in b.parts] and a.params == b.params
        for pa, pb in zip(a.parts, b.parts):
            assert pa.vertices.tobytes() == pb.vertices.tobytes() and pa.faces.tobytes() == pb.faces.tobytes()
            assert pa.rgba == pb.rgba
    # different ids give different objects (shape parameters are drawn per id)
    params = [json.dumps(load_asset(source, i).params, sort_keys=True, default=str) for i in range(20)]
    assert len(set(params)) == 20


def test_source_choices_match_the_registry():
    from typing import get_args

    from nerfdiff_ns.data.sources import SourceName

    assert set(get_args(SourceName)) == set(SOURCES)


def test_grammar_covers_every_chair_style_and_varies_shape():
    chairs = [make_chair(i) for i in range(200)]
    styles = {c.params["style"] for c in chairs}
    assert styles == set(CHAIR_STYLES)
    side = [c.params for c in chairs if c.params["style"] == "side"]
    assert {p["back"] for p in side} == {"panel", "slats", "rails", "crest"}
    assert {p["legs"] for p in side} == {"four", "sled"} and any(p["arms"] for p in side)
    assert {p["stretchers"] for p in side} == {"none", "H", "box"}
    seat_widths = np.array([p["seat"][0] for p in side])
    assert seat_widths.std() > 0.03  # sizes vary continuously, not among a few presets


def test_generated_files_do_not_depend_on_selection_or_seed_for_shape(tmp_path: Path):
    generate(_tiny(tmp_path / "all", num_objects=3, splits=("train",)))
    generate(_tiny(tmp_path / "one", num_objects=None, object_ids=("2",), splits=("train",)))
    a, b = _files(tmp_path / "all" / "train" / "002"), _files(tmp_path / "one" / "train" / "002")
    assert a == b and len(a) == 9
    generate(_tiny(tmp_path / "again", num_objects=3, splits=("train",)))
    assert _files(tmp_path / "all") == _files(tmp_path / "again")  # byte-identical rerun
    # the val spiral is fixed, so the same id renders to the same pixels whatever --seed
    generate(_tiny(tmp_path / "s1", splits=("val",), num_objects=1, seed=1))
    generate(_tiny(tmp_path / "s2", splits=("val",), num_objects=1, seed=2))
    assert _files(tmp_path / "s1" / "val" / "900") == _files(tmp_path / "s2" / "val" / "900")


@pytest.mark.parametrize("source", PROCEDURAL)
@pytest.mark.parametrize("token", ["950", "999", "0975"])
def test_reserved_ids_are_refused(tmp_path: Path, source: str, token: str):
    with pytest.raises(ReservedObjectError, match="reserved"):
        generate(_tiny(tmp_path, source=source, num_objects=None, object_ids=(token,)))
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(ReservedObjectError, match=source):
        load_asset(source, int(token))
    with pytest.raises(ReservedObjectError):
        SOURCES[source].load(int(token))  # the builders refuse them too, not only the CLI


def test_split_ranges_and_bad_ids_for_procedural_sources(tmp_path: Path):
    out = generate(_tiny(tmp_path, num_objects=None, object_ids=("899", "900", "949"), views_per_object=2,
                         eval_views_per_object=2, resolution=16))
    assert {s: [p.name for p in f] for s, f in out.items()} == {"train": ["899"], "val": ["900", "949"]}
    with pytest.raises(ValueError, match="not a procedural-chairs object id") as info:
        generate(_tiny(tmp_path / "x", num_objects=None, object_ids=("duck",)))
    assert not isinstance(info.value, ReservedObjectError)
    with pytest.raises(ValueError, match="does not exist"):
        load_asset("procedural-mugs", 1000)
    with pytest.raises(ValueError, match="unknown --source"):
        load_asset("procedural-sofas", 3)


def test_cli_source_flag_refuses_reserved(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["nerfdiff-generate-data", "--source", "procedural-chairs", "--output-dir",
                                     str(tmp_path), "--object-ids", "12", "955", "--no-progress"])
    with pytest.raises(SystemExit) as info:
        gen.entrypoint()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "procedural-chairs object 955" in err and "reserved" in err and "Traceback" not in err
    assert not (tmp_path / "train").exists()
    # each source has its own default folder, so generating one never replaces another's data
    assert gen.default_output_dir("procedural-chairs") == Path("data/procedural-chairs-srn")
    assert gen.default_output_dir("random-urdfs") == Path("data/urdf-srn")
    with pytest.raises(SystemExit):
        gen.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for word in ["--source", "procedural-chairs", "procedural-tables", "procedural-mugs", "procedural-cars",
                 "random-urdfs",
                 "mirror symmetric"]:
        assert word in text, word


# ------------------------------------------------------------------------------------------------
# geometry


def _normalised(asset) -> np.ndarray:
    centre, scale = asset_normalisation(asset, 1.0)
    return scale * (asset.vertices - centre)


@pytest.mark.parametrize("source", PROCEDURAL)
def test_objects_fit_the_unit_sphere_and_are_mirror_symmetric(source: str):
    for object_id in SAMPLE_IDS:
        asset = load_asset(source, object_id)
        v = _normalised(asset)
        norms = np.linalg.norm(v, axis=1)
        assert norms.max() == pytest.approx(1.0) and np.all(norms <= 1.0 + 1e-12)
        local = v @ rotation_z(asset.yaw_degrees)  # back to the object frame (+X front, plane y = 0)
        np.testing.assert_allclose(local.min(0) + local.max(0), 0.0, atol=1e-12)  # bbox centred on the origin
        assert v[:, 2].min() == pytest.approx(-(v[:, 2].max() - v[:, 2].min()) / 2)  # floor at the bottom
        # the vertex set maps onto itself under the reflection across the designed mirror plane
        n = np.asarray(asset.mirror_normal)
        reflected = v - 2.0 * (v @ n)[:, None] * n
        dist, _ = cKDTree(v).query(reflected)
        assert dist.max() < 1e-9, (source, object_id, dist.max())
        # and the plane is a real constraint: a reflection across a perpendicular vertical plane is not
        # (chairs have a front and a back, mugs one handle; some tables are symmetric both ways)
        m = np.cross(n, [0.0, 0.0, 1.0])
        if source != "procedural-tables":
            dist_other, _ = cKDTree(v).query(v - 2.0 * (v @ m)[:, None] * m)
            assert dist_other.max() > 1e-3
        # every part is a closed-looking solid with valid faces
        for part in asset.parts:
            assert part.faces.min() >= 0 and part.faces.max() < len(part.vertices)
        assert len({p.rgba for p in asset.parts}) >= 2  # more than one part colour


# ------------------------------------------------------------------------------------------------
# rendering and reading back


@pytest.mark.parametrize("source, min_multi_colour", [("procedural-chairs", 0.8), ("procedural-tables", 0.8),
                                                      ("procedural-cars", 0.8), ("procedural-mugs", 0.3)])
def test_rendered_views_show_several_part_colours_on_white(source: str, min_multi_colour: float):
    """Chairs and tables show two or more part colours from nearly every view; a mug often has one
    body colour, its inside, band or handle showing from some views."""
    config = GenerateConfig(resolution=32, views_per_object=8)
    with TinyRenderer(32, 32, config.fov_degrees, *gen._near_far(config), config.light_direction) as renderer:
        multi_colour_views = []
        for object_id in (3, 7, 11, 901):
            colours = load_scene(renderer, load_asset(source, object_id), config.object_radius)
            for c2w in gen.object_cameras(config, object_id, "train"):
                rgb, body = renderer.render_bodies(c2w)
                fg = body >= 0
                assert 0.02 < fg.mean() < 0.9  # the object is there, and it fits in the image
                assert np.all(rgb[~fg] == 255)  # white background
                border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]])
                assert not border.any()  # the unit sphere fits the field of view
                # pixels grouped by the colour of the part they show (parts of one colour share bodies)
                groups: dict = {}
                for b in np.unique(body[fg]):
                    groups.setdefault(colours[b], []).append(body == b)
                visible = {c: np.any(masks, axis=0) for c, masks in groups.items()}
                visible = {c: m for c, m in visible.items() if m.sum() >= 3}
                multi_colour_views.append(len(visible) >= 2)
                if len(visible) >= 2:  # the image really shows different colours there, not one lit colour
                    means = [rgb[m].mean(axis=0) for m in visible.values()]
                    assert max(np.abs(a - b).max() for a in means for b in means) > 20
    assert np.mean(multi_colour_views) >= min_multi_colour, np.mean(multi_colour_views)


def test_output_reads_back_through_the_srn_reader(tmp_path: Path):
    out = generate(_tiny(tmp_path, source="procedural-chairs", input_view_index=2))
    assert {s: [p.name for p in f] for s, f in out.items()} == {"train": ["000", "001"], "val": ["900", "901"]}
    obj = load_object_folder(tmp_path / "val" / "901")
    assert obj.images.shape == (6, 32, 32, 3) and obj.c2w.shape == (6, 4, 4)
    images = obj.images.numpy()
    assert np.all(images[:, 0, :] == 1.0) and np.all(images[:, :, 0] == 1.0)  # white background on the border
    assert (images < 0.98).any(-1).mean() > 0.05  # a non-empty object
    np.testing.assert_allclose(np.linalg.norm(obj.c2w[:, :3, 3].numpy(), axis=1), 2.7, atol=1e-5)
    dataset = MultiViewDataset(out["val"], num_target_views=3, source_view=2)
    item = dataset[1]
    assert item["source_view"] == 2 and item["target_images"].shape == (3, 32, 32, 3)
    assert 2 not in item["target_views"].tolist()
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["settings"]["source"] == "procedural-chairs" and "procedural chairs" in meta["source"]
    protocol = json.loads((tmp_path / "val" / "protocol.json").read_text())
    assert protocol["source"] == "procedural-chairs" and protocol["input_view_index"] == 2
    assert protocol["camera_layout"] == "spiral" and protocol["object_ids"] == ["900", "901"]


def test_sources_are_not_mixed_in_one_dataset(tmp_path: Path):
    generate(_tiny(tmp_path, source="random-urdfs", splits=("train",), num_objects=1, resolution=16))
    with pytest.raises(ValueError, match="another --source"):
        generate(_tiny(tmp_path, source="procedural-chairs", splits=("val",), num_objects=1, resolution=16))
    # a dataset.json written before --source existed counts as random-urdfs
    meta = json.loads((tmp_path / "dataset.json").read_text())
    del meta["settings"]["source"]
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    generate(_tiny(tmp_path, source="random-urdfs", splits=("val",), num_objects=1, resolution=16))
    assert json.loads((tmp_path / "dataset.json").read_text())["splits"] == {"train": ["000"], "val": ["900"]}


def test_contact_sheet_tiles_the_input_views(tmp_path: Path):
    path = tmp_path / "sheet.png"
    sheet = contact_sheet(ContactSheetConfig(output=path, object_ids=(900, 901, 902), resolution=16, columns=2,
                                             tile_pixels=32))
    assert path.is_file() and sheet.shape == (64, 64, 3)
    # tile 0 is exactly view 0 of object 900 as the generator writes it (upscaled 2x)
    generate(_tiny(tmp_path / "d", splits=("val",), num_objects=1, resolution=16))
    written = np.round(load_object_folder(tmp_path / "d" / "val" / "900").images[0].numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(sheet[:32:2, :32:2], written)
    assert np.all(sheet[32:, 32:] == 255)  # the empty fourth tile
    with pytest.raises(ReservedObjectError):
        contact_sheet(ContactSheetConfig(output=path, object_ids=(960,), resolution=16))
