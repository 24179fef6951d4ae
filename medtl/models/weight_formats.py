"""The published weight layouts, renamed to medtl's parameter names.

One function per format family of :data:`medtl.models.weights.FORMATS` that needs
renaming (Swin UNETR self-supervised, MedicalNet, nnU-Net, nnssl, MONAI bundle), and the
helpers they share: finding the state dict in a loaded file (:func:`unwrap`), removing
wrapper prefixes (:func:`strip_module`, :func:`align_prefix`), telling the layouts apart
(:func:`layout_of`).

Example:
    >>> notes = []
    >>> list(from_swin_ssl({"module.layers1.0.blocks.0.mlp.fc1.weight": 0}, notes))
    ['swinViT.layers1.0.blocks.0.mlp.linear1.weight']
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

from medtl.models.nnssl_plan import (
    AdaptationPlan,
    PlannedPrimus,
    describe_plan,
    find_adaptation_plan,
    planned_network,
    read_adaptation_plan,
)
from medtl.models.nnunet_plans import PlannedNetwork, check_plans
from medtl.models.safe_read import WeightsError, safe_load

#: Prefixes that wrap a whole state dict (torch.compile, bundle and Lightning wrappers).
_WRAPPER_PREFIXES = ("_orig_mod.", "model.", "network.", "net.")

_BUNDLE_CONFIGS = ("inference.json", "train.json", "inference.yaml", "train.yaml")

_SWIN_TOP = re.compile(r"^(patch_embed|layers\d+|norm)\.")
_RESNET_TOP = re.compile(r"^(conv1|bn1|layer[1-4])\.")


def tensor_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """``obj`` itself when it maps names to tensors (allowing an empty dict), else None."""
    if isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        return dict(obj)
    return None


def unwrap(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state dict in a plain, ``{"state_dict"}``, ``{"model"}`` or ``{"network"}`` file.

    An empty one (``{}`` or ``{"state_dict": {}}``) is returned as ``{}``, for
    :func:`medtl.models.weights.read_weights` to refuse by name; None when there is no
    state dict at all.
    """
    direct = tensor_dict(obj)
    if direct:
        return direct
    empty = direct
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "network"):
            inner = tensor_dict(obj.get(key))
            if inner:
                return inner
            if inner is not None and key in obj:
                empty = inner
    return empty


def describe_object(obj: Any) -> str:
    """What a loaded object is, for the messages: its type, or a dict's first keys."""
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:6]]
        more = ", …" if len(obj) > 6 else ""
        return f"a dict with keys [{', '.join(keys)}{more}]"
    return f"a {type(obj).__name__}"


def tensors_at(
    obj: Mapping[str, Any], key: str, source: Path, where: str, fix: str
) -> dict[str, torch.Tensor]:
    """``obj[key]`` as a state dict.

    Raises:
        WeightsError: it is not one; the message says ``where`` it was looked for (e.g.
            "this medtl checkpoint's 'state_dict'"), what was found and ``fix``.
    """
    state = tensor_dict(obj.get(key))
    if state is None:
        raise WeightsError(
            f"{source}: {where} is not a state dict (got {describe_object(obj.get(key))}). "
            f"How to fix: {fix}"
        )
    return state


def strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DataParallel's ``module.`` from every key that has it."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def is_swin_ssl(keys: Collection[str]) -> bool:
    return any(
        k.startswith(("patch_embed.", "swin_vit.", "encoder.patch_embed."))
        or re.match(r"^(encoder\.)?layers\d+\.0\.(0\.)?blocks\.", k)
        for k in keys
    )


def is_medicalnet(keys: Collection[str]) -> bool:
    return "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys)


def layout_of(state: Mapping[str, torch.Tensor]) -> str | None:
    keys = set(strip_module(state))
    if is_swin_ssl(keys):
        return "swinunetr_ssl"
    if is_medicalnet(keys):
        return "medicalnet"
    return None


def _swin_name(key: str) -> str | None:
    """A Swin UNETR self-supervised key under MONAI ``SwinUNETR``'s name (None: not Swin)."""
    if key.startswith("swin_vit."):
        key = "swinViT." + key.removeprefix("swin_vit.")
    elif key.startswith("encoder.") and _SWIN_TOP.match(key.removeprefix("encoder.")):
        # Disruptive-autoencoder layout (MONAI's filter_swinunetr): encoder.layers1.0.0.blocks
        rest = key.removeprefix("encoder.")
        rest = re.sub(r"^(layers\d+\.0)\.0\.", r"\1.", rest)
        key = "swinViT." + rest
    elif _SWIN_TOP.match(key):
        key = "swinViT." + key
    elif not key.startswith("swinViT."):
        return None
    # the pretraining code's MLP (timm naming) is MONAI's MLPBlock
    return key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")


