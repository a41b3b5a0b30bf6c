"""Energy networks: a scalar energy ``E(x)`` from a multilayer perceptron or,
for images, a small convolutional network.

Every network here is initialised from an explicit ``torch.Generator``: building
one neither reads nor advances torch's global random state, so a seeded
estimator is reproducible and leaves the user's random streams alone. Its
parameters are float32, whatever torch's default dtype.
"""

import math
import numbers

import numpy as np
import torch
from torch import nn

from ._runtime import draw_seed, refuse_beyond_memory

__all__ = ["ACTIVATIONS", "ConvEnergy", "FourierFeatures", "MLPEnergy", "energy_and_gradient",
           "fourier_feature_count", "layer_shapes", "layer_sizes", "network_work"]

#: Activation names accepted by the estimators' ``activation`` parameter.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
}

# The gradient through each activation layer, from the gradient at its output
# and its input ``a`` and output ``h``: torch's own backward kernels, those
# autograd calls.
_ACTIVATION_BACKWARD = {
    nn.ReLU: lambda layer, grad, a, h: torch.ops.aten.threshold_backward(grad, h, 0),
    nn.LeakyReLU: lambda layer, grad, a, h: torch.ops.aten.leaky_relu_backward(
        grad, a, layer.negative_slope, False),
    nn.SiLU: lambda layer, grad, a, h: torch.ops.aten.silu_backward(grad, a),
    nn.ELU: lambda layer, grad, a, h: torch.ops.aten.elu_backward(
        grad, layer.alpha, 1, 1, False, a),
    nn.Softplus: lambda layer, grad, a, h: torch.ops.aten.softplus_backward(
        grad, a, layer.beta, layer.threshold),
    nn.Tanh: lambda layer, grad, a, h: torch.ops.aten.tanh_backward(grad, h),
}


#: Data of at most this many features get Fourier features by default
#: (``fourier_features="auto"``): a plain MLP learns sharp 1-D and 2-D
#: structure slowly, while on more features they overfit small tables.
LOW_DIMENSION = 2
AUTO_FOURIER_FEATURES = 64
#: Categories per categorical column on average past which a network's
#: first layer looks up each row's categories in its weight rather than
#: multiplying one-hot rows (:meth:`OneHotCategories.into`): below, the
#: product cost less on the CPU (benchmarks/RESULTS.md).
LOOKUP_CATEGORIES = 128


def layer_sizes(value, default=None, *, allow_empty=False):
    """The widths a ``hidden_layer_sizes`` parameter asks for, as a tuple of
    positive ints: an int is one layer, None is ``default``; anything else
    (zero, a negative or fractional width) is a ``ValueError``."""
    sizes = default if value is None else (tuple(value) if np.iterable(value) else (value,))
    if (not sizes and not allow_empty) or any(
            isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in sizes):
        raise ValueError(
            f"hidden_layer_sizes must be {'' if allow_empty else 'one or more '}positive "
            f"integers, got {value!r}.")
    return tuple(int(n) for n in sizes)


def fourier_feature_count(setting, n_features):
    """The ``fourier_features`` parameter resolved: "auto" is
    :data:`AUTO_FOURIER_FEATURES` for at most :data:`LOW_DIMENSION` features, 0 above."""
    if setting == "auto":
        return AUTO_FOURIER_FEATURES if n_features <= LOW_DIMENSION else 0
    return setting


def layer_shapes(n_features, hidden_sizes, *, n_fourier=0, image_shape=None):
    """``(inputs, outputs, positions)`` of each layer of :class:`MLPEnergy`
    (or, with ``image_shape``, :class:`ConvEnergy`); positions are the pixels
    a convolution is applied at, 1 for a dense layer. For the estimators'
    estimates of work and memory."""
    if image_shape is None:
        widths = [n_features + 2 * n_fourier, *hidden_sizes, 1]
        return [(a, b, 1) for a, b in zip(widths[:-1], widths[1:])]
    n_in, height, width = image_shape
    shapes = []
    for index, n_out in enumerate(hidden_sizes):
        if index:
            height, width = (height + 1) // 2, (width + 1) // 2
        shapes.append((9 * n_in, n_out, height * width))
        n_in = n_out
    return shapes + [(n_in * height * width, 1, 1)]


