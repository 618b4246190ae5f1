"""Entry points for ``nerfstudio.dataparser_configs``.

Kept apart from ``config.py``: nerfstudio loads dataparser entry points while it is still importing
its dataparser registry, so this module must not import datamanagers or pipelines (circular import).
"""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from nerfdiff_ns.data.dataparsers import SingleImageDataParserConfig, SRNObjectDataParserConfig

single_image_dataparser = DataParserSpecification(
    config=SingleImageDataParserConfig(), description="NerfDiff: one photo (+ optional camera JSON / mask)."
)
srn_object_dataparser = DataParserSpecification(
    config=SRNObjectDataParserConfig(), description="NerfDiff: one SRN object, fixed input view, other views for eval."
)
