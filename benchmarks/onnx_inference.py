"""Per-case inference time: ONNX Runtime against eager PyTorch, same cores, same threads.

The demo's network (``basicunet``, features [16, 16, 32, 64, 128, 16], patch
[32, 32, 16], random weights: the time does not depend on them) is exported as
``medtl export-onnx`` does and runs medtl's sliding window
(:func:`medtl.predict.inference.predict_probabilities`, overlap 0.5, gaussian, no TTA)
over a demo-sized case and a larger one, once per engine per repeat, engines alternating
so that a slow spell of a shared machine hits both. Both use ``--threads`` threads
(``torch.set_num_threads`` and ONNX Runtime's ``intra_op_num_threads``).

Usage::

    python benchmarks/onnx_inference.py --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medtl.config import ModelConfig, PredictConfig
from medtl.models.networks import build_network
from medtl.models.onnx_model import OnnxNetwork
from medtl.predict.inference import predict_probabilities
from medtl.preprocess.case import PreprocessedCase

PATCH = [32, 32, 16]
SIZES = {"demo": (48, 48, 24), "larger": (160, 160, 64)}


def _export(net: torch.nn.Module, path: Path) -> None:
    from medtl.export.onnx import write_onnx

    write_onnx(net, 1, PATCH, path)


def _time(models, case, cfg) -> float:
    start = time.perf_counter()
    predict_probabilities(models, case, PATCH, cfg, torch.device("cpu"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_network(ModelConfig(), 1, 2).eval()
    cfg = PredictConfig()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.onnx"
        _export(net, path)
        session = OnnxNetwork(path, threads=args.threads)
        rows = []
        for name, shape in SIZES.items():
            rng = np.random.default_rng(0)
            case = PreprocessedCase(rng.normal(size=(1, *shape)).astype(np.float32), None, {})
            _time([net], case, cfg), _time([session], case, cfg)  # warm-up
            times = {"torch": [], "onnxruntime": []}
            for _ in range(args.repeats):
                times["torch"].append(_time([net], case, cfg))
                times["onnxruntime"].append(_time([session], case, cfg))
            rows.append((name, shape, times))
    print(f"threads {args.threads}, repeats {args.repeats}, torch {torch.__version__}")
    print("| case | voxels | engine | min s | median s | max s | median ratio ort/torch |")
    print("|---|---|---|---|---|---|---|")
    for name, shape, times in rows:
        ratio = statistics.median(times["onnxruntime"]) / statistics.median(times["torch"])
        for engine, values in times.items():
            cells = " | ".join(f"{f(values):.3f}" for f in (min, statistics.median, max))
            dims = "×".join(map(str, shape))
            last = f"{ratio:.2f}" if engine == "onnxruntime" else ""
            print(f"| {name} | {dims} | {engine} | {cells} | {last} |")


if __name__ == "__main__":
    main()