def network_work(shapes):
    """Multiply-adds of one row through layers of these :func:`layer_shapes`."""
    return sum(n_in * n_out * positions for n_in, n_out, positions in shapes)


#: The most rows skebm sends through an energy network in one pass
#: (NCEDensity's validation draws); larger sets go through in chunks.
PASS_ROWS = 2048


def _refuse_too_large(shapes, n_extra_parameters, device):
    """Refuse, before allocating, a network of these :func:`layer_shapes`
    (and ``n_extra_parameters`` outside them) whose training the memory of
    ``device`` cannot hold: values, gradients and Adam's two moments (16
    bytes a parameter) and the float32 activations of :data:`PASS_ROWS`
    rows, forward and backward (8 bytes a unit). On a large GPU the
    parameters may fit where one pass's activations do not."""
    n_parameters = sum((n_in + 1) * n_out for n_in, n_out, _ in shapes) + n_extra_parameters
    units = shapes[0][0] * shapes[0][2] + sum(n_out * positions for _, n_out, positions in shapes)
    refuse_beyond_memory(16 * n_parameters + 8 * PASS_ROWS * units,
                         f"Training an energy network of {n_parameters:,} parameters",
                         "Lower hidden_layer_sizes or fourier_features.", device)


def _linear(n_in, n_out, generator, *, zero=False):
    """An ``nn.Linear`` initialised like torch's default, from ``generator``.

    ``zero=True`` starts the layer at exactly zero (weights and bias).
    """
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out, device=generator.device,
                               dtype=torch.float32)
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


def _spectrally_normalized(layer, generator):
    """``layer`` with its weight divided by its largest singular value
    (Miyato et al. 2018), the power iteration's start drawn from ``generator``.

    torch's ``spectral_norm`` draws that start from the global random state;
    it is drawn here under a seed from ``generator`` and the global state is
    restored afterwards, so the user's random streams are left alone.
    """
    devices = [generator.device] if generator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(draw_seed(generator))
        return nn.utils.parametrizations.spectral_norm(layer)


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
        projection = torch.randn(n_inputs, n_features, generator=generator,
                                 dtype=torch.float32, device=generator.device)
        self.register_buffer("projection", projection * scale)
        self.n_outputs = n_inputs + 2 * n_features

    def forward(self, x):
        return self.forward_and_backward(x)[0]

    def forward_and_backward(self, x):
        """The features of ``x`` and a function that takes a gradient at them
        back to ``x``."""
        angles = x @ self.projection
        sin, cos = torch.sin(angles), torch.cos(angles)

        def backward(grad):
            n, k = x.shape[-1], angles.shape[-1]
            return grad[..., :n] + (grad[..., n:n + k] * cos
                                    - grad[..., n + k:] * sin) @ self.projection.T

        return torch.cat([x, sin, cos], dim=-1), backward


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
    spectral_norm : bool, default=False
        Spectrally normalize the hidden layers (not the output layer, so the
        energy's scale stays free), which bounds how fast the energy can
        change with ``x``.
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
        spectral_norm=False,
        categories=None,
    ):
        super().__init__()
        layers = []
        if categories is not None:
            layers.append(OneHotCategories(*categories))
            n_inputs = layers[0].n_outputs
        self.shapes = layer_shapes(n_inputs, hidden_layer_sizes, n_fourier=fourier_features)
        _refuse_too_large(self.shapes, n_inputs * fourier_features, generator.device)
        width = n_inputs
        if fourier_features:
            encoding = FourierFeatures(n_inputs, fourier_features, fourier_scale, generator)
            layers.append(encoding)
            width = encoding.n_outputs
        for size in hidden_layer_sizes:
            layer = _linear(width, size, generator)
            if spectral_norm:
                layer = _spectrally_normalized(layer, generator)
            layers += [layer, ACTIVATIONS[activation]()]
            width = size
        layers.append(_linear(width, 1, generator, zero=zero_output))
        self.layers = nn.Sequential(*layers)

    def is_zero(self):
        """Whether the output layer is exactly zero (so is ``E``)."""
        output = self.layers[-1]
        return not (output.weight.any() or output.bias.any())

    def forward(self, x):
        layers = self.layers
        if (isinstance(layers[0], OneHotCategories) and isinstance(layers[1], nn.Linear)
                and layers[0].is_wide):
            x, layers = layers[0].into(layers[1], x), layers[2:]
        return layers(x).squeeze(-1)

    def energy_and_gradient(self, x):
        """``(E(x), dE/dx)`` by :func:`energy_and_gradient`. Categorical
        inputs have no gradient: a network with categories refuses."""
        return energy_and_gradient(self.layers, x)


