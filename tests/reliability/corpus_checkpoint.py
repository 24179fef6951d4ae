"""Corpus entries: weight files, read by ``medtl describe-model`` and at predict time.

``describe-model --pretrained`` reads and matches a checkpoint exactly as training does
(the same reader, renaming and refusal), so it stands in for the train stage here. A
trained ``best.pt`` is read by ``medtl predict`` from a finished run's results folder.
"""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import torch
import yaml

from medtl.config import ModelConfig  # noqa: E402
from medtl.layout import run_dir
from medtl.models.networks import build_network  # noqa: E402
from tests.models.weight_layouts import (
    medicalnet_checkpoint,
    nnunet_checkpoint,
    swin_ssl_checkpoint,
)
from tests.reliability.corpus import ACCEPTED, ERROR, Outcome, case, cli_outcome, write_nifti
from tests.reliability.corpus_predict import finished_run

BASIC = {"name": "basicunet", "features": [4, 4, 8, 8, 16, 4]}
RESNET10 = {"name": "flexibleunet", "backbone": "resnet10"}
SWIN = {"name": "swinunetr", "features": [12]}
PLAIN = {"name": "plainconvunet", "features": [4, 8, 16]}


def _network(model: dict, seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model.items()})
    return build_network(cfg, 1, 2)


def _config(root: Path, model: dict) -> Path:
    """A small workflow config under root/in naming ``model``, one class and one arm."""
    path = root / "in" / "config.yaml"
    arms = {"finetune": {"init": "pretrained", "encoder_lr_scale": 0.2}}
    path.write_text(yaml.safe_dump({"model": model, "classes": {"1": "organ"}, "arms": arms}))
    return path


def _describe(root: Path, model: dict, weights: Path, *extra: str):
    config = _config(root, model)
    return lambda: cli_outcome(
        ["describe-model", "--config", config, "--pretrained", weights, *extra]
    )


def _encoder_rows(outcome: Outcome) -> list[list[str]]:
    return [line.split() for line in outcome.message.splitlines() if line.startswith("encoder ")]


def _all_encoder_stages_pretrained(outcome: Outcome) -> None:
    rows = _encoder_rows(outcome)
    assert rows and all(r[3] == "yes" for r in rows), outcome.message
    assert "training would accept these weights" in outcome.message


