"""glibc's malloc held to one mmap threshold, so that a long day leaves no holes in the heap."""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3
"""mallopt's parameter number in glibc's malloc.h."""

MMAP_THRESHOLD = 128 * 1024
"""glibc's own starting value: blocks over it are mapped apart and unmapped whole when freed."""


def fix_mmap_threshold() -> bool:
    """Hold the threshold where glibc starts it, as MALLOC_MMAP_THRESHOLD_ would. glibc raises
    it each time a mapped block is freed; asyncpg then gets the fresh 256 KiB block it reads
    each reply into from the heap and shrinks it, and the heap fills with holes (a clinic
    day's nobat held 5 MB more free heap by the evening, 6% of its size). False where the C
    library has no mallopt (not glibc), which leaves its own allocator as it is."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
