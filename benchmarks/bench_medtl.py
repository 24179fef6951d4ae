"""medtl's side of the benchmark, and the runs both tools make: pretraining, training
throughput, Dice at equal wall-clock budgets, and inference.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from bench_common import (
    ROOT,
    Bench,
    b_device,
    compact,
    held_out,
    mean_dice,
    steady_step_seconds,
    train_settings,
)
from bench_nnunet import nnunet_predict, nnunet_train
from measure import Timing, median_timing


def pretrain(b: Bench, cfg: dict, d: dict) -> dict:
    """medtl's supervised pretraining (a one-off cost, shown apart), or the config's weights."""
    if cfg["pretrain"]["checkpoint"]:
        return {"checkpoint": str((ROOT / cfg["pretrain"]["checkpoint"]).resolve()), "timing": None}
    out = b.work / "medtl" / "pretrain"
    ckpt = out / "checkpoint.pt"
    b.say("medtl pretraining (one-off, not part of the training budgets)")
    shutil.rmtree(out, ignore_errors=True)
    settings = {
        "model": cfg["model"],
        "pretrain": cfg["pretrain"],
        "seed": cfg["seed"],
        "device": b_device(cfg),
    }
    t = b.run(
        [
            *b.medtl,
            "pretrain",
            "--manifest",
            d["source_manifest"],
            "--plan",
            b.work / "medtl" / "plan.json",
            "--out",
            out,
            "--settings",
            compact(settings),
            "--threads",
            b.threads,
            "--quiet",
        ],
        "medtl_pretrain",
    )
    return {"checkpoint": str(ckpt), "timing": t.as_dict()}


def medtl_train_cmd(b: Bench, d: dict, arm: str, out: Path, settings: dict, weights) -> list:
    cmd = [
        *b.medtl,
        "train",
        "--arm",
        arm,
        "--fold",
        b.args.fold,
        "--folds",
        d["folds"],
        "--cases",
        b.work / "medtl" / "cases",
        "--out",
        out,
        "--settings",
        compact(settings),
        "--threads",
        b.threads,
        "--quiet",
    ]
    if weights and settings["arm"]["init"] == "pretrained":
        cmd += ["--pretrained", weights]
    return cmd


def throughput(b: Bench, cfg: dict, d: dict, pre: dict) -> dict:
    """Training iterations/s: nnU-Net, medtl at nnU-Net's patch and batch (with nnU-Net's
    network: ``resencunet`` for a ResEnc plan, else ``plainconvunet``), medtl's own.

    ``--probe-steps`` steps each, or for medtl's own configuration (which sizes the budget
    runs' schedules) ``--default-probe-steps`` where the harness has that option: a few
    steps at a large planned batch are enough for a rate, not for a schedule."""
    steps = b.args.probe_steps
    own_steps = getattr(b.args, "default_probe_steps", steps)
    same = "resencunet" if pre.get("nnunet_network") == "ResidualEncoderUNet" else "plainconvunet"
    patch_xyz = list(reversed(pre["nnunet_patch_zyx"]))  # nnU-Net's arrays are z, y, x
    probes = {
        "medtl_same_patch": (
            {
                **cfg,
                "model": {
                    **cfg["model"],
                    "name": same,
                    "features": pre["nnunet_features"],
                },
            },
            {"patch_size": patch_xyz, "batch_size": pre["nnunet_batch"]},
            steps,
        ),
        "medtl_default": (cfg, {}, own_steps),
    }
    out = {}
    for name, (c, over, n) in probes.items():
        b.say(f"throughput probe: {name}")
        run = b.work / "medtl" / "probe" / name
        shutil.rmtree(run, ignore_errors=True)
        settings = train_settings(c, "scratch", steps=n, val_every=n, checkpoint_every=n, **over)
        t = b.run(medtl_train_cmd(b, d, "scratch", run, settings, None), f"probe_{name}")
        sec, startup = steady_step_seconds(run / "curves.csv")
        batch = settings["train"]["batch_size"]
        out[name] = {
            "s_per_step": sec,
            "it_per_s": 1 / sec,
            "samples_per_s": batch / sec,
            "startup_s": startup,
            "wall_s": t.wall_s,
            "patch": settings["train"]["patch_size"],
            "batch": batch,
        }
    b.say("throughput probe: nnU-Net")
    nn = nnunet_train(b, d, epochs=b.probe_epochs, marks=[], tag="probe")
    out["nnunet"] = {
        "s_per_step": nn["s_per_iter"],
        "it_per_s": 1 / nn["s_per_iter"],
        "samples_per_s": pre["nnunet_batch"] / nn["s_per_iter"],
        "startup_s": nn["startup_s"],
        "wall_s": nn["timing"]["wall_s"],
        "patch": patch_xyz,
        "batch": pre["nnunet_batch"],
    }
    return out


def nnunet_budgets(b: Bench, cfg: dict, d: dict, thr: dict, marks: list[float]) -> dict:
    """nnU-Net trained once to the largest budget (epochs sized so its poly schedule ends
    there), its snapshot at every budget scored on the held-out cases."""
    from medtl.export.nnunet import nnunet_case_id

    classes = [int(k) for k in cfg["classes"]]
    test_cases, refs = held_out(b, d)
    total = marks[-1]
    nn_epoch_s = b.nnunet_iters * thr["nnunet"]["s_per_step"] * 1.25  # + its validation
    epochs = max(1, int((total - thr["nnunet"]["startup_s"]) / nn_epoch_s))
    b.say(f"nnU-Net to {total / 60:.1f} min: {epochs} epochs of {b.nnunet_iters} iterations")
    nn = nnunet_train(b, d, epochs=epochs, marks=marks, tag="budget")
    test_in = b.work / "nnunet" / "test_input"
    shutil.rmtree(test_in, ignore_errors=True)
    test_in.mkdir(parents=True)
    for c in test_cases:
        shutil.copy(d["raw"] / "imagesTr" / f"{nnunet_case_id(c)}_0000.nii.gz", test_in)
    nn_scores = []
    for i, _ in enumerate(marks):
        pred = b.work / "nnunet" / "budget_pred" / f"mark{i}"
        shutil.rmtree(pred, ignore_errors=True)
        ckpt = nn["folder"] / f"checkpoint_mark{i}.pth"
        if not ckpt.is_file():
            nn_scores.append(float("nan"))
            continue
        nnunet_predict(
            b, test_in, pred, f"checkpoint_mark{i}.pth", tta=False, log=f"nnunet_budget_pred{i}"
        )
        names = {c: nnunet_case_id(c) for c in test_cases}
        nn_scores.append(mean_dice(pred, refs, classes, names))
    result = {
        "dice": nn_scores,
        "epochs_planned": epochs,
        "epochs_run": nn["epochs_run"],
        "marks_at_s": nn["marks_at_s"],
        "wall_s": nn["timing"]["wall_s"],
    }
    return {"nnunet": result, "nnunet_folder": str(nn["folder"])}


def score_snapshots(
    b: Bench, cfg: dict, d: dict, arm: str, snaps: list[Path], refs: dict
) -> list[float]:
    """Mean Dice over the held-out cases of each snapshot's ``best.pt`` (NaN: none)."""
    classes = [int(k) for k in cfg["classes"]]
    scores = []
    for i, snap in enumerate(snaps):
        if not (snap / "best.pt").is_file():
            scores.append(float("nan"))
            continue
        pred = snap / "pred"
        b.run(
            [
                *b.medtl,
                "predict-fold",
                "--run",
                snap,
                "--folds",
                d["folds"],
                "--fold",
                b.args.fold,
                "--cases",
                b.work / "medtl" / "cases",
                "--out",
                pred,
                "--settings",
                compact({**cfg["predict"], "tta": False}),
                "--device",
                b_device(cfg),
                "--threads",
                b.threads,
                "--quiet",
            ],
            f"medtl_budget_pred_{arm}{i}",
        )
        scores.append(mean_dice(pred, refs, classes))
    return scores


