"""Denormal floats flushed to zero on the calling thread for the span of a ``with`` block (the ONNX
backend's session runs), the thread's floating-point environment restored on exit.

Why: a softmax computes ``exp(x - max)``; where a row's logits span more than ~87, the small terms
are denormal floats (below 1.2e-38), which x86 cores handle in microcode at roughly a hundred times
the cost of a normal operation. Several of all-MiniLM-L6-v2's attention heads span that much, so
onnxruntime's Softmax took 0.48 s of a 3.2 s int8 encode of 2,000 sentences, 0.15 s with the
denormals flushed (one thread; benchmarks/RESULTS.md §3): int8 encoding is ~10 % faster. Flushing
changes a result only where a term below 1.2e-38 is dropped against terms near 1.

onnxruntime's own switch (session config ``session.set_denormal_as_zero``) sets the flags on its
intra-op pool threads, but on the calling thread (which runs the whole graph with one thread, and a
share of every op with more) only while the process's first session is being created, and then for
good. Here the two MXCSR bits, flush-to-zero and denormals-are-zero, are set on entry and the
previous environment is put back on exit, so the process is left as found. The flags are per thread:
running threads are not touched, and a thread started inside the block inherits them (Linux copies
the creator's floating-point state); the backend starts none there but onnxruntime's own pool, which
flushes anyway.

x86-64 Linux with glibc only (``fegetenv``/``fesetenv`` through ctypes); elsewhere the block runs
with the flags as they are and :func:`available` is False.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys
from contextlib import contextmanager

MXCSR_FTZ, MXCSR_DAZ = 0x8000, 0x0040  # Intel SDM vol. 1, 10.2.3: flush-to-zero, denormals-are-zeros
FENV_SIZE, MXCSR_OFFSET = 32, 28  # glibc x86-64 fenv_t: the 28-byte x87 environment, then mxcsr


@functools.cache
def _libm():
    if not (sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")):
        return None
    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018 - present only in glibc (musl's fenv_t differs)
        libm = ctypes.CDLL("libm.so.6")
        libm.fegetenv  # noqa: B018
        libm.fesetenv  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libm


def available() -> bool:
    """Whether :func:`denormals_as_zero` can set the flags on this platform (x86-64 glibc)."""
    return _libm() is not None


@contextmanager
def denormals_as_zero():
    """Within the block, the calling thread flushes denormal results and inputs to zero; on exit its
    floating-point environment (MXCSR and x87 state) is restored exactly. Yields whether the flags
    were set (False on platforms other than x86-64 glibc, where nothing changes)."""
    libm = _libm()
    saved = ctypes.create_string_buffer(FENV_SIZE)
    if libm is None or libm.fegetenv(saved) != 0:
        yield False
        return
    flushed = ctypes.create_string_buffer(saved.raw, FENV_SIZE)
    mxcsr = int.from_bytes(saved.raw[MXCSR_OFFSET:FENV_SIZE], "little") | MXCSR_FTZ | MXCSR_DAZ
    flushed[MXCSR_OFFSET:FENV_SIZE] = mxcsr.to_bytes(4, "little")
    libm.fesetenv(flushed)
    try:
        yield True
    finally:
        libm.fesetenv(saved)