@torch.no_grad()
def energy_and_gradient(layers, x):
    """``(E(x), dE/dx)`` of a network whose ``layers`` end in one output, the
    gradient taken back through them by hand with torch's own backward
    kernels, rather than by autograd, whose bookkeeping costs more than the
    arithmetic itself on a few Langevin chains of a small network (see
    benchmarks/RESULTS.md). Neither carries gradients to the parameters."""
    backwards = []
    for layer in layers:
        x, backward = _forward_and_backward(layer, x)
        backwards.append(backward)
    grad = torch.ones_like(x)
    for backward in reversed(backwards):
        grad = backward(grad)
    return x.squeeze(-1), grad


def _forward_and_backward(layer, x):
    """``layer(x)`` and a function that takes a gradient at it back to ``x``.
    A weight is read once: a spectral norm is recomputed at each read."""
    if isinstance(layer, FourierFeatures):
        return layer.forward_and_backward(x)
    if isinstance(layer, nn.Linear):
        weight = layer.weight
        return nn.functional.linear(x, weight, layer.bias), lambda grad: grad @ weight
    if isinstance(layer, nn.Conv2d):
        weight = layer.weight
        settings = layer.stride, layer.padding, layer.dilation, layer.groups
        return (nn.functional.conv2d(x, weight, layer.bias, *settings),
                lambda grad: nn.grad.conv2d_input(x.shape, weight, grad, *settings))
    if isinstance(layer, nn.Flatten):
        return layer(x), lambda grad: grad.view(x.shape)
    if type(layer) not in _ACTIVATION_BACKWARD:
        raise TypeError(f"No input gradient through {type(layer).__name__}.")
    h = layer(x)
    return h, lambda grad: _ACTIVATION_BACKWARD[type(layer)](layer, grad, x, h)


class OneHotCategories(nn.Module):
    """The rows with each categorical column (category codes ``0 .. K-1``)
    replaced by its one-hot encoding, after the continuous columns: how a
    network reads a table's categories.

    Parameters
    ----------
    categorical : array-like of bool, shape (n_features,)
    n_categories : sequence of int
        Categories of each categorical column, in column order.
    """

    def __init__(self, categorical, n_categories):
        super().__init__()
        self.register_buffer("categorical", torch.as_tensor(categorical, dtype=torch.bool,
                                                            device="cpu"))
        self.n_categories = [int(count) for count in n_categories]
        self.n_outputs = int((~self.categorical).sum()) + sum(self.n_categories)

    def forward(self, x):
        codes = x[:, self.categorical].long()
        return torch.cat([x[:, ~self.categorical]] + [
            nn.functional.one_hot(codes[:, j], count).to(x.dtype)
            for j, count in enumerate(self.n_categories)], 1)

    @property
    def is_wide(self):
        """Whether the columns have more than :data:`LOOKUP_CATEGORIES`
        categories on average, so that :meth:`into` costs less than the
        product of the one-hot rows."""
        return sum(self.n_categories) > LOOKUP_CATEGORIES * len(self.n_categories)

    def into(self, linear, x):
        """``linear(self(x))`` without the one-hot rows: each category's
        column of the weight is looked up, so that a column of thousands of
        categories costs a row one column of the weight, not thousands."""
        weight = linear.weight  # read once: a spectral norm is recomputed at each read
        n_continuous = x.shape[1] - len(self.n_categories)
        offsets = torch.as_tensor(np.cumsum([n_continuous, *self.n_categories[:-1]]),
                                  device=x.device)
        cells = (x[:, self.categorical].long() + offsets).reshape(-1)
        looked_up = weight.T.contiguous().index_select(0, cells).view(len(x), len(offsets), -1)
        return (nn.functional.linear(x[:, ~self.categorical], weight[:, :n_continuous],
                                     linear.bias) + looked_up.sum(1))


