"""A short GPU check of medtl's speed settings: AMP, memory format, prefetch, inference.

Run with medtl's Python from the repository root on a machine with a CUDA GPU::

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check.json

It measures, on synthetic data and randomly initialised networks (nothing is
downloaded):

1. training steps (forward, Dice+CE loss, backward, AdamW) of the demo's ``basicunet``
   (the default config's features), a ``plainconvunet`` with features
   [32, 64, 128, 256] and nnU-Net's ResEnc preset network (``resencunet`` at its default
   six stages [32 ... 320], about 102 M parameters: the shape of nnssl's ResEnc-L, at the
   next patch its six halvings allow) and nnssl's transformer (``primus`` at preset M,
   about 152 M parameters with an 8³ patch embedding, built for each patch), at patches
   [48, 48, 24] and [96, 96, 48], batch 2, with bf16
   autocast off and on (``train.amp``), and with ``channels_last_3d`` on for the larger
   patch (``train.channels_last``); after a warm-up, timed between
   ``torch.cuda.synchronize()`` calls;
2. a short real training run through medtl's own loop (:func:`medtl.train.loop.train_run`)
   with ``train.prefetch`` 0 and 2: steps/s and the GPU's utilisation, sampled every
   0.2 s (``torch.cuda.utilization`` or ``nvidia-smi``);
3. sliding-window prediction (:func:`medtl.predict.inference.predict_probabilities`) of a
   256 x 256 x 128 volume with ``predict.amp`` off/on and ``predict.tta`` off/on;

with the peak GPU memory of each. It prints Markdown tables and writes everything as
JSON to ``--out``. A time budget (``--budget-s``, 160 s by default) skips what is left
once it is spent, and says so, so that the whole check ends within 3 minutes.

``--device cpu --quick`` runs the same code with tiny sizes on the CPU: a test of the
script itself, not a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import medtl  # noqa: F401
except ImportError:  # run from a checkout without medtl installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import monai
from monai.losses import DiceCELoss
from monai.utils import set_determinism

from medtl.config import ModelConfig, PredictConfig, TrainConfig
from medtl.kernel.device import autocast, channels_last
from medtl.models.networks import build_network, get_architecture, patch_problem
from medtl.predict.inference import predict_probabilities
from medtl.preprocess.case import PreprocessedCase
from medtl.train.loop import RunSpec, train_run


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What the check runs: networks, patches, step counts, volumes."""

    networks: dict[str, ModelConfig]
    patches: tuple[tuple[int, int, int], ...]
    batch: int
    warmup: int
    timed: int
    train_net: str
    train_patch: tuple[int, int, int]
    train_shape: tuple[int, int, int]
    train_cases: int
    train_steps: int
    infer_net: str
    infer_patch: tuple[int, int, int]
    infer_shape: tuple[int, int, int]
    infer_repeats: int


FULL = Sizes(
    networks={
        "basicunet": ModelConfig(),  # the default config's features
        "plainconvunet": ModelConfig(name="plainconvunet", features=(32, 64, 128, 256)),
        "resencunet": ModelConfig(name="resencunet"),  # nnU-Net's ResEnc preset widths
        "primus": ModelConfig(name="primus", preset="M"),  # nnssl's PrimusM
    },
    patches=((48, 48, 24), (96, 96, 48)),
    batch=2,
    warmup=5,
    timed=20,
    train_net="basicunet",
    train_patch=(96, 96, 48),
    train_shape=(160, 160, 80),
    train_cases=4,
    train_steps=40,
    infer_net="basicunet",
    infer_patch=(96, 96, 48),
    infer_shape=(256, 256, 128),
    infer_repeats=2,
)

