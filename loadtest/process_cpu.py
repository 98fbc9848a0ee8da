"""CPU seconds per part of a running `toneserve serve`: gateway, tritonserver, each model.

`toneserve serve` is one process (the gateway, with its decoding and post-processing threads)
whose child is `tritonserver`, whose children are the Python-backend stubs, one per model
instance; a stub's command line names its model's `model.py`. Snapshots of their CPU times
(user + system) before and after a load step say where the machine's cores went: gateway vs
Triton's own threads vs each model. Processes that start or end between the snapshots count
from zero or are missed; a serving process tree is stable, so neither happens in practice.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import psutil


def _label(process, root_pid: int, root_label: str) -> str:
    if process.pid == root_pid:
        return root_label
    command = process.cmdline()
    if command and Path(command[0]).name == "tritonserver":
        return "tritonserver"
    if command and Path(command[0]).name == "triton_python_backend_stub" and len(command) > 1:
        return f"model {Path(command[1]).parent.parent.name}"  # .../<model>/<version>/model.py
    return process.name()


def _parts(root_pid: int, root_label: str):
    """(part, process) for the process `root_pid` (labelled `root_label`) and its descendants still running."""
    root = psutil.Process(root_pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            yield _label(process, root_pid, root_label), process
        except psutil.NoSuchProcess:
            continue


def _by_part(root_pid: int, root_label: str, measure) -> Counter[str]:
    """`measure(process)` summed by part over the process `root_pid` (labelled `root_label`) and its descendants."""
    totals: Counter[str] = Counter()
    for part, process in _parts(root_pid, root_label):
        try:
            totals[part] += measure(process)
        except psutil.NoSuchProcess:
            continue
    return totals


def snapshot(root_pid: int, root_label: str = "gateway") -> Counter[str]:
    """CPU seconds so far of the process `root_pid` (labelled `root_label`) and every descendant, by part."""
    return _by_part(root_pid, root_label, lambda process: sum(process.cpu_times()[:2]))


def rss_mb(root_pid: int, root_label: str = "gateway") -> dict[str, float]:
    """Resident memory now (MB) of the process `root_pid` and every descendant, by part (a model's instances
    summed)."""
    return memory_mb(root_pid, root_label)["rss"]


def memory_mb(root_pid: int, root_label: str = "gateway", pss: bool = False) -> dict[str, dict[str, float]]:
    """Resident memory now (MB) by part as `rss_mb`, and its anonymous part: RSS less its file-backed and
    shared-memory pages (psutil's `shared`): a mapped model file or compile cache, clean pages the kernel drops
    and reads again before a memory limit kills; and the Python backend's /dev/shm regions, which RSS counts
    again in every process that maps them. What each process alone holds. One read of each process for both:
    {"rss": {part: MB}, "anon": {part: MB}}.

    `pss`: also each part's proportional set size, {"pss": {part: MB}}: its private pages plus its share of each
    page it maps with others (a library, a /dev/shm region, a model file mapped by several processes), so the
    parts' sum counts every page once, as the machine (and a pod's memory cgroup) does; the sum of RSS counts a
    shared page once per process. Read from /proc/PID/smaps_rollup, slower than RSS (milliseconds a process)."""
    rss: Counter[str] = Counter()
    anon: Counter[str] = Counter()
    proportional: Counter[str] = Counter()
    for part, process in _parts(root_pid, root_label):
        try:
            memory = process.memory_full_info() if pss else process.memory_info()  # statm (and smaps_rollup)
        except psutil.NoSuchProcess:
            continue
        rss[part] += memory.rss
        anon[part] += memory.rss - memory.shared
        if pss:
            proportional[part] += memory.pss
    figures = (("rss", rss), ("anon", anon)) + ((("pss", proportional),) if pss else ())
    return {name: {part: round(value / 2**20, 1) for part, value in sorted(totals.items())} for name, totals in figures}


def cores(before: Counter[str], after: Counter[str], wall_s: float) -> dict[str, float]:
    """Average cores each part used between two snapshots (1.0 = one core all the time)."""
    if wall_s <= 0:
        return {}
    return {part: (after[part] - before.get(part, 0.0)) / wall_s for part in sorted(after)}
