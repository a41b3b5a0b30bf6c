"""Energy networks."""

import copy
import subprocess
import sys
from unittest import mock

import pytest
import torch

from skebm.nets import ACTIVATIONS, ConvEnergy, MLPEnergy, OneHotCategories

def test_network_init_uses_only_its_generator():
    state = torch.get_rng_state()
    first = MLPEnergy(2, (8, 8), "relu", torch.Generator().manual_seed(0), fourier_features=4)
    second = MLPEnergy(2, (8, 8), "relu", torch.Generator().manual_seed(0), fourier_features=4)
    assert torch.equal(state, torch.get_rng_state())
    for p, q in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(p, q)
    zero = MLPEnergy(2, (8,), "silu", torch.Generator().manual_seed(0), zero_output=True)
    assert torch.equal(zero(torch.randn(5, 2)), torch.zeros(5))


def test_a_network_is_refused_for_its_activations_on_its_own_device(monkeypatch):
    """Parameters that fit do not make a network trainable: one pass of
    PASS_ROWS rows through a very wide layer must fit too, in the memory of
    the device the network is built on (on a GPU, the GPU's)."""
    import skebm._runtime

    asked = []
    monkeypatch.setattr(skebm._runtime, "available_memory",
                        lambda device: asked.append(device) or 2**30)
    # 2 x 20,000 Fourier features: 0.36 M parameters (6 MB with Adam's
    # moments), but a pass of 2048 rows holds 2048 x 40,011 floats forward
    # and back: 0.6 GiB, over half of the 1 GiB free.
    with pytest.raises(ValueError, match="would need about 0.6 GiB"):
        MLPEnergy(2, (8,), "relu", torch.Generator(), fourier_features=20_000)
    assert asked == [torch.device("cpu")]
    MLPEnergy(2, (8,), "relu", torch.Generator(), fourier_features=2_000)  # 0.06 GiB


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


NETWORKS = {
    "mlp": lambda activation, generator: MLPEnergy(3, (16, 16), activation, generator),
    "mlp, Fourier features": lambda activation, generator: MLPEnergy(
        3, (16, 16), activation, generator, fourier_features=6),
    "mlp, Fourier features, spectral norm": lambda activation, generator: MLPEnergy(
        3, (16, 16), activation, generator, fourier_features=6, spectral_norm=True),
    "cnn, spectral norm": lambda activation, generator: ConvEnergy(
        (1, 3, 1), (4, 6), activation, generator, spectral_norm=True),
    "cnn, three channels": lambda activation, generator: ConvEnergy(
        (3, 1, 1), (4, 6), activation, generator),
}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_the_gradient_by_hand_is_autograds(activation, network):
    """``energy_and_gradient`` (Langevin's gradient, taken back through the
    layers by hand) against autograd, at points spread over the
    activations' bends, in training mode (a spectral norm's power iteration
    runs once per weight read: once per pass on both ways)."""
    generator = torch.Generator().manual_seed(0)
    net = NETWORKS[network](activation, generator).double()
    twin = copy.deepcopy(net)
    x = 3 * torch.randn(40, 3, dtype=torch.float64, generator=generator)
    energy, grad = net.energy_and_gradient(x)
    x.requires_grad_(True)
    expected = twin(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    assert not energy.requires_grad and not grad.requires_grad
    torch.testing.assert_close(energy, expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert grad.abs().max() > 1e-3
    for ours, theirs in zip(net.state_dict().values(), twin.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)  # power iterations


def test_no_gradient_through_categories():
    net = MLPEnergy(2, (4,), "silu", torch.Generator().manual_seed(0),
                    categories=([False, True], [3]))
    with pytest.raises(TypeError, match="OneHotCategories"):
        net.energy_and_gradient(torch.tensor([[0.5, 1.0]]))


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_categories_looked_up_give_the_one_hot_layers_energy(spectral_norm, monkeypatch):
    """A network of wide categorical columns reads them by looking up the
    first layer's weight (OneHotCategories.into): the energy and every
    parameter's gradient are those of the one-hot rows through the same
    layers, to float32 rounding, and no one-hot row is made."""
    import skebm.nets

    monkeypatch.setattr(skebm.nets, "LOOKUP_CATEGORIES", 3)  # 3 and 5 categories: wide
    net = MLPEnergy(4, (16, 8), "silu", torch.Generator().manual_seed(0),
                    spectral_norm=spectral_norm, categories=([False, True, False, True], [3, 5]))
    twin = copy.deepcopy(net)  # a spectral norm's power iteration runs at each read
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(50, 1, generator=g),
                   torch.randint(0, 3, (50, 1), generator=g).float(),
                   torch.randn(50, 1, generator=g),
                   torch.randint(0, 5, (50, 1), generator=g).float()], 1)
    with mock.patch.object(OneHotCategories, "forward", side_effect=AssertionError("one-hot")):
        energy = net(x)
    expected = twin.layers(x).squeeze(-1)
    torch.testing.assert_close(energy, expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(energy.sum(), list(net.parameters()))
    expected_grads = torch.autograd.grad(expected.sum(), list(twin.parameters()))
    for ours, theirs in zip(grads, expected_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert all(grad.abs().max() > 0 for grad in grads[:2])  # the looked-up weight learns
