"""sbert_nli.denormals: the calling thread flushes denormals inside the block, and only there."""

from __future__ import annotations

import numpy as np
import pytest

from sbert_nli import denormals

pytestmark = pytest.mark.skipif(not denormals.available(), reason="sets x86-64 MXCSR flags through glibc only")


def _flushed() -> tuple[bool, bool]:
    daz = np.float32(1e-39) * np.float32(1.0) == 0  # a denormal input read as zero
    ftz = np.float32(1e-30) * np.float32(1e-10) == 0  # a denormal result written as zero
    return bool(daz), bool(ftz)


def test_flags_set_inside_the_block_and_restored_after():
    assert _flushed() == (False, False)
    with denormals.denormals_as_zero() as on:
        assert on and _flushed() == (True, True)
    assert _flushed() == (False, False)


def test_flags_restored_when_the_block_raises():
    with pytest.raises(RuntimeError), denormals.denormals_as_zero():
        raise RuntimeError("inside")
    assert _flushed() == (False, False)


def test_running_threads_keep_their_flags():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(_flushed).result()  # the worker thread exists before the block
        with denormals.denormals_as_zero():
            assert pool.submit(_flushed).result() == (False, False)
