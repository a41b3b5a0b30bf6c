"""Energy-based models trained by maximum likelihood with short-run Langevin MCMC."""

import contextlib
import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ._base import LikelihoodDensityMixin, TorchEstimator
from .nets import ACTIVATIONS, ConvEnergy, MLPEnergy
from .noise import GaussianMixtureNoise, fit_base
from .partition import annealed_importance_log_partition, grid_log_integral
from .samplers import langevin

__all__ = ["ShortRunEBM"]

#: Default widths of the MLP's hidden layers, and channels of the CNN's convolutions.
_MLP_SIZES = (128, 128, 128)
_CNN_CHANNELS = (32, 64, 128)

#: Data of at most this many features get Fourier features by default, and
#: log Z by grid integration rather than AIS.
_LOW_DIMENSION = 2
_AUTO_FOURIER_FEATURES = 64

#: The grid of log Z for one or two features: whitened coordinates in
#: [-GRID_RADIUS, GRID_RADIUS] (the base puts 1e-15 of its mass outside), so
#: many points per axis.
_GRID_RADIUS = 8.0
_GRID_POINTS = {1: 20_000, 2: 600}

#: An epoch whose mean energy gap |E(data) - E(negatives)| exceeds this (in
#: nats) means the chains no longer reach the data (or have found regions the
#: data never visits): ``fit`` warns. Healthy fits measured here stayed within
#: 1 nat on the 2-D toys and 2.5 on digits; failed ones ran to 20-100.
_GAP_WARNING = 10.0

#: Standard deviation of the noise added to images (standardized pixels) by
#: ``data_noise="auto"``: 0.075 in [0, 1] units on digits, about 1.2 of its
#: 17 grey levels.
_IMAGE_DATA_NOISE = 0.2

#: ``step_size="auto"``: the step starts here and is multiplied after each
#: update by exp(acceptance - target), so that a Metropolis test would accept
#: this share of the chains' steps. Measured: the 2-D toys learned well at
#: acceptance 0.98 (8gaussians, 2spirals) and diverged near 0.85-0.9; digits
#: gave equally good samples from 0.95 to 0.98.
_INITIAL_STEP_SIZE = 0.001
_TARGET_ACCEPTANCE = 0.97

#: Rows sampled (and chains run) at once by ``sample`` and ``sample_conditional``.
_SAMPLE_CHUNK = 1024


class _ShortRunModel(nn.Module):
    """The trainable model on the standardized data ``z``:
    ``log p(z) = log b(z) - E(z) - log Z``, ``b`` a Gaussian fitted to the
    data, ``E`` the energy network (zero at the start).

    Chains run in the base's whitened coordinates ``u``, ``z = mean + L u``
    (``L`` the Cholesky factor of its covariance), where the model's energy
    is ``|u|^2 / 2 + E(z(u))``: Langevin there is Langevin on ``z``
    preconditioned by the data's covariance, so one step size suits every
    direction however the features are scaled or correlated. ``buffer``
    holds the persistent chains (in ``u``; empty for short runs from the
    start); ``low`` and ``high`` the data's range, for ``init="uniform"``.
    """

    def __init__(self, energy, base, low, high, buffer_size, generator, init):
        super().__init__()
        self.energy = energy
        self.base = base
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.init = init
        n_features = len(low)
        self.register_buffer("buffer", torch.empty(0, n_features, device=low.device))
        self.buffer = self.draw_init(buffer_size, generator)

    @property
    def mean(self):
        return self.base.means[0]

    @property
    def cholesky(self):
        return self.base.cholesky[0]

    def to_data(self, U):
        return self.mean + U @ self.cholesky.T

    def to_whitened(self, Z):
        return torch.linalg.solve_triangular(self.cholesky, (Z - self.mean).T, upper=False).T

    def whitened_energy(self, U):
        return 0.5 * (U**2).sum(1) + self.energy(self.to_data(U))

    def unnormalized_log_density(self, Z):
        return self.base.log_prob(Z) - self.energy(Z)

    def draw_init(self, n_rows, generator):
        """Starting states of chains, in ``u``: the base Gaussian, or uniform
        over the data's range."""
        if self.init == "gaussian":
            return self.draw_standard(n_rows, generator)
        uniform = torch.rand(n_rows, len(self.low), generator=generator,
                             device=self.low.device, dtype=self.low.dtype)
        return self.to_whitened(self.low + (self.high - self.low) * uniform)

    def draw_standard(self, n_rows, generator):
        """Draws of the base in ``u``: standard normal."""
        return torch.randn(n_rows, len(self.low), generator=generator,
                           device=self.low.device, dtype=self.low.dtype)


