"""3D assets out of a finished NerfDiff run: a coloured mesh and 3D Gaussians (3DGS PLY).

``load`` opens the run, ``density`` samples its field on a world grid, ``mesh`` runs marching
cubes, ``gaussians`` initialises and refines 3D Gaussians against NeRF renders, ``rasterize``
renders them (gsplat on CUDA, a torch path on the CPU), ``splat_ply`` reads/writes the PLY,
``cli`` is ``nerfdiff-export`` and ``view_splat`` is ``nerfdiff-view-splat``. Submodules are
imported on use so that importing the package stays cheap.
"""

from nerfdiff_ns.data.errors import DataError


class ExportError(DataError):
    """Bad input to an export (missing config, a run of another method, an empty density field)."""


__all__ = ["ExportError"]
