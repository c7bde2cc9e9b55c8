"""train.reuse_host_memory: freed tensors' pages are reused instead of faulted in again (in a child
process: the switch is process-wide and one-way, so it must not leak into the test process)."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import resource, sys, torch
sys.path.insert(0, {src!r})
from sbert_nli.host_memory import keep_freed_memory

def faults_per_allocation(rows=30522, repeats=4, warmup=12):
    for _ in range(warmup):  # the heap grows to the working set over the first few (as the first steps)
        torch.zeros(rows, 768)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        torch.zeros(rows, 768)  # 30,522 rows = 94 MB: bert-base's word-embedding gradient
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / repeats

pages = 30522 * 768 * 4 // 4096
default = faults_per_allocation()
applied = keep_freed_memory()
kept = faults_per_allocation()
print(applied, default > 0.5 * pages, kept < 0.05 * pages)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning")
def test_keep_freed_memory_stops_page_faults_on_repeated_large_tensors(tmp_path):
    import os

    src = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src"))
    script = tmp_path / "faults.py"
    script.write_text(SCRIPT.format(src=src))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True", "True"]
