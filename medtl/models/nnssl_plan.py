"""The network an nnssl (OpenMind) checkpoint was pretrained with, from its adaptation plan.

nnssl, the nnU-Net group's self-supervised pretraining framework, publishes its
checkpoints (e.g. the OpenMind ResEnc-L MAE weights) as ``checkpoint_final.pth`` holding
``network_weights``, ``init_args``, ``trainer_name`` and an ``nnssl_adaptation_plan``,
with the same plan beside it as ``adaptation_plan.json``. The plan says what a
downstream segmentation network needs: the architecture (``architecture_plans``:
``arch_class_name`` and, for nnssl's dynamic networks, ``arch_kwargs``), the pretraining
plan (spacing, patch size, normalisation of its one configuration), the input channels,
the patch recommended downstream, and where the encoder, the stem, the input projection
and a learned positional embedding live in the state dict.

:func:`find_adaptation_plan` finds it (the file, else the JSON beside it),
:func:`read_adaptation_plan` turns it into an :class:`AdaptationPlan`, and
:func:`planned_network` says which medtl network rebuilds its encoder, refusing one
medtl does not build. ``ResEncL`` (and ``NoSkipResEncL``, whose encoder is the same) is
nnssl's ResEnc-L: nnU-Net's ``ResidualEncoderUNet`` with 6 stages of widths 32, 64, 128,
256, 320, 320 and 1, 3, 4, 6, 6, 6 residual blocks (nnssl's
``architectures/architecture_registry.py``), medtl's ``resencunet``.

``PrimusS``, ``PrimusB``, ``PrimusM`` and ``PrimusL`` are the nnU-Net group's transformer
(nnssl's ``get_network_by_name``: DNA's presets with an 8 × 8 × 8 patch embedding, built
for the pretraining patch), medtl's ``primus`` (:class:`PlannedPrimus`); its learned
positional embedding is sized to the pretraining patch's token grid, which
:attr:`PlannedPrimus.grid` gives, and is interpolated to the training patch's.

Example:
    >>> plan = read_adaptation_plan(RESENC_L_EXAMPLE, "adaptation_plan.json")
    >>> plan.architecture, plan.recommended_patch_size, plan.pretrain_spacing
    ('ResEncL', (160, 160, 160), (1.0, 1.0, 1.0))
    >>> network_settings(planned_network(plan))
    {'name': 'resencunet', 'features': [32, 64, 128, 256, 320, 320]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtl.models.nnunet_plans import PlannedNetwork, describe_network, differences
from medtl.models.primus_sizes import PRIMUS_PRESETS
from medtl.models.safe_read import WeightsError, WeightsFileError, json_beside

#: The file nnssl writes beside ``checkpoint_final.pth``.
PLAN_FILE = "adaptation_plan.json"
#: The checkpoint entry that holds the plan.
PLAN_KEY = "nnssl_adaptation_plan"

#: nnssl's ResEnc-L (``get_res_enc_l`` in nnssl's architecture registry).
RESENC_L_FEATURES = (32, 64, 128, 256, 320, 320)
RESENC_L_BLOCKS = (1, 3, 4, 6, 6, 6)
#: Registry presets whose encoder is ResEnc-L. NoSkipResEncL drops the decoder's skip
#: connections; its encoder (what medtl loads) is ResEnc-L's, key for key.
RESENC_PRESETS = ("ResEncL", "NoSkipResEncL")
#: nnssl's Primus presets (architecture_registry.SUPPORTED_ARCHITECTURES) → DNA's size.
PRIMUS_NAMES = {f"Primus{size}": size for size in PRIMUS_PRESETS}
#: The patch embedding nnssl builds every Primus with (get_network_by_name).
NNSSL_PATCH_EMBED = 8
#: Dynamic classes whose ``arch_kwargs`` the plan spells out.
DYNAMIC_CLASSES = ("ResidualEncoderUNet", "PlainConvUNet")

_PLAN_FIX = (
    f"keep the {PLAN_FILE} nnssl published with the checkpoint in the checkpoint's folder, "
    "or use the checkpoint_final.pth that holds its nnssl_adaptation_plan"
)


@dataclass(frozen=True)
class AdaptationPlan:
    """An nnssl adaptation plan, typed.

    Attributes:
        source: where it was read (the checkpoint, or the ``adaptation_plan.json``).
        architecture: ``arch_class_name``, e.g. ``ResEncL``, ``PrimusM``,
            ``ResidualEncoderUNet``.
        arch_kwargs: the dynamic network's keyword arguments (None for a preset).
        configuration: the pretraining configuration's name, e.g. ``onemmiso``.
        pretrain_patch_size: the patch the network saw in pretraining.
        pretrain_spacing: the voxel spacing it was pretrained at (None: not resampled).
        spacing_style: ``onemmiso``, ``median`` or ``noresample``.
        normalization: the pretraining's normalisation scheme per channel.
        input_channels: ``pretrain_num_input_channels``.
        recommended_patch_size: ``recommended_downstream_patchsize``.
        key_to_encoder: state-dict prefix of the encoder's stages.
        key_to_stem: state-dict prefix of the stem.
        keys_to_in_proj: the input projection (the first convolution; with its aliases).
        key_to_lpe: the learned positional embedding (transformers), or None.
        trainer: the nnssl trainer that wrote it, when said.
    """

    source: str
    architecture: str
    arch_kwargs: Mapping[str, Any] | None
    configuration: str
    pretrain_patch_size: tuple[int, ...] | None
    pretrain_spacing: tuple[float, ...] | None
    spacing_style: str
    normalization: tuple[str, ...]
    input_channels: int
    recommended_patch_size: tuple[int, ...]
    key_to_encoder: str
    key_to_stem: str
    keys_to_in_proj: tuple[str, ...]
    key_to_lpe: str | None = None
    trainer: str = ""


@dataclass(frozen=True)
class PlannedPrimus:
    """The Primus an nnssl plan names, as medtl builds it.

    Attributes:
        source: where the plan was read.
        class_name: nnssl's name, e.g. ``PrimusM``.
        preset: DNA's size (``S``, ``B``, ``M``, ``L``).
        patch_embed: voxels per token along each axis.
        pretrain_patch_size: the patch it was pretrained on (None: the plan does not say).
    """

    source: str
    class_name: str
    preset: str
    patch_embed: int = NNSSL_PATCH_EMBED
    pretrain_patch_size: tuple[int, ...] | None = None

    @property
    def grid(self) -> tuple[int, ...] | None:
        """The pretraining patch's token grid (the positional embedding's shape)."""
        if not self.pretrain_patch_size:
            return None
        return tuple(p // self.patch_embed for p in self.pretrain_patch_size)

    def describe(self) -> str:
        """e.g. ``PrimusM (embed_dim 864, 16 blocks, 12 heads, patch embedding 8)``."""
        embed_dim, depth, heads = PRIMUS_PRESETS[self.preset]
        return (
            f"{self.class_name} (embed_dim {embed_dim}, {depth} blocks, {heads} heads, "
            f"patch embedding {self.patch_embed})"
        )


def find_adaptation_plan(checkpoint: Mapping[str, Any], path: Path) -> tuple[Mapping, str]:
    """The plan of an nnssl checkpoint: in the file, else ``adaptation_plan.json`` beside it.

    Raises:
        WeightsFileError: neither holds one, or the JSON cannot be read.
    """
    plan = checkpoint.get(PLAN_KEY)
    if isinstance(plan, Mapping):
        return plan, f"the checkpoint's {PLAN_KEY}"
    candidate = path.parent / PLAN_FILE
    found = json_beside(candidate, _PLAN_FIX)
    if found is not None:
        return found, str(candidate)
    raise WeightsFileError(
        path,
        f"is an nnssl checkpoint without its adaptation plan: neither the file ({PLAN_KEY}) "
        f"nor a {PLAN_FILE} beside it says which network it was pretrained with and where "
        "its encoder and stem are",
        _PLAN_FIX,
    )


def _ints(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        return tuple(int(v) for v in value)
    return None


def _floats(value: Any) -> tuple[float, ...] | None:
    if hasattr(value, "tolist"):  # a tensor, where nnssl converted a numpy array
        value = value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        return tuple(float(v) for v in value)
    return None


def _configuration(raw: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The pretraining plan's one configuration (nnssl keeps only the one it used)."""
    pretrain = raw.get("pretrain_plan")
    configs = pretrain.get("configurations") if isinstance(pretrain, Mapping) else None
    if isinstance(configs, Mapping) and configs:
        name, config = next(iter(configs.items()))
        if isinstance(config, Mapping):
            return str(name), config
    return "", {}


