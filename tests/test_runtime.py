"""Devices, private generators and torch threads."""

import numpy as np
import pytest
import torch

from skebm._runtime import deterministic_kernels, make_generator, resolve_device, thread_limit


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu-of-dreams")


def test_cuda_is_refused_where_torch_says_it_is_unavailable(monkeypatch):
    """What torch.cuda.is_available() says decides (a pickle of a GPU fit
    then loads onto the CPU), not whether a tensor could still be made."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cannot use CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_deterministic_kernels_on_cuda_only_and_restored():
    """cuDNN's deterministic algorithms within a block on CUDA (a seed must
    give the same ShortRunEBM on images; its fastest convolutions add in a
    varying order), the caller's settings back after it; on the CPU nothing
    changes. The flags are set without a GPU, so this runs anywhere."""
    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    try:
        cudnn.deterministic, cudnn.benchmark = False, True
        with deterministic_kernels(torch.device("cpu")):
            assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with pytest.raises(KeyError):
            with deterministic_kernels(torch.device("cuda")):
                assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
                raise KeyError("a fit that fails")
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        # Blocks that overlap in two threads, the first ending first: the
        # settings hold until the last ends, then are the caller's again.
        first, second = (deterministic_kernels(torch.device("cuda")) for _ in range(2))
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
        second.__exit__(None, None, None)
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    finally:
        cudnn.deterministic, cudnn.benchmark = before


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
