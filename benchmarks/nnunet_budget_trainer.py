"""An nnU-Net v2 trainer that trains to a wall-clock budget, for medtl's benchmark.

``benchmarks/compare_nnunet.py`` copies this file into the benchmark environment's
``nnunetv2/training/nnUNetTrainer/variants/`` (where nnU-Net looks for trainers by class
name) and selects it with ``nnUNetv2_train ... -tr nnUNetTrainer_medtlBudget``. It is the
stock ``nnUNetTrainer`` with a shorter epoch and these changes, all read from the
environment the benchmark sets:

* ``MEDTL_BENCH_T0``: the launch time (``time.time()``); budgets count from there, as they
  do for medtl, so start-up and data loading are part of the budget.
* ``MEDTL_BENCH_MARKS``: budgets in seconds, comma-separated. At the end of the last epoch
  that finishes before a budget, the weights are saved as ``checkpoint_mark{i}.pth``;
  training stops before the epoch that would run past the largest budget.
* ``MEDTL_BENCH_EPOCHS`` / ``MEDTL_BENCH_ITERS``: the schedule (the poly learning rate runs
  over these epochs) and training iterations per epoch; validation iterations per epoch
  keep nnU-Net's 1:5 ratio.

The final validation nnU-Net runs after training is skipped: the benchmark predicts the
held-out cases with ``nnUNetv2_predict`` for every tool alike.
"""

import os
from time import time

import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_medtlBudget(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = int(os.environ.get("MEDTL_BENCH_ITERS", "25"))
        self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)
        self.num_epochs = int(os.environ.get("MEDTL_BENCH_EPOCHS", "10"))
        self.save_every = 10**9
        self.bench_t0 = float(os.environ.get("MEDTL_BENCH_T0", time()))
        marks = os.environ.get("MEDTL_BENCH_MARKS", "")
        self.bench_marks = sorted(float(m) for m in marks.split(",") if m.strip())
        self.bench_saved = 0

    def _save_marks(self, elapsed, epoch_time, last=False):
        """Save the weights for every budget the next epoch would run past."""
        while self.bench_saved < len(self.bench_marks) and (
            last or elapsed + epoch_time > self.bench_marks[self.bench_saved]
        ):
            self.save_checkpoint(join(self.output_folder, f"checkpoint_mark{self.bench_saved}.pth"))
            self.print_to_log_file(
                f"budget mark {self.bench_saved}: {elapsed:.1f} s after launch, "
                f"epoch {self.current_epoch}"
            )
            self.bench_saved += 1

    def run_training(self):
        self.on_train_start()
        first = self.current_epoch
        for epoch in range(first, self.num_epochs):
            start = time()
            if epoch == first:
                self.print_to_log_file(f"bench: first epoch at {start - self.bench_t0:.2f}")
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = [
                self.train_step(next(self.dataloader_train))
                for _ in range(self.num_iterations_per_epoch)
            ]
            self.print_to_log_file(f"bench: train_s {time() - start:.4f}")
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val = [
                    self.validation_step(next(self.dataloader_val))
                    for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(val)
            self.on_epoch_end()
            now = time()
            self._save_marks(now - self.bench_t0, now - start)
            if self.bench_saved >= len(self.bench_marks) and self.bench_marks:
                break
        self._save_marks(time() - self.bench_t0, 0.0, last=True)
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities=False):
        self.print_to_log_file("final validation skipped (medtl benchmark predicts separately)")
