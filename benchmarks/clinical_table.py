"""``make bench-clinical``'s table: medtl against nnU-Net v2 (and dcm2niix) on CT-like
cases at clinical size, one row per measure with its target and the min–max over
repeats; written into docs/benchmarks.md between its own markers, only from a full run.
"""

from __future__ import annotations

from collections.abc import Callable

from bench_table import ratio_rows, row_lines, table_head

START = "<!-- bench-clinical:start -->"
END = "<!-- bench-clinical:end -->"
HEADING = "## Clinical sizes"


def _memory_rows(res: dict, add: Callable[..., None]) -> None:
    """Peak memory (PSS of the process tree) of the inference runs of all held-out cases."""
    inf = res["inference"]
    for key, label in (("no_tta", "TTA off"), ("tta", "TTA on (8 mirrors)")):
        m, n = inf[key]["medtl"], inf[key]["nnunet"]
        add(f"inference peak memory (MiB), {label}", m["peak_rss_mb"], n["peak_rss_mb"])


def clinical_rows(res: dict) -> list[dict]:
    """``make bench``'s rows for the parts this run has (preprocessing, inference, DICOM),
    with the inference runs' peak memory after the inference rows.

    Example:
        >>> rows = clinical_rows({})
        >>> rows
        []
    """
    rows = ratio_rows(res)
    if "inference" not in res:
        return rows
    extra: list[dict] = []

    def add(measure: str, medtl: float, peer: float) -> None:
        extra.append(
            {
                "measure": measure,
                "name": "medtl",
                "medtl": medtl,
                "peer": peer,
                "peer_name": "nnU-Net",
                "ratio": medtl / peer if peer else float("nan"),
                "better": "lower",
                "target": "",
                "met": None,
                "spread": None,
            }
        )

    _memory_rows(res, add)
    last = max(i for i, r in enumerate(rows) if r["measure"].startswith("inference"))
    return rows[: last + 1] + extra + rows[last + 1 :]


def _xyz(values: list) -> str:
    return " × ".join(f"{v:g}" for v in values)


def _windows(res: dict) -> str:
    """How medtl's sliding window covered the held-out cases, from the run's record."""
    inf = res.get("inference", {})
    if not inf.get("windows"):
        return ""
    each = "; ".join(
        f"{_xyz(w['shape'])} in {w['count']} window{'s' if w['count'] > 1 else ''} of "
        f"{_xyz(w['window'])}"
        for w in inf["windows"]
    )
    return f" and predicts with `--window {inf.get('window', 'patch')}` (held-out cases: {each})"


def _notes(res: dict) -> list[str]:
    notes = []
    sp = res.get("spacing")
    if sp:
        notes.append(
            f"Grids: the cases are {_xyz(res['shape'])} voxels at {_xyz(res['native_spacing'])} "
            f"mm; medtl ran at {_xyz(sp['medtl'])} mm, nnU-Net at {_xyz(sp['nnunet'])} mm "
            f"(`-overwrite_target_spacing`), its planned patch {_xyz(sp['nnunet_patch_xyz'])} "
            f"(x, y, z), batch {sp['nnunet_batch']}; medtl's `{res['model']['name']}` was "
            f"trained on a {_xyz(res['patch'])} patch{_windows(res)}. Both predict from the raw "
            "images and write masks on the original grid."
        )
    tr = res.get("training")
    if tr:
        notes.append(
            f"Training, briefly, one fold model each: medtl {tr['medtl']['steps']} steps "
            f"({tr['medtl']['wall_s'] / 60:.1f} min), nnU-Net {tr['nnunet']['epochs']} epochs "
            f"of {tr['nnunet']['iters']} iterations ({tr['nnunet']['wall_s'] / 60:.1f} min). "
            "The Dice rows are what a few minutes of training on a few cases give, not either "
            "tool's accuracy; they only say whether the faster tool segments as well."
        )
    if "inference" in res:
        inf = res["inference"]
        notes.append(
            f"Inference: {inf['cases']} held-out cases, seconds per case after start-up = "
            "(wall of all cases − wall of one) / (cases − 1), min–max over the repeats' own "
            "estimates; peak memory is the largest PSS of the process tree (median over "
            "repeats)."
        )
    if "dicom" in res:
        dcm = res["dicom"]
        s = dcm["series_set"]
        notes.append(
            f"DICOM: {dcm['n_series']} generated series of {s['size']} × {s['size']} × "
            f"~{s['slices']} slices ({dcm['total_mb']:.0f} MB, {dcm['n_files']} files); "
            f"dcm2niix {dcm['dcm2niix']['version']}; outputs "
            f"{'hold the same voxels' if dcm['agreement']['agree'] else '**differ**'}."
        )
    return notes


def clinical_markdown(res: dict) -> str:
    """The table and its notes, as written between the markers."""
    lines = table_head(res) + row_lines(clinical_rows(res))
    return "\n".join(lines + [""] + [f"- {n}" for n in _notes(res)]) + "\n"
