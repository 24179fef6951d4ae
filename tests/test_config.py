"""Tests for medtl.config: typed sections (parse_section) and schema validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from medtl.config import (
    ArmConfig,
    AugmentConfig,
    ModelConfig,
    PredictConfig,
    PreprocessConfig,
    PretrainConfig,
    TrainConfig,
    parse_section,
    read_text_values,
    to_dict,
    validate_config,
)
from medtl.kernel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "pipeline" / "schemas" / "config.schema.yaml"
CONFIG = ROOT / "config" / "config.yaml"


# ---------------------------------------------------------------- parse_section


def test_parse_section_empty_gives_dataclass_defaults() -> None:
    assert parse_section(TrainConfig, {}) == TrainConfig()
    assert parse_section(TrainConfig, None) == TrainConfig()
    cfg = parse_section(TrainConfig, {"steps": 10})
    assert cfg.steps == 10
    assert cfg.batch_size == TrainConfig().batch_size
    assert cfg.augment == AugmentConfig()


def test_parse_section_unknown_key_names_key_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as info:
        parse_section(TrainConfig, {"step": 10}, "train")
    msg = str(info.value)
    assert "'train.step'" in msg
    assert "unknown" in msg
    for key in ("augment", "batch_size", "lr", "patch_size", "steps", "val_every"):
        assert key in msg


def test_parse_section_unknown_key_without_where_has_bare_key() -> None:
    with pytest.raises(ConfigError, match=r"config key 'colour': unknown"):
        parse_section(ModelConfig, {"colour": "red"})


@pytest.mark.parametrize(
    ("data", "key", "value"),
    [
        ({"steps": "many"}, "train.steps", "'many'"),
        ({"steps": True}, "train.steps", "True"),
        ({"lr": "fast"}, "train.lr", "'fast'"),
        ({"patch_size": [16, "x", 16]}, "train.patch_size[1]", "'x'"),
        ({"patch_size": 16}, "train.patch_size", "16"),
    ],
)
def test_parse_section_wrong_type_names_key_and_value(data: dict, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_section(TrainConfig, data, "train")
    msg = str(info.value)
    assert f"'{key}'" in msg
    assert value in msg


def test_parse_section_coerces_ints_to_float_and_lists_to_tuples() -> None:
    cfg = parse_section(TrainConfig, {"lr": 1, "patch_size": [16, 32, 48]})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.patch_size == (16, 32, 48)
    model = parse_section(ModelConfig, {"features": [4, 4, 8, 8, 16, 4]})
    assert model.features == (4, 4, 8, 8, 16, 4)


def test_parse_section_tuple_length_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"'train.patch_size': expected 3 values, got 2"):
        parse_section(TrainConfig, {"patch_size": [16, 16]}, "train")
    with pytest.raises(ConfigError, match=r"expected 3 values, got 4"):
        parse_section(PretrainConfig, {"patch_size": [16, 16, 16, 16]}, "pretrain")


def test_parse_section_nested_augment() -> None:
    cfg = parse_section(TrainConfig, {"augment": {"flip": 0.0, "noise": 1}}, "train")
    assert cfg.augment.flip == 0.0
    assert cfg.augment.noise == 1.0
    assert cfg.augment.rotate90 == AugmentConfig().rotate90
    with pytest.raises(ConfigError) as info:
        parse_section(TrainConfig, {"augment": {"flipp": 0.5}}, "train")
    assert "'train.augment.flipp'" in str(info.value)
    assert "flip" in str(info.value) and "rotate90" in str(info.value)
    with pytest.raises(ConfigError, match=r"'train.augment.flip': expected a number"):
        parse_section(TrainConfig, {"augment": {"flip": "often"}}, "train")
    with pytest.raises(ConfigError, match=r"'train.augment': expected a mapping"):
        parse_section(TrainConfig, {"augment": [0.5]}, "train")


def test_parse_section_union_target_spacing() -> None:
    assert parse_section(PreprocessConfig, {}).target_spacing == "auto"
    assert parse_section(PreprocessConfig, {"target_spacing": "auto"}).target_spacing == "auto"
    cfg = parse_section(PreprocessConfig, {"target_spacing": [1, 1.5, 3]})
    assert cfg.target_spacing == (1.0, 1.5, 3.0)
    assert all(isinstance(s, float) for s in cfg.target_spacing)
    for bad in (3, [1.0, 2.0], {"x": 1}):
        with pytest.raises(ConfigError) as info:
            parse_section(PreprocessConfig, {"target_spacing": bad}, "preprocess")
        assert "'preprocess.target_spacing'" in str(info.value)
        assert repr(bad) in str(info.value)


def test_parse_section_optional_str() -> None:
    assert parse_section(PretrainConfig, {"checkpoint": None}).checkpoint is None
    assert parse_section(PretrainConfig, {"checkpoint": "w.pt"}).checkpoint == "w.pt"
    with pytest.raises(ConfigError, match="pretrain.checkpoint"):
        parse_section(PretrainConfig, {"checkpoint": 3}, "pretrain")


@pytest.mark.parametrize(
    "obj",
    [
        TrainConfig(steps=7, patch_size=(16, 16, 32), augment=AugmentConfig(flip=0.25)),
        ModelConfig(features=(4, 4, 8, 8, 16, 4), dropout=0.1),
        PreprocessConfig(target_spacing=(1.0, 2.0, 3.0), normalization="ct"),
        PreprocessConfig(),
        PretrainConfig(checkpoint="x.safetensors"),
        PredictConfig(mode="constant"),
    ],
)
def test_to_dict_round_trip(obj) -> None:
    d = to_dict(obj)
    # Plain JSON-able data: tuples became lists, nested dataclasses became dicts.
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    assert parse_section(type(obj), d) == obj


def test_to_dict_turns_tuples_into_lists() -> None:
    d = to_dict(TrainConfig())
    assert d["patch_size"] == [32, 32, 16]
    assert isinstance(d["augment"], dict)


# ---------------------------------------------------------------- validate_config


def test_validate_config_fills_defaults_for_empty_config() -> None:
    cfg = validate_config({}, SCHEMA)
    assert cfg["splits"]["folds"] == 5
    assert cfg["seed"] == 1
    assert cfg["device"] == "auto"
    assert cfg["train"]["augment"]["flip"] == 0.5
    assert cfg["model"]["features"] == [16, 16, 32, 64, 128, 16]
    assert set(cfg["arms"]) == {"scratch", "frozen", "finetune"}
    assert cfg["arms"]["frozen"]["freeze_encoder"] is True
    assert cfg["arms"]["scratch"]["freeze_encoder"] is False
    assert cfg["arms"]["finetune"]["encoder_lr_scale"] == 0.2


def test_validate_config_defaults_match_dataclass_defaults() -> None:
    cfg = validate_config({}, SCHEMA)
    assert parse_section(TrainConfig, cfg["train"]) == TrainConfig()
    assert parse_section(ModelConfig, cfg["model"]) == ModelConfig()
    assert parse_section(PreprocessConfig, cfg["preprocess"]) == PreprocessConfig()
    assert parse_section(PredictConfig, cfg["predict"]) == PredictConfig()
    assert parse_section(PretrainConfig, cfg["pretrain"]) == PretrainConfig()


def test_validate_config_defaults_are_not_shared_between_calls() -> None:
    a = validate_config({}, SCHEMA)
    a["train"]["augment"]["flip"] = 0.0
    a["arms"]["scratch"]["init"] = "pretrained"
    b = validate_config({}, SCHEMA)
    assert b["train"]["augment"]["flip"] == 0.5
    assert b["arms"]["scratch"]["init"] == "random"


def test_validate_config_keeps_given_values() -> None:
    cfg = validate_config({"splits": {"folds": 3}, "train": {"steps": 9}}, SCHEMA)
    assert cfg["splits"]["folds"] == 3
    assert cfg["splits"]["seed"] == 0
    assert cfg["train"]["steps"] == 9
    assert cfg["train"]["batch_size"] == 2


def _assert_subset(given: object, resolved: object) -> None:
    """Every value given in the config is kept as is (defaults may only add keys)."""
    if isinstance(given, dict):
        assert isinstance(resolved, dict)
        for key, value in given.items():
            _assert_subset(value, resolved[key])
    else:
        assert given == resolved


def test_validate_config_accepts_shipped_config() -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    original = copy.deepcopy(raw)
    cfg = validate_config(raw, SCHEMA)
    _assert_subset(original, cfg)
    assert cfg["arms"]["scratch"]["freeze_encoder"] is False  # default filled in
    # every section of the shipped config also parses into its dataclass
    parse_section(TrainConfig, cfg["train"], "train")
    parse_section(ModelConfig, cfg["model"], "model")
    parse_section(PreprocessConfig, cfg["preprocess"], "preprocess")
    parse_section(PretrainConfig, cfg["pretrain"], "pretrain")
    parse_section(PredictConfig, cfg["predict"], "predict")


def _config_error(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    return str(info.value)


def test_validate_config_unknown_top_level_key() -> None:
    msg = _config_error({"trian": {"steps": 3}})
    assert "'trian'" in msg
    assert "unknown" in msg
    for key in ("train", "arms", "preprocess", "splits", "seed"):
        assert key in msg
    assert "How to fix" in msg


def test_validate_config_enum_lists_allowed_values() -> None:
    msg = _config_error({"device": "gpu"})
    assert "'device'" in msg
    assert "'gpu'" in msg
    for allowed in ("'auto'", "'cpu'", "'cuda'"):
        assert allowed in msg


def test_validate_config_wrong_type_in_section() -> None:
    msg = _config_error({"train": {"steps": "many"}})
    assert "'train.steps'" in msg
    assert "'many'" in msg
    assert "integer" in msg


def test_validate_config_unknown_key_in_section() -> None:
    msg = _config_error({"train": {"stepz": 3}})
    assert "'train.stepz'" in msg
    for key in ("steps", "batch_size", "patch_size", "lr", "augment"):
        assert key in msg
    # the allowed keys listed are those of the train section, not the top level
    assert "preprocess" not in msg.split("stepz", 1)[1].split("\n")[0]


def test_validate_config_reports_every_problem() -> None:
    msg = _config_error({"device": "gpu", "train": {"stepz": 3}})
    assert "'device'" in msg and "'train.stepz'" in msg


def test_validate_config_nested_arm_errors() -> None:
    msg = _config_error({"arms": {"a": {"init": "imagenet"}}})
    assert "'arms.a.init'" in msg
    assert "'random'" in msg and "'pretrained'" in msg
    msg = _config_error({"arms": {"a": {"freeze_encoder": True}}})
    assert "init" in msg


def test_validate_config_target_spacing_forms() -> None:
    assert validate_config({"preprocess": {"target_spacing": [1, 1, 2.5]}}, SCHEMA)
    msg = _config_error({"preprocess": {"target_spacing": [1, 1]}})
    assert "'preprocess.target_spacing'" in msg


# ------------------------------------------------- values from Snakemake's --config


def test_text_values_become_the_schemas_types() -> None:
    """`--config train='{steps: 500}'` passes every nested value as text (YAML's base
    loader); where the schema asks for a number, true/false or null, they are read."""
    given = {
        "train": {"steps": "500", "lr": "1e-3", "amp": "False", "patch_size": ["64", "64", "32"]},
        "preprocess": {"target_spacing": ["1", "1.5", "3"]},
        "pretrain": {"checkpoint": "null", "source": "data/src"},
        "arms": {"a": {"init": "pretrained", "encoder_lr_scale": "0.2"}},
        "salt": "123",
    }
    cfg = validate_config(given, SCHEMA)
    assert cfg["train"]["steps"] == 500 and type(cfg["train"]["steps"]) is int
    assert cfg["train"]["lr"] == 1e-3 and cfg["train"]["amp"] is False
    assert cfg["train"]["patch_size"] == [64, 64, 32]
    assert cfg["preprocess"]["target_spacing"] == [1, 1.5, 3]
    assert cfg["pretrain"]["checkpoint"] is None and cfg["pretrain"]["source"] == "data/src"
    assert cfg["arms"]["a"]["encoder_lr_scale"] == 0.2
    assert cfg["salt"] == "123"  # a string where the schema asks for one


@pytest.mark.parametrize(
    ("section", "value", "said"),
    [
        ({"train": {"steps": "5.0"}}, "'5.0'", "expected an integer"),
        ({"train": {"lr": "fast"}}, "'fast'", "expected a number"),
        ({"train": {"amp": "yes"}}, "'yes'", "expected true or false"),
        ({"train": {"lr": "nan"}}, "'nan'", "expected a number"),
    ],
)
def test_text_that_is_not_exactly_a_value_is_refused(section: dict, value: str, said: str) -> None:
    msg = _config_error(section)
    assert value in msg and said in msg


def test_read_text_values_leaves_other_shapes_alone() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert read_text_values({"n": 3, "other": "4"}, schema) == {"n": 3, "other": "4"}
    assert read_text_values({"n": ["1"]}, schema) == {"n": ["1"]}  # not a list here


# ------------------------------------------------------------------ messages


def test_unknown_key_suggests_the_close_one() -> None:
    msg = _config_error({"trian": {"steps": 3}})
    assert "config key 'trian': unknown. Did you mean 'train'?" in msg
    msg = _config_error({"train": {"val_evry": 3}})
    assert "config key 'train.val_evry': unknown. Did you mean 'val_every'?" in msg
    assert "Did you mean" not in _config_error({"zzz": 1})


def test_messages_name_the_config_files() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"seed": "x"}, SCHEMA, sources=["my.yaml", "--config"])
    assert str(info.value).startswith("the config (my.yaml, --config) does not match")


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"classes": None}, "config key 'classes': got None; expected a mapping"),
        ({"classes": {}}, "config key 'classes': got {}; expected at least 1 entry"),
        ({"classes": {"0": "bg"}}, "config key 'classes.0': not allowed as a key here (label"),
        ({"train": {"patch_size": [32, 32]}}, "got [32, 32] (2 values); expected exactly 3"),
        ({"arms": {"a": {"freeze_encoder": True}}}, "config key 'arms.a.init': missing"),
    ],
)
def test_schema_messages_say_what_was_expected(config: dict, said: str) -> None:
    msg = _config_error(config)
    assert said in msg
    assert "How to fix" in msg


# ------------------------------------------------------------- cross-key sections


def test_arm_messages_name_the_arm() -> None:
    with pytest.raises(ConfigError, match=r"'arms\.finetune_partial\.unfreeze_stages': got 0"):
        parse_section(
            ArmConfig, {"init": "pretrained", "strategy": "partial"}, "arms.finetune_partial"
        )
    arm = parse_section(ArmConfig, {"init": "pretrained"}, "arms.finetune")
    assert "where" not in to_dict(arm)  # a message detail, not a setting
    assert parse_section(ArmConfig, to_dict(arm)) == arm
    with pytest.raises(ConfigError, match=r"'arms\.a\.where': unknown"):
        parse_section(ArmConfig, {"init": "random", "where": "x"}, "arms.a")


def test_warmup_must_be_shorter_than_the_run() -> None:
    assert parse_section(TrainConfig, {"steps": 10, "warmup_steps": 9}).warmup_steps == 9
    with pytest.raises(ConfigError, match=r"'train.warmup_steps': got 10; expected 0 to 9"):
        parse_section(TrainConfig, {"steps": 10, "warmup_steps": 10}, "train")
