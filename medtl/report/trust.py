"""The report's section on trust in each prediction, and each arm's model size.

Reads ``results/trust/<arm>.json`` (:mod:`medtl.trust.cv`): the temperature and the
calibration error before and after, how well each per-case uncertainty score predicts a
bad mask, the flag threshold and the cross-validation cases it flags, and the model's
size, time and memory per case.
"""

from __future__ import annotations

import math
from pathlib import Path

from medtl.layout import predictions_dir
from medtl.report.inputs import Inputs
from medtl.report.overlays import OverlayCase, load_overlay_case
from medtl.report.tables import fmt, table
from medtl.trust.calibration import TEMPERATURE_BOUNDS

#: How each per-case score is named in the report.
MEASURE_NAMES = {
    "mean_entropy": "mean entropy in the structure",
    "mean_mutual_info": "mean mutual information in the structure",
    "agreement_dice": "agreement Dice of the members",
    "volume_cv": "CV of the members' volumes",
}

#: Below this change of the temperature from 1, calibration has nothing to correct.
NEAR_ONE = 0.1


def calibration_table(trust: dict[str, dict]) -> dict | None:
    """Per arm: temperature, voxels and cases, ECE and NLL before and after."""
    rows = []
    for arm, rec in trust.items():
        cal = rec["calibration"]
        rows.append(
            [
                arm,
                fmt(cal["temperature"], 3),
                f"{cal['voxels']:,} ({cal['cases']})",
                fmt(cal["before"]["ece"], 4),
                fmt(cal["after"]["ece"], 4),
                fmt(cal["nll_before"], 4),
                fmt(cal["nll_after"], 4),
            ]
        )
    if not rows:
        return None
    cols = [
        "arm",
        "temperature",
        "voxels (cases)",
        "ECE before",
        "ECE after",
        "NLL before",
        "NLL after",
    ]
    return table(cols, rows)


def calibration_statement(arm: str, rec: dict) -> str:
    """Whether calibration lowered the arm's error, and why not when it did not."""
    cal = rec["calibration"]
    before, after, t = cal["before"]["ece"], cal["after"]["ece"], cal["temperature"]
    if before is None or after is None or not cal["voxels"]:
        return f"{arm}: no held-out voxels to calibrate on; its probabilities are left as they are."
    how = "" if "other folds" in rec.get("calibration_method", "") else " (in-sample: one fold)"
    if not TEMPERATURE_BOUNDS[0] * 1.001 < t < TEMPERATURE_BOUNDS[1] * 0.999:
        how += (
            f"; T = {t:.2f} is at the edge of the search ({TEMPERATURE_BOUNDS[0]} to "
            f"{TEMPERATURE_BOUNDS[1]}): near the structure the probabilities carry almost "
            "no information (or are almost never wrong), which one temperature cannot fix"
        )
    if after < before:
        return (
            f"{arm}: temperature {t:.2f} lowered the expected calibration error from "
            f"{before:.4f} to {after:.4f}{how}; its network was "
            f"{'over' if t > 1 else 'under'}-confident near the structure."
        )
    why = (
        f"the probabilities were already about as calibrated as one temperature can make "
        f"them (T = {t:.2f})"
        if abs(t - 1) < NEAR_ONE
        else f"the temperature fitted on the other folds (T = {t:.2f} on all) did not carry "
        "over to each held-out fold"
    )
    return (
        f"{arm}: calibration did not lower the expected calibration error ({before:.4f} → "
        f"{after:.4f}){how}: {why}. medtl predict still applies T = {t:.2f}."
    )


def failure_table(trust: dict[str, dict]) -> dict | None:
    """Per arm and score: Spearman with Dice, AURC against oracle and random; ★ = chosen."""
    rows = []
    for arm, rec in trust.items():
        failure = rec["failure"]
        for m in failure["measures"]:
            chosen = "★" if m["measure"] == failure.get("chosen") else ""
            rows.append(
                [
                    arm,
                    f"{MEASURE_NAMES.get(m['measure'], m['measure'])} {chosen}".strip(),
                    m["n"],
                    _rho(m),
                    fmt(m["aurc"], 4),
                    fmt(m["oracle_aurc"], 4),
                    fmt(m["random_aurc"], 4),
                ]
            )
    if not rows:
        return None
    cols = ["arm", "score", "n", "Spearman ρ with Dice (p)", "AURC", "oracle", "random"]
    return table(cols, rows, numeric_from=2)


def _rho(m: dict) -> str:
    if m.get("spearman_rho") is None:
        return "–"
    return f"{m['spearman_rho']:.2f} ({fmt(m.get('spearman_p'), 3)})"


