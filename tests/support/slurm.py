"""Start a throw-away single-node SLURM cluster on 127.0.0.1, for tests and by hand.

The cluster is Debian's ``slurm-wlm`` (22.05) and ``munge``, started without systemd:
``munged``, ``slurmctld`` and ``slurmd`` run as root, each in the foreground of its own
process session, with every socket, key, state, spool, log and pid file under one folder.
The controller and the node listen on free ports of 127.0.0.1; nothing of the machine's own
SLURM or munge set-up (``/etc/slurm``, ``/etc/munge``, ``/run/munge``) is read or written.

What the cluster is, in ``slurm.conf`` terms:

* ``SlurmctldHost=localhost(127.0.0.1)``; one node (``NodeName=medtl-node``,
  ``NodeAddr=127.0.0.1``, ``slurmd -N medtl-node``) in one default partition ``medtl``;
* ``AuthType=auth/munge`` / ``CredType=cred/munge`` through this cluster's own munged
  (``AuthInfo=socket=...``), with a fresh random key;
* no accounting database (``AccountingStorageType=accounting_storage/none``): ``sacct``
  fails, so Snakemake's SLURM executor must query job states with ``squeue``
  (``--slurm-status-command squeue``); ``MinJobAge=600`` keeps finished jobs visible to
  ``squeue`` (and ``scontrol show job``) for ten minutes;
* no cgroups (``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
  ``JobAcctGatherType=jobacct_gather/none``), so it runs in containers;
* ``GresTypes=gpu`` and ``Gres=gpu:N`` on the node, with ``gres.conf`` naming ``/dev/null``
  as each "GPU": jobs that ask for GPUs (``--gpus=1``) are scheduled on a CPU-only machine,
  and the code they run must still check ``torch.cuda.is_available()``;
* ``SlurmdParameters=config_overrides``: the node advertises the CPUs and memory the
  configuration says (by default at least 4 CPUs and 64 GB, so that jobs asking for a
  workstation's worth of memory are scheduled), not what the machine has.

Client commands find the cluster through ``SLURM_CONF``. Snakemake's SLURM job-step
executor strips ``SLURM_*`` variables (``SLURM_CONF`` included) before it calls ``srun``
inside a job, which on a real cluster then reads ``/etc/slurm/slurm.conf``; here a
``bin/srun`` shim in the cluster's folder sets ``SLURM_CONF`` again, and the cluster's
environment puts that folder first on ``PATH``.

Example (in Python):
    >>> with slurm_cluster() as cluster:  # doctest: +SKIP
    ...     subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.environ())

By hand (as root)::

    python tests/support/slurm.py start /tmp/slurm   # prints the lines to source
    eval "$(python tests/support/slurm.py env /tmp/slurm)"
    sinfo; sbatch --gpus=1 --wrap 'echo hi'; squeue
    python tests/support/slurm.py stop /tmp/slurm    # cancels jobs, stops the daemons
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
SBIN_FOLDERS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
NODE = "medtl-node"
PARTITION = "medtl"
CLUSTER = "medtl-test"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
MIN_CPUS = 4
MEMORY_MB = 64000
STATE_FILE = "cluster.json"


def find_binary(name: str) -> str | None:
    """A SLURM or munge program on PATH or in the sbin folders, or None."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_FOLDERS])
    return shutil.which(name, path=path)


