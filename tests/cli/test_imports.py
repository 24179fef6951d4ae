"""Commands that do not need torch or MONAI do not import them (issue #18: every workflow
job is a fresh Python, and torch + MONAI take seconds to import).

Each check runs in a fresh interpreter (``python -c``) and reads its ``sys.modules``:
the light commands are run on a tiny demo, and the commands that need a finished run are
checked on the modules they import. ``benchmarks/startup.py`` measures the times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: What a command imports (medtl/cli/*.py), for the commands that need a finished run.
#: evaluate and trust import MONAI / torch where they compute surface distances or temper
#: probabilities; evaluate-merge, postprocess's choice and the report read tables.
MODULES = {
    "evaluate-merge": ["medtl.evaluate.metrics"],
    "evaluate-fractions": ["medtl.evaluate.fractions"],
    "postprocess": ["medtl.postprocess.choose"],
    "trust": ["medtl.trust.cv"],
    "report": ["medtl.report.build", "medtl.provenance", "medtl.kernel.classes"],
    "evaluate": ["medtl.evaluate.metrics"],
}

PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in ("torch", "monai") if m in sys.modules)))
"""


def heavy_imported(body: str, cwd: Path = REPO) -> list[str]:
    """Which of torch / monai a fresh interpreter has imported after running ``body``."""
    code = PROBE.format(body=body)
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's medtl, from any cwd
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_command(args: list[str]) -> str:
    """Python code that runs ``medtl ARGS`` in-process, as the CLI would."""
    return (
        "from medtl.cli.main import app\n"
        f"try:\n    app({args!r}, standalone_mode=False)\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
    )


def test_command_modules_do_not_import_torch_or_monai() -> None:
    """One interpreter imports every listed command's modules: none pulls in torch/MONAI."""
    modules = sorted({m for mods in MODULES.values() for m in mods})
    body = "\n".join(f"import {m}" for m in ["medtl.cli.main", *modules])
    assert heavy_imported(body) == [], f"one of {modules} imports it"


@pytest.mark.slow
def test_light_commands_run_without_torch_or_monai(tmp_path: Path) -> None:
    """demo-data, ingest, split, subset and plan on a tiny demo: neither torch nor MONAI."""
    demo, res = tmp_path / "demo", tmp_path / "results"
    manifest, folds = res / "ingest" / "manifest.tsv", res / "folds.json"
    steps = {
        "demo-data": ["demo-data", "--out", str(demo), "--seed", "3"]
        + ["--n-source", "1", "--n-patients", "3"],
        "ingest": ["ingest", str(demo / "target" / "cases.tsv"), "--out", str(res / "ingest")]
        + ["--salt", "t", "--modality", "MR", "--classes", '{"1":"tumour"}', "--quiet"],
        "split": ["split", "--manifest", str(manifest), "--out", str(folds), "--folds", "2"],
        "subset": ["subset", "--folds", str(folds), "--fold", "0", "--fraction", "0.5"]
        + ["--out", str(res / "subset.json")],
        "plan": ["plan", "--manifest", str(manifest), "--out", str(res / "plan.json")],
    }
    imported = {name: heavy_imported(run_command(args), tmp_path) for name, args in steps.items()}
    assert (res / "plan.json").is_file() and (res / "subset.json").is_file()
    assert imported == {name: [] for name in steps}, imported
