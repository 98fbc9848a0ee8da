"""What the machine was during a measurement: its CPU, its clock, the time the hypervisor took (steal),
and what else ran. Every benchmark records it, so that a figure that moves between runs can be traced
to the machine rather than the code (docs/BENCHMARKS.md, "Ratios that moved between machines").

Linux only (/proc); elsewhere the fields are None.
"""
from __future__ import annotations

import os
from pathlib import Path

import psutil

# The CPU features a toneserve figure depends on: OpenVINO's bf16 needs avx512_bf16 (or AMX), its and ONNX
# Runtime's int8 kernels VNNI.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile")


def cpu() -> dict:
    """The CPU's model name, the features above it has, its cores and its current mean clock."""
    name, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name is None:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    frequency = psutil.cpu_freq()
    return {"model": name, "features": [flag for flag in FLAGS if flag in flags], "cores": os.cpu_count(),
            "mhz": round(frequency.current) if frequency else None}


def times() -> dict:
    """The machine's CPU time counters so far (seconds, all cores): for `between`."""
    counters = psutil.cpu_times()
    return {"total": sum(counters), "steal": getattr(counters, "steal", 0.0), "idle": counters.idle,
            "processes": _process_times()}


def _process_times() -> dict[int, tuple[str, float]]:
    busy = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        try:
            cpu_times = process.info["cpu_times"]
            if cpu_times is not None:
                busy[process.pid] = (process.info["name"] or "?", cpu_times.user + cpu_times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return busy


def between(before: dict, after: dict, ours: set[int] = frozenset(), top: int = 5) -> dict:
    """Steal (the share of the machine's time the hypervisor gave to others), how busy the machine was,
    and the processes outside `ours` (pids of the measured trees and the measuring process) that used the
    most CPU between two `times()`: what else ran. `top` of them, with the cores each used on average."""
    total = after["total"] - before["total"]
    if total <= 0:
        return {"steal": None, "busy": None, "others": []}
    wall_core_seconds = total  # all cores' time over the interval
    others = []
    for pid, (name, seconds) in after["processes"].items():
        if pid in ours:
            continue
        used = seconds - before["processes"].get(pid, (name, 0.0))[1]
        if used > 0:
            others.append((name, pid, used))
    cores = os.cpu_count() or 1
    wall = wall_core_seconds / cores
    others.sort(key=lambda item: -item[2])
    return {"steal": round((after["steal"] - before["steal"]) / total, 4),
            "busy": round(1 - (after["idle"] - before["idle"]) / total, 3),
            "others": [{"name": name, "pid": pid, "cores": round(used / wall, 3)} for name, pid, used in others[:top]
                       if used / wall >= 0.01]}


def tree(pid: int) -> set[int]:
    """The pids of process `pid` and its descendants."""
    try:
        root = psutil.Process(pid)
        return {root.pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()
