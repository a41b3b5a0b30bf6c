"""Energy networks."""

import subprocess
import sys

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


def test_a_first_fit_imports_nothing_a_ctrl_c_could_leave_half_done():
    """torch imports torch._dynamo and sympy lazily, on the first optimizer
    and the first ``skip_init``; a Ctrl-C in that import broke every later
    fit. skebm imports them itself: building networks and optimizers (a
    fresh process's first fit) imports neither."""
    script = """
import sys
import torch
import skebm
from skebm.nets import ConvEnergy, MLPEnergy
from skebm.optim import LazyAdam

before = set(sys.modules)
generator = torch.Generator().manual_seed(0)
mlp = MLPEnergy(2, (8,), "silu", generator, fourier_features=4, spectral_norm=True)
conv = ConvEnergy((1, 4, 4), (2, 4), "silu", generator)
for optimizer in (torch.optim.Adam(mlp.parameters()), LazyAdam(conv.parameters(), lr=0.1)):
    optimizer.zero_grad()
    (mlp(torch.randn(3, 2)).sum() + conv(torch.randn(3, 16)).sum()).backward()
    optimizer.step()
print(sorted(name for name in set(sys.modules) - before
             if name.split(".")[0] == "sympy" or name.startswith("torch._dynamo")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