def medtl_budget(b: Bench, cfg: dict, d: dict, arm: str, plan: dict, weights, refs: dict) -> dict:
    """One medtl arm trained once (``plan``: steps, val_every, marks), its ``best.pt``
    kept at every budget and scored on the held-out cases."""
    marks, steps, val_every = plan["marks"], plan["steps"], plan["val_every"]
    b.say(f"medtl {arm} to {marks[-1] / 60:.1f} min: {steps} steps")
    run = b.work / "medtl" / "budget" / arm
    shutil.rmtree(run, ignore_errors=True)
    settings = train_settings(
        cfg, arm, steps=steps, val_every=val_every, checkpoint_every=val_every
    )
    snaps = [run / "snapshots" / f"mark{i}" for i in range(len(marks))]
    taken: list[float] = []

    def poll(elapsed: float, run=run, snaps=snaps, taken=taken) -> bool:
        while len(taken) < len(marks) and elapsed >= marks[len(taken)]:
            snap = snaps[len(taken)]
            snap.mkdir(parents=True, exist_ok=True)
            if (run / "best.pt").is_file():
                shutil.copy(run / "best.pt", snap / "best.pt")
            taken.append(elapsed)
        return len(taken) == len(marks)  # past the last budget: stop

    t = b.run(
        medtl_train_cmd(b, d, arm, run, settings, weights), f"medtl_budget_{arm}", on_poll=poll
    )
    for i in range(len(taken), len(marks)):  # finished before these budgets
        snaps[i].mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "best.pt", snaps[i] / "best.pt")
        taken.append(t.wall_s)
    scores = score_snapshots(b, cfg, d, arm, snaps, refs)
    done = pd.read_csv(run / "curves.csv")
    return {
        "dice": scores,
        "steps_planned": steps,
        "steps_run": int(done["step"].max()),
        "marks_at_s": taken,
        "wall_s": t.wall_s,
    }