QUICK = Sizes(
    networks={
        "basicunet": ModelConfig(features=(4, 4, 8, 8, 16, 4)),
        "plainconvunet": ModelConfig(name="plainconvunet", features=(4, 8, 16, 32)),
        "resencunet": ModelConfig(name="resencunet", features=(4, 8, 16, 32)),
        "primus": ModelConfig(name="primus", features=(48, 2, 2)),
    },
    patches=((32, 32, 16), (48, 48, 32)),
    batch=2,
    warmup=1,
    timed=2,
    train_net="basicunet",
    train_patch=(32, 32, 16),
    train_shape=(40, 40, 24),
    train_cases=3,
    train_steps=6,
    infer_net="basicunet",
    infer_patch=(32, 32, 16),
    infer_shape=(48, 48, 32),
    infer_repeats=1,
)


class Budget:
    """Seconds left of the check's time budget."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


# ------------------------------------------------------------------ GPU utilisation


class UtilisationSampler:
    """The GPU's utilisation (percent), sampled every ``period`` seconds by a thread."""

    def __init__(self, device: torch.device, period: float = 0.2) -> None:
        self.device, self.period = device, period
        self.samples: list[float] = []
        self.method = self._method()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _method(self) -> str | None:
        if self.device.type != "cuda":
            return None
        try:
            torch.cuda.utilization(self.device)
            return "torch.cuda.utilization"
        except Exception:  # pynvml missing, or no NVML
            pass
        if shutil.which("nvidia-smi") and self._smi() is not None:
            return "nvidia-smi"
        return None

    def _smi(self) -> float | None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        index = self.device.index or 0
        gpu = visible if visible else str(index)
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    "-i",
                    gpu,
                ],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
            return float(out.strip().splitlines()[0])
        except Exception:
            return None

    def _read(self) -> float | None:
        if self.method == "torch.cuda.utilization":
            return float(torch.cuda.utilization(self.device))
        if self.method == "nvidia-smi":
            return self._smi()
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def start(self) -> None:
        if self.method is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gpu-util", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def summary(self) -> dict[str, Any]:
        s = self.samples
        return {
            "util_method": self.method,
            "util_samples": len(s),
            "util_mean_pct": round(statistics.fmean(s), 1) if s else None,
            "util_median_pct": round(statistics.median(s), 1) if s else None,
        }


# ------------------------------------------------------------------ 1. training steps


