"""Energy-based models trained by maximum likelihood with short-run Langevin MCMC."""

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import Step, TorchEstimator
from ._checks import check_n_samples, check_n_steps
from ._density import LikelihoodDensityMixin
from ._missing import (CONDITIONAL_CANDIDATES, TRAINING_CANDIDATES, ConditionalMeanMixin,
                       KeptCompletions, common_generator, missing_draws, observed_log_density)
from ._monitors import EpochMonitor
from ._runtime import make_generator, refuse_beyond_memory
from ._shortrun_model import ShortRunModel
from .partition import refuse_ais_beyond_memory
from .base_density import fit_base
from .nets import (ACTIVATIONS, LOW_DIMENSION, ConvEnergy, MLPEnergy, fourier_feature_count,
                   layer_shapes, layer_sizes, network_work)

__all__ = ["ShortRunEBM"]

#: Default widths of the MLP's hidden layers, and channels of the CNN's convolutions.
_MLP_SIZES = (128, 128, 128)
_CNN_CHANNELS = (32, 64, 128)

#: An epoch whose mean energy gap |E(data) - E(negatives)| exceeds this (in
#: nats) means the chains no longer reach the data (or have found regions the
#: data never visits): ``fit`` warns. It lies between the gaps of healthy and
#: of failed fits (see the user guide).
_GAP_WARNING = 10.0

#: Standard deviation of the noise added to images (standardized pixels) by
#: ``data_noise="auto"``: about one grey level, enough to smooth quantized
#: pixels into a density the chains can follow.
_IMAGE_DATA_NOISE = 0.2

#: Draws of the base behind each epoch's log Z in early stopping. Not
#: NCEDensity's 2048: here the base is the proposal of a model far from
#: it (images), and fewer draws underestimate log Z enough to rank epochs
#: wrongly (measured in benchmarks/RESULTS.md, "Default fit times").
_VALIDATION_DRAWS = 8192

#: Langevin steps of ``n_steps="auto"``: for at most ``LOW_DIMENSION``
#: features, and for more.
_LOW_DIMENSION_STEPS, _STEPS = 20, 30

#: The smallest covariance ridge of the base (standardized units): a
#: component narrower than the chains' first steps can follow (a binary
#: column's spikes) sends them off to infinity.
_MIN_BASE_RIDGE = 1e-3

#: Rows sampled (and chains run) at once by ``sample`` and ``sample_conditional``.
_SAMPLE_CHUNK = 1024


class _EnergyGapWarning(EpochMonitor):
    """Warns when the last epoch's energy gap says the chains no longer
    follow the model."""

    def on_train_end(self, run):
        gap = run.history[-1]["energy_gap"] if run.history else 0.0
        if abs(gap) > _GAP_WARNING:
            warnings.warn(
                f"ShortRunEBM: in the last epoch the energy gap E(data) - E(negatives) was "
                f"{gap:.3g} nats (healthy training keeps it near 0): the chains no longer "
                "follow the model. Lower learning_rate, raise n_steps or step_size, or raise "
                "alpha; see history_.", ConvergenceWarning)


