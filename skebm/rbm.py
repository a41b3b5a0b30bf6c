"""Restricted Boltzmann machines trained by persistent contrastive divergence."""

import numbers

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import (
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ._base import LikelihoodDensityMixin, TorchEstimator, make_generator
from .partition import (
    MAX_EXACT_UNITS,
    rbm_ais_log_partition,
    rbm_exact_log_partition,
    rbm_free_energy,
)
from .samplers import bernoulli, block_gibbs, rbm_sample_visible

__all__ = ["PCDRestrictedBoltzmann"]

#: Column means are clipped to [EPS, 1 - EPS] before their logits are taken.
_BASE_RATE_EPS = 1e-3

#: Rows of training data whose reconstruction error is reported per epoch
#: (and whose hidden inputs the divergence guard reads).
_LOSS_ROWS = 1024

#: A hidden unit's input beyond this means the weights have blown up.
_SATURATED_INPUT = 1e3


class _RBMModule(nn.Module):
    """An RBM's parameters and training state, all moved and pickled together.

    The weight parameter is ``components``, shape ``(n_hidden, n_visible)``
    as BernoulliRBM's ``components_`` (this layout makes the products of a
    step 10-15% faster on a CPU); ``weights`` is its transpose, the
    ``(n_visible, n_hidden)`` view that the functions of
    :mod:`skebm.partition` and :mod:`skebm.samplers` take. ``chain_hidden`` holds the
    persistent chains as ``P(h = 1 | v)`` of each chain's last visible state,
    from which the next step draws ``h``. ``base_visible_bias`` (the data's
    marginals) is where sampling and AIS start; the ``*_velocity`` buffers are
    the momentum.
    """

    def __init__(self, n_visible, n_hidden, n_chains, base_visible_bias, generator):
        super().__init__()
        device = generator.device
        components = 0.01 * torch.randn(n_hidden, n_visible, generator=generator, device=device)
        self.components = nn.Parameter(components, requires_grad=False)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible, device=device),
                                         requires_grad=False)
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden, device=device), requires_grad=False)
        self.register_buffer("chain_hidden", torch.zeros(n_chains, n_hidden, device=device))
        self.register_buffer("base_visible_bias", base_visible_bias.clone())
        for name, param in list(self.named_parameters()):
            self.register_buffer(f"{name}_velocity", torch.zeros_like(param))

    @property
    def weights(self):
        return self.components.t()

    def hidden_probabilities(self, visible):
        return torch.sigmoid(torch.addmm(self.hidden_bias, visible, self.weights))

    def free_energy(self, visible, visible_units):
        return rbm_free_energy(visible, self.weights, self.visible_bias, self.hidden_bias,
                               visible_units)


