"""Post-processing of predicted label maps, chosen per arm and class on cross-validation.

As in nnU-Net: each candidate (keep the largest connected component, or drop small
components) is tried on the arm's cross-validation predictions and kept for a class only
where it raises that class's mean Dice (:mod:`medtl.postprocess.choose`); ``medtl
predict`` then applies the decision to new cases (:mod:`medtl.postprocess.components`).
"""
