"""The schema is the one source of the config's defaults and choices.

Every record's defaults, every closed choice and every command-line option that sets a
config key must say what ``pipeline/schemas/config.schema.yaml`` says; these tests fail
on the first that drifts, naming it.
"""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

from medtl.cli.main import app
from medtl.config import (
    ARM_INITS,
    ARM_STRATEGIES,
    BLEND_MODES,
    DATASET_KINDS,
    DEVICES,
    EMPTY_DICE,
    NORMALIZATIONS,
    POSTPROCESS_CANDIDATES,
    SPACING_MODES,
    ArmConfig,
    DatasetConfig,
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
    load_schema,
    schema_defaults,
    to_dict,
)

#: Record → its section of the schema.
RECORDS = {
    ModelConfig: "model",
    TrainConfig: "train",
    PretrainConfig: "pretrain",
    PreprocessConfig: "preprocess",
    PredictConfig: "predict",
    EvaluateConfig: "evaluate",
    PostprocessConfig: "postprocess",
    SplitsConfig: "splits",
    ReportConfig: "report",
    TrustConfig: "trust",
    ShiftConfig: "shift",
    DatasetConfig: "dataset",
}


def _node(dotted: str) -> dict:
    node = load_schema()
    for key in dotted.split("."):
        node = node["properties"][key]
    return node


def _record_defaults(cls: type) -> dict:
    return {f.name: to_dict(getattr(cls(), f.name)) for f in dataclasses.fields(cls)}


def _mismatches(cls: type, section: str) -> list[str]:
    """Every field whose default differs from the schema's, nested records included."""
    ours, schema = _record_defaults(cls), schema_defaults(section)
    out = [f"{section}: keys {sorted(set(ours) ^ set(schema))} in one only"] * (
        set(ours) != set(schema)
    )
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for key, value in ours.items():
        nested = getattr(cls(), key)
        if dataclasses.is_dataclass(nested):
            out += _mismatches(type(nested), f"{section}.{key}")
        elif key in schema and schema[key] != value:
            out.append(f"{section}.{key}: record {value!r} ({hints[key]}), schema {schema[key]!r}")
    return out


@pytest.mark.parametrize("cls", list(RECORDS), ids=lambda c: c.__name__)
def test_record_defaults_are_the_schemas(cls: type) -> None:
    assert _mismatches(cls, RECORDS[cls]) == []


def test_arm_defaults_are_the_schemas() -> None:
    schema = _node("arms")["additionalProperties"]["properties"]
    arm = ArmConfig()
    for key, spec in schema.items():
        if "default" in spec:
            assert to_dict(getattr(arm, key)) == spec["default"], key


@pytest.mark.parametrize(
    ("choices", "key"),
    [
        (ARM_STRATEGIES, "arms.*.strategy"),
        (ARM_INITS, "arms.*.init"),
        (DEVICES, "device"),
        (NORMALIZATIONS, "preprocess.normalization"),
        (BLEND_MODES, "predict.mode"),
        (EMPTY_DICE, "evaluate.empty_dice"),
        (POSTPROCESS_CANDIDATES, "postprocess.candidates[]"),
        (DATASET_KINDS, "dataset.kind"),
    ],
)
def test_choices_are_the_schemas_enums(choices: tuple[str, ...], key: str) -> None:
    head, _, tail = key.partition(".*.")
    node = _node(head)["additionalProperties"]["properties"][tail] if tail else None
    if node is None:
        node = _node(key.removesuffix("[]"))
        node = node["items"] if key.endswith("[]") else node
    assert tuple(node["enum"]) == choices


def test_spacing_modes_are_the_schemas_string_choices() -> None:
    strings = [o for o in _node("preprocess.target_spacing")["oneOf"] if o["type"] == "string"]
    assert [tuple(o["enum"]) for o in strings] == [SPACING_MODES]


#: Command-line options that set a config key: (command, option) → the key.
OPTIONS = {
    ("demo-data", "seed"): "dataset.demo.seed",
    ("demo-data", "n_source"): "dataset.demo.n_source",
    ("demo-data", "n_patients"): "dataset.demo.n_patients",
    ("demo-data", "shift"): "dataset.demo.shift",
    ("ingest", "salt"): "salt",
    ("ingest", "workers"): "dataset.workers",
    ("preprocess", "workers"): "preprocess.workers",
    ("split", "folds"): "splits.folds",
    ("split", "seed"): "splits.seed",
    ("split", "val_fraction"): "splits.val_fraction",
    ("subset", "seed"): "splits.seed",
    ("predict-fold", "device"): "device",
    ("predict", "device"): "device",
    ("predict", "overlap"): "predict.overlap",
    ("predict", "tta"): "predict.tta",
    ("check-device", "device"): "device",
    ("check-device", "gpus"): "gpus",
}

#: Options whose default differs from the config's on purpose, and why.
DIFFERENT_ON_PURPOSE = {
    # `medtl ingest` on a folder of image files outside the workflow does not know the
    # modality; the workflow always passes dataset.modality (MR unless set).
    ("ingest", "modality"): "dataset.modality",
}


@pytest.mark.parametrize(("command", "option"), list(OPTIONS), ids="{0[0]}:{0[1]}".format)
def test_option_defaults_are_the_schemas(command: str, option: str) -> None:
    click = typer.main.get_command(app).commands[command]
    default = next(p.default for p in click.params if p.name == option)
    section, _, key = OPTIONS[command, option].rpartition(".")
    assert default == schema_defaults(section)[key]


def test_options_that_differ_on_purpose_still_differ() -> None:
    for (command, option), dotted in DIFFERENT_ON_PURPOSE.items():
        click = typer.main.get_command(app).commands[command]
        default = next(p.default for p in click.params if p.name == option)
        section, _, key = dotted.rpartition(".")
        assert default != schema_defaults(section)[key], "now equal: move it to OPTIONS"


def test_seed_fallback_of_settings_is_the_schemas() -> None:
    from medtl.cli.common import settings_seed

    assert settings_seed({}) == schema_defaults()["seed"] == 1
    assert settings_seed({"seed": 4}) == 4


def test_top_level_fallbacks_are_the_schemas() -> None:
    from medtl.config import DEFAULT_CLASSES, DEFAULT_DEVICE, DEFAULT_SEED

    top = schema_defaults()
    assert (
        top["seed"],
        top["device"],
        top["classes"],
    ) == (DEFAULT_SEED, DEFAULT_DEVICE, DEFAULT_CLASSES)
