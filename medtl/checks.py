"""Checks of the workflow config that span several keys, run when the workflow starts.

:func:`check_workflow_config` is what the Snakefile calls before any rule runs: the
schema (:func:`medtl.config.validate_config`), then every check that needs more than one
key: the arms' strategies, each patch against the network, the batch against the GPUs,
the report's reference arm, the data and the weights the arms need. A config that cannot
run stops there, with the key, the value and the fix, rather than in a job after ingest
and preprocessing (and again on its retry). The checks are cheap: torch is imported only
when ``pretrain.checkpoint`` is set, to read that file once as training will.

:func:`check_job_python` checks that the Python the jobs run (``python -m medtl``) can
import medtl, so that no job fails with "command not found" or "No module named medtl".

Example:
    >>> config = {"arms": {"p": {"init": "pretrained", "strategy": "partial"}}}
    >>> check_workflow_config(config, "pipeline/schemas/config.schema.yaml")
    ... # doctest: +SKIP
    Traceback (most recent call last):
    ...
    medtl.kernel.errors.ConfigError: the config cannot run:
      - config key 'arms.p.unfreeze_stages': got 0; strategy 'partial' needs ...
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from medtl.config import (
    ArmConfig,
    DatasetConfig,
    EvaluateConfig,
    ModelConfig,
    PostprocessConfig,
    PredictConfig,
    PreprocessConfig,
    PretrainConfig,
    ReportConfig,
    SplitsConfig,
    TrainConfig,
    TrustConfig,
    parse_section,
    sources_note,
    to_dict,
    training_seeds,
    validate_config,
)
from medtl.kernel.classes import ClassMap
from medtl.kernel.errors import ConfigError, MedtlError

#: Where the demo's labelled source set is generated (pipeline/demo.smk).
DEMO_SOURCE = "data/demo/source"

#: Strategies that keep (some of) the encoder frozen: pointless from random weights.
FROZEN_STRATEGIES = ("frozen", "partial", "gradual")

T = TypeVar("T")


@contextmanager
def stop_on_error() -> Iterator[None]:
    """Turn a :class:`MedtlError` into the CLI's one line ``medtl: error: ...`` and exit 1.

    For the checks the Snakefile runs when it starts: Snakemake would show the error with
    the Snakefile's line and a few frames of medtl's code, which read like a crash.
    """
    try:
        yield
    except MedtlError as exc:
        raise SystemExit(f"medtl: error: {exc}") from None


def check_workflow_config(
    config: dict[str, Any],
    schema_path: str | Path,
    sources: Sequence[str | Path] = (),
    workdir: str | Path = ".",
    read_checkpoint: bool = True,
) -> dict[str, Any]:
    """Validate the workflow config and run every check that spans several keys.

    Args:
        config: the loaded config (completed in place, see :func:`validate_config`).
        schema_path: ``pipeline/schemas/config.schema.yaml``.
        sources: the config files (and ``--config``) it came from, named in messages.
        workdir: the folder relative paths (data set, checkpoint) are relative to.
        read_checkpoint: read ``pretrain.checkpoint`` through
            :func:`medtl.models.weights.read_weights` (imports torch; the workflow skips
            it inside jobs, which re-read the Snakefile).

    Returns:
        The completed config.

    Raises:
        ConfigError: the schema's problems, or else every cross-key problem, one a line,
            each with its key, the value found and the fix.
    """
    validate_config(config, schema_path, sources)
    problems = config_problems(config, Path(workdir), read_checkpoint)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"the config{sources_note(sources)} cannot run:\n{lines}")
    return config


def config_problems(
    config: dict[str, Any], workdir: Path = Path("."), read_checkpoint: bool = True
) -> list[str]:
    """Every problem of a schema-valid config that involves several keys (empty if none)."""
    problems: list[str] = []
    model = _parsed(ModelConfig, config["model"], "model", problems)
    _parsed(TrainConfig, config["train"], "train", problems)
    _parsed(PretrainConfig, config["pretrain"], "pretrain", problems)
    _parsed(PreprocessConfig, config["preprocess"], "preprocess", problems)
    _parsed(PredictConfig, config["predict"], "predict", problems)
    _parsed(EvaluateConfig, config["evaluate"], "evaluate", problems)
    _parsed(PostprocessConfig, config["postprocess"], "postprocess", problems)
    _parsed(TrustConfig, config["trust"], "trust", problems)
    _parsed(SplitsConfig, config["splits"], "splits", problems)
    report = _parsed(ReportConfig, config["report"], "report", problems)
    dataset = _parsed(DatasetConfig, config["dataset"], "dataset", problems)
    arms = {
        name: arm
        for name, data in config["arms"].items()
        if (arm := _parsed(ArmConfig, data, f"arms.{name}", problems)) is not None
    }
    problems += _arm_problems(config, arms)
    problems += _seed_problems(config)
    problems += _fraction_problems(config)
    if model is not None:
        problems += _patch_problems(config, model)
    problems += _batch_problems(config)
    if report is not None:
        problems += _report_problems(config, report)
    if dataset is not None:
        problems += _data_problems(config, dataset, workdir)
    problems += _like_pretrained_problems(config, workdir)
    if read_checkpoint:
        problems += _checkpoint_problems(config, workdir)
    return problems


def runs_pretraining(config: dict[str, Any]) -> bool:
    """Whether supervised pretraining runs: an arm starts from it and no checkpoint is set."""
    return uses_init(config, "pretrained") and not config["pretrain"]["checkpoint"]


def training_sections(config: dict[str, Any]) -> list[str]:
    """The config sections of the trainings this config runs: ``train`` always, then
    ``pretrain`` and ``pretrain_ssl`` when an arm needs them."""
    keys = ["train"]
    if runs_pretraining(config):
        keys.append("pretrain")
    if uses_init(config, "ssl"):
        keys.append("pretrain_ssl")
    return keys


def uses_init(config: dict[str, Any], init: str) -> bool:
    """Whether any arm has this ``init``."""
    return any(arm.get("init") == init for arm in config["arms"].values())


def _parsed(cls: type[T], data: Any, where: str, problems: list[str]) -> T | None:
    try:
        return parse_section(cls, data, where)
    except ConfigError as exc:
        problems.append(str(exc))
        return None


def _arm_problems(config: dict[str, Any], arms: dict[str, ArmConfig]) -> list[str]:
    problems = []
    for name, arm in arms.items():
        if arm.init == "random" and arm.strategy in FROZEN_STRATEGIES:
            given = "freeze_encoder: true" if config["arms"][name].get("freeze_encoder") else ""
            said = given or f"strategy: {arm.strategy}"
            problems.append(
                f"config key 'arms.{name}.init': got 'random' with {said}, which keeps "
                "encoder stages frozen at their random start: they would never learn. How "
                "to fix: set init: pretrained (or ssl) to freeze pretrained stages, or "
                "strategy: scratch to train every layer from random weights"
            )
    return problems


def _seed_problems(config: dict[str, Any]) -> list[str]:
    try:
        training_seeds(config)
    except ConfigError as exc:
        return [str(exc)]
    return []


def _patch_problems(config: dict[str, Any], model: ModelConfig) -> list[str]:
    from medtl.models.networks import patch_problem

    keys = training_sections(config)
    problems = []
    for key in keys:
        patch = config[key]["patch_size"]
        problem = patch_problem(model, patch)
        if problem:
            problems.append(f"config key '{key}.patch_size': {problem}")
    ssl_patch = config["pretrain_ssl"]["patch_size"]
    if "pretrain_ssl" in keys and ssl_patch[0] != ssl_patch[1]:
        problems.append(
            f"config key 'pretrain_ssl.patch_size': got {ssl_patch}; the rotation task turns "
            "patches in the axial plane, so x and y must be equal. How to fix: use e.g. "
            f"{[ssl_patch[0], ssl_patch[0], ssl_patch[2]]}"
        )
    return problems


def _batch_problems(config: dict[str, Any]) -> list[str]:
    gpus = config["gpus"]
    if gpus < 2:
        return []
    problems = []
    for key in training_sections(config):
        batch = config[key]["batch_size"]
        if batch % gpus:
            fixed = max(gpus, round(batch / gpus) * gpus)
            problems.append(
                f"config key '{key}.batch_size': got {batch} with gpus: {gpus}; each of the "
                f"{gpus} processes trains an equal share of the batch, so expected a multiple "
                f"of {gpus}. How to fix: set {key}.batch_size: {fixed}, or change gpus"
            )
    return problems


def _fraction_problems(config: dict[str, Any]) -> list[str]:
    arms = config.get("label_fraction_arms") or []
    unknown = [a for a in arms if a not in config["arms"]]
    if not unknown:
        return []
    return [
        f"config key 'label_fraction_arms': got {unknown[0]!r}; expected arms of 'arms' "
        f"({', '.join(config['arms'])}). How to fix: list configured arms, or null for all"
    ]


def _report_problems(config: dict[str, Any], report: ReportConfig) -> list[str]:
    reference, arms = report.reference_arm, list(config["arms"])
    if reference in arms:
        return []
    return [
        f"config key 'report.reference_arm': got {reference!r}, which is not an arm; "
        f"expected one of {', '.join(arms)}. How to fix: set report.reference_arm to the "
        f"arm the others are compared with, e.g. {arms[0]}"
    ]


def _data_problems(config: dict[str, Any], dataset: DatasetConfig, workdir: Path) -> list[str]:
    problems = []
    kind = dataset.kind
    if kind in ("path", "dicom"):
        problems += _path_problems(
            "dataset.path",
            dataset.path,
            workdir,
            f"empty while dataset.kind is '{kind}'",
            "name your case sheet, DICOM folder or NIfTI folder",
        )
    if kind == "dicomweb":
        problems += _dicomweb_problems(to_dict(dataset.dicomweb))
    source = config["pretrain"]["source"]
    demo_source = kind == "demo" and source in (None, DEMO_SOURCE)
    ssl_source = uses_init(config, "ssl") and config["pretrain_ssl"]["use_source"] and source
    if (runs_pretraining(config) or ssl_source) and not demo_source:
        arms = [n for n, a in config["arms"].items() if a.get("init") == "pretrained"]
        problems += _path_problems(
            "pretrain.source",
            source,
            workdir,
            f"empty, but arm(s) {', '.join(arms)} start from pretrained weights and "
            "pretrain.checkpoint is not set",
            "name a labelled source set to pretrain on (case sheet, MSD or nnU-Net folder), "
            "or your own weights as pretrain.checkpoint",
        )
    return problems


def _path_problems(key: str, value: str | None, workdir: Path, empty: str, fix: str) -> list[str]:
    if not value:
        return [f"config key '{key}': {empty}. How to fix: {fix}"]
    path = workdir / value
    if not path.exists():
        return [
            f"config key '{key}': got {value!r}, which does not exist (relative paths are "
            f"relative to the working directory {workdir.resolve()}). How to fix: {fix}"
        ]
    return []


def _dicomweb_problems(settings: dict[str, Any]) -> list[str]:
    from medtl.io.dicomweb import query_from_config

    try:
        query_from_config({k: v for k, v in settings.items() if k != "cache"})
    except ConfigError as exc:
        text = str(exc).replace("config key '", "config key 'dataset.dicomweb.", 1)
        return [text if "How to fix" in text else f"{text}. How to fix: correct it"]
    return []


def _like_pretrained_problems(config: dict[str, Any], workdir: Path) -> list[str]:
    """``like_pretrained`` needs a checkpoint to take the spacing or normalisation from."""
    pre = config["preprocess"]
    keys = [k for k in ("target_spacing", "normalization") if pre.get(k) == "like_pretrained"]
    if not keys:
        return []
    named = " and ".join(f"'preprocess.{k}'" for k in keys)
    checkpoint = config["pretrain"]["checkpoint"]
    if not checkpoint:
        return [
            f"config key {named}: like_pretrained takes the value from the pretrained "
            "checkpoint, but 'pretrain.checkpoint' is not set (medtl's own pretrain stage "
            "uses this plan, so it cannot supply one). How to fix: set pretrain.checkpoint "
            "to an nnssl, nnU-Net or medtl checkpoint, or give preprocess.target_spacing as "
            "auto or three numbers and preprocess.normalization as auto, zscore or ct"
        ]
    # A pretrained arm's check (_checkpoint_problems) already names a missing file.
    if not (workdir / checkpoint).exists() and not uses_init(config, "pretrained"):
        return [
            f"config key {named}: like_pretrained reads 'pretrain.checkpoint' {checkpoint!r}, "
            f"which does not exist (relative to {workdir.resolve()}). How to fix: name an "
            "existing checkpoint file"
        ]
    return []


def _checkpoint_problems(config: dict[str, Any], workdir: Path) -> list[str]:
    checkpoint = config["pretrain"]["checkpoint"]
    if not checkpoint or not uses_init(config, "pretrained"):
        return []
    path = workdir / checkpoint
    if not path.exists():
        return [
            f"config key 'pretrain.checkpoint': got {checkpoint!r}, which does not exist "
            f"(relative paths are relative to the working directory {workdir.resolve()}). "
            "How to fix: name your weights file (.pt, .pth, .safetensors) or MONAI bundle "
            "folder, or set checkpoint: null to pretrain on pretrain.source"
        ]
    from medtl.models.transfer import check_checkpoint

    pretrain = config["pretrain"]
    try:
        # The same reading, matching and refusal as training, on a network built and
        # thrown away: a mismatch stops the workflow here, not after ingest and preprocess.
        # Input channels are not known before ingest; the stem adapts to them in training.
        check_checkpoint(
            path,
            pretrain["format"],
            parse_section(ModelConfig, config["model"], "model"),
            1,
            ClassMap.parse(config["classes"], "classes").num_classes,
            pretrain["min_loaded_fraction"],
            pretrain["max_unused_fraction"],
            tuple(config["train"]["patch_size"]),
        )
    except MedtlError as exc:
        return [f"config key 'pretrain.checkpoint': {exc}"]
    except OSError as exc:
        return [
            f"config key 'pretrain.checkpoint': {checkpoint!r} cannot be read ({exc}). "
            "How to fix: check the file's permissions, or copy it where you can read it"
        ]
    return []


def check_job_python(python: Sequence[str], cwd: str | Path = ".") -> None:
    """Refuse to start when the Python the jobs run cannot import medtl.

    Args:
        python: the command that starts the jobs' Python (e.g. ``[sys.executable]``).
        cwd: the folder the jobs run in.

    Raises:
        MedtlError: naming the Python, what it said, and how to fix it.
    """
    try:
        result = subprocess.run(
            [*python, "-c", "import medtl"], cwd=cwd, capture_output=True, text=True, timeout=60
        )
        said = (result.stderr.strip().splitlines() or [""])[-1]
        ok = result.returncode == 0
    except OSError as exc:
        said, ok = str(exc), False
    if not ok:
        shown = " ".join(python)
        raise MedtlError(
            f"the jobs run `{shown} -m medtl`, but that Python cannot import medtl ({said}). "
            "How to fix: install medtl into it (`make install`, or "
            f"`{shown} -m pip install -e .` in the project folder), or start Snakemake with "
            "the Python of the environment that has medtl (`.venv/bin/snakemake ...`)"
        )