def time_steps(
    name: str,
    cfg: ModelConfig,
    patch: tuple[int, int, int],
    sizes: Sizes,
    device: torch.device,
    amp: bool,
    layout: bool,
) -> dict[str, Any]:
    """Milliseconds per training step, as medtl's loop runs one (after a warm-up)."""
    torch.manual_seed(0)
    net = build_network(cfg, 1, 3, patch).to(device).train()  # primus is built for the patch
    channels_last(net, device, layout)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(sizes.batch, 1, *patch, generator=g).to(device)
    label = torch.randint(0, 3, (sizes.batch, 1, *patch), generator=g).to(device)
    image = channels_last(image, device, layout)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = net(image)
        loss = loss_fn(logits.float(), label)
        loss.backward()
        optimizer.step()

    reset_peak(device)
    for _ in range(sizes.warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(sizes.timed):
        step()
    sync(device)
    ms = (time.perf_counter() - t0) / sizes.timed * 1000
    return {
        "network": name,
        "patch": list(patch),
        "batch": sizes.batch,
        "amp": amp,
        "channels_last": layout,
        "active": device.type == "cuda",  # both are ignored on the CPU
        "ms_per_step": round(ms, 2),
        "steps_per_s": round(1000 / ms, 2),
        "peak_mib": peak_mib(device),
    }


def fitting_patch(cfg: ModelConfig, patch: tuple[int, ...]) -> tuple[int, ...]:
    """``patch``, or where it does not fit the network, each side rounded up to its multiple.

    The deep networks (``resencunet``: six halvings, multiples of 32) cannot take the
    demo-sized patches; they run at the next patch that fits, which the row names.

    Example:
        >>> fitting_patch(ModelConfig(name="resencunet"), (48, 48, 24))
        (64, 64, 32)
    """
    if patch_problem(cfg, patch) is None:
        return tuple(patch)
    arch = get_architecture(cfg.name)
    multiple = arch.multiple_of(cfg) if arch.multiple_of else arch.patch_multiple
    return tuple(-(-side // multiple) * multiple for side in patch)


def check_steps(sizes: Sizes, device: torch.device, budget: Budget) -> list[dict]:
    rows = []
    plan = [
        (name, patch, amp, False)
        for name in sizes.networks
        for patch in sizes.patches
        for amp in (False, True)
    ]
    plan += [(name, sizes.patches[-1], True, True) for name in sizes.networks]
    for name, asked, amp, layout in plan:
        patch = fitting_patch(sizes.networks[name], asked)
        if budget.left() < 20:
            rows.append({"network": name, "patch": list(patch), "skipped": "time budget"})
            continue
        try:
            rows.append(time_steps(name, sizes.networks[name], patch, sizes, device, amp, layout))
        except Exception as error:  # noqa: BLE001 (reported, the check goes on)
            rows.append({"network": name, "patch": list(patch), "amp": amp, "error": repr(error)})
    return rows


# ------------------------------------------------------------------ 2. real training run


def synthetic_item(seed: int, shape: tuple[int, int, int]) -> dict:
    """A training case as load_training_cases returns it: bright boxes on noise."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.int64)
    x, y, z = (s // 4 for s in shape)
    label[x : 2 * x, y : 3 * y, z : 3 * z] = 1
    label[2 * x + 2 : 3 * x, y : 2 * y, z : 2 * z] = 2
    image = (label + rng.normal(0.0, 0.5, shape)).astype(np.float32)
    return {
        "image": torch.from_numpy(image[None]),
        "label": torch.from_numpy(label[None]),
        "case": f"case{seed}",
    }


def check_training(sizes: Sizes, device: torch.device, budget: Budget) -> list[dict]:
    items = [synthetic_item(i, sizes.train_shape) for i in range(sizes.train_cases)]
    val = [synthetic_item(99, sizes.train_patch)]  # one window: a short validation
    rows = []
    for prefetch in (0, 2):
        if budget.left() < 30:
            rows.append({"prefetch": prefetch, "skipped": "time budget"})
            continue
        spec = RunSpec(
            model=sizes.networks[sizes.train_net],
            train=TrainConfig(
                steps=sizes.train_steps,
                batch_size=sizes.batch,
                patch_size=sizes.train_patch,
                val_every=sizes.train_steps,
                checkpoint_every=sizes.train_steps,
                prefetch=prefetch,
            ),
            num_classes=3,
            classes={"1": "a", "2": "b"},
            seed=0,
        )
        stamps: list[float] = []
        sampler = UtilisationSampler(device)

        def on_step(step: int, model: torch.nn.Module, sampler=sampler, stamps=stamps) -> None:
            sync(device)
            stamps.append(time.perf_counter())
            if step == 2:  # after the first steps' warm-up
                sampler.start()
            if step == sizes.train_steps - 1:  # before the last step, which validates
                sampler.stop()

        reset_peak(device)
        with tempfile.TemporaryDirectory() as tmp:
            train_run(spec, items, val, Path(tmp) / "run", device, progress=False, on_step=on_step)
        sampler.stop()
        timed = stamps[1:-1]  # from step 2 to step n-1: no warm-up, no validation
        rate = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else None
        rows.append(
            {
                "network": sizes.train_net,
                "patch": list(sizes.train_patch),
                "case_shape": list(sizes.train_shape),
                "prefetch": prefetch,
                "steps": sizes.train_steps,
                "steps_per_s": round(rate, 3) if rate else None,
                "peak_mib": peak_mib(device),
                **sampler.summary(),
            }
        )
    return rows


# ------------------------------------------------------------------ 3. inference


def check_inference(sizes: Sizes, device: torch.device, budget: Budget) -> list[dict]:
    torch.manual_seed(0)
    model = build_network(sizes.networks[sizes.infer_net], 1, 3, sizes.infer_patch)
    model = model.to(device).eval()
    rng = np.random.default_rng(0)
    case = PreprocessedCase(rng.normal(size=(1, *sizes.infer_shape)).astype(np.float32), None, {})
    # warm-up (cuDNN's kernels, the caching allocator), with and without autocast and
    # mirroring, on a smaller case
    small = PreprocessedCase(
        case.image[:, : 2 * sizes.infer_patch[0], : 2 * sizes.infer_patch[1]], None, {}
    )
    for amp in (False, True):
        cfg = PredictConfig(amp=amp, tta=True)
        predict_probabilities([model], small, sizes.infer_patch, cfg, device)
    rows = []
    plan = [(amp, tta, 4) for tta in (False, True) for amp in (False, True)]
    plan.append((True, True, 16))  # a larger window batch, which a big GPU allows
    for amp, tta, sw in plan:
        if budget.left() < (25 if tta else 10):
            rows.append({"amp": amp, "tta": tta, "sw_batch_size": sw, "skipped": "time budget"})
            continue
        cfg = PredictConfig(amp=amp, tta=tta, sw_batch_size=sw)
        times = []
        reset_peak(device)
        for _ in range(sizes.infer_repeats if not tta else 1):
            sync(device)
            t0 = time.perf_counter()
            predict_probabilities([model], case, sizes.infer_patch, cfg, device)
            sync(device)
            times.append(time.perf_counter() - t0)
        rows.append(
            {
                "network": sizes.infer_net,
                "volume": list(sizes.infer_shape),
                "patch": list(sizes.infer_patch),
                "amp": amp,
                "active": device.type == "cuda",  # amp is ignored on the CPU
                "tta": tta,
                "sw_batch_size": sw,
                "s_per_case": round(min(times), 3),
                "runs": len(times),
                "peak_mib": peak_mib(device),
            }
        )
    return rows


# ------------------------------------------------------------------ report


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if "skipped" in row or "error" in row:
            note = row.get("skipped") or row.get("error")
            ident = ", ".join(f"{k}={row[k]}" for k in row if k not in ("skipped", "error"))
            lines.append(f"| {ident}: {note} |" + " |" * (len(columns) - 1))
            continue
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "device": str(device),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a test of the script)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--budget-s", type=float, default=160.0, help="time budget in seconds")
    p.add_argument(
        "--only", default="steps,training,inference", help="sections to run, comma-separated"
    )
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda, but torch sees no CUDA device")
    sizes = QUICK if args.quick else FULL
    budget = Budget(args.budget_s)
    start = time.perf_counter()
    set_determinism(seed=0)  # as medtl's training loop does (deterministic cuDNN)
    only = set(args.only.split(","))
    results: dict[str, Any] = {"environment": environment(device), "quick": args.quick}
    sections = {
        "steps": (check_steps, ["network", "patch", "amp", "channels_last", "active",
                                "ms_per_step", "steps_per_s", "peak_mib"]),
        "training": (check_training, ["network", "patch", "prefetch", "steps_per_s",
                                      "util_mean_pct", "util_median_pct", "util_samples",
                                      "peak_mib"]),
        "inference": (check_inference, ["network", "volume", "patch", "amp", "active", "tta",
                                        "sw_batch_size", "s_per_case", "peak_mib"]),
    }  # fmt: skip
    titles = {
        "steps": "Training steps (after warm-up)",
        "training": "Training through medtl's loop, prefetch off/on",
        "inference": "Sliding-window prediction per case",
    }
    print(f"# medtl GPU check ({device}{', quick' if args.quick else ''})\n")
    for name, (run, columns) in sections.items():
        if name not in only:
            continue
        t0 = time.perf_counter()
        results[name] = run(sizes, device, budget)
        print(f"## {titles[name]} ({time.perf_counter() - t0:.0f} s)\n")
        print(table(results[name], columns) + "\n", flush=True)
    results["elapsed_s"] = round(time.perf_counter() - start, 1)
    print(f"total {results['elapsed_s']} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
