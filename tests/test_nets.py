"""Energy networks."""

import torch

from skebm.nets import MLPEnergy

def test_network_init_uses_only_its_generator():
    state = torch.get_rng_state()
    first = MLPEnergy(2, (8, 8), "relu", torch.Generator().manual_seed(0), fourier_features=4)
    second = MLPEnergy(2, (8, 8), "relu", torch.Generator().manual_seed(0), fourier_features=4)
    assert torch.equal(state, torch.get_rng_state())
    for p, q in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(p, q)
    zero = MLPEnergy(2, (8,), "silu", torch.Generator().manual_seed(0), zero_output=True)
    assert torch.equal(zero(torch.randn(5, 2)), torch.zeros(5))
