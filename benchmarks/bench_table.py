"""The benchmark's table: one row per measure (medtl, the peer, their ratio and the
target), as Markdown, written into docs/benchmarks.md between its markers.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_common import END, NNUNET_ITERS, START, TARGETS
from bench_quiet import quiet_line, refusal

from medtl.kernel.files import atomic_write_text, write_between_markers

#: Per-case inference costs below this are within the run-to-run noise of the
#: difference between an all-case and a one-case run (start-up varies by ~0.3 s).
NOISE_S = 0.05
#: The column of each timed row's lowest and highest repeat (ratios stay median / median).
SPREAD = "min–max over repeats (medtl; peer)"


def fmt(x: float, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def _preprocess_rows(res: dict, add: Callable[..., None]) -> None:
    """Preprocessing: wall time (with its target), CPU time, peak memory."""
    p = res["preprocess"]
    r = p["medtl"]["wall_s"] / p["nnunet"]["wall_s"]
    add(
        "preprocessing wall (s)",
        p["medtl"]["wall_s"],
        p["nnunet"]["wall_s"],
        "lower",
        TARGETS["preprocess"][2],
        r <= TARGETS["preprocess"][1],
        spread=runs(p, "walls"),
    )
    # CPU is a timing with repeats (min–max); peak memory is not a timing
    for measure, key, spread in (
        ("CPU (s)", "cpu_s", runs(p, "cpus")),
        ("peak memory (MiB)", "peak_rss_mb", None),
    ):
        add(f"preprocessing {measure}", p["medtl"][key], p["nnunet"][key], "lower", spread=spread)


def runs(part: dict, key: str, sides=("medtl", "nnunet"), scale: float = 1.0) -> tuple:
    """The per-repeat values ``part[side][key]`` of both sides (× ``scale``), for the
    min–max column; an empty list where results.json has none (runs before it was kept).

    Example:
        >>> runs({"medtl": {"walls": [1, 3]}, "nnunet": {}}, "walls", scale=0.5)
        ([0.5, 1.5], [])
    """
    return tuple([v * scale for v in part[side].get(key, [])] for side in sides)


def spread_cell(row: dict, digits: int = 2) -> str:
    """The min–max column of a row: each side's lowest and highest repeat, or "1 run".

    Example:
        >>> spread_cell({"spread": ([2.0, 1.5, 1.75], [4.0])})
        '1.50–2.00; 1 run'
    """

    def one(values: list) -> str:
        if not values:
            return "–"
        if len(values) == 1:
            return "1 run"
        return f"{min(values):.{digits}f}–{max(values):.{digits}f}"

    spread = row.get("spread")
    return "; ".join(one(v) for v in spread) if spread else ""


def throughput_rows(res: dict, add: Callable[..., None]) -> None:
    """Training throughput at nnU-Net's patch and batch."""
    t = res["throughput"]
    add(
        f"training iterations/s (patch {t['nnunet']['patch']}, batch {t['nnunet']['batch']})",
        t["medtl_same_patch"]["it_per_s"],
        t["nnunet"]["it_per_s"],
        "higher",
    )
    add(
        "training samples/s (same patch and batch)",
        t["medtl_same_patch"]["samples_per_s"],
        t["nnunet"]["samples_per_s"],
        "higher",
    )


def _budgets_rows(res: dict, add: Callable[..., None]) -> None:
    """Dice at each training budget, every medtl arm against nnU-Net."""
    bud = res["budgets"]
    arms = [a for a in bud if isinstance(bud[a], dict) and "dice" in bud[a] and a != "nnunet"]
    best = max(arms, key=lambda a: np.nan_to_num(bud[a]["dice"][-1], nan=-1))
    for i, m in enumerate(bud["budgets_min"]):
        last = i == len(bud["budgets_min"]) - 1
        for arm in arms:
            target = "≥ 1 (best arm, largest budget)" if last and arm == best else ""
            met = bud[arm]["dice"][i] >= bud["nnunet"]["dice"][i] if target else None
            add(
                f"Dice after {m:g} min of training: medtl {arm}",
                bud[arm]["dice"][i],
                bud["nnunet"]["dice"][i],
                "higher",
                target,
                met,
            )


