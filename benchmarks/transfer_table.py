"""``make bench-transfer``'s table: medtl scratch and medtl fine-tuning from the nnssl file
against nnU-Net's ResEnc preset from scratch, one row per measure, with the workflow's
paired comparison in the notes; written into docs/benchmarks.md between its own markers.
"""

from __future__ import annotations

from collections.abc import Callable

from bench_quiet import quiet_line
from bench_table import SPREAD, fmt, measured_on, runs, spread_cell, throughput_rows

START = "<!-- bench-transfer:start -->"
END = "<!-- bench-transfer:end -->"
HEADING = "## Transfer: fine-tuning an nnssl-layout ResEnc"
PEER = "nnU-Net ResEnc M"


def _dice_rows(res: dict, add: Callable[..., None]) -> None:
    """Dice at each budget: each medtl arm against nnU-Net's ResEnc from scratch."""
    bud = res["budgets"]
    arms = [a for a in res["arms"] if a in bud]
    for i, m in enumerate(bud["budgets_min"]):
        for arm in arms:
            label = "finetune, from the nnssl file" if arm == "finetune" else arm
            add(
                f"Dice after {m:g} min of training: medtl {label}",
                bud[arm]["dice"][i],
                bud["nnunet"]["dice"][i],
                "higher",
            )


def _speed_rows(res: dict, add: Callable[..., None]) -> None:
    """Training iterations/s and samples/s at nnU-Net's patch and batch (as ``make bench``
    gives them), and inference per case."""
    throughput_rows(res, add)
    if "inference" in res:
        inf = res["inference"]["no_tta"]
        for measure, key, repeats in (
            ("s/case after start-up", "s_per_case", "s_per_case_runs"),
            ("start-up (s)", "startup_s", "startup_runs"),
        ):
            add(
                f"inference {measure}, TTA off",
                inf["medtl"][key],
                inf["nnunet"][key],
                "lower",
                spread=runs(inf, repeats),
            )


def _param_rows(res: dict, add: Callable[..., None]) -> None:
    p = res["parameters"]
    add("parameters (millions)", p["medtl"] / 1e6, p["nnunet"] / 1e6, "")


PARTS = {"budgets": _dice_rows, "throughput": _speed_rows, "parameters": _param_rows}


def transfer_rows(res: dict) -> list[dict]:
    """One row per measure: medtl, nnU-Net ResEnc, medtl / nnU-Net, which way is better.

    Example:
        >>> rows = transfer_rows({"parameters": {"medtl": 2e6, "nnunet": 4e6}})
        >>> rows[0]["measure"], rows[0]["ratio"]
        ('parameters (millions)', 0.5)
    """
    rows: list[dict] = []

    def add(
        measure: str, medtl: float, peer: float, better: str, spread: tuple | None = None
    ) -> None:
        ratio = medtl / peer if peer else float("nan")
        rows.append(
            {
                "measure": measure,
                "medtl": medtl,
                "peer": peer,
                "ratio": ratio,
                "better": better,
                "spread": spread,
            }
        )

    for part, part_rows in PARTS.items():
        if part in res:
            part_rows(res, add)
    return rows


def _notes(res: dict) -> list[str]:
    plan = res["nnunet_plan"]
    notes = [
        f"nnU-Net: `nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM` (plans "
        f"`{res['plans']}`), trained **from scratch**: the pinned nnunetv2 "
        f"{res['versions']['nnunetv2']} has no nnssl fine-tuning (that code is on nnU-Net's "
        f"main branch after the 2.8 tag). Its plan for the demo: patch {plan['patch_zyx']} "
        f"(z, y, x), batch {plan['batch']}, widths {plan['features']}, strides "
        f"{plan['strides_zyx']}; epochs of {res['nnunet_iters']} iterations.",
        f"medtl: `{res['model']['name']}` widths {res['model']['features']} (strides 2 along "
        f"every axis), patch {res['train']['patch_size']}, batch {res['train']['batch_size']} "
        "in the Dice rows; at nnU-Net's patch and batch in the iterations/s row.",
    ]
    pre = res.get("pretrain", {})
    if pre.get("timing"):
        load = res.get("load_report", {})
        notes.append(
            f"The nnssl file: medtl's supervised pretraining on the demo's source set "
            f"(one-off, {pre['timing']['wall_s']:.0f} s, not in the budgets), written as "
            f"`checkpoint_final.pth` + `adaptation_plan.json` in nnssl's published layout; "
            f"the finetune arm loaded {100 * load.get('fraction_loaded', float('nan')):.0f} % "
            f"of its encoder from it (`pretrain.format: nnssl`)."
        )
    bud = res.get("budgets")
    if bud:
        nn = bud["nnunet"]
        saved = ", ".join(f"{s:.0f}" for s in nn.get("marks_at_s", []))
        parts = [
            f"nnU-Net ran {nn['epochs_run']} of {nn.get('epochs_planned', '?')} planned epochs "
            f"of {res['nnunet_iters']} iterations, its model for each budget saved at {saved} s "
            "after launch (the end of the last epoch before the budget, or of its first epoch "
            "if that ended later)"
        ]
        parts += [
            f"medtl {a} {bud[a]['steps_run']} of {bud[a]['steps_planned']} planned steps"
            for a in res["arms"]
            if a in bud
        ]
        notes.append(
            f"To the largest budget: {'; '.join(parts)}; scored on {bud['test_cases']} "
            "held-out cases."
        )
    wf = res.get("workflow")
    if wf:
        notes += _workflow_notes(wf)
    return notes


def _workflow_notes(wf: dict) -> list[str]:
    """The workflow's paired comparison with its reference arm, and the A/A verdict."""
    out = []
    for c in wf["comparisons"]:
        out.append(
            f"The medtl workflow (every fold, {wf['wall_s'] / 60:.0f} min), paired comparison "
            f"{c['arm']} − {c['reference']}: mean Dice difference {c['mean_diff']:+.3f} "
            f"(95 % CI {fmt(c['ci_low'], 3)} to {fmt(c['ci_high'], 3)}, p = "
            f"{fmt(c['p_value'], 3)}, n = {c['n']} cases). The report says: {c['statement']}"
        )
    if wf["noise_floor"]:
        out += [f"A/A: {f['statement']}" for f in wf["noise_floor"]]
    else:
        out.append(
            "A/A: one training run per arm (seeds: null), so the report has no run-variation "
            "verdict; the Dice figures are from one seed."
        )
    return out


def transfer_markdown(res: dict) -> str:
    """The table and its notes, as written between the markers."""
    lines = [
        measured_on(res["versions"]),
        f"Data: {res['data']}; fold {res['fold']} for the budget, speed and inference rows; "
        f"the whole run took {res['total_min']:.1f} min.",
        quiet_line(res),
        "",
        f"| measure | medtl | {PEER} (from scratch) | medtl / nnU-Net | better | {SPREAD} |",
        "|---|---|---|---|---|---|",
    ]
    for r in transfer_rows(res):
        digits = 3 if "Dice" in r["measure"] else 2
        lines.append(
            f"| {r['measure']} | {fmt(r['medtl'], digits)} | {fmt(r['peer'], digits)} "
            f"| {fmt(r['ratio'])} | {r['better']} | {spread_cell(r, digits)} |"
        )
    return "\n".join(lines + [""] + [f"- {n}" for n in _notes(res)]) + "\n"