def read_adaptation_plan(raw: Mapping[str, Any], source: str) -> AdaptationPlan:
    """The typed form of a serialised nnssl ``AdaptationPlan``.

    Raises:
        WeightsError: a field downstream loading needs is missing (naming it).
    """
    arch = raw.get("architecture_plans")
    arch = arch if isinstance(arch, Mapping) else {}
    need = {
        "architecture_plans.arch_class_name": arch.get("arch_class_name"),
        "key_to_encoder": raw.get("key_to_encoder"),
        "key_to_stem": raw.get("key_to_stem"),
        "keys_to_in_proj": raw.get("keys_to_in_proj"),
        "pretrain_num_input_channels": raw.get("pretrain_num_input_channels"),
    }
    absent = [name for name, value in need.items() if value in (None, "", [], ())]
    if absent:
        raise WeightsError(
            f"{source}: the nnssl adaptation plan lacks {', '.join(absent)} (expected the "
            "fields nnssl's AdaptationPlan.serialize writes: architecture_plans, "
            "pretrain_plan, pretrain_num_input_channels, recommended_downstream_patchsize, "
            f"key_to_encoder, key_to_stem, keys_to_in_proj, key_to_lpe). How to fix: {_PLAN_FIX}"
        )
    name, config = _configuration(raw)
    proj = raw["keys_to_in_proj"]
    kwargs = arch.get("arch_kwargs")
    norm = config.get("normalization_schemes")
    return AdaptationPlan(
        source=source,
        architecture=str(arch["arch_class_name"]),
        arch_kwargs=kwargs if isinstance(kwargs, Mapping) else None,
        configuration=name,
        pretrain_patch_size=_ints(config.get("patch_size")),
        pretrain_spacing=_floats(config.get("spacing")),
        spacing_style=str(config.get("spacing_style") or ""),
        normalization=tuple(str(n) for n in norm) if isinstance(norm, Sequence) else (),
        input_channels=int(raw["pretrain_num_input_channels"]),
        recommended_patch_size=_ints(raw.get("recommended_downstream_patchsize")) or (),
        key_to_encoder=str(raw["key_to_encoder"]),
        key_to_stem=str(raw["key_to_stem"]),
        keys_to_in_proj=(proj,) if isinstance(proj, str) else tuple(str(k) for k in proj),
        key_to_lpe=str(raw["key_to_lpe"]) if raw.get("key_to_lpe") else None,
        trainer=str(raw.get("trainer_name") or ""),
    )


