"""DICOM → NIfTI conversion: ``medtl convert`` timed against ``dcm2niix`` on the same files.

The benchmark writes a set of CT-like DICOM series with medtl's own writer
(:func:`medtl.io.dicom_write.write_series`) once into ``WORKDIR/dicom``, then runs each
converter ``repeats`` times into fresh output folders, as a subprocess pinned to the same
CPUs, and takes the median of the wall time, the CPU time (user + system, from
``os.wait4``'s rusage, children included) and the peak resident memory (``ru_maxrss``: of
the largest single process, i.e. the main process or one worker, not their sum).

Compression, like with like: by default each side uses its own default gzip level,
nibabel's 1 for medtl (``--level``) and dcm2niix's 6 (``--dcm2niix-level``). The numbers
are not the same thing: dcm2niix's built-in compressor (used when pigz is not on the PATH)
at its level 6 writes files about as small as zlib at level 1 (within about 3 % of
each other on CT-like data), and zlib at level 6 is several times slower for a 2 % smaller
file. The result reports both sides' output size (``out_mb``) so that the comparison can be
checked; pass ``--level 6`` for the same nominal level, or ``--no-compress`` for
``--no-compress`` against ``-z n``, which compares no compressor at all. dcm2niix writes a
BIDS JSON sidecar per series (its default), medtl writes series.tsv.

Every run's output is checked: the same number of volumes, and for each series the same
voxel values and affine once both are reoriented to the closest canonical (RAS)
orientation. A mismatch is reported in the result (``agree: false`` and what differed).

Run with medtl's environment::

    .venv/bin/python benchmarks/dicom_convert.py --workdir /tmp/dicom-bench

The target is medtl within 1.5x of dcm2niix's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

TARGET_RATIO = 1.5
ARRAY_ATOL = 1e-3
AFFINE_ATOL_MM = 1e-3


@dataclass(frozen=True)
class SeriesSet:
    """The generated DICOM series set.

    Attributes:
        n_series: how many series.
        size: rows and columns of every slice.
        slices: slices of the first series; series ``s`` has ``slices + 2 * (s % 3) - 2``.
        seed: seed of the synthetic anatomy and noise.
    """

    n_series: int = 8
    size: int = 256
    slices: int = 120
    seed: int = 0


# ---------------------------------------------------------------------------------------
# The series set
# ---------------------------------------------------------------------------------------


def _phantom(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A CT-like volume in HU: air, a body ellipse, two lungs, a spine, noise."""
    nx, ny, nz = shape
    x = np.linspace(-1, 1, nx, dtype=np.float32)[:, None, None]
    y = np.linspace(-1, 1, ny, dtype=np.float32)[None, :, None]
    z = np.linspace(-1, 1, nz, dtype=np.float32)[None, None, :]
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = (x / 0.85) ** 2 + (y / (0.6 + 0.05 * z)) ** 2 < 1
    hu[body] = 40.0
    for side in (-0.4, 0.4):
        lung = ((x - side) / 0.3) ** 2 + (y / 0.4) ** 2 + (z / 1.3) ** 2 < 1
        hu[lung & body] = -850.0
    spine = (x / 0.1) ** 2 + ((y - 0.4) / 0.1) ** 2 < 1
    hu[np.broadcast_to(spine, shape)] = 700.0
    hu += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071)


def generate(folder: Path, spec: SeriesSet) -> list[Path]:
    """Write the series set into ``folder`` (one sub-folder per series); returns the files."""
    from pydicom.uid import generate_uid

    from medtl.io.dicom_write import write_series
    from medtl.io.volume import Volume

    rng = np.random.default_rng(spec.seed)
    files: list[Path] = []
    for s in range(spec.n_series):
        patient = s // 2  # two series (studies) per patient
        nz = spec.slices + 2 * (s % 3) - 2
        in_plane = 0.7 + 0.05 * (s % 4)
        thickness = (1.25, 2.0, 2.5, 3.0)[s % 4]
        affine = np.diag([in_plane, in_plane, thickness, 1.0])
        affine[:3, 3] = (-in_plane * spec.size / 2, -in_plane * spec.size / 2, -200.0 + 7 * s)
        volume = Volume(_phantom((spec.size, spec.size, nz), rng), affine, modality="CT")
        root = f"1.2.826.0.1.3680043.8.498.{spec.seed}.{patient}"
        files += write_series(
            volume,
            folder / f"patient{patient}" / f"series{s}",
            patient_id=f"BENCH-{patient:03d}",
            patient_name=f"Bench^Patient{patient}",
            birth_date="19600101",
            study_uid=f"{root}.{s}",
            series_uid=generate_uid(entropy_srcs=[root, str(s), "series"]),
            frame_of_reference_uid=generate_uid(entropy_srcs=[root, str(s), "frame"]),
            study_date="20240101",
            series_number=s + 1,
            series_description=f"CT bench {s}",
            modality="CT",
            rescale_intercept=-1024.0,
        )
    return files


