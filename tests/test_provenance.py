"""Provenance: input hashes in run records, and weight digests that equal weights share."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from medtl.provenance import (
    KERNEL_ENV,
    combined_digest,
    cpu_libraries,
    hardware,
    reproducibility_differences,
    weights_digest,
    write_run_record,
)


def test_weights_digest_ignores_file_bytes_but_not_values(tmp_path: Path) -> None:
    state = {"format": "medtl", "state_dict": {"a": torch.arange(6.0).reshape(2, 3)}}
    torch.save(state, tmp_path / "one.pt")
    torch.save(state, tmp_path / "two.pt")
    # torch.save writes the file name and a random id: the bytes differ ...
    assert (tmp_path / "one.pt").read_bytes() != (tmp_path / "two.pt").read_bytes()
    # ... the tensors do not
    assert weights_digest(tmp_path / "one.pt") == weights_digest(tmp_path / "two.pt")
    state["state_dict"]["a"][0, 0] = 0.5
    torch.save(state, tmp_path / "three.pt")
    assert weights_digest(tmp_path / "three.pt") != weights_digest(tmp_path / "one.pt")


def test_run_record_hashes_inputs_by_kind(tmp_path: Path) -> None:
    (tmp_path / "a.npz").write_bytes(b"case a")
    (tmp_path / "b.npz").write_bytes(b"case b")
    record = write_run_record(
        tmp_path / "run.json",
        {"seed": 1},
        inputs={"cases": [tmp_path / "b.npz", tmp_path / "a.npz"], "weights": []},
        seed=1,
    )
    files = record["sha256"]["cases"]["files"]
    assert files == {
        "a.npz": hashlib.sha256(b"case a").hexdigest(),
        "b.npz": hashlib.sha256(b"case b").hexdigest(),
    }
    assert record["sha256"]["cases"]["combined"] == combined_digest(files)
    assert record["sha256"]["weights"]["files"] == {}
    assert json.loads((tmp_path / "run.json").read_text())["sha256"] == record["sha256"]


def test_hardware_records_what_decides_bit_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KERNEL_ENV:
        monkeypatch.delenv(name, raising=False)
    info = hardware()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["cpu_threads"] == torch.get_num_threads()
    assert info["cpu"] and info["cpu_libraries"].startswith("MKL ")
    assert "kernel_env" not in info
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware()["kernel_env"] == "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2"


def test_cpu_libraries_condenses_torch_config() -> None:
    show = (
        "PyTorch built with:\n"
        "  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for ...\n"
        "  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)\n"
        "  - OpenMP 201511 (a.k.a. OpenMP 4.5)\n"
    )
    assert cpu_libraries(show) == "MKL 2024.2, oneDNN 3.12.0, OpenMP 201511"
    assert cpu_libraries("PyTorch built with:\n") == "MKL no, oneDNN no, OpenMP no"


def test_reproducibility_differences_name_what_differs(tmp_path: Path) -> None:
    (tmp_path / "case.npz").write_bytes(b"case")
    inputs = {"cases": [tmp_path / "case.npz"]}
    a = write_run_record(tmp_path / "a.json", {"seed": 1}, inputs, seed=1, device="cpu")
    b = write_run_record(tmp_path / "b.json", {"seed": 1}, inputs, seed=1, device="cpu")
    assert reproducibility_differences(a, b) == []
    b = json.loads(json.dumps(b))
    b["hardware"].update(cpu_capability="DEFAULT", cpu_threads=a["hardware"]["cpu_threads"] + 1)
    b["hardware"]["kernel_env"] = "ATEN_CPU_CAPABILITY=default"
    b["versions"]["torch"] = "0.0"
    b["settings"] = {"seed": 2}
    b["sha256"]["cases"]["combined"] = "0" * 64
    assert reproducibility_differences(a, b) == [
        f"hardware.cpu_capability: {a['hardware']['cpu_capability']} != DEFAULT",
        f"hardware.cpu_threads: {a['hardware']['cpu_threads']} != {b['hardware']['cpu_threads']}",
        "hardware.kernel_env: not recorded != ATEN_CPU_CAPABILITY=default",
        "settings: differ",
        f"sha256.cases: {a['sha256']['cases']['combined']} != {'0' * 64}",
        f"versions.torch: {a['versions']['torch']} != 0.0",
    ]


def test_report_provenance_writes_the_config_and_the_versions(tmp_path: Path) -> None:
    import yaml

    from medtl.provenance import write_report_provenance

    config = {"seed": 1, "arms": {"scratch": {"init": "random"}}}
    resolved, versions = write_report_provenance(config, tmp_path)
    assert yaml.safe_load(resolved.read_text()) == config
    assert set(json.loads(versions.read_text())) == {"versions", "git_commit", "hardware"}


def test_pull_record_lists_the_failures(tmp_path: Path) -> None:
    from dataclasses import dataclass, field

    from medtl.io.pull_record import write_pull_record

    @dataclass
    class Failure:
        uid: str

    @dataclass
    class Report:
        studies: int = 1
        failed: list = field(default_factory=lambda: [Failure("1.2")])

    path = write_pull_record(Report(), tmp_path)
    assert json.loads(path.read_text()) == {"studies": 1, "failed": [{"uid": "1.2"}]}


def test_device_check_refuses_cuda_where_there_is_none(monkeypatch) -> None:
    from medtl.kernel.device import check_devices
    from medtl.kernel.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_devices("auto", 0)["name"] == "CPU"
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        check_devices("cuda", 0)
