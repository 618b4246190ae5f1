"""The in-memory multi-view object that every reader returns, and its cameras alone (read without decoding
an image, so a whole split can be checked before training starts)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["MultiViewObject", "ObjectCameras"]


@dataclass
class ObjectCameras:
    """One object's cameras and image files, from its camera file and the images' headers."""

    object_id: str
    folder: Path
    camera_file: Path
    """The file that holds the intrinsics: ``intrinsics.txt`` (SRN) or ``transforms.json``."""
    image_paths: list[Path]
    c2w: torch.Tensor
    """[V, 4, 4] float32, nerfstudio world + OpenGL camera axes."""
    intrinsics: torch.Tensor
    """[4] float32 fx, fy, cx, cy in pixels of the images on disk."""
    height: int
    width: int

    @property
    def num_views(self) -> int:
        return len(self.image_paths)

    @property
    def tan_half_fov_y(self) -> float:
        return self.height / 2 / float(self.intrinsics[1])

    @property
    def fov_y_degrees(self) -> float:
        return math.degrees(2 * math.atan(self.tan_half_fov_y))

    def pose_file(self, view: int) -> Path:
        """The file that holds view ``view``'s camera pose: ``pose/<stem>.txt`` (SRN) or the ``transforms.json``."""
        if self.camera_file.name == "intrinsics.txt":
            return self.folder / "pose" / f"{self.image_paths[view].stem}.txt"
        return self.camera_file

    def load(self, background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> "MultiViewObject":
        """Decode every view (composited on ``background``)."""
        from nerfdiff_ns.data.errors import DataError
        from nerfdiff_ns.data.images import load_rgb

        images = []
        for path in self.image_paths:
            image = load_rgb(path, background)
            if tuple(image.shape[:2]) != (self.height, self.width):  # a header that lies about the size
                raise DataError(path, f"image decodes to {image.shape[0]}x{image.shape[1]} (HxW) but the object's "
                                f"views are {self.height}x{self.width}", "replace the file with a valid image")
            images.append(image)
        return MultiViewObject(object_id=self.object_id, images=torch.stack(images), c2w=self.c2w,
                               intrinsics=self.intrinsics, image_paths=self.image_paths)


@dataclass
class MultiViewObject:
    """One object seen from several calibrated cameras that share intrinsics.

    Conventions (docs/ARCHITECTURE.md): nerfstudio world (+Z up), OpenGL camera axes (x right,
    y up, looking along -z), pixel centres at +0.5.
    """

    object_id: str
    images: torch.Tensor
    """[V, H, W, 3] float32 in [0, 1], composited on the background colour."""
    c2w: torch.Tensor
    """[V, 4, 4] float32 camera-to-world, nerfstudio world + OpenGL camera axes."""
    intrinsics: torch.Tensor
    """[4] float32 fx, fy, cx, cy in pixels, shared by all views."""
    image_paths: list[Path] = field(default_factory=list)
    """One path per view (may be empty for objects built in memory)."""

    def __post_init__(self) -> None:
        self.object_id = str(self.object_id)
        if not isinstance(self.images, torch.Tensor):
            self.images = torch.as_tensor(self.images)
        if not isinstance(self.c2w, torch.Tensor):
            self.c2w = torch.as_tensor(self.c2w)
        if not isinstance(self.intrinsics, torch.Tensor):
            self.intrinsics = torch.as_tensor(self.intrinsics)
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"MultiViewObject {self.object_id!r}: images must be [V, H, W, 3], "
                             f"got {tuple(self.images.shape)}")
        if not self.images.is_floating_point():
            raise ValueError(f"MultiViewObject {self.object_id!r}: images must be float in [0, 1], "
                             f"got dtype {self.images.dtype}")
        num_views = self.images.shape[0]
        if num_views < 1:
            raise ValueError(f"MultiViewObject {self.object_id!r}: needs at least one view")
        if self.c2w.shape == (num_views, 3, 4):
            bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=self.c2w.dtype).expand(num_views, 1, 4)
            self.c2w = torch.cat([self.c2w, bottom], dim=1)
        if tuple(self.c2w.shape) != (num_views, 4, 4):
            raise ValueError(f"MultiViewObject {self.object_id!r}: c2w must be [V, 4, 4] with V={num_views}, "
                             f"got {tuple(self.c2w.shape)}")
        if tuple(self.intrinsics.shape) != (4,):
            raise ValueError(f"MultiViewObject {self.object_id!r}: intrinsics must be [4] (fx, fy, cx, cy), "
                             f"got {tuple(self.intrinsics.shape)}")
        self.images = self.images.to(torch.float32)
        self.c2w = self.c2w.to(torch.float32)
        self.intrinsics = self.intrinsics.to(torch.float32)
        self.image_paths = [Path(p) for p in self.image_paths]
        if self.image_paths and len(self.image_paths) != num_views:
            raise ValueError(f"MultiViewObject {self.object_id!r}: {len(self.image_paths)} image paths "
                             f"for {num_views} views")

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def eval_view_indices(self, input_view: int, max_views: int = 0) -> list[int]:
        """Held-out targets of a single-image evaluation: every view but ``input_view``, at most
        ``max_views`` of them evenly spaced (0 = all); the input itself when it is the only view.
        One definition, so ``nerfdiff-eval`` (through the dataparser) and the benchmarks score the same views."""
        indices = [i for i in range(self.num_views) if i != input_view] or [input_view]
        if max_views and len(indices) > max_views:
            step = len(indices) / max_views
            indices = [indices[int(i * step)] for i in range(max_views)]
        return indices
