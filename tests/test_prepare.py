"""Photo preparation (nerfdiff_ns.data.prepare, nerfdiff-prepare, the nerfdiff-image dataparser) on
photos the project makes itself: a random_urdfs object rendered by pybullet's TinyRenderer and
composited off-centre onto 300x200 backgrounds (noisy coloured, cluttered, transparent)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.prepare import TYPICAL_FILL_OF_SPHERE, Framing, prepare_photo, write_prepared

SHIPPED = Path(__file__).resolve().parents[1] / "nerfdiff_ns" / "assets" / "bundle-tiny"
PHOTO_H, PHOTO_W = 200, 300
OFFSET = (160, 40)  # where the 128 px render's top-left corner goes: right of centre, above it


@pytest.fixture(scope="module")
def framing() -> Framing:
    return Framing.from_bundle(SHIPPED)


@pytest.fixture(scope="module")
def render() -> tuple[np.ndarray, np.ndarray]:
    """A real object: random_urdfs 007 (train split) at 128 px, rgb float [H, W, 3] and mask bool."""
    pytest.importorskip("pybullet")
    from nerfdiff_ns.data.generate import TinyRenderer, camera_position, load_random_urdf, look_at, render_object

    with TinyRenderer(128, 128, 45.0, 0.8, 5.7) as renderer:
        images, masks = render_object(renderer, load_random_urdf(7), look_at(camera_position(30.0, 20.0, 2.7))[None])
    return images[0].astype(np.float32) / 255.0, masks[0]


def noisy_background(seed: int = 0) -> np.ndarray:
    """A blue-grey backdrop with a gentle colour gradient and per-pixel noise (a plain wall, photographed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:PHOTO_H, 0:PHOTO_W].astype(np.float32)
    bg = np.stack([0.35 + 0.1 * xx / PHOTO_W, 0.42 + 0.05 * yy / PHOTO_H, 0.62 - 0.08 * yy / PHOTO_H], -1)
    return np.clip(bg + rng.normal(0.0, 0.03, bg.shape), 0, 1).astype(np.float32)


def cluttered_background(seed: int = 1) -> np.ndarray:
    """Many coloured rectangles: a desk, not a backdrop."""
    rng = np.random.default_rng(seed)
    bg = noisy_background(seed)
    for _ in range(40):
        x0, y0 = rng.integers(0, PHOTO_W - 10), rng.integers(0, PHOTO_H - 10)
        w, h = rng.integers(10, 90), rng.integers(10, 70)
        bg[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 1, 3)
    return bg


def composite(render, background: np.ndarray, offset=OFFSET) -> tuple[np.ndarray, np.ndarray]:
    """The render pasted at ``offset`` (may hang over the edge); returns the photo and the true object mask."""
    rgb, mask = render
    photo, truth = background.copy(), np.zeros(background.shape[:2], bool)
    ox, oy = offset
    ys, xs = np.nonzero(mask)
    ty, tx = ys + oy, xs + ox
    keep = (ty >= 0) & (ty < PHOTO_H) & (tx >= 0) & (tx < PHOTO_W)
    photo[ty[keep], tx[keep]] = rgb[ys[keep], xs[keep]]
    truth[ty[keep], tx[keep]] = True
    return photo, truth


def save(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)).save(path)
    return path


def bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def check_framed(prepared, framing: Framing) -> None:
    """Centred within 1 px, longest side within 10 % of the training framing, on the bundle's background."""
    n = framing.resolution
    assert prepared.image.shape == (n, n, 3) and prepared.mask.shape == (n, n)
    # sub-pixel bounding box of the soft mask: where its row/column maxima cross 0.5
    cols, rows = prepared.mask.max(0), prepared.mask.max(1)
    def extent(profile):
        idx = np.nonzero(profile > 0.5)[0]
        return idx.min(), idx.max() + 1
    x0, x1 = extent(cols)
    y0, y1 = extent(rows)
    assert abs((x0 + x1) / 2 - n / 2) <= 1.0 and abs((y0 + y1) / 2 - n / 2) <= 1.0, (x0, x1, y0, y1)
    side = max(x1 - x0, y1 - y0)
    assert abs(side / (framing.target_fill * n) - 1) <= 0.10, (side, framing.target_fill * n)
    background = prepared.mask < 0.5 / 255  # no trace of the object at 8 bits
    assert background.mean() > 0.3
    assert np.abs(prepared.image[background] - np.asarray(framing.background)).max() < 1.5 / 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(1e-10, float(((a - b) ** 2).mean()))))