def _per_stage(value: Any, n: int) -> list[int]:
    """A per-stage count that nnssl may write as one number."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [int(v) for v in value]
    return [int(value)] * n if value is not None else []


def _dynamic_network(plan: AdaptationPlan) -> PlannedNetwork:
    """The ResidualEncoderUNet or PlainConvUNet that ``arch_kwargs`` spell out."""
    kw = plan.arch_kwargs or {}
    n = int(kw.get("n_stages") or len(kw.get("features_per_stage") or []))
    kernels, strides = kw.get("kernel_sizes"), kw.get("strides")
    if not (n and kernels and strides and kw.get("features_per_stage")):
        raise WeightsError(
            f"{plan.source}: the nnssl plan's {plan.architecture} has no arch_kwargs "
            "(n_stages, features_per_stage, kernel_sizes, strides) to rebuild it from. How to "
            f"fix: {_PLAN_FIX}"
        )
    blocks = kw.get("n_blocks_per_stage") or kw.get("n_conv_per_stage")
    norm = str(kw.get("norm_op") or "")
    if norm and "instancenorm" not in norm.lower():
        raise WeightsError(
            f"{plan.source}: the nnssl plan's {plan.architecture} normalises with {norm}; "
            "medtl's nnU-Net networks use affine InstanceNorm3d. How to fix: use a checkpoint "
            "pretrained with nnU-Net's default normalisation"
        )
    return PlannedNetwork(
        source=plan.source,
        configuration=plan.configuration or "nnssl",
        class_name=plan.architecture,
        conv_op=str(kw.get("conv_op") or ""),
        kernel_sizes=[[int(k)] * 3 if isinstance(k, int) else [int(v) for v in k] for k in kernels],
        strides=[[int(s)] * 3 if isinstance(s, int) else [int(v) for v in s] for s in strides],
        convs_per_stage=_per_stage(blocks, n),
        features=[int(f) for f in kw["features_per_stage"]],
    )


def planned_network(plan: AdaptationPlan) -> PlannedNetwork | PlannedPrimus:
    """The encoder network the plan describes, as medtl builds it.

    Only the encoder is checked: nnssl's decoder reconstructs images and is never loaded,
    so its layout does not matter.

    Raises:
        WeightsError: another preset, or a dynamic network medtl does not build (naming
            how it differs), each with the fix.
    """
    name = plan.architecture
    if name in PRIMUS_NAMES:
        return PlannedPrimus(
            source=plan.source,
            class_name=name,
            preset=PRIMUS_NAMES[name],
            pretrain_patch_size=plan.pretrain_patch_size,
        )
    if name in RESENC_PRESETS:
        n = len(RESENC_L_FEATURES)
        return PlannedNetwork(
            source=plan.source,
            configuration=plan.configuration or "nnssl",
            class_name="ResidualEncoderUNet",
            conv_op="torch.nn.modules.conv.Conv3d",
            kernel_sizes=[[3, 3, 3]] * n,
            strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            convs_per_stage=list(RESENC_L_BLOCKS),
            features=list(RESENC_L_FEATURES),
        )
    if name.rsplit(".", 1)[-1] in DYNAMIC_CLASSES:
        net = _dynamic_network(plan)
        net = PlannedNetwork(**{**net.__dict__, "class_name": name.rsplit(".", 1)[-1]})
        problems = differences(net)
        if problems:
            raise WeightsError(
                f"{plan.source}: the nnssl plan describes a network medtl does not build "
                f"({describe_network(net)}): " + "; ".join(problems) + ". How to fix: use "
                "an nnssl checkpoint of a 3-D ResEnc (ResEncL) or of a ResidualEncoderUNet / "
                "PlainConvUNet with 3×3×3 kernels and stride 1, then 2 along every axis"
            )
        return net
    raise WeightsError(
        f"{plan.source}: the nnssl plan's architecture {name!r} is not one medtl builds "
        f"(known: {', '.join(RESENC_PRESETS + DYNAMIC_CLASSES + tuple(PRIMUS_NAMES))}). How to "
        "fix: use an nnssl ResEnc-L checkpoint with model.name: resencunet, or a Primus one "
        "with model.name: primus"
    )


def network_settings(net: PlannedNetwork | PlannedPrimus) -> dict[str, Any]:
    """The medtl ``model`` settings that build ``net``'s encoder."""
    if isinstance(net, PlannedPrimus):
        return {"name": "primus", "preset": net.preset, "patch_embed": net.patch_embed}
    name = "resencunet" if net.class_name == "ResidualEncoderUNet" else "plainconvunet"
    return {"name": name, "features": list(net.features)}


