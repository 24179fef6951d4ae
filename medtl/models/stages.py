"""The encoder's stages, and when each trains under an arm's transfer strategy.

**Stages.** An architecture may declare its stages with an optional attribute
``encoder_stages``: a sequence, stem first, whose items are a parameter-name prefix or
a sequence of prefixes (one stage), or a function of the built network that returns one
(``resencunet``: ``encoder.stem``, ``encoder.stages.0`` ... ``encoder.stages.N``).
Otherwise the stages are derived from the architecture's ``encoder_prefixes`` and the
model's state-dict names (parameters and buffers, in the model's registration order,
which runs from the stem to the deepest level; names that repeat a tensor, such as DNA's
``all_modules`` aliases, are left out):

1. with several encoder prefixes, each prefix is one stage (``basicunet``: ``conv_0``,
   ``down_1`` ... ``down_4``);
2. with a single encoder prefix, names are grouped by the prefix plus their next name
   component (``encoder.conv1``, ``encoder.bn1``, ``encoder.layer1`` ...); consecutive
   groups that are single layers (their tensors sit directly in that component, such as
   ``encoder.conv1.weight``) are merged into one stage, so a stem of a convolution and a
   norm is one stage (``flexibleunet``: ``encoder.conv1+bn1``, ``encoder.layer1`` ...
   ``encoder.layer4``). When every name shares that next component and it is a container
   (``encoder.stages.0...``, ``encoder.stages.1...``), the rule looks one level deeper,
   until the names split (``plainconvunet``: ``encoder.stages.0`` ... ``encoder.stages.N``).

Stages are ordered by the first appearance of their names; the last is the deepest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from medtl.config import ARM_STRATEGIES, ArmConfig
from medtl.kernel.errors import ConfigError
from medtl.models.networks import Architecture
from medtl.models.nnunet_networks import canonical_state

STRATEGIES = ARM_STRATEGIES


@dataclass(frozen=True)
class Stage:
    """One encoder stage: a name and the state-dict name prefixes it covers.

    Attributes:
        name: readable name, e.g. ``down_1`` or ``encoder.conv1+bn1``.
        prefixes: name prefixes (each ending with ``.``) of its parameters and buffers.
    """

    name: str
    prefixes: tuple[str, ...]

    def contains(self, key: str) -> bool:
        """Whether a parameter, buffer or module name (with a trailing ``.``) is in it.

        A prefix may also name one tensor (Primus's ``eva.pos_embed``): its name is in.
        """
        return key.startswith(self.prefixes) or f"{key}.".startswith(self.prefixes)


def _with_dot(prefix: str) -> str:
    return prefix if prefix.endswith(".") else prefix + "."


def _generic_stages(keys: Sequence[str], encoder_prefixes: Sequence[str]) -> list[Stage]:
    """Stages from encoder state-dict names, by the rule in the module docstring."""
    single = len(encoder_prefixes) == 1
    while single:  # one container holds the whole encoder (``encoder.stages.``): look inside
        prefix = encoder_prefixes[0]
        children = {prefix + k[len(prefix) :].split(".")[0] + "." for k in keys}
        child = next(iter(children))
        if len(children) > 1 or any(not k.startswith(child) for k in keys):
            break  # the names split here, or a tensor sits right under the prefix
        if any(len(k[len(child) :].split(".")) < 2 for k in keys):
            break  # the child is a single layer, not a container
        encoder_prefixes = (child,)
    groups: dict[str, bool] = {}  # group prefix -> is a single layer, in model order
    for key in keys:
        prefix = next(p for p in encoder_prefixes if key.startswith(p))
        if not single:
            groups.setdefault(prefix, False)
            continue
        rest = key[len(prefix) :].split(".")
        if len(rest) == 1:  # a tensor right under the prefix
            groups.setdefault(prefix, True)
        else:
            groups.setdefault(prefix + rest[0] + ".", len(rest) == 2)
    stages: list[Stage] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            parent = run[0].rstrip(".").rsplit(".", 1)
            names = [p.rstrip(".").rsplit(".", 1)[-1] for p in run]
            head = f"{parent[0]}." if len(parent) == 2 else ""
            stages.append(Stage(head + "+".join(names), tuple(run)))
            run.clear()

    for prefix, leaf in groups.items():
        if leaf:
            run.append(prefix)
            continue
        close_run()
        stages.append(Stage(prefix.rstrip("."), (prefix,)))
    close_run()
    return stages


def _declared_stages(declared: Sequence[str | Sequence[str]]) -> list[Stage]:
    stages = []
    for item in declared:
        prefixes = (item,) if isinstance(item, str) else tuple(item)
        prefixes = tuple(_with_dot(p) for p in prefixes)
        stages.append(Stage("+".join(p.rstrip(".") for p in prefixes), prefixes))
    return stages


def encoder_stages(model: nn.Module, arch: Architecture) -> list[Stage]:
    """The encoder's stages, stem first, deepest last.

    Args:
        model: the network.
        arch: its architecture (``encoder_prefixes``, optionally ``encoder_stages``).

    Returns:
        The stages; together they cover every encoder parameter and buffer exactly once.

    Raises:
        ConfigError: the network has no encoder parameters, or declared stages leave
            encoder names uncovered or cover one twice.
    """
    keys = [k for k in canonical_state(model, keep_vars=True) if arch.part_of(k) == "encoder"]
    if not keys:
        raise ConfigError(
            f"the network {type(model).__name__} has no parameters under the encoder "
            f"prefixes {list(arch.encoder_prefixes)}; expected at least one. How to fix: "
            "correct the architecture's encoder_prefixes"
        )
    declared = getattr(arch, "encoder_stages", None)
    if callable(declared):
        declared = declared(model)
    if not declared:
        return _generic_stages(keys, arch.encoder_prefixes)
    stages = _declared_stages(declared)
    for key in keys:
        owners = [s.name for s in stages if s.contains(key)]
        if len(owners) != 1:
            raise ConfigError(
                f"the architecture's encoder_stages must cover each encoder name exactly "
                f"once; {key!r} is covered by {owners or 'none'}. How to fix: correct "
                "encoder_stages (prefixes of the encoder's parameter names, stem first)"
            )
    return stages


@dataclass(frozen=True)
class StrategySpec:
    """The part of an arm that shapes training (its ``init`` is used before training).

    Attributes:
        name: one of :data:`STRATEGIES`.
        encoder_lr_scale: the encoder's learning rate as a share of the base rate.
        unfreeze_stages: ``partial``: how many of the deepest stages train.
        unfreeze_every: ``gradual``: a stage every N steps, deepest first.
        unfreeze_at: ``gradual``: the step of each stage, deepest first.
    """

    name: str = "finetune"
    encoder_lr_scale: float = 1.0
    unfreeze_stages: int = 0
    unfreeze_every: int = 0
    unfreeze_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ConfigError(
                f"strategy: got {self.name!r}; allowed values: {', '.join(STRATEGIES)}"
            )

    @classmethod
    def from_arm(cls, arm: ArmConfig) -> StrategySpec:
        """The strategy of a parsed arm (its ``strategy`` is already resolved)."""
        return cls(
            name=str(arm.strategy),
            encoder_lr_scale=arm.encoder_lr_scale,
            unfreeze_stages=arm.unfreeze_stages,
            unfreeze_every=arm.unfreeze_every,
            unfreeze_at=tuple(arm.unfreeze_at),
        )

    def unfreeze_steps(self, stages: Sequence[Stage]) -> list[int | None]:
        """Per stage (stem first), the step from which it trains; None: never.

        Raises:
            ConfigError: ``partial`` or ``gradual`` asks for more stages than there are.
        """
        n = len(stages)
        names = ", ".join(s.name for s in stages)
        if self.name in ("scratch", "finetune"):
            return [0] * n
        if self.name == "frozen":
            return [None] * n
        if self.name == "partial":
            k = self.unfreeze_stages
            if not 1 <= k <= n:
                raise ConfigError(
                    f"config key 'arms.<arm>.unfreeze_stages': got {k}; this encoder has "
                    f"{n} stages ({names}), so expected 1 to {n}. How to fix: lower it, or "
                    "use strategy: finetune to train them all"
                )
            return [0 if i >= n - k else None for i in range(n)]
        # gradual: index 0 of the schedule is the deepest stage
        if self.unfreeze_every:
            deepest_first: list[int | None] = [(r + 1) * self.unfreeze_every for r in range(n)]
        else:
            if len(self.unfreeze_at) > n:
                raise ConfigError(
                    f"config key 'arms.<arm>.unfreeze_at': got {len(self.unfreeze_at)} steps; "
                    f"this encoder has {n} stages ({names}), so expected at most {n}. "
                    "How to fix: give one step per stage, deepest first"
                )
            deepest_first = [*self.unfreeze_at, *[None] * (n - len(self.unfreeze_at))]
        return deepest_first[::-1]


def stage_status(start: int | None) -> str:
    """A stage's state at the start of training: ``trainable``, ``frozen`` or
    ``unfrozen at step N``."""
    if start is None:
        return "frozen"
    return "trainable" if start == 0 else f"unfrozen at step {start}"