def test_target_fill_matches_generated_training_views(tmp_path: Path, framing: Framing) -> None:
    """The framing we scale to is the training data's: measured on freshly generated random_urdfs views."""
    pytest.importorskip("pybullet")
    from nerfdiff_ns.data.generate import GenerateConfig, generate

    generate(GenerateConfig(output_dir=tmp_path, splits=("train",), num_objects=12, views_per_object=4,
                            resolution=64, progress=False))
    fills = []
    for png in sorted(tmp_path.glob("train/*/rgb/*.png")):
        mask = (np.asarray(Image.open(png).convert("RGB")) < 250).any(-1)
        x0, y0, x1, y1 = bbox(mask)
        fills.append(max(x1 - x0, y1 - y0) / mask.shape[0])
    assert len(fills) == 48
    assert abs(np.median(fills) / framing.target_fill - 1) < 0.1, (np.median(fills), framing.target_fill)
    # and the bounding-sphere formula alone would overshoot: objects rarely span the full sphere
    assert framing.sphere_fill == pytest.approx(math.tan(math.asin(1 / 2.7)) / math.tan(math.radians(22.5)), rel=1e-4)
    assert framing.target_fill == pytest.approx(TYPICAL_FILL_OF_SPHERE * framing.sphere_fill)


def test_off_centre_object_on_noisy_background_is_centred_and_scaled(tmp_path: Path, render, framing: Framing) -> None:
    photo, truth = composite(render, noisy_background())
    path = save(tmp_path / "photo.png", photo)
    prepared = prepare_photo(path, framing)
    assert "automatic segmentation" in prepared.foreground
    assert prepared.warnings == []
    # the segmentation found the object: its box is the true box within 2 px
    assert np.abs(np.array(prepared.bbox) - np.array(bbox(truth))).max() <= 2
    iou = (prepared.source_mask & truth).sum() / (prepared.source_mask | truth).sum()
    assert iou > 0.9
    check_framed(prepared, framing)
    # the same as preparing the ground-truth cut-out (RGBA with the true alpha)
    rgba = np.concatenate([photo, truth[..., None].astype(np.float32)], -1)
    cut = tmp_path / "cutout.png"
    Image.fromarray(np.clip(rgba * 255 + 0.5, 0, 255).astype(np.uint8), mode="RGBA").save(cut)
    reference = prepare_photo(cut, framing)
    assert psnr(prepared.image, reference.image) > 25
    # camera: the bundle's distance and fov, elevation in the middle of its range
    lo, hi = framing.elevation_range_degrees
    assert prepared.camera == {"fov_degrees": framing.fov_degrees, "distance": framing.distance,
                               "elevation_degrees": pytest.approx((lo + hi) / 2), "azimuth_degrees": 0.0}


def test_jpeg_photo_and_explicit_methods(tmp_path: Path, render, framing: Framing) -> None:
    photo, _ = composite(render, noisy_background(3), offset=(20, 70))
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.clip(photo * 255 + 0.5, 0, 255).astype(np.uint8)).save(path, quality=85)
    for method in ("auto", "grabcut", "border-colour"):
        prepared = prepare_photo(path, framing, segmentation=method)
        assert method.split("-")[0] in prepared.foreground or method == "auto"
        check_framed(prepared, framing)


def test_rgba_uses_its_alpha(tmp_path: Path, render, framing: Framing) -> None:
    photo, truth = composite(render, np.random.default_rng(2).uniform(0, 1, (PHOTO_H, PHOTO_W, 3)).astype(np.float32))
    rgba = np.concatenate([photo, truth[..., None].astype(np.float32)], -1)
    path = tmp_path / "cutout.png"
    Image.fromarray(np.clip(rgba * 255 + 0.5, 0, 255).astype(np.uint8), mode="RGBA").save(path)
    prepared = prepare_photo(path, framing)
    assert prepared.foreground == "the image's alpha channel"
    assert prepared.bbox == bbox(truth)
    assert prepared.warnings == []
    check_framed(prepared, framing)  # the random colours under the transparent pixels never show
    # a --mask next to a real alpha is ignored, and the user is told
    mask = save(tmp_path / "mask.png", np.ones((PHOTO_H, PHOTO_W, 3), np.float32))
    assert any("--mask" in w and "ignored" in w for w in prepare_photo(path, framing, mask).warnings)
    # an alpha channel that is opaque everywhere carries no mask: segmentation runs instead
    opaque = np.concatenate([composite(render, noisy_background())[0], np.ones((PHOTO_H, PHOTO_W, 1), np.float32)], -1)
    opaque_path = tmp_path / "opaque.png"
    Image.fromarray(np.clip(opaque * 255 + 0.5, 0, 255).astype(np.uint8), mode="RGBA").save(opaque_path)
    assert "segmentation" in prepare_photo(opaque_path, framing).foreground


