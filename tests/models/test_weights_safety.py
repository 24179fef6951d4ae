"""Reading weight files safely (medtl.models.safe_read.safe_load and its callers).

Every hostile or broken file is written here: a real pickle payload that runs a shell
command when unpickled, truncated and text checkpoints, a corrupt safetensors header.
"""

from __future__ import annotations

import ast
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch

from medtl.config import ModelConfig
from medtl.kernel.errors import InputError
from medtl.models.networks import build_network, get_architecture
from medtl.models.safe_read import WeightsError, WeightsFileError, pickle_globals, safe_load
from medtl.models.trained import load_model
from medtl.models.transfer import load_pretrained
from medtl.models.weights import read_weights

ROOT = Path(__file__).resolve().parents[2]
BASIC = ModelConfig(features=(4, 4, 8, 8, 16, 4))


class _Shell:
    """Unpickling this runs ``touch MARKER`` through ``os.system``: a real payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def _assert_refused_unsafe(message: str, name: str) -> None:
    assert "refused" in message and name in message, message
    assert "weights_only=False" not in message  # never advise unsafe loading
    assert "add_safe_globals" not in message and "safe_globals(" not in message
    assert "torch.save(model.state_dict(), path)" in message and ".safetensors" in message
    assert "How to fix" in message


def test_malicious_pickle_is_refused_naming_os_system(tmp_path: Path) -> None:
    # the payload is real: an ordinary unpickler runs the shell command
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Shell(proof)))
    assert proof.exists()

    marker = tmp_path / "pwned"
    torch_file = tmp_path / "model_swinvit.pt"
    state = {"module.patch_embed.proj.weight": torch.zeros(1)}
    torch.save({"state_dict": state, "x": _Shell(marker)}, torch_file)
    pickle_file = tmp_path / "weights.pkl"  # protocol 5: torch stops before naming the global
    pickle_file.write_bytes(pickle.dumps({"w": _Shell(marker)}, protocol=5))
    for path in (torch_file, pickle_file):
        with pytest.raises(WeightsFileError) as info:
            load_pretrained(build_network(BASIC, 1, 2), get_architecture("basicunet"), path)
        message = str(info.value)
        _assert_refused_unsafe(message, "os.system")
        assert str(path) in message
        assert isinstance(info.value, InputError) and info.value.path == str(path)
        assert info.value.__cause__ is None and info.value.__context__ is None
    assert not marker.exists()


def test_other_globals_are_named(tmp_path: Path) -> None:
    path = tmp_path / "eval.pt"
    torch.save({"x": _Eval()}, path)
    with pytest.raises(WeightsFileError) as info:
        safe_load(path)
    _assert_refused_unsafe(str(info.value), "builtins.eval")


def test_pickle_globals_reads_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    for protocol in (0, 2, 4, 5):
        names = pickle_globals(pickle.dumps([_Shell(marker), _Shell(marker)], protocol=protocol))
        assert set(names) <= {"posix.system", "nt.system"} and names, (protocol, names)
    assert not marker.exists()
    assert pickle_globals(pickle.dumps({"a": [1, 2.0, "x"]})) == []
    assert pickle_globals(b"not a pickle") == []


def test_truncated_text_and_empty_checkpoints(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"format": "medtl", "state_dict": {"a": torch.zeros(64)}}, good)
    data = good.read_bytes()
    cases = {
        "truncated.pt": (data[: len(data) // 2], r"truncated or corrupt: it starts like a PyTorch"),
        "text.pt": (b"epoch 3, loss 0.2\n", r"not a PyTorch .*holds text"),
        "lfs.pt": (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n", r"Git LFS"),
        "empty.pt": (b"", r"is empty \(0 bytes\)"),
        "pickle.pt": (pickle.dumps({"a": 1})[:-3], r"starts like a pickle"),
    }
    for name, (content, pattern) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(WeightsFileError, match=pattern) as info:
            safe_load(path, remake="rerun the job that writes it")
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "How to fix: " in message
        assert "weights_only=False" not in message


def test_corrupt_safetensors_header(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(WeightsFileError, match=r"weights.safetensors: is not a readable") as info:
        read_weights(path)
    assert "header is corrupt or the file is truncated" in str(info.value)
    assert "How to fix: download or copy the file again" in str(info.value)


@pytest.mark.parametrize("content", [{}, {"state_dict": {}}, {"format": "medtl", "state_dict": {}}])
def test_empty_state_dict(tmp_path: Path, content: dict) -> None:
    path = tmp_path / "empty_state.pt"
    torch.save(content, path)
    with pytest.raises(WeightsFileError, match=r"empty_state.pt: holds no tensors.*How to fix"):
        read_weights(path)


def test_missing_file_and_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(WeightsFileError, match=r"nope.pt: pretrained weights file not found"):
        read_weights(tmp_path / "nope.pt")
    with pytest.raises(WeightsFileError, match=r"its folder .*gone does not exist"):
        read_weights(tmp_path / "gone" / "w.pt")
    (tmp_path / "folder" / "models").mkdir(parents=True)
    with pytest.raises(WeightsError, match=r"folder: expected a MONAI bundle folder.*How to fix"):
        read_weights(tmp_path / "folder")


def test_predict_load_model_explains_a_broken_best_pt(tmp_path: Path) -> None:
    run = tmp_path / "results" / "train" / "finetune" / "fold0"
    run.mkdir(parents=True)
    best = run / "best.pt"
    for content, pattern in (
        (b"PK\x03\x04" + b"\0" * 60, "truncated or corrupt"),
        (b"hello\n", "not a PyTorch checkpoint"),
    ):
        best.write_bytes(content)
        with pytest.raises(InputError, match=pattern) as info:
            load_model(best, torch.device("cpu"))
        message = str(info.value)
        assert message.startswith(f"{best}: ")
        assert "rerun the training job that writes it" in message and "--forcerun" in message
    marker = tmp_path / "pwned"
    torch.save({"format": "medtl", "x": _Shell(marker)}, best)
    with pytest.raises(InputError) as info:
        load_model(best, torch.device("cpu"))
    _assert_refused_unsafe(str(info.value), "os.system")
    assert not marker.exists()
    torch.save({"format": "medtl", "state_dict": {}}, best)
    with pytest.raises(InputError, match=r"a medtl checkpoint without model, num_classes"):
        load_model(best, torch.device("cpu"))


def test_every_torch_load_in_medtl_goes_through_safe_load() -> None:
    """No ``torch.load(...)`` call in the package but the one inside ``safe_load``."""
    calls = []
    for path in sorted((ROOT / "medtl").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert len(calls) == 1 and calls[0].startswith("medtl/models/safe_read.py:"), calls
