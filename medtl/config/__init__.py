"""Typed, validated configuration.

The workflow's YAML is checked against ``pipeline/schemas/config.schema.yaml`` (with
defaults filled in) before any rule runs, by :func:`validate_config`. Each stage then
receives only its own section, as JSON on its command line, and turns it into one of
the frozen dataclasses of :mod:`.records` / :mod:`.arms` with :func:`parse_section`,
which checks it again at the edge: unknown keys and wrong types are refused with the
key, the value and what is allowed.

Modules: :mod:`.schema` (the schema file, its defaults, values written as text),
:mod:`.choices` (the closed choices), :mod:`.records` and :mod:`.arms` (the records),
:mod:`.parse` (mapping to record and back), :mod:`.validate` (the whole config).
"""

from medtl.config.arms import ArmConfig
from medtl.config.choices import (
    ARM_INITS,
    ARM_STRATEGIES,
    BLEND_MODES,
    DATASET_KINDS,
    DEVICES,
    EMPTY_DICE,
    NORMALIZATIONS,
    POSTPROCESS_CANDIDATES,
    SPACING_MODES,
    check_choice,
    check_device_name,
    window_setting,
)
from medtl.config.parse import load_json_arg, parse_section, to_dict
from medtl.config.records import (
    DEFAULT_CLASSES,
    DEFAULT_DEVICE,
    DEFAULT_SEED,
    AugmentConfig,
    DatasetConfig,
    DemoDataConfig,
    DicomwebConfig,
    EvaluateConfig,
    ModelConfig,
    PostprocessConfig,
    PredictConfig,
    PreprocessConfig,
    PretrainConfig,
    ReportConfig,
    ShiftConfig,
    SplitsConfig,
    TrainConfig,
    TrustConfig,
)
from medtl.config.schema import SCHEMA_PATH, load_schema, read_text_values, schema_defaults
from medtl.config.validate import sources_note, training_seeds, validate_config
from medtl.kernel.errors import ConfigError

__all__ = [
    "ARM_INITS",
    "ARM_STRATEGIES",
    "BLEND_MODES",
    "DATASET_KINDS",
    "DEFAULT_CLASSES",
    "DEFAULT_DEVICE",
    "DEFAULT_SEED",
    "DEVICES",
    "EMPTY_DICE",
    "NORMALIZATIONS",
    "SPACING_MODES",
    "POSTPROCESS_CANDIDATES",
    "SCHEMA_PATH",
    "ArmConfig",
    "AugmentConfig",
    "ConfigError",
    "DatasetConfig",
    "DemoDataConfig",
    "DicomwebConfig",
    "EvaluateConfig",
    "ModelConfig",
    "PostprocessConfig",
    "TrustConfig",
    "PredictConfig",
    "PreprocessConfig",
    "PretrainConfig",
    "ReportConfig",
    "ShiftConfig",
    "SplitsConfig",
    "TrainConfig",
    "check_choice",
    "check_device_name",
    "window_setting",
    "load_json_arg",
    "load_schema",
    "parse_section",
    "read_text_values",
    "schema_defaults",
    "sources_note",
    "to_dict",
    "training_seeds",
    "validate_config",
]
