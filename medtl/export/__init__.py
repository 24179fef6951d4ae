"""Export a finished run to other tools: an nnU-Net raw data set with medtl's folds
(:mod:`medtl.export.nnunet`) and MONAI bundles (:mod:`medtl.export.bundle`)."""
