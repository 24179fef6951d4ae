"""The report's section on domain shift: how far the target is from what the encoder saw.

Reads ``results/shift/shift.json`` and ``per_case.tsv`` (:mod:`medtl.shift`, measured before
any arm trained) and, once the arms are evaluated, asks whether each pretrained arm's
per-case gain over the reference arm tracks the per-case shift: a rank correlation
(Spearman) of the gain with the case's encoder-feature distance, a scatter plot and a plain
sentence. docs/domain-shift.md says what each measure means and what it does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from medtl.evaluate.multiplicity import holm
from medtl.report import figures
from medtl.report.tables import fmt, table

#: The per-case shift the gain is ranked against (``per_case.tsv``'s column).
SHIFT_COLUMN = "feature_distance"
#: Below this many cases with both a gain and a shift, no correlation is computed.
MIN_CASES = 5
#: Significance level of the sentence on the correlation.
ALPHA = 0.05


@dataclass(frozen=True)
class GainVersusShift:
    """Whether one arm's per-case gain over the reference tracks the per-case shift.

    Attributes:
        arm: the pretrained arm.
        reference: the arm its gain is measured against.
        n: cases with both a gain and a shift.
        rho: Spearman's rank correlation of gain with shift (None below ``MIN_CASES``
            cases or when either is constant).
        p_value: its two-sided p-value.
        p_holm: ``p_value`` Holm-adjusted over the arms the section tests.
        seeds: training seeds averaged into each case's Dice (the smaller of the two arms').
        cases: ``[case, shift, gain]`` of every case, for the plot.
    """

    arm: str
    reference: str
    n: int
    rho: float | None
    p_value: float | None
    cases: list[tuple[str, float, float]]
    p_holm: float | None = None
    seeds: int = 1


def measured_arms(record: dict, arms: list[str], reference: str) -> list[str]:
    """The report's arms that start from the encoder the shift stage looked at, reference
    excluded: the workflow names them in the record (``arms``), so the report does not
    decide them a second time.

    Example:
        >>> record = {"arms": ["frozen", "finetune"]}
        >>> measured_arms(record, ["scratch", "finetune", "frozen"], "scratch")
        ['finetune', 'frozen']
    """
    named = set(record.get("arms") or [])
    return [a for a in arms if a in named and a != reference]


def gain_versus_shift(
    case_dice: dict[str, pd.Series], arm: str, reference: str, shift_cases: pd.DataFrame
) -> GainVersusShift:
    """Rank-correlate ``arm``'s per-case Dice gain over ``reference`` with the case's shift.

    Example:
        >>> dice = {"ft": pd.Series([0.9, 0.8, 0.7, 0.6, 0.5], index=list("abcde")),
        ...         "scratch": pd.Series([0.5] * 5, index=list("abcde"))}
        >>> shift = pd.DataFrame({"case_id": list("abcde"),
        ...                       "feature_distance": [0.1, 0.2, 0.3, 0.4, 0.5]})
        >>> g = gain_versus_shift(dice, "ft", "scratch", shift)
        >>> g.n, round(g.rho, 3)
        (5, -1.0)
    """
    gain = (case_dice[arm] - case_dice[reference]).dropna()
    distance = pd.to_numeric(
        shift_cases.set_index(shift_cases["case_id"].astype(str))[SHIFT_COLUMN], errors="coerce"
    )
    both = pd.DataFrame({"gain": gain, "shift": distance}).dropna()
    cases = [(str(c), float(r["shift"]), float(r["gain"])) for c, r in both.iterrows()]
    rho = p = None
    if len(both) >= MIN_CASES and both["gain"].nunique() > 1 and both["shift"].nunique() > 1:
        result = stats.spearmanr(both["shift"], both["gain"])
        rho, p = float(result.statistic), float(result.pvalue)
    return GainVersusShift(arm, reference, len(both), rho, p, cases)


def gain_statement(g: GainVersusShift) -> str:
    """One plain sentence: does the arm's gain fall, rise or stay as the shift grows?"""
    if g.rho is None:
        return (
            f"{g.arm}: {g.n} case(s) have both a gain over {g.reference} and a measured shift; "
            f"at least {MIN_CASES} with some spread in both are needed to say whether the gain "
            "tracks the shift."
        )
    numbers = f"Spearman ρ = {g.rho:+.2f}, p = {fmt(g.p_value, 3)}, n = {g.n} cases"
    numbers += f", Holm-adjusted p = {fmt(g.p_holm, 3)}" if g.p_holm is not None else ""
    numbers += "; one training seed" if g.seeds == 1 else f"; Dice averaged over {g.seeds} seeds"
    if g.p_holm is not None and g.p_holm < ALPHA:
        way = "falls" if g.rho < 0 else "rises"
        return (
            f"{g.arm}: its per-case gain over {g.reference} {way} as the case's encoder-feature "
            f"distance from the source grows ({numbers})"
            + (
                ": the further a case is from what the encoder saw, the less pretraining helps it."
                if g.rho < 0
                else ": the cases furthest from the source gain most, which the shift alone does "
                "not explain (look at which cases they are)."
            )
        )
    return (
        f"{g.arm}: its per-case gain over {g.reference} does not measurably track the case's "
        f"encoder-feature distance from the source ({numbers}); with this many cases only a "
        "strong relation would show."
    )


