"""Multi-view training samples for pretraining: (source view, target views, cameras).

:class:`MultiViewDataset` wraps a list of object folders (SRN layout or ``transforms.json``
scenes, detected per folder). Each item picks one source view and ``num_target_views`` target
views of object ``idx`` with torch's global RNG, so ``torch.manual_seed`` / a saved
``torch.get_rng_state()`` reproduces the stream (DataLoader workers are seeded by torch too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.images import Background
from nerfdiff_ns.data.srn import list_srn_objects, read_srn_cameras
from nerfdiff_ns.data.transforms_json import read_transforms_cameras
from nerfdiff_ns.data.views import MultiViewObject, ObjectCameras

__all__ = ["MultiViewDataset", "load_object_folder", "read_object_cameras"]


def read_object_cameras(folder: Union[str, Path]) -> ObjectCameras:
    """One object folder's cameras and image files (no image decoded): a ``transforms.json`` scene if the
    folder has one, else SRN."""
    folder = Path(folder)
    if folder.suffix.lower() == ".json" or (folder / "transforms.json").is_file():
        return read_transforms_cameras(folder)
    return read_srn_cameras(folder)


def load_object_folder(folder: Union[str, Path], background: Background = (1.0, 1.0, 1.0)) -> MultiViewObject:
    """Load one object folder: a ``transforms.json`` scene if the folder has one, else SRN."""
    return read_object_cameras(folder).load(background)


class MultiViewDataset(Dataset):
    """Objects -> random (source, targets) view samples.

    Args:
        folders: object folders (SRN: ``rgb/``, ``pose/``, ``intrinsics.txt``; or a folder with a
            ``transforms.json``), loaded lazily on first access.
        num_target_views: T target views per sample. They differ from the source view whenever the
            object has more than one view, and from each other when it has more than T views
            (otherwise they are drawn with replacement from the non-source views).
        background: RGB in [0, 1] that transparent pixels are composited on.
        source_view: fix the source view index (e.g. the evaluation protocol's input view); targets
            are then drawn from the other views. ``None`` draws it uniformly.
        cache: keep loaded objects in memory (per process; each DataLoader worker has its own).
        cameras: each folder's cameras when they were already read (pretraining's start-up survey), so that
            loading an object only decodes its images.

    ``__getitem__`` returns (docs/ARCHITECTURE.md)::

        {"object_index": int,
         "source_image": [H, W, 3], "source_c2w": [4, 4], "source_view": int,
         "target_images": [T, H, W, 3], "target_c2w": [T, 4, 4], "target_views": [T] long,
         "intrinsics": [4]}
    """

    def __init__(
        self,
        folders: Sequence[Union[str, Path]],
        num_target_views: int = 1,
        background: Background = (1.0, 1.0, 1.0),
        source_view: Optional[int] = None,
        cache: bool = True,
        cameras: Optional[Sequence[ObjectCameras]] = None,
    ) -> None:
        super().__init__()
        self.folders = [Path(f) for f in folders]
        if not self.folders:
            raise ValueError("MultiViewDataset needs at least one object folder")
        if cameras is not None and len(cameras) != len(self.folders):
            raise ValueError(f"{len(cameras)} cameras for {len(self.folders)} object folders")
        self.cameras = None if cameras is None else list(cameras)
        if num_target_views < 1:
            raise ValueError(f"num_target_views must be >= 1, got {num_target_views}")
        if source_view is not None and source_view < 0:
            raise ValueError(f"source_view must be >= 0 or None, got {source_view}")
        self.num_target_views = int(num_target_views)
        self.background = tuple(float(v) for v in (background.tolist() if hasattr(background, "tolist") else background))
        self.source_view = source_view
        self.cache = cache
        self._cache: dict[int, MultiViewObject] = {}

    @classmethod
    def from_split(cls, root: Union[str, Path], split: str, **kwargs) -> "MultiViewDataset":
        """All objects of ``<root>/<split>`` (see :func:`~nerfdiff_ns.data.srn.list_srn_objects`)."""
        return cls(list_srn_objects(root, split), **kwargs)

    def __len__(self) -> int:
        return len(self.folders)

    def load_object(self, idx: int) -> MultiViewObject:
        """The whole object ``idx`` (cached when ``cache=True``)."""
        if not -len(self) <= idx < len(self):
            raise IndexError(f"object index {idx} out of range for {len(self)} objects")
        idx = idx % len(self)
        if idx in self._cache:
            return self._cache[idx]
        cameras = self.cameras[idx] if self.cameras is not None else read_object_cameras(self.folders[idx])
        obj = cameras.load(self.background)
        if self.cache:
            self._cache[idx] = obj
        return obj

    def sample_views(self, num_views: int, folder: Optional[Path] = None) -> tuple[int, torch.Tensor]:
        """Draw (source view, [T] target views) for an object with ``num_views`` views."""
        if self.source_view is not None:
            if self.source_view >= num_views:
                raise DataError(folder, f"source_view={self.source_view} but the object has only {num_views} views",
                                "choose a source view index that every object has")
            source = self.source_view
        else:
            source = int(torch.randint(num_views, (1,)).item())
        t = self.num_target_views
        if num_views == 1:
            return source, torch.zeros(t, dtype=torch.long)
        if t <= num_views - 1:
            picks = torch.randperm(num_views - 1)[:t]
        else:
            picks = torch.randint(num_views - 1, (t,))
        targets = picks + (picks >= source).long()  # skip the source index
        return source, targets.long()

    def __getitem__(self, idx: int) -> dict:
        obj = self.load_object(idx)
        source, targets = self.sample_views(obj.num_views, self.folders[idx % len(self)])
        return {
            "object_index": int(idx % len(self)),
            "source_image": obj.images[source],
            "source_c2w": obj.c2w[source],
            "source_view": source,
            "target_images": obj.images[targets],
            "target_c2w": obj.c2w[targets],
            "target_views": targets,
            "intrinsics": obj.intrinsics,
        }