def missing_reason() -> str | None:
    """Why no test cluster can be started here, or None when one can."""
    missing = [name for name in DAEMONS + CLIENTS if find_binary(name) is None]
    if missing:
        return (
            f"SLURM is not installed (missing: {', '.join(missing)}); install the Debian "
            "packages slurm-wlm and munge with .ci/install-services.sh"
        )
    if os.geteuid() != 0:
        return (
            "the test SLURM cluster must be started as root (slurmd starts every job as the "
            "user who submitted it; the cluster runs with SlurmUser=root)"
        )
    return None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SlurmCluster:
    """A running test cluster: where it lives and the environment that reaches it."""

    folder: Path
    conf: Path
    partition: str = PARTITION
    node: str = NODE
    gpus: int = 1
    cpus: int = MIN_CPUS
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        """The folder of the ``srun`` shim (first on the cluster's PATH)."""
        return self.folder / "bin"

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) pointed at this cluster.

        Drops what a surrounding SLURM job would pass on (``SLURM_*``, ``SBATCH_*``,
        ``SRUN_*``), then sets ``SLURM_CONF`` and puts the ``srun`` shim first on ``PATH``.
        """
        environ = {
            key: value
            for key, value in (os.environ if base is None else base).items()
            if not key.startswith(("SLURM_", "SBATCH_", "SRUN_"))
        }
        environ["SLURM_CONF"] = str(self.conf)
        environ["PATH"] = f"{self.bin}{os.pathsep}{environ.get('PATH', '')}"
        return environ

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``sinfo``, ``squeue``, ...) against this cluster."""
        program = find_binary(args[0]) or args[0]
        return subprocess.run(
            [program, *args[1:]],
            capture_output=True,
            text=True,
            env=self.environ(),
            timeout=timeout,
            check=False,
        )

    def shell_exports(self) -> str:
        """``export`` lines that point a shell at this cluster."""
        return "\n".join(
            [
                f"export SLURM_CONF={shlex.quote(str(self.conf))}",
                f'export PATH={shlex.quote(str(self.bin))}:"$PATH"',
            ]
        )

    def log_tails(self, chars: int = 2500) -> str:
        """The ends of the daemons' logs, for error messages."""
        parts = []
        for log in sorted((self.folder / "log").glob("*.log")):
            try:
                text = log.read_text(errors="replace")[-chars:]
            except OSError:
                text = "(unreadable)"
            parts.append(f"--- {log.name} ---\n{text}")
        return "\n".join(parts) or "(no logs)"


def _slurm_conf(
    folder: Path, ctld_port: int, slurmd_port: int, cpus: int, memory_mb: int, gpus: int
) -> str:
    gres = f" Gres=gpu:{gpus}" if gpus > 0 else ""
    lines = [
        "# Throw-away single-node test cluster (tests/support/slurm.py).",
        f"ClusterName={CLUSTER}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder / 'munge' / 'munge.socket'}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "MailProg=/bin/true",
        f"PlugStackConfig={folder / 'plugstack.conf'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/builtin",
        "SlurmdParameters=config_overrides",
        # Finished jobs stay visible to squeue / scontrol for 10 minutes: without an
        # accounting database, that is how Snakemake learns that a job finished.
        "MinJobAge=600",
        "ReturnToService=2",
        "KillWait=5",
        "InactiveLimit=0",
        "GresTypes=gpu",
        f"NodeName={NODE} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 "
        f"CPUs={cpus} RealMemory={memory_mb}{gres} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def _gres_conf(folder: Path, gpus: int) -> str:
    # One fake device per GPU: a link to /dev/null (SLURM wants a character device and
    # refuses one file name for two GPUs; without cgroups it restricts no device access).
    lines = ["# Fake GPUs: jobs asking for --gpus are scheduled on a CPU-only node."]
    for index in range(gpus):
        device = folder / "dev" / f"fake-gpu{index}"
        device.symlink_to("/dev/null")
        lines.append(f"NodeName={NODE} Name=gpu File={device}")
    return "\n".join(lines) + "\n"


def _srun_shim(conf: Path, srun: str) -> str:
    return (
        "#!/bin/sh\n"
        "# Snakemake's SLURM job step drops SLURM_* variables before calling srun; put\n"
        "# back the test cluster's configuration (tests/support/slurm.py).\n"
        f"SLURM_CONF={shlex.quote(str(conf))}\n"
        "export SLURM_CONF\n"
        f'exec {shlex.quote(srun)} "$@"\n'
    )


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no terminal signals; survives the `start` command
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )


def _wait_for(what: str, check, procs: dict[str, subprocess.Popen], cluster, timeout_s):
    deadline = time.monotonic() + timeout_s
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with status {proc.returncode} while waiting for {what}; "
                    f"logs:\n{cluster.log_tails()}"
                )
        if check():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"timed out after {timeout_s:.0f} s waiting for {what}; logs:\n"
                f"{cluster.log_tails()}"
            )
        time.sleep(0.2)


