"""Timing of one command: wall time, CPU time and peak memory of its whole process tree.

Used by the benchmark scripts in this folder. A command runs as a subprocess in its own
session; CPU time is the ``wait4`` resource usage of the command and every descendant it
waited for (worker pools included); peak memory is the largest sum of the proportional set
sizes (PSS) of the command and all its live descendants, sampled every ``poll_s`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Timing:
    """What one run of a command cost.

    Attributes:
        wall_s: seconds from start to exit.
        cpu_s: user + system CPU seconds of the command and its waited-for children.
        peak_rss_mb: largest sampled sum of memory (PSS) over the process tree (MiB).
        returncode: the exit status (negative: killed by that signal).
    """

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int

    def as_dict(self) -> dict:
        return asdict(self)


class CommandFailed(RuntimeError):
    """A benchmarked command exited with an error."""


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        # PSS shares each shared page among the processes that map it, so a pool of
        # forked workers is not counted once per worker; RSS where PSS is not readable.
        pss = _pss(p.pid)
        if pss is None:
            with contextlib.suppress(psutil.Error):
                pss = p.memory_info().rss
        total += pss or 0
    return total


def _pss(pid: int) -> int | None:
    """Proportional set size of a process from ``/proc/<pid>/smaps_rollup`` (Linux), bytes.

    The kernel sums it, so reading it is cheap enough to sample a pool of workers often.
    """
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return None


def run_timed(
    cmd: Sequence[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    on_poll: Callable[[float], bool | None] | None = None,
    poll_s: float = 0.25,
    check: bool = True,
) -> Timing:
    """Run ``cmd`` to its end and measure it.

    Args:
        cmd: the command and its arguments.
        log: file that receives the command's stdout and stderr (appended).
        env: environment (default: this process's).
        cwd: working folder.
        on_poll: called with the seconds since launch at every poll; returning True stops
            the command (SIGTERM to its process group, then SIGKILL after 10 s).
        poll_s: sampling interval of memory and ``on_poll``.
        check: raise :class:`CommandFailed` (naming the log) on a non-zero exit that
            ``on_poll`` did not ask for.

    Example:
        >>> run_timed(["true"]).returncode
        0
    """
    out = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115
    stopped = False
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(map(str, cmd)),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        watched = psutil.Process(proc.pid)
        peak = 0
        kill_at = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss(watched))
            elapsed = time.perf_counter() - start
            if on_poll is not None and not stopped and on_poll(elapsed):
                stopped = True
                os.killpg(proc.pid, signal.SIGTERM)
                kill_at = elapsed + 10.0
            if kill_at is not None and elapsed > kill_at:
                os.killpg(proc.pid, signal.SIGKILL)
                kill_at = None
            time.sleep(poll_s)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()
    timing = Timing(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=max(peak, usage.ru_maxrss * 1024) / 2**20,
        returncode=proc.returncode,
    )
    if check and timing.returncode != 0 and not stopped:
        where = f"; its output is in {log}" if log else ""
        raise CommandFailed(f"{' '.join(map(str, cmd))} exited with {timing.returncode}{where}")
    return timing


def median_timing(timings: Sequence[Timing]) -> dict:
    """Medians of wall, CPU and peak memory over repeats, with the repeats' walls and CPU
    times (the table's min–max column).

    Example:
        >>> m = median_timing([Timing(1, 2, 10, 0), Timing(3, 4, 30, 0), Timing(2, 3, 20, 0)])
        >>> m["wall_s"], m["cpu_s"], m["peak_rss_mb"], m["repeats"], m["walls"], m["cpus"]
        (2, 3, 20, 3, [1, 3, 2], [2, 4, 3])
    """
    return {
        "wall_s": statistics.median(t.wall_s for t in timings),
        "cpu_s": statistics.median(t.cpu_s for t in timings),
        "peak_rss_mb": statistics.median(t.peak_rss_mb for t in timings),
        "repeats": len(timings),
        "walls": [t.wall_s for t in timings],
        "cpus": [t.cpu_s for t in timings],
    }
