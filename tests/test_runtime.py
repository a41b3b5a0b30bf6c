"""Devices, private generators and torch threads."""

import numpy as np
import pytest
import torch

from skebm._runtime import make_generator, resolve_device, thread_limit


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu-of-dreams")


def test_generators_are_private_and_seeded():
    state = torch.get_rng_state()
    a = torch.rand(3, generator=make_generator(7, "cpu"))
    b = torch.rand(3, generator=make_generator(7, "cpu"))
    c = torch.rand(3, generator=make_generator(np.random.RandomState(7), "cpu"))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())


def test_thread_limit_governs_torch_and_blas_then_restores():
    """numpy's BLAS pool (scikit-learn's EM runs in it) is limited with torch's."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before, blas_before = torch.get_num_threads(), blas_threads()
    with thread_limit(1):
        assert torch.get_num_threads() == 1
        assert blas_threads() <= {1}
    assert torch.get_num_threads() == before and blas_threads() == blas_before
    with pytest.raises(RuntimeError):
        with thread_limit(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before and blas_threads() == blas_before


def test_overlapping_thread_limits_restore_the_counts_whatever_ends_first():
    """Fits in a thread pool overlap: A starts, B starts, A ends, B ends. The
    counts are the process's; they must come back to what they were."""
    from threadpoolctl import threadpool_info

    def counts():
        return torch.get_num_threads(), [pool["num_threads"] for pool in threadpool_info()]

    before = counts()
    with thread_limit(1):  # the 2 below differs from what the blocks find
        first, second = thread_limit(2), thread_limit(1)
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)
        assert counts() == (1, [1] * len(before[1]))
    assert counts() == before