def _ensure_series_set(workdir: Path, spec: SeriesSet) -> Path:
    """``WORKDIR/dicom``, written once per spec (a marker records what is there)."""
    folder = workdir / "dicom"
    marker = workdir / "dicom.json"
    wanted = json.dumps(asdict(spec), sort_keys=True)
    if folder.is_dir() and marker.is_file() and marker.read_text() == wanted:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    marker.unlink(missing_ok=True)
    generate(folder, spec)
    marker.write_text(wanted)
    return folder


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One run of a converter."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    out_mb: float


# Runs one command and reports its rusage. A small launcher, because a child inherits its
# parent's peak RSS as its own ru_maxrss: started straight from this process (which holds
# the loaded volumes) every converter would seem to need as much memory as the benchmark.
_LAUNCHER = """
import json, os, sys, time
report, cpus, nice, cmd = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
if cpus:
    os.sched_setaffinity(0, cpus)
if nice:
    os.nice(nice)
start = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(report, "w") as f:
    json.dump({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
               "maxrss_kb": usage.ru_maxrss, "status": os.waitstatus_to_exitcode(status)}, f)
"""


def _timed(cmd: list[str], log: Path, cpus: set[int] | None, out: Path, nice: int = 0) -> Timing:
    """Run ``cmd`` pinned to ``cpus``: wall and CPU time and peak RSS (``os.wait4``).

    Wall time is measured around the command alone, not the launcher's start-up. CPU
    time and peak RSS include the command's child processes (reaped by it); the peak is
    of the largest single process, and includes the launcher's few MB.
    """
    report = log.with_suffix(".json")
    launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(report)]
    with log.open("wb") as stream:
        subprocess.run(
            [*launcher, json.dumps(sorted(cpus or [])), str(nice), *cmd],
            stdout=stream,
            stderr=subprocess.STDOUT,
            check=True,
        )
    measured = json.loads(report.read_text())
    if measured["status"] != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"expected exit status 0 from {' '.join(cmd)}, got {measured['status']}; "
            f"output ends with:\n{tail}"
        )
    return Timing(
        wall_s=measured["wall"],
        cpu_s=measured["cpu"],
        peak_rss_mb=measured["maxrss_kb"] / 1024,  # kB on Linux
        out_mb=sum(p.stat().st_size for p in _volumes(out)) / 1e6,
    )


