"""The closed choices of the config, each a tuple checked where a value enters.

The schema (``pipeline/schemas/config.schema.yaml``) lists the same values in its
``enum:``; ``tests/config/test_defaults.py`` keeps the two alike. :func:`check_choice`
refuses anything else with the key, the value and the allowed values.

Example:
    >>> check_choice("cuda", DEVICES, "device")
    'cuda'
    >>> check_choice("gpu", DEVICES, "device")
    Traceback (most recent call last):
    ...
    medtl.kernel.errors.ConfigError: config key 'device': got 'gpu'; allowed values: auto, cpu, cuda
"""

from __future__ import annotations

from collections.abc import Sequence

from medtl.kernel.errors import ConfigError

#: Transfer strategies of an arm (``arms.<arm>.strategy``).
ARM_STRATEGIES = ("scratch", "frozen", "finetune", "partial", "gradual")

#: Where an arm's encoder weights come from (``arms.<arm>.init``).
ARM_INITS = ("random", "pretrained", "ssl")

#: The device a job runs on (``device``); ``cuda:N`` also names one GPU on the command line.
DEVICES = ("auto", "cpu", "cuda")

#: Intensity normalisation (``preprocess.normalization``).
NORMALIZATIONS = ("auto", "zscore", "ct", "like_pretrained")

#: Target spacings given by name rather than numbers (``preprocess.target_spacing``).
SPACING_MODES = ("auto", "like_pretrained")

#: Blending of overlapping sliding windows (``predict.mode``).
BLEND_MODES = ("gaussian", "constant")
#: predict.window as a word: the training patch, or the window that computes the fewest voxels.
WINDOW_MODES = ("patch", "image")

#: Conventions for the Dice of an empty reference and an empty prediction.
EMPTY_DICE = ("one", "nan")

#: Post-processing candidates tried on the cross-validation predictions.
POSTPROCESS_CANDIDATES = ("largest", "min_volume")

#: Where the data set comes from (``dataset.kind``).
DATASET_KINDS = ("demo", "path", "dicom", "dicomweb")


def check_choice(value: str, allowed: Sequence[str], where: str) -> str:
    """``value`` when it is one of ``allowed``; else a :class:`ConfigError` naming them.

    ``where`` is a config key (``device``) or a command-line option (``--device``).
    """
    if value not in allowed:
        named = where if where.startswith("-") else f"config key '{where}'"  # an option
        raise ConfigError(f"{named}: got {value!r}; allowed values: {', '.join(allowed)}")
    return value


def check_device_name(name: str, where: str = "device") -> str:
    """A device name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (one GPU by its index).

    Example:
        >>> check_device_name("cuda:1")
        'cuda:1'
    """
    index = name.partition(":")[2] if name.startswith("cuda:") else None
    if index is not None and index.isdigit():
        return name
    return check_choice(name, DEVICES, where)


def window_setting(text: str, where: str = "--window") -> str | tuple[int, int, int]:
    """``--window`` as ``predict.window``: ``patch``, ``image`` or ``x,y,z`` (three sides).

    Example:
        >>> window_setting("image"), window_setting("64,64,32")
        ('image', (64, 64, 32))
    """
    text = text.strip()
    if text in WINDOW_MODES:
        return text
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 3 and all(p.isdigit() and int(p) > 0 for p in parts):
        return (int(parts[0]), int(parts[1]), int(parts[2]))
    raise ConfigError(
        f"{where}: got {text!r}; expected patch, image or three positive sides x,y,z. "
        "How to fix: e.g. --window image or --window 64,64,32"
    )
