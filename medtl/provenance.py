"""What produced a result: settings, seeds, package versions, code version, hardware."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from medtl.kernel.files import atomic_write_text, sha256_file

PACKAGES = (
    "medtl",
    "torch",
    "monai",
    "numpy",
    "nibabel",
    "pydicom",
    "scipy",
    "pandas",
    "scikit-learn",
    "snakemake",
)


SECRET_KEYS = ("salt",)


def redact_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config with secrets (the hashing salt) replaced by a fingerprint.

    The fingerprint tells whether two runs used the same salt without revealing it.

    Example:
        >>> redact_secrets({"salt": "s3cret", "seed": 1})["salt"]
        'redacted (sha256 1ec1c26b)'
    """
    out = dict(config)
    for key in SECRET_KEYS:
        if key in out and out[key] is not None:
            digest = hashlib.sha256(str(out[key]).encode()).hexdigest()[:8]
            out[key] = f"redacted (sha256 {digest})"
    return out


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that shape results (and of ``extra`` ones)."""
    out = {"python": platform.python_version()}
    for name in (*PACKAGES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(cwd: Path | None = None) -> str:
    """The workflow's git commit (``+dirty`` when changed), or ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


#: Environment variables that pick the CPU kernels (and so the rounding) of PyTorch,
#: oneDNN and MKL; recorded when set.
KERNEL_ENV = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_libraries(config: str | None = None) -> str:
    """MKL, oneDNN (MKL-DNN) and OpenMP versions of PyTorch's build, in one line.

    ``config`` is the text of ``torch.__config__.show()`` (read when not given).

    Example:
        >>> cpu_libraries("  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71)\\n"
        ...               "  - OpenMP 201511 (a.k.a. OpenMP 4.5)")
        'MKL no, oneDNN 3.12.0, OpenMP 201511'
    """
    if config is None:
        import torch

        config = torch.__config__.show()
    patterns = {
        "MKL": r"Math Kernel Library Version (\S+?)(?:-Product|\s|$)",
        "oneDNN": r"MKL-DNN v(\S+)",
        "OpenMP": r"OpenMP (\d+)",
    }
    found = {name: re.search(pattern, config) for name, pattern in patterns.items()}
    return ", ".join(f"{name} {m.group(1) if m else 'no'}" for name, m in found.items())


def hardware() -> dict[str, Any]:
    """What decides bit-identity besides code, settings and package versions.

    The CPU (``cpu``), the kernel set PyTorch picked for it (``cpu_capability``), the
    threads of this process (``cpu_threads``), the CPU libraries of PyTorch's build
    (``cpu_libraries``), the kernel-pinning environment variables that are set
    (``kernel_env``), and the GPU if any. See :func:`reproducibility_differences`.
    """
    import torch

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_libraries": cpu_libraries(),
    }
    env = [f"{k}={os.environ[k]}" for k in KERNEL_ENV if os.environ.get(k)]
    if env:
        info["kernel_env"] = " ".join(env)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def reproducibility_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two runs' records that can make their results differ.

    ``a`` and ``b`` are ``run.json`` records (:func:`write_run_record`), or any dicts
    with some of their keys: ``settings``, ``seed``, ``device``, ``git_commit``,
    ``versions``, ``hardware`` and ``sha256`` (the inputs' combined digest per kind:
    preprocessed cases already differ between CPU kernel sets, as resampling rounds
    differently). Each difference is one line, ``key: A != B`` (a missing value reads
    ``not recorded``). An empty list means the records agree on all that decides
    bit-identity on the CPU; GPU runs may differ all the same.

    Example:
        >>> reproducibility_differences(
        ...     {"hardware": {"cpu_capability": "AVX2", "cpu_threads": 1}},
        ...     {"hardware": {"cpu_capability": "AVX512", "cpu_threads": 1}})
        ['hardware.cpu_capability: AVX2 != AVX512']
    """

    def flat(record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("settings", "seed", "device", "git_commit"):
            if key in record:
                out[key] = record[key]
        for key in ("versions", "hardware"):
            for name, value in (record.get(key) or {}).items():
                out[f"{key}.{name}"] = value
        for kind, hashes in (record.get("sha256") or {}).items():
            out[f"sha256.{kind}"] = (hashes or {}).get("combined")
        return out

    fa, fb = flat(a), flat(b)
    lines = []
    for key in sorted(fa.keys() | fb.keys()):
        va, vb = fa.get(key, "not recorded"), fb.get(key, "not recorded")
        if va == vb:
            continue
        if key == "settings":
            lines.append("settings: differ")
        else:
            lines.append(f"{key}: {va} != {vb}")
    return lines


def weights_digest(path: Path) -> str:
    """SHA-256 of the tensors of a checkpoint: names, dtypes, shapes and values.

    Unlike the file's bytes (``torch.save`` writes a random serialisation id and the
    file name into every file), this is the same for bit-identical weights. A medtl
    checkpoint's ``state_dict`` is used when there is one; the file is read with
    ``weights_only=True`` (:func:`medtl.models.safe_read.safe_load`).
    """
    import torch

    from medtl.models.safe_read import safe_load

    payload = safe_load(path)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else payload
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach().contiguous().cpu()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def digests(paths: Iterable[Path]) -> dict[str, str]:
    """SHA-256 of each file, by file name (paths that do not exist are left out)."""
    return {Path(p).name: sha256_file(p) for p in sorted(map(Path, paths)) if Path(p).is_file()}


def combined_digest(hashes: dict[str, str]) -> str:
    """One SHA-256 over ``name:hash`` lines in name order: equal iff all files are equal."""
    text = "\n".join(f"{k}:{v}" for k, v in sorted(hashes.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_run_record(
    path: Path,
    settings: dict[str, Any],
    inputs: dict[str, Iterable[Path]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write the resolved settings with versions, commit, hardware and input hashes.

    Args:
        path: the ``run.json`` to write (atomically).
        settings: the resolved settings of the run.
        inputs: per kind of input (e.g. ``cases``, ``folds``, ``weights``), the files
            whose SHA-256 is recorded under ``sha256`` (with one combined digest per kind).
        **extra: more fields (seed, device, ...).
    """
    hashes = {kind: digests(files) for kind, files in (inputs or {}).items()}
    record = {
        "settings": settings,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "hardware": hardware(),
        **extra,
    }
    if hashes:
        record["sha256"] = {
            kind: {"combined": combined_digest(h), "files": h} for kind, h in hashes.items()
        }
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return record


def write_report_provenance(config: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``config.resolved.yaml`` (the config as run) and ``versions.json`` into ``folder``.

    ``versions.json`` holds the package versions, the git commit and the hardware. Both
    files are written atomically; secrets are the caller's to redact
    (:func:`redact_secrets`).

    Returns:
        The two paths written.
    """
    import yaml

    resolved = atomic_write_text(
        Path(folder) / "config.resolved.yaml", yaml.safe_dump(config, sort_keys=False)
    )
    record = {"versions": package_versions(), "git_commit": git_commit(), "hardware": hardware()}
    versions = atomic_write_text(
        Path(folder) / "versions.json", json.dumps(record, indent=2) + "\n"
    )
    return resolved, versions


def write_device_record(found: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write what the device check found, with the hardware, as JSON (for provenance)."""
    record = {**found, **hardware()}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record