def test_cluttered_photo_with_mask(tmp_path: Path, render, framing: Framing) -> None:
    photo, truth = composite(render, cluttered_background())
    path = save(tmp_path / "desk.png", photo)
    mask_path = save(tmp_path / "desk_mask.png", np.repeat(truth[..., None], 3, -1).astype(np.float32))
    prepared = prepare_photo(path, framing, mask_path)
    assert prepared.foreground == "the mask desk_mask.png"
    assert prepared.warnings == []
    check_framed(prepared, framing)
    # a mask of another size is refused, naming the mask
    small = save(tmp_path / "small_mask.png", np.ones((20, 30, 3), np.float32))
    with pytest.raises(DataError, match="small_mask.png.*same size"):
        prepare_photo(path, framing, small)
    with pytest.raises(DataError, match="missing_mask.png: mask not found"):
        prepare_photo(path, framing, tmp_path / "missing_mask.png")


def test_every_warning(tmp_path: Path, render, framing: Framing) -> None:
    # cluttered background and no mask
    photo, _ = composite(render, cluttered_background())
    warnings = prepare_photo(save(tmp_path / "desk.png", photo), framing).warnings
    assert any("background is not uniform" in w and "--mask" in w for w in warnings)
    # object cut by the right border
    photo, _ = composite(render, noisy_background(), offset=(230, 40))
    prepared = prepare_photo(save(tmp_path / "cut.png", photo), framing)
    assert any("touches the right border" in w for w in prepared.warnings), prepared.warnings
    # a mask that covers almost nothing / almost everything
    plain = save(tmp_path / "plain.png", noisy_background())
    tiny = np.zeros((PHOTO_H, PHOTO_W, 3), np.float32)
    tiny[100:104, 100:104] = 1
    assert any("almost nothing" in w for w in prepare_photo(plain, framing, save(tmp_path / "tiny.png", tiny)).warnings)
    full = np.ones((PHOTO_H, PHOTO_W, 3), np.float32)
    full[:5, :5] = 0
    full_warnings = prepare_photo(plain, framing, save(tmp_path / "full.png", full)).warnings
    assert any("almost everything" in w for w in full_warnings)
    assert any("touches" in w for w in full_warnings)
    # an elevation outside the bundle's range
    photo, _ = composite(render, noisy_background())
    assert any("outside the bundle's training range" in w
               for w in prepare_photo(save(tmp_path / "p.png", photo), framing, elevation_degrees=85).warnings)
    # an empty mask is an error, not a warning
    with pytest.raises(DataError, match="empty.png.*no object found"):
        prepare_photo(plain, framing, save(tmp_path / "empty.png", np.zeros((PHOTO_H, PHOTO_W, 3), np.float32)))


def test_write_prepared_and_prepare_again_is_identity(tmp_path: Path, render, framing: Framing) -> None:
    photo, _ = composite(render, noisy_background())
    prepared = prepare_photo(save(tmp_path / "photo.png", photo), framing)
    files = write_prepared(prepared, tmp_path / "out", stem="photo")
    assert sorted(p.name for p in files.values()) == ["photo_camera.json", "photo_image.png", "photo_mask.png", "photo_preview.png"]
    preview = np.asarray(Image.open(files["preview.png"]))
    assert preview.shape[1] > 256 + 256 and preview.shape[2] == 3
    assert json.loads(files["camera.json"].read_text()) == prepared.camera
    saved = np.asarray(Image.open(files["image.png"]), np.float32) / 255
    again = prepare_photo(files["image.png"], framing)  # ns-train on a prepared image, --prepare left on
    assert np.abs(again.image - saved).max() < 1e-6  # already framed, on the background: pixels kept as they are
    assert again.warnings == [] and not again.reframed and prepared.reframed
    with_mask = prepare_photo(files["image.png"], framing, files["mask.png"])
    assert with_mask.crop == (0.0, 0.0, float(framing.resolution))  # not resampled either
    # intrinsics of the original photo follow the crop: the object's centre lands on the frame centre
    cx = (prepared.bbox[0] + prepared.bbox[2]) / 2
    cy = (prepared.bbox[1] + prepared.bbox[3]) / 2
    fx, fy, px, py = prepared.transform_intrinsics(300.0, 300.0, cx, cy)
    assert px == pytest.approx(framing.resolution / 2) and py == pytest.approx(framing.resolution / 2)
    assert fx == pytest.approx(300.0 * prepared.scale)


