"""Memory the process holds: measuring it, and giving freed memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

_malloc_trim = getattr(ctypes.CDLL(ctypes.util.find_library("c") or None), "malloc_trim", None)
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size (RSS), in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def release_memory() -> None:
    """Free unloaded models now: collect their reference cycles and hand the freed heap back to the OS.

    NOTE: a loaded SavedModel is a web of reference cycles; until the cycle collector runs, its
    functions stay registered in TensorFlow's runtime with their compiled graphs (~150 MB for a
    MobileNetV2), and glibc keeps freed memory in its arenas. Without this, RSS steps up by about a
    model after a hot swap.
    """
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
