"""Corpus entries: the workflow config, checked as the Snakefile checks it when it starts.

Each entry writes ``config.yaml`` (and the files it names) under ``root / "in"`` and runs
:func:`medtl.checks.check_workflow_config` on it, the function the Snakefile calls before
any job: a :class:`~medtl.kernel.errors.MedtlError` is the ``error`` outcome with its message;
any other exception is a traceback, which the corpus refuses.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import yaml

from medtl.checks import check_workflow_config
from medtl.kernel.errors import MedtlError
from tests.reliability.corpus import ACCEPTED, ERROR, Outcome, case

SCHEMA = Path(__file__).resolve().parents[2] / "pipeline" / "schemas" / "config.schema.yaml"


def config_outcome(root: Path, config: dict) -> Outcome:
    """Write ``config`` as ``root/in/config.yaml`` and return how the start checks end.

    Relative paths in the config are relative to ``root/in`` (the working directory).
    ``details["config"]`` is the checked config, completed with the schema's defaults.
    """
    folder = root / "in"
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    def run() -> Outcome:
        loaded = yaml.safe_load(path.read_text())
        try:
            check_workflow_config(loaded, SCHEMA, sources=[path], workdir=folder)
        except MedtlError as exc:
            return Outcome(ERROR, str(exc))
        except Exception:  # noqa: BLE001 - the corpus reports any other exception as a bug
            return Outcome(ERROR, "", traceback.format_exc())
        return Outcome(ACCEPTED, "", details={"config": loaded})

    return run


def _weights(path: Path) -> Path:
    """A state dict saved with torch.save, as a checkpoint of your own: the weights of the
    config's (default) network, so that the start checks find them fitting."""
    import torch

    from medtl.config import ModelConfig
    from medtl.models.networks import build_network

    torch.save(build_network(ModelConfig(), 1, 2).state_dict(), path)
    return path


def _sheet(root: Path) -> str:
    """A case sheet to point dataset.path at (its content is ingest's business)."""
    (root / "in" / "cases.tsv").write_text("image\tlabel\nimg.nii.gz\tlab.nii.gz\n")
    return "cases.tsv"


# ----------------------------------------------------------- findings of the issue


@case(
    "config_checkpoint_without_source",
    "config",
    "your own `pretrain.checkpoint` with `pretrain.source: null` (the documented way)",
    ACCEPTED,
    r"^$",
)
def _(root):
    _weights(root / "in" / "weights.pt")
    config = {
        "dataset": {"kind": "path", "path": _sheet(root)},
        "pretrain": {"source": None, "checkpoint": "weights.pt"},
    }
    return config_outcome(root, config)


def _steps_500(outcome: Outcome) -> None:
    train = outcome.details["config"]["train"]
    assert train["steps"] == 500 and isinstance(train["steps"], int), train["steps"]
    assert train["lr"] == 0.002 and train["amp"] is True


@case(
    "config_numbers_as_text",
    "config",
    "numbers and true/false as text, as `--config train='{steps: 500}'` passes them",
    ACCEPTED,
    r"^$",
    check=_steps_500,
)
def _(root):
    return config_outcome(root, {"train": {"steps": "500", "lr": "0.002", "amp": "true"}})


@case(
    "config_partial_without_unfreeze_stages",
    "config",
    "an arm `strategy: partial` without `unfreeze_stages`",
    ERROR,
    r"'arms\.finetune_partial\.unfreeze_stages': got 0",
    names="config.yaml",
)
def _(root):
    arms = {
        "scratch": {"init": "random"},
        "finetune_partial": {"init": "pretrained", "strategy": "partial"},
    }
    return config_outcome(root, {"arms": arms})


@case(
    "config_gradual_without_schedule",
    "config",
    "an arm `strategy: gradual` with neither `unfreeze_every` nor `unfreeze_at`",
    ERROR,
    r"'arms\.slow\.unfreeze_every / unfreeze_at'.*exactly one schedule",
    names="config.yaml",
)
def _(root):
    arms = {"scratch": {"init": "random"}, "slow": {"init": "pretrained", "strategy": "gradual"}}
    return config_outcome(root, {"arms": arms})


@case(
    "config_random_init_frozen",
    "config",
    "an arm `init: random` with `freeze_encoder: true` (a frozen random encoder)",
    ERROR,
    r"'arms\.frozen_random\.init': got 'random' with freeze_encoder: true.*never learn",
    names="config.yaml",
)
def _(root):
    arms = {
        "scratch": {"init": "random"},
        "frozen_random": {"init": "random", "freeze_encoder": True},
    }
    return config_outcome(root, {"arms": arms})


@case(
    "config_random_init_partial",
    "config",
    "an arm `init: random` with `strategy: partial`",
    ERROR,
    r"'arms\.p\.init': got 'random' with strategy: partial",
    names="config.yaml",
)
def _(root):
    arms = {
        "scratch": {"init": "random"},
        "p": {"init": "random", "strategy": "partial", "unfreeze_stages": 2},
    }
    return config_outcome(root, {"arms": arms})


@case(
    "config_patch_not_multiple",
    "config",
    "`train.patch_size: [24, 24, 24]` for basicunet (docs/configuration.md's example)",
    ERROR,
    r"'train\.patch_size': got \[24, 24, 24\]; basicunet needs every side to be a multiple "
    r"of 16\. How to fix: use e\.g\. \[32, 32, 32\]",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"train": {"patch_size": [24, 24, 24]}})


