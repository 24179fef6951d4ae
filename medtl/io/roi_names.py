"""Map ROI (RTSTRUCT) and segment (DICOM SEG) names to label classes.

Names are compared after normalising: case-folded, with spaces, underscores and hyphens
removed, so ``"GTV"``, ``"gtv"`` and ``"G T V"`` are one name, as are ``"gtv_primary"`` and
``"GTV-Primary"``. Each class matches its own name and the synonyms the config lists for it.
Class 0 is the background and matches no name.

Example:
    >>> name_map = build_name_map({1: "tumour", 2: "heart"}, {"tumour": ["GTV", "gtv primary"]})
    >>> match_name("GTV_Primary", name_map), match_name("Heart", name_map)
    (1, 2)
    >>> match_name("Lung_L", name_map) is None
    True
"""

from __future__ import annotations

import re

_IGNORED = re.compile(r"[\s_\-]+")
MAX_CLASS = 255  # label maps are uint8


def normalise_name(name: str) -> str:
    """The form in which names are compared: case-folded, no spaces, ``_`` or ``-``.

    Example:
        >>> normalise_name(" GTV-Primary_1 ")
        'gtvprimary1'
    """
    return _IGNORED.sub("", str(name)).casefold()


def build_name_map(
    classes: dict[int, str], synonyms: dict[str, list[str]] | None
) -> dict[str, int]:
    """The lookup table from normalised names to class values.

    Args:
        classes: class value -> class name, e.g. ``{0: "background", 1: "tumour"}``. Values
            must be integers in 0..255; class 0 (background) is left out of the map.
        synonyms: class name -> further names that mean that class, e.g.
            ``{"tumour": ["GTV", "gtv_primary"]}``; ``None`` for none. Keys are matched to
            class names after normalising.

    Returns:
        Normalised name -> class value; pass it to :func:`match_name`.

    Raises:
        ValueError: a class value outside 0..255, an empty name, a synonym key that names
            no class, or one name given to two classes.
    """
    name_map: dict[str, int] = {}
    by_class_name: dict[str, int] = {}

    def add(name: str, value: int, origin: str) -> None:
        key = normalise_name(name)
        if not key:
            raise ValueError(
                f"expected a non-empty name for class {value}, found {name!r} in {origin}; "
                "fix: give every class and synonym a name with letters or digits"
            )
        if name_map.get(key, value) != value:
            raise ValueError(
                f"expected each name to mean one class, found {name!r} ({origin}) for class "
                f"{value} and for class {name_map[key]}; fix: remove it from one of them"
            )
        name_map[key] = value

    for value, class_name in classes.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CLASS:
            raise ValueError(
                f"expected class values that are integers in 0..{MAX_CLASS}, found {value!r} "
                f"for {class_name!r}; fix: renumber the classes in the config"
            )
        if value == 0:
            continue
        add(class_name, value, "the classes")
        by_class_name[normalise_name(class_name)] = value
    for class_name, names in (synonyms or {}).items():
        value = by_class_name.get(normalise_name(class_name))
        if value is None:
            known = ", ".join(repr(classes[v]) for v in sorted(by_class_name.values()))
            raise ValueError(
                f"expected synonyms keyed by a class name ({known}), found {class_name!r}; "
                "fix: correct the key or add the class to the classes"
            )
        if isinstance(names, str):
            names = [names]
        for name in names:
            add(name, value, f"the synonyms of {class_name!r}")
    return name_map


def match_name(name: str, name_map: dict[str, int]) -> int | None:
    """The class value of an ROI or segment name, or ``None`` when no class matches.

    Args:
        name: ROIName or SegmentLabel as found in the file.
        name_map: from :func:`build_name_map`.
    """
    return name_map.get(normalise_name(name))
