"""The channel names an nnU-Net export gets when none are given: the manifest's modality.

Example:
    >>> import pandas as pd
    >>> default_channel_names(pd.DataFrame({"modality": ["MR"], "channels": [2]}))
    {0: 'MR0', 1: 'MR1'}
    >>> default_channel_names(pd.DataFrame({"modality": ["CT"], "channels": [1]}))
    {0: 'CT'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd


def default_channel_names(manifest: pd.DataFrame) -> dict[int, str]:
    """Channel index → name from the first case: the modality, numbered when several.

    A manifest without ``modality`` gives ``unknown``; without ``channels``, one channel.
    """
    has_rows = len(manifest) > 0
    modality = manifest["modality"].iloc[0] if "modality" in manifest and has_rows else "unknown"
    n = int(manifest["channels"].iloc[0]) if "channels" in manifest and has_rows else 1
    return {c: modality if n == 1 else f"{modality}{c}" for c in range(n)}


def channel_names(manifest: pd.DataFrame, given: Mapping[Any, str] | None) -> dict[int, str]:
    """The channel names given (keys made integers), else :func:`default_channel_names`."""
    if given:
        return {int(k): v for k, v in given.items()}
    return default_channel_names(manifest)
