"""train.reuse_host_memory: freed tensors' pages are reused instead of faulted in again."""

import ctypes
import resource
import sys

import pytest
import torch

from sbert_nli.host_memory import reuse_freed_memory

ROW = 768 * 4  # bytes per row of a [rows, 768] float32 tensor


def _faults_per_allocation(rows: int = 30522, repeats: int = 4, warmup: int = 12) -> float:
    for _ in range(warmup):  # the heap grows to the working set over the first few (as the first steps)
        torch.zeros(rows, 768)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        torch.zeros(rows, 768)  # 30,522 rows = 94 MB: bert-base's word-embedding gradient
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / repeats


def _heap_bytes() -> int:
    """glibc's main heap size (mallinfo2().arena)."""

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    return mallinfo2().arena


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning")
def test_reuse_stops_page_faults_on_repeated_large_tensors_and_is_restored():
    pages = 30522 * ROW // 4096
    assert _faults_per_allocation() > 0.5 * pages  # glibc's default: mmap, then give back on free
    with reuse_freed_memory() as applied:
        assert applied
        assert _faults_per_allocation() < 0.05 * pages
    # Restored: mmap again. A tensor larger than the whole heap, so that free space the block above
    # left in the heap cannot serve it whether or not the settings came back.
    rows = (_heap_bytes() + (64 << 20)) // ROW
    assert _faults_per_allocation(rows) > 0.5 * rows * ROW // 4096


def test_disabled_does_nothing():
    with reuse_freed_memory(enabled=False) as applied:
        assert not applied
