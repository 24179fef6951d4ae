"""Export trained medtl models to other ecosystems (MONAI bundles)."""

from medtl.export.bundle import BundleExportError, export_bundle

__all__ = ["BundleExportError", "export_bundle"]