@contextlib.contextmanager
def _frozen(module):
    """Parameters of ``module`` without gradients in the block: chains need
    the gradient in ``x`` only, and backward then skips the weights'."""
    flags = [(param, param.requires_grad) for param in module.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


class ShortRunEBM(LikelihoodDensityMixin, TorchEstimator):
    """Neural energy-based model trained by short-run Langevin MCMC.

    The model is ``p(x) = b(x) exp(-E(x)) / Z``: ``b`` a Gaussian fitted to
    the standardized training data (its covariance ridge chosen by
    cross-validated likelihood), ``E`` a neural network, an MLP for tables,
    a small convolutional network when ``image_shape`` is given (rows are
    then flattened images, as ``load_digits`` gives them). ``E`` starts at
    0, so training starts from the Gaussian; because ``E`` grows at most
    linearly, ``b exp(-E)`` always has a finite integral.

    Training is maximum likelihood. Its gradient is the difference between
    the energy's gradient at the data and at samples of the model
    ("negatives"), which Langevin chains provide: each update draws
    ``batch_size`` negatives by ``n_steps`` steps of

        x <- x - step_size * grad U(x) + noise_scale * xi,   xi ~ N(0, I),

    (``U = -log b + E``, run in the Gaussian's whitened coordinates so that
    one step size suits every direction) and takes an Adam step on

        mean E(data) - mean E(negatives) + alpha * mean(E(data)^2 + E(negatives)^2).

    The chains sample ``exp(-U / T)`` at the temperature
    ``T = noise_scale**2 / (2 * step_size)``; the default
    ``noise_scale="auto"`` is ``sqrt(2 * step_size)``, ``T = 1``, the model
    itself. A colder setting (Nijkamp et al. 2019 use ``step_size=1``,
    ``noise_scale=0.01``) trains the chains as a generator: samples can look
    sharper, while ``exp(-E)`` drifts away from a density of the data, and
    ``score_samples`` then measures the energy, not the samples.

    With ``persistent=True`` (default) the chains carry over from update to
    update in a replay buffer of ``buffer_size`` states, a fraction
    ``reinit_freq`` of each draw restarted from the ``init`` distribution
    (Du & Mordatch 2019; Grathwohl et al. 2020): long chains from short
    runs. With ``persistent=False`` every draw is a fresh short run from
    ``init`` (Nijkamp et al. 2019). ``sample`` draws the way the model was
    trained: it continues chains from the buffer (kept with the fitted model)
    for ``n_steps``, or runs fresh short runs.

    ``score_samples`` is a normalized log-likelihood, ``-E(x) + log b(x) -
    log Z``, in the units of X. log Z is computed the first time a
    likelihood is asked for: by grid integration for one or two features,
    by annealed importance sampling from the Gaussian ``b`` otherwise
    (``n_ais_chains`` runs over ``n_ais_temperatures`` temperatures, a
    Metropolis-adjusted Langevin step at each). ``log_partition_std_`` is
    AIS's standard error; AIS tends to underestimate log Z, so
    log-likelihoods lean optimistic when it is large.

    The default ``step_size="auto"`` adapts the step during training so
    that a Metropolis test would accept 97% of the chains' steps: the step
    a data set needs depends on its finest detail (0.0003 on checkerboard,
    0.003 on digits), and a step too large for it ruins the fit.

    What to expect (Nijkamp et al. 2020): maximum likelihood with short or
    poorly mixing chains learns an energy whose chains give good samples,
    not necessarily a good density. Measured with the defaults
    (``benchmarks/RESULTS.md``): on 2-D toys the held-out likelihood is
    0.07-0.19 nats per point below ``NCEDensity``'s; on digits the samples
    are as close to held-out images as a Gaussian mixture's (MMD^2 1.80x
    the floor against 1.82x, three splits), while the likelihood is about
    51 nats per image against the mixture's 68-86. For a density, prefer
    ``NCEDensity``; read ``history_``: an energy gap far from 0 means the
    chains no longer follow the model.

    ``sample_conditional`` fills in missing features: Langevin that moves
    only those, from the Gaussian's conditional distribution given the known
    ones.

    Read more in the :ref:`User Guide <short_run_ebm>`.

    Parameters
    ----------
    image_shape : tuple of int (C, H, W) or None, default=None
        Rows are images of this shape, flattened (``C * H * W`` features):
        the energy is a convolutional network, and the inputs are
        standardized by one mean and one scale for all pixels (tables: one
        per feature).
    hidden_layer_sizes : tuple of int or None, default=None
        Widths of the MLP's hidden layers (None: (128, 128, 128)); with
        ``image_shape``, the channels of the 3x3 convolutions, the first at
        full resolution, each next one halving it (None: (32, 64, 128)).
    activation : {"silu", "softplus", "elu", "tanh", "relu", "leaky_relu"}, default="silu"
        A smooth activation gives the chains smooth gradients.
    fourier_features : int or "auto", default="auto"
        Random Fourier features of the input of the MLP (64 for at most two
        features, none otherwise). Ignored with ``image_shape``.
    fourier_scale : float, default=2.0
        Standard deviation of their frequencies, on standardized inputs.
    spectral_norm : bool, default=False
        Spectrally normalize the hidden layers (smoother energies).
    alpha : float, default=0.01
        Weight of the penalty on squared energies, which keeps them near 0.
    n_steps : int, default=30
        Langevin steps per draw of negatives.
    step_size : float or "auto", default="auto"
        The gradient's coefficient in a Langevin step (whitened units). It
        must stay below the squared width of the data's sharpest structure:
        at 0.005, 8gaussians learned (a Metropolis test would have accepted
        96% of the chains' steps) while 2spirals and checkerboard diverged;
        at 0.01, 8gaussians lost 2 nats per point (84%). "auto" starts at
        0.001 and, after each update, multiplies the step by
        ``exp(acceptance - 0.97)``: it settles where 97% of the steps would
        be accepted, whatever the data's scale of detail. The value reached
        is ``step_size_``, which ``sample`` and ``sample_conditional`` use.
    noise_scale : float or "auto", default="auto"
        Standard deviation of a step's noise; "auto" is
        ``sqrt(2 * step_size)`` (temperature 1).
    grad_clip : float or None, default=None
        Clip each chain's energy gradient to this norm per step.
    persistent : bool, default=True
        Persistent chains in a replay buffer, or fresh short runs.
    buffer_size : int, default=10000
        States in the replay buffer (with ``persistent=True``).
    reinit_freq : float, default=0.01
        Fraction of each draw from the buffer restarted from ``init`` (JEM
        uses 0.05; on digits, with a fixed step of 0.005, 0.01 gave samples
        1.6x and 2.0x the MMD floor over two seeds, against 2.1x and 2.4x).
    init : {"gaussian", "uniform"}, default="gaussian"
        Where chains start: the fitted Gaussian, or uniform over the box of
        the training data's range.
    data_noise : float or "auto", default="auto"
        Standard deviation of Gaussian noise added to the data of each
        update (in standardized units), and to the fitted Gaussian's
        variances: the model is then one of the data smoothed by that
        noise, which keeps quantized data (pixels of 17 grey levels) from
        teaching the energy spikes no chain can follow. "auto": 0.2 with
        ``image_shape``, 0 otherwise.
    learning_rate : float, default=1e-3
        Adam's step, decayed to 0 on a cosine over the ``max_iter`` epochs.
    batch_size : int, default=64
        Data rows and negatives per update.
    max_iter : int, default=100
        Epochs. One epoch visits every training row, or 16,384 random ones
        of larger data. More is not always better (there is no early
        stopping): at 200 epochs the 2-D toys overfitted, the energy spiking
        at the training rows.
    weight_decay : float, default=0.0
        Adam's L2 penalty.
    warm_start : bool, default=False
        Continue from the fitted model (network and buffer) on ``fit``.
    n_ais_chains : int, default=100
        AIS runs for log Z (more than two features).
    n_ais_temperatures : int, default=1000
        Temperatures of each AIS run.
    verbose : int, default=0
        Show a progress bar over epochs.
    random_state : int, RandomState instance or None, default=None
        Seeds the private torch generator behind initialisation, minibatches,
        chains and AIS. An int gives identical fits on the CPU.
    device : {"auto", "cpu", "cuda", "mps"} or str, default="auto"
        Where torch runs; "auto" takes CUDA when available.
    n_threads : int or None, default=None
        torch threads on the CPU; None lets skebm choose (see
        :ref:`threads` in the user guide).

    Attributes
    ----------
    log_partition_ : float
        log Z used by ``score_samples`` (computed on first access).
    log_partition_std_ : float
        Its standard error (0 for grid integration).
    log_partition_method_ : {"grid", "ais"}
        How ``log_partition_`` is obtained.
    step_size_ : float
        The Langevin step the chains ended training with (``step_size``
        itself, or where "auto" settled).
    base_ridge_ : float
        The covariance ridge of the Gaussian ``b``, chosen by cross-validation.
    module_ : torch.nn.Module
        The fitted model: ``energy`` (the network), ``base`` (the Gaussian),
        ``buffer`` (the persistent chains, whitened).
    mean_, scale_ : ndarray of shape (`n_features_in_`,)
        Standardization of the inputs.
    device_ : torch.device
        Device the model was fitted on.
    history_ : list of dict
        Per epoch, means over its updates: ``"loss"``; ``"energy_gap"``,
        ``E(data) - E(negatives)`` (near 0 when the chains follow the model;
        far below 0, the chains have stopped reaching the data; far above,
        they found low energy where there is no data); ``"data_energy"`` and
        ``"chain_grad_norm"``, the norm of the energy's gradient along the
        chains (whitened units); ``"chain_acceptance"``, the rate at which a
        Metropolis test would accept the chains' steps (near 1: the step
        size suits the energy; well below: lower ``step_size``) and
        ``"step_size"``.
    n_iter_ : int
        Epochs run.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        When X has string column names.

    See Also
    --------
    NCEDensity : A density trained by noise-contrastive estimation.
    PCDRestrictedBoltzmann : RBM with Gibbs sampling and ``sample_conditional``.

    References
    ----------
    .. [1] Nijkamp, E., Hill, M., Zhu, S.-C. and Wu, Y. N. "Learning
       non-convergent non-persistent short-run MCMC toward energy-based
       model." NeurIPS 2019.
    .. [2] Nijkamp, E., Hill, M., Han, T., Zhu, S.-C. and Wu, Y. N. "On the
       anatomy of MCMC-based maximum likelihood learning of energy-based
       models." AAAI 2020.
    .. [3] Du, Y. and Mordatch, I. "Implicit generation and generalization
       in energy-based models." NeurIPS 2019.
    .. [4] Grathwohl, W. et al. "Your classifier is secretly an energy based
       model and you should treat it like one." ICLR 2020.
    .. [5] Neal, R. M. "Annealed importance sampling." Statistics and
       Computing 11 (2001).

    Examples
    --------
    >>> from skebm import ShortRunEBM
    >>> from skebm.datasets import make_toy_2d
    >>> X = make_toy_2d("8gaussians", 1000, random_state=0)
    >>> model = ShortRunEBM(max_iter=2, random_state=0).fit(X)
    >>> model.sample(3, random_state=0).shape
    (3, 2)
    >>> model.log_partition_method_
    'grid'
    """

    _parameter_constraints = {
        **{
            name: TorchEstimator._parameter_constraints[name]
            for name in ("learning_rate", "batch_size", "max_iter", "weight_decay",
                         "warm_start", "verbose", "random_state", "device", "n_threads")
        },
        "image_shape": [tuple, list, None],
        "hidden_layer_sizes": [tuple, list, None],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "fourier_features": [Interval(numbers.Integral, 0, None, closed="left"),
                             StrOptions({"auto"})],
        "fourier_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "spectral_norm": ["boolean"],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "n_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "step_size": [Interval(numbers.Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "noise_scale": [Interval(numbers.Real, 0, None, closed="left"), StrOptions({"auto"})],
        "grad_clip": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "persistent": ["boolean"],
        "buffer_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "reinit_freq": [Interval(numbers.Real, 0, 1, closed="both")],
        "init": [StrOptions({"gaussian", "uniform"})],
        "data_noise": [Interval(numbers.Real, 0, None, closed="left"), StrOptions({"auto"})],
        "n_ais_chains": [Interval(numbers.Integral, 2, None, closed="left")],
        "n_ais_temperatures": [Interval(numbers.Integral, 3, None, closed="left")],
    }

    _max_epoch_rows = 16_384

    def __init__(
        self,
        *,
        image_shape=None,
        hidden_layer_sizes=None,
        activation="silu",
        fourier_features="auto",
        fourier_scale=2.0,
        spectral_norm=False,
        alpha=0.01,
        n_steps=30,
        step_size="auto",
        noise_scale="auto",
        grad_clip=None,
        persistent=True,
        buffer_size=10_000,
        reinit_freq=0.01,
        init="gaussian",
        data_noise="auto",
        learning_rate=1e-3,
        batch_size=64,
        max_iter=100,
        weight_decay=0.0,
        warm_start=False,
        n_ais_chains=100,
        n_ais_temperatures=1000,
        verbose=0,
        random_state=None,
        device="auto",
        n_threads=None,
    ):
        self.image_shape = image_shape
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.fourier_features = fourier_features
        self.fourier_scale = fourier_scale
        self.spectral_norm = spectral_norm
        self.alpha = alpha
        self.n_steps = n_steps
        self.step_size = step_size
        self.noise_scale = noise_scale
        self.grad_clip = grad_clip
        self.persistent = persistent
        self.buffer_size = buffer_size
        self.reinit_freq = reinit_freq
        self.init = init
        self.data_noise = data_noise
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.weight_decay = weight_decay
        self.warm_start = warm_start
        self.n_ais_chains = n_ais_chains
        self.n_ais_temperatures = n_ais_temperatures
        self.verbose = verbose
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the model to X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, at least 2 rows, all finite; with ``image_shape``,
            one flattened image per row.
        y : None
            Ignored.

        Returns
        -------
        self : ShortRunEBM
            The fitted estimator.
        """
        return self._fit_module(X)

    # -- the pieces the shared training loop calls --------------------------
    def _check_input_values(self, X):
        if self.image_shape is None:
            return
        shape = tuple(self.image_shape)
        if len(shape) != 3 or any(not isinstance(n, numbers.Integral) or n < 1 for n in shape):
            raise ValueError(f"image_shape must be (C, H, W), positive integers; got {shape!r}.")
        if math.prod(shape) != X.shape[1]:
            raise ValueError(
                f"image_shape={shape!r} has {math.prod(shape)} values per image, but X has "
                f"{X.shape[1]} features (one flattened image per row)."
            )

    def _input_standardization(self, X):
        if self.image_shape is None:
            return super()._input_standardization(X)
        # One mean and scale for every pixel: the images stay images.
        mean, scale = super()._input_standardization(X.reshape(-1, 1))
        return np.full(X.shape[1], mean[0]), np.full(X.shape[1], scale[0])

    def _hidden_sizes(self):
        default = _MLP_SIZES if self.image_shape is None else _CNN_CHANNELS
        sizes = default if self.hidden_layer_sizes is None else tuple(self.hidden_layer_sizes)
        if not sizes or any(not isinstance(n, numbers.Integral) or n < 1 for n in sizes):
            raise ValueError(
                f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}."
            )
        return tuple(int(n) for n in sizes)

    def _n_fourier_features(self, n_features):
        if self.image_shape is not None:
            return 0
        if self.fourier_features == "auto":
            return _AUTO_FOURIER_FEATURES if n_features <= _LOW_DIMENSION else 0
        return self.fourier_features

    def _data_noise(self):
        if self.data_noise == "auto":
            return _IMAGE_DATA_NOISE if self.image_shape is not None else 0.0
        return self.data_noise

    def _steps(self, model):
        """(step_size, noise_scale) of the chains: the adapted step of a
        model with ``step_size="auto"``."""
        step = model.step_size if self.step_size == "auto" else self.step_size
        noise = math.sqrt(2 * step) if self.noise_scale == "auto" else self.noise_scale
        return step, noise

    def _build(self, Z, generator):
        if self.image_shape is None:
            energy = MLPEnergy(Z.shape[1], self._hidden_sizes(), self.activation, generator,
                               fourier_features=self._n_fourier_features(Z.shape[1]),
                               fourier_scale=self.fourier_scale, zero_output=True,
                               spectral_norm=self.spectral_norm)
        else:
            energy = ConvEnergy(self.image_shape, self._hidden_sizes(), self.activation,
                                generator, zero_output=True, spectral_norm=self.spectral_norm)
        _, base, (_, _, ridge) = fit_base("gaussian", Z, max_components=1, marginals="none",
                                          generator=generator)
        data_noise = self._data_noise()
        if data_noise:  # the Gaussian of the noisy data the network sees
            covariance = base.cholesky[0] @ base.cholesky[0].T
            covariance += data_noise**2 * torch.eye(len(covariance), device=covariance.device)
            base = GaussianMixtureNoise(base.log_weights.exp(), base.means, covariance[None])
        buffer_size = self.buffer_size if self.persistent else 0
        model = _ShortRunModel(energy, base, Z.min(0).values, Z.max(0).values, buffer_size,
                               generator, self.init)
        model.base_ridge = ridge
        model.step_size = _INITIAL_STEP_SIZE
        return model

    def _layer_shapes(self, n_features):
        """(inputs, outputs, positions) of each layer of the energy network
        (positions: pixels a convolution is applied at, 1 for a dense layer)."""
        if self.image_shape is None:
            widths = [n_features + 2 * self._n_fourier_features(n_features),
                      *self._hidden_sizes(), 1]
            return [(a, b, 1) for a, b in zip(widths[:-1], widths[1:])]
        n_in, height, width = self.image_shape
        shapes = []
        for index, n_out in enumerate(self._hidden_sizes()):
            if index:
                height, width = (height + 1) // 2, (width + 1) // 2
            shapes.append((9 * n_in, n_out, height * width))
            n_in = n_out
        return shapes + [(n_in * height * width, 1, 1)]

    def _multiply_adds_per_row(self, n_features):
        network = sum(a * b * positions for a, b, positions in self._layer_shapes(n_features))
        return network + n_features * n_features  # and the Gaussian's whitening

    def _multiply_adds_per_step(self, n_features):
        # What a second thread can share is one pass of forward and backward
        # (~3 forwards) over the chains, a Langevin step: an update is many
        # such small passes, each synchronised. Measured on 2 idle cores, 2
        # threads against 1: the 2-D MLP (9.5 million a pass) 0.85x as fast,
        # the digits CNN (118 million) 1.28x.
        return 3 * self.batch_size * self._multiply_adds_per_row(n_features)

    def _inference_row_bytes(self):
        # Activations (float64, ~4 copies with their gradients), layer by layer.
        shapes = self._layer_shapes(self.n_features_in_)
        return 8 * 4 * (self.n_features_in_ + sum(b * positions for _, b, positions in shapes))

    def _draw_negatives(self, model, n_rows, generator):
        """Negatives for one update (standardized rows) and the chains'
        statistics; persistent chains are written back to the buffer."""
        if self.persistent:
            rows = torch.randperm(len(model.buffer), generator=generator,
                                  device=generator.device)[:n_rows]
            start = model.buffer[rows]
            restart = torch.rand(len(rows), generator=generator,
                                 device=generator.device) < self.reinit_freq
            start = torch.where(restart[:, None], model.draw_init(len(rows), generator), start)
        else:
            start = model.draw_init(n_rows, generator)
        step, noise = self._steps(model)
        with _frozen(model):
            chains, stats = langevin(model.whitened_energy, start, self.n_steps, step, noise,
                                     generator, grad_clip=self.grad_clip)
        stats["step_size"] = step
        if self.step_size == "auto" and math.isfinite(stats["acceptance"]):
            model.step_size = step * math.exp(stats["acceptance"] - _TARGET_ACCEPTANCE)
        if self.persistent:
            model.buffer[rows] = chains
        return model.to_data(chains), stats

    def _training_loss(self, model, batch, generator):
        """The maximum-likelihood surrogate with a penalty on squared energies."""
        if self._data_noise():
            batch = batch + self._data_noise() * torch.randn(
                batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
        negatives, chain_stats = self._draw_negatives(model, len(batch), generator)
        data_energy = model.energy(batch)
        negative_energy = model.energy(negatives)
        gap = data_energy.mean() - negative_energy.mean()
        penalty = (data_energy**2).mean() + (negative_energy**2).mean()
        diagnostics = {"energy_gap": gap.item(), "data_energy": data_energy.mean().item(),
                       "chain_grad_norm": chain_stats["grad_norm"],
                       "chain_acceptance": chain_stats["acceptance"],
                       "step_size": chain_stats["step_size"]}
        return gap + self.alpha * penalty, diagnostics

    def _after_training(self, model, Z, generator):
        return {"base_ridge_": model.base_ridge, "step_size_": self._steps(model)[0]}

    def _inference_module(self):
        """The float64 copy, its parameters frozen: chains and AIS need
        gradients in ``x`` only."""
        return super()._inference_module().requires_grad_(False)

    def _train(self, module, Z_train, Z_val, generator, n_epochs):
        epochs, history = super()._train(module, Z_train, Z_val, generator, n_epochs)
        if history and abs(history[-1]["energy_gap"]) > _GAP_WARNING:
            warnings.warn(
                f"ShortRunEBM: in the last epoch the energy gap E(data) - E(negatives) was "
                f"{history[-1]['energy_gap']:.3g} nats (healthy training keeps it near 0): the "
                "chains no longer follow the model. Lower learning_rate, raise n_steps or "
                "step_size, or raise alpha; see history_.",
                ConvergenceWarning,
            )
        return epochs, history

    # -- log Z -----------------------------------------------------------------
    @property
    def log_partition_method_(self):
        """How ``log_partition_`` is obtained: ``"grid"`` or ``"ais"``."""
        self._check_fitted()
        return "grid" if self.n_features_in_ <= _LOW_DIMENSION else "ais"

    def _estimate_log_partition(self, model, generator):
        """log Z = log E_b[exp(-E)], the base ``b`` being normalized, in the
        whitened coordinates (where ``b`` is a standard normal)."""
        log_ratio = lambda U: -model.energy(model.to_data(U))
        n_features = self.n_features_in_
        if self.log_partition_method_ == "grid":
            def log_integrand(U):  # in chunks of working_memory's size
                U = torch.as_tensor(U, dtype=torch.float64, device=model.low.device)
                standard = -0.5 * (U**2).sum(1) - 0.5 * n_features * math.log(2 * math.pi)
                chunks = [log_ratio(U[rows]) for rows in gen_batches(len(U),
                                                                     self._chunk_rows(len(U)))]
                return (standard + torch.cat(chunks)).cpu().numpy()

            bounds = [(-_GRID_RADIUS, _GRID_RADIUS)] * n_features
            return grid_log_integral(log_integrand, bounds, _GRID_POINTS[n_features]), 0.0
        with torch.enable_grad():  # the Langevin proposals need the energy's gradient
            return annealed_importance_log_partition(
                model.draw_standard, lambda U: -0.5 * (U**2).sum(1), log_ratio,
                n_chains=self.n_ais_chains, n_temperatures=self.n_ais_temperatures,
                generator=generator)

    def _log_partition_multiply_adds(self):
        return 3 * self.n_ais_chains * self.n_ais_temperatures * self._multiply_adds_per_row(
            self.n_features_in_)

    def _unnormalized_log_density(self, model, Z):
        return model.unnormalized_log_density(Z)

    # -- sampling --------------------------------------------------------------
    def sample(self, n_samples=1, n_steps=None, random_state=None):
        """Draw rows from the model by Langevin chains, as in training.

        A persistent model continues chains from its replay buffer (rows of
        the buffer picked at random, with replacement when ``n_samples``
        exceeds ``buffer_size``); otherwise each row is a fresh run from
        ``init``. The buffer itself is left as it is.

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows.
        n_steps : int or None, default=None
            Langevin steps per row; None is the training's ``n_steps``.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`), float64
            In the units of the training data.
        """
        self._check_fitted()
        n_steps = self.n_steps if n_steps is None else n_steps
        self._check_n_steps(n_steps)
        model = self._inference_module()
        replace = self.persistent and n_samples > len(model.buffer)

        def draw(n, generator):
            if self.persistent:
                size = len(model.buffer)
                rows = (torch.randint(size, (n,), generator=generator, device=generator.device)
                        if replace else
                        torch.randperm(size, generator=generator, device=generator.device)[:n])
                start = model.buffer[rows]
            else:
                start = model.draw_init(n, generator)
            chains, _ = langevin(model.whitened_energy, start, n_steps, *self._steps(model),
                                 generator, grad_clip=self.grad_clip)
            return model.to_data(chains)

        return self._sample_rows(draw, n_samples, random_state, chunk_rows=_SAMPLE_CHUNK)

    def sample_conditional(self, X, mask=None, *, n_steps=200, random_state=None):
        """Fill in features of X by sampling them given the others (inpainting).

        For each row, the free features (``mask`` True, or X's NaN entries
        when ``mask`` is None) are drawn from the model's conditional
        distribution given the known ones: they start from the fitted
        Gaussian's conditional distribution and move by ``n_steps`` Langevin
        steps in which only they move (in that conditional's whitened
        coordinates, with the training's step size and noise). The known
        features come back exactly as given.

        Parameters
        ----------
        X : array-like of shape (n_samples, `n_features_in_`)
            Known values; the free entries may hold anything, NaN included.
        mask : array-like of bool, shape (n_samples, `n_features_in_`), or None
            True where a value is to be drawn; None means ``np.isnan(X)``.
        n_steps : int, default=200
            Langevin steps per row.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.

        Returns
        -------
        X_completed : ndarray of shape (n_samples, `n_features_in_`), float64
        """
        self._check_n_steps(n_steps)
        self._check_fitted()
        model = self._inference_module()
        covariance = model.cholesky @ model.cholesky.T

        def complete(Z, free, generator):
            Z = Z.clone()
            patterns, inverse = torch.unique(free, dim=0, return_inverse=True)
            for index, pattern in enumerate(patterns):
                if not pattern.any():
                    continue
                rows = torch.nonzero(inverse == index).squeeze(1)
                Z[rows] = self._conditional_chains(model, covariance, Z[rows], pattern,
                                                   n_steps, generator)
            return Z

        return self._complete_rows(X, mask, complete, random_state, chunk_rows=_SAMPLE_CHUNK)

    def _conditional_chains(self, model, covariance, Z, free, n_steps, generator):
        """Rows ``Z`` with the features ``free`` drawn given the others."""
        known = ~free
        mean = model.mean
        # The Gaussian's conditional: mean m + S_fk S_kk^-1 (z_k - m_k),
        # covariance S_ff - S_fk S_kk^-1 S_kf.
        if known.any():
            gain = torch.linalg.solve(covariance[known][:, known], covariance[known][:, free]).T
            centre = mean[free] + (Z[:, known] - mean[known]) @ gain.T
            spread = covariance[free][:, free] - gain @ covariance[known][:, free]
        else:
            centre = mean[free].expand(len(Z), -1)
            spread = covariance
        cholesky = torch.linalg.cholesky(0.5 * (spread + spread.T))

        def rows_of(V):
            filled = Z.clone()
            filled[:, free] = centre + V @ cholesky.T
            return filled

        def energy(V):
            return 0.5 * (V**2).sum(1) + model.energy(rows_of(V))

        start = torch.randn(len(Z), int(free.sum()), generator=generator, dtype=Z.dtype,
                            device=Z.device)
        chains, _ = langevin(energy, start, n_steps, *self._steps(model), generator,
                             grad_clip=self.grad_clip)
        return rows_of(chains)
