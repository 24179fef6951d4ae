"""A tiny training (and self-supervised pretraining) run in its own process.

Used by test_resume.py (killed with SIGKILL and started again) and test_ddp.py (launched
by ``torchrun`` with 2 gloo processes). Run as a script::

    python tests/train/tiny_run.py OUT [--ssl-out DIR] [--gradual-out DIR] [--hang-at K]

It prints ``step K`` after every optimiser step (rank 0 only) and, with ``--hang-at K``,
``hanging`` after step K, then sleeps until it is killed. With ``--grads`` rank 0 saves
the gradients of the first step (after DDP has averaged them) to OUT/grads1.pt (and
SSL_OUT/grads1.pt).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medtl.config import ModelConfig, TrainConfig
from medtl.models.stages import StrategySpec
from medtl.train import distributed
from medtl.train.loop import RunSpec, train_run
from medtl.train.ssl import SSLConfig, pretrain_ssl

MODEL = ModelConfig(features=(4, 4, 8, 8, 16, 4))
PATCH = (16, 16, 32)
SHAPE = (20, 20, 36)
CPU = torch.device("cpu")


def item(seed: int) -> dict:
    """A case as load_training_cases returns it: a bright box on noise."""
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.int64)
    label[4 + seed : 12 + seed, 5:14, 6:20] = 1
    image = (2.0 * label + rng.normal(0.0, 0.5, SHAPE)).astype(np.float32)
    return {
        "image": torch.from_numpy(image[None]),
        "label": torch.from_numpy(label[None]),
        "case": f"case{seed}",
    }


def spec(steps: int, checkpoint_every: int, val_every: int, batch_size: int = 2) -> RunSpec:
    return RunSpec(
        model=MODEL,
        train=TrainConfig(
            steps=steps,
            batch_size=batch_size,
            patch_size=PATCH,
            val_every=val_every,
            checkpoint_every=checkpoint_every,
        ),
        num_classes=2,
        classes={"1": "box"},
        seed=3,
        tags={"arm": "test", "fold": 0},
    )


def ssl_images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 36, 36, 18, generator=g) for _ in range(3)]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--val-every", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--hang-at", type=int, default=0)
    p.add_argument("--ssl-out", type=Path, default=None)
    p.add_argument("--ssl-steps", type=int, default=3)
    p.add_argument("--grads", action="store_true")
    p.add_argument("--gradual-out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    def save_grads(out: Path, step: int, model: torch.nn.Module) -> None:
        if args.grads and step == 1 and distributed.is_main():
            grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
            torch.save(grads, out / "grads1.pt")

    def on_step(step: int, model: torch.nn.Module) -> None:
        save_grads(args.out, step, model)
        if distributed.is_main():
            print(f"step {step}", flush=True)
        if step == args.hang_at:
            print("hanging", flush=True)
            time.sleep(600)

    items = [item(0), item(1), item(2)]
    train_run(
        spec(args.steps, args.checkpoint_every, args.val_every, args.batch_size),
        items,
        items[:1],
        args.out,
        CPU,
        progress=False,
        fingerprint="tiny",
        on_step=on_step,
    )
    if args.gradual_out is not None:
        # encoder stages unfreeze at steps 2 and 4: a DDP job rebuilds its wrapper
        gradual = dataclasses.replace(
            spec(6, 3, 3), strategy=StrategySpec("gradual", unfreeze_every=2)
        )
        train_run(gradual, items, items[:1], args.gradual_out, CPU, progress=False)
    if args.ssl_out is not None:
        cfg = SSLConfig(steps=args.ssl_steps, batch_size=2, patch_size=(32, 32, 16))
        pretrain_ssl(
            ssl_images(),
            MODEL,
            cfg,
            args.ssl_out,
            seed=5,
            device=CPU,
            progress=False,
            on_step=lambda step, model: save_grads(args.ssl_out, step, model),
        )
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