def _inference_rows(res: dict, add: Callable[..., None]) -> None:
    """Inference per case (after and with start-up), start-up and Dice, TTA off and on."""
    inf = res["inference"]
    for key, label in (("no_tta", "TTA off"), ("tta", "TTA on (8 mirrors)")):
        m, n = inf[key]["medtl"], inf[key]["nnunet"]
        r = m["s_per_case"] / n["s_per_case"]
        cases = inf["cases"]
        ok = r <= TARGETS["inference"][1] and m["dice"] >= n["dice"]
        add(
            f"inference s/case after start-up, {label}",
            m["s_per_case"],
            n["s_per_case"],
            "lower",
            TARGETS["inference"][2] + ", Dice ≥",
            ok,
            spread=runs(inf[key], "s_per_case_runs"),
        )
        add(
            f"inference s/case with start-up ({inf['cases']} cases), {label}",
            m["s_per_case_with_startup"],
            n["s_per_case_with_startup"],
            "lower",
            spread=runs(inf[key], "walls", scale=1 / cases),
        )
        add(
            f"inference start-up (s), {label}",
            m["startup_s"],
            n["startup_s"],
            "lower",
            spread=runs(inf[key], "startup_runs"),
        )
        add(f"inference Dice, {label}", m["dice"], n["dice"], "higher")
    _onnx_rows(res, add)


def _onnx_rows(res: dict, add: Callable[..., None]) -> None:
    """medtl's model exported to ONNX: ONNX Runtime's inference per case after start-up
    against eager PyTorch's, both on the CPU, TTA off and on (a measure, no target).
    Results of runs before the ONNX rows have none."""
    onnx = res["inference"].get("onnx")
    if not onnx:
        return
    for key, label in (("no_tta", "TTA off"), ("tta", "TTA on (8 mirrors)")):
        ort, eager = onnx[key]["onnxruntime"], onnx[key]["torch"]
        add(
            f"inference s/case after start-up, ONNX Runtime vs eager PyTorch (CPU), {label}",
            ort["s_per_case"],
            eager["s_per_case"],
            "lower",
            name="ONNX Runtime",
            peer_name="PyTorch",
            spread=runs(onnx[key], "s_per_case_runs", ("onnxruntime", "torch")),
        )


def _dicom_rows(res: dict, add: Callable[..., None]) -> None:
    """DICOM → NIfTI conversion against dcm2niix."""
    dcm = res["dicom"]
    med, peer = dcm["medtl"]["median"]["wall_s"], dcm["dcm2niix"]["median"]["wall_s"]
    dcm_sides = ("medtl", "dcm2niix")
    add(
        f"DICOM → NIfTI wall (s), {dcm['n_series']} series / {dcm['n_files']} files",
        med,
        peer,
        "lower",
        TARGETS["dicom"][2],
        med / peer <= TARGETS["dicom"][1],
        peer_name="dcm2niix",
        spread=tuple([r["wall_s"] for r in dcm[side].get("runs", [])] for side in dcm_sides),
    )


# The table's parts in their order: each adds its rows when results.json has it.
def _startup_rows(res: dict, add: Callable[..., None]) -> None:
    """Start-up per command (benchmarks/startup.py): no peer; the import time of each
    command a workflow job runs, and whether it imported torch / MONAI."""
    for name, r in res["startup"].items():
        heavy = [lib for lib, key in (("torch", "torch"), ("MONAI", "monai")) if r[key]]
        add(
            f"start-up `medtl {name}`: imports (s; {', '.join(heavy) or 'no torch'})",
            r["import_s"]["median"],
            None,
            "lower",
            peer_name="",
            spread=(r["import_s"]["runs"],),
        )


RATIO_PARTS = {
    "preprocess": _preprocess_rows,
    "throughput": throughput_rows,
    "budgets": _budgets_rows,
    "inference": _inference_rows,
    "dicom": _dicom_rows,
    "startup": _startup_rows,
}


def ratio_rows(res: dict) -> list[dict]:
    """One row per measure: medtl, the peer, medtl/peer, which way is better, the target."""
    rows = []

    def add(
        measure,
        medtl,
        peer,
        better,
        target="",
        met=None,
        peer_name="nnU-Net",
        name="medtl",
        spread=None,
    ):
        ratio = medtl / peer if peer else float("nan")
        rows.append(
            {
                "measure": measure,
                "name": name,
                "medtl": medtl,
                "peer": peer,
                "peer_name": peer_name,
                "ratio": ratio,
                "better": better,
                "target": target,
                "met": met,
                "spread": spread,
            }
        )

    for part, part_rows in RATIO_PARTS.items():
        if part in res:
            part_rows(res, add)
    return rows