class _ContrastiveDivergence:
    """The (P)CD-k update of an RBM, written by hand (no autograd).

    The log-likelihood gradient is ``<v h>_data - <v h>_model`` for the
    weights (``<v>`` and ``<h>`` for the biases). The model's statistics come
    from the chains after ``n_gibbs_steps`` block Gibbs steps, started from
    the persistent chains (PCD) or the minibatch (CD). At a batch of 10 the
    cost is per call, not arithmetic, so the data's and the chains' rows go
    through each product together: one product for ``P(h | v)`` of both, one
    ``addmm_`` for the whole weight gradient, with each row weighted by
    ``+learning_rate / n_data`` or ``-learning_rate / n_chains``.
    """

    def __init__(self, estimator, module):
        self.module = module
        self.learning_rate = estimator.learning_rate
        self.n_gibbs_steps = estimator.n_gibbs_steps
        self.persistent = estimator.persistent
        self.visible_units = estimator.visible_units
        self.momentum = estimator.momentum
        self.weight_decay = estimator.weight_decay
        # Looked up once: at a batch of 10 a step is ~150 us, and attribute
        # lookups and views per step were a sixth of it. Every update below is
        # in place, so the view ``weights`` stays the transpose of ``components``.
        self.components, self.weights = module.components, module.components.t()
        self.visible_bias, self.hidden_bias = module.visible_bias, module.hidden_bias
        self._row_weights = {}

    def row_weights(self, n_data, n_model, like):
        key = (n_data, n_model)
        if key not in self._row_weights:
            self._row_weights[key] = torch.cat([
                torch.full((n_data,), self.learning_rate / n_data),
                torch.full((n_model,), -self.learning_rate / n_model),
            ]).to(like)
        return self._row_weights[key]

    def step(self, batch, generator):
        # Nothing here requires grad (the parameters are created with
        # requires_grad=False), so no autograd graph is built without no_grad.
        weights, visible_bias, hidden_bias = self.weights, self.visible_bias, self.hidden_bias
        if self.persistent:
            hidden_model = self.module.chain_hidden
        else:
            hidden_data = hidden_model = torch.sigmoid(torch.addmm(hidden_bias, batch, weights))
        for step in range(self.n_gibbs_steps):
            if step:
                hidden_model = torch.sigmoid(torch.addmm(hidden_bias, visible_model, weights))
            hidden = bernoulli(hidden_model, generator)
            visible_model = rbm_sample_visible(hidden, weights, visible_bias,
                                               self.visible_units, generator)
        n_data = len(batch)
        visible_both = torch.cat([batch, visible_model])
        if self.persistent:
            hidden_both = torch.sigmoid(torch.addmm(hidden_bias, visible_both, weights))
            self.module.chain_hidden.copy_(hidden_both[n_data:])
        else:
            hidden_model = torch.sigmoid(torch.addmm(hidden_bias, visible_model, weights))
            hidden_both = torch.cat([hidden_data, hidden_model])
        row_weights = self.row_weights(n_data, len(visible_model), batch)
        # Rows weighted on the visible side, the narrower one on digits.
        weighted_visible = visible_both * row_weights[:, None]
        hidden_t = hidden_both.t()
        if self.momentum == 0 and self.weight_decay == 0:
            self.components.addmm_(hidden_t, weighted_visible)
            visible_bias.addmv_(visible_both.t(), row_weights)
            hidden_bias.addmv_(hidden_t, row_weights)
            return
        module = self.module
        step_w = module.components_velocity.mul_(self.momentum)
        if self.weight_decay:
            step_w.add_(self.components, alpha=-self.learning_rate * self.weight_decay)
        step_w.addmm_(hidden_t, weighted_visible)
        module.visible_bias_velocity.mul_(self.momentum).addmv_(visible_both.t(), row_weights)
        module.hidden_bias_velocity.mul_(self.momentum).addmv_(hidden_t, row_weights)
        self.components.add_(step_w)
        visible_bias.add_(module.visible_bias_velocity)
        hidden_bias.add_(module.hidden_bias_velocity)


