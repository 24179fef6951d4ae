"""Reading and writing images: DICOM series, NIfTI, case sheets."""
