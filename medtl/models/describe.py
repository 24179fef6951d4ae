"""What a network is made of, and what each transfer arm trains of it.

:func:`describe_model` lists the network stage by stage (the encoder stages of
:func:`medtl.models.stages.encoder_stages`, then the decoder and the head) with their
parameter counts, whether pretrained weights cover them, and, per arm, whether the
stage trains from the start, stays frozen, or unfreezes at a later step.
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from medtl.config import ArmConfig, ModelConfig
from medtl.models.networks import build_network, get_architecture
from medtl.models.nnunet_networks import canonical_state
from medtl.models.stages import StrategySpec, encoder_stages, stage_status

FIXED_COLUMNS = ("part", "stage", "parameters", "pretrained")


def _coverage(keys: list[str], pretrained_keys: set[str]) -> str:
    covered = sum(k in pretrained_keys for k in keys)
    if keys and covered == len(keys):
        return "yes"
    if covered == 0:
        return "no"
    return f"partly ({covered}/{len(keys)} tensors)"


def describe_model(
    cfg: ModelConfig,
    in_channels: int,
    num_classes: int,
    arms: dict[str, ArmConfig],
    pretrained_keys: set[str] | None = None,
    network: nn.Module | None = None,
    patch_size: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """One row per encoder stage (stem first), then the decoder and the head.

    Args:
        cfg: the network settings.
        in_channels, num_classes: input channels; output channels including background.
        arms: arm name → its parsed settings.
        pretrained_keys: state-dict names that pretrained weights initialise (e.g. the
            ``loaded`` list of a load report); None leaves out the ``pretrained`` column.
        network: the network built from ``cfg`` (built here, for ``patch_size``, when None).

    Returns:
        Columns ``part`` (encoder, decoder, head), ``stage``, ``parameters``,
        ``pretrained`` (``yes``, ``no`` or ``partly (a/b tensors)``; only with
        ``pretrained_keys``) and one column per arm, named after it, holding
        ``trainable``, ``frozen`` or ``unfrozen at step N`` at the start of training.
        The ``parameters`` column sums to the network's parameter count.

    Raises:
        ValueError: an arm is named like one of the fixed columns.
        medtl.config.ConfigError: an arm asks for more encoder stages than there are.

    Example:
        >>> model = ModelConfig(features=(4, 4, 8, 8, 16, 4))
        >>> arms = {"frozen": ArmConfig(init="pretrained", freeze_encoder=True)}
        >>> df = describe_model(model, 1, 2, arms)
        >>> list(df["stage"])
        ['conv_0', 'down_1', 'down_2', 'down_3', 'down_4', 'decoder', 'head']
        >>> list(df["frozen"])[-3:]
        ['frozen', 'trainable', 'trainable']
    """
    clash = sorted(set(arms) & set(FIXED_COLUMNS))
    if clash:
        raise ValueError(
            f"arm names {clash} clash with the table's columns {list(FIXED_COLUMNS)}; "
            "expected other names. How to fix: rename these arms"
        )
    arch, settings = get_architecture(cfg.name), (cfg, in_channels, num_classes, patch_size)
    model = network if network is not None else build_network(*settings)
    stages = encoder_stages(model, arch)
    params = dict(model.named_parameters())
    state_keys = list(canonical_state(model, keep_vars=True))
    starts = {name: StrategySpec.from_arm(arm).unfreeze_steps(stages) for name, arm in arms.items()}

    rows = []
    for i, stage in enumerate(stages):
        keys = [k for k in state_keys if arch.part_of(k) == "encoder" and stage.contains(k)]
        row = {
            "part": "encoder",
            "stage": stage.name,
            "parameters": sum(params[k].numel() for k in keys if k in params),
        }
        if pretrained_keys is not None:
            row["pretrained"] = _coverage(keys, pretrained_keys)
        for name in arms:
            row[name] = stage_status(starts[name][i])
        rows.append(row)
    for part in ("decoder", "head"):
        keys = [k for k in state_keys if arch.part_of(k) == part]
        row = {
            "part": part,
            "stage": part,
            "parameters": sum(params[k].numel() for k in keys if k in params),
        }
        if pretrained_keys is not None:
            row["pretrained"] = _coverage(keys, pretrained_keys)
        for name in arms:
            row[name] = "trainable"
        rows.append(row)
    df = pd.DataFrame(rows)
    df["parameters"] = df["parameters"].astype(int)
    return df


def trainable_at_start(df: pd.DataFrame, arm: str) -> int:
    """Parameters an arm trains from the first step, from a :func:`describe_model` table."""
    return int(df.loc[df[arm] == "trainable", "parameters"].sum())


def format_table(df: pd.DataFrame) -> str:
    """A plain-text table of :func:`describe_model`'s result, with a total line.

    The total line gives the network's parameter count and, per arm, the parameters
    trained from the first step.

    Example:
        >>> model, arms = ModelConfig(features=(4, 4, 8, 8, 16, 4)), {"scratch": ArmConfig()}
        >>> text = format_table(describe_model(model, 1, 2, arms))
        >>> print(text.splitlines()[0])
        part     stage    parameters  scratch
    """
    arms = [c for c in df.columns if c not in FIXED_COLUMNS]
    cells = [[str(v) for v in df.columns]]
    for _, row in df.iterrows():
        cells.append(
            [
                f"{v:,}" if col == "parameters" else str(v)
                for col, v in zip(df.columns, row, strict=True)
            ]
        )
    total = {"part": "total", "stage": "", "parameters": f"{int(df['parameters'].sum()):,}"}
    total["pretrained"] = ""
    for arm in arms:
        total[arm] = f"{trainable_at_start(df, arm):,} trainable"
    cells.append([total[c] for c in df.columns])
    widths = [max(len(r[j]) for r in cells) for j in range(len(df.columns))]
    right = {j for j, c in enumerate(df.columns) if c == "parameters"}

    def line(r: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if j in right else v.ljust(w)
            for j, (v, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(cells[0]), rule, *(line(r) for r in cells[1:-1]), rule, line(cells[-1])]
    return "\n".join(out)
