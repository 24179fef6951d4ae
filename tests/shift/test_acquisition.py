"""What the headers say of each set: medtl.shift.acquisition."""

from __future__ import annotations

import dataclasses

from medtl.shift.acquisition import compare_acquisition
from tests.support.phantom_sets import phantom_set


def test_scanners_are_counted_and_the_shared_ones_named() -> None:
    source = phantom_set("source", 0.0, seed=1, n=3)
    target = phantom_set("target", 1.0, seed=2, n=3)
    source = dataclasses.replace(source, scanner=("GE Signa", "GE Signa", "SIEMENS Skyra"))
    target = dataclasses.replace(target, scanner=("SIEMENS Skyra", "", "Philips Ingenia"))
    acq = compare_acquisition(target, source, None)
    assert acq["source"]["scanner"] == {"GE Signa": 2, "SIEMENS Skyra": 1}
    assert acq["target"]["scanner"] == {"SIEMENS Skyra": 1, "Philips Ingenia": 1}
    assert acq["scanners_shared"] == ["SIEMENS Skyra"]
    # NIfTI sets name no scanner: nothing to compare, and the record says so with None.
    plain = compare_acquisition(phantom_set("target", 1.0, seed=2, n=2), source, None)
    assert plain["target"]["scanner"] == {} and plain["scanners_shared"] is None
