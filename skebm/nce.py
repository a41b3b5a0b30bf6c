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

from ._base import INFERENCE_CHUNK_ROWS, Step, TorchEstimator
from ._checks import check_n_steps
from ._density import LikelihoodDensityMixin
from ._missing import (CONDITIONAL_CANDIDATES, INCOMPLETE_ROWS_AT_ONCE, MISSING_DRAWS,
                       TRAINING_CANDIDATES, ConditionalMeanMixin, KeptCompletions,
                       common_generator, missing_draws, observed_log_density)
from ._mixture import CommonDraws
from ._nce_model import Cells, NCEModel, Snapshot, cell_offsets, dequantized, inner_cell_width
from ._rows import RowsWith
from ._runtime import make_generator
from .base_density import TableLayout, fit_base
from .nets import (ACTIVATIONS, LOW_DIMENSION, MLPEnergy, fourier_feature_count, layer_shapes,
                   layer_sizes, network_work)
from .partition import importance_log_partition, refuse_log_partition_beyond_memory

__all__ = ["NCEDensity"]

#: Rows ``sample`` draws at once.
_SAMPLE_CHUNK = 1024
#: Draws of the base behind each epoch's log Z in early stopping: the same
#: draws every epoch, so that epochs are compared on a common footing, where
#: a few thousand choose the same epochs as 8192 (see the user guide) at a
#: quarter of the cost, which is most of an epoch on small tables.
_VALIDATION_DRAWS = 2048
#: log Z's importance draws come LOG_Z_CHUNK at a time, and stop before
#: ``n_importance_samples`` once at least LOG_Z_MIN_DRAWS give a standard error
#: under LOG_Z_TARGET_ERROR nats: a small table's log Z is that precise within
#: a few chunks, and its first score (every fold of a grid search scores once)
#: then costs a fraction of the fit, not more than it (see the user guide).
LOG_Z_CHUNK, LOG_Z_MIN_DRAWS, LOG_Z_TARGET_ERROR = 8192, 16384, 0.005
#: Standard error (nats per row, mean over the rows scored) of the masses of
#: cells (integers, point masses) above which ``score_samples`` warns, as for log Z.
_CELL_ERROR_WARNING = 0.1
# Defaults that switch with the dimension (chosen by benchmark, see the user guide): up to
# LOW_DIMENSION features, Fourier features, a base widened by 1.2 and no marginal
# map; above, no Fourier features, the base as chosen, marginals chosen by CV.
_LOW_DIMENSION_BASE_SCALE = 1.2


def _row_work(shapes, n_features, n_components):
    """Multiply-adds of one row: the network of these layer shapes, its
    Fourier projection and the base mixture's log-density."""
    n_fourier = (shapes[0][0] - n_features) // 2
    return network_work(shapes) + n_features * n_fourier + n_components * n_features**2


