"""Make the three example inputs of the README's "Your own photo" section (what a user would bring):

* ``cutout.png``: an RGBA cut-out (soft alpha edges), the object off-centre in a 320x320 canvas;
* ``photo.jpg``: a 300x200 JPEG of an object on a plain grey backdrop, with vignetting, a soft
  shadow and sensor noise;
* ``desk.png`` + ``desk_mask.png``: the object on a cluttered desk, with a hand-made mask.

The objects are random_urdfs train-split meshes rendered by pybullet's TinyRenderer (never the
reserved 950-999). Usage: ``python scripts/prepare_examples.py OUTPUT_DIR``, then
``nerfdiff-prepare OUTPUT_DIR/photo.jpg --output-dir prepared/`` and so on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from nerfdiff_ns.data.generate import TinyRenderer, camera_position, load_random_urdf, look_at, render_object


def render(object_id: int, size: int, azimuth: float, elevation: float) -> tuple[np.ndarray, np.ndarray]:
    """RGB float and a soft alpha: rendered at 2x and averaged down (antialiased edges, like a photo)."""
    with TinyRenderer(2 * size, 2 * size, 45.0, 0.8, 5.7) as renderer:
        images, masks = render_object(renderer, load_random_urdf(object_id), look_at(camera_position(azimuth, elevation, 2.7))[None])
    alpha = cv2.resize(masks[0].astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    premultiplied = cv2.resize(images[0].astype(np.float32) / 255 * masks[0][..., None], (size, size), interpolation=cv2.INTER_AREA)
    rgb = premultiplied / np.maximum(alpha[..., None], 1e-6)
    return np.clip(rgb, 0, 1), alpha


def paste(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> np.ndarray:
    out = canvas.copy()
    h, w = alpha.shape
    a = alpha[..., None]
    out[y : y + h, x : x + w] = rgb * a + out[y : y + h, x : x + w] * (1 - a)
    return out


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    # 1. RGBA cut-out, off-centre (bottom right), transparent elsewhere
    rgb, alpha = render(12, 180, 40.0, 25.0)
    canvas_rgb, canvas_a = np.zeros((320, 320, 3), np.float32), np.zeros((320, 320), np.float32)
    canvas_rgb[120:300, 110:290], canvas_a[120:300, 110:290] = rgb, alpha
    Image.fromarray(np.concatenate([to_u8(canvas_rgb), to_u8(canvas_a)[..., None]], -1), mode="RGBA").save(out / "cutout.png")

    # 2. a photo on a plain grey backdrop: vignetting, a soft contact shadow, noise, JPEG
    h, w = 200, 300
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1 - 0.25 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    backdrop = np.stack([0.60 * vignette, 0.60 * vignette, 0.62 * vignette], -1)
    rgb, alpha = render(40, 120, 110.0, 15.0)
    x, y = 40, 45
    shadow = np.zeros((h, w), np.float32)
    cv2.ellipse(shadow, (x + 60, y + 100), (50, 10), 0, 0, 360, 1.0, -1)
    backdrop *= 1 - 0.35 * cv2.GaussianBlur(shadow, (0, 0), 6)[..., None]
    photo = paste(backdrop, rgb, alpha, x, y) + rng.normal(0, 0.015, (h, w, 3))
    Image.fromarray(to_u8(photo)).save(out / "photo.jpg", quality=85)

    # 3. the object on a cluttered desk, and its mask
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grain = 0.06 * np.sin(xx / 7 + 3 * np.sin(yy / 40)) + rng.normal(0, 0.02, (h, w))
    desk = np.stack([0.55 + grain, 0.38 + grain, 0.22 + grain], -1)
    for _ in range(14):  # books, papers, a mug: rectangles and discs of many colours
        colour = rng.uniform(0.05, 0.95, 3)
        if rng.uniform() < 0.7:
            x0, y0 = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
            desk[y0 : y0 + int(rng.integers(25, 110)), x0 : x0 + int(rng.integers(25, 140))] = colour
        else:
            cv2.circle(desk, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(12, 40)), colour.tolist(), -1)
    rgb, alpha = render(77, 150, 200.0, 30.0)
    x, y = 170, 60
    photo = paste(desk, rgb, alpha, x, y)
    mask = np.zeros((h, w), np.float32)
    mask[y : y + 150, x : x + 150] = alpha
    Image.fromarray(to_u8(photo)).save(out / "desk.png")
    Image.fromarray(to_u8(mask)).save(out / "desk_mask.png")
    print(f"wrote {out}/cutout.png, photo.jpg, desk.png, desk_mask.png")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples-in"))