class ShortRunEBM(ConditionalMeanMixin, LikelihoodDensityMixin, TorchEstimator):
    """Neural energy-based model trained by short-run Langevin MCMC.

    The model is ``p(x) = b(x) exp(-E(x)) / Z``: ``b`` a Gaussian mixture
    (images: a Gaussian) fitted to the standardized data, ``E`` a neural
    network (an MLP, or a small CNN over flattened images given
    ``image_shape``) that starts at 0 and grows at most linearly, so ``b
    exp(-E)`` always integrates. Training is maximum likelihood, its
    negatives drawn by ``n_steps`` Langevin steps from a persistent replay
    buffer or fresh from ``init``, the step adapted to the data by
    ``step_size="auto"``. It favours good samples over a good density
    (Nijkamp et al. 2020): for a density, prefer ``NCEDensity``.

    ``score_samples`` is a normalized log-density: log Z is computed on first
    use, by grid integration for one or two features, by annealed importance
    sampling from ``b`` otherwise (which tends to underestimate log Z).
    Early stopping may keep ``b`` alone, whose log Z is 0.

    Rows may have missing cells (NaN): ``fit`` draws them from the model's
    conditional at every step, and ``score_samples`` gives the density of a
    row's observed cells, by importance sampling from ``b``'s conditional of
    the missing ones; ``conditional_mean`` fills cells by their expected
    value. Categorical columns are ``NCEDensity``'s: Langevin chains move on
    continuous values only.

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
    base : {"auto", "gaussian_mixture", "gaussian"}, default="auto"
        The base density ``b``: a full-covariance Gaussian mixture whose
        number of components and covariance ridge are chosen by held-out
        likelihood, as ``NCEDensity``'s, or a single Gaussian (its ridge
        chosen the same way); the ridge is at least 1e-3 (standardized
        units), as the chains cannot follow narrower components (such as
        spikes on a binary column's two values). The model starts as ``b``
        and its chains start from it, so that on tables the mixture's
        likelihood is where training starts; when early stopping keeps
        ``b`` alone, it is refitted to every row. "auto": the mixture for
        tables, the Gaussian for images, whose samples it left further
        from the data (see the user guide).
    base_components : int, default=32
        Most mixture components the base may have.
    alpha : float, default=0.01
        Weight of the penalty on squared energies, which keeps them near 0.
    n_steps : int or "auto", default="auto"
        Langevin steps per draw of negatives (and of ``sample``). "auto":
        20 for at most two features, 30 for more, where chains have more
        directions to move in: with the average of ``average_decay``, 20
        steps kept the likelihood of 30 on 2-D data, and lost on 30
        features (see the user guide).
    step_size : float or "auto", default="auto"
        The gradient's coefficient in a Langevin step (whitened units). It
        must stay below the squared width of the data's sharpest structure,
        or the chains sample a distorted model and training degrades or
        diverges, so no fixed value suits every data set (see the user
        guide). "auto" starts at 0.001 and, after each update, multiplies the
        step by ``exp(acceptance - 0.97)``: it settles where 97% of the steps
        would be accepted, whatever the data's scale of detail. The value
        reached is ``step_size_``, which ``sample`` and ``sample_conditional``
        use.
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
        Fraction of each draw from the buffer restarted from ``init``; below
        JEM's 0.05, so that chains live longer (see the user guide).
    init : {"gaussian", "uniform"}, default="gaussian"
        Where chains start: draws of the fitted base ``b``, or uniform over
        the box of the training data's range.
    data_noise : float or "auto", default="auto"
        Standard deviation of Gaussian noise added to the data of each
        update (in standardized units), and to the fitted base's
        variances: the model is then one of the data smoothed by that
        noise, which keeps quantized data (pixels of 17 grey levels) from
        teaching the energy spikes no chain can follow. "auto": 0.2 with
        ``image_shape``, 0 otherwise.
    learning_rate : float, default=1e-3
        Adam's step, decayed to 0 on a cosine over the ``max_iter`` epochs.
    batch_size : int, default=64
        Data rows and negatives per update.
    max_iter : int, default=100
        Most epochs. One epoch visits every training row, or 1,024 random
        ones of larger data (so that early stopping's patience spans the
        same number of updates however many rows there are); raise it for
        long fits on large data.
    weight_decay : float, default=0.0
        Adam's L2 penalty.
    average_decay : float in [0, 1), default=0.99
        The fitted network is an exponential moving average of the trained
        parameters: after each update the average moves ``1 -
        average_decay`` of the way to them (0: no average, the last
        update's parameters). The chains draw their negatives from the
        trained parameters; early stopping scores the average and keeps the
        best epoch's. The trained parameters' held-out score jumps from
        epoch to epoch; the average's is smooth and higher, so that fewer
        Langevin steps an update serve (see the user guide). ``partial_fit``
        keeps no average: each call is one epoch, too short for it.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the rows and stop when their mean
        log-likelihood has not improved by ``tol`` for ``n_iter_no_change``
        epochs, keeping the best epoch's model (the base alone, epoch 0,
        included): more epochs let the energy spike at the training rows.
        Each epoch's log Z comes from the same draws of the base
        (importance sampling), so epochs are compared on a common footing.
    validation_fraction : float, default=0.1
        Share of the rows held out for early stopping.
    n_iter_no_change : int, default=10
        Patience of early stopping, in epochs.
    tol : float, default=1e-3
        Improvement of the validation log-likelihood (nats per row) that counts.
    warm_start : bool, default=False
        Continue from the fitted model (network and buffer) on ``fit``.
    n_ais_chains : int, default=100
        AIS runs for log Z (more than two features).
    n_ais_temperatures : int, default=1000
        Temperatures of each AIS run.
    verbose : int, default=0
        0 shows a progress bar only once the fit passes 10 seconds, in
        the main thread of the main process with a terminal or notebook
        (never in ``GridSearchCV``'s parallel workers), and erases it at the
        end; a positive value shows it from the first epoch and keeps it; a
        negative one shows nothing. The AIS estimate of log Z on first use
        gets a bar over its temperatures by the same rule.
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
        Its standard error (AIS); for grid integration, the grid's error as
        its coarser sub-grids gauge it (see
        :func:`~skebm.partition.grid_log_integral`); 0 for the base
        alone, whose log Z is 0.
    log_partition_method_ : {"grid", "ais"}
        How ``log_partition_`` is obtained.
    step_size_ : float
        The Langevin step the chains ended training with (``step_size``
        itself, or where "auto" settled).
    base_ridge_ : float
        The covariance ridge of the base ``b``, chosen by cross-validation.
    base_n_components_ : int
        Components of the base mixture, as chosen.
    module_ : torch.nn.Module
        The fitted model: ``energy`` (the network), ``base`` (the mixture ``b``),
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
                         "early_stopping", "validation_fraction", "n_iter_no_change", "tol",
                         "warm_start", "verbose", "random_state", "device", "n_threads")
        },
        "image_shape": [tuple, list, None],
        "hidden_layer_sizes": [tuple, list, None],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "fourier_features": [Interval(numbers.Integral, 0, None, closed="left"),
                             StrOptions({"auto"})],
        "fourier_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "spectral_norm": ["boolean"],
        "base": [StrOptions({"auto", "gaussian_mixture", "gaussian"})],
        "base_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "average_decay": [Interval(numbers.Real, 0, 1, closed="left")],
        "n_steps": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
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

    #: Epochs of at most 16 updates at the default batch: early stopping
    #: looks at the model that often, and its patience spans ~160 updates
    #: (about 1.6 time constants of the parameters' average) whatever the
    #: data's size, as on small data, where it was measured.
    _max_epoch_rows = 1_024
    _supports_early_stopping = True
    _accepts_missing = True
    _model_parameters = ("image_shape", "hidden_layer_sizes", "activation", "fourier_features",
                         "fourier_scale", "spectral_norm", "base", "base_components",
                         "persistent", "buffer_size", "init",
                         "data_noise")

    def __init__(
        self,
        *,
        image_shape=None,
        hidden_layer_sizes=None,
        activation="silu",
        fourier_features="auto",
        fourier_scale=2.0,
        spectral_norm=False,
        base="auto",
        base_components=32,
        alpha=0.01,
        n_steps="auto",
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
        average_decay=0.99,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-3,
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
        self.base = base
        self.base_components = base_components
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
        self.average_decay = average_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
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
            Training data, finite or NaN (a missing cell): more rows than
            features once ``validation_fraction`` is held out, which the
            base's full covariance needs;
            with ``image_shape``, one flattened image per row.
        y : None
            Ignored.

        Returns
        -------
        self : ShortRunEBM
            The fitted estimator.
        """
        return self._fit_module(X)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One epoch over X, continuing the fitted model, its chains and its
        optimizer.

        For data that comes in chunks: the first call builds the model as
        ``fit`` does, its base fitted to that chunk; every call trains on
        all its rows at the constant ``learning_rate``, Adam's state and the
        replay buffer carried from call to call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (more rows than features on the first call, for the
            base's full covariance; then any), finite or NaN (a missing cell).
        y : None
            Ignored.

        Returns
        -------
        self : ShortRunEBM
            The fitted estimator.
        """
        return self._fit_module(X, partial=True)

    # -- the pieces the shared training loop calls --------------------------
    def _check_input_values(self, X, settings):
        if settings["image_shape"] is None:
            return
        shape = tuple(settings["image_shape"])
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
        return layer_sizes(self.hidden_layer_sizes,
                           _MLP_SIZES if self.image_shape is None else _CNN_CHANNELS)

    def _n_fourier_features(self, n_features):
        if self.image_shape is not None:
            return 0
        return fourier_feature_count(self.fourier_features, n_features)

    def _data_noise(self):
        if self.data_noise == "auto":
            return _IMAGE_DATA_NOISE if self.image_shape is not None else 0.0
        return self.data_noise

    def _base_kind(self):
        if self.base == "auto":
            return "gaussian" if self.image_shape is not None else "gaussian_mixture"
        return self.base

    def _n_steps(self, n_features):
        if self.n_steps == "auto":
            return _LOW_DIMENSION_STEPS if n_features <= LOW_DIMENSION else _STEPS
        return self.n_steps

    def _set_chains(self, module):
        module.set_chains(n_steps=self._n_steps(len(module.low)), step_size=self.step_size,
                          noise_scale=self.noise_scale, grad_clip=self.grad_clip,
                          persistent=self.persistent, reinit_freq=self.reinit_freq)
        return module

    def _build(self, Z, generator, scale):
        if self.image_shape is None:
            energy = MLPEnergy(Z.shape[1], self._hidden_sizes(), self.activation, generator,
                               fourier_features=self._n_fourier_features(Z.shape[1]),
                               fourier_scale=self.fourier_scale, zero_output=True,
                               spectral_norm=self.spectral_norm)
        else:
            energy = ConvEnergy(self.image_shape, self._hidden_sizes(), self.activation,
                                generator, zero_output=True, spectral_norm=self.spectral_norm)
        base, choice = self._fit_base(Z, generator)
        buffer_size = self.buffer_size if self.persistent else 0
        refuse_beyond_memory(8 * buffer_size * Z.shape[1], f"A replay buffer of {buffer_size:,} "
                             f"rows of {Z.shape[1]} features", "Lower buffer_size.")
        observed = ~torch.isnan(Z)  # the data's range, of the observed cells
        low = torch.where(observed, Z, math.inf).min(0).values
        high = torch.where(observed, Z, -math.inf).max(0).values
        module = ShortRunModel(energy, base, low, high, buffer_size, generator, self.init)
        module.base_choice = choice  # (marginals or not, components, ridge), for a refit
        return self._set_chains(module)

    def _fit_base(self, Z, generator, choice=None):
        """(base, choice) fitted to ``Z``; ``choice`` (marginals or not,
        components, ridge) is made by cross-validation unless given."""
        with self._progress(None, "base density") as progress:
            _, base, choice = fit_base(self._base_kind(), Z, max_components=self.base_components,
                                       marginals="none", generator=generator, choice=choice,
                                       progress=progress, min_ridge=_MIN_BASE_RIDGE)
        if self._data_noise():  # the density of the noisy data the network sees
            base = base.with_noise(self._data_noise())
        return base, choice

    def _warm_module(self, Z_train, device):
        return self._set_chains(super()._warm_module(Z_train, device))

    def _layer_shapes(self, n_features):
        return layer_shapes(n_features, self._hidden_sizes(), image_shape=self.image_shape,
                            n_fourier=self._n_fourier_features(n_features))

    def _multiply_adds_per_row(self, n_features):
        # Inference: the fitted network, the frame's whitening and the
        # base's two products per component.
        n_components = self.module_.base.n_components
        return (network_work(self.module_.energy.shapes)
                + (1 + 2 * n_components) * n_features * n_features)

    def _multiply_adds_per_step(self, n_features, target_attributes):
        # What a second thread can share is one pass of forward and backward
        # (~3 forwards) over the chains, a Langevin step: an update is many
        # such small passes, each synchronised, so the thread policy is
        # given one pass, not the whole update (see the user guide).
        return 3 * self.batch_size * (network_work(self._layer_shapes(n_features))
                                      + n_features * n_features)

    def _inference_row_bytes(self):
        # Activations (float64, ~4 copies with their gradients), layer by
        # layer, and the base's per-component offsets (~4 copies).
        shapes = self.module_.energy.shapes
        n_components = self.module_.base.n_components
        return 8 * 4 * ((1 + n_components) * self.n_features_in_
                        + sum(b * positions for _, b, positions in shapes))

    def _training_loss(self, module, batch, generator):
        """The maximum-likelihood surrogate with a penalty on squared energies;
        a row's missing cells drawn from the model's conditional."""
        incomplete = torch.isnan(batch).any(1)
        if incomplete.any():
            batch = batch.clone()
            with torch.no_grad():
                batch[incomplete] = module.impute(batch[incomplete], TRAINING_CANDIDATES,
                                                  generator).to(batch.dtype)
        if self._data_noise():
            batch = batch + self._data_noise() * torch.randn(
                batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
        negatives, chain_stats = module.negatives(len(batch), generator)
        data_energy = module.energy(batch)
        negative_energy = module.energy(negatives)
        gap = data_energy.mean() - negative_energy.mean()
        penalty = (data_energy**2).mean() + (negative_energy**2).mean()
        diagnostics = {"energy_gap": gap.item(), "data_energy": data_energy.mean().item(),
                       "chain_grad_norm": chain_stats["grad_norm"],
                       "chain_acceptance": chain_stats["acceptance"],
                       "step_size": chain_stats["step_size"]}
        return Step(gap + self.alpha * penalty, diagnostics)

    def _train(self, module, Z_train, Z_val, generator, *, partial, **options):
        """The shared loop, with the moving average of ``average_decay``
        kept through a ``fit`` and the network set to it at the end."""
        averaging = self.average_decay > 0 and not partial
        if averaging:
            module.start_average()
        result = super()._train(module, Z_train, Z_val, generator, partial=partial, **options)
        if averaging:
            module.keep_average()
        return result

    def _training_step(self, module, batch, generator, rule):
        step = super()._training_step(module, batch, generator, rule)
        if module.average is not None:
            module.update_average(self.average_decay)
        return step

    def _validation_set(self, module, Z_val):
        """``(the rows, the draws of their missing cells, those cells'
        completions or None, the base's draws behind log Z)``, drawn once
        (:class:`~skebm._missing.KeptCompletions`): the base does not
        change while the network trains."""
        missing = missing_draws(Z_val, make_generator(1, Z_val.device))
        base_draws = module.base_draws(_VALIDATION_DRAWS, make_generator(0, Z_val.device))
        return Z_val, missing, KeptCompletions.made(module, Z_val, missing), base_draws

    def _validation_score(self, module, validation):
        """Mean log-likelihood of the validation rows (standardized space)
        under the moving average, log Z by importance sampling from the
        base, with the same :data:`_VALIDATION_DRAWS` draws at every
        epoch (and a missing cell's completions drawn alike)."""
        Z_val, missing, kept, base_draws = validation
        with module.averaged():
            log_density = observed_log_density(module, Z_val, missing, kept)
            return float(log_density.mean()) - module.sampled_log_partition(base_draws)

    def _after_training(self, module, Z, generator):
        if module.energy.is_zero() and self.early_stopping:
            # Early stopping kept the base alone: it may as well see every row.
            module.set_base(self._fit_base(Z, generator, choice=module.base_choice)[0])
        return {"base_ridge_": module.base_choice[2],
                "base_n_components_": module.base.n_components, "step_size_": module.step_size}

    def _inference_module(self):
        """The float64 copy, its parameters frozen: chains and AIS need
        gradients in ``x`` only."""
        return super()._inference_module().requires_grad_(False)

    def _monitors(self, validation):
        return super()._monitors(validation) + [_EnergyGapWarning()]

    # -- log Z -----------------------------------------------------------------
    @property
    def log_partition_method_(self):
        """How ``log_partition_`` is obtained: ``"grid"`` or ``"ais"``."""
        self._check_fitted()
        return "grid" if self.n_features_in_ <= LOW_DIMENSION else "ais"

    _log_partition_parameters = ("n_ais_chains", "n_ais_temperatures")

    def _estimate_log_partition(self, module, generator, *, n_ais_chains, n_ais_temperatures):
        refuse_ais_beyond_memory(n_ais_chains, self.n_features_in_, self._inference_device())
        with self._progress(n_ais_temperatures, "log Z by AIS") as progress:
            return module.log_partition(generator, n_ais_chains=n_ais_chains,
                                        n_ais_temperatures=n_ais_temperatures,
                                        chunk_rows=self._chunk_rows, progress=progress)

    def _log_partition_multiply_adds(self, *, n_ais_chains, n_ais_temperatures):
        return 3 * n_ais_chains * n_ais_temperatures * self._multiply_adds_per_row(
            self.n_features_in_)

    def _unnormalized_log_density(self, module, Z):
        generator = common_generator(self._log_partition_memo["seed"] + 1)
        return observed_log_density(module, Z, missing_draws(Z, generator))

    # -- sampling --------------------------------------------------------------
    def sample(self, n_samples=1, random_state=None, *, n_steps=None):
        """Draw rows from the model by Langevin chains, as in training.

        A persistent model continues chains from its replay buffer (rows of
        the buffer picked at random, with replacement when ``n_samples``
        exceeds ``buffer_size``); otherwise each row is a fresh run from
        ``init``. The buffer itself is left as it is.

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.
        n_steps : int or None, default=None
            Langevin steps per row; None is the training's ``n_steps``.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`), float64
            In the units of the training data.
        """
        self._check_fitted()
        check_n_samples(n_samples)
        module = self._inference_module()
        n_steps = module.n_steps if n_steps is None else n_steps
        check_n_steps(n_steps)
        replace = module.persistent and n_samples > len(module.buffer)
        draw = lambda n, generator: module.sample(n, n_steps, generator, replace=replace)
        return self._sample_rows(draw, n_samples, random_state, chunk_rows=_SAMPLE_CHUNK)

    def sample_conditional(self, X, mask=None, *, n_steps=200, random_state=None):
        """Fill in features of X by sampling them given the others (inpainting).

        For each row, the free features (``mask`` True, or X's NaN entries
        when ``mask`` is None) are drawn from the model's conditional
        distribution given the known ones: they start from one of 64 draws
        of the base's conditional distribution, kept with
        probability proportional to ``exp(-E)`` (sampling-importance-
        resampling: each mode of the model's conditional gets its share of
        the rows, where Langevin chains seldom cross between modes), and
        move by ``n_steps`` Langevin steps in which only they move (in the
        whitened coordinates of the conditional of the Gaussian with the
        base's mean and covariance, with the training's step size
        and noise). The known features come back exactly as given.

        Parameters
        ----------
        X : array-like of shape (n_samples, `n_features_in_`)
            Known values; the free entries may hold anything, NaN included
            (but an integer beyond 2**53, refused in any input).
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
        check_n_steps(n_steps)
        self._check_fitted()
        module = self._inference_module()
        complete = lambda Z, free, generator: module.complete(
            Z, free, CONDITIONAL_CANDIDATES, n_steps, generator)
        return self._complete_rows(X, mask, complete, random_state, chunk_rows=_SAMPLE_CHUNK)
