"""Was the machine quiet while a benchmark ran? How much CPU *other* processes used.

A background sampler reads the whole machine's busy CPU seconds (``/proc/stat``) and the
CPU seconds of the benchmark's own process tree (psutil), so that their difference is the
CPU that other processes took during the run. The 1-minute load average alone cannot say
this: it counts the benchmark's own threads and workers too, so a benchmark that keeps 2
cores busy reads as "load 2" on an otherwise idle machine, and a quiet machine and a
shared one look alike. Only the load average *before* the start is free of the benchmark,
and it is kept as the second half of the rule.

The rule (:func:`is_quiet`): a run is quiet when other processes used less than
``--busy-threshold`` (default 10 %) of the machine's CPU capacity (wall time × cores) over
the run, and the 1-minute load average before the start was under half the cores. The
benchmark's own CPU is a lower bound (a descendant that outlives its parent is reaped by
init, not by us, and its CPU is lost), so the others' share errs towards "disturbed".

Hand-written rather than a library: psutil gives the per-process figures, but nothing
keeps the difference between the machine's busy time and a process tree's over a run.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

#: Others' default share of the machine's CPU above which a run is disturbed.
BUSY_SHARE = 0.10
#: A 1-minute load average before the start above this many per core: not quiet.
LOAD_PER_CORE = 0.5
#: /proc/stat's columns that count as busy (user nice system irq softirq steal; not idle
#: or iowait, and not guest, which user already includes).
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def machine_busy_s(stat: Path = Path("/proc/stat")) -> float:
    """Busy CPU seconds of the whole machine since boot, summed over its cores.

    Example:
        >>> machine_busy_s() > 0
        True
    """
    fields = stat.read_text().splitlines()[0].split()[1:]
    ticks = sum(int(fields[i]) for i in _BUSY_COLUMNS if i < len(fields))
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of ``proc``, of the children it has reaped, and of its
    live descendants.

    The process's own times are read before its descendants: a child reaped in between
    is then missed once (a lower bound), never counted twice.
    """
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    try:
        live = proc.children(recursive=True)
    except psutil.Error:
        return total
    for child in live:
        try:
            c = child.cpu_times()
        except psutil.Error:
            continue  # ended since the listing: its time is in its parent's children_*
        total += c.user + c.system
    return total


@dataclass(frozen=True)
class Quietness:
    """What the machine did while a benchmark ran.

    Attributes:
        wall_s: seconds the sampler ran.
        cores: the machine's CPUs (``/proc/stat``'s total covers them all).
        machine_cpu_s: busy CPU seconds of the whole machine over the run.
        own_cpu_s: CPU seconds of the benchmark's process tree over the run.
        others_cpu_s: the rest, what other processes used.
        others_share: ``others_cpu_s`` / (``wall_s`` × ``cores``).
        load_before: 1-minute load average before the start.
        load_after: 1-minute load average at the end (counts the benchmark itself).
    """

    wall_s: float
    cores: int
    machine_cpu_s: float
    own_cpu_s: float
    others_cpu_s: float
    others_share: float
    load_before: float
    load_after: float

    def as_dict(self) -> dict:
        return asdict(self)


