"""Find DICOM image series and label objects in a folder tree and read a series into a Volume.

Discovery (:func:`discover`, in :mod:`.discovery`) reads headers only, in parallel, and never
raises on a bad file: every file ends as a member of an image series, as a label object
(RTSTRUCT or DICOM-SEG) or as a :class:`~medtl.kernel.errors.Rejection` with a reason and a fix.

Loading (:func:`load_series_checked`, in :mod:`.loading`) reads the pixels of every file
(:mod:`.pixels`), splits multi-frame files into frames (:mod:`.frames`), sets aside
localizer/scout images and pixel-identical duplicate copies mixed into the series
(:mod:`.set_aside`), orders the slices by their position along the slice normal (never by
InstanceNumber), checks that they form one regular, untilted grid (:mod:`.geometry`) and
returns a float32 volume with a RAS+ affine.

Pairing (:func:`pair_labels`, in :mod:`.pairing`) matches each RTSTRUCT / DICOM-SEG with
the image series it references.

The modules, in reading order: :mod:`.headers` (one file's header and values),
:mod:`.inspection` (what one file is), :mod:`.discovery`, :mod:`.frames`, :mod:`.pixels`,
:mod:`.set_aside`, :mod:`.geometry`, :mod:`.loading`, :mod:`.pairing`. Checks are small
functions in tables, one row per check: :data:`~.inspection.HEADER_CHECKS` (per file, at
discovery), :data:`~.set_aside._SET_ASIDE_FILTERS` (frames left out of a series with a
rejection, at load), :data:`~.loading._SERIES_CHECKS` and :data:`~.geometry._POSITION_CHECKS` (per
series, at load).

Example:
    >>> inventory = discover(Path("dicom_in"), workers=8)  # doctest: +SKIP
    >>> volume, set_aside = load_series_checked(inventory.series[0])  # doctest: +SKIP
    >>> volume.array.shape, volume.orientation  # doctest: +SKIP
    ((512, 512, 120), 'LPS')
"""

from __future__ import annotations

from medtl.io.dicom.discovery import (
    DicomInventory,
    SeriesInfo,
    discover,
    discover_series,
)
from medtl.io.dicom.headers import (
    DICOMDIR_REASON,
    FIX_DECODER,
    FIX_DECOMPRESS,
    FIX_EXPORT_AGAIN,
    FIX_ONE_SERIES,
    FIX_REMOVE,
    FIX_SET_ASIDE,
    _get,
    position_rounding,
)
from medtl.io.dicom.inspection import LabelObjectInfo
from medtl.io.dicom.loading import (
    LoadedSeries,
    load_series,
    load_series_checked,
    load_series_with_notes,
)
from medtl.io.dicom.pairing import (
    SeriesLabel,
    label_of_set_aside_image,
    left_behind,
    pair_labels,
)
from medtl.io.dicom.pixels import _native_pixels
from medtl.io.dicom.uids import (
    ENHANCED_CT_STORAGE,
    ENHANCED_MR_STORAGE,
    MEDIA_STORAGE_DIRECTORY,
    RTSTRUCT_STORAGE,
    SEGMENTATION_STORAGE,
)
from medtl.kernel.errors import Rejection

__all__ = [
    "DICOMDIR_REASON",
    "ENHANCED_CT_STORAGE",
    "ENHANCED_MR_STORAGE",
    "FIX_DECODER",
    "FIX_DECOMPRESS",
    "FIX_EXPORT_AGAIN",
    "FIX_ONE_SERIES",
    "FIX_REMOVE",
    "FIX_SET_ASIDE",
    "MEDIA_STORAGE_DIRECTORY",
    "RTSTRUCT_STORAGE",
    "SEGMENTATION_STORAGE",
    "DicomInventory",
    "LabelObjectInfo",
    "LoadedSeries",
    "Rejection",
    "SeriesInfo",
    "SeriesLabel",
    "_get",
    "_native_pixels",
    "discover",
    "discover_series",
    "label_of_set_aside_image",
    "left_behind",
    "load_series",
    "load_series_checked",
    "load_series_with_notes",
    "pair_labels",
    "position_rounding",
]