def start(
    folder: Path,
    *,
    gpus: int = 1,
    cpus: int | None = None,
    memory_mb: int = MEMORY_MB,
    timeout_s: float = START_TIMEOUT_S,
) -> SlurmCluster:
    """Start munged, slurmctld and slurmd with all their files under ``folder``.

    Returns once the node is idle. ``stop(folder)`` ends them (the pids are recorded in
    ``folder/cluster.json``).

    Raises:
        RuntimeError: a program is missing, not root, or a daemon exited or did not come
            up within ``timeout_s`` (the message carries the ends of their logs).
    """
    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    folder = Path(folder).resolve()
    if (folder / STATE_FILE).exists():
        raise RuntimeError(f"{folder} already holds a cluster; stop it first")
    for sub in ("munge", "state", "spool", "log", "run", "bin", "dev"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o711)
    (folder / "munge").chmod(0o711)  # munged wants its socket's folder searchable by all
    cpus = cpus or max(os.cpu_count() or 1, MIN_CPUS)
    conf = folder / "slurm.conf"
    cluster = SlurmCluster(folder=folder, conf=conf, gpus=gpus, cpus=cpus)

    key = folder / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    conf.write_text(_slurm_conf(folder, free_port(), free_port(), cpus, memory_mb, gpus))
    (folder / "gres.conf").write_text(_gres_conf(folder, gpus))
    (folder / "plugstack.conf").write_text("# no SPANK plugins\n")
    shim = cluster.bin / "srun"
    shim.write_text(_srun_shim(conf, find_binary("srun") or "srun"))
    shim.chmod(0o755)

    procs: dict[str, subprocess.Popen] = {}
    try:
        socket_path = folder / "munge" / "munge.socket"
        procs["munged"] = _spawn(
            [
                find_binary("munged") or "munged",
                "--foreground",
                "--force",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={folder / 'run' / 'munged.pid'}",
                f"--log-file={folder / 'log' / 'munged.log'}",
                f"--seed-file={folder / 'munge' / 'munged.seed'}",
                "--num-threads=2",
            ],
            folder / "log" / "munged.out.log",
        )
        _record(folder, procs)
        _wait_for("munged's socket", socket_path.exists, procs, cluster, timeout_s)

        procs["slurmctld"] = _spawn(
            [find_binary("slurmctld") or "slurmctld", "-D", "-i", "-f", str(conf)],
            folder / "log" / "slurmctld.out.log",
        )
        _record(folder, procs)

        def controller_up() -> bool:
            ping = cluster.run("scontrol", "ping", timeout=10)
            return ping.returncode == 0 and "UP" in ping.stdout

        _wait_for("slurmctld to answer", controller_up, procs, cluster, timeout_s)

        procs["slurmd"] = _spawn(
            [find_binary("slurmd") or "slurmd", "-D", "-f", str(conf), "-N", NODE],
            folder / "log" / "slurmd.out.log",
        )
        _record(folder, procs)

        def node_idle() -> bool:
            info = cluster.run("sinfo", "-h", "-N", "-o", "%N %t", timeout=10)
            return info.returncode == 0 and f"{NODE} idle" in info.stdout

        _wait_for(f"node {NODE} to be idle", node_idle, procs, cluster, timeout_s)
    except BaseException:
        stop(folder)
        raise
    cluster.pids = {name: proc.pid for name, proc in procs.items()}
    (folder / "env.sh").write_text(cluster.shell_exports() + "\n")
    return cluster


def _record(folder: Path, procs: Mapping[str, subprocess.Popen]) -> None:
    """Write what ``stop`` needs: the daemons' pids and the configuration."""
    state = {
        "conf": str(folder / "slurm.conf"),
        "pids": {name: proc.pid for name, proc in procs.items()},
    }
    tmp = folder / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(folder / STATE_FILE)


