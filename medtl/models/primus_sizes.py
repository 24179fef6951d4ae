"""Primus's sizes, without torch: the presets and the rule a width and head count follow.

The config checks (:func:`medtl.models.networks.patch_problem`) and the nnssl plan reader
use them before any network is built; :mod:`medtl.models.primus` builds from them.

Example:
    >>> PRIMUS_PRESETS["M"]
    (864, 16, 12)
"""

from __future__ import annotations

#: Primus's transformer sizes by preset, ``(embed_dim, depth, heads)``: DNA 0.4.4's
#: ``_PRIMUS_CONFIGS`` (PrimusS, PrimusB, PrimusM, PrimusL).
PRIMUS_PRESETS: dict[str, tuple[int, int, int]] = {
    "S": (396, 12, 6),
    "B": (792, 12, 12),
    "M": (864, 16, 12),
    "L": (1056, 24, 16),
}


def primus_size_problem(embed_dim: int, heads: int) -> str | None:
    """Why a width and head count cannot carry Primus's 3-D rotary embedding, or None.

    Each head's dimension splits into three axes of sine-cosine pairs: ``embed_dim /
    heads`` must be 1.5 × a multiple of 4 (DNA's rule).

    Example:
        >>> primus_size_problem(864, 12) is None, primus_size_problem(100, 3)
        (True, 'embed_dim / heads = 100 / 3 must be 1.5 × a multiple of 4 (e.g. 48 / 2 = 24)')
    """
    head = embed_dim / heads if heads > 0 else 0
    if embed_dim <= 0 or heads <= 0 or head != int(head) or (head / 1.5) % 4:
        return (
            f"embed_dim / heads = {embed_dim} / {heads} must be 1.5 × a multiple of 4 "
            "(e.g. 48 / 2 = 24)"
        )
    return None
