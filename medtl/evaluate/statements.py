"""The English sentence that states a paired comparison and what it means."""

from __future__ import annotations

import math

from medtl.evaluate.bootstrap import MIN_CASES_FOR_TEST
from medtl.evaluate.cases import ALPHA, METHOD_PATIENTS, METHOD_POOLED, METHOD_RUNS, metric_info
from medtl.evaluate.multiplicity import p_text


def _runs_caveat(seeds: int) -> str:
    if seeds < 1:
        why = "the arms share no seed"
    elif seeds == 1:
        why = "one shared seed"
    else:
        why = "fewer than 2 patients"
    return (
        f"; run-to-run variance is not measured ({why}), "
        "so the CI is a lower bound on the uncertainty"
    )


def comparison_statement(
    arm: str,
    reference: str,
    metric: str,
    n: int,
    mean_diff: float,
    ci: tuple,
    p: float,
    p_holm: float = math.nan,
    family: int = 0,
    *,
    seeds: int = 1,
    method: str = METHOD_PATIENTS,
    df: float = math.nan,
) -> str:
    """The sentence of a comparison; with ``family`` > 0 the decision uses ``p_holm``.

    With ``method`` :data:`METHOD_RUNS` the test is the run-aware t test over ``n``
    cases and ``seeds`` seeds; otherwise the Wilcoxon test, and the sentence says that
    run-to-run variance is not measured and the CI is a lower bound on the uncertainty.
    """
    name, unit, higher_better, digits = metric_info(metric)
    subject = "transfer" if reference == "scratch" else arm
    runs = method in (METHOD_RUNS, METHOD_POOLED)
    pooled = method == METHOD_POOLED

    def num(x: float) -> str:
        return f"{x:.{digits}f}"

    improved = mean_diff > 0 if higher_better else mean_diff < 0
    size = f"{num(abs(mean_diff))}{unit}"
    ci_txt = f"95 % CI {num(ci[0])} to {num(ci[1])}{unit}"
    caveat = "" if runs else _runs_caveat(seeds)
    if pooled:
        caveat = (
            "; the arms share fewer than 2 seeds, so their run-to-run variance is taken from "
            "the arms with several seeds (assumed alike)"
        )
    sample = f"n = {n} cases × {seeds} seeds" if runs and not pooled else f"n = {n} cases"
    if math.isnan(p):
        if runs:
            test, why = "t test", "the differences do not vary"
        else:
            test = "Wilcoxon test"
            why = "all differences are zero" if n >= MIN_CASES_FOR_TEST else f"n = {n} < 6"
        return (
            f"{arm} changed mean {name} relative to {reference} by {mean_diff:+.{digits}f}{unit} "
            f"({ci_txt}, {sample}): the {test} is not possible ({why}), "
            f"so there is no evidence either way on whether {subject} helped{caveat}."
        )
    adjusted = family > 0 and math.isfinite(p_holm)
    decision = p_holm if adjusted else p
    plural = "s" if family != 1 else ""
    holm_txt = (
        f", Holm-adjusted {p_text(p_holm)} over {family} comparison{plural}" if adjusted else ""
    )
    if runs:
        test_txt = (
            f"t test over patients and training runs {p_text(p)}{holm_txt}, df = {df:.1f}, {sample}"
        )
    else:
        test_txt = f"Wilcoxon {p_text(p)}{holm_txt}, {sample}"
    if decision < ALPHA:
        # the sentence gives a size; when the signed difference is negative, say so too
        signed = f"difference {mean_diff:+.{digits}f}{unit}, " if mean_diff < 0 else ""
        stats_txt = f"({signed}{ci_txt}; {test_txt})"
        if improved:
            return (
                f"{arm} improved mean {name} over {reference} by {size} {stats_txt}: "
                f"{subject} helped{caveat}."
            )
        return (
            f"{arm} was worse than {reference} in mean {name} by {size} {stats_txt}: "
            f"{subject} hurt{caveat}."
        )
    decision_txt = f"Holm-adjusted {p_text(p_holm)}" if adjusted else p_text(p)
    return (
        f"{arm} changed mean {name} relative to {reference} by {mean_diff:+.{digits}f}{unit} "
        f"({ci_txt}; {test_txt}): no evidence that {subject} helped ({decision_txt}){caveat}."
    )