def _alive(pid: int, conf_or_key: str) -> bool:
    """Whether ``pid`` is still one of this cluster's daemons (not a zombie, not reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return conf_or_key in cmdline


def stop(folder: Path, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Cancel every job of the cluster in ``folder``, then stop its daemons.

    Safe to call twice, and on a cluster that only half started.
    """
    folder = Path(folder).resolve()
    state_file = folder / STATE_FILE
    if not state_file.exists():
        return
    state = json.loads(state_file.read_text())
    pids: dict[str, int] = state["pids"]
    conf = state["conf"]
    marks = {
        "munged": str(folder / "munge" / "munge.key"),
        "slurmctld": conf,
        "slurmd": conf,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env["SLURM_CONF"] = conf
    if "slurmctld" in pids and _alive(pids["slurmctld"], conf):
        scancel = find_binary("scancel")
        squeue = find_binary("squeue")
        if scancel and squeue:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    [scancel, f"--partition={PARTITION}"], env=env, timeout=15, check=False
                )
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    queue = subprocess.run(
                        [squeue, "-h", "-t", "PENDING,RUNNING,COMPLETING,SUSPENDED", "-o", "%i"],
                        capture_output=True,
                        text=True,
                        env=env,
                        timeout=15,
                        check=False,
                    )
                    if queue.returncode != 0 or not queue.stdout.strip():
                        break
                    time.sleep(0.5)
    # Node first, then controller, then munge.
    for name in ("slurmd", "slurmctld", "munged"):
        pid = pids.get(name)
        if pid is None or not _alive(pid, marks[name]):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid, marks[name]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid, marks[name]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            _alive(pid, marks[name])  # reaps it if it is our child
    state_file.unlink(missing_ok=True)


@contextlib.contextmanager
def slurm_cluster(
    *,
    gpus: int = 1,
    cpus: int | None = None,
    memory_mb: int = MEMORY_MB,
    timeout_s: float = START_TIMEOUT_S,
    keep: Path | None = None,
) -> Iterator[SlurmCluster]:
    """Run a test cluster in a fresh temporary folder; stop it and remove the folder at exit.

    ``keep``: a folder to copy the daemons' logs and configuration into before removal.
    """
    # A short path: munged's socket path must fit in a UNIX socket address (108 bytes).
    folder = Path(tempfile.mkdtemp(prefix="medtl-slurm-", dir="/tmp"))
    try:
        yield start(folder, gpus=gpus, cpus=cpus, memory_mb=memory_mb, timeout_s=timeout_s)
    finally:
        try:
            stop(folder)
        finally:
            if keep is not None:
                with contextlib.suppress(OSError):
                    keep.mkdir(parents=True, exist_ok=True)
                    for path in [*(folder / "log").glob("*.log"), folder / "slurm.conf"]:
                        if path.is_file():
                            shutil.copy2(path, keep / path.name)
            shutil.rmtree(folder, ignore_errors=True)


def _main(argv: list[str]) -> int:
    usage = (
        "usage: python tests/support/slurm.py start|env|stop FOLDER [--gpus N]\n"
        "  start  start munged, slurmctld and slurmd with their files under FOLDER and\n"
        "         print the shell lines that point sinfo/sbatch/squeue/snakemake at them\n"
        "  env    print those lines again\n"
        "  stop   cancel all jobs and stop the daemons (FOLDER is kept)"
    )
    if len(argv) < 2 or argv[0] not in ("start", "env", "stop"):
        print(usage, file=sys.stderr)
        return 2
    command, folder = argv[0], Path(argv[1])
    gpus = int(argv[argv.index("--gpus") + 1]) if "--gpus" in argv else 1
    if command == "start":
        try:
            cluster = start(folder, gpus=gpus)
        except RuntimeError as err:
            print(f"slurm.py: {err}", file=sys.stderr)
            return 1
        print(cluster.shell_exports())
        print(
            f"# cluster {CLUSTER}: node {NODE} ({cluster.cpus} CPUs, {gpus} fake GPU), "
            f"partition {PARTITION}; logs in {folder.resolve() / 'log'}",
        )
        return 0
    if command == "env":
        env_file = folder / "env.sh"
        if not env_file.exists():
            print(f"slurm.py: no cluster in {folder}", file=sys.stderr)
            return 1
        print(env_file.read_text(), end="")
        return 0
    stop(folder)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
