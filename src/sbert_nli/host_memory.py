"""Host-memory reuse for CPU training (``train.reuse_host_memory``).

Every training step on CPU allocates the same large tensors again: bf16 copies of the weights,
their gradients, activations. glibc serves blocks over 32 MB (and, as its threshold adapts, many
smaller ones) with a fresh ``mmap`` and returns them to the kernel on free, so each step pays a page
fault per 4 KiB page touched, on every one of those tensors. Told to keep freed memory in the heap
(no ``mmap`` for large blocks, no trimming), the allocator hands the same pages back next step.
The numbers computed are unchanged; only where the bytes live. Peak RSS stays what the step needs.

glibc only (Linux); elsewhere this does nothing. The settings are restored when training ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
GLIBC_DEFAULT_TRIM_THRESHOLD, GLIBC_DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc (not musl)
        libc.mallopt
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True):
    """Within the block, freed host memory stays mapped for reuse. Yields whether it applied."""
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    try:
        # Restored below even when only the first setting took.
        yield bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    finally:
        libc.mallopt(M_MMAP_MAX, GLIBC_DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
