"""Transfer strategies: which encoder stages train, and from which step.

An arm's strategy (:class:`medtl.config.ArmConfig`) decides, for every *stage* of the
encoder, the step from which that stage trains, or that it never does:

* ``scratch`` and ``finetune``: every stage trains from step 0 (they differ only in
  the initial weights, chosen by the arm's ``init``);
* ``frozen``: no stage ever trains (feature extraction);
* ``partial``: the last (deepest) ``unfreeze_stages`` stages train from step 0;
* ``gradual``: the encoder starts frozen; stages unfreeze one by one from the deepest
  to the stem, at steps ``unfreeze_every``, ``2 * unfreeze_every``, ... or at the steps
  listed in ``unfreeze_at`` (deepest stage first; stages beyond the list stay frozen).

"Unfrozen at step N" means that the stage is updated from the (N+1)-th optimiser step
on, i.e. once N steps are done. The decoder and head always train.

A frozen stage is frozen entirely: its parameters get no gradient and no weight decay,
and its modules are kept in eval mode, so normalisation layers with running statistics
(BatchNorm, InstanceNorm with ``track_running_stats``) do not update them and dropout
is off. :meth:`StageSchedule.train_mode` re-applies this after every ``model.train()``.

The stages themselves, and :class:`~medtl.models.stages.StrategySpec` (when each
stage trains), are in :mod:`medtl.models.stages`.
"""

from __future__ import annotations

from torch import nn

from medtl.models.networks import Architecture
from medtl.models.stages import StrategySpec, encoder_stages


class StageSchedule:
    """A strategy applied to one model: trainability, optimiser groups and modes per step.

    Args:
        model: the network (its parameters' ``requires_grad`` are set by :meth:`apply`).
        arch: its architecture.
        spec: the strategy.

    Example:
        >>> from medtl.config import ModelConfig
        >>> from medtl.models.networks import build_network, get_architecture
        >>> arch = get_architecture("basicunet")
        >>> net = build_network(ModelConfig(features=(4, 4, 8, 8, 16, 4)), 1, 2)
        >>> sched = StageSchedule(net, arch, StrategySpec("gradual", unfreeze_every=10))
        >>> [s.name for s in sched.stages]
        ['conv_0', 'down_1', 'down_2', 'down_3', 'down_4']
        >>> sched.starts
        [50, 40, 30, 20, 10]
        >>> sched.trainable_stages(25)
        ['down_3', 'down_4']
    """

    def __init__(self, model: nn.Module, arch: Architecture, spec: StrategySpec) -> None:
        self.model = model
        self.arch = arch
        self.spec = spec
        self.stages = encoder_stages(model, arch)
        self.starts = spec.unfreeze_steps(self.stages)
        self._param_stage: dict[str, int | None] = {}
        for name, _ in model.named_parameters():
            if arch.part_of(name) == "encoder":
                self._param_stage[name] = next(
                    i for i, s in enumerate(self.stages) if s.contains(name)
                )
            else:
                self._param_stage[name] = None
        self._module_stage: list[tuple[nn.Module, int]] = []
        for name, module in model.named_modules():
            if name:
                owner = [i for i, s in enumerate(self.stages) if s.contains(name + ".")]
                if owner:
                    self._module_stage.append((module, owner[0]))
        self._applied: tuple[bool, ...] | None = None

    def _trainable(self, step: int) -> tuple[bool, ...]:
        return tuple(s is not None and s <= step for s in self.starts)

    def trainable_stages(self, step: int) -> list[str]:
        """Names of the stages that train in the step after ``step`` steps are done."""
        return [s.name for s, t in zip(self.stages, self._trainable(step), strict=True) if t]

    def unfrozen_at(self, step: int) -> list[str]:
        """Stages that start training exactly once ``step`` (> 0) steps are done."""
        if step <= 0:
            return []
        return [s.name for s, start in zip(self.stages, self.starts, strict=True) if start == step]

    def apply(self, step: int) -> bool:
        """Set ``requires_grad`` for the step after ``step`` steps; True if anything changed.

        Decoder and head parameters always train. Call :meth:`train_mode` afterwards
        when it returns True.
        """
        trainable = self._trainable(step)
        if trainable == self._applied:
            return False
        for name, p in self.model.named_parameters():
            i = self._param_stage[name]
            p.requires_grad_(True if i is None else trainable[i])
        self._applied = trainable
        return True

    def train_mode(self) -> None:
        """``model.train()``, with every module of a frozen stage back in eval mode."""
        self.model.train()
        trainable = self._applied if self._applied is not None else self._trainable(0)
        for module, i in self._module_stage:
            if not trainable[i]:
                module.training = False

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser groups: decoder and head at ``lr``; every encoder stage that ever
        trains at ``lr * encoder_lr_scale``.

        Stages that unfreeze later are in the optimiser from the start: while frozen they
        get no gradient, which AdamW skips (no update, no weight decay). The groups are
        thus the same throughout the run, and a resumed optimiser state fits them.
        """
        enc, rest = [], []
        for name, p in self.model.named_parameters():
            i = self._param_stage[name]
            if i is None:
                rest.append(p)
            elif self.starts[i] is not None:
                enc.append(p)
        groups = [{"params": rest, "lr": lr, "name": "decoder+head"}]
        if enc:
            groups.append({"params": enc, "lr": lr * self.spec.encoder_lr_scale, "name": "encoder"})
        return groups

    def trainable_parameters(self, step: int) -> int:
        """Parameters updated in the step after ``step`` steps are done."""
        trainable = self._trainable(step)
        return sum(
            p.numel()
            for name, p in self.model.named_parameters()
            if self._param_stage[name] is None or trainable[self._param_stage[name]]
        )
