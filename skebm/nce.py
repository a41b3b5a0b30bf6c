"""Density estimation by noise-contrastive estimation (NCE)."""

import copy
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
from .noise import fit_base
from .partition import importance_log_partition
from .samplers import metropolis_adjusted_langevin, sampling_importance_resampling

__all__ = ["NCEDensity"]

# sample(): rows per chunk, proposal candidates per row, Langevin steps per row.
_SAMPLE_CHUNK = 1024
_SIR_CANDIDATES = 32
_MALA_STEPS = 20
_MALA_STEP_SIZE = 0.1
# Self-adapting noise: rows in the pool that follows the frozen model, and
# Langevin steps that move it at each refresh.
_POOL_ROWS = 8192
_POOL_MALA_STEPS = 5
# Defaults that switch with the dimension (measured, benchmarks/RESULTS.md): up to
# _LOW_DIMENSION features, Fourier features, a base widened by 1.2 and no marginal
# map; above, no Fourier features, the base as chosen, marginals chosen by CV.
_LOW_DIMENSION = 2
_AUTO_FOURIER_FEATURES = 64
_LOW_DIMENSION_BASE_SCALE = 1.2


class _Snapshot(nn.Module):
    """A frozen copy of the model, used as the noise of self-adapting NCE.

    Its density is ``b(z) exp(-E_f(z) - c_f)``, with ``E_f`` a copy of the
    energy network frozen at the last refresh and ``c_f`` its log Z, tracked
    across refreshes. Its samples are a pool of rows that follows it: at the
    start, exact draws from the base ``b`` (the frozen model with ``E_f = 0``);
    at each refresh, the pool is reweighted by the ratio of the new frozen
    model to the old, ``exp(-(E_new - E_old))``, resampled by those weights
    and moved by a few Metropolis-adjusted Langevin steps that leave the new
    frozen model invariant (a resample-move step of sequential Monte Carlo).
    The mean weight is also the ratio of the two normalizing constants, which
    is how ``c_f`` is tracked.
    """

    def __init__(self, energy, base, generator):
        super().__init__()
        self.energy = copy.deepcopy(energy).requires_grad_(False)
        self.register_buffer("log_partition", torch.zeros((), device=generator.device))
        self.register_buffer("pool", base.sample(_POOL_ROWS, generator))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=generator.device))
        self.register_buffer("effective_sample_size", torch.ones((), device=generator.device))

    def log_prob_minus_base(self, Z):
        """``log p_f(z) - log b(z)``: the frozen model relative to the base."""
        return -self.energy(Z) - self.log_partition

    def step(self, model, interval, generator):
        """Count a training step, refreshing first when ``interval`` have passed."""
        if self.steps >= interval:
            self.refresh(model, generator)
            self.steps.zero_()
        self.steps += 1

    def refresh(self, model, generator):
        """Freeze the current ``model`` as the noise and move the pool to it."""
        with torch.no_grad():
            log_weights = self.energy(self.pool) - model.energy(self.pool)
            self.log_partition += torch.logsumexp(log_weights, 0) - math.log(len(self.pool))
            weights = torch.softmax(log_weights, 0)
            self.effective_sample_size.copy_(1.0 / (weights**2).sum() / len(self.pool))
            rows = torch.multinomial(weights, len(self.pool), replacement=True,
                                     generator=generator)
            self.energy.load_state_dict(model.energy.state_dict())
        log_density = lambda Z: model.base.log_prob(Z) - self.energy(Z)
        pool, _ = metropolis_adjusted_langevin(
            log_density, self.pool[rows], _POOL_MALA_STEPS, _MALA_STEP_SIZE, generator)
        self.pool.copy_(pool)

    def sample(self, n_samples, generator):
        rows = torch.randint(len(self.pool), (n_samples,), generator=generator,
                             device=self.pool.device)
        return self.pool[rows]


