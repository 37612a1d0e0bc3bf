"""nobat serve holds glibc's mmap threshold, so read buffers never settle in the heap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import ctypes, sys
from nobat.malloc_tuning import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
fixed = sys.argv[1] == "fixed" and fix_mmap_threshold()
freed = bytearray(1 << 20)  # a reply this big, freed, is what raises glibc's threshold
del freed
before = libc.mallinfo2().hblks
block = bytearray(256 * 1024)  # asyncpg's read buffer
print(fixed, libc.mallinfo2().hblks - before)
"""


@pytest.mark.parametrize(("mode", "printed"), [
    ("dynamic", "False 0"),  # glibc's own way: the read buffer comes from the heap
    ("fixed", "True 1"),  # nobat serve's: it stays mapped, and goes back whole
])
def test_a_freed_large_block_no_longer_moves_read_buffers_into_the_heap(
        mode: str, printed: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          check=True, env={"PATH": "/usr/bin:/bin"},
                          cwd=Path(__file__).parents[1])
    assert done.stdout.split() == printed.split()