class PCDRestrictedBoltzmann(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, LikelihoodDensityMixin, TorchEstimator
):
    """Restricted Boltzmann machine trained by persistent contrastive divergence.

    A drop-in replacement for :class:`sklearn.neural_network.BernoulliRBM`
    (same parameters, same meaning, same ``transform``), run by torch, with a
    normalized log-likelihood, sampling, and the choices of the literature:
    PCD-k or CD-k, momentum, weight decay, Gaussian visible units.

    The model is a joint distribution over visible units ``v`` (the features)
    and binary hidden units ``h`` (the ``n_components`` learned features),
    ``p(v, h) = exp(-E(v, h)) / Z`` with

    - Bernoulli visible units: ``E(v, h) = -b.v - c.h - v.W.h``;
    - Gaussian visible units: ``E(v, h) = |v - b|^2 / 2 - c.h - v.W.h`` on the
      standardized features (unit variance).

    Training follows the log-likelihood gradient, the difference between the
    data's statistics ``<v h>`` and the model's. The model's are estimated
    from chains of block Gibbs sampling: with ``persistent=True`` the chains
    carry over from one minibatch to the next (persistent contrastive
    divergence, PCD, Tieleman 2008, what BernoulliRBM does); with
    ``persistent=False`` they restart at the minibatch each time (CD-k,
    Hinton 2002). ``learning_rate`` multiplies the mean gradient over a
    minibatch, as in BernoulliRBM. The update is written by hand (no
    autograd), in float32, a few fused torch operations per step. As in
    BernoulliRBM the weights start at N(0, 0.01^2) and the biases at 0 (on
    Fashion-MNIST, starting the visible biases at the logits of the data's
    means, as Hinton 2010 advises for binary data, gave held-out AIS
    log-likelihoods 9-24 nats worse, over two runs each). The persistent
    chains (``batch_size`` of them by default, as in BernoulliRBM) are kept
    in ``module_`` and carry over to ``partial_fit``. Every row is used in
    every epoch: the last minibatch may be smaller, and its update is the
    mean over its rows, as in BernoulliRBM (whose negative phase, summed over
    all its ``batch_size`` chains but divided by the smaller count, weighs
    the model's statistics more on that step; here both are means).

    ``score_samples`` is a normalized log-probability,
    ``log p(v) = -F(v) - log Z``, with ``F`` the free energy. log Z is exact
    when the smaller layer has at most 20 units (Gaussian visible units: when
    the hidden layer does), by enumerating its ``2**k`` states; otherwise it
    is estimated by annealed importance sampling (AIS, Salakhutdinov & Murray
    2008) with ``n_ais_chains`` runs over ``n_ais_temperatures`` intermediate
    distributions, starting from the data's marginals. Either is computed the
    first time a likelihood is asked for (``score_samples``, ``score``,
    ``log_partition_``), not in ``fit``: a model used for ``transform`` in a
    pipeline never pays for it. The AIS runs draw from a generator seeded in
    ``fit``, so the estimate is the same whenever it is made; once made it is
    kept with the model (and pickled with it). ``log_partition_`` is the
    value, ``log_partition_std_`` its standard error (0 when exact). AIS
    tends to underestimate log Z, so estimated log-likelihoods lean
    optimistic; the standard error measures the spread across chains, not
    that bias (raise ``n_ais_temperatures`` and compare when it matters).

    ``pseudo_likelihood`` is scikit-learn's pseudo-likelihood (what
    ``BernoulliRBM.score_samples`` returns) without its randomness: the sum
    over all features of ``log p(v_i | v_-i)`` instead of ``n_features`` times
    one randomly chosen term (Besag 1975).

    Input: with Bernoulli visible units, X must lie in [0, 1]: binary rows,
    or grey levels (``load_digits().data / 16``), which training reads as
    probabilities, as BernoulliRBM does. Values outside are a ``ValueError``
    (scale with ``MinMaxScaler``, or use ``visible_units="gaussian"``):
    unscaled data gives nonsense, such as a positive "log-probability". For a
    binary row ``score_samples`` is the log-probability of that row; for a
    row of grey levels it is the same formula, ``-F(v) - log Z``, at a
    non-binary ``v``: a score that compares models and rows on the same
    data, not the probability of any event. ``sample`` draws binary rows.
    scipy sparse X is accepted everywhere and kept sparse (one minibatch,
    or one inference chunk, is made dense at a time). NaN or infinite
    values are a ``ValueError``.

    Read more in the :ref:`User Guide <pcd_rbm>`.

    Parameters
    ----------
    n_components : int, default=256
        Number of hidden units.
    learning_rate : float, default=0.1
        Step size of the updates (times the mean gradient over a minibatch).
        Gaussian visible units usually need 0.001 to 0.01.
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
        Show a progress bar over epochs.
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
            for name in ("learning_rate", "batch_size", "weight_decay", "verbose",
                         "random_state", "device", "n_threads")
        },
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

    def __init__(
        self,
        n_components=256,
        *,
        learning_rate=0.1,
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
            At least 2 rows, in the range ``fit`` accepts.
        y : None
            Ignored.

        Returns
        -------
        self : PCDRestrictedBoltzmann
            The fitted estimator.
        """
        return self._fit_module(X, partial=True)

    def _n_epochs(self):
        return self.n_iter

    def _check_input_values(self, X):
        if self.visible_units != "bernoulli":
            return
        values = X.data if sp.issparse(X) else X
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(
                f"{type(self).__name__} with visible_units='bernoulli' needs X in [0, 1] "
                f"(binary data, or grey levels read as probabilities); X has values from "
                f"{values.min():.4g} to {values.max():.4g}. Scale it, e.g. with "
                "sklearn.preprocessing.MinMaxScaler() or X / X.max(), or use "
                "visible_units='gaussian' for real-valued data."
            )

    def _input_standardization(self, X):
        if self.visible_units == "gaussian":
            return super()._input_standardization(X)
        # Bernoulli units read the values themselves.
        return np.zeros(X.shape[1]), np.ones(X.shape[1])

    def _multiply_adds_per_step(self, n_features):
        # (P)CD-k: k products down and up for the chains, one up for the
        # data, two for the gradient; rows = batch_size (data) and as many chains.
        return (2 * self.n_gibbs_steps + 3) * self.batch_size * n_features * self.n_components

    def _multiply_adds_per_row(self, n_features):
        return n_features * self.n_components

    def _inference_row_bytes(self):
        return 8 * 4 * (self.n_features_in_ + self.n_components)

    def _build(self, Z, generator):
        if self.visible_units == "bernoulli":
            rates = Z.mean(0).clamp(_BASE_RATE_EPS, 1 - _BASE_RATE_EPS)
            base = torch.log(rates) - torch.log1p(-rates)
        else:
            base = Z.mean(0)
        n_chains = self.n_persistent_chains or self.batch_size
        return _RBMModule(Z.shape[1], self.n_components, n_chains, base, generator)

    def _make_update_rule(self, module, n_steps):
        return _ContrastiveDivergence(self, module)

    def _training_step(self, module, batch, generator, rule):
        rule.step(batch, generator)
        return None  # the reported loss is _epoch_loss's

    @torch.no_grad()
    def _epoch_loss(self, module, Z_train):
        """Mean squared reconstruction error of the first rows."""
        visible = Z_train[:_LOSS_ROWS]
        activation = torch.addmm(module.visible_bias, module.hidden_probabilities(visible),
                                 module.weights.t())
        if self.visible_units == "bernoulli":
            activation = torch.sigmoid(activation)
        return float(((visible - activation) ** 2).mean())

    @torch.no_grad()
    def _divergence_reason(self, module, Z_train):
        """Too large a learning rate blows the weights up without a NaN (the
        updates move them by up to ``learning_rate``): then every hidden unit
        is saturated, its input beyond any float's resolution of a sigmoid,
        and learning has stopped. Sane fits keep those inputs under ~50."""
        largest = torch.addmm(module.hidden_bias, Z_train[:_LOSS_ROWS], module.weights).abs().max()
        if largest > _SATURATED_INPUT:
            return (f"the inputs of the hidden units reach {float(largest):.3g} (above "
                    f"{_SATURATED_INPUT:g}, every unit is saturated and learning has stopped)")
        return None

    # -- log Z ---------------------------------------------------------------------
    @property
    def _log_partition_is_exact(self):
        smaller = (self.n_components if self.visible_units == "gaussian"
                   else min(self.n_features_in_, self.n_components))
        return smaller <= MAX_EXACT_UNITS

    @property
    def log_partition_method_(self):
        """How ``log_partition_`` is obtained: ``"exact"`` or ``"ais"``."""
        self._check_fitted()
        return "exact" if self._log_partition_is_exact else "ais"

    def _estimate_log_partition(self, module, generator):
        args = (module.weights, module.visible_bias, module.hidden_bias, self.visible_units)
        if self._log_partition_is_exact:
            return rbm_exact_log_partition(*args), 0.0
        return rbm_ais_log_partition(
            *args, base_visible_bias=module.base_visible_bias, n_chains=self.n_ais_chains,
            n_temperatures=self.n_ais_temperatures, generator=generator,
        )

    def _log_partition_multiply_adds(self):
        if self._log_partition_is_exact:
            return 2**MAX_EXACT_UNITS
        return self.n_ais_chains * self.n_ais_temperatures * self._multiply_adds_per_row(
            self.n_features_in_)

    def _unnormalized_log_density(self, module, Z):
        return -module.free_energy(Z, self.visible_units)

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
        return self.n_components

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
        self._check_fitted()
        X = self._validated(X)
        module = self._inference_module()
        return self._map_rows(module.hidden_probabilities, X).astype(X.dtype, copy=False)

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
        self._check_fitted()
        X = self._validated(X)
        module = self._inference_module()
        return self._map_rows(lambda Z: module.free_energy(Z, self.visible_units), X)

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
        if self.visible_units != "bernoulli":
            raise ValueError("pseudo_likelihood is defined for Bernoulli visible units only.")
        X = self._validated(X)
        module = self._inference_module()
        return self._map_rows(
            lambda Z: rbm_pseudo_likelihood(Z, module.weights, module.visible_bias,
                                            module.hidden_bias),
            X,
        )

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
        v = self._validated(v)
        module = self._inference_module()
        generator = make_generator(random_state, self._inference_device())
        Z = self._map_rows(lambda Z: self._gibbs_chains(module, Z, 1, generator), v)
        return Z.reshape(v.shape[0], -1) * self.scale_ + self.mean_

    def sample(self, n_samples=1, n_steps=1000, random_state=None):
        """Draw rows from the model by block Gibbs sampling.

        Each row is the end of its own chain, started from the data's
        marginals (independent units) and run for ``n_steps`` steps.

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows.
        n_steps : int, default=1000
            Gibbs steps per chain; more mixes better.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`), float64
            Binary rows for Bernoulli visible units; in the units of the
            training data for Gaussian ones.
        """
        self._check_fitted()
        self._check_n_steps(n_steps)
        module = self._inference_module()

        def draw(n, generator):
            start = self._draw_marginals(module, n, generator)
            return self._gibbs_chains(module, start, n_steps, generator)

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
            entries may hold anything, NaN included.
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
        self._check_n_steps(n_steps)
        self._check_fitted()
        module = self._inference_module()

        def complete(Z, free, generator):
            start = torch.where(free, self._draw_marginals(module, len(Z), generator), Z)
            return block_gibbs(start, module.weights, module.visible_bias, module.hidden_bias,
                               n_steps, generator, visible_units=self.visible_units, free=free)

        return self._complete_rows(X, mask, complete, random_state)

    def _draw_marginals(self, module, n_rows, generator):
        """Rows of independent units with the data's marginals."""
        base = module.base_visible_bias
        if self.visible_units == "bernoulli":
            return bernoulli(torch.sigmoid(base).expand(n_rows, -1), generator)
        return base + torch.randn(n_rows, len(base), generator=generator, dtype=base.dtype,
                                  device=base.device)

    def _gibbs_chains(self, module, start, n_steps, generator):
        return block_gibbs(start, module.weights, module.visible_bias, module.hidden_bias,
                           n_steps, generator, visible_units=self.visible_units)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = self.visible_units == "bernoulli"
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def rbm_pseudo_likelihood(visible, weights, visible_bias, hidden_bias):
    """``sum_i log sigmoid(F(v^(i)) - F(v))`` per row of a Bernoulli RBM,
    ``v^(i)`` being ``v`` with feature i flipped to ``1 - v_i`` (Besag 1975).

    Flipping feature i moves the hidden pre-activations ``x = c + v W`` by
    ``d_i W_i`` (``d_i = 1 - 2 v_i``), so every flip is evaluated without a
    new product:

        F(v^(i)) - F(v) = -b_i d_i - sum_j log1p(sigmoid(x_j) expm1(d_i W_ij))

    (``softplus(x + t) - softplus(x) = log1p(sigmoid(x) expm1(t))``, accurate
    to a relative 1e-7 in float32 too). Computed in the dtype of the inputs;
    rows go in blocks that keep the (rows, features, hidden) intermediate
    near 4 million numbers.

    Returns
    -------
    torch.Tensor of shape (n_rows,)
    """
    n_visible, n_hidden = weights.shape
    rows_per_block = max(1, 4_000_000 // (n_visible * n_hidden))
    out = []
    for start in range(0, len(visible), rows_per_block):
        v = visible[start : start + rows_per_block]
        hidden_probabilities = torch.sigmoid(torch.addmm(hidden_bias, v, weights))
        flip = 1 - 2 * v
        change = torch.expm1(flip[:, :, None] * weights).mul_(hidden_probabilities[:, None, :])
        delta = (-visible_bias * flip).sub_(change.log1p_().sum(2))
        out.append(torch.nn.functional.logsigmoid(delta).sum(1))
    if not out:
        return visible.new_zeros(0)
    return torch.cat(out)
