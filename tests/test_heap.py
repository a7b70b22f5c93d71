"""The C heap's free pages go back to the OS: memory a thread allocated and freed (as the rollout
engine's steps do, in their worker thread) leaves this process's private memory only once
``release_free_heap`` runs."""

from __future__ import annotations

import ctypes
import sys
import threading

import pytest

from s3ray.heap import release_free_heap

BLOCK, BLOCKS = 64 * 1024, 3000  # below glibc's mmap threshold: from the thread's arena, ~190 MB


def private_mb() -> float:
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc: Linux")
def test_memory_a_thread_freed_goes_back_to_the_os_only_when_released():
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    kept = []

    def allocate_then_free_all_but_the_last():
        blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
        for b in blocks:
            ctypes.memset(b, 1, BLOCK)  # touched: private pages
        for b in blocks[:-1]:
            libc.free(b)
        kept.append(blocks[-1])  # the arena's top stays in use, so free() cannot shrink it by itself

    release_free_heap()  # what earlier tests freed would otherwise serve these blocks without new pages
    before = private_mb()
    worker = threading.Thread(target=allocate_then_free_all_but_the_last)
    worker.start()
    worker.join()
    held = private_mb() - before
    assert release_free_heap()
    released = private_mb() - before
    libc.free(kept[0])
    assert held > 150, held  # freed, yet still this process's memory
    assert released < held - 150, (held, released)


FRAGMENT = r"""
import ctypes, sys
from s3ray.heap import fix_mmap_threshold
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold(128 * 1024)
big = libc.malloc(30 << 20); ctypes.memset(big, 1, 30 << 20); libc.free(big)  # glibc raises its threshold
blocks = [libc.malloc(4 << 20) for _ in range(40)]
for b in blocks:
    ctypes.memset(b, 1, 4 << 20)
for b in blocks[:-1]:
    libc.free(b)  # 156 MB freed, the last block still in use
with open("/proc/self/smaps_rollup") as f:
    print(sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty")) // 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc: Linux")
def test_a_fixed_mmap_threshold_hands_freed_large_blocks_back_at_once():
    """glibc's raised threshold keeps 4 MB blocks in the heap, where one block still in use holds the
    freed ones below it; with the threshold fixed, each is mapped alone and unmapped when freed."""
    import subprocess

    def private_after(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", FRAGMENT, mode], check=True, capture_output=True,
                                  text=True).stdout)

    dynamic, fixed = private_after("dynamic"), private_after("fixed")
    assert dynamic - fixed > 120, (dynamic, fixed)
