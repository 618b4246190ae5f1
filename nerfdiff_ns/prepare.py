"""``nerfdiff-prepare``: prepare a photo of one object the way the bundle was trained, and show it.

Finds the object (the image's alpha, else --mask, else an offline segmentation), crops, recentres
and scales it to the training framing, pads it to a square on the bundle's background and resizes
it to the bundle's resolution. Writes the prepared image, its mask, a camera JSON (the
``nerfdiff-image --camera-file`` format) and a side-by-side preview PNG, and prints warnings a
user can act on. ``ns-train ... nerfdiff-image --data photo.jpg`` runs the same preparation itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from nerfdiff_ns.data.segment import Segmentation


@dataclass
class PrepareConfig:
    """Prepare a photo of one object for NerfDiff; check the preview before training."""

    image: tyro.conf.Positional[Path]
    """The photo (PNG/JPG/...; RGBA cut-outs use their alpha as the mask)."""
    output_dir: Path = Path("prepared")
    """Where <stem>_image.png, <stem>_mask.png, <stem>_camera.json and <stem>_preview.png go."""
    bundle: Optional[Path] = None
    """Bundle whose framing (resolution, background, camera distance and fov) is matched (default: the shipped tiny bundle)."""
    mask: Optional[Path] = None
    """Foreground mask of the same size as the photo (white = object), used when the photo has no alpha."""
    segmentation: Segmentation = "auto"
    """Used without alpha or --mask: auto (border colour on a plain backdrop, else GrabCut), grabcut, border-colour, or rembg (only if installed; it downloads its model on first use)."""
    elevation_degrees: Optional[float] = None
    """Camera elevation of the photo above the object's horizon (default: the middle of the bundle's training range)."""
    fill: Optional[float] = None
    """Longest object side as a share of the frame (default: the training data's typical framing)."""


def run(cfg: PrepareConfig) -> dict[str, Path]:
    from nerfdiff_ns.data.prepare import Framing, check_elevation, check_fill, prepare_photo, write_prepared

    check_fill(cfg.fill)  # before the bundle is read
    check_elevation(cfg.elevation_degrees)
    # the shipped bundle (as nerfdiff_ns.data.dataparsers.default_bundle_path, without importing nerfstudio)
    bundle = cfg.bundle or Path(__file__).resolve().parent / "assets" / "bundle-tiny"
    framing = Framing.from_bundle(bundle, fill=cfg.fill)
    prepared = prepare_photo(cfg.image, framing, cfg.mask, cfg.segmentation, cfg.elevation_degrees)
    paths = write_prepared(prepared, cfg.output_dir, stem=Path(cfg.image).stem)
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731  (stdout stays free for scripts)
    say(f"nerfdiff-prepare: {prepared.summary()}")
    for warning in prepared.warnings:
        say(f"nerfdiff-prepare: warning: {warning}")
    say(f"nerfdiff-prepare: preview: {paths['preview.png']}")
    model_flag = f" --pipeline.model.bundle {cfg.bundle}" if cfg.bundle else ""
    say(f"nerfdiff-prepare: train on it: ns-train nerfdiff-tiny{model_flag} nerfdiff-image --data "
                  f"{paths['image.png']} --camera-file {paths['camera.json']} --prepare False")
    return paths


def entrypoint(argv: Optional[list[str]] = None) -> None:
    description = "\n\n".join(" ".join(part.split()) for part in (__doc__ or "").split("\n\n"))  # reflowed paragraphs
    run(tyro.cli(PrepareConfig, args=sys.argv[1:] if argv is None else argv, description=description, prog="nerfdiff-prepare"))


if __name__ == "__main__":
    entrypoint()
