"""Keep freed memory in the process on glibc, so large CPU tensors are not re-faulted.

With autograd, every activation of a forward pass stays alive until the backward pass, so a
big model allocates tens of fresh multi-megabyte buffers per step. glibc serves blocks above
its mmap threshold with ``mmap`` and unmaps them on ``free``; the next step then pays a page
fault (and zeroing) for every page again. On a DeepLab-v2 step at 160x320 this made backward
2.7x slower on CPU (measured in benchmarks/bench_seg_scoring.py). Raising the mmap and trim
thresholds keeps the memory in the heap for reuse. The cost: the process keeps its peak
memory instead of returning it to the system.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed large blocks instead of returning them; once per process.

    Returns:
        Whether the setting is active (``False`` off Linux/glibc; nothing changes then).
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # No mmap'd blocks at all: the mmap threshold cannot exceed 32 MiB, and activations of
    # a ResNet-101 at 640x1280 are 100 MB each. Every block then comes from the heap, which
    # is not trimmed below 1 GiB of free space, so freed activations are reused.
    ok = mallopt(_M_MMAP_MAX, 0)
    ok = ok and mallopt(_M_TRIM_THRESHOLD, 1 << 30) and mallopt(_M_TOP_PAD, 64 << 20)
    _tuned = bool(ok)
    return _tuned