class _NCEModel(nn.Module):
    """The trainable model on the standardized data ``z``.

    ``u = marginals(z)`` maps each feature to a standard normal variable (the
    identity when ``marginals`` is None); on ``u`` the model is
    log p(u) = log b(u) - E(u) - c, with b the base mixture, E the energy
    network and c = log Z, and the density of ``z`` is
    p(u(z)) |du/dz|. ``proposal`` is the base widened by ``noise_scale``:
    NCE's noise (unless self-adapting, then ``snapshot`` is) and the
    proposal of importance sampling and of ``sample``. Noise, proposal and
    pool live on ``u``, where the Jacobian cancels from every ratio. The
    densities are modules, so their buffers travel with the model between
    devices."""

    def __init__(self, energy, marginals, base, proposal, base_choice, snapshot=None):
        super().__init__()
        self.energy = energy
        self.marginals = marginals
        self.base = base
        self.proposal = proposal
        self.base_choice = base_choice  # (marginals or not, components, ridge), for a refit
        self.snapshot = snapshot
        self.log_partition = nn.Parameter(torch.zeros((), device=base.means.device))

    def latent(self, Z):
        """``(U, log |dU/dZ|)`` of standardized rows."""
        if self.marginals is None:
            return Z, torch.zeros(len(Z), dtype=Z.dtype, device=Z.device)
        return self.marginals(Z)

    def from_latent(self, U):
        return U if self.marginals is None else self.marginals.inverse(U)

    def latent_log_density(self, U):
        """``log b(u) - E(u)``: the unnormalized log-density on ``u``."""
        return self.base.log_prob(U) - self.energy(U)

    def unnormalized_log_density(self, Z):
        U, log_det = self.latent(Z)
        return self.latent_log_density(U) + log_det

    def log_importance_weights(self, U):
        """``log b(u) - E(u) - log proposal(u)``, for rows drawn from the proposal."""
        if self.proposal is self.base:
            return -self.energy(U)
        return self.latent_log_density(U) - self.proposal.log_prob(U)

    def nce_logit(self, U, log_noise_ratio):
        """log p(u) - log(nu q(u)), q the noise: the logit that u is data."""
        if self.snapshot is None:
            log_ratio = self.log_importance_weights(U) - self.log_partition
        else:  # log b cancels between the model and its frozen copy
            log_ratio = -self.energy(U) - self.log_partition - self.snapshot.log_prob_minus_base(U)
        return log_ratio - log_noise_ratio

    def sample_noise(self, n_samples, generator):
        source = self.proposal if self.snapshot is None else self.snapshot
        return source.sample(n_samples, generator)


