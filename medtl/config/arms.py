"""The record of one transfer arm (``arms.<arm>`` of the config) and its checks."""

from __future__ import annotations

from dataclasses import InitVar, dataclass

from medtl.config.choices import ARM_INITS, ARM_STRATEGIES, check_choice
from medtl.kernel.errors import ConfigError

__all__ = ["ARM_STRATEGIES", "ArmConfig"]


@dataclass(frozen=True)
class ArmConfig:
    """One transfer strategy.

    ``strategy`` may be left out: it is then derived from the older keys, so that
    ``{init: random}`` means ``scratch``, ``{init: pretrained, freeze_encoder: true}``
    means ``frozen`` and any other pretrained arm means ``finetune``. After construction
    ``strategy`` is always set and ``freeze_encoder`` is true exactly for ``frozen``.

    Attributes:
        init: ``random``, ``pretrained`` (encoder weights from the pretrained checkpoint)
            or ``ssl`` (from self-supervised pretraining).
        freeze_encoder: keep the encoder fixed (feature extraction); the same as
            ``strategy: frozen``.
        encoder_lr_scale: the encoder's learning rate as a fraction of the base rate.
        strategy: ``scratch`` (random start, every layer trains), ``frozen`` (the encoder,
            its normalisation statistics included, stays fixed), ``finetune`` (every
            layer trains), ``partial`` (only the last ``unfreeze_stages`` encoder stages
            train) or ``gradual`` (the encoder starts frozen and its stages unfreeze one
            by one, deepest first, on the schedule of ``unfreeze_every`` or ``unfreeze_at``).
        unfreeze_stages: ``partial`` only: how many of the deepest encoder stages train.
        unfreeze_every: ``gradual`` only: unfreeze one more stage every N steps (the
            deepest at step N, the next at 2N, ...).
        unfreeze_at: ``gradual`` only: the step at which each stage unfreezes, deepest
            first; stages beyond the list stay frozen.
        repeats: how many of the workflow's ``seeds`` the arm trains with (the first N);
            0 = all of them (see :func:`training_seeds`). Training itself ignores it.
        where: the arm's config path for messages, e.g. ``arms.partial2``
            (:func:`parse_section` passes it; not a config key, not stored).
    """

    init: str = "random"
    freeze_encoder: bool = False
    encoder_lr_scale: float = 1.0
    strategy: str | None = None
    unfreeze_stages: int = 0
    unfreeze_every: int = 0
    unfreeze_at: tuple[int, ...] = ()
    repeats: int = 0
    where: InitVar[str] = "arms.<arm>"

    def __post_init__(self, where: str) -> None:
        strategy = self.strategy
        if strategy is None:
            if self.freeze_encoder:
                strategy = "frozen"
            else:
                strategy = "scratch" if self.init == "random" else "finetune"
        check_choice(self.init, ARM_INITS, f"{where}.init")
        check_choice(strategy, ARM_STRATEGIES, f"{where}.strategy")
        if self.freeze_encoder and strategy != "frozen":
            raise ConfigError(
                f"config key '{where}.freeze_encoder': got true with strategy {strategy!r}; "
                "freeze_encoder: true means strategy: frozen. How to fix: remove "
                "freeze_encoder, or set strategy: frozen"
            )
        if strategy == "scratch" and self.init != "random":
            raise ConfigError(
                f"config key '{where}.init': got {self.init!r} with strategy 'scratch', "
                "which starts from random weights. How to fix: set init: random, or use "
                "strategy: finetune to train every layer from pretrained weights"
            )
        if self.encoder_lr_scale <= 0:
            raise ConfigError(
                f"config key '{where}.encoder_lr_scale': got {self.encoder_lr_scale!r}; "
                "expected a number above 0. How to fix: use e.g. 0.2, or strategy: frozen "
                "to keep the encoder fixed"
            )
        if self.repeats < 0:
            raise ConfigError(
                f"config key '{where}.repeats': got {self.repeats!r}; expected 0 (all of "
                "the workflow's seeds) or more. How to fix: set e.g. repeats: 1"
            )
        self._check_schedule(strategy, where)
        object.__setattr__(self, "strategy", strategy)
        object.__setattr__(self, "freeze_encoder", strategy == "frozen")

    def _check_schedule(self, strategy: str, where: str) -> None:
        if strategy == "partial":
            if self.unfreeze_stages < 1:
                raise ConfigError(
                    f"config key '{where}.unfreeze_stages': got {self.unfreeze_stages!r}; "
                    "strategy 'partial' needs the number of deepest encoder stages to train "
                    "(1 or more). How to fix: set e.g. unfreeze_stages: 2"
                )
        elif self.unfreeze_stages:
            raise ConfigError(
                f"config key '{where}.unfreeze_stages': got {self.unfreeze_stages!r} with "
                f"strategy {strategy!r}; it only applies to strategy 'partial'. How to fix: "
                "remove it, or set strategy: partial"
            )
        if self.unfreeze_every < 0 or any(s < 0 for s in self.unfreeze_at):
            raise ConfigError(
                f"config key '{where}.unfreeze_every / unfreeze_at': got "
                f"{self.unfreeze_every!r} / {list(self.unfreeze_at)!r}; expected steps of 0 "
                "or more"
            )
        scheduled = bool(self.unfreeze_every) + bool(self.unfreeze_at)
        if strategy == "gradual":
            if scheduled != 1:
                raise ConfigError(
                    f"config key '{where}.unfreeze_every / unfreeze_at': got "
                    f"{self.unfreeze_every!r} / {list(self.unfreeze_at)!r}; strategy "
                    "'gradual' needs exactly one schedule. How to fix: set either "
                    "unfreeze_every: 50 (a stage every 50 steps, deepest first) or "
                    "unfreeze_at: [50, 100, 150] (the step of each stage, deepest first)"
                )
            if list(self.unfreeze_at) != sorted(self.unfreeze_at):
                raise ConfigError(
                    f"config key '{where}.unfreeze_at': got {list(self.unfreeze_at)!r}; "
                    "expected steps in increasing order (deepest stage first). How to fix: "
                    f"use {sorted(self.unfreeze_at)!r}"
                )
        elif scheduled:
            raise ConfigError(
                f"config key '{where}.unfreeze_every / unfreeze_at': set with strategy "
                f"{strategy!r}; they only apply to strategy 'gradual'. How to fix: remove "
                "them, or set strategy: gradual"
            )
