"""The process's peak memory while a block runs: what a run's training costs.

A sweep runs its jobs one after another in one process, so the lifetime peak (``ru_maxrss``)
would report the largest job's peak for every job after it: each measure here starts from the
block's own start. On a GPU it is torch's peak of allocated memory; on a CPU the peak resident
set size, the kernel's high-water mark reset at the start (Linux), else sampled. glibc keeps
what a process frees resident (gigabytes after a sweep's earlier jobs), so on a CPU the block
starts by handing that back to the kernel: its peak is its own, and a sweep does not hold the
largest job's memory for the rest of its jobs.
"""

from __future__ import annotations

import ctypes
import gc
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
RESET_HIGH_WATER_MARK = "5"  # what clear_refs takes to restart VmHWM from the current RSS
SAMPLE_INTERVAL_S = 0.05  # where the kernel's mark cannot be reset: short enough for a step


@dataclass
class Peak:
    """The peak of a block, in bytes: known once the block has ended."""

    bytes: int = 0


@contextmanager
def peak() -> Iterator[Peak]:
    """The peak memory of the block: allocated by torch on a GPU, else resident."""
    if torch.cuda.is_available():
        measure = gpu_peak
    else:
        hand_back_freed_memory()
        measure = resident_high_water_mark if high_water_mark_resets() else sampled_resident
    with measure() as measured:
        yield measured


@contextmanager
def gpu_peak() -> Iterator[Peak]:
    measured = Peak()
    torch.cuda.reset_peak_memory_stats()
    try:
        yield measured
    finally:
        measured.bytes = torch.cuda.max_memory_allocated()


def hand_back_freed_memory() -> None:
    """Return to the kernel the memory the process has freed but its C allocator still holds
    (glibc's ``malloc_trim``; elsewhere there is none to call and nothing is done)."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def high_water_mark_resets() -> bool:
    """Whether the kernel's peak resident size (VmHWM) restarts from now when told to (it is
    told): not outside Linux, on a kernel older than 4.0, in a sandbox that hides /proc."""
    try:
        CLEAR_REFS.write_text(RESET_HIGH_WATER_MARK)
    except OSError:
        return False
    return status_bytes("VmHWM") is not None


def status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status, in bytes."""
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB$", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


@contextmanager
def resident_high_water_mark() -> Iterator[Peak]:
    """The kernel's peak resident size, restarted at the block's start (where
    :func:`high_water_mark_resets`)."""
    CLEAR_REFS.write_text(RESET_HIGH_WATER_MARK)
    measured = Peak()
    try:
        yield measured
    finally:
        measured.bytes = status_bytes("VmHWM") or 0


@contextmanager
def sampled_resident(interval_s: float = SAMPLE_INTERVAL_S) -> Iterator[Peak]:
    """The largest resident size a thread sees, sampling every ``interval_s`` and at the end: a
    peak shorter than the interval may be missed."""
    process, measured, done = psutil.Process(), Peak(), threading.Event()

    def sample() -> None:
        measured.bytes = max(measured.bytes, process.memory_info().rss)

    def sample_until_done() -> None:
        while not done.wait(interval_s):
            sample()

    sample()
    sampler = threading.Thread(target=sample_until_done, name="peak-memory", daemon=True)
    sampler.start()
    try:
        yield measured
    finally:
        done.set()
        sampler.join()
        sample()
