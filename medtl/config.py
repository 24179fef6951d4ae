"""Typed, validated configuration.

The workflow's YAML is checked against ``pipeline/schemas/config.schema.yaml`` (with
defaults filled in) before any rule runs, by :func:`validate_config`. Each stage then
receives only its own section, as JSON on its command line, and turns it into one of
the frozen dataclasses below with :func:`parse_section`, which checks it again at the
edge: unknown keys and wrong types are refused with the key, the value and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medtl.kernel.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """The segmentation network.

    Attributes:
        name: architecture from :data:`medtl.models.networks.ARCHITECTURES`:
            ``basicunet``, ``flexibleunet`` (ResNet encoder), ``swinunetr``,
            ``plainconvunet`` (nnU-Net's PlainConvUNet names).
        features: channel widths (``basicunet``: six numbers; ``swinunetr``: the first is
            its feature size; ``plainconvunet``: one per stage).
        backbone: encoder backbone, for architectures that have one (``flexibleunet``).
        dropout: dropout probability.
    """

    name: str = "basicunet"
    features: tuple[int, ...] = (16, 16, 32, 64, 128, 16)
    backbone: str = "resnet10"
    dropout: float = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    """MONAI random augmentations applied to training patches."""

    flip: float = 0.5
    rotate90: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    noise: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation budget and schedule, the same for every arm.

    Attributes:
        steps: optimiser steps per run.
        batch_size: patches per step.
        patch_size: training patch in voxels (each a multiple of 16 for ``basicunet``).
        lr: base learning rate (AdamW), cosine-annealed to zero.
        weight_decay: AdamW weight decay.
        val_every: validate on the inner validation cases every N steps.
        pos_fraction: share of patches centred on foreground.
        augment: augmentation probabilities and magnitudes.
        warmup_steps: linear learning-rate warm-up over the first N steps, then the
            cosine decay over the remaining steps (0 = no warm-up).
        patience: early stopping: stop after N validations in a row without a better
            validation Dice (0 = off).
        checkpoint_every: save the full training state (weights, optimiser, scheduler,
            random generators, step, best metric) every N steps, so that a killed job
            resumes where it stopped (besides every validation).
        prefetch: batches a background thread prepares ahead while the network trains
            (0 = off); the batches and results are the same either way.
        amp: on a CUDA device, run the forward pass in bfloat16 autocast (the loss in
            float32); ignored on the CPU.
        channels_last: on a CUDA device, keep the network and its input in the
            ``channels_last_3d`` memory format; ignored on the CPU.
    """

    steps: int = 300
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (32, 32, 16)
    lr: float = 2e-3
    weight_decay: float = 1e-5
    val_every: int = 50
    pos_fraction: float = 0.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    warmup_steps: int = 0
    patience: int = 0
    checkpoint_every: int = 25
    prefetch: int = 2
    amp: bool = True
    channels_last: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_steps < self.steps:
            raise ConfigError(
                f"config key 'train.warmup_steps': got {self.warmup_steps}; expected 0 to "
                f"{self.steps - 1} (fewer than train.steps = {self.steps}). How to fix: "
                "lower warmup_steps, e.g. to a tenth of the steps"
            )


ARM_STRATEGIES = ("scratch", "frozen", "finetune", "partial", "gradual")


@dataclass(frozen=True)
class ArmConfig:
    """One transfer strategy.

    ``strategy`` may be left out: it is then derived from the older keys, so that
    ``{init: random}`` means ``scratch``, ``{init: pretrained, freeze_encoder: true}``
    means ``frozen`` and any other pretrained arm means ``finetune``. After construction
    ``strategy`` is always set and ``freeze_encoder`` is true exactly for ``frozen``.

    Attributes:
        init: ``random`` or ``pretrained`` (encoder weights from the pretrained checkpoint).
        freeze_encoder: keep the encoder fixed (feature extraction); the same as
            ``strategy: frozen``.
        encoder_lr_scale: the encoder's learning rate as a fraction of the base rate.
        strategy: ``scratch`` (random start, every layer trains), ``frozen`` (the encoder,
            its normalisation statistics included, stays fixed), ``finetune`` (every
            layer trains), ``partial`` (only the last ``unfreeze_stages`` encoder stages
            train) or ``gradual`` (the encoder starts frozen and its stages unfreeze one
            by one, deepest first, on the schedule of ``unfreeze_every`` or ``unfreeze_at``).
        unfreeze_stages: ``partial`` only: how many of the deepest encoder stages train.
        unfreeze_every: ``gradual`` only: unfreeze one more stage every N steps (the
            deepest at step N, the next at 2N, ...).
        unfreeze_at: ``gradual`` only: the step at which each stage unfreezes, deepest
            first; stages beyond the list stay frozen.
        repeats: how many of the workflow's ``seeds`` the arm trains with (the first N);
            0 = all of them (see :func:`training_seeds`). Training itself ignores it.
        where: the arm's config path for messages, e.g. ``arms.partial2``
            (:func:`parse_section` passes it; not a config key, not stored).
    """

    init: str = "random"
    freeze_encoder: bool = False
    encoder_lr_scale: float = 1.0
    strategy: str | None = None
    unfreeze_stages: int = 0
    unfreeze_every: int = 0
    unfreeze_at: tuple[int, ...] = ()
    repeats: int = 0
    where: InitVar[str] = "arms.<arm>"

    def __post_init__(self, where: str) -> None:
        strategy = self.strategy
        if strategy is None:
            if self.freeze_encoder:
                strategy = "frozen"
            else:
                strategy = "scratch" if self.init == "random" else "finetune"
        if strategy not in ARM_STRATEGIES:
            raise ConfigError(
                f"config key '{where}.strategy': got {strategy!r}; allowed values: "
                f"{', '.join(ARM_STRATEGIES)}"
            )
        if self.freeze_encoder and strategy != "frozen":
            raise ConfigError(
                f"config key '{where}.freeze_encoder': got true with strategy {strategy!r}; "
                "freeze_encoder: true means strategy: frozen. How to fix: remove "
                "freeze_encoder, or set strategy: frozen"
            )
        if strategy == "scratch" and self.init != "random":
            raise ConfigError(
                f"config key '{where}.init': got {self.init!r} with strategy 'scratch', "
                "which starts from random weights. How to fix: set init: random, or use "
                "strategy: finetune to train every layer from pretrained weights"
            )
        if self.encoder_lr_scale <= 0:
            raise ConfigError(
                f"config key '{where}.encoder_lr_scale': got {self.encoder_lr_scale!r}; "
                "expected a number above 0. How to fix: use e.g. 0.2, or strategy: frozen "
                "to keep the encoder fixed"
            )
        if self.repeats < 0:
            raise ConfigError(
                f"config key '{where}.repeats': got {self.repeats!r}; expected 0 (all of "
                "the workflow's seeds) or more. How to fix: set e.g. repeats: 1"
            )
        self._check_schedule(strategy, where)
        object.__setattr__(self, "strategy", strategy)
        object.__setattr__(self, "freeze_encoder", strategy == "frozen")

    def _check_schedule(self, strategy: str, where: str) -> None:
        if strategy == "partial":
            if self.unfreeze_stages < 1:
                raise ConfigError(
                    f"config key '{where}.unfreeze_stages': got {self.unfreeze_stages!r}; "
                    "strategy 'partial' needs the number of deepest encoder stages to train "
                    "(1 or more). How to fix: set e.g. unfreeze_stages: 2"
                )
        elif self.unfreeze_stages:
            raise ConfigError(
                f"config key '{where}.unfreeze_stages': got {self.unfreeze_stages!r} with "
                f"strategy {strategy!r}; it only applies to strategy 'partial'. How to fix: "
                "remove it, or set strategy: partial"
            )
        if self.unfreeze_every < 0 or any(s < 0 for s in self.unfreeze_at):
            raise ConfigError(
                f"config key '{where}.unfreeze_every / unfreeze_at': got "
                f"{self.unfreeze_every!r} / {list(self.unfreeze_at)!r}; expected steps of 0 "
                "or more"
            )
        scheduled = bool(self.unfreeze_every) + bool(self.unfreeze_at)
        if strategy == "gradual":
            if scheduled != 1:
                raise ConfigError(
                    f"config key '{where}.unfreeze_every / unfreeze_at': got "
                    f"{self.unfreeze_every!r} / {list(self.unfreeze_at)!r}; strategy "
                    "'gradual' needs exactly one schedule. How to fix: set either "
                    "unfreeze_every: 50 (a stage every 50 steps, deepest first) or "
                    "unfreeze_at: [50, 100, 150] (the step of each stage, deepest first)"
                )
            if list(self.unfreeze_at) != sorted(self.unfreeze_at):
                raise ConfigError(
                    f"config key '{where}.unfreeze_at': got {list(self.unfreeze_at)!r}; "
                    "expected steps in increasing order (deepest stage first). How to fix: "
                    f"use {sorted(self.unfreeze_at)!r}"
                )
        elif scheduled:
            raise ConfigError(
                f"config key '{where}.unfreeze_every / unfreeze_at': set with strategy "
                f"{strategy!r}; they only apply to strategy 'gradual'. How to fix: remove "
                "them, or set strategy: gradual"
            )


@dataclass(frozen=True)
class PretrainConfig:
    """Supervised pretraining on the source set, or a checkpoint of your own.

    Attributes:
        source: the labelled source set (case sheet, MSD folder) to pretrain on.
        checkpoint: a weights file (or MONAI bundle folder) to use instead of running the
            pretrain stage.
        format: the checkpoint's format (``auto`` detects it), see
            :data:`medtl.models.weights.FORMATS`.
        min_loaded_fraction: refuse a checkpoint that initialises less of the encoder.
        max_unused_fraction: refuse a checkpoint when more of its encoder's values find
            no place in the model (weights of another architecture).
        steps, batch_size, lr, val_every, patch_size: the pretraining schedule.
        checkpoint_every: save the full pretraining state every N steps (resumable).
    """

    source: str | None = None
    checkpoint: str | None = None
    format: str = "auto"
    min_loaded_fraction: float = 0.9
    max_unused_fraction: float = 0.05
    steps: int = 400
    batch_size: int = 2
    lr: float = 2e-3
    val_every: int = 100
    patch_size: tuple[int, int, int] = (32, 32, 16)
    checkpoint_every: int = 50


@dataclass(frozen=True)
class PreprocessConfig:
    """How cases are brought to one grid and intensity scale.

    Attributes:
        target_spacing: ``auto`` (median spacing of the data set) or three numbers in mm.
        normalization: ``auto`` (by modality), ``zscore`` or ``ct``.
        crop_foreground: crop each case to its non-zero bounding box.
        workers: cases preprocessed at once (processes); changes the speed, not the plan
            or the cases, so the workflow keeps it out of the plan's settings.
    """

    target_spacing: str | tuple[float, float, float] = "auto"
    normalization: str = "auto"
    crop_foreground: bool = True
    workers: int = 2


@dataclass(frozen=True)
class PredictConfig:
    """Sliding-window inference.

    Attributes:
        overlap: overlap of neighbouring windows (0 to <1).
        sw_batch_size: windows run through the network at once.
        mode: blending of overlapping windows, ``gaussian`` or ``constant``.
        tta: test-time augmentation: also predict the 7 mirrored copies of the case (every
            combination of flips along the three axes) and average the probabilities.
        amp: on a CUDA device, run the network in bfloat16 autocast (probabilities are
            summed in float32); ignored on the CPU.
        channels_last: on a CUDA device, run the network in the ``channels_last_3d``
            memory format; ignored on the CPU.
    """

    overlap: float = 0.5
    sw_batch_size: int = 4
    mode: str = "gaussian"
    tta: bool = False
    amp: bool = True
    channels_last: bool = False


#: Conventions for the Dice of an empty reference and an empty prediction.
EMPTY_DICE = ("one", "nan")

#: Post-processing candidates tried on the cross-validation predictions.
POSTPROCESS_CANDIDATES = ("largest", "min_volume")


@dataclass(frozen=True)
class EvaluateConfig:
    """How predictions are scored against the reference labels.

    Attributes:
        nsd_tolerance_mm: tolerance of the normalised surface Dice, in mm, for every class
            not named in ``nsd_tolerance_by_class``.
        nsd_tolerance_by_class: per class name, its own tolerance in mm.
        empty_dice: Dice (and IoU, NSD) when reference and prediction are both empty:
            ``one`` (a perfect empty answer) or ``nan`` (left out of the means).
        bootstrap: resamples of the bootstrap confidence intervals.
    """

    nsd_tolerance_mm: float = 2.0
    nsd_tolerance_by_class: dict[str, float] = field(default_factory=dict)
    empty_dice: str = "one"
    bootstrap: int = 2000

    def __post_init__(self) -> None:
        if self.empty_dice not in EMPTY_DICE:
            raise ConfigError(
                f"config key 'evaluate.empty_dice': got {self.empty_dice!r}; expected one of "
                f"{', '.join(EMPTY_DICE)}"
            )
        bad = {k: v for k, v in self.nsd_tolerance_by_class.items() if not v > 0}
        if not self.nsd_tolerance_mm > 0 or bad:
            raise ConfigError(
                "config key 'evaluate.nsd_tolerance_mm': expected tolerances > 0 mm, got "
                f"{self.nsd_tolerance_mm!r} and per class {bad or '{}'}"
            )

    def tolerance(self, class_name: str) -> float:
        """The NSD tolerance of one class, in mm."""
        return float(self.nsd_tolerance_by_class.get(class_name, self.nsd_tolerance_mm))


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing chosen on cross-validation, per arm and class (as nnU-Net does).

    Attributes:
        enabled: try the candidates on the cross-validation predictions at all.
        candidates: ``largest`` (keep the largest connected component) and
            ``min_volume`` (remove components smaller than ``min_volume_mm3``).
        min_volume_mm3: the smallest component ``min_volume`` keeps, in mm³.
        min_gain: a candidate is applied only when it raises the class's mean CV Dice by
            more than this.
    """

    enabled: bool = True
    candidates: tuple[str, ...] = ("largest", "min_volume")
    min_volume_mm3: float = 50.0
    min_gain: float = 0.0

    def __post_init__(self) -> None:
        bad = [c for c in self.candidates if c not in POSTPROCESS_CANDIDATES]
        if bad:
            raise ConfigError(
                f"config key 'postprocess.candidates': got {bad[0]!r}; expected any of "
                f"{', '.join(POSTPROCESS_CANDIDATES)}"
            )


T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}': expected a mapping, got {value!r}")
        return parse_section(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        allowed = " or ".join(_type_name(a) for a in typing.get_args(tp))
        details = "; ".join(e.split(": ", 1)[-1] for e in errors)
        raise ConfigError(f"config key '{where}': got {value!r}; expected {allowed} ({details})")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{where}': expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{where}': expected {len(args)} values, got {len(value)} ({value!r})"
            )
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}': expected a mapping, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return {
            _coerce(k, key_tp, where): _coerce(v, value_tp, f"{where}.{k}")
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{where}': expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{where}': expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{where}': expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{where}': expected a string, got {value!r}")
        return value
    return value


def parse_section(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build a frozen config dataclass from a mapping, refusing unknown keys.

    Args:
        cls: the dataclass, e.g. :class:`TrainConfig`.
        data: the mapping (missing keys take the dataclass defaults).
        where: the dotted config path, used in error messages.

    Example:
        >>> parse_section(TrainConfig, {"steps": 10}).steps
        10
        >>> parse_section(TrainConfig, {"step": 10})
        Traceback (most recent call last):
        ...
        medtl.config.ConfigError: config key 'step': unknown. Allowed keys: amp, augment, ...
    """
    data = data or {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"config key '{key}': unknown. Allowed keys: {', '.join(sorted(names))}")
    kwargs = {
        name: _coerce(data[name], hints[name], f"{where}.{name}" if where else name)
        for name in names
        if name in data
    }
    if where and isinstance(hints.get("where"), InitVar):  # messages name the key's path
        kwargs["where"] = where
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_json_arg(text: str, what: str) -> dict[str, Any]:
    """Parse a JSON settings string given on the command line, or ``@file.json``."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what}: expected JSON, got {text[:80]!r} ({exc})") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {value!r}")
    return value


#: How a JSON-schema type is said in a message.
_TYPE_WORDS = {
    "object": "a mapping (key: value)",
    "array": "a list",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "string": "a text",
    "null": "null",
}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NULL = ("null", "Null", "NULL", "~")


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _typed(text: str, types: set[str]) -> Any:
    """``text`` as the type the schema asks for, when it reads as exactly one; else as is."""
    if "null" in types and text.strip() in _NULL:
        return None
    if "string" in types:
        return text
    word = text.strip()
    if "boolean" in types and word.lower() in ("true", "false"):
        return word.lower() == "true"
    if types & {"integer", "number"} and _INTEGER.fullmatch(word):
        return int(word)
    if "number" in types:
        try:
            number = float(word)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    return text


def read_text_values(value: Any, schema: dict[str, Any]) -> Any:
    """Turn numbers, booleans and nulls written as text into the types the schema asks for.

    Snakemake reads the values inside ``--config train='{steps: 500}'`` as text (YAML's
    base loader), so ``steps`` arrives as ``'500'``. Where the schema expects a whole
    number, a number, true/false or null and the text is exactly one (``500``, ``0.002``,
    ``true``, ``null``), it becomes that value; anything else is left for the schema to
    refuse. Mappings and lists are converted in place, item by item.

    Example:
        >>> schema = {"properties": {"steps": {"type": "integer"}, "tta": {"type": "boolean"}}}
        >>> read_text_values({"steps": "500", "tta": "true"}, schema)
        {'steps': 500, 'tta': True}
        >>> read_text_values({"steps": "many"}, schema)
        {'steps': 'many'}
    """
    branches = [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = read_text_values(item, sub)
        return value
    if isinstance(value, list):
        for branch in branches:
            items = branch.get("items")
            if isinstance(items, dict) and "array" in _types(branch):
                value[:] = [read_text_values(item, items) for item in value]
                break
        return value
    if isinstance(value, str):
        return _typed(value, {t for branch in branches for t in _types(branch)})
    return value


def _expected(schema: dict[str, Any]) -> str:
    words = [_TYPE_WORDS.get(t, t) for t in _types(schema)]
    return " or ".join(words) or "another value"


def _describe_error(error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    validator = error.validator
    described = error.schema.get("description", "")
    hint = f" ({described})" if described else ""
    if "propertyNames" in error.schema_path:
        why = f" ({described})" if described else f"; {error.message}"
        return f"config key '{path}.{error.instance}': not allowed as a key here{why}"
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = f"{path}.{extra[0]}" if path != "(top level)" else extra[0]
        close = difflib.get_close_matches(str(extra[0]), allowed, n=1)
        guess = f" Did you mean '{close[0]}'?" if close else ""
        return f"config key '{key}': unknown.{guess} Allowed keys here: {', '.join(allowed)}"
    if validator == "enum":
        return (
            f"config key '{path}': got {error.instance!r}; allowed values: "
            f"{', '.join(repr(v) for v in error.validator_value)}"
        )
    if validator == "required":
        missing = re.match(r"'([^']+)'", error.message)
        key = f"{path}.{missing[1]}" if missing else path
        return f"config key '{key}': missing; it is required here{hint}"
    if validator == "type":
        return (
            f"config key '{path}': got {error.instance!r}; expected {_expected(error.schema)}{hint}"
        )
    if validator in ("minItems", "maxItems"):
        low, high = error.schema.get("minItems"), error.schema.get("maxItems")
        count = (
            f"exactly {low}" if low == high else (f"at least {low}" if low else f"at most {high}")
        )
        return (
            f"config key '{path}': got {error.instance!r} ({len(error.instance)} values); "
            f"expected {count} values{hint}"
        )
    if validator == "minProperties":
        return (
            f"config key '{path}': got {error.instance!r}; expected at least "
            f"{error.validator_value} entry{hint}"
        )
    return f"config key '{path}': got {error.instance!r}; {error.message}{hint}"


def sources_note(sources: Sequence[str | Path]) -> str:
    """`` (a.yaml, --config)``: where the config came from, for messages ("" if unknown)."""
    return f" ({', '.join(str(s) for s in sources)})" if sources else ""


def validate_config(
    config: dict[str, Any], schema_path: str | Path, sources: Sequence[str | Path] = ()
) -> dict[str, Any]:
    """Validate the workflow config against the JSON schema and fill in defaults.

    Values written as text where the schema expects numbers, true/false or null (as
    Snakemake's ``--config KEY={...}`` passes them) are read first, see
    :func:`read_text_values`.

    Args:
        config: the loaded YAML (modified in place: text values read, defaults added).
        schema_path: the schema file (YAML).
        sources: where the config came from (config files, ``--config``), named in
            the message.

    Returns:
        The same mapping, completed.

    Raises:
        ConfigError: listing every problem: key, value found and what is allowed.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator_cls = jsonschema.validators.validator_for(schema)

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = json.loads(json.dumps(sub["default"]))
        yield from validator_cls.VALIDATORS["properties"](validator, properties, instance, schema)

    read_text_values(config, schema)
    filling = jsonschema.validators.extend(validator_cls, {"properties": set_defaults})
    errors = sorted(filling(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {_describe_error(e)}" for e in errors)
        raise ConfigError(
            f"the config{sources_note(sources)} does not match {Path(schema_path).name}:\n{lines}\n"
            "How to fix: correct these keys; config/config.yaml explains every key."
        )
    return config


def training_seeds(config: dict[str, Any]) -> dict[str, list[int]]:
    """The seeds each arm trains with: the workflow axis of training runs.

    ``seeds`` (a list) names the seeds of every arm; an arm's ``repeats: N`` keeps the
    first N of them (so arms share seeds: seed s draws the same batch order and
    augmentation for every arm, and arm differences are paired within a seed). Without
    ``seeds`` every arm trains once, with ``seed``.

    Raises:
        ConfigError: a seed listed twice, or an arm asking for more repeats than seeds.

    Example:
        >>> training_seeds({"seed": 1, "arms": {"a": {}, "b": {"repeats": 1}},
        ...                 "seeds": [1, 2, 3]})
        {'a': [1, 2, 3], 'b': [1]}
        >>> training_seeds({"seed": 4, "arms": {"a": {}}})
        {'a': [4]}
    """
    seeds = config.get("seeds") or [config.get("seed", 1)]
    seeds = [int(s) for s in seeds]
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ConfigError(
            f"config key 'seeds': got {seeds}; seed {twice[0]} is listed twice, and a run "
            "repeated with the same seed measures nothing. How to fix: list distinct seeds"
        )
    out = {}
    for name, arm in config["arms"].items():
        repeats = int((arm or {}).get("repeats") or 0)
        if repeats > len(seeds):
            raise ConfigError(
                f"config key 'arms.{name}.repeats': got {repeats}, but 'seeds' lists "
                f"{len(seeds)} ({seeds}). How to fix: lower repeats, or list more seeds"
            )
        out[name] = seeds[:repeats] if repeats else list(seeds)
    return out
