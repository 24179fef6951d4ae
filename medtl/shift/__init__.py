"""Domain shift, measured before training: will the pretrained encoder transfer to the target?

:mod:`.sets` reads a set of cases and preprocesses it with the target's plan;
:mod:`.acquisition` compares what the headers say (spacing, orientation, modality),
:mod:`.intensity` the voxel intensities after normalisation, :mod:`.labels` the structures'
volume and position, :mod:`.features` and :mod:`.two_sample` the encoder's own view (MMD
of pooled features with a permutation p-value, and a per-case distance); :mod:`.warnings`
turns them into warnings that name the fix, and :mod:`.measure` runs it all into the
record of :mod:`.record` (``shift.json`` and ``per_case.tsv``). docs/domain-shift.md.
"""
