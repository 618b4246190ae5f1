"""nerfstudio dataparsers: one photo (``nerfdiff-image``, prepared to the bundle's framing by
:mod:`nerfdiff_ns.data.prepare` unless ``--prepare False``) or one SRN object with an input-view index
(``nerfdiff-srn-object``, the SRN evaluation protocol: every other view is an evaluation view).

The world frame is object-centred (object in the sphere of ``object_radius`` around the origin,
+Z up), which is what the camera-space NeRF and the virtual cameras assume. Both parsers hand the
model its conditioning through ``metadata``: the input image, its pose and intrinsics.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Type, Union

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox

from nerfdiff_ns.data.cameras import orbit_pose
from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.images import image_size, load_alpha, load_rgb
from nerfdiff_ns.data.segment import Segmentation

if TYPE_CHECKING:
    from nerfdiff_ns.data.prepare import PreparedPhoto

CAMERA_FILE_HELP = (
    'write a JSON object such as {"fov_degrees": 45, "distance": 2.7, "elevation_degrees": 20} or '
    '{"fx": .., "fy": .., "cx": .., "cy": .., "camera_to_world": [[4x4, OpenGL axes, object at the origin]]}'
)
CAMERA_KEYS = {"fx", "fy", "cx", "cy", "camera_to_world", "fov_degrees", "distance", "elevation_degrees", "azimuth_degrees"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def default_bundle_path() -> Path:
    """The bundle shipped inside the package (trained by the tiny preset)."""
    return Path(__file__).resolve().parents[1] / "assets" / "bundle-tiny"


@dataclass
class InputView:
    """The one real view: its image, pose (object-centred world) and intrinsics."""

    image_path: Path
    c2w: torch.Tensor  # [4, 4]
    intrinsics: torch.Tensor  # [4] fx fy cx cy
    height: int
    width: int

    def metadata(self, background: tuple[float, float, float]) -> dict:
        return {
            "nerfdiff_input_image": load_rgb(self.image_path, background),
            "nerfdiff_input_c2w": self.c2w,
            "nerfdiff_input_intrinsics": self.intrinsics,
        }


def _cameras(c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> Cameras:
    fx, fy, cx, cy = intrinsics.unbind(-1)
    return Cameras(
        camera_to_worlds=c2w[:, :3, :4].float(), fx=fx[:, None], fy=fy[:, None], cx=cx[:, None], cy=cy[:, None],
        width=width, height=height, camera_type=CameraType.PERSPECTIVE,
    )


def _bundle_cameras(bundle: Optional[Path]):
    from nerfdiff_ns.bundle import CameraDistribution, load_bundle

    if bundle is None:
        return CameraDistribution(), (1.0, 1.0, 1.0), 1.0
    loaded = load_bundle(bundle)
    return loaded.config.cameras, loaded.config.nerf.background, loaded.config.nerf.object_radius


def _framing(bundle: Optional[Path], fill: Optional[float]):
    """The training framing photo preparation matches (the bundle's; library defaults without one)."""
    from nerfdiff_ns.data.prepare import Framing

    if bundle is not None:
        return Framing.from_bundle(bundle, fill=fill)
    cams, background, radius = _bundle_cameras(None)
    return Framing(resolution=cams.image_size, background=background, distance=cams.distance, fov_degrees=cams.fov_degrees,
                   object_radius=radius, elevation_range_degrees=tuple(cams.elevation_range_degrees), fill=fill)


def read_camera_file(path: Optional[Path]) -> dict:
    """The camera JSON's keys (empty without a file); a clear DataError for anything malformed."""
    if path is None:
        return {}
    try:
        spec = json.loads(Path(path).read_text())
        if not isinstance(spec, dict):
            raise ValueError("top level must be an object")
    except FileNotFoundError as err:
        raise DataError(path, "camera file not found", "pass an existing JSON file with --camera-file") from err
    except IsADirectoryError as err:
        raise DataError(path, "camera file is a folder", "pass a JSON file with --camera-file") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(path, f"not valid camera JSON ({err})", CAMERA_FILE_HELP) from err
    unknown = set(spec) - CAMERA_KEYS
    if unknown:
        raise DataError(path, f"unknown keys {sorted(unknown)} in the camera file", CAMERA_FILE_HELP)
    elevation = spec.get("elevation_degrees")
    if isinstance(elevation, (int, float)) and not -90.0 < elevation < 90.0:
        raise DataError(path, f"elevation_degrees {elevation} is not above or below the object's horizon",
                        "give degrees in (-90, 90)")
    return spec


def check_image_path(path: Union[str, Path], flag: str, folder_hint: str = "") -> Path:
    """The input photo as a Path; a DataError naming ``flag`` (the command's own) when it is missing or a folder."""
    path = Path(path)
    if path.is_dir():
        hint = f", or {folder_hint}" if folder_hint else ""
        raise DataError(path, "is a folder, not an image", f"pass one PNG/JPG with {flag}{hint}")
    if not path.is_file():
        fix = f"pass an existing PNG/JPG with {flag}"
        if not path.is_absolute():
            run = ("; ns-render, ns-eval and nerfdiff-export read a run's --data as ns-train was given it: run them from "
                   "the folder ns-train ran in") if flag == "--data" else ""
            fix += f" (a relative path is read from the current folder, {Path.cwd()}{run})"
        raise DataError(path, "input image not found", fix)
    return path


def default_cache_dir() -> Path:
    """Where prepared photos go: $NERFDIFF_CACHE, else ~/.cache/nerfdiff (the temp folder if that is read-only)."""
    import tempfile

    root = os.environ.get("NERFDIFF_CACHE")
    candidates = [Path(root)] if root else []
    candidates += [Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nerfdiff",
                   Path(tempfile.gettempdir()) / "nerfdiff-cache"]
    for candidate in candidates:
        try:
            (candidate / "prepared").mkdir(parents=True, exist_ok=True)
            if os.access(candidate / "prepared", os.W_OK):
                return candidate / "prepared"
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix="nerfdiff-prepared-"))