def budgets(b: Bench, cfg: dict, d: dict, pre: dict, thr: dict, weights) -> dict:
    """Train each tool once to the largest budget, keep its model at every budget."""
    marks = [m * 60.0 for m in b.args.budgets]
    total = marks[-1]
    test_cases, refs = held_out(b, d)
    out: dict = {"budgets_min": b.args.budgets, "test_cases": len(test_cases)}
    out.update(nnunet_budgets(b, cfg, d, thr, marks))

    # medtl arms: steps sized from the probe so the cosine schedule ends near the budget.
    s_step = thr["medtl_default"]["s_per_step"]
    startup = thr["medtl_default"]["startup_s"]
    steps = max(10, int((total - startup) * 0.85 / s_step))
    plan = {"marks": marks, "steps": steps, "val_every": max(1, steps // 12)}
    for arm in b.args.arms:
        out[arm] = medtl_budget(b, cfg, d, arm, plan, weights, refs)
    return out


def inference_inputs(b: Bench, d: dict, test_cases: list[str], best_arm: str) -> tuple:
    """What both tools predict from: medtl's model folder (the plan and ``best_arm``'s
    model at the largest budget), case sheets of all held-out cases and of the first, and
    nnU-Net's input folders of the same. Returns ``(model, sheets, inputs)``, the last two
    by number of cases."""
    from medtl.export.nnunet import nnunet_case_id

    n = len(test_cases)
    # medtl predict reads a finished run's folder: the plan and the fold model.
    model = b.work / "medtl" / "model"
    shutil.rmtree(model, ignore_errors=True)
    (model / "preprocess").mkdir(parents=True)
    shutil.copy(b.work / "medtl" / "plan.json", model / "preprocess" / "plan.json")
    fold_dir = model / "train" / best_arm / f"fold{b.args.fold}"
    fold_dir.mkdir(parents=True)
    last_mark = f"mark{len(b.args.budgets) - 1}"
    snapshot = b.work / "medtl" / "budget" / best_arm / "snapshots" / last_mark / "best.pt"
    shutil.copy(snapshot, fold_dir / "best.pt")
    rows = d["manifest"].set_index("case_id").loc[test_cases]
    sheet = pd.DataFrame(
        {
            "image": [str(Path(p).resolve()) for p in rows["image"]],
            "label": "",
            "patient": rows["patient_id"],
            "case_id": test_cases,
        }
    )
    sheets = {n: b.work / "medtl" / "test_cases.tsv", 1: b.work / "medtl" / "test_case1.tsv"}
    sheet.to_csv(sheets[n], sep="\t", index=False)
    sheet.iloc[:1].to_csv(sheets[1], sep="\t", index=False)
    inputs = {n: b.work / "nnunet" / "test_input", 1: b.work / "nnunet" / "test_input1"}
    shutil.rmtree(inputs[1], ignore_errors=True)
    inputs[1].mkdir(parents=True)
    first = f"{nnunet_case_id(test_cases[0])}_0000.nii.gz"
    shutil.copy(inputs[n] / first, inputs[1] / first)
    return model, sheets, inputs


def medtl_predict_cmd(
    b: Bench, sheet: Path, model: Path, arm: str, out: Path, tta: bool, device: str, engine: str
) -> list:
    """``medtl predict`` of a case sheet with one engine (``torch`` or ``onnxruntime``)."""
    cmd = [*b.medtl, "predict", sheet, "--model", model, "--arm", arm, "--out", out]
    cmd += ["--engine", engine, "--device", device, "--threads", b.threads]
    cmd += ["--window", b.args.medtl_window]
    return cmd + ["--quiet", "--tta" if tta else "--no-tta"]


def export_onnx(b: Bench, model: Path, arm: str) -> tuple[Path, dict]:
    """``medtl export-onnx`` of ``model``'s ``arm``, once: ``(export folder, timing)``."""
    folder = b.work / "medtl" / "onnx"
    shutil.rmtree(folder, ignore_errors=True)
    b.say("ONNX export of the inference model")
    t = b.run(
        [*b.medtl, "export-onnx", "--model", model, "--arm", arm, "--out", folder],
        "medtl_export_onnx",
    )
    return folder, t.as_dict()


def per_case(walls_all: list, walls_one: list, n: int) -> dict:
    """Seconds per case after start-up from runs of all ``n`` cases and runs of one.

    The cost of one more case once the tool has started, what a large data set pays:
    (median wall of all − median wall of one) / (n − 1); the start-up is the rest of the
    one-case run.
    """
    all_cases = median_timing(walls_all)
    one = median_timing(walls_one)
    s_per_case = (all_cases["wall_s"] - one["wall_s"]) / max(1, n - 1)
    # each repeat's own estimate (its all-case and one-case runs), for the min–max column;
    # repeats pair up as far as both lists go
    pairs = list(zip(walls_all, walls_one, strict=False))
    per_repeat = [(a.wall_s - o.wall_s) / max(1, n - 1) for a, o in pairs]
    return {
        **all_cases,
        "s_per_case_with_startup": all_cases["wall_s"] / n,
        "s_per_case": s_per_case,
        "startup_s": one["wall_s"] - s_per_case,
        "one_case_wall_s": one["wall_s"],
        "s_per_case_runs": per_repeat,
        "startup_runs": [o.wall_s - s for (_, o), s in zip(pairs, per_repeat, strict=True)],
    }


def identical_voxels(pred_a: Path, pred_b: Path, cases: list[str]) -> dict:
    """How far two engines' masks of the same cases agree: the fraction of identical
    voxels over all cases together, and the lowest fraction of one case."""
    same = total = 0
    lowest = 1.0
    for c in cases:
        a = np.asanyarray(nib.load(str(pred_a / f"{c}.nii.gz")).dataobj)
        m = np.asanyarray(nib.load(str(pred_b / f"{c}.nii.gz")).dataobj)
        if a.shape != m.shape:
            raise ValueError(f"{pred_b / c}: shape {m.shape} differs from {pred_a / c}: {a.shape}")
        equal = int((a == m).sum())
        same, total = same + equal, total + a.size
        lowest = min(lowest, equal / a.size)
    return {"identical_voxels": same / total, "lowest_case": lowest, "voxels": total}


def time_tools(b: Bench, tools: dict, counts: tuple, key: str) -> dict:
    """Run every tool on each count of cases in turn, ``--infer-repeats`` times.

    ``tools`` maps a name to ``run(k) -> Timing``. Within a repeat the tools alternate
    for each count, so that a slow spell of a shared machine hits all of them. Returns
    ``{(name, k): [Timing, ...]}``.
    """
    walls: dict = {(tool, k): [] for tool in tools for k in counts}
    for r in range(b.args.infer_repeats):
        b.say(f"inference {key}, repeat {r + 1}/{b.args.infer_repeats}")
        for k in counts:
            for tool, run in tools.items():
                walls[tool, k].append(run(k))
    return walls


def pred_dir(b: Bench, tool: str, key: str, k: int) -> Path:
    """Where ``tool``'s predictions of ``k`` cases go (``key``: ``tta`` or ``no_tta``)."""
    if tool in ("medtl", "nnunet"):
        return b.work / tool / "infer" / f"{key}_{k}"
    return b.work / "medtl" / "infer" / f"{key}_{tool}_{k}"


def medtl_tools(
    b: Bench, sheets: dict, model: Path, onnx_dir: Path | None, arm: str, tta: bool, device: str
) -> dict:
    """The timed ``medtl predict`` runs (:func:`time_tools`' ``tools``): ``medtl`` (eager
    PyTorch on ``device``), ``onnxruntime`` (the export, CPU), and where ``device`` is not
    the CPU ``medtl_cpu``, eager PyTorch on the CPU: ONNX Runtime's baseline on the same
    cores. No ``onnx_dir``: ``medtl`` alone."""
    key = "tta" if tta else "no_tta"

    def run(k: int, tool: str, engine: str, dev: str, folder: Path) -> Timing:
        dst = pred_dir(b, tool, key, k)
        shutil.rmtree(dst, ignore_errors=True)
        cmd = medtl_predict_cmd(b, sheets[k], folder, arm, dst, tta, dev, engine)
        return b.run(cmd, f"{tool}_predict_{key}_{k}")

    tools = {"medtl": lambda k: run(k, "medtl", "torch", device, model)}
    if onnx_dir is None:
        return tools
    if device != "cpu":
        tools["medtl_cpu"] = lambda k: run(k, "medtl_cpu", "torch", "cpu", model)
    tools["onnxruntime"] = lambda k: run(k, "onnxruntime", "onnxruntime", "cpu", onnx_dir)
    return tools


def onnx_against_torch(b: Bench, times: dict, key: str, cases: list[str]) -> dict:
    """ONNX Runtime's per-case figures beside eager PyTorch's on the CPU (``times``: tool
    -> :func:`per_case`), and how far their masks of all ``cases`` agree."""
    torch_cpu = "medtl_cpu" if "medtl_cpu" in times else "medtl"
    n = len(cases)
    return {
        "onnxruntime": times["onnxruntime"],
        "torch": {**times[torch_cpu], "device": "cpu"},
        "masks": identical_voxels(
            pred_dir(b, torch_cpu, key, n), pred_dir(b, "onnxruntime", key, n), cases
        ),
    }


def inference(
    b: Bench, cfg: dict, d: dict, bud: dict, ttas: tuple = (False, True), onnx: bool = True
) -> dict:
    """Per-case inference time and Dice from raw images, TTA off and on (``ttas``), one
    fold model: medtl (eager PyTorch) against nnU-Net, and (``onnx``) the same model
    exported to ONNX and run by ONNX Runtime against eager PyTorch on the CPU, with how
    far their masks agree."""
    from medtl.export.nnunet import nnunet_case_id

    classes = [int(k) for k in cfg["classes"]]
    test_cases, refs = held_out(b, d)
    n = len(test_cases)
    best_arm = max(b.args.arms, key=lambda a: np.nan_to_num(bud[a]["dice"][-1], nan=-1))
    model, sheets, inputs = inference_inputs(b, d, test_cases, best_arm)
    last = f"checkpoint_mark{len(b.args.budgets) - 1}.pth"
    names = {c: nnunet_case_id(c) for c in test_cases}
    out: dict = {"cases": n, "medtl_arm": best_arm, "window": b.args.medtl_window}
    onnx_dir = None
    if onnx:
        onnx_dir, export_timing = export_onnx(b, model, best_arm)
        out["onnx"] = {"export_s": export_timing["wall_s"], "export": export_timing}
    for tta in ttas:
        key = "tta" if tta else "no_tta"

        def nnunet_run(k: int, tta=tta, key=key) -> Timing:
            dst = pred_dir(b, "nnunet", key, k)
            shutil.rmtree(dst, ignore_errors=True)
            return nnunet_predict(b, inputs[k], dst, last, tta, f"nnunet_predict_{key}_{k}")

        tools = medtl_tools(b, sheets, model, onnx_dir, best_arm, tta, b_device(cfg))
        tools["nnunet"] = nnunet_run
        # all held-out cases, then one: the difference is the cost per case
        walls = time_tools(b, tools, (n, 1), key)
        times = {tool: per_case(walls[tool, n], walls[tool, 1], n) for tool in tools}
        dice = {
            "medtl": mean_dice(pred_dir(b, "medtl", key, n), refs, classes),
            "nnunet": mean_dice(pred_dir(b, "nnunet", key, n), refs, classes, names),
        }
        out[key] = {tool: {**times[tool], "dice": dice[tool]} for tool in ("medtl", "nnunet")}
        if not onnx:
            continue
        out["onnx"][key] = onnx_against_torch(b, times, key, test_cases)
        ort = out["onnx"][key]["onnxruntime"]
        ort["dice"] = mean_dice(pred_dir(b, "onnxruntime", key, n), refs, classes)
    return out
