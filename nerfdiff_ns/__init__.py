"""nerfdiff-ns: NerfDiff (single-image view synthesis by NeRF-guided distillation) for nerfstudio.

Importing this package is deliberately cheap: no torch models are built and diffusers is not
imported here, so the nerfstudio entry points that load `nerfdiff_ns.config` stay fast and safe.
"""

__version__ = "0.1.0"
