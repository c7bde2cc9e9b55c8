"""train.reuse_host_memory: freed tensors' pages are reused instead of faulted in again."""

import resource
import sys

import pytest
import torch

from sbert_nli.host_memory import reuse_freed_memory


def _faults_per_allocation(repeats: int = 4, warmup: int = 12) -> float:
    for _ in range(warmup):  # the heap grows to the working set over the first few (as the first steps)
        torch.zeros(30522, 768)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        torch.zeros(30522, 768)  # 94 MB: bert-base's word-embedding gradient
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / repeats


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning")
def test_reuse_stops_page_faults_on_repeated_large_tensors_and_is_restored():
    pages = 30522 * 768 * 4 // 4096
    assert _faults_per_allocation() > 0.5 * pages  # glibc's default: mmap, then give back on free
    with reuse_freed_memory() as applied:
        assert applied
        assert _faults_per_allocation() < 0.05 * pages
    assert _faults_per_allocation() > 0.5 * pages  # defaults restored after training


def test_disabled_does_nothing():
    with reuse_freed_memory(enabled=False) as applied:
        assert not applied