def test_generated_view_is_kept_as_it_is(framing: Framing) -> None:
    """The shipped example (a generated 32 px view) already looks like training data: not resampled."""
    example = SHIPPED.parent / "examples" / "904_input.png"
    prepared = prepare_photo(example, framing, elevation_degrees=-10.0)
    assert not prepared.reframed and prepared.warnings == []  # -10 is the generator's nominal lower end
    assert np.abs(prepared.image - np.asarray(Image.open(example).convert("RGB"), np.float32) / 255).max() < 1e-6


def test_dataparser_trains_on_the_prepared_image(tmp_path: Path, render, framing: Framing) -> None:
    import torch

    from nerfdiff_ns.data.dataparsers import SingleImageDataParserConfig
    from nerfdiff_ns.data.images import load_rgb

    photo, _ = composite(render, noisy_background())
    path = save(tmp_path / "photo.png", photo)
    parser = SingleImageDataParserConfig(data=path, bundle=SHIPPED, cache_dir=tmp_path / "cache", elevation_degrees=30.0).setup()
    out = parser.get_dataparser_outputs("train")
    n = framing.resolution
    prepared_png = Path(out.image_filenames[0])
    assert prepared_png.parent.parent == tmp_path / "cache" and Image.open(prepared_png).size == (n, n)
    assert int(out.cameras.width) == n and int(out.cameras.height) == n
    focal = (n / 2) / math.tan(math.radians(framing.fov_degrees) / 2)
    assert out.metadata["nerfdiff_input_intrinsics"].tolist() == pytest.approx([focal, focal, n / 2, n / 2], rel=1e-5)
    assert torch.equal(out.metadata["nerfdiff_input_image"], load_rgb(prepared_png, framing.background))
    position = out.cameras.camera_to_worlds[0, :3, 3]
    assert float(position.norm()) == pytest.approx(framing.distance, rel=1e-5)
    assert math.degrees(math.asin(float(position[2] / position.norm()))) == pytest.approx(30.0, abs=1e-3)
    assert parser.prepared_files["preview.png"].is_file()
    assert json.loads(parser.prepared_files["camera.json"].read_text())["elevation_degrees"] == 30.0  # the camera used
    # a camera file with the original photo's pixel intrinsics: they follow the crop and scale
    cam = tmp_path / "cam.json"
    cam.write_text(json.dumps({"fx": 400.0, "fy": 400.0, "cx": 150.0, "cy": 100.0}))
    out = SingleImageDataParserConfig(data=path, bundle=SHIPPED, cache_dir=tmp_path / "cache", camera_file=cam).setup().get_dataparser_outputs("train")
    fx, fy, cx, cy = out.metadata["nerfdiff_input_intrinsics"].tolist()
    assert (fx, fy, cx, cy) == pytest.approx(parser.prepared.transform_intrinsics(400.0, 400.0, 150.0, 100.0), rel=1e-5)
    # --prepare False: the photo as it is, full size
    raw = SingleImageDataParserConfig(data=path, bundle=SHIPPED, prepare=False).setup().get_dataparser_outputs("train")
    assert Path(raw.image_filenames[0]) == path and int(raw.cameras.width) == PHOTO_W


def test_the_mask_loss_gets_the_photos_own_mask(tmp_path: Path, render, framing: Framing) -> None:
    """A white patch on an object photographed on white: the background-colour test calls it background, the
    photo's alpha (prepared or used as it is) keeps it on the object, and that is what the datamanager samples."""
    import torch
    from types import SimpleNamespace

    from nerfdiff_ns.data.dataparsers import SingleImageDataParserConfig
    from nerfdiff_ns.datamanager import NerfDiffDataManager, NerfDiffDataManagerConfig, foreground_mask

    photo, truth = composite(render, np.ones((PHOTO_H, PHOTO_W, 3), np.float32))
    ys, xs = np.nonzero(truth)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    photo[cy - 12 : cy + 12, cx - 12 : cx + 12] = 1.0  # white paint, inside the object
    truth[cy - 12 : cy + 12, cx - 12 : cx + 12] = True
    rgba = np.concatenate([photo, truth[..., None].astype(np.float32)], -1)
    path = tmp_path / "white-on-white.png"
    Image.fromarray(np.clip(rgba * 255 + 0.5, 0, 255).astype(np.uint8), mode="RGBA").save(path)
    bg = torch.tensor(framing.background, dtype=torch.float32)

    for prepare in (True, False):
        parser = SingleImageDataParserConfig(data=path, bundle=SHIPPED, cache_dir=tmp_path / "cache", prepare=prepare).setup()
        out = parser.get_dataparser_outputs("train")
        mask, image = out.metadata["nerfdiff_input_mask"], out.metadata["nerfdiff_input_image"]
        assert mask.shape == (*image.shape[:2], 1)
        expected = parser.prepared.mask if prepare else truth.astype(np.float32)
        assert np.abs(mask[..., 0].numpy() - expected).max() < 1e-6
        hidden = (mask[..., 0] > 0.99) & (foreground_mask(image, bg)[..., 0] == 0)  # object pixels of the background colour
        assert int(hidden.sum()) >= (500 if not prepare else 8)  # the 24 px patch: 576 px as it is, 12 px at 32 px

        holder = SimpleNamespace(config=NerfDiffDataManagerConfig(), train_dataset=SimpleNamespace(
            metadata=out.metadata, _dataparser_outputs=out, cameras=out.cameras))
        NerfDiffDataManager.setup_train(holder)
        assert torch.equal(holder.input_pixels[..., 3:], mask)

    # an RGB photo carries no mask: the datamanager falls back to the background-colour test
    rgb_path = save(tmp_path / "plain.png", photo)
    out = SingleImageDataParserConfig(data=rgb_path, bundle=SHIPPED, prepare=False).setup().get_dataparser_outputs("train")
    assert "nerfdiff_input_mask" not in out.metadata