class _Shell:
    """Unpickling this runs a shell command through ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _watching(marker: Path, run):
    """``run``, its outcome carrying the file the payload would create (for the check)."""

    def watched() -> Outcome:
        outcome = run()
        outcome.details["marker"] = marker
        return outcome

    return watched


def _nothing_ran(outcome: Outcome) -> None:
    assert not outcome.details["marker"].exists(), "the pickle's payload ran"
    assert "weights_only=False" not in outcome.message
    assert "add_safe_globals" not in outcome.message
    assert "torch.save(model.state_dict(), path)" in outcome.message


# ------------------------------------------------------------------ pretrained weights


@case(
    "checkpoint_malicious_pickle",
    "checkpoint",
    "a weights file whose pickle calls `os.system` when loaded",
    ERROR,
    r"refused: reading it would import and call os\.system.*state_dict",
    names="evil.pt",
    check=_nothing_ran,
)
def _(root):
    marker = root / "out" / "pwned"
    path = root / "in" / "evil.pt"
    state = {"conv_0.conv_0.conv.weight": torch.zeros(4)}
    torch.save({"state_dict": state, "x": _Shell(marker)}, path)
    return _watching(marker, _describe(root, BASIC, path))


@case(
    "checkpoint_resnet18_into_resnet10",
    "checkpoint",
    "MedicalNet ResNet-18 weights for a ResNet-10 backbone (98.8 % of its parameters match)",
    ERROR,
    r"48 of the 102 encoder tensors .* no place in the model.*looks like a resnet18 .*"
    r"backbone is resnet10 .*set model\.backbone: resnet18",
    names="resnet_18.pth",
)
def _(root):
    source = _network({"name": "flexibleunet", "backbone": "resnet18"})
    path = medicalnet_checkpoint(root / "in" / "resnet_18.pth", source)
    return _describe(root, RESNET10, path)


@case(
    "checkpoint_swin_ssl_stages_pretrained",
    "checkpoint",
    "Swin UNETR self-supervised weights (`model_swinvit.pt` key layout)",
    ACCEPTED,
    r"swinViT\.layers4 +[\d,]+ +yes.*loaded 126 of 126 encoder tensors",
    check=_all_encoder_stages_pretrained,
)
def _(root):
    path = swin_ssl_checkpoint(root / "in" / "model_swinvit.pt", _network(SWIN))
    return _describe(root, SWIN, path)


@case(
    "checkpoint_medicalnet_stages_pretrained",
    "checkpoint",
    "MedicalNet ResNet-10 weights (`resnet_10_23dataset.pth` key layout)",
    ACCEPTED,
    r"encoder\.layer4 +[\d,]+ +yes.*loaded 72 of 72 encoder tensors.*dilation",
    check=_all_encoder_stages_pretrained,
)
def _(root):
    path = medicalnet_checkpoint(root / "in" / "resnet_10_23dataset.pth", _network(RESNET10))
    return _describe(root, RESNET10, path)


@case(
    "checkpoint_missing_file",
    "checkpoint",
    "`--pretrained` naming a file that does not exist",
    ERROR,
    r"pretrained weights file not found",
    names="nope.pt",
)
def _(root):
    return _describe(root, BASIC, root / "in" / "nope.pt")


@case(
    "checkpoint_corrupt_safetensors",
    "checkpoint",
    "a `.safetensors` file whose header length is garbage",
    ERROR,
    r"not a readable \.safetensors file: its header is corrupt",
    names="weights.safetensors",
)
def _(root):
    path = root / "in" / "weights.safetensors"
    path.write_bytes((10**12).to_bytes(8, "little") + b'{"a": 1}')
    return _describe(root, BASIC, path)


@case(
    "checkpoint_folder_not_a_bundle",
    "checkpoint",
    "a folder that is not a MONAI bundle (no configs/, no models/model.pt)",
    ERROR,
    r"expected a MONAI bundle folder",
    names="not_a_bundle",
)
def _(root):
    folder = root / "in" / "not_a_bundle"
    (folder / "models").mkdir(parents=True)
    (folder / "README.md").write_text("weights to come\n")
    return _describe(root, BASIC, folder)


@case(
    "checkpoint_nnunet_without_plans",
    "checkpoint",
    "an nnU-Net v2 checkpoint with no plans in it or beside it",
    ERROR,
    r"nnU-Net checkpoint without its plans",
    names="checkpoint_final.pth",
)
def _(root):
    fold = root / "in" / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    path = nnunet_checkpoint(fold / "checkpoint_final.pth", _network(PLAIN), plans=None)
    return _describe(root, PLAIN, path)


@case(
    "checkpoint_every_shape_mismatches",
    "checkpoint",
    "weights of a wider network: every encoder tensor of another shape",
    ERROR,
    r"only 0% of the encoder's parameters.*of other shape.*set model\.features\[0\] to 8",
    names="wide.pt",
)
def _(root):
    path = root / "in" / "wide.pt"
    torch.save(_network({**BASIC, "features": [8, 8, 16, 16, 32, 8]}).state_dict(), path)
    return _describe(root, BASIC, path)


@case(
    "checkpoint_empty_state_dict",
    "checkpoint",
    "a weights file holding an empty state dict",
    ERROR,
    r"holds no tensors",
    names="empty.pt",
)
def _(root):
    path = root / "in" / "empty.pt"
    torch.save({"state_dict": {}}, path)
    return _describe(root, BASIC, path)


# ------------------------------------------------------------------ best.pt at predict time


def _finished_run(root: Path, best: bytes) -> Path:
    """A finished run (see ``corpus_predict.finished_run``) whose ``best.pt`` holds ``best``."""
    results = finished_run(root / "in" / "results")
    (run_dir(results, "finetune", 1, 0) / "best.pt").write_bytes(best)
    return results


def _predict(root: Path, results: Path):
    scan = write_nifti(root / "in" / "scans" / "scan.nii.gz")
    args = ["predict", scan, "--model", results, "--out", root / "out" / "masks"]
    return lambda: cli_outcome([*args, "--arm", "finetune", "--device", "cpu", "--quiet"])


def _good_best_pt_bytes(tmp: Path) -> bytes:
    net = _network(BASIC)
    path = tmp / "best.tmp.pt"
    payload = {"format": "medtl", "model": BASIC, "state_dict": net.state_dict(), "num_classes": 2}
    torch.save(payload, path)
    data = path.read_bytes()
    path.unlink()
    return data


def _rerun_offered(outcome: Outcome) -> None:
    assert "rerun the training job that writes it" in outcome.message
    assert "--forcerun" in outcome.message


@case(
    "checkpoint_truncated_best_pt",
    "checkpoint",
    "a finished run whose `best.pt` was cut short (half its bytes)",
    ERROR,
    r"best\.pt: is truncated or corrupt",
    names="best.pt",
    check=_rerun_offered,
)
def _(root):
    data = _good_best_pt_bytes(root / "out")
    return _predict(root, _finished_run(root, data[: len(data) // 2]))


@case(
    "checkpoint_text_best_pt",
    "checkpoint",
    "a finished run whose `best.pt` holds text",
    ERROR,
    r"best\.pt: is not a PyTorch checkpoint: it holds text",
    names="best.pt",
    check=_rerun_offered,
)
def _(root):
    return _predict(root, _finished_run(root, b"training still running, see the log\n"))


@case(
    "checkpoint_malicious_best_pt",
    "checkpoint",
    "a `best.pt` whose pickle calls `os.system` (a pickle module, protocol 5)",
    ERROR,
    r"best\.pt: refused: reading it would import and call os\.system",
    names="best.pt",
    check=_nothing_ran,
)
def _(root):
    marker = root / "out" / "pwned"
    best = pickle.dumps({"x": _Shell(marker)}, protocol=5)
    return _watching(marker, _predict(root, _finished_run(root, best)))
