"""The built-in demo data set: synthetic phantoms as real NIfTI and DICOM files."""