@dataclass
class SingleImageDataParserConfig(DataParserConfig):
    """One photo of an object (PNG/JPG, RGBA allowed), prepared to the bundle's framing, and optionally a camera JSON."""

    _target: Type = field(default_factory=lambda: SingleImageDataParser)
    data: Path = Path("photo.png")
    """The input image."""
    camera_file: Optional[Path] = None
    """JSON with the input camera: {"fx","fy","cx","cy","camera_to_world" (4x4, OpenGL, object at origin)} or shortcuts {"fov_degrees","distance","elevation_degrees","azimuth_degrees"}; missing values come from the bundle. With --prepare, fx/fy/cx/cy are the original photo's and follow its crop and scale."""
    mask: Optional[Path] = None
    """Foreground mask (white = object) of the photo's size; used when the photo has no alpha channel."""
    bundle: Optional[Path] = None
    """Bundle whose camera distribution and background are the defaults (set from the model's bundle)."""
    prepare: bool = True
    """Prepare the photo as nerfdiff-prepare does: find the object, crop, recentre and scale it to the bundle's framing, pad to square on its background, resize to its resolution (a preview goes to the run's output folder). False: use the photo as it is."""
    segmentation: Segmentation = "auto"
    """Foreground without alpha or --mask: auto (border colour, else GrabCut), grabcut, border-colour, rembg (if installed)."""
    elevation_degrees: Optional[float] = None
    """Camera elevation of the photo (default: the camera file's, else the middle of the bundle's training range)."""
    fill: Optional[float] = None
    """With --prepare: the object's longest side as a share of the frame (default: the training data's typical framing)."""
    cache_dir: Optional[Path] = None
    """With --prepare: folder for the prepared image (default: $NERFDIFF_CACHE or ~/.cache/nerfdiff/prepared)."""


