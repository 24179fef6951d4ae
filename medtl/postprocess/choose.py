"""Choose each class's post-processing on an arm's cross-validation predictions.

As nnU-Net does: every held-out case of every fold is scored (Dice against its reference
label) raw and after each candidate operation; a candidate is kept for a class only when
it raises that class's mean Dice over all those cases by more than ``min_gain``. The
decision is written to ``results/postprocess/{arm}.json`` and ``medtl predict`` applies it
to new cases (the cross-validation predictions themselves are never post-processed: they
are what the choice is made on).

The decision file::

    {"arm": "finetune", "n_cases": 20, "enabled": true, "min_gain": 0.0,
     "candidates": ["largest", "min_volume"],
     "classes": {"tumour": {"value": 1, "chosen": "largest", "min_volume_mm3": 50.0,
                            "mean_dice": {"none": 0.70, "largest": 0.72, "min_volume": 0.71},
                            "cases_changed": 7}}}

``cases_changed`` counts the cases whose mask the chosen operation changes (0 for
``none``). With ``enabled: false`` nothing is tried: every class gets ``none``, an empty
``mean_dice`` and a ``note`` says why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl.config import POSTPROCESS_CANDIDATES, PostprocessConfig
from medtl.evaluate.arrays import dice_score
from medtl.evaluate.metrics import AFFINE_ATOL, load_label
from medtl.io.manifest import read_manifest
from medtl.io.volume import spacing_of
from medtl.kernel.classes import ClassMap
from medtl.kernel.errors import ConfigError, InputError
from medtl.kernel.files import atomic_write_text
from medtl.layout import PREDICT_RULE, run_predictions
from medtl.postprocess.components import NO_POSTPROCESSING, apply_operation
from medtl.split.folds import load_folds

#: The workflow rule that writes ``postprocess/{arm}.json``.
POSTPROCESS_RULE = "postprocess"

#: Everything a decision may choose for a class.
CHOICES = (NO_POSTPROCESSING, *POSTPROCESS_CANDIDATES)

DISABLED_NOTE = (
    "post-processing disabled (postprocess.enabled: false): no candidate was tried and "
    "none is applied"
)


@dataclass(frozen=True)
class _Case:
    fold: int
    case: str
    pred: Path
    ref: Path


def _check_classes(classes: dict) -> dict[int, str]:
    if not classes:
        raise InputError(
            "classes",
            "no classes to post-process: expected {label value: name}, found an empty mapping",
            "list the foreground classes in the config",
        )
    try:
        out = ClassMap.parse(classes, "classes")
    except ConfigError:
        out = None
    if out is None or len(out) != len(classes):  # ClassMap.parse drops a 0 "background"
        raise InputError(
            "classes",
            f"expected foreground label values > 0, found {sorted(str(k) for k in classes)}",
            "leave the background (0) out of the classes",
        )
    return out


def _test_cases(folds_path: Path, folds_data: dict) -> list[tuple[int, str]]:
    cases = [(int(f["fold"]), str(c)) for f in folds_data["folds"] for c in f.get("test", [])]
    if not cases:
        raise InputError(
            folds_path,
            "expected held-out ('test') cases in the folds, found none",
            "regenerate the folds with the split stage",
        )
    return cases


def _cases(
    manifest: Path,
    folds_path: Path,
    folds_data: dict,
    predictions: Path,
    arm: str,
    seeds: Sequence[int] | None = None,
) -> list[_Case]:
    df = read_manifest(manifest)
    labels = dict(zip(df["case_id"], df["label"], strict=True))
    out: list[_Case] = []
    missing: list[Path] = []
    runs = [
        (seed, fold, case)
        for seed in (seeds if seeds else [None])
        for fold, case in _test_cases(folds_path, folds_data)
    ]
    for seed, fold, case in runs:
        label = labels.get(case)
        if not label:
            found = "no row" if label is None else "an empty label"
            raise InputError(
                manifest,
                f"held-out case {case!r} of fold {fold} needs a reference label; found {found}",
                "keep unlabelled cases out of the folds (rerun the split stage)",
            )
        # seed None: an earlier version's layout, no seed folder
        pred = run_predictions(predictions, arm, seed, fold) / f"{case}.nii.gz"
        if not pred.is_file():
            missing.append(pred)
        out.append(_Case(fold, case, pred, Path(label)))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(
            missing[0],
            f"cross-validation prediction not found{more}; expected one per held-out case, "
            f"written by rule '{PREDICT_RULE}'",
            f"run the workflow's '{PREDICT_RULE}' rule for arm {arm!r} and every fold "
            f"(e.g. snakemake --forcerun {PREDICT_RULE}) before choosing post-processing",
        )
    for c in out:
        if not c.ref.is_file():
            raise InputError(
                c.ref,
                f"reference label of case {c.case!r} not found (listed in {manifest}; paths "
                "are relative to the working directory)",
                "run the workflow from the folder the manifest was made in",
            )
    return out


def _score_case(
    task: _Case, classes: dict[int, str], candidates: tuple[str, ...], min_volume_mm3: float
) -> dict:
    """Per class: Dice raw and after each candidate, and which candidates change the mask."""
    pred, pred_affine, _ = load_label(task.pred)
    ref, ref_affine, _ = load_label(task.ref)
    if pred.shape != ref.shape or not np.allclose(pred_affine, ref_affine, atol=AFFINE_ATOL):
        raise InputError(
            task.pred,
            f"not on the grid of its reference label {task.ref}: expected shape "
            f"{ref.shape} and affine {np.round(ref_affine, 4).tolist()}, found shape "
            f"{pred.shape} and affine {np.round(pred_affine, 4).tolist()}",
            f"write predictions on each case's original image grid (rerun rule '{PREDICT_RULE}')",
        )
    spacing = spacing_of(ref_affine)
    scores = {}
    for value, name in classes.items():
        p = pred == value
        r = ref == value
        dice = {NO_POSTPROCESSING: float(dice_score(p, r))}
        changed = {}
        for cand in candidates:
            q = apply_operation(p, cand, spacing, min_volume_mm3)
            changed[cand] = bool((q != p).any())
            dice[cand] = dice[NO_POSTPROCESSING] if not changed[cand] else float(dice_score(q, r))
        scores[name] = {"dice": dice, "changed": changed}
    return scores


def _choose(means: dict[str, float], candidates: tuple[str, ...], min_gain: float) -> str:
    """The best candidate whose mean beats the raw mean by more than ``min_gain``.

    Ties go to the candidate listed first; ``none`` when no candidate qualifies.

    Example:
        >>> _choose({"none": 0.7, "largest": 0.72, "min_volume": 0.72},
        ...         ("largest", "min_volume"), 0.0)
        'largest'
        >>> _choose({"none": 0.7, "largest": 0.72}, ("largest",), 0.05)
        'none'
    """
    raw = means[NO_POSTPROCESSING]
    chosen = NO_POSTPROCESSING
    for cand in candidates:
        if means[cand] - raw > min_gain and (
            chosen == NO_POSTPROCESSING or means[cand] > means[chosen]
        ):
            chosen = cand
    return chosen


def choose_postprocessing(
    manifest: Path,
    folds: Path,
    predictions: Path,
    arm: str,
    classes: dict[int, str],
    cfg: PostprocessConfig,
    out_json: Path,
    threads: int = 1,
    seeds: Sequence[int] | None = None,
) -> dict:
    """Choose, per class, the post-processing that raises ``arm``'s mean CV Dice.

    Args:
        manifest: ``results/ingest/manifest.tsv`` (columns ``case_id`` and ``label``;
            label paths relative to the working directory).
        folds: ``results/splits/folds.json``; each fold's ``test`` cases are scored.
        predictions: ``results/predictions`` (holds ``{arm}/seed{s}/fold{k}/{case}.nii.gz``
            on each case's original grid, :func:`medtl.layout.run_predictions`).
        arm: the arm whose predictions are scored.
        classes: ``{label value: class name}``, background excluded.
        cfg: the candidates, ``min_volume_mm3`` and ``min_gain``.
        out_json: where to write the decision (atomically).
        threads: cases scored in parallel.
        seeds: the arm's training seeds: every seed's prediction of a case is scored
            (the mean is over cases and seeds). None: an earlier version's layout,
            ``{arm}/fold{k}/``.

    Returns:
        The decision written (see the module's docstring for its shape).

    Raises:
        InputError: naming the file, on a missing manifest, folds file, prediction or
            reference label, a malformed folds file, or a prediction on another grid than
            its label.
    """
    classes = _check_classes(classes)
    folds_data = load_folds(folds)
    candidates = tuple(dict.fromkeys(cfg.candidates))
    decision: dict = {
        "arm": arm,
        "n_cases": 0,
        "enabled": bool(cfg.enabled),
        "min_gain": float(cfg.min_gain),
        "candidates": list(candidates),
        "classes": {},
    }
    if not cfg.enabled:
        decision["n_cases"] = len(_test_cases(Path(folds), folds_data))
        decision["note"] = DISABLED_NOTE
        decision["classes"] = _disabled_entries(classes, cfg)
    else:
        tasks = _cases(Path(manifest), Path(folds), folds_data, Path(predictions), arm, seeds)
        with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
            scores = list(
                pool.map(
                    lambda t: _score_case(t, classes, candidates, float(cfg.min_volume_mm3)),
                    tasks,
                )
            )
        decision["n_cases"] = len(tasks)
        decision["classes"] = _chosen_entries(scores, classes, candidates, cfg)
    atomic_write_text(Path(out_json), json.dumps(decision, indent=2) + "\n")
    return decision


def _disabled_entries(classes: dict[int, str], cfg: PostprocessConfig) -> dict[str, dict]:
    """Per class, the decision of a disabled post-processing: ``none``, nothing tried."""
    return {
        name: {
            "value": value,
            "chosen": NO_POSTPROCESSING,
            "min_volume_mm3": float(cfg.min_volume_mm3),
            "mean_dice": {},
            "cases_changed": 0,
        }
        for value, name in classes.items()
    }


def _chosen_entries(
    scores: list[dict],
    classes: dict[int, str],
    candidates: tuple[str, ...],
    cfg: PostprocessConfig,
) -> dict[str, dict]:
    """Per class, the mean Dice of each option over the scored cases and the choice."""
    entries = {}
    for value, name in classes.items():
        means = {
            option: float(np.mean([s[name]["dice"][option] for s in scores]))
            for option in (NO_POSTPROCESSING, *candidates)
        }
        chosen = _choose(means, candidates, float(cfg.min_gain))
        changed = (
            0 if chosen == NO_POSTPROCESSING else sum(s[name]["changed"][chosen] for s in scores)
        )
        entries[name] = {
            "value": value,
            "chosen": chosen,
            "min_volume_mm3": float(cfg.min_volume_mm3),
            "mean_dice": means,
            "cases_changed": int(changed),
        }
    return entries


def decision_path(results: Path, arm: str) -> Path:
    """Where the workflow writes ``arm``'s decision: ``results/postprocess/{arm}.json``."""
    return Path(results) / "postprocess" / f"{arm}.json"


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_decision(decision: object, path: Path | str, arm: str | None = None) -> dict:
    """Check a decision's shape; return it.

    Raises:
        InputError: naming ``path``, with what was expected and found.
    """
    fix = f"delete it and rerun the workflow's '{POSTPROCESS_RULE}' rule" + (
        f" (snakemake {decision_path(Path('results'), arm)})" if arm else ""
    )
    if not isinstance(decision, dict) or not isinstance(decision.get("classes"), dict):
        found = (
            f"keys {sorted(decision)}" if isinstance(decision, dict) else type(decision).__name__
        )
        raise InputError(
            path, f"expected a post-processing decision with a 'classes' object, found {found}", fix
        )
    if arm is not None and decision.get("arm", arm) != arm:
        raise InputError(
            path, f"expected the decision of arm {arm!r}, found arm {decision['arm']!r}", fix
        )
    for name, entry in decision["classes"].items():
        where = f"class {name!r}"
        if not isinstance(entry, dict):
            raise InputError(
                path, f"{where}: expected an object, found {type(entry).__name__}", fix
            )
        value = entry.get("value")
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise InputError(
                path, f"{where}: expected 'value', a label value > 0, found {value!r}", fix
            )
        chosen = entry.get("chosen")
        if chosen not in CHOICES:
            raise InputError(
                path,
                f"{where}: expected 'chosen' to be one of {', '.join(CHOICES)}, found {chosen!r}",
                fix,
            )
        if chosen == "min_volume":
            vol = entry.get("min_volume_mm3")
            if not (_is_number(vol) and vol >= 0):
                raise InputError(
                    path,
                    f"{where}: expected 'min_volume_mm3', a volume >= 0 mm³, found {vol!r}",
                    fix,
                )
    return decision


def load_decision(results: Path, arm: str) -> dict | None:
    """Read and check ``results/postprocess/{arm}.json``; None when there is none.

    Raises:
        InputError: naming the file, if it is not JSON or not shaped like a decision.
    """
    path = decision_path(results, arm)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            path,
            f"expected a JSON post-processing decision, found unreadable JSON ({exc})",
            f"delete it and rerun the workflow's '{POSTPROCESS_RULE}' rule",
        ) from exc
    return validate_decision(data, path, arm)


def describe_decision(decision: dict | None) -> str:
    """What a decision applies, per class, for a table cell: ``"none"`` when nothing.

    Example:
        >>> describe_decision({"classes": {"tumour": {"value": 1, "chosen": "largest"},
        ...                                "organ": {"value": 2, "chosen": "none"}}})
        'tumour: largest'
        >>> describe_decision(None)
        'none'
    """
    parts = []
    for name, entry in (decision or {}).get("classes", {}).items():
        chosen = entry.get("chosen", NO_POSTPROCESSING)
        if chosen == "min_volume":
            parts.append(f"{name}: min_volume {float(entry['min_volume_mm3']):g} mm3")
        elif chosen != NO_POSTPROCESSING:
            parts.append(f"{name}: {chosen}")
    return "; ".join(parts) or NO_POSTPROCESSING
