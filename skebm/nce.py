"""Density estimation by noise-contrastive estimation (NCE)."""

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ._base import LikelihoodDensityMixin, TorchEstimator, make_generator
from .nets import ACTIVATIONS, MLPEnergy
from .noise import make_noise
from .partition import importance_log_partition
from .samplers import metropolis_adjusted_langevin, sampling_importance_resampling

__all__ = ["NCEDensity"]

# sample(): rows per chunk, noise candidates per row, Langevin steps per row.
_SAMPLE_CHUNK = 1024
_SIR_CANDIDATES = 32
_MALA_STEPS = 20


class _NCEModel(nn.Module):
    """The trainable model on the standardized data:
    log p(z) = log q(z) - E(z) - c, with q the noise (whose buffers travel with
    the model between devices), E the energy network and c = log Z."""

    def __init__(self, energy, noise):
        super().__init__()
        self.energy = energy
        self.noise = noise
        self.log_partition = nn.Parameter(torch.zeros((), device=noise.means.device))

    def unnormalized_log_density(self, Z):
        return self.noise.log_prob(Z) - self.energy(Z)

    def nce_logit(self, Z, log_noise_ratio):
        """log p(z) - log(nu q(z)) = -E(z) - c - log(nu): the logit that z is
        data. log q cancels, so training never evaluates it."""
        return -self.energy(Z) - self.log_partition - log_noise_ratio