def from_swin_ssl(state: Mapping[str, torch.Tensor], notes: list[str]) -> dict:
    out: dict[str, torch.Tensor] = {}
    renamed = 0
    for key, value in strip_module(state).items():
        new = _swin_name(key)
        renamed += new is not None and new != key
        out[new or key] = value
    notes.append(
        f"renamed {renamed} keys from the self-supervised layout to MONAI SwinUNETR's "
        "(module./swin_vit. → swinViT., mlp.fc1/fc2 → mlp.linear1/linear2)"
    )
    return out


def from_medicalnet(state: Mapping[str, torch.Tensor], notes: list[str]) -> dict:
    out = {
        ("encoder." + k if _RESNET_TOP.match(k) else k): v for k, v in strip_module(state).items()
    }
    notes.append(
        "MedicalNet trained layer3/layer4 with stride 1 and dilation 2/4; MONAI's FlexibleUNet "
        "ResNet encoder uses stride 2 without dilation there. The weights load by name and "
        "shape (stem: 7×7×7 conv, stride 2, then max-pool, as in MedicalNet), but those two "
        "stages now see a coarser grid than during pretraining"
    )
    return out


def drop_dna_aliases(state: Mapping[str, torch.Tensor], notes: list[str]) -> dict:
    """``state`` without wrappers and without dynamic-network-architectures' alias keys.

    DNA registers each conv block's conv and norm again under ``all_modules``, and the
    encoder again under ``decoder.encoder``: the same tensors under second names. The state
    keeps the first names, which the network medtl builds with DNA has too.
    """
    out = {k.removeprefix("_orig_mod."): v for k, v in strip_module(state).items()}
    aliases = [k for k in out if ".all_modules." in k or k.startswith("decoder.encoder.")]
    for key in aliases:
        del out[key]
    if aliases:
        notes.append(
            f"ignored {len(aliases)} alias keys (all_modules.* and decoder.encoder.*): "
            "dynamic-network-architectures names each of these tensors a second time"
        )
    return out


def from_nnunet(obj: Mapping[str, Any], path: Path, notes: list[str]) -> dict:
    state = tensors_at(
        obj,
        "network_weights",
        path,
        "'network_weights' of this nnU-Net checkpoint",
        "use the checkpoint_final.pth or checkpoint_best.pth that nnU-Net v2 wrote",
    )
    state = drop_dna_aliases(state, notes)
    trainer = obj.get("trainer_name")
    init_args = obj.get("init_args")
    config = init_args.get("configuration") if isinstance(init_args, Mapping) else None
    if isinstance(trainer, str) or isinstance(config, str):
        notes.append(f"nnU-Net trainer {trainer!s}, configuration {config!s}")
    notes.append(check_plans(obj, path))
    return state


def align_prefix(
    state: dict[str, torch.Tensor], model_keys: Collection[str], notes: list[str]
) -> dict[str, torch.Tensor]:
    """Remove whole-dict wrapper prefixes (``network.``, ``model.``…) when that matches better.

    A prefix shared by every key is stripped only if the stripped names match at least
    as many of the model's names (a MONAI ``UNet`` legitimately names all keys ``model.…``).
    """
    best, best_hits, stripped, best_stripped = state, len(state.keys() & model_keys), [], []
    current = state
    while current:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in current)), None)
        if prefix is None:
            break
        current = {k.removeprefix(prefix): v for k, v in current.items()}
        stripped.append(prefix)
        hits = len(current.keys() & model_keys)
        if hits >= best_hits:
            best, best_hits, best_stripped = current, hits, list(stripped)
    if best_stripped:
        notes.append(f"removed the key prefix {''.join(best_stripped)!r} from every key")
    return best


