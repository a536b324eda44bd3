"""Process-level settings that decide CPU inference speed; call `tune_cpu_runtime()` once at start-up."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling for this knob on 64-bit
_TRIM_THRESHOLD_BYTES = 1 << 31


def tune_cpu_runtime(threads: int | None = None) -> None:
    """Stop glibc from unmapping and re-faulting the head's large buffers on every frame.

    conv1's output alone is 12.6 MB at 1024x1024; with glibc's defaults each frame mmaps and unmaps it,
    and page faults double the head's time. Raising the mmap and trim thresholds keeps the buffers in
    the heap (same effect as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_, but without a re-exec).
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name and os.environ.get("FROSTED_KEEP_MALLOC") is None:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "mallopt"):
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    if threads is not None:
        torch.set_num_threads(threads)


def leave_cores_to_runtime() -> None:
    """When another runtime runs the model (`facesplit.runtimes`), torch only adds the noise: small element-wise
    ops. One torch thread then, so torch's pool never waits on the cores the runtime's own threads hold: on a
    busy 2-core machine, the noise of a 1024x576 frame took 0.2 ms on one thread and over 150 ms on two, its
    threads parked at every op's barrier."""
    torch.set_num_threads(1)