def failure_statement(arm: str, rec: dict) -> str:
    """The chosen score, its AURC beside the oracle's and random's, and what it flags."""
    failure, rule = rec["failure"], rec["rule"]
    chosen = failure.get("chosen")
    n_bad = sum(
        1 for c in rec["cases"] if c.get("dice") is not None and c["dice"] < rule["bad_dice"]
    )
    if chosen is None:
        if not failure["measures"]:
            return f"{arm}: no per-case score to rank its held-out cases; nothing is flagged."
        verdict = (
            "every case is flagged, as every held-out case was a failure"
            if rule.get("rule") == "all"
            else "nothing is flagged"
        )
        return (
            f"{arm}: of {len(rec['cases'])} held-out predictions, {n_bad} have Dice below "
            f"{rule['bad_dice']}, and no per-case score ranked them better than a random "
            "ranking (a score that is the same for every case, as mutual information, "
            f"agreement and volume CV are with one member, cannot): {verdict}."
        )
    m = next(x for x in failure["measures"] if x["measure"] == chosen)
    flagged = [c for c in rec["cases"] if c.get("flag")]
    hits = sum(1 for c in flagged if c.get("dice") is not None and c["dice"] < rule["bad_dice"])
    threshold = failure.get("threshold") or {}
    how = {
        "youden": "the threshold that best separates them on CV (Youden's J)",
        "beyond_cv": "no CV case was a failure, so only cases riskier than every CV case",
        "all": "every CV case was a failure, so every case",
    }.get(threshold.get("rule"), "its threshold")
    better = (
        "better than a random ranking"
        if m["aurc"] is not None and m["aurc"] < m["random_aurc"]
        else "no better than a random ranking"
    )
    return (
        f"{arm}: of {m['n']} held-out predictions, {n_bad} have Dice below "
        f"{rule['bad_dice']}. {MEASURE_NAMES.get(chosen, chosen).capitalize()} ranks them "
        f"best: AURC {m['aurc']:.4f} against {m['oracle_aurc']:.4f} for the oracle and "
        f"{m['random_aurc']:.4f} for a random ranking ({better}). Flag: {how}; it flags "
        f"{len(flagged)}, {hits} of them below {rule['bad_dice']}. With few held-out "
        "predictions the choice of score and threshold is itself uncertain."
    )


def flagged_cases(rec: dict) -> list[dict]:
    """An arm's flagged cross-validation predictions, riskiest first (no risk: last)."""
    flagged = (c for c in rec["cases"] if c.get("flag"))
    return sorted(flagged, key=lambda c: -(c.get("risk") or 0))


def flagged_table(trust: dict[str, dict]) -> dict | None:
    """Every cross-validation prediction the flag rule marks, riskiest first per arm."""
    rows = []
    for arm, rec in trust.items():
        rows += [
            [arm, c["key"], c["fold"], fmt(c["dice"]), fmt(c["risk"], 4)]
            for c in flagged_cases(rec)
        ]
    if not rows:
        return None
    return table(["arm", "case", "fold", "Dice", "risk"], rows, numeric_from=2)


def flagged_overlays(
    results: Path, inputs: Inputs, arm: str, rec: dict, n: int = 4
) -> tuple[list[OverlayCase], list[str]]:
    """The arm's riskiest flagged CV cases, with the mask of the seed that was flagged."""
    cases, problems = [], []
    for c in flagged_cases(rec)[:n]:
        mask = predictions_dir(results, arm, c.get("seed"), c["fold"]) / f"{c['case']}.nii.gz"
        title = f"flagged: {c['key']}\n(Dice {fmt(c['dice'])}, risk {fmt(c['risk'], 3)})"
        found = load_overlay_case(inputs, c["case"], title, {arm: mask})
        (problems if isinstance(found, str) else cases).append(found)
    return cases, problems


def model_table(trust: dict[str, dict], summaries: list[dict]) -> dict | None:
    """Per arm: parameters, trainable ones, file size, and time and memory per case."""
    rows = []
    for arm, rec in trust.items():
        model = rec.get("model") or {}
        runs = [r for r in summaries if r.get("arm") == arm]
        trainable = (runs[0].get("trainable_parameters") or {}).get("max") if runs else None
        size = model.get("checkpoint_bytes")
        memory = model.get("peak_gpu_mb") or model.get("peak_rss_mb")
        where = "GPU" if model.get("peak_gpu_mb") else "process RSS"
        rows.append(
            [
                arm,
                f"{model['parameters']:,}" if model.get("parameters") else "–",
                f"{trainable:,}" if trainable else "–",
                fmt(size / 2**20, 2) if size else "–",
                model.get("models", "–"),
                fmt(model.get("seconds_per_case_median"), 3),
                f"{fmt(memory, 0)} ({where})" if memory else "–",
            ]
        )
    if not rows:
        return None
    cols = [
        "arm",
        "parameters",
        "trainable (at most)",
        "checkpoint MB",
        "models",
        "s per case (one model, median)",
        "peak memory MB",
    ]
    return table(cols, rows, numeric_from=1)


def trust_records(trust: dict[str, dict]) -> dict:
    """The section's numbers for ``summary.json``."""
    out = {}
    for arm, rec in trust.items():
        cal, failure = rec["calibration"], rec["failure"]
        chosen = next(
            (m for m in failure["measures"] if m["measure"] == failure.get("chosen")), None
        )
        out[arm] = {
            "temperature": cal["temperature"],
            "ece_before": cal["before"]["ece"],
            "ece_after": cal["after"]["ece"],
            "calibration_lowered_ece": _lowered(cal),
            "calibration_method": rec.get("calibration_method"),
            "rule": rec["rule"],
            "measures": failure["measures"],
            "chosen": chosen,
            "flagged": [c["key"] for c in rec["cases"] if c.get("flag")],
            "model": rec.get("model"),
        }
    return out


def _lowered(cal: dict) -> bool | None:
    before, after = cal["before"]["ece"], cal["after"]["ece"]
    if before is None or after is None or math.isnan(before) or math.isnan(after):
        return None
    return bool(after < before)