class SingleImageDataParser(DataParser):
    config: SingleImageDataParserConfig
    prepared: Optional["PreparedPhoto"] = None
    """The preparation (image, mask, crop, warnings) once the outputs were generated with --prepare."""
    prepared_files: Optional[dict] = None
    """Paths of the written prepared image, mask, camera JSON and preview."""

    def _prepare(self, path: Path, spec: dict) -> "PreparedPhoto":
        """Run the preparation once and write its files into the cache (the datamanager reads the image from disk)."""
        from nerfdiff_ns.data.prepare import PREPARATION_VERSION, prepare_photo, write_prepared

        if self.prepared is not None:
            return self.prepared
        cfg = self.config
        framing = _framing(cfg.bundle, cfg.fill)
        elevation = cfg.elevation_degrees if cfg.elevation_degrees is not None else spec.get("elevation_degrees")
        try:
            elevation = None if elevation is None else float(elevation)
        except (TypeError, ValueError) as err:
            raise DataError(cfg.camera_file, f"invalid camera ({err})", CAMERA_FILE_HELP) from err
        prepared = prepare_photo(path, framing, cfg.mask, cfg.segmentation, elevation)
        for key in ("fov_degrees", "distance", "azimuth_degrees"):  # the written camera JSON is the one used
            if key in spec and not spec.keys() & {"fx", "fy", "camera_to_world"}:
                prepared.camera[key] = spec[key]
        digest = hashlib.sha256()
        for part in (path, cfg.mask):
            if part is not None:
                digest.update(Path(part).read_bytes())
        digest.update(repr((framing, cfg.segmentation, PREPARATION_VERSION)).encode())
        folder = Path(cfg.cache_dir) if cfg.cache_dir is not None else default_cache_dir()
        files = write_prepared(prepared, folder / f"{path.stem}-{digest.hexdigest()[:12]}", stem=path.stem)
        self.prepared, self.prepared_files = prepared, files
        from nerfstudio.utils.rich_utils import CONSOLE
        from rich.markup import escape

        CONSOLE.print(f"[bold]nerfdiff-image:[/] {escape(prepared.summary())}")
        for warning in prepared.warnings:
            CONSOLE.print(f"[bold yellow]warning:[/] {escape(warning)}")
        CONSOLE.print(f"[bold]nerfdiff-image:[/] preview {escape(str(files['preview.png']))}")
        return prepared

    def input_view(self) -> InputView:
        from nerfdiff_ns.data.prepare import check_elevation, check_fill

        cfg = self.config
        path = check_image_path(cfg.data, "--data", "use the nerfdiff-srn-object dataparser")
        check_elevation(cfg.elevation_degrees)  # the flags, before any work
        check_fill(cfg.fill)
        cams, _, _ = _bundle_cameras(cfg.bundle)
        spec = read_camera_file(cfg.camera_file)
        prepared = self._prepare(path, spec) if cfg.prepare else None
        if prepared is not None:
            height = width = prepared.framing.resolution
            image_path = self.prepared_files["image.png"]
        else:
            height, width = image_size(path)
            image_path = path
        try:
            fov = float(spec.get("fov_degrees", cams.fov_degrees))
            if prepared is not None and spec.keys() & {"fx", "fy", "cx", "cy"}:
                oh, ow = prepared.source_rgb.shape[:2]  # intrinsics of the original photo, then through the crop
                fy = float(spec.get("fy", (oh / 2) / math.tan(math.radians(fov) / 2)))
                fx, fy, cx, cy = prepared.transform_intrinsics(
                    float(spec.get("fx", fy)), fy, float(spec.get("cx", ow / 2)), float(spec.get("cy", oh / 2)))
            else:
                fy = float(spec.get("fy", (height / 2) / math.tan(math.radians(fov) / 2)))
                fx = float(spec.get("fx", fy))
                cx, cy = float(spec.get("cx", width / 2)), float(spec.get("cy", height / 2))
            if "camera_to_world" in spec:
                c2w = torch.tensor(spec["camera_to_world"], dtype=torch.float32)
                if c2w.shape == (3, 4):
                    c2w = torch.cat([c2w, torch.tensor([[0.0, 0.0, 0.0, 1.0]])])
                if c2w.shape != (4, 4) or not torch.isfinite(c2w).all():
                    raise ValueError("camera_to_world must be a finite 4x4 (or 3x4) matrix")
            else:
                elevation = cfg.elevation_degrees
                if elevation is None:
                    elevation = float(spec.get("elevation_degrees", sum(cams.elevation_range_degrees) / 2))
                c2w = orbit_pose(float(spec.get("distance", cams.distance)), float(spec.get("azimuth_degrees", 0.0)), float(elevation))
            if min(fx, fy) <= 0:
                raise ValueError("focal lengths must be positive")
        except (TypeError, ValueError) as err:
            raise DataError(cfg.camera_file, f"invalid camera ({err})", CAMERA_FILE_HELP) from err
        return InputView(image_path, c2w, torch.tensor([fx, fy, cx, cy]), height, width)

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        view = self.input_view()
        _, background, radius = _bundle_cameras(self.config.bundle)
        cams = _cameras(view.c2w[None], view.intrinsics[None], view.height, view.width)
        metadata = view.metadata(background)
        if self.config.mask is not None and not self.config.prepare:  # prepared images already carry the mask
            mask = load_rgb(self.config.mask, (0.0, 0.0, 0.0)).mean(-1, keepdim=True)
            if mask.shape[:2] != metadata["nerfdiff_input_image"].shape[:2]:
                raise DataError(
                    self.config.mask, f"mask size {tuple(mask.shape[:2])} differs from the image's {tuple(metadata['nerfdiff_input_image'].shape[:2])}",
                    "give a mask of the same size as the image",
                )
            metadata["nerfdiff_input_image"] = metadata["nerfdiff_input_image"] * mask + torch.tensor(background) * (1 - mask)
        elif self.prepared is not None:
            mask = torch.from_numpy(self.prepared.mask).float()[..., None]
        else:
            mask = load_alpha(view.image_path)  # an RGBA photo used as it is; None: inferred from the background colour
        if mask is not None:
            metadata["nerfdiff_input_mask"] = mask.clamp(0.0, 1.0)
        return DataparserOutputs(
            image_filenames=[view.image_path], cameras=cams, alpha_color=torch.tensor(background),
            scene_box=SceneBox(aabb=torch.tensor([[-radius] * 3, [radius] * 3], dtype=torch.float32)),
            metadata=metadata,
        )