class NCEDensity(LikelihoodDensityMixin, TorchEstimator):
    """Normalized density estimation with a neural energy, trained by NCE.

    The model is ``p(x) = q(x) exp(-E(x) - c)``: a noise density ``q`` fitted
    to the data, reweighted by a multilayer perceptron energy ``E`` on the
    standardized inputs, with ``c`` (log Z) a learned scalar. Training is
    noise-contrastive estimation (Gutmann & Hyvarinen 2010): logistic
    regression that tells data rows from ``noise_ratio`` times as many rows
    drawn from ``q``, with logit ``log p(x) - log q(x) - log(noise_ratio)``,
    here simply ``-E(x) - c - log(noise_ratio)``. Its optimum is the data
    density, ``c`` included, so no MCMC is needed to fit.

    Writing the model relative to its noise (``E`` starts at 0, so the model
    starts as ``q``) does three things. The tails are safe: far from the
    data, where NCE sees no rows, the density decays like ``q`` instead of
    being whatever the network extrapolates to. log Z can be checked
    precisely, since the importance weights ``exp(-E)`` vary little. And
    sampling-importance-resampling from ``q`` is efficient.

    The noise is a Gaussian mixture fitted to the data by EM (16 components,
    each widened by ``noise_scale``); ``noise="gaussian"`` uses a single
    Gaussian with the data's mean and covariance. NCE learns fastest where the
    noise is close to the data.

    Before the network, the inputs go through random Fourier features
    (``fourier_features``, Tancik et al. 2020): a plain MLP learns sharp
    structure (thin rings, the edges of a checkerboard) slowly and, on such
    data, trails a kernel density estimate by 0.2-0.6 nats per point.

    log Z is re-estimated by importance sampling from the noise
    (``n_importance_samples`` draws) the first time a likelihood is asked for
    (``score_samples``, ``score``, ``log_partition_``), not in ``fit``; the
    draws come from a generator seeded in ``fit``, so the estimate is the same
    whenever it is made, and it is kept with the model once made.
    ``score_samples`` uses that estimate, ``log_partition_``, whose standard
    error is ``log_partition_std_``. NCE's own estimate ``c`` is kept as
    ``nce_log_partition_``. Both are estimates: where the noise covers the
    model badly (many dimensions, a model much sharper than the noise) the
    standard error grows, and a warning says so when it passes 0.1 nats.

    Read more in the user guide, ``docs/user_guide.md``.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(128, 128, 128)
        Widths of the hidden layers of the energy network; an int is one
        layer, as in scikit-learn's MLP estimators.
    activation : {"leaky_relu", "relu", "silu", "elu", "softplus", "tanh"}, default="leaky_relu"
        Hidden-layer nonlinearity.
    fourier_features : int, default=64
        Number of random Fourier frequencies the standardized input is
        expanded with before the network; 0 feeds the input as it is.
    fourier_scale : float, default=2.0
        Standard deviation of those frequencies (in units of the standardized
        input): larger values resolve finer detail and overfit sooner.
    noise : {"gaussian_mixture", "gaussian"}, default="gaussian_mixture"
        Noise distribution ``q``: a Gaussian mixture fitted to the training
        data by EM, or a single Gaussian with the data's mean and covariance.
    noise_components : int, default=16
        Components of the mixture noise, at most one per ``10 * (n_features
        + 1)`` training rows (fewer rows: fewer components, down to one
        Gaussian).
    noise_scale : float, default=1.2
        Factor on the noise's standard deviations; above 1 widens it so that
        it covers the tails of the data, where the model is otherwise left
        unchecked.
    noise_ratio : int, default=8
        Noise rows per data row (``nu``). More makes NCE statistically more
        efficient and each epoch slower.
    learning_rate : float, default=1e-3
        Adam's initial step size; it then follows a cosine schedule to 0 over
        ``max_iter`` epochs.
    batch_size : int, default=256
        Data rows per minibatch (each comes with ``noise_ratio`` times as many
        noise rows).
    max_iter : int, default=100
        Most epochs (passes over the training data).
    weight_decay : float, default=0.0
        L2 penalty (Adam's ``weight_decay``).
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the rows and, after each epoch,
        compute their log-likelihood (log Z from a fixed set of noise draws);
        stop when it has not improved by ``tol`` for ``n_iter_no_change``
        epochs, and keep the best epoch's parameters. This is what keeps the
        Fourier features from fitting noise on smooth data. False trains on
        every row for ``max_iter`` epochs.
    validation_fraction : float, default=0.1
        Share of the training rows held out for early stopping.
    n_iter_no_change : int, default=20
        Patience of early stopping, in epochs.
    tol : float, default=1e-4
        Smallest improvement of the validation log-likelihood (nats per row)
        that counts.
    warm_start : bool, default=False
        Keep training the fitted model (same standardization and noise) at the
        next ``fit`` instead of starting anew.
    n_importance_samples : int, default=100_000
        Noise draws for the importance-sampling estimate of log Z (made on
        first use).
    verbose : int, default=0
        Show a progress bar over epochs.
    random_state : int, RandomState instance or None, default=None
        Seeds the private torch generator behind initialisation, minibatches,
        noise and sampling. An int gives identical fits on the CPU.
    device : {"auto", "cpu", "cuda", "mps"} or str, default="auto"
        Where torch runs; "auto" takes CUDA when available. A device this
        machine cannot use is a ``ValueError`` at fit. On "mps" (no float64)
        inference runs on the CPU.
    n_threads : int or None, default=None
        torch threads on the CPU; None lets skebm choose: one for small
        steps, the idle cores the environment allows for large ones (see the
        user guide, "Threads").

    Attributes
    ----------
    module_ : torch.nn.Module
        The fitted model in the standardized space: ``module_.energy`` (the
        network), ``module_.noise`` (``q``) and ``module_.log_partition`` (c).
    log_partition_ : float
        log Z used by ``score_samples``: the importance-sampling estimate
        (computed on first access).
    log_partition_std_ : float
        Standard error of ``log_partition_``.
    nce_log_partition_ : float
        log Z as learned by NCE.
    mean_, scale_ : ndarray of shape (n_features_in_,)
        Standardization of the inputs.
    device_ : torch.device
        Device the model was fitted on.
    history_ : list of dict
        Per epoch: ``"epoch"``, ``"loss"`` (mean NCE loss per data row) and,
        with early stopping, ``"validation_score"`` (mean log-likelihood of the
        held-out rows, standardized space).
    n_iter_ : int
        Epochs run, over all warm-started fits.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    sklearn.neighbors.KernelDensity : Kernel density estimation.
    sklearn.mixture.GaussianMixture : Gaussian mixture density.

    References
    ----------
    .. [1] Gutmann, M. and Hyvarinen, A. "Noise-contrastive estimation: A new
       estimation principle for unnormalized statistical models." AISTATS 2010.
    .. [2] Tancik, M. et al. "Fourier features let networks learn high
       frequency functions in low dimensional domains." NeurIPS 2020.

    Examples
    --------
    >>> from skebm import NCEDensity
    >>> from skebm.datasets import make_toy_2d
    >>> X = make_toy_2d("moons", 500, random_state=0)
    >>> model = NCEDensity(max_iter=20, random_state=0).fit(X)
    >>> model.score_samples(X[:3]).shape
    (3,)
    >>> model.sample(4, random_state=0).shape
    (4, 2)
    """

    _parameter_constraints = {
        **TorchEstimator._parameter_constraints,
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "fourier_features": [Interval(numbers.Integral, 0, None, closed="left")],
        "fourier_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "noise": [StrOptions({"gaussian", "gaussian_mixture"})],
        "noise_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "noise_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "noise_ratio": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_importance_samples": [Interval(numbers.Integral, 2, None, closed="left")],
    }

    _loss_growth_is_divergence = True
    _supports_early_stopping = True

    def __init__(
        self,
        *,
        hidden_layer_sizes=(128, 128, 128),
        activation="leaky_relu",
        fourier_features=64,
        fourier_scale=2.0,
        noise="gaussian_mixture",
        noise_components=16,
        noise_scale=1.2,
        noise_ratio=8,
        learning_rate=1e-3,
        batch_size=256,
        max_iter=100,
        weight_decay=0.0,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        tol=1e-4,
        warm_start=False,
        n_importance_samples=100_000,
        verbose=0,
        random_state=None,
        device="auto",
        n_threads=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.fourier_features = fourier_features
        self.fourier_scale = fourier_scale
        self.noise = noise
        self.noise_components = noise_components
        self.noise_scale = noise_scale
        self.noise_ratio = noise_ratio
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.n_importance_samples = n_importance_samples
        self.verbose = verbose
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the density to X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, at least 2 rows, all finite.
        y : None
            Ignored.

        Returns
        -------
        self : NCEDensity
            The fitted estimator.
        """
        return self._fit_module(X)

    # -- the pieces the shared training loop calls --------------------------
    def _build(self, Z, generator):
        energy = MLPEnergy(
            Z.shape[1], self._hidden_sizes(), self.activation, generator,
            fourier_features=self.fourier_features, fourier_scale=self.fourier_scale,
            zero_output=True,
        )
        noise = make_noise(
            self.noise, Z, n_components=self.noise_components, scale=self.noise_scale,
            generator=generator,
        )
        # E starts at exactly 0, so the model starts as the noise: normalized, c = 0.
        return _NCEModel(energy, noise)

    def _multiply_adds_per_row(self, n_features):
        sizes = self._hidden_sizes()
        widths = [n_features + 2 * self.fourier_features, *sizes, 1]
        network = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        noise = self.noise_components * n_features * n_features  # the mixture's log-density
        return network + n_features * self.fourier_features + noise

    def _multiply_adds_per_step(self, n_features):
        # Forward and backward (about three forwards) over data and noise rows.
        rows = self.batch_size * (1 + self.noise_ratio)
        return 3 * rows * self._multiply_adds_per_row(n_features)

    def _inference_row_bytes(self):
        widths = [self.n_features_in_, 2 * self.fourier_features, *self._hidden_sizes()]
        return 8 * 4 * (sum(widths) + self.noise_components)

    def _hidden_sizes(self):
        sizes = tuple(int(size) for size in np.atleast_1d(self.hidden_layer_sizes))
        if not sizes or any(size < 1 for size in sizes):
            raise ValueError(
                f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}."
            )
        return sizes

    def _training_loss(self, model, batch, generator):
        """NCE loss per data row: -log h(data) - nu * E_q[log(1 - h(noise))]."""
        log_ratio = math.log(self.noise_ratio)
        noise_rows = model.noise.sample(len(batch) * self.noise_ratio, generator)
        data_term = nn.functional.logsigmoid(model.nce_logit(batch, log_ratio)).sum()
        noise_term = nn.functional.logsigmoid(-model.nce_logit(noise_rows, log_ratio)).sum()
        return -(data_term + noise_term) / len(batch)

    def _validation_score(self, model, Z_val):
        """Mean log-likelihood of the validation rows (standardized space).

        log Z comes from the same 8192 noise draws at every epoch, so epochs
        are compared on a precise, common footing.
        """
        draws = model.noise.sample(8192, make_generator(0, Z_val.device))
        log_z = torch.logsumexp(-model.energy(draws), dim=0) - math.log(len(draws))
        return float((model.unnormalized_log_density(Z_val) - log_z).mean())

    def _after_training(self, model, Z, generator):
        return {"nce_log_partition_": model.log_partition.item()}

    def _estimate_log_partition(self, model, generator):
        """log Z = log E_q[exp(-E)] by importance sampling from the noise, in chunks."""
        log_weights = []
        for rows in gen_batches(self.n_importance_samples, 8192):
            draws = model.noise.sample(rows.stop - rows.start, generator)
            log_weights.append(-model.energy(draws))
        log_z, log_z_std = importance_log_partition(torch.cat(log_weights))
        if log_z_std > 0.1:
            warnings.warn(
                f"NCEDensity: log Z is uncertain (standard error {log_z_std:.2g} nats from "
                f"{self.n_importance_samples} noise draws), so are the log-likelihoods. Raise "
                "n_importance_samples or noise_scale.",
                RuntimeWarning,
            )
        return log_z, log_z_std

    def _log_partition_multiply_adds(self):
        return self.n_importance_samples * self._multiply_adds_per_row(self.n_features_in_)

    def _unnormalized_log_density(self, model, Z):
        return model.unnormalized_log_density(Z)

    # -- inference -----------------------------------------------------------
    def sample(self, n_samples=1, random_state=None):
        """Draw rows from the fitted density.

        Sampling-importance-resampling from the noise (for each row, one of 32
        noise draws, picked with probability proportional to ``p / q``) gives
        starting points close to the model; 20 Metropolis-adjusted Langevin
        steps, which leave the model's distribution exactly invariant, then
        correct what resampling from 32 candidates leaves of the noise and
        separate rows that resampling made identical.

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features_in_)
            The draw, in the units of the training data.
        """
        self._check_fitted()
        model = self._inference_module()

        def draw(n, generator):
            with torch.no_grad():
                start = sampling_importance_resampling(
                    model.unnormalized_log_density, model.noise, n, _SIR_CANDIDATES, generator
                )
            chains, _ = metropolis_adjusted_langevin(
                model.unnormalized_log_density, start, _MALA_STEPS, 0.1, generator
            )
            return chains

        return self._sample_rows(draw, n_samples, random_state, chunk_rows=_SAMPLE_CHUNK)