def measured_on(v: dict) -> str:
    """The table's first line: date, machine, threads and versions (``results["versions"]``)."""
    return (
        f"Measured on {v['date']} — {v['machine']}; GPU: {v['gpu']}; {v['threads']} threads for "
        f"each tool. medtl {v['medtl']} (torch {v['torch (medtl)']}, MONAI {v['monai']}), "
        f"nnU-Net {v['nnunetv2']} (torch {v['torch (nnU-Net)']}), Python {v['python']}."
    )


def row_lines(rows: list[dict]) -> list[str]:
    """The Markdown lines of :func:`ratio_rows`' rows (per-case figures below the noise of
    their estimate shown as such)."""
    lines = []
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        digits = 3 if "Dice" in r["measure"] else 2
        low = [
            (side, who)
            for side, who in (("medtl", r["name"]), ("peer", r["peer_name"]))
            if "after start-up" in r["measure"] and r[side] < NOISE_S
        ]
        if low:
            # the one-case run and the all-case run differ by less than run-to-run noise
            r = {**r, "ratio": None, **{side: None for side, _ in low}}
            who = " and ".join(w for _, w in low)
            r["measure"] += f" ({who}: below {NOISE_S} s, the noise of the estimate)"
        peer = f"{r['peer_name']} {fmt(r['peer'], digits)}".strip()
        lines.append(
            f"| {r['measure']} | {fmt(r['medtl'], digits)} | {peer} "
            f"| {fmt(r['ratio'])} | {r['better']} | {r['target']} | {met} "
            f"| {spread_cell(r, digits)} |"
        )
    return lines


def _timed(part) -> bool:
    """An inference setting's record (``no_tta``, ``tta``): medtl's runs with their count."""
    return isinstance(part, dict) and isinstance(part.get("medtl"), dict)


def table_head(res: dict) -> list[str]:
    """The lines above a ratio table: machine and versions, data and repeats, quietness,
    and the column heads."""
    repeats = f"medians over {res['repeats']} repeats"
    runs = [v["medtl"].get("repeats") for v in res.get("inference", {}).values() if _timed(v)]
    inference = max((r for r in runs if r), default=None) or res["repeats"]
    if inference != res["repeats"]:
        repeats += f" ({inference} for inference)"
    return [
        measured_on(res["versions"]),
        f"Data: {res['data']}; fold {res['fold']}; {repeats}; "
        f"the whole run took {res['total_min']:.1f} min.",
        quiet_line(res),
        "",
        f"| measure | medtl | peer | medtl / peer | better | target | met | {SPREAD} |",
        "|---|---|---|---|---|---|---|---|",
    ]


def markdown(res: dict) -> str:
    lines = table_head(res) + row_lines(ratio_rows(res))
    extra = []
    if "throughput" in res:
        t = res["throughput"]["medtl_default"]
        extra.append(
            f"medtl's own configuration (patch {t['patch']}, batch {t['batch']}) trains at "
            f"{t['it_per_s']:.2f} iterations/s ({t['samples_per_s']:.2f} samples/s)."
        )
    if "budgets" in res:
        bud = res["budgets"]
        parts = [
            f"nnU-Net ran {bud['nnunet']['epochs_run']} epochs of {NNUNET_ITERS} iterations "
            f"(planned {bud['nnunet']['epochs_planned']})"
        ]
        for arm in [a for a in bud if isinstance(bud[a], dict) and "steps_run" in bud[a]]:
            parts.append(
                f"medtl {arm} {bud[arm]['steps_run']} of {bud[arm]['steps_planned']} steps"
            )
        extra.append(
            "Training to the largest budget: "
            + "; ".join(parts)
            + f"; {bud['test_cases']} held-out cases."
        )
    if res.get("inference", {}).get("window"):
        extra.append(
            f"medtl predicted with `--window {res['inference']['window']}` "
            "(docs/configuration.md); nnU-Net with its planned patch."
        )
    if res.get("inference", {}).get("onnx"):
        extra.append(_onnx_note(res["inference"]["onnx"]))
    if res.get("pretrain", {}).get("timing"):
        extra.append(
            f"medtl's pretraining (one-off, reused by every pretrained arm and fold) took "
            f"{res['pretrain']['timing']['wall_s']:.0f} s, not counted in the budgets."
        )
    if "dicom" in res:
        dcm = res["dicom"]
        gz = (
            f"gzip level {dcm['level']} (medtl) and {dcm['dcm2niix_level']} (dcm2niix)"
            if dcm["compress"]
            else "uncompressed"
        )
        extra.append(
            f"DICOM set: {dcm['total_mb']:.0f} MB; dcm2niix {dcm['dcm2niix']['version']}; {gz}; "
            f"outputs {'hold the same voxels' if dcm['agreement']['agree'] else '**differ**'}."
        )
    return "\n".join(lines + [""] + extra) + "\n"


