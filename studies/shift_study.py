"""The shift study: does transfer help less as the target drifts away from the source?

Runs the whole workflow on the demo at several shift strengths (``dataset.demo.shift``:
0 draws the target from the source domain, 1 is the demo's target, up to 2 extrapolates),
each with the arms of ``studies/config_shift.yaml`` (scratch and finetune, two seeds), and
sets the measured shift of each run (the pretrained encoder's feature MMD², from
``results/shift/shift.json``) against the gain of fine-tuning over scratch (the report's
paired comparison, with its 95 % CI and the A/A noise floor, from
``results/report/summary.json``)::

    make study-shift                                      # 0, 0.5, 1, 2; over an hour on 2 cores
    .venv/bin/python studies/shift_study.py --help        # every option

Each strength runs in its own folder under ``--work`` (default ``studies/work/shift``), so
a stopped study resumes where it stopped (Snakemake reruns only what is missing). The
table and figure go into docs/domain-shift.md (between its ``study-shift`` markers) and
docs/images/shift-study.png; ``<work>/results.json`` holds every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from medtl.kernel.files import write_between_markers

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DOC = ROOT / "docs" / "domain-shift.md"
FIGURE = ROOT / "docs" / "images" / "shift-study.png"
START, END = "<!-- study-shift:start -->", "<!-- study-shift:end -->"
#: The arm whose gain over the reference the study follows.
ARM, REFERENCE = "finetune", "scratch"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--strengths",
        default="0,0.5,1,2",
        help="shift strengths, comma-separated, each 0 to 2 (default: 0,0.5,1,2)",
    )
    ap.add_argument(
        "--config",
        default=str(HERE / "config_shift.yaml"),
        help="what the study changes in config/config.yaml (default: studies/config_shift.yaml)",
    )
    ap.add_argument(
        "--work",
        default=str(HERE / "work" / "shift"),
        help="one run folder per strength (default: studies/work/shift)",
    )
    ap.add_argument("--cores", default="all", help="Snakemake's --cores (default: all)")
    ap.add_argument(
        "--no-doc", action="store_true", help="do not write docs/domain-shift.md and its figure"
    )
    ap.add_argument(
        "--no-run",
        action="store_true",
        help="do not run the workflow: read the finished runs in --work again (e.g. after "
        "changing the table or figure)",
    )
    args = ap.parse_args(argv)
    try:
        args.strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--strengths: expected numbers separated by commas, got {args.strengths!r}")
    if len(args.strengths) < 2 or any(not 0 <= s <= 2 for s in args.strengths):
        ap.error(f"--strengths: expected two or more values from 0 to 2, got {args.strengths}")
    return args


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it, mappings merged key by key.

    Example:
        >>> merged({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"c": 5}})
        {'a': {'b': 1, 'c': 5}, 'd': 3}
    """
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "arms":
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def run_config(changes: dict, strength: float) -> dict:
    """The demo's config with the study's changes and this strength."""
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = merged(base, changes)
    return merged(cfg, {"dataset": {"demo": {"shift": strength}}})


def run_folder(work: Path, strength: float) -> Path:
    """``<work>/shift-0.5``: one folder per strength."""
    return work / f"shift-{strength:g}"


def run_workflow(folder: Path, cfg: dict, cores: str) -> float:
    """Run the workflow in ``folder`` on ``cfg``; its wall time in seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
    cmd += ["--directory", str(folder), "--configfile", str(config_path), "--cores", cores]
    cmd += ["--rerun-incomplete", "--printshellcmds"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.monotonic()
    with open(folder / "study.log", "a") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"the workflow at {folder} failed: read {folder / 'study.log'}")
    return time.monotonic() - start


def collect(folder: Path, strength: float) -> dict:
    """One strength's numbers from its report summary and its shift record."""
    summary = json.loads((folder / "results" / "report" / "summary.json").read_text())
    shift = json.loads((folder / "results" / "shift" / "shift.json").read_text())
    versus = next(
        c
        for c in summary["versus_reference"]
        if c["arm"] == ARM and c["reference"] == REFERENCE and c["metric"] == "dice"
    )
    pooled = (summary.get("runs") or {}).get("pooled_noise_floor") or {}
    seed_dice = {
        (r["arm"], r["seed"]): r["mean_dice"]
        for r in (summary.get("runs") or {}).get("per_seed", [])
    }
    seeds = sorted({seed for arm, seed in seed_dice if arm == ARM})
    encoder = shift.get("encoder") or {}
    return {
        "strength": strength,
        "mmd2": encoder.get("mmd2"),
        "mmd_p": encoder.get("p_value"),
        "flagged_cases": encoder.get("flagged_cases"),
        "wasserstein": (shift.get("intensity") or {}).get("wasserstein"),
        "dice": {arm: summary["mean_dice"][arm] for arm in (REFERENCE, ARM)},
        "gain": versus["mean_diff"],
        "ci_low": versus["ci_low"],
        "ci_high": versus["ci_high"],
        "p_value": versus["p_value"],
        "n": versus["n"],
        "seeds": versus.get("seeds"),
        "aa_difference": pooled.get("aa_difference"),
        "seed_gains": {
            str(seed): seed_dice[(ARM, seed)] - seed_dice[(REFERENCE, seed)]
            for seed in seeds
            if (REFERENCE, seed) in seed_dice
        },
        "warnings": len(shift.get("warnings") or []),
    }


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def verdict(row: dict) -> str:
    """Helps, hurts, or cannot tell, from the CI of the gain."""
    if row["ci_low"] is not None and row["ci_low"] > 0:
        return "helps"
    if row["ci_high"] is not None and row["ci_high"] < 0:
        return "hurts"
    return "cannot tell"


