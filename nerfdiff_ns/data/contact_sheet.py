"""Contact sheets of a source's objects from the evaluation input view: does it look like its category?

``python -m nerfdiff_ns.data.contact_sheet --source procedural-chairs --resolution 64 --output docs/images/procedural-chairs-64.png``
renders val objects 900-915 (by default) exactly as ``nerfdiff-generate-data`` would write view
``input_view_index`` of the val spiral, and tiles them into one PNG (upscaled with nearest-neighbour
so a 32 px sheet stays readable).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np

from nerfdiff_ns.data.sources import SourceName

__all__ = ["ContactSheetConfig", "contact_sheet", "main"]


@dataclass
class ContactSheetConfig:
    """Tile the input views of some val objects of a source into one PNG."""

    output: Path = Path("contact-sheet.png")
    """PNG to write."""
    source: SourceName = "procedural-chairs"
    """Object source (see nerfdiff-generate-data --source)."""
    object_ids: Tuple[int, ...] = tuple(range(900, 916))
    """Objects to show (reserved ids 950-999 are refused)."""
    resolution: int = 64
    """Rendered image size in pixels (the dataset's --resolution)."""
    view: int = 0
    """View index on the val spiral (the protocol's input view is 0 by default)."""
    eval_views_per_object: int = 24
    """Views on the val spiral (as nerfdiff-generate-data --eval-views-per-object)."""
    columns: int = 8
    """Tiles per row."""
    tile_pixels: int = 128
    """Each tile is upscaled (nearest-neighbour) to this size."""


def contact_sheet(config: ContactSheetConfig) -> np.ndarray:
    """Render the sheet and write it; returns the uint8 image."""
    from PIL import Image

    from nerfdiff_ns.data.camera_rig import camera_rig, near_far
    from nerfdiff_ns.data.generate import GenerateConfig
    from nerfdiff_ns.data.render_pybullet import TinyRenderer, render_object
    from nerfdiff_ns.data.sources import load_asset

    g = GenerateConfig(resolution=config.resolution, eval_views_per_object=config.eval_views_per_object)
    c2w = camera_rig("val", 0, g.seed, g.views_per_object, g.eval_views_per_object, g.elevation_range_degrees,
                     g.camera_distance)[config.view: config.view + 1]
    tiles = []
    with TinyRenderer(g.resolution, g.resolution, g.fov_degrees, *near_far(g.camera_distance, g.object_radius),
                      g.light_direction) as renderer:
        for object_id in config.object_ids:
            images, _ = render_object(renderer, load_asset(config.source, object_id), c2w, g.object_radius)
            tile = Image.fromarray(images[0]).resize((config.tile_pixels, config.tile_pixels), Image.NEAREST)
            tiles.append(np.asarray(tile))
    rows = -(-len(tiles) // config.columns)
    sheet = np.full((rows * config.tile_pixels, config.columns * config.tile_pixels, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, config.columns)
        sheet[r * config.tile_pixels:(r + 1) * config.tile_pixels, c * config.tile_pixels:(c + 1) * config.tile_pixels] = tile
    config.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(config.output)
    return sheet


def main() -> None:
    import tyro

    contact_sheet(tyro.cli(ContactSheetConfig))


if __name__ == "__main__":
    main()