class ConvEnergy(nn.Module):
    """A small convolutional network with one scalar output, for images.

    Rows come flattened (``C * H * W`` values, as ``load_digits`` gives its
    8x8 images) and are viewed as ``(C, H, W)`` images. Each hidden layer is a
    3x3 convolution followed by the activation; the first keeps the
    resolution, each next one halves it (stride 2); a linear layer maps the
    last feature map to the energy. Weights and images are laid out
    channels-last, in which the CPU's convolutions of Langevin's gradients
    ran faster (benchmarks/RESULTS.md).

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``.
    channels : tuple of int
        Output channels of each convolution.
    activation : str
        A key of :data:`ACTIVATIONS`.
    generator : torch.Generator
        Source of the initial weights.
    zero_output : bool, default=False
        Start with the output layer at zero (``E(x) = 0`` everywhere).
    spectral_norm : bool, default=False
        Spectrally normalize the convolutions (their weights reshaped to
        matrices, Miyato et al. 2018).

    References
    ----------
    .. [1] Miyato, T., Kataoka, T., Koyama, M. and Yoshida, Y. "Spectral
       normalization for generative adversarial networks." ICLR 2018.
    """

    def __init__(self, image_shape, channels, activation, generator, *, zero_output=False,
                 spectral_norm=False):
        super().__init__()
        self.image_shape = tuple(int(size) for size in image_shape)
        self.shapes = layer_shapes(None, channels, image_shape=self.image_shape)
        _refuse_too_large(self.shapes, 0, generator.device)
        n_channels, height, width = self.image_shape
        layers = []
        for index, n_out in enumerate(channels):
            stride = 1 if index == 0 else 2
            conv = nn.utils.skip_init(nn.Conv2d, n_channels, n_out, 3, stride=stride, padding=1,
                                      device=generator.device, dtype=torch.float32)
            with torch.no_grad():  # torch's default bound, from the generator
                bound = 1.0 / math.sqrt(n_channels * 9)
                nn.init.uniform_(conv.weight, -bound, bound, generator=generator)
                nn.init.uniform_(conv.bias, -bound, bound, generator=generator)
            if spectral_norm:
                conv = _spectrally_normalized(conv, generator)
            layers += [conv, ACTIVATIONS[activation]()]
            n_channels = n_out
            if stride == 2:
                height, width = (height + 1) // 2, (width + 1) // 2
        layers += [nn.Flatten(), _linear(n_channels * height * width, 1, generator,
                                         zero=zero_output)]
        self.layers = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def _images(self, x):
        """Rows as ``(n, C, H, W)`` images, laid out channels-last."""
        return x.view(-1, *self.image_shape).contiguous(memory_format=torch.channels_last)

    def forward(self, x):
        return self.layers(self._images(x)).squeeze(-1)

    def energy_and_gradient(self, x):
        """``(E(x), dE/dx)`` by :func:`energy_and_gradient`."""
        energy, grad = energy_and_gradient(self.layers, self._images(x))
        return energy, grad.reshape(x.shape)

    def is_zero(self):
        """Whether the output layer is exactly zero (so is ``E``)."""
        output = self.layers[-1]
        return not (output.weight.any() or output.bias.any())
