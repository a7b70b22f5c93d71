"""Give the C heap's free pages back to the operating system between phases of a long-lived process, and
keep large blocks out of the heap while a phase runs.

glibc keeps what ``free`` returns in its arenas (one per thread that allocated, up to 8 per core) for the
next ``malloc``; torch's CPU tensors below glibc's mmap threshold come from there. A rollout actor that
ran a batch then sits idle through the update holding gigabytes nobody uses, and the train worker holds
its update's activations through the rollout: on a 24 GB machine, Ray's memory monitor killed rollout
actors for memory at most steps (demo_smollm2, 2026-12-06). Measured in one SmolLM2 rollout engine after a
GRPO-shaped round (16 episodes of ~1,500-token prompts, two turns, a weight load): 3,771 MB private
memory, 1,489 MB after ``malloc_trim(0)`` (``MALLOC_ARENA_MAX=2``, fewer arenas: 2,521 MB).

Within a phase, trimming comes too late. glibc serves blocks of at least its mmap threshold with their own
mappings, which go back to the OS when freed, but it raises that threshold to the size of each such block
freed, up to 32 MB. A SmolLM2 engine's per-layer KV buffers are a few to 32 MB: after the first ones are
freed, the next come from the heap and fragment it. One engine running 16 three-turn episodes of 1,400-1,900
token prompts peaked at 9.3 GB of RSS and held 5.1 GB after it; with the threshold fixed at 128 kB, 6.3 GB
and 1.6 GB, for 14 % more time (189 s against 167 s: each new block's pages fault in).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    """The process's own C library function ``name``, or None where it has none (macOS, musl)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def fix_mmap_threshold(nbytes: int | None) -> bool:
    """``mallopt(M_MMAP_THRESHOLD, nbytes)`` where the C library is glibc: blocks of at least ``nbytes``
    get their own mappings, freed straight back to the OS, and glibc no longer raises the threshold (module
    docstring). None: glibc's default. Returns whether it was set."""
    mallopt = _glibc("mallopt")
    if nbytes is None or mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, nbytes))


def release_free_heap() -> bool:
    """``malloc_trim(0)`` where the C library is glibc: every arena's free pages go back to the OS (what is
    in use stays). Returns whether it ran. Costs milliseconds; call it between phases, not per step."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
