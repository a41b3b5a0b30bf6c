"""Restricted Boltzmann machines trained by persistent contrastive divergence."""

import numbers
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import (
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import Step, TorchEstimator
from ._checks import check_n_steps
from ._density import LikelihoodDensityMixin
from ._rbm_model import MAX_EXACT_UNITS, ContrastiveDivergence, RBMModule, rbm_pseudo_likelihood
from ._runtime import make_generator, refuse_beyond_memory
from .partition import refuse_ais_beyond_memory

__all__ = ["PCDRestrictedBoltzmann"]

#: Column means are clipped to [EPS, 1 - EPS] before their logits are taken.
_BASE_RATE_EPS = 1e-3

#: Rows of training data whose reconstruction error is reported per epoch
#: (and whose hidden inputs the divergence guard reads).
_LOSS_ROWS = 1024

#: A hidden unit's input beyond this means the weights have blown up.
_SATURATED_INPUT = 1e3

#: ``learning_rate="auto"`` for each kind of visible unit: BernoulliRBM's
#: 0.1 for binary units; for unit-variance Gaussian ones 0.001, since 0.03
#: and above diverge on iris, wine, breast cancer and diabetes (user guide).
_AUTO_LEARNING_RATES = {"bernoulli": 0.1, "gaussian": 1e-3}


class PCDRestrictedBoltzmann(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, LikelihoodDensityMixin, TorchEstimator
):
    """Restricted Boltzmann machine trained by persistent contrastive divergence.

    A drop-in replacement for :class:`sklearn.neural_network.BernoulliRBM`
    (same parameters, same meaning, same ``transform``), run by torch, with a
    normalized log-likelihood, sampling, PCD-k or CD-k, momentum, weight
    decay and Gaussian visible units. Training follows the log-likelihood
    gradient, the model's statistics taken from block Gibbs chains that
    persist across minibatches (PCD, Tieleman 2008) or restart at each
    (CD-k, Hinton 2002). With Bernoulli visible units X must lie in [0, 1].

    ``score_samples`` is a normalized log-probability ``-F(v) - log Z`` (``F``
    the free energy); log Z is computed on first use, exactly when the
    smaller layer has at most 20 units, by annealed importance sampling
    otherwise. ``pseudo_likelihood`` is BernoulliRBM's ``score_samples``,
    without its randomness.

    Read more in the :ref:`User Guide <pcd_rbm>`.

    Parameters
    ----------
    n_components : int, default=256
        Number of hidden units.
    learning_rate : float or "auto", default="auto"
        Step size of the updates (times the mean gradient over a minibatch).
        "auto": 0.1 (BernoulliRBM's default) with Bernoulli visible units,
        0.001 with Gaussian ones, which diverge at 0.03 and above on
        standardized real tables.
    batch_size : int, default=10
        Rows per minibatch.
    n_iter : int, default=10
        Epochs (passes over the training data).
    n_gibbs_steps : int, default=1
        Block Gibbs steps per update (the k of CD-k / PCD-k).
    persistent : bool, default=True
        Persistent chains (PCD) if True; chains restarted at the data (CD-k)
        if False.
    n_persistent_chains : int or None, default=None
        Number of persistent chains; None uses ``batch_size``, as
        BernoulliRBM does. Ignored when ``persistent=False``.
    momentum : float, default=0.0
        Momentum of the updates, in [0, 1); 0 is BernoulliRBM's plain
        stochastic gradient.
    weight_decay : float, default=0.0
        L2 penalty on the weights (not the biases).
    visible_units : {"bernoulli", "gaussian"}, default="bernoulli"
        Binary (or [0, 1]) visible units, or unit-variance Gaussian ones for
        real-valued data (the features are then standardized first).
    n_ais_chains : int, default=100
        AIS runs for the estimate of log Z (when it is not exact), made on
        first use.
    n_ais_temperatures : int, default=1000
        Intermediate distributions of each AIS run; more is more precise and
        slower, linearly.
    verbose : int, default=0
        0 shows a progress bar only once the fit passes 10 seconds, in
        the main thread of the main process with a terminal or notebook
        (never in ``GridSearchCV``'s parallel workers), and erases it at the
        end; a positive value shows it from the first epoch and keeps it; a
        negative one shows nothing.
    random_state : int, RandomState instance or None, default=None
        Seeds the private torch generator behind initialisation, minibatches,
        Gibbs sampling and AIS. An int gives identical fits on the CPU.
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
    components_ : ndarray of shape (n_components, `n_features_in_`)
        Weight matrix (BernoulliRBM's layout), float64, read from
        ``module_``.
    intercept_hidden_ : ndarray of shape (n_components,)
        Biases of the hidden units.
    intercept_visible_ : ndarray of shape (`n_features_in_`,)
        Biases of the visible units (of the standardized features with
        Gaussian visible units).
    log_partition_ : float
        log Z used by ``score_samples`` (computed on first access).
    log_partition_std_ : float
        Standard error of ``log_partition_``: 0 when exact, AIS's otherwise.
    log_partition_method_ : {"exact", "ais"}
        How ``log_partition_`` is obtained.
    module_ : torch.nn.Module
        The fitted model: parameters ``components`` (n_components,
        n_features; ``weights`` is its transpose), ``visible_bias``,
        ``hidden_bias``; buffers ``chain_hidden`` (the
        persistent chains), ``base_visible_bias`` and the momenta.
    mean_, scale_ : ndarray of shape (`n_features_in_`,)
        Standardization of the inputs (0 and 1 for Bernoulli visible units).
    device_ : torch.device
        Device the model was fitted on.
    history_ : list of dict
        Per epoch: ``"epoch"`` and ``"loss"``, the mean squared
        reconstruction error (``v`` against ``E[v | P(h | v)]``) of the first
        1024 training rows.
    n_iter_ : int
        Epochs run, over ``fit`` and the ``partial_fit`` calls after it.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    sklearn.neural_network.BernoulliRBM : The numpy RBM this replaces.

    References
    ----------
    .. [1] Hinton, G. E. "Training products of experts by minimizing
       contrastive divergence." Neural Computation 14 (2002).
    .. [2] Tieleman, T. "Training restricted Boltzmann machines using
       approximations to the likelihood gradient." ICML 2008.
    .. [3] Salakhutdinov, R. and Murray, I. "On the quantitative analysis of
       deep belief networks." ICML 2008.
    .. [4] Besag, J. "Statistical analysis of non-lattice data." The
       Statistician 24 (1975).
    .. [5] Hinton, G. E. "A practical guide to training restricted Boltzmann
       machines." UTML TR 2010-003 (2010).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skebm import PCDRestrictedBoltzmann
    >>> X = load_digits().data / 16
    >>> rbm = PCDRestrictedBoltzmann(n_components=16, n_iter=2, random_state=0).fit(X)
    >>> rbm.transform(X[:3]).shape
    (3, 16)
    >>> rbm.log_partition_method_  # 16 hidden units: log Z by enumeration
    'exact'
    >>> rbm.sample(2, random_state=0).shape
    (2, 64)
    """

    _parameter_constraints = {
        **{
            name: TorchEstimator._parameter_constraints[name]
            for name in ("batch_size", "weight_decay", "verbose", "random_state", "device",
                         "n_threads")
        },
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither"),
                          StrOptions({"auto"})],
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_gibbs_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "persistent": ["boolean"],
        "n_persistent_chains": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "visible_units": [StrOptions({"bernoulli", "gaussian"})],
        "n_ais_chains": [Interval(numbers.Integral, 2, None, closed="left")],
        "n_ais_temperatures": [Interval(numbers.Integral, 3, None, closed="left")],
    }
    _model_parameters = ("n_components", "visible_units", "n_persistent_chains")

    def __init__(
        self,
        n_components=256,
        *,
        learning_rate="auto",
        batch_size=10,
        n_iter=10,
        n_gibbs_steps=1,
        persistent=True,
        n_persistent_chains=None,
        momentum=0.0,
        weight_decay=0.0,
        visible_units="bernoulli",
        n_ais_chains=100,
        n_ais_temperatures=1000,
        verbose=0,
        random_state=None,
        device="auto",
        n_threads=None,
    ):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.n_gibbs_steps = n_gibbs_steps
        self.persistent = persistent
        self.n_persistent_chains = n_persistent_chains
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.visible_units = visible_units
        self.n_ais_chains = n_ais_chains
        self.n_ais_temperatures = n_ais_temperatures
        self.verbose = verbose
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads

    # -- fitting ---------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the RBM to X for ``n_iter`` epochs, from a fresh start.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data, at least 2 rows, all finite: in [0, 1] with
            ``visible_units="bernoulli"`` (the default; values outside are a
            ``ValueError``), any real values with ``"gaussian"``. Sparse X
            stays sparse; one minibatch at a time is made dense.
        y : None
            Ignored.

        Returns
        -------
        self : PCDRestrictedBoltzmann
            The fitted estimator.
        """
        return self._fit_module(X)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One epoch over X in minibatches, continuing the fitted model.

        The first call starts a model as ``fit`` does. With ``len(X) <=
        batch_size`` this is a single update, as BernoulliRBM's
        ``partial_fit``. Cheap: log Z is only estimated when a likelihood is
        asked for.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            At least 2 rows on the first call, then any; in the range ``fit``
            accepts.
        y : None
            Ignored.

        Returns
        -------
        self : PCDRestrictedBoltzmann
            The fitted estimator.
        """
        return self._fit_module(X, partial=True)

    def _n_epochs(self, epoch_steps):
        return self.n_iter

    def _check_input_values(self, X, settings):
        if settings["visible_units"] != "bernoulli":
            return
        values = X.data if sp.issparse(X) else X
        # A few units in the last place beyond are a scaler's rounding
        # (MinMaxScaler gives 1.0000000000000002): the formulas take them.
        slack = 8 * np.finfo(values.dtype).eps
        if values.size and (values.min() < -slack or values.max() > 1 + slack):
            raise ValueError(
                f"{type(self).__name__} with visible_units='bernoulli' needs X in [0, 1] "
                f"(binary data, or grey levels read as probabilities); X has values from "
                f"{float(values.min())!r} to {float(values.max())!r}. Scale it, e.g. with "
                "sklearn.preprocessing.MinMaxScaler(clip=True) (clip=True keeps new rows "
                "beyond the training range in [0, 1] too, as cross-validation needs) or "
                "X / X.max(), or use visible_units='gaussian' for real-valued data."
            )

    def _input_standardization(self, X):
        if self.visible_units == "gaussian":
            return super()._input_standardization(X)
        # Bernoulli units read the values themselves.
        return np.zeros(X.shape[1]), np.ones(X.shape[1])

    def _multiply_adds_per_step(self, n_features, target_attributes):
        # (P)CD-k: k products down and up for the chains, one up for the
        # data, two for the gradient; rows = batch_size (data) and as many chains.
        return (2 * self.n_gibbs_steps + 3) * self.batch_size * n_features * self.n_components

    def _multiply_adds_per_row(self, n_features):
        return n_features * self._model_settings()["n_components"]

    def _inference_row_bytes(self):
        return 8 * 4 * (self.n_features_in_ + self._model_settings()["n_components"])

    def _build(self, Z, generator, scale):
        if self.visible_units == "bernoulli":
            rates = Z.mean(0).clamp(_BASE_RATE_EPS, 1 - _BASE_RATE_EPS)
            base = torch.log(rates) - torch.log1p(-rates)
        else:
            base = Z.mean(0)
        n_chains = self.n_persistent_chains or self.batch_size
        refuse_beyond_memory(4 * 2 * Z.shape[1] * self.n_components + 4 * n_chains * (
            Z.shape[1] + self.n_components), f"An RBM of {self.n_components:,} hidden units on "
            f"{Z.shape[1]:,} features", "Lower n_components or n_persistent_chains.")
        return RBMModule(Z.shape[1], self.n_components, n_chains, base, self.visible_units,
                         generator)

    def _learning_rate(self):
        # visible_units as set: a warm start refuses one the model was not fitted with.
        if self.learning_rate == "auto":
            return _AUTO_LEARNING_RATES[self.visible_units]
        return self.learning_rate

    def _make_update_rule(self, module, n_steps):
        return ContrastiveDivergence(self, module)

    def _training_step(self, module, batch, generator, rule):
        rule.step(batch, generator)
        return Step(None)  # the reported loss is _epoch_loss's

    @torch.no_grad()
    def _epoch_loss(self, module, Z_train):
        """Mean squared reconstruction error of the first rows."""
        return module.reconstruction_error(Z_train[:_LOSS_ROWS])

    @torch.no_grad()
    def _divergence_reason(self, module, Z_train):
        """Too large a learning rate blows the weights up without a NaN (the
        updates move them by up to ``learning_rate``): then every hidden unit
        is saturated, its input beyond any float's resolution of a sigmoid,
        and learning has stopped. The threshold is far above what sane fits
        reach (see the user guide)."""
        largest = torch.addmm(module.hidden_bias, Z_train[:_LOSS_ROWS], module.weights).abs().max()
        if largest > _SATURATED_INPUT:
            return (f"the inputs of the hidden units reach {float(largest):.3g} (above "
                    f"{_SATURATED_INPUT:g}, every unit is saturated and learning has stopped)")
        return None

    # -- log Z ---------------------------------------------------------------------
    @property
    def log_partition_method_(self):
        """How ``log_partition_`` is obtained: ``"exact"`` or ``"ais"``."""
        self._check_fitted()
        return "exact" if self.module_.log_partition_is_exact else "ais"

    _log_partition_parameters = ("n_ais_chains", "n_ais_temperatures")

    def _estimate_log_partition(self, module, generator, *, n_ais_chains, n_ais_temperatures):
        if not module.log_partition_is_exact:
            refuse_ais_beyond_memory(n_ais_chains, sum(module.components.shape),
                                     self._inference_device())
        return module.log_partition(generator, n_ais_chains=n_ais_chains,
                                    n_ais_temperatures=n_ais_temperatures)

    def _log_partition_multiply_adds(self, *, n_ais_chains, n_ais_temperatures):
        if self.module_.log_partition_is_exact:
            return 2**MAX_EXACT_UNITS
        return n_ais_chains * n_ais_temperatures * self._multiply_adds_per_row(
            self.n_features_in_)

    def _unnormalized_log_density(self, module, Z):
        return -module.free_energy(Z)

    def score_samples(self, X):
        """Normalized log-likelihood of each row of X, in nats: minus the free
        energy, less log Z (exact or by AIS, see ``log_partition_method_``).

        With Bernoulli units no row can score above 0; one that does shows
        that AIS underestimated log Z, and a warning says so.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,), float64
        """
        scores = super().score_samples(X)
        if (self.module_.visible_units == "bernoulli" and scores.size
                and scores.max() > 1e-9 * max(1.0, abs(self.log_partition_))):
            # -F is convex in v, so on [0, 1]^d it peaks at a binary row,
            # whose probability -F - log Z is at most 0 for the true log Z.
            warnings.warn(
                f"PCDRestrictedBoltzmann: a row scores {scores.max():.4g} nats, above the 0 "
                "no probability of a binary row exceeds: the AIS estimate of log Z "
                f"({self.log_partition_:.6g} +- {self.log_partition_std_:.2g}) is too low, and "
                "every score too high. Refit with more n_ais_temperatures (large hidden "
                "layers need more).", UserWarning)
        return scores

    # -- fitted parameters, read from the model (one source of truth) ----------------
    def _parameter(self, name):
        self._check_fitted()
        return getattr(self.module_, name).detach().to(torch.float64).cpu().numpy()

    @property
    def components_(self):
        """Weight matrix, shape (n_components, `n_features_in_`), float64."""
        return self._parameter("components")

    @property
    def intercept_hidden_(self):
        """Biases of the hidden units, shape (n_components,)."""
        return self._parameter("hidden_bias")

    @property
    def intercept_visible_(self):
        """Biases of the visible units, shape (`n_features_in_`,)."""
        return self._parameter("visible_bias")

    @property
    def _n_features_out(self):
        return self._model_settings()["n_components"]

    # -- inference ---------------------------------------------------------------
    def transform(self, X):
        """Probabilities of the hidden units given each row, ``P(h = 1 | v)``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        H : ndarray of shape (n_samples, n_components)
            float32 for float32 input, float64 otherwise.
        """
        return self._map_fitted(X, lambda module, Z: module.hidden_probabilities(Z),
                                keep_dtype=True)

    def free_energy(self, X):
        """Free energy ``F(v) = -log sum_h exp(-E(v, h))`` of each row.

        ``log p(v) = -F(v) - log Z``: lower free energy, likelier row. With
        Gaussian visible units, of the standardized row.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        F : ndarray of shape (n_samples,), float64
        """
        return self._map_fitted(X, lambda module, Z: module.free_energy(Z))

    def pseudo_likelihood(self, X):
        """Log pseudo-likelihood of each row, over all features (Besag 1975).

        ``sum_i log p(v_i | v_-i)``, each term
        ``log sigmoid(F(v with v_i -> 1 - v_i) - F(v))``: what
        ``BernoulliRBM.score_samples`` estimates with one random feature
        (times ``n_features``), here exact and deterministic. Bernoulli
        visible units only.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        pseudo_likelihood : ndarray of shape (n_samples,), float64
        """
        self._check_fitted()
        if self.module_.visible_units != "bernoulli":
            raise ValueError("pseudo_likelihood is defined for Bernoulli visible units only.")
        return self._map_fitted(X, lambda module, Z: rbm_pseudo_likelihood(
            Z, module.weights, module.visible_bias, module.hidden_bias))

    def gibbs(self, v, random_state=None):
        """One block Gibbs step from each row: draw ``h ~ p(h | v)``, then
        ``v' ~ p(v | h)``.

        Parameters
        ----------
        v : {array-like, sparse matrix} of shape (n_samples, n_features)
            Starting rows.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.

        Returns
        -------
        v_new : ndarray of shape (n_samples, n_features), float64
            Binary for Bernoulli visible units.
        """
        self._check_fitted()
        generator = make_generator(random_state, self._inference_device())
        Z = self._map_fitted(v, lambda module, Z: module.gibbs(Z, 1, generator))
        return Z * self.scale_ + self.mean_

    def sample(self, n_samples=1, random_state=None, *, n_steps=1000):
        """Draw rows from the model by block Gibbs sampling.

        Each row is the end of its own chain, started from the data's
        marginals (independent units) and run for ``n_steps`` steps.

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.
        n_steps : int, default=1000
            Gibbs steps per chain; more mixes better.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`), float64
            Binary rows for Bernoulli visible units; in the units of the
            training data for Gaussian ones.
        """
        self._check_fitted()
        check_n_steps(n_steps)
        module = self._inference_module()

        def draw(n, generator):
            return module.gibbs(module.draw_marginals(n, generator), n_steps, generator)

        return self._sample_rows(draw, n_samples, random_state)

    def sample_conditional(self, X, mask=None, *, n_steps=1000, random_state=None):
        """Fill in features of X by sampling them given the others (inpainting).

        Block Gibbs sampling with the known visible units clamped: the free
        ones (``mask`` True, or X's NaN entries when ``mask`` is None) start
        from the data's marginals and are redrawn at every step given the
        hidden units, which are drawn given all visible units. The chains'
        stationary distribution is ``p(v_free | v_known)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, `n_features_in_`)
            Known values (in [0, 1] for Bernoulli visible units); the free
            entries may hold anything, NaN included (but an integer beyond
            2**53, refused in any input).
        mask : array-like of bool, shape (n_samples, `n_features_in_`), or None
            True where a value is to be drawn; None means ``np.isnan(X)``.
        n_steps : int, default=1000
            Gibbs steps per row.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.

        Returns
        -------
        X_completed : ndarray of shape (n_samples, `n_features_in_`), float64
            The known values exactly as given; the drawn ones binary for
            Bernoulli visible units.
        """
        check_n_steps(n_steps)
        self._check_fitted()
        module = self._inference_module()

        def complete(Z, free, generator):
            start = torch.where(free, module.draw_marginals(len(Z), generator), Z)
            return module.gibbs(start, n_steps, generator, free=free)

        return self._complete_rows(X, mask, complete, random_state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = self.visible_units == "bernoulli"
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