def markdown(rows: list[dict], meta: dict) -> str:
    """The study's table, with the lines that say how it was made."""
    head = (
        "| shift | encoder MMD² (p) | Wasserstein | scratch Dice | finetune Dice "
        "| gain (95 % CI) | per seed | A/A floor | transfer |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['strength']:g} | {_f(r['mmd2'])} ({_f(r['mmd_p'], 3)}) | {_f(r['wasserstein'])} "
        f"| {_f(r['dice'][REFERENCE])} | {_f(r['dice'][ARM])} "
        f"| {r['gain']:+.3f} ({r['ci_low']:+.3f} to {r['ci_high']:+.3f}) "
        f"| {' / '.join(f'{g:+.3f}' for g in r.get('seed_gains', {}).values())} "
        f"| {_f(r['aa_difference'])} | {verdict(r)} |\n"
        for r in rows
    )
    return (
        f"Measured on {meta['date']}, medtl {meta['commit']}, {meta['machine']}; "
        f"{meta['minutes']:.0f} min in all. Each row is one whole workflow run of the demo "
        f"(seeds {meta['seeds']}; {meta['cases']} held-out cases).\n\n{head}{body}"
    )


def figure(rows: list[dict], path: Path) -> None:
    """Gain of finetune over scratch (95 % CI) against the measured shift, per strength."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6), layout="constrained")
    x = [r["mmd2"] for r in rows]
    y = [r["gain"] for r in rows]
    err = [[r["gain"] - r["ci_low"] for r in rows], [r["ci_high"] - r["gain"] for r in rows]]
    ax.errorbar(x, y, yerr=err, fmt="o", color="#2a7ab9", capsize=4, label="gain, 95 % CI")
    for r in rows:
        gains = list(r.get("seed_gains", {}).values())
        ax.scatter([r["mmd2"]] * len(gains), gains, marker="x", color="#d62728", s=22, zorder=3)
    ax.scatter([], [], marker="x", color="#d62728", s=22, label="gain within one seed")
    low = min(-0.5, min(min(r.get("seed_gains", {}).values(), default=0) for r in rows) - 0.1)
    ax.set_ylim(max(-1.0, low), 1.0)  # a Dice difference lies within ±1; longer CIs are cut
    for r in rows:
        ax.annotate(
            f"shift {r['strength']:g}",
            (r["mmd2"], r["gain"]),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=8,
        )
    floors = [r["aa_difference"] for r in rows if r["aa_difference"]]
    if floors:
        ax.axhspan(
            -max(floors), max(floors), color="0.88", zorder=0, label="A/A noise floor (widest)"
        )
    ax.legend(loc="lower left", fontsize=7)
    ax.axhline(0, color="0.4", lw=0.8, ls="--")
    ax.set_xlabel("encoder-feature MMD² between source and target")
    ax.set_ylabel(f"Dice gain, {ARM} − {REFERENCE}")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def write_doc(path: Path, body: str) -> None:
    """Replace the text between the study's markers in ``path``."""
    if not write_between_markers(path, body, START, END):
        raise SystemExit(f"{path}: expected the markers {START} and {END}; add them first")


def _meta(rows: list[dict], seconds: float, changes: dict) -> dict:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    load = os.getloadavg()[0]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit or "unknown",
        "machine": f"{os.cpu_count()} cores, load average {load:.1f} at the end",
        "minutes": seconds / 60,
        "seeds": ", ".join(str(s) for s in changes.get("seeds", [])),
        "cases": rows[0]["n"] if rows else 0,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    changes = yaml.safe_load(Path(args.config).read_text()) or {}
    work = Path(args.work).resolve()
    rows, total, before = [], 0.0, {}
    previous = work / "results.json"
    if args.no_run and previous.is_file():  # the runs' own date, machine and time
        before = json.loads(previous.read_text())["meta"]
        total = before["minutes"] * 60
    for strength in args.strengths:
        folder = run_folder(work, strength)
        if not args.no_run:
            print(f"shift {strength:g}: running the workflow in {folder}", flush=True)
            total += run_workflow(folder, run_config(changes, strength), args.cores)
        rows.append(collect(folder, strength))
        print(f"  gain {rows[-1]['gain']:+.3f}, MMD² {_f(rows[-1]['mmd2'])}", flush=True)
    meta = _meta(rows, total, changes) | {
        k: before[k] for k in ("date", "commit", "machine") if k in before
    }
    (work / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown(rows, meta)
    print(table)
    if not args.no_doc:
        figure(rows, FIGURE)
        write_doc(DOC, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
