"""The network an nnU-Net v2 checkpoint was trained with, from its plans.

An nnU-Net checkpoint's tensors do not say everything about its network: strides leave
no trace in weight shapes, so weights of a network that downsampled ``[1, 2, 2]`` load
by name and shape into medtl's ``plainconvunet`` (stride 2 everywhere) and then compute
something else. The plans say how the network was built; nnU-Net v2 stores them in the
checkpoint (``init_args["plans"]``) and beside it (``plans.json`` in the trainer folder
``<Trainer>__<Plans>__<configuration>/``, above ``fold_N/``). :func:`check_plans` reads
them and refuses a network medtl does not build; :func:`medtl_settings` gives the medtl
model settings of one it does build (``PlainConvUNet`` → ``plainconvunet``,
``ResidualEncoderUNet`` of the ResEnc presets → ``resencunet``), and
:func:`build_planned` builds it.

Example:
    >>> plans = {"configurations": {"3d_fullres": {"architecture": {
    ...     "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    ...     "arch_kwargs": {"n_stages": 2, "kernel_sizes": [[3, 3, 3]] * 2,
    ...                     "strides": [[1, 1, 1], [2, 2, 2]], "n_conv_per_stage": [2, 2],
    ...                     "conv_op": "torch.nn.modules.conv.Conv3d"}}}}}
    >>> describe_network(network_of(plans, "3d_fullres", Path("plans.json")))
    'PlainConvUNet, 2 stages, 3×3×3 kernels, strides 1, 2; 2 convolutions per stage'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.models.nnunet_networks import (
    PLAIN_CONVS,
    PLAIN_DECODER_CONVS,
    RESENC_DECODER_CONVS,
    resenc_blocks,
)
from medtl.models.safe_read import WeightsError, WeightsFileError, json_beside

#: nnU-Net network class → the medtl architecture that builds it.
MEDTL_NAMES = {"PlainConvUNet": "plainconvunet", "ResidualEncoderUNet": "resencunet"}

_PLANS_FIX = (
    "put the plans.json nnU-Net wrote for this model (nnUNet_results/DatasetXXX/"
    "<Trainer>__<Plans>__<configuration>/plans.json) in the folder above the checkpoint's "
    "fold_N folder, or use the checkpoint_final.pth nnU-Net v2 wrote (it holds its plans)"
)


@dataclass(frozen=True)
class PlannedNetwork:
    """The network of one nnU-Net configuration, as its plans describe it.

    Attributes:
        source: where the plans were read (the checkpoint, or a ``plans.json``).
        configuration: e.g. ``3d_fullres``.
        class_name: the network class, e.g. ``PlainConvUNet``.
        conv_op: the convolution class as written in the plans (may be empty).
        kernel_sizes: per stage, the kernel size per axis.
        strides: per stage, the stride per axis.
        convs_per_stage: per encoder stage, the number of convolutions
            (``PlainConvUNet``) or residual blocks (``ResidualEncoderUNet``).
        features: per stage, the width (empty when the plans do not say).
        decoder_convs: per decoder stage, the number of convolutions (empty when the
            plans do not say).
    """

    source: str
    configuration: str
    class_name: str
    conv_op: str
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    convs_per_stage: list[int]
    features: list[int] = field(default_factory=list)
    decoder_convs: list[int] = field(default_factory=list)


def find_plans(checkpoint: Mapping[str, Any], path: Path) -> tuple[Mapping[str, Any], str]:
    """The plans of an nnU-Net checkpoint: in the file, else ``plans.json`` beside it.

    Raises:
        WeightsFileError: neither holds them, or the ``plans.json`` is not JSON.
    """
    init_args = checkpoint.get("init_args")
    plans = init_args.get("plans") if isinstance(init_args, Mapping) else None
    if isinstance(plans, Mapping):
        return plans, "the checkpoint's init_args"
    for folder in (path.parent, path.parent.parent):
        candidate = folder / "plans.json"
        found = json_beside(candidate, _PLANS_FIX)
        if found is not None:
            return found, str(candidate)
    raise WeightsFileError(
        path,
        "is an nnU-Net checkpoint without its plans: neither the file (init_args['plans']) "
        "nor a plans.json beside it or in the folder above says how its network was built "
        "(kernel sizes, strides, convolutions per stage), which the weights alone do not show",
        _PLANS_FIX,
    )


def _configuration_name(checkpoint: Mapping[str, Any], path: Path, plans: Mapping) -> str | None:
    init_args = checkpoint.get("init_args")
    name = init_args.get("configuration") if isinstance(init_args, Mapping) else None
    if isinstance(name, str):
        return name
    trainer_folder = path.parent.parent.name  # <Trainer>__<Plans>__<configuration>
    if trainer_folder.count("__") == 2:
        return trainer_folder.rsplit("__", 1)[-1]
    configs = plans.get("configurations")
    if isinstance(configs, Mapping) and len(configs) == 1:
        return str(next(iter(configs)))
    return None


def _merged(configs: Mapping[str, Any], configuration: str) -> dict[str, Any]:
    """A configuration with what it ``inherits_from`` filled in, as nnU-Net reads it."""
    chain: list[Mapping[str, Any]] = []
    name: Any = configuration
    while isinstance(name, str) and isinstance(configs.get(name), Mapping) and len(chain) < 10:
        chain.append(configs[name])
        name = configs[name].get("inherits_from")
    merged: dict[str, Any] = {}
    for part in reversed(chain):
        merged.update(part)
    return merged


def network_of(plans: Mapping[str, Any], configuration: str, source: Path | str) -> PlannedNetwork:
    """The network of ``configuration`` in ``plans`` (nnU-Net v2 ≥ 2.4 and older layouts).

    A configuration's ``inherits_from`` is followed, as nnU-Net does.

    Raises:
        WeightsError: the plans have no such configuration or do not describe its network.
    """
    configs = plans.get("configurations")
    if not isinstance(configs, Mapping) or configuration not in configs:
        have = ", ".join(map(str, configs)) if isinstance(configs, Mapping) else "none"
        raise WeightsError(
            f"{source}: the nnU-Net plans have no configuration {configuration!r} (found: "
            f"{have}). How to fix: use the plans.json written with this checkpoint"
        )
    merged = _merged(configs, configuration)
    arch = merged.get("architecture")
    if isinstance(arch, Mapping):  # nnU-Net ≥ 2.4
        kwargs = arch.get("arch_kwargs") if isinstance(arch.get("arch_kwargs"), Mapping) else {}
        class_name = arch.get("network_class_name")
        kernels, strides = kwargs.get("kernel_sizes"), kwargs.get("strides")
        convs = kwargs.get("n_conv_per_stage") or kwargs.get("n_blocks_per_stage")
        conv_op, features = kwargs.get("conv_op", ""), kwargs.get("features_per_stage")
        decoder = kwargs.get("n_conv_per_stage_decoder")
    else:  # nnU-Net 2.0 to 2.3
        class_name = merged.get("UNet_class_name")
        kernels, strides = merged.get("conv_kernel_sizes"), merged.get("pool_op_kernel_sizes")
        convs, conv_op = merged.get("n_conv_per_stage_encoder"), ""
        features, decoder = None, merged.get("n_conv_per_stage_decoder")
    if not (isinstance(class_name, str) and kernels and strides and convs):
        raise WeightsError(
            f"{source}: the nnU-Net plans do not describe the network of configuration "
            f"{configuration!r} (expected architecture.network_class_name and arch_kwargs "
            "kernel_sizes, strides, n_conv_per_stage or n_blocks_per_stage). How to fix: use "
            "the plans.json "
            "nnU-Net v2 wrote with this checkpoint"
        )
    if not isinstance(convs, list | tuple):
        convs = [convs] * len(kernels)
    if isinstance(decoder, int):
        decoder = [decoder] * (len(kernels) - 1)

    def per_axis(value: Any) -> list[int]:
        return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)] * 3

    return PlannedNetwork(
        source=str(source),
        configuration=configuration,
        class_name=class_name.rsplit(".", 1)[-1],
        conv_op=str(conv_op or ""),
        kernel_sizes=[per_axis(k) for k in kernels],
        strides=[per_axis(s) for s in strides],
        convs_per_stage=[int(c) for c in convs],
        features=[int(f) for f in features] if isinstance(features, list | tuple) else [],
        decoder_convs=[int(c) for c in decoder] if isinstance(decoder, list | tuple) else [],
    )


def describe_network(net: PlannedNetwork) -> str:
    """One line: class, stages, kernels, strides and convolutions per stage."""
    kernels = {"×".join(map(str, k)) for k in net.kernel_sizes}
    strides = ", ".join(
        str(s[0]) if len(set(s)) == 1 else "×".join(map(str, s)) for s in net.strides
    )
    if net.class_name == "ResidualEncoderUNet":
        per_stage = f"{', '.join(map(str, net.convs_per_stage))} residual blocks per stage"
    else:
        per_stage = f"{'/'.join(map(str, sorted(set(net.convs_per_stage))))} convolutions per stage"
    return (
        f"{net.class_name}, {len(net.kernel_sizes)} stages, "
        f"{'/'.join(sorted(kernels))} kernels, strides {strides}; {per_stage}"
    )


def differences(net: PlannedNetwork) -> list[str]:
    """How ``net`` differs from the medtl network of its class (empty: medtl builds it).

    medtl builds nnU-Net's ``PlainConvUNet`` (``plainconvunet``) and the
    ``ResidualEncoderUNet`` of the ResEnc presets (``resencunet``), 3-D, with 3×3×3
    kernels and stride 1 in the first stage and 2 along every axis after.
    """
    name = MEDTL_NAMES.get(net.class_name)
    if name is None:
        return [
            f"its network is a {net.class_name}; medtl builds nnU-Net's PlainConvUNet "
            "(model.name: plainconvunet) and ResidualEncoderUNet (resencunet) only"
        ]
    out = []
    if "2d" in net.conv_op.lower() or any(len(k) != 3 for k in net.kernel_sizes):
        out.append("it is a 2-D network; medtl's networks are 3-D")
    elif any(k != [3, 3, 3] for k in net.kernel_sizes):
        out.append(f"its kernel sizes are {net.kernel_sizes}; {name} uses 3×3×3 in every stage")
    expected = [[1, 1, 1]] + [[2, 2, 2]] * (len(net.strides) - 1)
    if net.strides != expected:
        out.append(
            f"its strides are {net.strides}; {name} uses 1 in the first stage and 2 along "
            "every axis after (strides leave no trace in the weights' shapes, so these would "
            "load and then compute something else)"
        )
    n = len(net.convs_per_stage)
    if name == "plainconvunet":
        encoder, what, decoder = [PLAIN_CONVS] * n, "convolutions", PLAIN_DECODER_CONVS
    else:
        encoder, what, decoder = list(resenc_blocks(n)), "residual blocks", RESENC_DECODER_CONVS
    if net.convs_per_stage != encoder:
        out.append(f"its encoder has {net.convs_per_stage} {what} per stage; {name} has {encoder}")
    if net.decoder_convs and any(c != decoder for c in net.decoder_convs):
        out.append(
            f"its decoder has {net.decoder_convs} convolutions per stage; {name} has {decoder}"
        )
    return out


def medtl_settings(net: PlannedNetwork) -> dict[str, Any]:
    """The medtl ``model`` settings that build ``net`` (check :func:`differences` first).

    Example:
        >>> net = PlannedNetwork("plans.json", "3d_fullres", "ResidualEncoderUNet", "",
        ...                      [[3, 3, 3]] * 2, [[1, 1, 1], [2, 2, 2]], [1, 3], [32, 64])
        >>> medtl_settings(net)
        {'name': 'resencunet', 'features': [32, 64]}
    """
    settings: dict[str, Any] = {"name": MEDTL_NAMES.get(net.class_name, net.class_name)}
    if net.features:
        settings["features"] = list(net.features)
    return settings


def build_planned(net: PlannedNetwork, in_channels: int, num_classes: int) -> Any:
    """The medtl network the plans describe, with a head for ``num_classes``.

    Raises:
        WeightsError: medtl does not build that network (:func:`differences`), or the
            plans do not give its stage widths.
    """
    from medtl.config import ModelConfig
    from medtl.models.networks import build_network

    problems = differences(net)
    if problems or not net.features:
        why = "; ".join(problems) or "the plans give no features_per_stage"
        raise WeightsError(
            f"{net.source}: cannot build the network of configuration {net.configuration!r} "
            f"({describe_network(net)}): {why}. How to fix: use plans of a 3-D PlainConvUNet "
            "or ResidualEncoderUNet written by nnU-Net v2 ≥ 2.4"
        )
    settings = medtl_settings(net)
    cfg = ModelConfig(name=settings["name"], features=tuple(settings["features"]))
    return build_network(cfg, in_channels, num_classes)


def plans_preprocessing(
    checkpoint: Mapping[str, Any], path: Path
) -> tuple[str, str, Any, list[str]]:
    """How the checkpoint's configuration preprocessed its data, from its plans.

    Returns:
        Where the plans were read, the configuration's name, its ``spacing`` as written
        (None when absent) and its ``normalization_schemes`` (one per channel).

    Raises:
        WeightsFileError: no plans in the file or beside it.
        WeightsError: the configuration cannot be told, or the plans lack it.
    """
    plans, source = find_plans(checkpoint, path)
    name = configuration_of(checkpoint, path, plans)
    merged = _merged(plans["configurations"], name)
    schemes = merged.get("normalization_schemes")
    schemes = [str(x) for x in schemes] if isinstance(schemes, list | tuple) else []
    return source, name, merged.get("spacing"), schemes


def configuration_of(checkpoint: Mapping[str, Any], path: Path, plans: Mapping) -> str:
    """The nnU-Net configuration a checkpoint was trained with, one its plans hold.

    Raises:
        WeightsError: neither the file nor its folder names one the plans hold.
    """
    name = _configuration_name(checkpoint, path, plans)
    configs = plans.get("configurations")
    if name is None or not isinstance(configs, Mapping) or name not in configs:
        have = ", ".join(map(str, configs)) if isinstance(configs, Mapping) else "none"
        raise WeightsError(
            f"{path}: cannot tell which nnU-Net configuration this checkpoint is (found "
            f"{name!r}: the file has no init_args['configuration'] its plans hold, which "
            f"are {have}). How to fix: keep the checkpoint in nnU-Net's "
            "<Trainer>__<Plans>__<configuration>/fold_N/ folder, or use the "
            "checkpoint_final.pth nnU-Net v2 wrote"
        )
    return name


def check_plans(checkpoint: Mapping[str, Any], path: Path) -> str:
    """Refuse an nnU-Net checkpoint whose network medtl does not build.

    Args:
        checkpoint: the loaded ``checkpoint_final.pth`` (a dict).
        path: its file, to find ``plans.json`` beside it and to name it.

    Returns:
        A note for the load report: where the plans came from, what they describe and
        the medtl model settings that build it.

    Raises:
        WeightsFileError: no plans in the file or beside it.
        WeightsError: the plans describe another network (listing how it differs).
    """
    plans, source = find_plans(checkpoint, path)
    name = configuration_of(checkpoint, path, plans)
    net = network_of(plans, name, source)
    problems = differences(net)
    if problems:
        raise WeightsError(
            f"{path}: the nnU-Net plans ({source}) describe a network medtl does not build "
            f"({describe_network(net)}): " + "; ".join(problems) + ". How to fix: use an "
            "nnU-Net checkpoint of a 3-D PlainConvUNet (default plans) or ResidualEncoderUNet "
            "(ResEnc M/L/XL presets) with 3×3×3 kernels and isotropic stride-2 downsampling "
            "(3d_fullres on isotropic data), or train without these weights"
        )
    settings = ", ".join(f"model.{k}: {v}" for k, v in medtl_settings(net).items())
    return (
        f"nnU-Net plans ({source}), configuration {name}: {describe_network(net)}; "
        f"medtl builds it with {settings}"
    )