def _load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _cpu_set(workers: int) -> set[int] | None:
    if not hasattr(os, "sched_getaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    return set(available[: max(1, workers)])


def _dcm2niix_version(binary: str) -> str:
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    found = re.search(r"v\d+\.\d+\.\d+\w*", result.stdout + result.stderr)
    return found.group(0) if found else (result.stdout + result.stderr).strip()[:80]


def _default_dcm2niix() -> str:
    beside = Path(sys.executable).parent / "dcm2niix"
    found = str(beside) if beside.is_file() else shutil.which("dcm2niix")
    if found is None:
        raise FileNotFoundError(
            "expected a dcm2niix binary beside this Python or on the PATH, found none; fix: "
            "`pip install dcm2niix` (medtl's dev extra) or pass --dcm2niix PATH"
        )
    return found


# ---------------------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------------------


def _volumes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")))


def compare_outputs(medtl_out: Path, dcm2niix_out: Path) -> dict:
    """Whether the two converters wrote the same volumes; what differed if not.

    medtl's series.tsv names each file's SeriesInstanceUID; dcm2niix is run with
    ``-f %j`` so that its files are named by it.
    """
    ours = _volumes(medtl_out)
    theirs = {p.name.removesuffix(".gz").removesuffix(".nii"): p for p in _volumes(dcm2niix_out)}
    problems: list[str] = []
    if len(ours) != len(theirs):
        problems.append(f"medtl wrote {len(ours)} volumes, dcm2niix {len(theirs)}")
    rows = (medtl_out / "series.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    uid_by_file = {
        r.split("\t")[header.index("file")]: r.split("\t")[header.index("series_uid")]
        for r in rows[1:]
    }
    worst_value, worst_affine = 0.0, 0.0
    for path in ours:
        uid = uid_by_file.get(path.name)
        if uid not in theirs:
            problems.append(f"{path.name}: no dcm2niix volume for series {uid}")
            continue
        a = nib.as_closest_canonical(nib.load(path))
        b = nib.as_closest_canonical(nib.load(theirs[uid]))
        if a.shape != b.shape:
            problems.append(f"{path.name}: shape {a.shape} but dcm2niix {b.shape}")
            continue
        value = float(np.max(np.abs(a.get_fdata(dtype=np.float32) - b.get_fdata(dtype=np.float32))))
        affine = float(np.max(np.abs(a.affine - b.affine)))
        worst_value, worst_affine = max(worst_value, value), max(worst_affine, affine)
        if value > ARRAY_ATOL:
            problems.append(f"{path.name}: voxel values differ by up to {value:g}")
        if affine > AFFINE_ATOL_MM:
            problems.append(f"{path.name}: affines differ by up to {affine:g} mm")
    return {
        "agree": not problems,
        "problems": problems,
        "max_abs_voxel_difference": worst_value,
        "max_abs_affine_difference_mm": worst_affine,
    }


# ---------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------


def _best(timings: list[Timing]) -> dict:
    """The least disturbed run (shortest wall time): other load only ever adds time."""
    return asdict(min(timings, key=lambda t: t.wall_s))


def _median(timings: list[Timing]) -> dict:
    return {
        "wall_s": statistics.median(t.wall_s for t in timings),
        "cpu_s": statistics.median(t.cpu_s for t in timings),
        "peak_rss_mb": statistics.median(t.peak_rss_mb for t in timings),
        "out_mb": statistics.median(t.out_mb for t in timings),
    }


def run(
    workdir: Path,
    repeats: int = 3,
    workers: int = 2,
    medtl_cmd: list[str] | None = None,
    dcm2niix: str | None = None,
    *,
    compress: bool = True,
    level: int = 1,
    dcm2niix_level: int = 6,
    spec: SeriesSet | None = None,
    nice: int = 0,
) -> dict:
    """Time ``medtl convert`` against ``dcm2niix`` on a generated series set.

    Args:
        workdir: folder for the series set (kept between calls) and the outputs.
        repeats: runs of each converter; the medians are reported.
        workers: medtl's ``--workers``; both converters are pinned to this many CPUs.
        medtl_cmd: how to start medtl (default: this Python ``-m medtl``).
        dcm2niix: the dcm2niix binary (default: beside this Python, else on the PATH).
        compress: gzip the output on both sides (``-z y`` against ``--compress``).
        level: medtl's gzip level (``--level``; 1 is nibabel's default).
        dcm2niix_level: dcm2niix's gzip level (``-<level>``; 6 is its default).
        spec: the series set (default: 8 series of 256 x 256 x ~120 int16 CT slices).
        nice: niceness of both converters (negative, as root, to measure on a machine
            others are using: the pinned CPUs then go mostly to the converter).

    Returns:
        Medians and per-repeat timings per converter, the ratio of the medians' wall
        times (medtl / dcm2niix), the agreement check, the dcm2niix version, the number of
        files and series and their size in MB.

    Raises:
        RuntimeError: a converter exited with an error.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = _load_average()
    spec = spec or SeriesSet()
    medtl_cmd = medtl_cmd or [sys.executable, "-m", "medtl"]
    dcm2niix = dcm2niix or _default_dcm2niix()
    dicom = _ensure_series_set(workdir, spec)
    files = [p for p in dicom.rglob("*") if p.is_file()]
    cpus = _cpu_set(workers)
    runs = workdir / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    gzip_args = ["-z", "y", f"-{dcm2niix_level}"] if compress else ["-z", "n"]
    medtl_args = ["--compress", "--level", str(level)] if compress else ["--no-compress"]
    timings: dict[str, list[Timing]] = {"medtl": [], "dcm2niix": []}
    agreement: dict = {}
    for r in range(repeats):
        # Alternate the order so that neither always finds the page cache warm first.
        order = ("dcm2niix", "medtl") if r % 2 == 0 else ("medtl", "dcm2niix")
        outs = {}
        for tool in order:
            out = Path(tempfile.mkdtemp(prefix=f"{tool}-{r}-", dir=runs))
            if tool == "medtl":
                cmd = [*medtl_cmd, "convert", str(dicom), "--out", str(out)]
                cmd += ["--workers", str(workers), "--quiet", *medtl_args]
            else:
                cmd = [dcm2niix, *gzip_args, "-f", "%j", "-o", str(out), str(dicom)]
            timings[tool].append(_timed(cmd, runs / f"{tool}-{r}.log", cpus, out, nice))
            outs[tool] = out
        agreement = compare_outputs(outs["medtl"], outs["dcm2niix"])
        if not agreement["agree"]:
            break
        for out in outs.values():
            shutil.rmtree(out)
    medians = {tool: _median(t) for tool, t in timings.items()}
    return {
        "medtl": {
            "median": medians["medtl"],
            "best": _best(timings["medtl"]),
            "runs": [asdict(t) for t in timings["medtl"]],
        },
        "dcm2niix": {
            "median": medians["dcm2niix"],
            "best": _best(timings["dcm2niix"]),
            "runs": [asdict(t) for t in timings["dcm2niix"]],
            "version": _dcm2niix_version(dcm2niix),
            "gzip": (
                ("pigz" if shutil.which("pigz") else "internal, no pigz on the PATH")
                if compress
                else "none"
            ),
        },
        "ratio": medians["medtl"]["wall_s"] / medians["dcm2niix"]["wall_s"],
        "ratio_best": _best(timings["medtl"])["wall_s"] / _best(timings["dcm2niix"])["wall_s"],
        # Each repeat runs the two back to back: the median of their ratios is less
        # sensitive to other load on the machine than the ratio of the medians.
        "ratio_per_repeat": [
            m.wall_s / d.wall_s for m, d in zip(timings["medtl"], timings["dcm2niix"], strict=True)
        ],
        "target_ratio": TARGET_RATIO,
        "agreement": agreement,
        "compress": compress,
        "level": level if compress else None,
        "dcm2niix_level": dcm2niix_level if compress else None,
        "workers": workers,
        "cpus": sorted(cpus) if cpus else None,
        "nice": nice,
        # Other work on the machine, which slows the parallel converter most.
        "load_average": {"before": load_before, "after": _load_average()},
        "repeats": repeats,
        "n_files": len(files),
        "n_series": spec.n_series,
        "total_mb": sum(p.stat().st_size for p in files) / 1e6,
        "series_set": asdict(spec),
    }


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def _table(result: dict) -> str:
    mode = (
        f"gzip: medtl level {result['level']}, dcm2niix level {result['dcm2niix_level']}"
        if result["compress"]
        else "uncompressed"
    )
    lines = [
        f"{result['n_series']} series, {result['n_files']} files, {result['total_mb']:.0f} MB; "
        f"{mode}; {result['workers']} worker(s) on CPUs {result['cpus']}, nice "
        f"{result['nice']}; median of {result['repeats']}; machine load average "
        f"{_fmt(result['load_average']['before'])} before, "
        f"{_fmt(result['load_average']['after'])} after",
        f"{'':10} {'wall s':>8} {'best':>6} {'CPU s':>7} {'peak RSS MB':>12} {'output MB':>10}",
    ]
    for tool in ("medtl", "dcm2niix"):
        m, b = result[tool]["median"], result[tool]["best"]
        lines.append(
            f"{tool:10} {m['wall_s']:8.2f} {b['wall_s']:6.2f} {m['cpu_s']:7.2f} "
            f"{m['peak_rss_mb']:12.0f} {m['out_mb']:10.1f}"
        )
    ok = "within" if result["ratio"] <= result["target_ratio"] else "OVER"
    per_repeat = ", ".join(f"{r:.2f}" for r in result["ratio_per_repeat"])
    lines.append(
        f"medtl / dcm2niix wall time: {result['ratio']:.2f} median ({ok} the {TARGET_RATIO}x "
        f"target), {result['ratio_best']:.2f} best, per repeat {per_repeat}"
    )
    lines.append(f"dcm2niix {result['dcm2niix']['version']}, gzip: {result['dcm2niix']['gzip']}")
    agreement = result["agreement"]
    if agreement.get("agree"):
        lines.append(
            "outputs agree: max voxel difference "
            f"{agreement['max_abs_voxel_difference']:g}, max affine difference "
            f"{agreement['max_abs_affine_difference_mm']:g} mm"
        )
    else:
        lines.append("OUTPUTS DIFFER: " + "; ".join(agreement.get("problems", [])))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="series set and outputs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--level", type=int, default=1, help="medtl's gzip level")
    parser.add_argument("--dcm2niix-level", type=int, default=6, help="dcm2niix's gzip level")
    parser.add_argument("--no-compress", action="store_true", help="-z n against --no-compress")
    parser.add_argument("--series", type=int, default=SeriesSet.n_series)
    parser.add_argument("--size", type=int, default=SeriesSet.size)
    parser.add_argument("--slices", type=int, default=SeriesSet.slices)
    parser.add_argument("--dcm2niix", default=None, help="the dcm2niix binary")
    parser.add_argument("--nice", type=int, default=0, help="niceness of both converters")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(
        args.workdir,
        repeats=args.repeats,
        workers=args.workers,
        dcm2niix=args.dcm2niix,
        compress=not args.no_compress,
        level=args.level,
        dcm2niix_level=args.dcm2niix_level,
        nice=args.nice,
        spec=SeriesSet(n_series=args.series, size=args.size, slices=args.slices),
    )
    print(_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["agreement"].get("agree") else 1


if __name__ == "__main__":
    sys.exit(main())