@case(
    "config_patch_swinunetr",
    "config",
    "`train.patch_size: [48, 48, 48]` for swinunetr (needs multiples of 32)",
    ERROR,
    r"'train\.patch_size': got \[48, 48, 48\]; swinunetr needs every side to be a multiple of 32",
    names="config.yaml",
)
def _(root):
    return config_outcome(
        root, {"model": {"name": "swinunetr"}, "train": {"patch_size": [48, 48, 48]}}
    )


@case(
    "config_pretrain_patch_plainconvunet",
    "config",
    "`pretrain.patch_size: [16, 16, 16]` for a 6-stage plainconvunet (needs multiples of 32)",
    ERROR,
    r"'pretrain\.patch_size': got \[16, 16, 16\]; plainconvunet needs every side to be a "
    r"multiple of 32",
    names="config.yaml",
)
def _(root):
    config = {
        "model": {"name": "plainconvunet", "features": [8, 16, 32, 64, 128, 128]},
        "train": {"patch_size": [64, 64, 32]},
        "pretrain": {"patch_size": [16, 16, 16]},
    }
    return config_outcome(root, config)


@case(
    "config_ssl_patch_not_square",
    "config",
    "`pretrain_ssl.patch_size: [64, 32, 16]` with an SSL arm (rotations need x = y)",
    ERROR,
    r"'pretrain_ssl\.patch_size': got \[64, 32, 16\].*x and y must be equal",
    names="config.yaml",
)
def _(root):
    arms = {"scratch": {"init": "random"}, "ssl": {"init": "ssl"}}
    return config_outcome(root, {"arms": arms, "pretrain_ssl": {"patch_size": [64, 32, 16]}})


@case(
    "config_unknown_reference_arm",
    "config",
    "`report.reference_arm` naming no arm",
    ERROR,
    r"'report\.reference_arm': got 'baseline', which is not an arm; expected one of scratch, "
    r"finetune",
    names="config.yaml",
)
def _(root):
    arms = {"scratch": {"init": "random"}, "finetune": {"init": "pretrained"}}
    return config_outcome(root, {"arms": arms, "report": {"reference_arm": "baseline"}})


@case(
    "config_checkpoint_missing",
    "config",
    "`pretrain.checkpoint` naming a file that does not exist",
    ERROR,
    r"'pretrain\.checkpoint': got 'weights\.pt', which does not exist",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"pretrain": {"checkpoint": "weights.pt"}})


@case(
    "config_checkpoint_text_file",
    "config",
    "`pretrain.checkpoint` naming a text file",
    ERROR,
    r"'pretrain\.checkpoint':.*weights\.pt",
    names="config.yaml",
)
def _(root):
    (root / "in" / "weights.pt").write_text("these are not weights\n")
    return config_outcome(root, {"pretrain": {"checkpoint": "weights.pt"}})


@case(
    "config_pretraining_without_source",
    "config",
    "pretrained arms with neither `pretrain.source` nor `pretrain.checkpoint` (own data)",
    ERROR,
    r"'pretrain\.source': empty, but arm\(s\) frozen, finetune start from pretrained weights",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"dataset": {"kind": "path", "path": _sheet(root)}})


@case(
    "config_dataset_path_empty",
    "config",
    "`dataset.kind: dicom` without `dataset.path`",
    ERROR,
    r"'dataset\.path': empty while dataset\.kind is 'dicom'",
    names="config.yaml",
)
def _(root):
    return config_outcome(
        root, {"dataset": {"kind": "dicom"}, "arms": {"scratch": {"init": "random"}}}
    )


@case(
    "config_batch_not_multiple_of_gpus",
    "config",
    "`train.batch_size: 3` with `gpus: 2` (data-parallel training)",
    ERROR,
    r"'train\.batch_size': got 3 with gpus: 2.*set train\.batch_size: 4",
    names="config.yaml",
)
def _(root):
    return config_outcome(
        root, {"gpus": 2, "arms": {"scratch": {"init": "random"}}, "train": {"batch_size": 3}}
    )


@case(
    "config_warmup_not_below_steps",
    "config",
    "`train.warmup_steps` as long as the run",
    ERROR,
    r"'train\.warmup_steps': got 100; expected 0 to 99",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"train": {"steps": 100, "warmup_steps": 100}})


# ------------------------------------------------------------------ schema checks


@case(
    "config_unknown_top_level_key",
    "config",
    "a misspelt top-level key (`trian:`)",
    ERROR,
    r"config key 'trian': unknown\. Did you mean 'train'\?",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"trian": {"steps": 10}})


@case(
    "config_wrong_type",
    "config",
    "a word where a number belongs (`train.steps: many`)",
    ERROR,
    r"config key 'train\.steps': got 'many'; expected an integer",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"train": {"steps": "many"}})


@case(
    "config_classes_missing",
    "config",
    "`classes:` left empty (no mapping)",
    ERROR,
    r"config key 'classes': got None; expected a mapping",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"classes": None})


@case(
    "config_class_zero",
    "config",
    "label value 0 used as a class",
    ERROR,
    r"config key 'classes\.0': not allowed as a key here.*0 is the background",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"classes": {"0": "background", "1": "tumour"}})


@case(
    "config_negative_steps",
    "config",
    "`train.steps: -5`",
    ERROR,
    r"config key 'train\.steps': got -5; -5 is less than the minimum of 1",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"train": {"steps": -5}})


@case(
    "config_patch_two_numbers",
    "config",
    "`train.patch_size` with 2 numbers",
    ERROR,
    r"config key 'train\.patch_size': got \[32, 32\] \(2 values\); expected exactly 3 values",
    names="config.yaml",
)
def _(root):
    return config_outcome(root, {"train": {"patch_size": [32, 32]}})