class NCEDensity(ConditionalMeanMixin, LikelihoodDensityMixin, TorchEstimator):
    """Normalized density estimation with a neural energy, trained by NCE.

    The model is ``p(x) = b(x) exp(-E(x) - c)``: a base density ``b`` (a
    Gaussian mixture, on tables optionally a mixture copula, chosen by
    cross-validated likelihood) reweighted by a multilayer perceptron energy
    ``E`` that starts at 0, with ``c`` (log Z) a learned scalar; far from the
    data the density decays like ``b``. Training is noise-contrastive
    estimation (Gutmann & Hyvarinen 2010): logistic regression of the data
    against ``noise_ratio`` times as many rows of a noise (the base, or with
    ``noise="self"`` snapshots of the model), whose optimum is the data
    density, ``c`` included, so fitting needs no MCMC.

    ``score_samples`` is a normalized log-density: log Z is re-estimated by
    importance sampling from the base on first use (``log_partition_``, with
    its standard error ``log_partition_std_``), not taken from NCE's ``c``.

    Read more in the :ref:`User Guide <nce_density>`.

    Tables come as they are: a categorical column (``categorical_features``)
    gets a probability for each category, an integer column
    (``integer_features``) a probability for each integer, a missing cell
    (NaN) is integrated out, in ``fit`` as in ``score_samples``, and
    ``sample_conditional`` fills missing cells from the model's conditional.
    A continuous column's least or greatest value, where it fills 10% of the
    observed cells or more and twice as many as any value between (a floor:
    an amount often exactly 0), is a point mass, modelled as censored there
    [6]_: a row at the point scores the probability of the point, and draws
    put the mass beyond it on the point. A point mass between a column's
    ends (one value in 30% of its cells or more, twice as many as any
    other) is the same idea inside the column: the model's line gets a cell
    inserted above the point, whose mass is the point's probability, and
    the values above it are moved up by the cell. A column of a few values
    (at most 10, a code) gets spikes of density, and ``fit`` warns of it:
    the user guide's "Prepare the columns" says what to do.

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
        number of components and covariance ridge are chosen by held-out
        likelihood (3-fold cross-validated on small tables, one held-out third
        on larger ones), or a single Gaussian (ridge chosen the same way).
    base_components : int, default=32
        Most mixture components the base may have. The choice and the EM fit
        look at a random subset of large data, so their cost is bounded (the
        limits are in the user guide).
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
        sampling. 1 keeps the noise (the base) close to the data, which keeps
        the classification informative; above 1 makes NCE look further into
        the tails (see the user guide). Below 1 is refused: a proposal
        narrower than the base leaves the model's tails without draws, and
        the importance weights of log Z without a finite variance (log Z
        then errs low by several of its reported standard errors).
    noise_update_interval : int, default=100
        With ``noise="self"``: minibatch steps between snapshots of the model.
    noise_ratio : int, default=8
        Noise rows per data row (``nu``). More makes NCE statistically more
        efficient and each epoch slower.
    learning_rate : float, default=3e-3
        Adam's initial step size; it then follows a cosine schedule to 0 over
        ``max_iter`` epochs (the pair chosen by benchmark: see the user
        guide).
    batch_size : int, default=256
        Data rows per minibatch (each comes with ``noise_ratio`` times as many
        noise rows).
    max_iter : int, default=50
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
    n_iter_no_change : int, default=10
        Patience of early stopping, in epochs. With the 50-epoch schedule, a
        model that has not beaten its best for ten epochs rarely does later,
        and waiting longer costs time for nothing (measured in the user
        guide).
    tol : float, default=1e-4
        Smallest improvement of the validation log-likelihood (nats per row)
        that counts.
    warm_start : bool, default=False
        Keep training the fitted model (same standardization, base and noise)
        at the next ``fit`` instead of starting anew.
    n_importance_samples : int, default=100_000
        Most proposal draws for the importance-sampling estimate of log Z
        (made on first use). Drawing stops earlier, after at least 16,384
        draws, once log Z's standard error is below 0.005 nats.
    verbose : int, default=0
        0 shows a progress bar only once the fit passes 10 seconds, in
        the main thread of the main process with a terminal or notebook
        (never in ``GridSearchCV``'s parallel workers), and erases it at the
        end; a positive value shows it from the first epoch and keeps it; a
        negative one shows nothing.
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
    categorical_features : "auto", "from_dtype", array-like of int, bool or str, or None, \
            default="auto"
        Columns modelled as categories, each with a probability per category
        seen in fit (in the base, a categorical distribution per mixture
        component, and per category a shift of the component's mean of the
        continuous columns; in the network, one-hot inputs): "from_dtype", the
        DataFrame columns of category, object, string or bool dtype (and the
        non-numeric columns of an object array, True and False among them);
        "auto", those and numeric columns of 2 to 5 distinct values, each in
        at least 5% of the rows and at least 10 of them (a flag has no
        density; sparse counts, and a few values of a small table, are
        integer columns instead, as held-out rows would bring values fit
        never saw); or indices, a boolean mask, column names; None for none.
        A row's ``score_samples`` is then the log of its categories'
        probability times its continuous columns' density. A category not
        seen in fit is an error.
    integer_features : "auto", array-like of int, bool or str, or None, default="auto"
        Numeric columns of integers (counts, ages in years), each given a
        probability per integer rather than a density: the model is a
        density of the rows with each integer spread uniformly over its unit
        cell (uniform dequantization, fresh at every step of training), and
        an integer's probability is that density's mass over its cell,
        estimated by averaging it over 128 stratified points of the cell
        (the log of an unbiased estimate; a warning when its error passes
        0.1 nats, as over many integer columns: see the user guide);
        ``sample`` and ``sample_conditional`` round draws to the integer
        whose cell they fell in. "auto": the columns not categorical whose
        values in fit are all integers; or indices, a boolean mask, column
        names; None for none. A value that is not an integer has
        probability 0 and is an error, as an unseen category is.

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
        Standardization of the inputs (0 and 1 for categorical columns).
    is_categorical_ : ndarray of bool, shape (`n_features_in_`,)
        Which columns are modelled as categories.
    categories_ : list of ndarray
        The categories of each categorical column, in column order.
    is_integer_ : ndarray of bool, shape (`n_features_in_`,)
        Which columns are modelled as integers.
    point_masses_ : ndarray of shape (`n_features_in_`, 2)
        Each column's point mass at its least value (first entry) and at
        its greatest (second), modelled as censored there; -inf and inf
        where it has none.
    inner_point_masses_ : ndarray of shape (`n_features_in_`,)
        Each column's point mass between its least and greatest values, NaN
        where it has none.
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
    .. [5] Theis, L., van den Oord, A. and Bethge, M. "A note on the
       evaluation of generative models." ICLR 2016 (uniform dequantization).
    .. [6] Tobin, J. "Estimation of relationships for limited dependent
       variables." Econometrica 26(1), 1958 (censored values).

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
        "noise_scale": [Interval(numbers.Real, 1, None, closed="left")],
        "noise_update_interval": [Interval(numbers.Integral, 1, None, closed="left")],
        "noise_ratio": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_importance_samples": [Interval(numbers.Integral, 2, None, closed="left")],
        "categorical_features": ["array-like", StrOptions({"auto", "from_dtype"}), None],
        "integer_features": ["array-like", StrOptions({"auto"}), None],
    }

    _loss_growth_is_divergence = True
    _supports_early_stopping = True
    _max_epoch_rows = 65_536
    _accepts_tables = True
    _model_parameters = ("hidden_layer_sizes", "activation", "fourier_features", "fourier_scale",
                         "base", "base_components", "marginals", "base_scale", "noise",
                         "noise_scale", "categorical_features", "integer_features")

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
        learning_rate=3e-3,
        batch_size=256,
        max_iter=50,
        weight_decay=0.0,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        warm_start=False,
        n_importance_samples=100_000,
        verbose=0,
        random_state=None,
        device="auto",
        n_threads=None,
        categorical_features="auto",
        integer_features="auto",
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
        self.categorical_features = categorical_features
        self.integer_features = integer_features

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the density to X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, finite or NaN (a missing cell): more rows than
            features once ``validation_fraction`` is held out, which the
            base's full covariance needs.
        y : None
            Ignored.

        Returns
        -------
        self : NCEDensity
            The fitted estimator.
        """
        return self._fit_module(X)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One epoch over X, continuing the fitted model and its optimizer.

        For data that comes in chunks: the first call builds the model as
        ``fit`` does, its base density chosen and fitted on that chunk; every
        call trains on all its rows (no early stopping) at the constant
        ``learning_rate``, Adam's state carried from call to call. log Z is
        estimated anew when a likelihood is next asked for.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (more rows than features on the first call, for the
            base's full covariance; then any), finite or NaN (a missing cell).
        y : None
            Ignored.

        Returns
        -------
        self : NCEDensity
            The fitted estimator.
        """
        return self._fit_module(X, partial=True)

    # -- the pieces the shared training loop calls --------------------------
    def _build(self, Z, generator, scale):
        layout = self._layout()
        energy = MLPEnergy(
            Z.shape[1], layer_sizes(self.hidden_layer_sizes), self.activation, generator,
            fourier_features=fourier_feature_count(self.fourier_features, Z.shape[1]),
            fourier_scale=self.fourier_scale, zero_output=True,
            categories=None if layout is None else tuple(layout),
        )
        cells = self._cells(Z, scale)
        marginals, base, proposal, choice = self._fit_base(
            dequantized(Z, cells, generator), generator)
        snapshot = Snapshot(energy, base, generator) if self.noise == "self" else None
        # E starts at exactly 0, so the model starts as the base: normalized, c = 0.
        return NCEModel(energy, marginals, base, proposal, choice, snapshot, cells)

    def _cells(self, Z, scale):
        """The :class:`Cells` of the table's integers and point masses on the
        training rows ``Z``, or None. A point mass at a column's end is its
        least or greatest value, one between the ends its commonest value,
        on ``Z`` as in the data."""
        table = self._table
        integer, censored = table.is_integer, table.censored
        inner = getattr(table, "inner", None)  # a table pickled before inner points has none
        if not integer.any() and censored is None and inner is None:
            return None
        as_tensor = lambda values: torch.as_tensor(values, dtype=Z.dtype, device=Z.device)
        points = inner_points = inner_widths = None
        if censored is not None:  # -inf and inf where a column has no point
            missing = torch.isnan(Z)
            least = torch.where(missing, math.inf, Z).amin(0)
            greatest = torch.where(missing, -math.inf, Z).amax(0)
            points = as_tensor(censored)
            points = torch.where(points.isfinite(), torch.stack([least, greatest], 1), points)
        if inner is not None:  # NaN (and width 0) where a column has no point
            inner_points = as_tensor(np.full(Z.shape[1], np.nan))
            inner_widths = as_tensor(np.zeros(Z.shape[1]))
            for j in np.flatnonzero(np.isfinite(inner)):
                values, counts = torch.unique(Z[:, j][~torch.isnan(Z[:, j])], return_counts=True)
                inner_points[j] = values[counts.argmax()]
                inner_widths[j] = inner_cell_width(Z[:, j], inner_points[j])
        return Cells(as_tensor(np.where(integer, 1 / scale, 0.0)), points, inner_points,
                     inner_widths)

    def _fit_base(self, Z, generator, choice=None):
        """(marginal map or None, base, proposal, choice) fitted to ``Z``;
        ``choice`` (marginals or not, components, ridge) is made by
        cross-validation unless given."""
        low_dimensional = Z.shape[1] <= LOW_DIMENSION
        with self._progress(None, "base density") as progress:
            marginals, base, choice = fit_base(
                self.base, Z, max_components=self.base_components,
                marginals="none" if self.marginals == "auto" and low_dimensional
                else self.marginals,
                generator=generator, choice=choice, layout=self._layout(), progress=progress)
        base_scale = self.base_scale
        if base_scale == "auto":
            base_scale = _LOW_DIMENSION_BASE_SCALE if low_dimensional else 1.0
        base = base.widened(base_scale)
        proposal = base if self.noise_scale == 1 else base.widened(self.noise_scale)
        return marginals, base, proposal, choice

    def _layout(self):
        """The table's :class:`TableLayout` when it has categorical columns, else None."""
        table = self._table
        return TableLayout(table.is_categorical, tuple(table.n_categories)) if (
            table.needs_encoding) else None

    @property
    def is_categorical_(self):
        self._check_fitted()
        return self._table.is_categorical.copy()

    @property
    def categories_(self):
        self._check_fitted()
        return [values.copy() for values in self._table.categories]

    @property
    def is_integer_(self):
        self._check_fitted()
        return self._table.is_integer.copy()

    @property
    def point_masses_(self):
        self._check_fitted()
        # getattr: a table pickled before point masses were modelled has none.
        censored = getattr(self._table, "censored", None)
        return (np.tile([-np.inf, np.inf], (self.n_features_in_, 1)) if censored is None
                else censored.copy())

    @property
    def inner_point_masses_(self):
        self._check_fitted()
        # getattr: a table pickled before inner points were modelled has none.
        inner = getattr(self._table, "inner", None)
        return np.full(self.n_features_in_, np.nan) if inner is None else inner.copy()

    def _multiply_adds_per_row(self, n_features):
        # Inference: the fitted network and base, whatever set_params did since.
        return _row_work(self.module_.energy.shapes, n_features, self.module_.base.n_components)

    def _multiply_adds_per_step(self, n_features, target_attributes):
        # Forward and backward (about three forwards) over data and noise rows.
        n_fourier = fourier_feature_count(self.fourier_features, n_features)
        shapes = layer_shapes(n_features, layer_sizes(self.hidden_layer_sizes), n_fourier=n_fourier)
        rows = self.batch_size * (1 + self.noise_ratio)
        return 3 * rows * _row_work(shapes, n_features, self.base_components)

    def _inference_row_bytes(self):
        shapes = self.module_.energy.shapes
        return 8 * 4 * (shapes[0][0] + sum(n_out for _, n_out, _ in shapes)
                        + self.module_.base.n_components)

    def _training_set(self, module, Z_train):
        """The rows with their image under the marginal map, mapped once
        rather than at every step: rows without cells map the same every
        epoch (integers and point masses are dequantized afresh at each step,
        and mapped after). Not for more rows than an epoch visits, most of which
        each epoch leaves alone; nor without a map. Then the image is None,
        and each step maps its rows."""
        if (module.marginals is None or module.cells is not None
                or len(Z_train) > self._max_epoch_rows):
            return RowsWith(Z_train)
        mapped = [module.latent(rows)[0] for rows in Z_train.split(INFERENCE_CHUNK_ROWS)]
        return RowsWith(Z_train, torch.cat(mapped))

    def _training_loss(self, module, batch, generator):
        """NCE loss per data row: -log h(data) - nu * E_q[log(1 - h(noise))]."""
        if module.snapshot is not None:
            module.snapshot.step(module, self.noise_update_interval, generator)
        batch, data_rows = batch
        log_ratio = math.log(self.noise_ratio)
        noise_rows = module.sample_noise(len(batch) * self.noise_ratio, generator)
        if data_rows is None:  # not mapped by _training_set
            batch = dequantized(batch, module.cells, generator)
            data_rows, _ = module.latent(batch)
        incomplete = torch.isnan(batch).any(1)
        if incomplete.any():  # missing cells: drawn from the model's conditional (on u)
            with torch.no_grad():
                data_rows[incomplete] = module.impute(batch[incomplete], TRAINING_CANDIDATES,
                                                      generator)
        # One pass of the network over both kinds of row: larger products,
        # a faster step than two passes (benchmarks/RESULTS.md).
        logits = module.nce_logit(torch.cat([data_rows, noise_rows]), log_ratio)
        data_term = nn.functional.logsigmoid(logits[:len(data_rows)]).sum()
        noise_term = nn.functional.logsigmoid(-logits[len(data_rows):]).sum()
        return Step(-(data_term + noise_term) / len(batch))

    def _validation_set(self, module, Z_val):
        """``(proposal draws behind log Z, the rows with one point of each
        cell, the draws of their missing cells, those cells' completions
        or None)``, drawn once so that epochs are compared on a common
        footing (:class:`~skebm._missing.KeptCompletions`)."""
        generator = make_generator(0, Z_val.device)
        draws = module.proposal.sample(_VALIDATION_DRAWS, generator)
        Z_val = dequantized(Z_val, module.cells, generator)
        missing = missing_draws(Z_val, make_generator(1, Z_val.device))
        return draws, Z_val, missing, KeptCompletions.made(module, Z_val, missing)

    def _validation_score(self, module, validation):
        """Mean log-likelihood of the validation rows (standardized space), a
        missing cell's completions drawn alike at every epoch."""
        draws, Z_val, missing, kept = validation
        log_z, _ = importance_log_partition(module.log_importance_weights(draws))
        return float(observed_log_density(module, Z_val, missing, kept).mean()) - log_z

    def _epoch_diagnostics(self, module):
        if module.snapshot is None:
            return {}
        return {"noise_log_partition": module.snapshot.log_partition.item(),
                "noise_ess": module.snapshot.effective_sample_size.item()}

    def _after_training(self, module, Z, generator):
        if module.energy.is_zero() and self.early_stopping:
            # Early stopping kept the base alone: it may as well see every row.
            module.marginals, module.base, module.proposal, _ = self._fit_base(
                dequantized(Z, module.cells, generator), generator, choice=module.base_choice)
        return {"nce_log_partition_": module.log_partition.item(),
                "base_n_components_": module.base.n_components,
                "base_marginals_": "none" if module.marginals is None else "kde"}

    _log_partition_parameters = ("n_importance_samples",)

    def _estimate_log_partition(self, module, generator, *, n_importance_samples):
        """log Z = log E_q[b exp(-E) / q] by importance sampling from the
        proposal q, in chunks, until :data:`LOG_Z_TARGET_ERROR` or
        ``n_importance_samples``."""
        refuse_log_partition_beyond_memory(8 * n_importance_samples, "by importance sampling",
                                           "n_importance_samples", n_importance_samples)
        log_weights = []
        for rows in gen_batches(n_importance_samples, LOG_Z_CHUNK):
            draws = module.proposal.sample(rows.stop - rows.start, generator)
            log_weights.append(module.log_importance_weights(draws))
            log_z, log_z_std = importance_log_partition(torch.cat(log_weights))
            if rows.stop >= LOG_Z_MIN_DRAWS and log_z_std < LOG_Z_TARGET_ERROR:
                break
        if log_z_std > 0.1:
            warnings.warn(
                f"NCEDensity: log Z is uncertain (standard error {log_z_std:.2g} nats from "
                f"{n_importance_samples} proposal draws), so are the log-likelihoods. "
                "Raise n_importance_samples or noise_scale.",
                RuntimeWarning,
            )
        return log_z, log_z_std

    def _log_partition_multiply_adds(self, *, n_importance_samples):
        return n_importance_samples * self._multiply_adds_per_row(self.n_features_in_)

    def _unnormalized_log_density(self, module, Z):
        return self._log_density_of_rows(
            module, Z, common_generator(self._log_partition_memo["seed"] + 1))

    def _log_density_of_rows(self, module, Z, generator):
        """The unnormalized log-density of rows, of a row with missing cells
        that of its observed ones (importance sampling from the base's
        conditional, :data:`~skebm._missing.MISSING_DRAWS` draws: exact while
        the energy is 0, and its error otherwise in the user guide); with
        integer columns or point masses, its mass over their cells: the mean of
        ``MISSING_DRAWS`` weighted densities at points of the cells
        (:meth:`Cells.points`, two sets of :func:`cell_offsets`; missing
        cells drawn once for each point from the base's conditional), an
        unbiased estimate of the mass; a warning when
        its log is uncertain. Points and draws are the same for every row
        (:class:`~skebm._mixture.CommonDraws`), so a row's value does not
        depend on the rows beside it."""
        if module.cells is None:
            return observed_log_density(module, Z, missing_draws(Z, generator))
        half = MISSING_DRAWS // 2
        # Two independent stratified sets of points, each with a draw of the
        # missing cells for each point: their disagreement measures the
        # error, which the spread within one would overstate.
        point_sets = [(cell_offsets(half, Z.shape[1], generator, Z.dtype, Z.device),
                       CommonDraws.drawn(half, Z.shape[1], generator, Z.device))
                      for _ in range(2)]
        value = torch.empty(len(Z), dtype=Z.dtype, device=Z.device)
        in_cells = module.cells.holds(Z)
        if not in_cells.all():  # rows off their point masses: densities, no cells
            value[~in_cells] = observed_log_density(module, module.cells.lifted(Z[~in_cells]),
                                                    missing_draws(Z, generator))
        inside = torch.nonzero(in_cells).squeeze(1)
        errors = torch.zeros(len(inside), dtype=Z.dtype, device=Z.device)
        for rows in gen_batches(len(inside), INCOMPLETE_ROWS_AT_ONCE) if len(inside) else ():
            log_means = []
            for offsets, draws in point_sets:
                copies, log_weights = module.cells.points(Z[inside[rows]], offsets)
                log_density = observed_log_density(
                    module, copies, draws.by_copy(rows.stop - rows.start)) + log_weights
                log_means.append(torch.logsumexp(log_density.view(-1, half), 1)
                                 - math.log(half))
            value[inside[rows]] = torch.logaddexp(*log_means) - math.log(2)
            errors[rows] = (log_means[0] - log_means[1]).abs() / 2
        error = float(errors.mean()) if len(inside) else 0.0
        if error > _CELL_ERROR_WARNING:
            warnings.warn(
                f"NCEDensity: the probabilities of the integer cells or point masses are "
                f"uncertain (a standard error of about {error:.2g} nats per row from "
                f"{MISSING_DRAWS} points of each row's cells; the log errs low): the density "
                "varies within the cells. Compare such scores only with scores made the same "
                "way, or dequantize the columns yourself and pass integer_features=None.",
                RuntimeWarning)
        # A point mass's entry is a probability, where score_samples takes each
        # entry for a density, less the log-scale of the standardization: it comes back.
        log_scale = torch.as_tensor(np.log(self.scale_), dtype=Z.dtype, device=Z.device)
        return value + module.cells.at_points(Z).to(Z.dtype) @ log_scale

    # -- inference -----------------------------------------------------------
    def sample(self, n_samples=1, random_state=None, *, n_steps=20):
        """Draw rows from the fitted density.

        Sampling-importance-resampling from the proposal (for each row, one of
        32 proposal draws, picked with probability proportional to ``p / q``)
        gives starting points close to the model; ``n_steps``
        Metropolis-adjusted Langevin steps, which leave the model's
        distribution exactly invariant, then correct what resampling from a
        few candidates leaves of the proposal and separate identical rows.

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.
        n_steps : int, default=20
            Langevin steps per row after resampling; 0 keeps the resampled rows.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`) or DataFrame
            The draw, in the units of the training data: float64; a
            DataFrame when categories are strings, its columns in the fitted
            DataFrame's dtypes where the values allow.
        """
        self._check_fitted()
        check_n_steps(n_steps)
        module = self._inference_module()
        return self._sample_rows(lambda n, generator: module.sample(n, n_steps, generator),
                                 n_samples, random_state, chunk_rows=_SAMPLE_CHUNK)

    def sample_conditional(self, X, mask=None, *, n_steps=20, random_state=None):
        """Fill in cells of X by drawing them from the model given the others.

        For each row, the free cells (``mask`` True, or X's missing cells
        when ``mask`` is None) are drawn by sampling-importance-resampling:
        64 completions from the base's conditional distribution (exact for a
        Gaussian mixture), one kept with probability proportional to
        ``exp(-E)``; then ``n_steps`` steps that leave the model's
        conditional exactly invariant (a Gibbs sweep over free categories,
        Metropolis-adjusted Langevin steps over free continuous cells). The
        known cells come back exactly as given.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, `n_features_in_`)
            Known values; the free cells may hold anything, NaN included
            (but an integer beyond 2**53, refused in any input).
        mask : array-like of bool, shape (n_samples, `n_features_in_`), or None
            True where a value is to be drawn; None means X's missing cells.
        n_steps : int, default=20
            Steps of the model's conditional after resampling; 0 keeps the
            resampled cells.
        random_state : int, RandomState instance or None, default=None
            Seeds this draw.

        Returns
        -------
        X_completed : ndarray of shape (n_samples, `n_features_in_`) or DataFrame
            float64; a DataFrame when categories are strings, its columns
            in the fitted DataFrame's dtypes where the values allow.
        """
        check_n_steps(n_steps)
        self._check_fitted()
        module = self._inference_module()
        complete = lambda Z, free, generator: module.complete(
            Z, free, CONDITIONAL_CANDIDATES, n_steps, generator)
        return self._complete_rows(X, mask, complete, random_state,
                                   chunk_rows=INCOMPLETE_ROWS_AT_ONCE)

