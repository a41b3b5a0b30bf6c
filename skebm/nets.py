"""Energy networks: a scalar energy ``E(x)`` from a multilayer perceptron.

Every network here is initialised from an explicit ``torch.Generator``: building
one neither reads nor advances torch's global random state, so a seeded
estimator is reproducible and leaves the user's random streams alone.
"""

import math

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "FourierFeatures", "MLPEnergy"]

#: Activation names accepted by the estimators' ``activation`` parameter.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
}


def _linear(n_in, n_out, generator, *, zero=False):
    """An ``nn.Linear`` initialised like torch's default, from ``generator``.

    ``zero=True`` starts the layer at exactly zero (weights and bias).
    """
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out, device=generator.device)
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
            layer.bias.zero_()
        else:
            # torch's default for nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            bound = 1.0 / math.sqrt(n_in)
            nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


class FourierFeatures(nn.Module):
    """Random Fourier features: ``x -> [x, sin(x B), cos(x B)]``.

    A fixed (not trained) Gaussian projection ``B`` of standard deviation
    ``scale`` lets a small MLP represent sharp, oscillating structure such as
    thin rings or the edges of a checkerboard, which a plain MLP on ``x`` learns
    only slowly (Tancik et al. 2020).

    Parameters
    ----------
    n_inputs : int
        Dimension of ``x``.
    n_features : int
        Number of frequencies; the output has ``n_inputs + 2 * n_features``
        columns.
    scale : float
        Standard deviation of the frequencies, in units of the (standardized)
        input.
    generator : torch.Generator
        Source of the random projection.

    References
    ----------
    .. [1] Tancik, M. et al. "Fourier features let networks learn high frequency
       functions in low dimensional domains." NeurIPS 2020.
    """

    def __init__(self, n_inputs, n_features, scale, generator):
        super().__init__()
        projection = torch.randn(n_inputs, n_features, generator=generator, device=generator.device)
        self.register_buffer("projection", projection * scale)
        self.n_outputs = n_inputs + 2 * n_features

    def forward(self, x):
        angles = x @ self.projection
        return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class MLPEnergy(nn.Module):
    """A multilayer perceptron with one scalar output, read as an energy.

    Parameters
    ----------
    n_inputs : int
        Number of input features.
    hidden_layer_sizes : tuple of int
        Width of each hidden layer.
    activation : str
        A key of :data:`ACTIVATIONS`.
    generator : torch.Generator
        Source of the initial weights.
    fourier_features : int, default=0
        If positive, the input first goes through :class:`FourierFeatures`
        with this many frequencies.
    fourier_scale : float, default=1.0
        Standard deviation of those frequencies.
    zero_output : bool, default=False
        Start with the output layer at zero, so that ``E(x) = 0`` everywhere
        at initialisation (for a residual energy on top of a base density).
    """

    def __init__(
        self,
        n_inputs,
        hidden_layer_sizes,
        activation,
        generator,
        *,
        fourier_features=0,
        fourier_scale=1.0,
        zero_output=False,
    ):
        super().__init__()
        layers = []
        width = n_inputs
        if fourier_features:
            encoding = FourierFeatures(n_inputs, fourier_features, fourier_scale, generator)
            layers.append(encoding)
            width = encoding.n_outputs
        for size in hidden_layer_sizes:
            layers += [_linear(width, size, generator), ACTIVATIONS[activation]()]
            width = size
        layers.append(_linear(width, 1, generator, zero=zero_output))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x).squeeze(-1)
