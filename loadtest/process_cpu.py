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


def snapshot(root_pid: int, root_label: str = "gateway") -> Counter[str]:
    """CPU seconds so far of the process `root_pid` (labelled `root_label`) and every descendant, by part."""
    root = psutil.Process(root_pid)
    seconds: Counter[str] = Counter()
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            seconds[_label(process, root_pid, root_label)] += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return seconds


def cores(before: Counter[str], after: Counter[str], wall_s: float) -> dict[str, float]:
    """Average cores each part used between two snapshots (1.0 = one core all the time)."""
    if wall_s <= 0:
        return {}
    return {part: (after[part] - before.get(part, 0.0)) / wall_s for part in sorted(after)}