@dataclass
class SRNObjectDataParserConfig(DataParserConfig):
    """One object folder in SRN format; the input view is real, all other views are evaluation views."""

    _target: Type = field(default_factory=lambda: SRNObjectDataParser)
    data: Path = Path("object")
    """SRN object folder (rgb/, pose/, intrinsics.txt) or a transforms.json scene."""
    input_view: Optional[int] = None
    """Index of the input view; default: the split's protocol.json input_view_index, else 0."""
    max_eval_views: int = 0
    """Evaluate on at most this many of the other views, evenly spaced (0 = all)."""
    bundle: Optional[Path] = None
    """Bundle whose background colour is used (set from the model's bundle)."""


class SRNObjectDataParser(DataParser):
    config: SRNObjectDataParserConfig

    def input_index(self) -> int:
        if self.config.input_view is not None:
            return int(self.config.input_view)
        protocol = Path(self.config.data).parent / "protocol.json"
        if protocol.is_file():
            return int(json.loads(protocol.read_text()).get("input_view_index", 0))
        return 0

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        from nerfdiff_ns.data.multiview import load_object_folder

        _, background, radius = _bundle_cameras(self.config.bundle)
        obj = load_object_folder(self.config.data, background)
        idx = self.input_index()
        if not 0 <= idx < obj.num_views:
            raise DataError(self.config.data, f"input view {idx} is out of range ({obj.num_views} views)", "pick --input-view between 0 and the number of views - 1")
        if split == "train":
            indices = [idx]
        else:
            indices = obj.eval_view_indices(idx, self.config.max_eval_views)
        intr = obj.intrinsics[None].expand(len(indices), 4)
        cams = _cameras(obj.c2w[indices], intr, obj.height, obj.width)
        metadata = {
            "nerfdiff_input_image": obj.images[idx],
            "nerfdiff_input_c2w": obj.c2w[idx],
            "nerfdiff_input_intrinsics": obj.intrinsics,
        }
        alpha = load_alpha(obj.image_paths[idx])
        if alpha is not None and alpha.shape[:2] == obj.images[idx].shape[:2]:  # a resized scene falls back to the colour test
            metadata["nerfdiff_input_mask"] = alpha
        return DataparserOutputs(
            image_filenames=[obj.image_paths[i] for i in indices], cameras=cams, alpha_color=torch.tensor(background),
            scene_box=SceneBox(aabb=torch.tensor([[-radius] * 3, [radius] * 3], dtype=torch.float32)),
            metadata=metadata,
        )