def network_family(plan: AdaptationPlan, net: PlannedNetwork | PlannedPrimus) -> str:
    """What the checkpoint holds, for the messages: ``nnssl PrimusM (Primus, preset M)``."""
    if isinstance(net, PlannedPrimus):
        return f"nnssl {plan.architecture} (Primus, preset {net.preset})"
    return f"nnssl {plan.architecture} ({net.class_name}, {len(net.features)} stages)"


def describe_plan(plan: AdaptationPlan, net: PlannedNetwork | PlannedPrimus) -> str:
    """One note for the load report: what was pretrained how, and what medtl builds."""
    spacing = list(plan.pretrain_spacing) if plan.pretrain_spacing else "not resampled"
    settings = network_settings(net)
    parts = [
        f"nnssl adaptation plan ({plan.source}): {plan.architecture}"
        + (f" from trainer {plan.trainer}" if plan.trainer else ""),
        net.describe() if isinstance(net, PlannedPrimus) else describe_network(net),
        f"pretrained on {plan.input_channels} input channel(s)",
        f"patch {list(plan.pretrain_patch_size or ())}, spacing {spacing}"
        + (f" ({plan.spacing_style})" if plan.spacing_style else ""),
    ]
    if plan.normalization:
        parts.append(f"normalisation {', '.join(plan.normalization)}")
    if plan.recommended_patch_size:
        parts.append(f"recommended downstream patch {list(plan.recommended_patch_size)}")
    built = ", ".join(f"model.{k}: {v}" for k, v in settings.items())
    return "; ".join(parts) + f"; medtl builds its encoder with {built}"


#: A plan as nnssl's BaseMAETrainer serialises it for ResEnc-L (for the examples).
RESENC_L_EXAMPLE: dict[str, Any] = {
    "architecture_plans": {
        "arch_class_name": "ResEncL",
        "arch_kwargs": None,
        "arch_kwargs_requiring_import": None,
    },
    "pretrain_plan": {
        "configurations": {
            "onemmiso": {
                "spacing_style": "onemmiso",
                "normalization_schemes": ["ZScoreNormalization"],
                "spacing": [1, 1, 1],
                "patch_size": [160, 160, 160],
            }
        }
    },
    "pretrain_num_input_channels": 1,
    "recommended_downstream_patchsize": [160, 160, 160],
    "key_to_encoder": "encoder.stages",
    "key_to_stem": "encoder.stem",
    "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
    "key_to_lpe": None,
}