def read_bundle(folder: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``models/model.pt`` of a MONAI bundle. Its configs are only looked for, never parsed."""
    configs = folder / "configs"
    found = [name for name in _BUNDLE_CONFIGS if (configs / name).is_file()]
    weights = folder / "models" / "model.pt"
    if not found or not weights.is_file():
        present = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:10]
        hint = (
            " (models/model.ts is TorchScript, which medtl does not load: export the state "
            "dict to models/model.pt)"
            if (folder / "models" / "model.ts").is_file()
            else ""
        )
        raise WeightsError(
            f"{folder}: expected a MONAI bundle folder with configs/inference.json or "
            f"configs/train.json and models/model.pt; found {present}{hint}. How to fix: "
            "point to the bundle's root folder, or to a weights file with its own format"
        )
    obj = safe_load(weights)
    state = unwrap(obj)
    if state is None:
        raise WeightsError(
            f"{weights}: expected a state dict in the bundle's models/model.pt, got "
            f"{describe_object(obj)}. How to fix: re-export the bundle's weights as a state dict"
        )
    notes = [f"MONAI bundle: weights from models/model.pt (configs seen: {', '.join(found)})"]
    return state, notes


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _check_pos_embed(
    state: Mapping[str, torch.Tensor], plan: AdaptationPlan, net: PlannedPrimus, path: Path
) -> None:
    """Refuse a Primus whose positional embedding does not match its pretraining patch."""
    key = plan.key_to_lpe or "eva.pos_embed"
    pos = state.get(key)
    grid = net.grid
    tokens = None if grid is None else int(torch.Size(grid).numel())
    if pos is None or pos.dim() != 3 or tokens is None or pos.shape[1] != tokens:
        found = "no such tensor" if pos is None else f"shape {list(pos.shape)}"
        raise WeightsError(
            f"{path}: the nnssl plan's {plan.architecture} was pretrained on patches "
            f"{list(plan.pretrain_patch_size or [])} (a token grid {list(grid or [])} with "
            f"patch embedding {net.patch_embed}), so its positional embedding {key} should "
            f"have {tokens} tokens; found {found}. How to fix: use the checkpoint_final.pth "
            "and adaptation_plan.json published together"
        )


def from_nnssl(
    obj: Mapping[str, Any], path: Path, notes: list[str]
) -> tuple[dict[str, torch.Tensor], AdaptationPlan, PlannedNetwork | PlannedPrimus]:
    """An nnssl checkpoint's tensors under medtl's names, with its plan and network.

    The plan (:mod:`medtl.models.nnssl_plan`) says where the stem and the encoder's stages
    are (``key_to_stem``, ``key_to_encoder``); they are renamed to ``encoder.stem`` and
    ``encoder.stages`` of medtl's ``resencunet`` (for nnssl's own ResEnc networks, the
    names are already these). A Primus's names (``down_projection``, ``eva``) are medtl's
    ``primus``'s as they are; its learned positional embedding (``key_to_lpe``) must
    have one vector per token of the pretraining patch. Everything else (the MAE decoder
    and its head) keeps its name, outside the encoder, and is never loaded.

    Raises:
        WeightsFileError: no plan in the file or beside it.
        WeightsError: a network medtl does not build, or a plan whose keys are not in the
            weights.
    """
    raw, where = find_adaptation_plan(obj, path)
    plan = read_adaptation_plan(raw, where)
    net = planned_network(plan)
    weights = strip_module(
        tensors_at(
            obj,
            "network_weights",
            path,
            "'network_weights' of this nnssl checkpoint",
            "use the checkpoint_final.pth nnssl wrote (with its nnssl_adaptation_plan)",
        )
    )
    wanted = {
        "keys_to_in_proj": f"{plan.keys_to_in_proj[0]}.weight",
        "key_to_stem": plan.key_to_stem,
        "key_to_encoder": plan.key_to_encoder,
    }
    absent = [
        f"{field} ({key})"
        for field, key in wanted.items()
        if not any(_under(k, key) for k in weights)
    ]
    if absent:
        raise WeightsError(
            f"{path}: the nnssl adaptation plan ({where}) names {', '.join(absent)}, which "
            "no tensor of network_weights has: the plan belongs to another checkpoint. How to "
            "fix: use the checkpoint_final.pth and adaptation_plan.json published together"
        )
    state = drop_dna_aliases(weights, notes)
    if isinstance(net, PlannedPrimus):
        _check_pos_embed(state, plan, net, path)
    elif net.class_name == "ResidualEncoderUNet":
        targets = {plan.key_to_stem: "encoder.stem", plan.key_to_encoder: "encoder.stages"}
        renamed = {}
        for key, value in state.items():
            prefix = next((p for p in targets if _under(key, p)), None)
            renamed[targets[prefix] + key[len(prefix) :] if prefix else key] = value
        moved = [p for p, t in targets.items() if p != t]
        if moved:
            notes.append(
                "renamed "
                + ", ".join(f"{p}.* → {targets[p]}.*" for p in moved)
                + " (the plan's key_to_stem / key_to_encoder)"
            )
        state = renamed
    notes.append(describe_plan(plan, net))
    return state, plan, net
