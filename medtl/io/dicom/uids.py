"""The DICOM SOP class UIDs medtl reads and writes: one table, one name each.

Every module that recognises or writes one of these classes imports its name from here,
so a UID is spelled once in the package.

Example:
    >>> LABEL_KINDS[RTSTRUCT_STORAGE], RTSTRUCT_STORAGE.name
    ('RTSTRUCT', 'RT Structure Set Storage')
"""

from __future__ import annotations

from pydicom.uid import UID

#: CT Image Storage: the class of the CT series medtl writes.
CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
#: MR Image Storage: the class of the MR series medtl writes.
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
#: Enhanced (multi-frame) CT Image Storage.
ENHANCED_CT_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
#: Enhanced (multi-frame) MR Image Storage.
ENHANCED_MR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4.1")
#: RT Structure Set Storage: RTSTRUCT contours.
RTSTRUCT_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.3")
#: Segmentation Storage: DICOM-SEG.
SEGMENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.66.4")
#: Label Map Segmentation Storage: DICOM-SEG as one label map.
LABEL_MAP_SEGMENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.66.7")
#: Media Storage Directory Storage: a DICOMDIR index.
MEDIA_STORAGE_DIRECTORY = UID("1.2.840.10008.1.3.10")
#: Detached Study Management: the class an RTSTRUCT's RTReferencedStudySequence names.
DETACHED_STUDY_MANAGEMENT = UID("1.2.840.10008.3.1.2.3.1")

#: The label-object classes and the kind medtl calls each.
LABEL_KINDS = {RTSTRUCT_STORAGE: "RTSTRUCT", SEGMENTATION_STORAGE: "SEG"}