class NCEDensity(LikelihoodDensityMixin, TorchEstimator):
    """Normalized density estimation with a neural energy, trained by NCE.

    The model is ``p(x) = b(x) exp(-E(x) - c)``: a base density ``b``, a
    Gaussian mixture fitted to the data (on tables, optionally a mixture
    copula), reweighted by a multilayer perceptron energy ``E`` on the
    standardized inputs, with ``c`` (log Z) a learned scalar. Training is noise-contrastive estimation (Gutmann &
    Hyvarinen 2010): logistic regression that tells data rows from
    ``noise_ratio`` times as many rows drawn from a noise ``q``, with logit
    ``log p(x) - log q(x) - log(noise_ratio)``. Its optimum is the data
    density, ``c`` included, so no MCMC is needed to fit.

    The base is chosen by the data: the number of mixture components (up to
    ``base_components``) and the ridge on their covariances are those with
    the best 3-fold cross-validated likelihood. ``E`` starts at 0, so the
    model starts as the base, and early stopping compares every epoch with
    that start (epoch 0): when the network does not improve the held-out
    likelihood, the fitted model is the base itself, refitted then to every
    training row, the held-out ones included (on small tables every row
    counts).

    Writing the model relative to a base does more. The tails are safe: far
    from the data, where NCE sees no rows, the density decays like ``b``
    instead of being whatever the network extrapolates to. log Z can be
    checked precisely, since the importance weights vary little. And
    sampling-importance-resampling is efficient.

    The noise is, by default (``noise="base"``), the base itself (or, with
    ``noise_scale`` above 1, the base with every standard deviation widened),
    and the logit is ``-E(x) - c - log(noise_ratio)``. With ``noise="self"`` it is self-adapting (Xu 2022):
    training starts with the base as noise, and every
    ``noise_update_interval`` steps the current model is frozen and becomes
    the noise, so the classification stays hard as the model improves. Its
    noise rows come from a pool that follows the frozen model by
    reweighting, resampling and Metropolis-adjusted Langevin steps; its log Z
    is tracked across snapshots by the same weights (the mean weight is the
    ratio of two snapshots' normalizing constants; on 8gaussians the last
    snapshot's tracked log Z is within 0.1 nats of the fitted model's
    importance-sampling estimate). Pool rows are only
    approximately from the frozen model, which biases NCE slightly (see the
    user guide for the measurements); ``score_samples`` does not rely on it,
    as log Z is re-estimated after fitting (below).

    On tables the base can also map each feature through its own kernel
    density estimate first (``marginals``, chosen by cross-validation like
    the mixture): skewed, bounded and dequantized features are then right
    feature by feature, which a few Gaussians cannot do (on dequantized
    digits, 64 features, this is worth about 20 nats per row).

    For 1 or 2 features the inputs first go through random Fourier features
    (``fourier_features="auto"``, Tancik et al. 2020): a plain MLP learns
    sharp structure (thin rings, the edges of a checkerboard) slowly. With
    more features they overfit small tables, and "auto" leaves them out.
    What "auto" switches with the dimension was measured on the tables and
    toys of ``benchmarks/density_tabular.py`` and ``density_2d.py``.

    log Z is re-estimated by importance sampling from the (widened) base
    (``n_importance_samples`` draws) the first time a likelihood is asked
    for (``score_samples``, ``score``, ``log_partition_``), not in ``fit``;
    the draws come from a generator seeded in ``fit``, so the estimate is the
    same whenever it is made, and it is kept with the model once made.
    ``score_samples`` uses that estimate, ``log_partition_``, whose standard
    error is ``log_partition_std_``. NCE's own estimate ``c`` is kept as
    ``nce_log_partition_``. Both are estimates: where the proposal covers the
    model badly (a network much sharper than the base) the standard error
    grows, and a warning says so when it passes 0.1 nats.

    Read more in the :ref:`User Guide <nce_density>`.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(128, 128, 128)
        Widths of the hidden layers of the energy network; an int is one
        layer, as in scikit-learn's MLP estimators.
    activation : {"leaky_relu", "relu", "silu", "elu", "softplus", "tanh"}, default="leaky_relu"
        Hidden-layer nonlinearity.
    fourier_features : "auto" or int, default="auto"
        Number of random Fourier frequencies the standardized input is
        expanded with before the network; 0 feeds the input as it is.
        "auto": 64 for data with 1 or 2 features, 0 for more.
    fourier_scale : float, default=2.0
        Standard deviation of those frequencies (in units of the standardized
        input): larger values resolve finer detail and overfit sooner.
    base : {"gaussian_mixture", "gaussian"}, default="gaussian_mixture"
        The base density ``b``: a full-covariance Gaussian mixture whose
        number of components and covariance ridge are chosen by 3-fold
        cross-validated likelihood, or a single Gaussian (ridge chosen the
        same way).
    base_components : int, default=32
        Most mixture components the base may have. The choice and the EM fit
        look at a random subset of at most 5,000 and 200,000 rows.
    marginals : {"auto", "kde", "none"}, default="auto"
        "kde": before the mixture, map each feature to a standard normal
        variable through the distribution function of its own
        one-dimensional kernel density estimate, so the base is a mixture
        copula with those marginals (skewed, bounded and dequantized
        features are then modelled per feature); "none": the mixture is on
        the standardized features; "auto": for 1 or 2 features "none" (the
        network with Fourier features does better on its own), for more
        whichever has the better cross-validated likelihood, decided with
        the mixture's size.
    base_scale : "auto" or float, default="auto"
        Factor on the chosen base's standard deviations. "auto": 1.2 for 1
        or 2 features, where the network with Fourier features sharpens a
        smooth base better than it corrects a sharp one; 1 for more, so
        that the model starts as (and early stopping can keep) the mixture
        with the best cross-validated likelihood.
    noise : {"base", "self"}, default="base"
        NCE's noise: the base widened by ``noise_scale``, or self-adapting
        (snapshots of the model, refreshed every ``noise_update_interval``
        steps).
    noise_scale : float, default=1.0
        Factor on the base's standard deviations for the noise (with
        ``noise="base"``) and for the proposal of importance sampling and
        sampling. 1 (the noise is the base) measured best on the tables
        tried and at least as good on the 2-D toys; above 1 makes NCE look
        further into the tails.
    noise_update_interval : int, default=100
        With ``noise="self"``: minibatch steps between snapshots of the model.
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
        Most epochs. An epoch is a pass over the training rows, or over a
        fresh random subset of 65,536 of them when there are more: the fit
        then costs the same per epoch whatever the size of the data (a
        million rows are all seen within 16 epochs).
    weight_decay : float, default=0.0
        L2 penalty (Adam's ``weight_decay``).
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the rows and, before training and
        after each epoch, compute their log-likelihood (log Z from a fixed set
        of proposal draws); stop when it has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and keep the best epoch's parameters
        (epoch 0 is the base alone). False trains on every row for
        ``max_iter`` epochs.
    validation_fraction : float, default=0.1
        Share of the training rows held out for early stopping.
    n_iter_no_change : int, default=20
        Patience of early stopping, in epochs.
    tol : float, default=1e-4
        Smallest improvement of the validation log-likelihood (nats per row)
        that counts.
    warm_start : bool, default=False
        Keep training the fitted model (same standardization, base and noise)
        at the next ``fit`` instead of starting anew.
    n_importance_samples : int, default=100_000
        Proposal draws for the importance-sampling estimate of log Z (made on
        first use).
    verbose : int, default=0
        Show a progress bar over epochs.
    random_state : int, RandomState instance or None, default=None
        Seeds the private torch generator behind the base's choice,
        initialisation, minibatches, noise and sampling. An int gives
        identical fits on the CPU.
    device : {"auto", "cpu", "cuda", "mps"} or str, default="auto"
        Where torch runs; "auto" takes CUDA when available. A device this
        machine cannot use is a ``ValueError`` at fit. On "mps" (no float64)
        inference runs on the CPU.
    n_threads : int or None, default=None
        torch threads on the CPU; None lets skebm choose: one for small
        steps, the idle cores the environment allows for large ones (see
        :ref:`threads` in the user guide).

    Attributes
    ----------
    module_ : torch.nn.Module
        The fitted model in the standardized space: ``module_.marginals``
        (the per-feature map, or None), ``module_.energy`` (the network),
        ``module_.base`` (``b``, on the mapped features),
        ``module_.proposal`` (the base, widened by ``noise_scale``),
        ``module_.log_partition`` (c) and, with ``noise="self"``,
        ``module_.snapshot`` (the last frozen model and its pool).
    log_partition_ : float
        log Z used by ``score_samples``: the importance-sampling estimate
        (computed on first access).
    log_partition_std_ : float
        Standard error of ``log_partition_``.
    nce_log_partition_ : float
        log Z as learned by NCE.
    base_n_components_ : int
        Components of the base mixture, as chosen.
    base_marginals_ : {"kde", "none"}
        Whether the base maps the features through their marginals, as
        chosen.
    mean_, scale_ : ndarray of shape (`n_features_in_`,)
        Standardization of the inputs.
    device_ : torch.device
        Device the model was fitted on.
    history_ : list of dict
        Per epoch: ``"epoch"``, ``"loss"`` (mean NCE loss per data row), with
        early stopping ``"validation_score"`` (mean log-likelihood of the
        held-out rows, standardized space; the model before training is
        scored too, and kept when no epoch beats it), and with
        ``noise="self"`` ``"noise_log_partition"`` (the frozen model's
        tracked log Z) and ``"noise_ess"`` (effective sample size of the last
        reweighting of the pool, as a fraction; near 0 means the model moved
        too far between snapshots: lower ``noise_update_interval``).
    n_iter_ : int
        Epochs run, over all warm-started fits.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    sklearn.neighbors.KernelDensity : Kernel density estimation.
    sklearn.mixture.GaussianMixture : Gaussian mixture density.

    References
    ----------
    .. [1] Gutmann, M. and Hyvarinen, A. "Noise-contrastive estimation: A new
       estimation principle for unnormalized statistical models." AISTATS 2010.
    .. [2] Xu, N. "Self-adapting noise-contrastive estimation for energy-based
       models." arXiv:2211.02650, 2022.
    .. [3] Tancik, M. et al. "Fourier features let networks learn high
       frequency functions in low dimensional domains." NeurIPS 2020.
    .. [4] Del Moral, P., Doucet, A. and Jasra, A. "Sequential Monte Carlo
       samplers." JRSS B 68 (2006).

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
        "fourier_features": [StrOptions({"auto"}),
                             Interval(numbers.Integral, 0, None, closed="left")],
        "fourier_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "base": [StrOptions({"gaussian", "gaussian_mixture"})],
        "base_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "marginals": [StrOptions({"auto", "kde", "none"})],
        "base_scale": [StrOptions({"auto"}), Interval(numbers.Real, 0, None, closed="neither")],
        "noise": [StrOptions({"base", "self"})],
        "noise_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "noise_update_interval": [Interval(numbers.Integral, 1, None, closed="left")],
        "noise_ratio": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_importance_samples": [Interval(numbers.Integral, 2, None, closed="left")],
    }

    _loss_growth_is_divergence = True
    _supports_early_stopping = True
    _max_epoch_rows = 65_536

    def __init__(
        self,
        *,
        hidden_layer_sizes=(128, 128, 128),
        activation="leaky_relu",
        fourier_features="auto",
        fourier_scale=2.0,
        base="gaussian_mixture",
        base_components=32,
        marginals="auto",
        base_scale="auto",
        noise="base",
        noise_scale=1.0,
        noise_update_interval=100,
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
        self.base = base
        self.base_components = base_components
        self.marginals = marginals
        self.base_scale = base_scale
        self.noise = noise
        self.noise_scale = noise_scale
        self.noise_update_interval = noise_update_interval
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
        n_fourier = self._n_fourier_features(Z.shape[1])
        energy = MLPEnergy(
            Z.shape[1], self._hidden_sizes(), self.activation, generator,
            fourier_features=n_fourier, fourier_scale=self.fourier_scale,
            zero_output=True,
        )
        marginals, base, proposal, choice = self._fit_base(Z, generator)
        snapshot = _Snapshot(energy, base, generator) if self.noise == "self" else None
        # E starts at exactly 0, so the model starts as the base: normalized, c = 0.
        return _NCEModel(energy, marginals, base, proposal, choice, snapshot)

    def _fit_base(self, Z, generator, choice=None):
        """(marginal map or None, base, proposal, choice) fitted to ``Z``;
        ``choice`` (marginals or not, components, ridge) is made by
        cross-validation unless given."""
        low_dimensional = Z.shape[1] <= _LOW_DIMENSION
        marginals, base, choice = fit_base(
            self.base, Z, max_components=self.base_components,
            marginals="none" if self.marginals == "auto" and low_dimensional else self.marginals,
            generator=generator, choice=choice)
        base_scale = self.base_scale
        if base_scale == "auto":
            base_scale = _LOW_DIMENSION_BASE_SCALE if low_dimensional else 1.0
        base = base.widened(base_scale)
        proposal = base if self.noise_scale == 1 else base.widened(self.noise_scale)
        return marginals, base, proposal, choice

    def _n_fourier_features(self, n_features):
        if self.fourier_features != "auto":
            return self.fourier_features
        return _AUTO_FOURIER_FEATURES if n_features <= _LOW_DIMENSION else 0

    def _multiply_adds_per_row(self, n_features):
        n_fourier = self._n_fourier_features(n_features)
        widths = [n_features + 2 * n_fourier, *self._hidden_sizes(), 1]
        network = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        base = self.base_components * n_features * n_features  # the mixture's log-density
        return network + n_features * n_fourier + base

    def _multiply_adds_per_step(self, n_features):
        # Forward and backward (about three forwards) over data and noise rows.
        rows = self.batch_size * (1 + self.noise_ratio)
        return 3 * rows * self._multiply_adds_per_row(n_features)

    def _inference_row_bytes(self):
        n_fourier = self._n_fourier_features(self.n_features_in_)
        widths = [self.n_features_in_, 2 * n_fourier, *self._hidden_sizes()]
        return 8 * 4 * (sum(widths) + self.module_.base.n_components)

    def _hidden_sizes(self):
        sizes = tuple(int(size) for size in np.atleast_1d(self.hidden_layer_sizes))
        if not sizes or any(size < 1 for size in sizes):
            raise ValueError(
                f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}."
            )
        return sizes

    def _training_loss(self, model, batch, generator):
        """NCE loss per data row: -log h(data) - nu * E_q[log(1 - h(noise))]."""
        if model.snapshot is not None:
            model.snapshot.step(model, self.noise_update_interval, generator)
        log_ratio = math.log(self.noise_ratio)
        noise_rows = model.sample_noise(len(batch) * self.noise_ratio, generator)
        data_rows, _ = model.latent(batch)
        data_term = nn.functional.logsigmoid(model.nce_logit(data_rows, log_ratio)).sum()
        noise_term = nn.functional.logsigmoid(-model.nce_logit(noise_rows, log_ratio)).sum()
        return -(data_term + noise_term) / len(batch)

    def _validation_score(self, model, Z_val):
        """Mean log-likelihood of the validation rows (standardized space).

        log Z comes from the same 8192 proposal draws at every epoch, so
        epochs are compared on a precise, common footing.
        """
        draws = model.proposal.sample(8192, make_generator(0, Z_val.device))
        log_z, _ = importance_log_partition(model.log_importance_weights(draws))
        return float(model.unnormalized_log_density(Z_val).mean()) - log_z

    def _epoch_diagnostics(self, model):
        if model.snapshot is None:
            return {}
        return {"noise_log_partition": model.snapshot.log_partition.item(),
                "noise_ess": model.snapshot.effective_sample_size.item()}

    def _after_training(self, model, Z, generator):
        if model.energy.is_zero() and self.early_stopping:
            # Early stopping kept the base alone: it may as well see every row.
            model.marginals, model.base, model.proposal, _ = self._fit_base(
                Z, generator, choice=model.base_choice)
        return {"nce_log_partition_": model.log_partition.item(),
                "base_n_components_": model.base.n_components,
                "base_marginals_": "none" if model.marginals is None else "kde"}

    def _estimate_log_partition(self, model, generator):
        """log Z = log E_q[b exp(-E) / q] by importance sampling from the
        proposal q, in chunks."""
        log_weights = []
        for rows in gen_batches(self.n_importance_samples, 8192):
            draws = model.proposal.sample(rows.stop - rows.start, generator)
            log_weights.append(model.log_importance_weights(draws))
        log_z, log_z_std = importance_log_partition(torch.cat(log_weights))
        if log_z_std > 0.1:
            warnings.warn(
                f"NCEDensity: log Z is uncertain (standard error {log_z_std:.2g} nats from "
                f"{self.n_importance_samples} proposal draws), so are the log-likelihoods. "
                "Raise n_importance_samples or noise_scale.",
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

        Sampling-importance-resampling from the proposal (the base widened by
        ``noise_scale``: for each row, one of 32 proposal draws, picked with
        probability proportional to ``p / q``) gives starting points close to
        the model; 20 Metropolis-adjusted Langevin steps, which leave the
        model's distribution exactly invariant, then correct what resampling
        from 32 candidates leaves of the proposal and separate rows that
        resampling made identical.

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`)
            The draw, in the units of the training data.
        """
        self._check_fitted()
        model = self._inference_module()

        def draw(n, generator):
            with torch.no_grad():
                start = sampling_importance_resampling(
                    model.latent_log_density, model.proposal, n, _SIR_CANDIDATES, generator
                )
            chains, _ = metropolis_adjusted_langevin(
                model.latent_log_density, start, _MALA_STEPS, _MALA_STEP_SIZE, generator
            )
            with torch.no_grad():
                return model.from_latent(chains)

        return self._sample_rows(draw, n_samples, random_state, chunk_rows=_SAMPLE_CHUNK)
