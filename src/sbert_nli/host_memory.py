"""Host-memory reuse for CPU training (``train.reuse_host_memory``), for the CLI's process.

Every training step on CPU allocates the same large tensors again: bf16 copies of the weights,
their gradients, activations. glibc serves blocks over 32 MB (and, as its threshold adapts, many
smaller ones) with a fresh ``mmap`` and returns them to the kernel on free, so each step pays a page
fault per 4 KiB page touched, on every one of those tensors. Told to keep freed memory in the heap
(no ``mmap`` for large blocks, no trimming), the allocator hands the same pages back next step.
The numbers computed are unchanged; only where the bytes live. Measured +6 % (MiniLM) / +8 %
(bert-base shape) training speed (benchmarks/RESULTS.md).

Why only the CLI applies it: ``mallopt`` changes the whole process, glibc has no getter for the
previous values, and setting any of these parameters switches glibc's adaptive mmap threshold off
for good, so it cannot be undone. The CLI's process ends with the run, so there it is harmless;
``sbert_nli.train.train()`` called from Python never touches the allocator. A notebook that wants
the speed anyway calls :func:`keep_freed_memory` itself, accepting the process-wide change.

glibc only (Linux); elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


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


def keep_freed_memory() -> bool:
    """For the rest of this process, keep freed host memory mapped for reuse (no ``mmap`` for large
    blocks, no heap trimming). Irreversible (see the module docstring). Returns whether it applied."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
