"""Devices, private generators and torch threads."""

import numpy as np
import pytest
import torch

from skebm._runtime import make_generator, resolve_device, torch_threads

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


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
