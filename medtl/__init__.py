"""medtl: medical-image segmentation by transfer learning, as one reproducible workflow."""

__version__ = "0.1.0"
