"""Every command README.md and docs/*.md print runs here, exactly as printed.

Each command runs in a copy of the project (the files git knows, ``.venv`` linked to the
environment these tests run in) holding the finished micro run (``micro_run``): its
``results/``, ``data/``, ``logs/`` and Snakemake's records, and the micro config as
``config/config.yaml``. So ``make run``
meets a finished run, and ``medtl predict ... --model results`` a finished model.

The shell gets the user's ``PATH`` *without* the virtual environment: a command printed as
``.venv/bin/snakemake`` must work from a shell that never activated it (the README's rerun
commands once failed with ``medtl: command not found``). Commands printed as a bare
``snakemake``/``medtl``/``python`` are documented for an activated environment
(docs/cluster.md: "The commands below write `snakemake` for `.venv/bin/snakemake`"), so
they get it.

Every documented command must be listed in :data:`HANDLING`: run (with what it needs
placed where the docs say, and a check of what it made), *named* (an inline mention of a
subcommand or option: the subcommand and each option must exist), or *not here* with
the reason. A new command in the docs that is not listed fails
``test_every_documented_command_is_handled``.

The SLURM commands of docs/cluster.md run in ``test_slurm.py`` against its test cluster.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.docs.documented import documented_commands
from tests.support.workflow import VENV, copy_project, run_documented

# ------------------------------------------------------------------- how each is handled


@dataclass(frozen=True)
class Run:
    """Run the command in a fresh copy of the finished run.

    Attributes:
        setup: places what the command needs (a folder of new scans, a config copy).
        check: asserts what the command made (beyond its exit status 0).
        fails: for a command the docs show being refused: a regular expression its
            one-line error must match (exit status 1, no traceback).
    """

    setup: Callable[[Path], None] | None = None
    check: Callable[[Path, str], None] | None = None
    fails: str = ""


@dataclass(frozen=True)
class Named:
    """An inline mention (``medtl predict``, ``medtl preprocess --out-dir``): the subcommand
    and every option it names must exist."""


@dataclass(frozen=True)
class NotHere:
    """Cannot run in the test suite; the reason says why and what covers it instead."""

    reason: str


# --------------------------------------------------------------------- setups and checks


def _dev_installed(root: Path) -> None:
    """`make lint` needs the dev extra's stamp in the venv the copy links to: without it,
    make would `pip install -e ".[dev]"` from the copy into the venv these tests run in."""
    stamps = [root / ".venv" / name for name in (".installed", ".installed-dev")]
    if not all(stamp.is_file() for stamp in stamps):
        pytest.fail(
            f"expected {stamps[1].name} beside {stamps[0].name} in the test venv ({VENV}), "
            "got none: make lint would reinstall medtl from a temporary copy into it. How to "
            "fix: run `make test` (or `make lint`) in the project once; it installs the dev "
            "extra and writes the stamp."
        )


def _new_scans(folder: str) -> Callable[[Path], None]:
    """Put one DICOM series of the run's demo target under ``folder`` (new scans)."""

    def setup(root: Path) -> None:
        series = sorted((root / "data" / "demo" / "target" / "dicom").glob("*/*/series*"))[0]
        shutil.copytree(series, root / folder / series.name)

    return setup


def _rtstruct_export(folder: str) -> Callable[[Path], None]:
    """A DICOM export as a planning system writes it: one series and an RTSTRUCT whose ROI
    is named ``GTV`` (mapped to ``tumour`` through ``--synonyms``)."""

    def setup(root: Path) -> None:
        import nibabel as nib

        from medtl.io.dicom import discover, load_series
        from medtl.io.rtstruct_write import write_rtstruct

        sheet = (root / "data" / "demo" / "target" / "cases.tsv").read_text().splitlines()
        image, label = sheet[1].split("\t")
        target = root / folder / "patient"
        shutil.copytree(root / "data" / "demo" / "target" / image, target / "CT")
        series = discover(target / "CT").series[0]
        volume = load_series(series)
        mask = nib.load(root / "data" / "demo" / "target" / label)
        assert mask.shape == volume.shape
        write_rtstruct(
            mask.get_fdata().astype("uint8"), series, {1: "GTV"}, target / "RS.dcm", label="GTV"
        )

    return setup