def _onnx_note(onnx: dict) -> str:
    """The ONNX rows' context: the export's time, start-ups, and the masks' agreement."""
    parts = []
    for key, label in (("no_tta", "TTA off"), ("tta", "TTA on")):
        o = onnx[key]
        masks = o["masks"]
        parts.append(
            f"{label}: start-up {o['onnxruntime']['startup_s']:.2f} s against "
            f"{o['torch']['startup_s']:.2f} s, masks identical to PyTorch's in "
            f"{100 * masks['identical_voxels']:.3f} % of voxels (lowest case "
            f"{100 * masks['lowest_case']:.3f} %)"
        )
    return (
        f"ONNX Runtime ran the same model exported once by `medtl export-onnx` "
        f"({onnx['export_s']:.1f} s, not in the rows), on the CPU with the same threads; "
        + "; ".join(parts)
        + "."
    )


def write_doc(path: Path, body: str, start: str = START, end: str = END, heading: str = "") -> None:
    """Replace the text between the markers ``start`` and ``end`` of ``path`` (by default
    ``make bench``'s); without them, append ``heading`` and the markers (or create the
    file)."""
    if write_between_markers(path, body, start, end):
        return
    block = f"{start}\n{body}{end}"
    if path.is_file():
        text = path.read_text().rstrip() + "\n\n" + (f"{heading}\n\n" if heading else "")
        atomic_write_text(path, text + block + "\n")
    else:
        atomic_write_text(path, f"# Benchmarks\n\n{block}\n")


def partial_run(res: dict) -> str:
    """The parts a ``--only`` run left out, comma-separated; empty for a full run.

    The docs table is only ever the output of one full run: a partial one prints its
    table and leaves the docs alone. Read from what the run recorded (``only`` and
    ``all_parts``, :func:`bench_common.measured_run`), so a partial run's results.json
    given to ``--from-json`` stays out of the docs too; a run that recorded neither (before
    the harness did) counts as full.

    Example:
        >>> partial_run({"only": ["dicom"], "all_parts": ["dicom", "inference"]})
        'inference'
        >>> partial_run({"only": ["dicom", "inference"], "all_parts": ["dicom", "inference"]})
        ''
    """
    every = res.get("all_parts") or []
    return ", ".join(sorted(set(every) - set(res.get("only", every))))


def publish(res: dict, render: Callable[[dict], str], args, **markers: str) -> int:
    """Print the table of ``res`` and write it into ``args.out`` unless :func:`refusal`
    objects and ``args.allow_disturbed`` is not set; the exit status (3: refused).

    A partial run (:func:`partial_run`) only prints. ``markers``: ``write_doc``'s
    ``start``, ``end`` and ``heading`` (default: ``make bench``'s). Call it after
    ``results.json`` is saved: a refused run keeps its numbers.
    """
    res["busy_threshold"] = args.busy_threshold
    body = render(res)
    print("\n" + body)
    skipped = partial_run(res)
    if skipped:
        print(f"{args.out} not written: a partial run (--only leaves out {skipped}).")
        return 0
    why = refusal(res, args.busy_threshold)
    if why and not args.allow_disturbed:
        print(f"{args.out} not written: {why}.", file=sys.stderr)
        return 3
    write_doc(Path(args.out), body, **markers)
    return 0