def gain_figure(results: list[GainVersusShift], arms: list[str]):
    """Per-case gain over the reference against the per-case shift, one panel per arm."""
    colours = figures.arm_colours(arms)
    n = max(len(results), 1)
    fig = figures.new_figure(3.6 * n, 3.4)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    for i, g in enumerate(results):
        ax = axes[i]
        if g.cases:
            x = np.array([c[1] for c in g.cases])
            y = np.array([c[2] for c in g.cases])
            ax.scatter(x, y, s=18, color=colours.get(g.arm, "C0"), alpha=0.85)
        ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
        rho = "–" if g.rho is None else f"{g.rho:+.2f} (p {fmt(g.p_value, 2)})"
        ax.set_title(f"{g.arm}: ρ = {rho}", fontsize=9)
        ax.set_xlabel("encoder-feature distance (source spreads)")
        if i == 0:
            ax.set_ylabel(f"Dice gain over {g.reference}")
        ax.grid(alpha=0.3)
    return fig


def measures_table(record: dict) -> dict:
    """The measures of ``shift.json`` as rows: what, value, reading."""
    rows: list[list[str]] = []
    enc = record.get("encoder")
    if enc:
        rows.append(
            [
                "encoder features: MMD² (permutation p)",
                f"{enc['mmd2']:.4f} ({fmt(enc['p_value'], 3)})",
                "differs" if enc.get("differs") else "not distinguishable",
            ]
        )
        rows.append(
            [
                "target cases beyond the source's spread",
                f"{enc.get('flagged_cases', 0)} of {enc.get('n_target', '?')}",
                f"source: {enc.get('n_source', '?')} cases, {enc.get('features', '?')} features",
            ]
        )
    inten = record.get("intensity")
    if inten:
        rows.append(["intensity: Wasserstein-1 (normalised units)", fmt(inten["wasserstein"]), ""])
        rows.append(
            [
                "target voxels outside the source's 0.5–99.5 % range",
                f"{100 * inten['outside_fraction']:.1f} %",
                "",
            ]
        )
    acq = record.get("acquisition") or {}
    for key, what in (
        ("spacing_ratio_to_source", "spacing, target / source"),
        ("network_to_pretraining", "training grid / pretraining spacing"),
    ):
        if acq.get(key):
            rows.append([what, " × ".join(f"{v:.2f}" for v in acq[key]), ""])
    scanners = [
        ", ".join(
            f"{name} ({n})" for name, n in ((acq.get(side) or {}).get("scanner") or {}).items()
        )
        for side in ("target", "source")
    ]
    if any(scanners):
        rows.append(["scanners, target vs source", " vs ".join(s or "–" for s in scanners), ""])
    for lab in record.get("labels") or []:
        vol = lab.get("volume_ml") or {}
        if vol:
            rows.append(
                [
                    f"label {lab['target_label']} volume (ml), target vs source",
                    f"{fmt(vol['target_mean'], 2)} vs {fmt(vol['source_mean'], 2)}",
                    f"Cohen's d {fmt(vol.get('cohens_d'), 2)}",
                ]
            )
    return table(["measure", "value", "reading"], rows)


def shift_statements(record: dict) -> list[str]:
    """What the record says, in sentences: the source, the encoder's view, the notes."""
    out = [f"Source: {record.get('source', 'none')}; encoder weights: {record.get('checkpoint')}."]
    enc = record.get("encoder")
    if enc:
        verdict = (
            "tells the target from its source"
            if enc.get("differs")
            else "does not tell the target from its source"
        )
        out.append(
            f"The pretrained encoder {verdict} (feature MMD² {enc['mmd2']:.4f}, permutation "
            f"p = {fmt(enc['p_value'], 3)} over {enc['permutations']} permutations, "
            f"{enc['n_source']} source and {enc['n_target']} target cases); "
            f"{enc.get('flagged_cases', 0)} target case(s) lie beyond the source's own spread."
        )
    out += list(record.get("notes") or [])
    return out


def shift_records(record: dict | None, results: list[GainVersusShift]) -> dict | None:
    """The section's numbers for ``summary.json``."""
    if record is None:
        return None
    enc = record.get("encoder") or {}
    inten = record.get("intensity") or {}
    return {
        "source": record.get("source"),
        "mmd2": enc.get("mmd2"),
        "p_value": enc.get("p_value"),
        "differs": enc.get("differs"),
        "flagged_cases": enc.get("flagged_cases"),
        "wasserstein": inten.get("wasserstein"),
        "outside_fraction": inten.get("outside_fraction"),
        "warnings": list(record.get("warnings") or []),
        "gain_versus_shift": [
            {k: v for k, v in asdict(g).items() if k != "cases"} | {"statement": gain_statement(g)}
            for g in results
        ],
    }


def shift_section(
    record: dict | None,
    shift_cases: pd.DataFrame | None,
    case_dice: dict[str, pd.Series],
    arms: list[str],
    reference: str,
    seeds: dict[str, int] | None = None,
) -> tuple[dict | None, list[GainVersusShift]]:
    """The section's tables and sentences, and each pretrained arm's gain against the shift.

    Returns ``(None, [])`` without a record (no arm started from pretrained weights).
    """
    if record is None:
        return None, []
    results = []
    measured = shift_cases is not None and SHIFT_COLUMN in shift_cases.columns
    if measured:
        results = [
            gain_versus_shift(case_dice, arm, reference, shift_cases)
            for arm in measured_arms(record, arms, reference)
            if arm in case_dice
        ]
        adjusted = holm([np.nan if g.p_value is None else g.p_value for g in results])
        seeds = seeds or {}
        results = [
            replace(
                g,
                p_holm=None if np.isnan(p) else p,
                seeds=min(seeds.get(g.arm, 1), seeds.get(reference, 1)),
            )
            for g, p in zip(results, adjusted, strict=True)
        ]
    context = {
        "statements": shift_statements(record),
        "measures": measures_table(record),
        "warnings": list(record.get("warnings") or []),
        "gain_statements": [gain_statement(g) for g in results],
        "per_case_distance": measured,
    }
    return context, results