def test_prepare_cli(tmp_path: Path, render) -> None:
    from nerfdiff_ns.data.dataparsers import read_camera_file
    from nerfdiff_ns.prepare import entrypoint

    photo, _ = composite(render, cluttered_background())
    path = save(tmp_path / "desk.jpg", photo)
    entrypoint([str(path), "--output-dir", str(tmp_path / "prepared"), "--elevation-degrees", "15"])
    names = sorted(p.name for p in (tmp_path / "prepared").iterdir())
    assert names == ["desk_camera.json", "desk_image.png", "desk_mask.png", "desk_preview.png"]
    assert read_camera_file(tmp_path / "prepared" / "desk_camera.json")["elevation_degrees"] == 15.0
    assert Image.open(tmp_path / "prepared" / "desk_image.png").size == (32, 32)


def test_ns_train_saves_the_preview_and_runs_at_bundle_resolution(tmp_path: Path, render) -> None:
    """A 300x200 photo through ns-train: prepared to 32 px, preview in the run's output folder."""
    photo, _ = composite(render, noisy_background())
    path = save(tmp_path / "photo.png", photo)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "NERFDIFF_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ns-train"), "nerfdiff-tiny", "--vis", "tensorboard", "--output-dir",
         str(tmp_path / "out"), "--experiment-name", "photo", "--pipeline.ngd.mode", "feed-forward",
         "--max-num-iterations", "2", "--steps-per-save", "2", "--pipeline.datamanager.train-num-rays-per-batch", "64",
         "nerfdiff-image", "--data", str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    prepared = next((tmp_path / "out").glob("photo/nerfdiff-tiny/*/prepared"))
    assert sorted(p.name for p in prepared.iterdir()) == ["photo_camera.json", "photo_image.png", "photo_mask.png", "photo_preview.png"]
    assert Image.open(prepared / "photo_image.png").size == (32, 32)
    assert "preview" in proc.stdout


def test_phone_photo_orientation_and_grey_16_bit(tmp_path: Path, render, framing: Framing) -> None:
    """EXIF orientation is applied (phones store photos sideways); 16-bit grey images prepare too."""
    photo, truth = composite(render, noisy_background())
    path = tmp_path / "sideways.jpg"
    stored = Image.fromarray(np.clip(np.rot90(photo, k=1) * 255 + 0.5, 0, 255).astype(np.uint8))  # stored rotated 90 CCW
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(path, quality=95, exif=exif)
    prepared = prepare_photo(path, framing)
    assert prepared.source_rgb.shape[:2] == (PHOTO_H, PHOTO_W)
    assert np.abs(np.array(prepared.bbox) - np.array(bbox(truth))).max() <= 3
    grey = (photo.mean(-1) * 65535).astype(np.uint16)
    grey_path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(grey_path)
    check_framed(prepare_photo(grey_path, framing), framing)


def test_large_photos_are_segmented_at_a_bounded_size(render) -> None:
    """Phone photos are segmented downscaled (GrabCut on 12 MP is minutes); the mask comes back at full size."""
    from nerfdiff_ns.data.segment import segment

    photo, truth = composite(render, noisy_background())
    full, method, _ = segment(photo, "auto")
    small, small_method, _ = segment(photo, "auto", max_side=120)
    assert small.shape == truth.shape and small_method == method
    assert (small & truth).sum() / (small | truth).sum() > 0.85
    assert (full & truth).sum() / (full | truth).sum() > 0.9