class QuietSampler:
    """Samples the machine and the benchmark's process tree in a background thread.

    Example:
        >>> with QuietSampler(interval_s=0.01) as s:
        ...     _ = sum(range(10**5))
        >>> s.result.own_cpu_s >= 0 and s.result.cores >= 1
        True
    """

    def __init__(self, interval_s: float = 1.0, pid: int | None = None) -> None:
        self.interval_s = interval_s
        self.proc = psutil.Process(pid)
        self.result: Quietness | None = None
        self._stop = threading.Event()
        self._own_max = 0.0

    def __enter__(self) -> QuietSampler:
        self.load_before = os.getloadavg()[0]
        self.start = time.perf_counter()
        self.busy0 = machine_busy_s()
        self.own0 = tree_cpu_s(self.proc)
        self._own_max = self.own0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        # each sample is a lower bound of the tree's CPU so far: keep the largest, so that
        # descendants that end without being reaped by us still count up to their last sample
        while not self._stop.wait(self.interval_s):
            self._own_max = max(self._own_max, tree_cpu_s(self.proc))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        own = max(self._own_max, tree_cpu_s(self.proc)) - self.own0
        machine = machine_busy_s() - self.busy0
        wall = time.perf_counter() - self.start
        cores = os.cpu_count() or 1
        others = max(0.0, machine - own)
        self.result = Quietness(
            wall_s=wall,
            cores=cores,
            machine_cpu_s=machine,
            own_cpu_s=own,
            others_cpu_s=others,
            others_share=others / (wall * cores) if wall > 0 else 0.0,
            load_before=self.load_before,
            load_after=os.getloadavg()[0],
        )


def is_quiet(q: dict, busy_threshold: float = BUSY_SHARE) -> bool:
    """The rule: others used under ``busy_threshold`` of the CPU, and the load average
    before the start was under :data:`LOAD_PER_CORE` per core.

    Example:
        >>> q = {"others_share": 0.02, "load_before": 0.4, "cores": 2}
        >>> is_quiet(q), is_quiet({**q, "others_share": 0.3}), is_quiet({**q, "load_before": 1.5})
        (True, False, False)
    """
    return q["others_share"] < busy_threshold and q["load_before"] < LOAD_PER_CORE * q["cores"]


def quiet_line(res: dict) -> str:
    """The table's line on the machine: what others used, the load, and the verdict.

    ``res["quiet"]`` is a :class:`Quietness` as a dict, judged against
    ``res["busy_threshold"]``; results of runs before the sampler have only
    ``load_before`` and ``load_after`` (or nothing).
    """
    busy_threshold = res.get("busy_threshold", BUSY_SHARE)
    q = res.get("quiet")
    if q is None:
        loads = (
            f" (load average {res['load_before']:.2f} before, {res['load_after']:.2f} after)"
            if "load_before" in res
            else ""
        )
        return f"Quietness not measured: a run before the harness sampled it{loads}."
    what = (
        f"Other processes used {q['others_cpu_s']:.0f} CPU s ({100 * q['others_share']:.1f} %"
        f" of {q['cores']} cores over {q['wall_s'] / 60:.1f} min); load average (1 min) "
        f"{q['load_before']:.2f} before the start"
    )
    if is_quiet(q, busy_threshold):
        return f"{what}: quiet."
    return (
        f"{what}: **disturbed (others used {100 * q['others_share']:.1f} % of the CPU)**; "
        "every time is provisional"
    )


def refusal(res: dict, busy_threshold: float = BUSY_SHARE) -> str | None:
    """Why the table must not go into the docs without ``--allow-disturbed``, or None.

    Example:
        >>> q = {"others_share": 0.25, "others_cpu_s": 300.0, "load_before": 0.1, "cores": 2}
        >>> print(refusal({"quiet": q}, 0.1))
        the machine was busy: other processes used 25.0 % of its CPU during the run (limit 10 %, --busy-threshold) and the load average before the start was 0.10 (limit 1.00); the docs are left as they were. Rerun on a quiet machine, or pass --allow-disturbed to write the table marked disturbed
    """  # noqa: E501
    q = res.get("quiet")
    if q is None:
        what = "the run has no record of the machine's quietness (results before the sampler)"
    elif is_quiet(q, busy_threshold):
        return None
    else:
        what = (
            f"the machine was busy: other processes used {100 * q['others_share']:.1f} % of "
            f"its CPU during the run (limit {100 * busy_threshold:g} %, --busy-threshold) and "
            f"the load average before the start was {q['load_before']:.2f} (limit "
            f"{LOAD_PER_CORE * q['cores']:.2f})"
        )
    return (
        f"{what}; the docs are left as they were. Rerun on a quiet machine, or pass "
        "--allow-disturbed to write the table marked disturbed"
    )