def _copy_config(name: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        shutil.copy(root / "config" / "config.yaml", root / name)

    return setup


def _remove(relative: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / relative).unlink()

    return setup


def _nothing_to_do(root: Path, output: str) -> None:
    assert "Nothing to be done" in output, output[-3000:]


def _masks(folder: str, *suffixes: str) -> Callable[[Path, str], None]:
    def check(root: Path, output: str) -> None:
        table = (root / folder / "predictions.tsv").read_text().splitlines()
        assert len(table) == 2, table  # header + the one new case
        for suffix in suffixes or (".nii.gz",):
            assert len(list((root / folder).glob(f"*{suffix}"))) == 1, (suffix, output)

    return check


def _made(*paths: str) -> Callable[[Path, str], None]:
    def check(root: Path, output: str) -> None:
        for path in paths:
            assert (root / path).exists(), f"{path} was not made:\n{output[-3000:]}"

    return check


def _newer(path: str) -> Callable[[Path, str], None]:
    """``path`` was rewritten (the stage reran)."""

    def check(root: Path, output: str) -> None:
        assert (root / path).stat().st_mtime > (root / ".sandbox-made").stat().st_mtime, output

    return check


def _bundle_export(root: Path) -> None:
    subprocess.run(
        [str(VENV / "bin" / "medtl"), "export-bundle", "--model", "results", "--arm", "finetune"]
        + ["--out", "bundles/finetune"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    _new_scans_nifti(root)


def _new_scans_nifti(root: Path) -> None:
    images = sorted((root / "results" / "ingest" / "images").glob("*.nii.gz"))
    (root / "new_scans").mkdir()
    shutil.copy(images[0], root / "new_scans" / images[0].name)


def _said(pattern: str) -> Callable[[Path, str], None]:
    def check(root: Path, output: str) -> None:
        assert re.search(pattern, output), output[-3000:]

    return check


def _edit_config(root: Path, edit: Callable[[dict], None]) -> None:
    path = root / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _evaluated_with(**expected: float) -> Callable[[Path, str], None]:
    """The evaluation and the report reran with these ``evaluate`` values: the one given on
    the command line and the file's others (``--config evaluate='{...}'`` merges into the
    section; the micro config's ``bootstrap: 100`` is not the default 2000)."""

    def check(root: Path, output: str) -> None:
        made = (root / ".sandbox-made").stat().st_mtime
        metrics = root / "results" / "evaluation" / "metrics.csv"
        assert metrics.stat().st_mtime > made, output[-3000:]
        resolved = root / "results" / "report" / "config.resolved.yaml"
        evaluate = yaml.safe_load(resolved.read_text())["evaluate"]
        assert {k: evaluate[k] for k in expected} == expected, evaluate
        assert not any(
            run.stat().st_mtime > made for run in (root / "results" / "train").rglob("best.pt")
        ), "training reran"

    return check


def _sheet_layout(root: Path) -> None:
    """The README's case sheet layout: cases.tsv beside images/ and labels/."""
    images = sorted((root / "results" / "ingest" / "images").glob("*.nii.gz"))[:2]
    lines = ["image\tlabel"]
    for image in images:
        for part in ("images", "labels"):
            (root / part).mkdir(exist_ok=True)
            shutil.copy(root / "results" / "ingest" / part / image.name, root / part)
        lines.append(f"images/{image.name}\tlabels/{image.name}")
    (root / "cases.tsv").write_text("\n".join(lines) + "\n")


def _scans_folder(root: Path) -> None:
    """A folder ``scans/`` of new scans (NIfTI), as in docs/reliability.md's example."""
    image = sorted((root / "results" / "ingest" / "images").glob("*.nii.gz"))[0]
    (root / "scans").mkdir()
    shutil.copy(image, root / "scans")


def _swin_ssl_weights(root: Path) -> None:
    """Swin UNETR self-supervised weights in their published layout (random values) for a
    config whose model is a (small) Swin UNETR."""
    from medtl.config import ModelConfig
    from medtl.models.networks import build_network
    from tests.models.weight_layouts import swin_ssl_checkpoint

    model = {"name": "swinunetr", "features": [12]}
    _edit_config(root, lambda c: c.update(model=model))
    net = build_network(ModelConfig(name="swinunetr", features=(12,)), 1, 2)
    swin_ssl_checkpoint(root / "model_swinvit.pt", net)


def _power_table(root: Path, out: str) -> None:
    """`medtl power` printed a row per seeds and difference."""
    rows = re.findall(r"^\s*(\d+)\s+(0\.\d+)\s", out, re.M)
    assert sorted(set(rows)) == sorted(
        (s, d) for s in ("3", "5", "10") for d in ("0.050", "0.100")
    ), out


CI_BENCH = (
    "about 40 min and 6 GB (nnU-Net v2 in its own environment) on 2 cores; "
    "tests/benchmarks/ tests the harness's timing, ratios and docs update"
)

CI_STUDY = (
    "three or four whole demo runs, an hour or more on 2 cores; tests/studies/ runs the "
    "study's code on the micro config at two strengths (slow) and tests its table and docs"
)

#: Every command the docs print → how this test handles it.
HANDLING: dict[str, Run | Named | NotHere] = {
    # README.md
    "make run": Run(check=_nothing_to_do),
    # docs/statistics.md
    ".venv/bin/medtl power --seeds 3,5,10 --difference 0.05,0.1": Run(check=_power_table),
    "medtl power --results": Named(),
    "make test": NotHere("it runs this test suite's fast part (CI runs make test-all)"),
    "make test-all": NotHere("it runs this test suite (CI runs it through .ci/run)"),
    "make dry-run": Run(check=_nothing_to_do),
    "make lint": Run(setup=_dev_installed),
    "make run VENV_FLAGS=--system-site-packages": Run(check=_nothing_to_do),
    ".venv/bin/medtl predict path/to/new_scans --model results --out masks/": Run(
        setup=_new_scans("path/to/new_scans"), check=_masks("masks")
    ),
    ".venv/bin/medtl predict path/to/new_scans --model results --out masks/ "
    "--format nifti,seg,rtstruct": Run(
        setup=_new_scans("path/to/new_scans"),
        check=_masks("masks", ".nii.gz", ".seg.dcm", ".rtstruct.dcm"),
    ),
    ".venv/bin/snakemake --profile profiles/local …": Named(),
    ".venv/bin/snakemake --profile profiles/local --forcerun evaluate": Run(
        check=_newer("results/evaluation/metrics.csv")
    ),
    ".venv/bin/snakemake --profile profiles/local results/train/finetune/seed1/fold0/best.pt": Run(
        setup=_remove("results/train/finetune/seed1/fold0/best.pt"),
        check=_made("results/train/finetune/seed1/fold0/best.pt"),
    ),
    ".venv/bin/snakemake --profile profiles/local --report report.zip": Run(
        check=_made("report.zip")
    ),
    "snakemake -n": Run(check=_nothing_to_do),
    "medtl --help": Run(),
    "medtl <stage>": Named(),
    # docs/reliability.md
    "medtl …": Named(),
    "make …": Named(),
    "snakemake …": Named(),
    "python …": Named(),
    "medtl predict scans --model results --out scans": Run(
        setup=_scans_folder, fails=r"--out is the input itself .*never writes over or inside"
    ),
    "make bench": NotHere(CI_BENCH),
    "make study-shift": NotHere(CI_STUDY),
    'make study-shift STUDY_ARGS="--strengths 0,1,2"': NotHere(CI_STUDY),
    # docs/benchmarks.md
    'make bench BENCH_ARGS="--budgets 5,10,20"': NotHere(CI_BENCH),
    'make bench BENCH_ARGS="--data my_cases.tsv --modality CT"': NotHere(CI_BENCH),
    'make bench BENCH_ARGS="--nnunet-device cuda"': NotHere(CI_BENCH + "; and a CUDA device"),
    ".venv/bin/python benchmarks/compare_nnunet.py --help": Run(),
    "make bench-transfer": NotHere(CI_BENCH),
    'make bench-transfer BENCH_ARGS="--budgets 5,10"': NotHere(CI_BENCH),
    ".venv/bin/python benchmarks/compare_transfer.py --help": Run(),
    "make bench-clinical": NotHere(CI_BENCH),
    'make bench-clinical BENCH_ARGS="--shape 256,256,60 --cases 3"': NotHere(CI_BENCH),
    ".venv/bin/python benchmarks/compare_clinical.py --help": Run(),
    "python -X importtime": Named(),
    ".venv/bin/python benchmarks/startup.py --help": Run(),
    ".venv/bin/python benchmarks/startup.py --repeats 3": NotHere(
        "a benchmark (the micro workflow once, then each command three times: minutes); "
        "tests/benchmarks/test_startup.py tests its parsing and table, "
        "tests/cli/test_imports.py what the light commands import"
    ),
    ".venv/bin/python benchmarks/onnx_inference.py --threads 2 --repeats 5": NotHere(
        "a benchmark (two engines timed on two case sizes, minutes); tests/export/test_onnx.py "
        "tests the ONNX export and ONNX Runtime inference it times"
    ),
    ".venv/bin/python benchmarks/gpu_check.py --out gpu_check.json": NotHere(
        "needs a CUDA device; the same script runs in the next line with --device cpu --quick"
    ),
    ".venv/bin/python benchmarks/gpu_check.py --device cpu --quick --out x.json": Run(
        check=_made("x.json")
    ),
    # docs/cluster.md (the SLURM commands run in test_slurm.py against its test cluster)
    "medtl": Named(),
    "snakemake": Named(),
    ".venv/bin/snakemake": Named(),
    "make install VENV_FLAGS=--system-site-packages": Run(),
    "python tests/support/slurm.py start /tmp/medtl-slurm": NotHere(
        "starts the test cluster by hand; test_slurm.py starts the same cluster through the "
        "same module and runs the documented SLURM commands on it"
    ),
    "python tests/support/slurm.py stop /tmp/medtl-slurm": NotHere(
        "stops the cluster of the line above; test_slurm.py stops its own the same way"
    ),
    # docs/predict.md (run end to end against --engine torch in tests/export/test_onnx.py)
    "medtl predict SOURCE --model DIR --out OUT --engine onnxruntime": Named(),
    "medtl predict --engine onnxruntime": Named(),
    "medtl trust --results results --arm finetune --settings '{\"bad_dice\": 0.9}' "
    "--out trust-0.9.json": Run(check=_said(r"trust finetune: temperature .*ECE")),
    # docs/configuration.md
    ".venv/bin/snakemake --profile profiles/local --configfile my.yaml": Run(
        setup=_copy_config("my.yaml"), check=_nothing_to_do
    ),
    ".venv/bin/snakemake --profile profiles/local --config evaluate='{nsd_tolerance_mm: 1.0}'": (
        Run(check=_evaluated_with(nsd_tolerance_mm=1.0, bootstrap=100))
    ),
    "snakemake -n -p": Run(check=_nothing_to_do),
    "python -m medtl": Named(),
    # docs/ingest.md
    "medtl ingest cases.tsv --out .": Run(
        setup=_sheet_layout, fails=r"--out contains the input .*never writes over or inside"
    ),
    '.venv/bin/medtl ingest path/to/export --out look --classes \'{"1": "tumour"}\' '
    '--synonyms \'{"tumour": ["GTV", "gtv_primary"]}\'': Run(
        setup=_rtstruct_export("path/to/export"), check=_made("look/manifest.tsv")
    ),
    ".venv/bin/medtl export-nnunet --manifest results/ingest/manifest.tsv --out nnUNet_raw "
    '--dataset-id 501 --name Liver --classes \'{"1": "tumour"}\'': Run(
        check=_made("nnUNet_raw/Dataset501_Liver/dataset.json")
    ),
    "snakemake --profile profiles/local --forcerun pull_dicomweb": NotHere(
        "needs dataset.kind: dicomweb and a PACS; tests/io/test_dicomweb.py pulls from a real "
        "Orthanc server through the same code"
    ),
    '.venv/bin/medtl convert path/to/export --out nifti --workers 4 --salt "$MEDTL_SALT"': Run(
        setup=_new_scans("path/to/export"), check=_made("nifti/series.tsv")
    ),
    ".venv/bin/python benchmarks/dicom_convert.py --workdir /tmp/dicom-bench --workers 2": NotHere(
        "a benchmark (958 generated DICOM files, medtl and dcm2niix timed, minutes); "
        "tests/io/test_convert.py tests the conversion it times"
    ),
    # docs/report.md
    "snakemake --report report.zip": Run(check=_made("report.zip")),
    "python tests/support/browser.py results/report/report.html docs/images headline dataset "
    "arms comparison runs label-fraction overlays": NotHere(
        "regenerates the docs' screenshots of a full demo run; tests/report/test_browser.py "
        "drives the same browser helper on a finished run"
    ),
    # docs/transfer.md
    ".venv/bin/medtl describe-model --pretrained results/pretrain/checkpoint.pt": Run(
        check=_said(r"training would accept these weights")
    ),
    ".venv/bin/medtl describe-model --pretrained model_swinvit.pt --format swinunetr_ssl": Run(
        setup=_swin_ssl_weights, check=_said(r"training would accept these weights")
    ),
    "snakemake --cores all --forcerun <that best.pt>": Named(),
    ".venv/bin/medtl export-bundle --model results --arm finetune --out bundles/finetune": Run(
        check=_made("bundles/finetune/models/model.pt")
    ),
    "python -m monai.bundle run --config_file bundles/finetune/configs/inference.json "
    "--bundle_root bundles/finetune --dataset_dir new_scans --output_dir masks": Run(
        setup=_bundle_export, check=_made("masks")
    ),
}


def _slurm_commands() -> set[str]:
    """The docs/cluster.md commands that need the SLURM cluster (test_slurm.py runs them)."""
    return {
        d.text
        for d in documented_commands()
        if d.where.startswith("docs/cluster.md") and "profiles/slurm" in d.text
    } | {"snakemake --profile profiles/slurm"}


# ----------------------------------------------------------------------------- sandbox


@pytest.fixture(scope="module")
def finished(micro_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project holding the finished micro run."""
    return copy_project(tmp_path_factory.mktemp("documented"), micro_run.workdir)


# ------------------------------------------------------------------------------- tests


def handling_of(command: str) -> Run | Named | NotHere | None:
    """How ``command`` is handled: as listed, or, for an inline ``medtl SUBCOMMAND
    [--option ...]`` mention, as :class:`Named`."""
    if command in HANDLING:
        return HANDLING[command]
    if re.fullmatch(r"medtl [a-z-]+( --[a-z-]+)*( [A-Z_]+)*( --[a-z-]+ [A-Z_]+)*", command):
        return Named()
    return None


def test_every_documented_command_is_handled() -> None:
    found = {d.text: d.where for d in documented_commands()}
    slurm = _slurm_commands()
    unhandled = {t: w for t, w in found.items() if handling_of(t) is None and t not in slurm}
    assert not unhandled, (
        "documented commands no test runs (add them to HANDLING, with a setup and check, or "
        f"a reason): {unhandled}"
    )
    stale = set(HANDLING) - set(found)
    assert not stale, f"HANDLING lists commands the docs no longer print: {stale}"


def _medtl_subcommands() -> dict[str, set[str]]:
    import typer.main

    from medtl.cli.main import app

    group = typer.main.get_command(app)
    return {
        name: {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        for name, cmd in group.commands.items()
    }


NAMED = sorted({d.text for d in documented_commands() if isinstance(handling_of(d.text), Named)})


@pytest.mark.parametrize("command", NAMED)
def test_named_commands_exist(command: str) -> None:
    """An inline mention names a real program, subcommand and options."""
    words = shlex.split(command.replace("…", "").replace("...", ""))
    program = words[0].rsplit("/", 1)[-1]
    assert shutil.which(program, path=str(VENV / "bin")) or shutil.which(program), program
    if program != "medtl" or len(words) < 2 or words[1].startswith("<"):
        return
    commands = _medtl_subcommands()
    assert words[1] in commands or words[1] in ("--help", "--version"), command
    for word in words[2:]:
        if word.startswith("--") and word != "--help":  # every subcommand has --help
            assert word.split("=")[0] in commands[words[1]], f"{command}: no option {word}"


RUNNABLE = sorted(c for c, h in HANDLING.items() if isinstance(h, Run))


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE)
def test_documented_command(command: str, finished: Path, tmp_path: Path) -> None:
    handling = HANDLING[command]
    root = tmp_path / "medtl"
    shutil.copytree(finished, root, symlinks=True)
    if handling.setup is not None:
        handling.setup(root)
    (root / ".sandbox-made").touch()
    status, output = run_documented(command, root)
    assert "Traceback" not in output, output[-5000:]
    if handling.fails:
        assert status == 1 and re.search(handling.fails, output), output[-5000:]
        assert "How to fix" in output, output[-5000:]
        return
    assert status == 0, f"`{command}` failed ({status}):\n{output[-5000:]}"
    if handling.check is not None:
        handling.check(root, output)


def test_not_runnable_commands_say_why() -> None:
    for command, handling in HANDLING.items():
        if isinstance(handling, NotHere):
            assert len(handling.reason) > 20, command


RUN_FOLDER = re.compile(r"results/(?:train|predictions|evaluation)/(\w+)/seed(\d+)/")


def test_documented_run_folders_are_planned_by_the_micro_run() -> None:
    """A run folder a documented command names (``results/train/finetune/seed1/…``) is one
    the micro run trains, so a command documented as "nothing to do" on a finished run
    meets a finished run (the docs once named seed 1 while the micro run trained seed 5,
    and the slow tests retrained it)."""
    from medtl.config import training_seeds

    micro = yaml.safe_load((Path(__file__).parent / "config_micro.yaml").read_text())
    planned = training_seeds(micro)
    named = {
        (arm, int(seed), d.where)
        for d in documented_commands()
        for arm, seed in RUN_FOLDER.findall(d.text)
    }
    assert named, "the docs name no run folder: is the pattern stale?"
    for arm, seed, where in named:
        assert seed in planned.get(arm, []), f"{where}: {arm} seed {seed} not in {planned}"
