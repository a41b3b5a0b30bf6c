"""Base densities: what NCEDensity and ShortRunEBM reweight by a neural energy.

A density here is a ``torch.nn.Module`` with two methods, both on torch
tensors of the (standardized) data space:

- ``sample(n_samples, generator)``: an ``(n_samples, n_features)`` draw;
- ``log_prob(Z)``: the normalized log-density of each row.

Being modules, they move between devices and pickle with the estimator that
owns them. :func:`fit_base` builds the base density of a model from training
data, choosing its size by cross-validation.
"""

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy import special
from torch import special as special_torch
from sklearn.model_selection import KFold
from torch import nn

from ._em import fit_gaussian_mixture, mixture_log_density
from ._mixture import (ComponentConditionals, category_counts, category_shifts,
                       draw_categories, expanded_sizes, fit_mixture, log_density)
from ._runtime import cpu_threads, draw_seed, refuse_beyond_memory, thread_limit

__all__ = ["GaussianMixtureDensity", "MarginalGaussianization", "TableLayout", "fit_base",
           "select_base"]

#: Candidate numbers of components and covariance ridges (in units of the
#: standardized data's variance) that :func:`select_base` compares, and how
#: many sizes in a row may fail to improve the held-out score before the
#: search stops. Small tables (at most SPLIT_ROWS rows), whose fits are cheap
#: and whose cross-validated scores are bumpy, try every size up to 16 with
#: more patience; larger ones grow by about a third at a time.
SMALL_TABLE_GRID, SMALL_TABLE_PATIENCE = (*range(1, 17), 20, 24, 28, 32), 3
COMPONENT_GRID, PATIENCE = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32), 2
RIDGE_GRID = (1e-6, 1e-3, 1e-2, 1e-1)
#: A ridge tried after the grid where the best of the grid is one of the
#: two beside it: near-collinear columns (diabetes' serum measurements) leave
#: directions of variance 1e-5-1e-3 within a component, which 1e-3 blurs. Not
#: a step of the grid, whose search stops at the first ridge that scores
#: worse: on wine with a tenth of its cells missing, 1e-4 scores below 1e-6
#: and 1e-1 best of all.
INNER_RIDGE, INNER_RIDGE_BESIDE = 1e-4, (1e-6, 1e-3)
#: The options with and without the marginal map grow their mixtures in step;
#: one whose best held-out score trails the other's by more than OPTION_MARGIN
#: + OPTION_MARGIN_PER_FEATURE * n_features nats per row stops growing. Where
#: the options' scores cross they stay close; an option far behind does not
#: catch up, and its larger mixtures are the search's dearest fits (the
#: scores by size on the benchmark tables: benchmarks/RESULTS.md).
OPTION_MARGIN, OPTION_MARGIN_PER_FEATURE = 1.0, 0.1
#: EM iterations of a candidate during the search (the chosen base is
#: refitted to convergence); rows from which one held-out split replaces
#: 3-fold cross-validation.
SEARCH_EM_ITERATIONS = 100
SPLIT_ROWS = 600
#: EM's tolerance for those candidates (mean log-likelihood per row): the
#: final fit's 0.001, or this much per feature where that is more. A row's
#: log-likelihood is a sum over its features, and a ranking of candidates
#: needs no more precision than its spread; on 64 features EM's iterations
#: to 0.001 were most of a wide table's search (the time saved, and the
#: choices compared: benchmarks/RESULTS.md).
SEARCH_TOL_PER_FEATURE = 5e-4
#: EM's tolerance (mean log-likelihood per row) and most iterations for the
#: candidates of a table with missing cells or categories, whose E-step
#: factors a covariance per row: a ranking of candidates needs coarser
#: scores than the final fit. A size's first fit starts from k-means, and
#: with cells missing it climbs slowly for 20 iterations and more, its
#: components shrinking onto few rows at the smallest ridge; the later
#: ridges start from it (their effect on the choice and the time:
#: benchmarks/RESULTS.md).
SEARCH_TABLE_TOL = 1e-2
SEARCH_TABLE_ITERATIONS = 12
#: Combinations that a candidate's rows of many missing categories are summed
#: over (drawn, beyond that many), and one draw of them, not the final fit's
#: two of :data:`~skebm._mixture.COMBINATIONS_PER_ROW`: such rows were most
#: of a search's rows. A size's later ridges start from
#: a fitted mixture, so their one draw is already from fitted components.
#: The held-out rows are scored with as many (the choices and times
#: compared: benchmarks/RESULTS.md).
SEARCH_TABLE_COMBINATIONS = 64
#: What an erfc costs in multiply-adds, for the thread policy (a rational
#: approximation and an exp): the marginal map's fit is an erfc for every
#: pair of grid point and knot, of every column.
ERFC_MULTIPLY_ADDS = 20
#: Grid points whose kernel sums :func:`_kernel_cdf` makes at once: at
#: least KERNEL_BLOCK, and more while the block holds at most
#: KERNEL_BLOCK_ENTRIES (grid point, knot) pairs, so that a column of few
#: knots is not a hundred small calls (benchmarks/RESULTS.md).
KERNEL_BLOCK = 64
KERNEL_BLOCK_ENTRIES = 2**16

#: Rows the cross-validated choice looks at, and rows the chosen mixture is
#: then fitted to (a random subset of larger data): the choice and the fit
#: cost at most this, whatever the number of training rows.
SELECTION_ROWS = 5_000
FIT_ROWS = 200_000
#: Most rows that the chosen ridge is checked again on, where the search saw
#: a subset (:func:`_ridge_for_the_fit`): two thirds fitted, one scored;
#: and the gain (nats per held-out row) a smaller ridge must bring there.
RIDGE_CHECK_ROWS, RIDGE_CHECK_GAIN = 10_000, 0.01
#: Most rows that the chosen mixture's fit may expand its rows into by their
#: missing categories (up to :data:`~skebm._mixture.COMBINATIONS_PER_ROW`
#: each; a random subset of the rows beyond). Its EM runs to convergence on
#: them; past a few thousand such rows, doubling them doubles the fit's time
#: for a few hundredths of a nat (benchmarks/RESULTS.md).
FIT_EXPANDED_ROWS = 1_000_000


def _in_float64(tensor):
    """``tensor`` in float64: on its device, or on the CPU where the device
    has no float64 (Apple's MPS)."""
    return tensor.to("cpu" if tensor.device.type == "mps" else tensor.device, torch.float64)


class GaussianMixtureDensity(nn.Module):
    """A mixture of full-covariance Gaussians (one component: a Gaussian),
    on tables with categorical columns a mixture of location models.

    On a table (``categorical`` given), each component is an independent
    categorical distribution of each categorical column, whose entries are
    category codes ``0 .. K-1``, times a Gaussian over the continuous columns
    whose mean the row's categories shift; the density is then a probability
    for the categories times a density for the rest. Missing entries (NaN)
    are marginalized exactly, and :meth:`conditionals` gives each row's
    distribution of its missing entries (see :mod:`skebm._mixture`).

    Parameters
    ----------
    weights : torch.Tensor of shape (n_components,)
        Mixing proportions, summing to 1.
    means : torch.Tensor of shape (n_components, n_continuous)
    covariances : torch.Tensor of shape (n_components, n_continuous, n_continuous)
        Each positive definite.
    category_log_probs : torch.Tensor of shape (n_components, n_categorical, most categories)
        Log-probabilities of each categorical column's categories, -inf
        beyond them; None without categorical columns.
    categorical : torch.Tensor of bool, shape (n_features,), or None
        Which columns are categorical; None: none.
    shifts : torch.Tensor of shape (n_components, n_shifts, n_continuous) or None
        Each component's shift of its mean for each category but the first of
        each categorical column, in column order; None: no shifts.
    """

    def __init__(self, weights, means, covariances, category_log_probs=None, categorical=None,
                 shifts=None):
        super().__init__()
        self.register_buffer("log_weights", torch.log(weights))
        self.register_buffer("means", means)
        # Factored in float64 and kept in the means' dtype: on near-collinear
        # columns (a covariance's smallest eigenvalue near the ridge, 1e-6),
        # float32 rounding of the covariance itself can leave it indefinite.
        self.register_buffer("cholesky", torch.linalg.cholesky(
            _in_float64(covariances)).to(means.device, means.dtype))
        # Its inverse, for the products of :meth:`log_prob_and_gradient`.
        self.register_buffer("whitening", torch.linalg.solve_triangular(
            self.cholesky, torch.eye(self.cholesky.shape[-1], dtype=self.cholesky.dtype,
                                     device=self.cholesky.device), upper=False))
        self.table = categorical is not None
        if self.table:
            if shifts is None:
                shifts = means.new_zeros(len(means), 0, means.shape[1])
            self.register_buffer("categorical", categorical.to(device=means.device))
            self.register_buffer("category_log_probs", category_log_probs)
            self.register_buffer("shifts", shifts)

    @classmethod
    def fit_to(cls, Z, *, n_components=1, ridge=1e-6, seed=0, categorical=None,
               n_categories=(), max_iter=100, tol=1e-3, start=None, draws=2,
               n_draws=None):
        """Fit to the rows of ``Z`` by maximum likelihood (EM for a mixture),
        ``ridge`` added to every covariance's diagonal. Tables (categorical
        columns, or missing entries) are fitted by :func:`fit_mixture`, with
        ``max_iter``, ``tol`` and its ``draws`` and ``n_draws``, from ``start``
        (a fitted mixture of the same size) when given."""
        if categorical is not None or torch.isnan(Z).any():
            if categorical is None:
                categorical = torch.zeros(Z.shape[1], dtype=torch.bool, device=Z.device)
            X, codes = _split(Z.detach().to(torch.float64), categorical.to(Z.device))
            weights, means, covariances, log_probs, shifts = fit_mixture(
                X, codes, list(n_categories), n_components, ridge, seed, max_iter=max_iter,
                tol=tol, start=None if start is None else start.mixture_parameters(),
                draws=draws, n_draws=n_draws)
            as_float = lambda tensor: tensor.to(torch.float32)
            if not categorical.any():
                return cls(as_float(weights), as_float(means), covariances)
            return cls(as_float(weights), as_float(means), covariances,
                       as_float(log_probs), categorical, as_float(shifts))
        data = Z.detach().cpu().to(torch.float64).numpy()
        if n_components == 1:
            means = data.mean(axis=0, keepdims=True)
            centred = data - means
            covariances = (centred.T @ centred / max(len(data) - 1, 1))[None]
            covariances = covariances + ridge * np.eye(data.shape[1])
            weights = np.ones(1)
        else:
            weights, means, covariances = fit_gaussian_mixture(data, n_components, ridge,
                                                               seed=seed)
        as_tensor = lambda array: torch.as_tensor(array, dtype=torch.float32, device=Z.device)
        return cls(as_tensor(weights), as_tensor(means), torch.as_tensor(covariances, device="cpu"))

    def covariances(self):
        """Each component's covariance, in float64 from its factor (see
        :func:`_in_float64`): a float32 product of the factors may round a
        near-singular covariance into an indefinite one."""
        factor = _in_float64(self.cholesky)
        return factor @ factor.transpose(-1, -2)

    def mixture_parameters(self):
        """``(weights, means, covariances, category log-probabilities,
        shifts)`` in float64, as :func:`~skebm._mixture.fit_mixture` takes
        them."""
        covariances = self.covariances()
        log_probs, shifts = (self.category_log_probs, self.shifts) if self.table else (
            self.means.new_zeros(self.n_components, 0, 1),
            self.means.new_zeros(self.n_components, 0, self.means.shape[1]))
        return tuple(tensor.to(torch.float64) for tensor in (
            self.log_weights.exp(), self.means, covariances, log_probs, shifts))

    def widened(self, scale):
        """The same mixture with every standard deviation multiplied by
        ``scale`` (category probabilities unchanged)."""
        covariances = self.covariances() * scale**2
        if not self.table:
            return type(self)(self.log_weights.exp(), self.means.clone(), covariances)
        return type(self)(self.log_weights.exp(), self.means.clone(), covariances,
                          self.category_log_probs.clone(), self.categorical.clone(),
                          self.shifts.clone())

    def with_noise(self, std):
        """The density of a draw plus Gaussian noise of standard deviation
        ``std`` in every feature: ``std**2`` added to each covariance's
        diagonal (a mixture without categories)."""
        covariances = self.covariances()
        eye = torch.eye(covariances.shape[-1], dtype=covariances.dtype, device=covariances.device)
        return type(self)(self.log_weights.exp(), self.means.clone(), covariances + std**2 * eye)

    def moment_matched(self):
        """The one Gaussian with this mixture's mean and covariance (a
        mixture without categories)."""
        weights = self.log_weights.exp()
        mean = weights @ self.means
        centred = self.means - mean
        covariance = torch.einsum("k,kij->ij", _in_float64(weights), self.covariances()
                                  + _in_float64(centred[:, :, None] * centred[:, None, :]))
        return type(self)(weights.new_ones(1), mean[None], covariance[None])

    def log_prob_and_gradient(self, Z):
        """``(log b(Z), d log b / dZ)`` of complete rows of a mixture without
        categories, by hand (Langevin chains call it at every step): with
        ``w_k = L_k^-1 (z - mean_k)`` each component's whitened offset, the
        gradient is ``-sum_k r_k L_k^-T w_k``, ``r_k`` the responsibilities.
        Every component's whitening is one product with the stacked
        inverse factors, and so is the way back."""
        n_components, n_features = self.means.shape
        stacked = self.whitening.reshape(n_components * n_features, n_features)
        offsets = (self.whitening @ self.means[:, :, None]).reshape(-1)
        white = (Z @ stacked.T - offsets).view(len(Z), n_components, n_features)
        log_det = torch.log(torch.diagonal(self.cholesky, dim1=-2, dim2=-1)).sum(-1)
        log_components = -0.5 * (white**2).sum(-1) - log_det + self.log_weights
        log_prob = (torch.logsumexp(log_components, 1)
                    - 0.5 * n_features * math.log(2 * math.pi))
        responsibilities = torch.softmax(log_components, 1)
        gradient = -(responsibilities[:, :, None] * white).reshape(len(Z), -1) @ stacked
        return log_prob, gradient

    @property
    def n_components(self):
        return len(self.log_weights)

    def sample(self, n_samples, generator):
        components = torch.multinomial(
            self.log_weights.exp(), n_samples, replacement=True, generator=generator
        )
        eps = torch.randn(n_samples, self.means.shape[1], generator=generator,
                          device=self.means.device, dtype=self.means.dtype)
        # One product per component, not a Cholesky factor gathered for every
        # row: the rows sorted by component, each component's a contiguous block.
        order = torch.argsort(components, stable=True)
        blocks = torch.split(eps[order], torch.bincount(
            components, minlength=self.n_components).tolist())
        draws = torch.empty_like(eps)
        draws[order] = torch.cat([self.means[k] + block @ self.cholesky[k].T
                                  for k, block in enumerate(blocks)])
        if not self.table:
            return draws
        log_probs = self.category_log_probs
        u = torch.rand(n_samples, log_probs.shape[1], generator=generator, dtype=log_probs.dtype,
                       device=log_probs.device)
        codes = draw_categories(log_probs, components, u)
        if self.shifts.shape[1]:  # each row's mean, shifted by its categories
            draws = draws + category_shifts(codes, category_counts(self.category_log_probs),
                                            self.shifts, components)
        return _join(draws, codes, self.categorical)

    def log_prob(self, Z, n_draws=None):
        """Log-density of each row (of its observed entries, the rest
        marginalized: see :func:`~skebm._mixture.log_density` for
        ``n_draws``); memory is one (n_samples, n_features) block at a time
        for complete rows, whatever the number of components."""
        if self.table or torch.isnan(Z).any():
            X, codes = self._split(Z)
            return log_density(X.to(torch.float64), codes, self.mixture_parameters(),
                               n_draws).to(Z.dtype)
        n_features = Z.shape[-1]
        log_det = torch.log(torch.diagonal(self.cholesky, dim1=-2, dim2=-1)).sum(-1)
        log_components = []
        for k in range(self.n_components):
            centred = (Z - self.means[k]).T
            white = torch.linalg.solve_triangular(self.cholesky[k], centred, upper=False)
            log_components.append(-0.5 * (white**2).sum(0) - log_det[k] + self.log_weights[k])
        log_norm = 0.5 * n_features * math.log(2 * math.pi)
        return torch.logsumexp(torch.stack(log_components), dim=0) - log_norm

    def _split(self, Z):
        if not self.table:
            return Z, Z[:, :0].long()
        return _split(Z, self.categorical)

    def conditionals(self, Z, generator=None):
        """Each row's distribution of its missing (NaN) entries given the
        others: a :class:`~skebm._mixture.ComponentConditionals`, whose
        ``sample`` this mixture's :meth:`complete` turns back into rows (the
        combinations of a row of many missing categories drawn from
        ``generator``, None: the numbers common to every row)."""
        X, codes = self._split(Z)
        # In float64: float32 factors of a covariance with a 1e-6 ridge fail.
        return ComponentConditionals(self.mixture_parameters(), X.to(torch.float64), codes,
                                     generator)

    def complete(self, conditionals, draws):
        """``(n_rows, n_draws, n_features)``: completions of each row drawn
        from ``conditionals`` with the numbers of ``draws`` (a
        :class:`~skebm._mixture.FreshDraws` or
        :class:`~skebm._mixture.CommonDraws`), observed entries as they were."""
        X, codes = conditionals.sample(draws)
        X = X.to(self.means.dtype)
        if not self.table:
            return X
        return _join(X, codes, self.categorical)


def _split(Z, categorical):
    """``(continuous columns, category codes with -1 where missing)`` of rows."""
    codes = Z[..., categorical]
    return Z[..., ~categorical], torch.where(torch.isnan(codes), -1, codes).long()


def _join(X, codes, categorical):
    """Rows from their continuous columns and category codes (-1: NaN)."""
    Z = torch.empty((*X.shape[:-1], len(categorical)), dtype=X.dtype, device=X.device)
    Z[..., ~categorical] = X
    Z[..., categorical] = torch.where(codes < 0, torch.nan, codes.to(X.dtype))
    return Z


class MarginalGaussianization(nn.Module):
    """A fixed, monotone map of each feature to a standard normal variable.

    ``u_j = Phi^-1(F_j(z_j))``, with ``F_j`` the distribution function of a
    one-dimensional kernel density estimate of feature ``j`` (bandwidth by
    leave-one-out likelihood, exact ties left out together), mixed with a
    weight of ``DEFENSIVE_WEIGHT`` of a wide Gaussian ``N(0, 3^2)`` so that
    rows beyond the training range keep a sensible density. A density ``g``
    of ``u`` then gives the density ``g(u(z)) |du/dz|`` of ``z``: a Gaussian
    mixture on ``u`` is a mixture copula with kernel-density marginals. The
    marginals carry what a few Gaussians cannot: skewed, bounded or
    dequantized (staircase) features.

    ``F_j`` is tabulated on a grid (fine over the data, coarse out to 20
    standard deviations beyond it) and interpolated linearly, so the
    density of ``z_j`` is piecewise constant on the grid and integrates to
    exactly the tabulated mass. Beyond the grid, where the wide Gaussian is
    all that is left, ``F_j`` follows that Gaussian's tail, scaled to the
    mass the grid leaves there: the map is a bijection of the real line, and
    the density of ``z`` stays normalized and keeps falling however far a
    value lies (a clamp there once gave every far outlier one score).

    References
    ----------
    .. [1] Chen, S. S. and Gopinath, R. A. "Gaussianization." NeurIPS 2000.

    Parameters
    ----------
    grid : torch.Tensor of shape (n_features, n_grid)
        Increasing grid of each feature, float64.
    cdf : torch.Tensor of shape (n_features, n_grid)
        ``F_j`` at the grid points; ``survival`` is ``1 - F_j``, computed
        apart for precision in the upper tail.
    survival : torch.Tensor of shape (n_features, n_grid)
    """

    DEFENSIVE_WEIGHT = 1e-3
    DEFENSIVE_SCALE = 3.0
    #: Rows the bandwidth is chosen on and rows the distribution function sums over.
    BANDWIDTH_ROWS = 300
    KNOT_ROWS = 2000
    #: The narrowest kernel, in the standardized units the map is fitted in.
    #: Rows that are all one value (a column constant but for a few rows,
    #: those held out) choose no bandwidth of their own, and a kernel
    #: narrower than float32's precision makes the map jump between the
    #: float32 rows of training and the float64 rows of inference.
    MIN_BANDWIDTH = 1e-4
    FINE_POINTS, TAIL_POINTS = 1024, 64

    def __init__(self, grid, cdf, survival, columns=None):
        super().__init__()
        self.columns = columns  # the columns mapped (a list of indices), None: all
        self.register_buffer("grid", grid)
        self.register_buffer("cdf", cdf)
        self.register_buffer("survival", survival)
        # Mass per cell from whichever of F and 1 - F is the smaller (precise) there.
        mass = torch.where(cdf[:, 1:] < 0.5, torch.diff(cdf, dim=1), -torch.diff(survival, dim=1))
        slope = mass / torch.diff(grid, dim=1)
        self.register_buffer("log_slope", torch.log(slope))

    @classmethod
    def fit_to(cls, data, rng, columns=None, progress=None):
        """Fit to the rows of ``data`` (a float64 numpy array, standardized;
        NaN entries left out), mapping ``columns`` (indices; None: all).
        ``progress``: called with a short note after each column, or None."""
        return cls.fit_together(data, [], rng, columns, progress)[0]

    @classmethod
    def fit_together(cls, data, row_sets, rng, columns=None, progress=None):
        """One map fitted to each of ``row_sets`` (arrays of row indices into
        ``data``), then one fitted to all of ``data``: a cross-validation's
        maps of its folds' training rows, and the map of the final fit.

        A column's bandwidth and grid are chosen once, on all its rows, and
        each kernel is evaluated once; each map sums the kernels of its own
        rows. Kernel sums are most of a map's fit, so three folds and the
        final map cost about one map's fit instead of four. The bandwidth a
        fold's map shares was chosen on rows its scores are later taken on:
        one number per column, of the leave-one-out kind, against fitting
        each fold's map apart (the choices and scores compared:
        benchmarks/RESULTS.md).

        The erfc matrices are large elementwise work, so they take the idle
        cores the caller's thread limit allows."""
        data = data if columns is None else data[:, columns]
        members = np.zeros((len(data), len(row_sets) + 1), dtype=bool)
        for s, rows in enumerate(row_sets):
            members[rows, s] = True
        members[:, -1] = True
        grid_points = cls.FINE_POINTS + 2 * cls.TAIL_POINTS
        work = ERFC_MULTIPLY_ADDS * grid_points * min(len(data), cls.KNOT_ROWS)
        fits = []
        with thread_limit(cpu_threads(None, work, torch.device("cpu"))):
            for j, column in enumerate(data.T):
                observed = ~np.isnan(column)
                fits.append(cls._fit_column(column[observed], members[observed], rng))
                if progress is not None:
                    progress(f"marginal map, column {j + 1} of {data.shape[1]}")
        as_tensor = lambda arrays: torch.as_tensor(np.stack(arrays), dtype=torch.float64,
                                                   device="cpu")
        return [cls(*(as_tensor([fit[s][part] for fit in fits]) for part in range(3)),
                    None if columns is None else list(columns))
                for s in range(members.shape[1])]

    @classmethod
    def _grid(cls, low, high):
        """The points a column's map is tabulated at: fine over ``[low,
        high]``, coarse over 20 standardized units beyond each end."""
        return np.concatenate([
            np.linspace(low - 20, low, cls.TAIL_POINTS, endpoint=False),
            np.linspace(low, high, cls.FINE_POINTS),
            np.linspace(high, high + 20, cls.TAIL_POINTS + 1)[1:],
        ])

    @classmethod
    def _fit_column(cls, column, members, rng):
        """(grid, cdf, survival) of each map of one column, from its observed
        values and which maps each belongs to (``members``, a boolean array
        of ``(len(column), n_maps)``): a map without a value is the
        identity (a cross-validation fold's training rows can miss every
        observed value of a column that has one or two). The knots are all
        values, or a random subset leaving about ``KNOT_ROWS`` to each map."""
        identity = cls._grid(-5.0, 5.0)
        identity = (identity, special.ndtr(identity), special.ndtr(-identity))
        if len(column) == 0:
            return [identity] * members.shape[1]
        n_knots = min(len(column), math.ceil(
            cls.KNOT_ROWS * len(column) / max(members.sum(0).min(), 1)))
        if n_knots < len(column):
            chosen = rng.choice(len(column), n_knots, replace=False)
            column, members = column[chosen], members[chosen]
        bandwidth = max(_loo_bandwidth(column if len(column) <= cls.BANDWIDTH_ROWS else
                                       rng.choice(column, cls.BANDWIDTH_ROWS, replace=False)),
                        cls.MIN_BANDWIDTH)
        grid = cls._grid(column.min() - 5 * bandwidth, column.max() + 5 * bandwidth)
        lower, upper = _kernel_cdf(grid, column, bandwidth, members)
        w, s = cls.DEFENSIVE_WEIGHT, cls.DEFENSIVE_SCALE
        return [(grid, (1 - w) * lower[m] + w * special.ndtr(grid / s),
                 (1 - w) * upper[m] + w * special.ndtr(-grid / s)) if members[:, m].any()
                else identity for m in range(members.shape[1])]

    def forward(self, Z):
        """``(U, log_det)``: the map of each row and ``log |dU/dZ|`` (per row,
        of its observed entries: NaN maps to NaN)."""
        if self.columns is None:
            return self._map(Z)
        mapped, log_det = self._map(Z[:, self.columns])
        U = Z.clone()
        U[:, self.columns] = mapped
        return U, log_det

    def _map(self, Z):
        missing = torch.isnan(Z).T if torch.isnan(Z).any() else None
        z = Z.to(torch.float64).T.contiguous()  # (n_features, n_rows)
        if missing is not None:
            z = torch.nan_to_num(z)
        cell = (torch.searchsorted(self.grid, z) - 1).clamp_(0, self.grid.shape[1] - 2)
        inside = torch.minimum(torch.maximum(z, self.grid[:, :1]), self.grid[:, -1:])
        offset = inside - torch.gather(self.grid, 1, cell)
        log_slope = torch.gather(self.log_slope, 1, cell)
        lower = torch.gather(self.cdf, 1, cell) + log_slope.exp() * offset
        upper = torch.gather(self.survival, 1, cell) - log_slope.exp() * offset
        u = torch.where(lower < 0.5, special_torch.ndtri(lower), -special_torch.ndtri(upper))
        log_density = log_slope
        beyond = (z < self.grid[:, :1]) | (z > self.grid[:, -1:])
        if beyond.any():
            tail_u, tail_log_density = self._tails(z)
            u = torch.where(beyond, tail_u, u)
            log_density = torch.where(beyond, tail_log_density, log_density)
        terms = log_density - _log_normal(u)
        if missing is None:
            log_det = terms.sum(0)
        else:
            log_det = torch.where(missing, 0.0, terms).sum(0)
            u = torch.where(missing, torch.nan, u)
        return u.T.to(Z.dtype), log_det.to(Z.dtype)

    def _tail_constants(self):
        """log of each feature's mass below and above the grid, less the
        log of the wide Gaussian's there: ``F(z) = exp(c) Phi(z / s)``
        below, ``1 - F(z) = exp(c) Phi(-z / s)`` above."""
        s = self.DEFENSIVE_SCALE
        below = torch.log(self.cdf[:, :1]) - special_torch.log_ndtr(self.grid[:, :1] / s)
        above = torch.log(self.survival[:, -1:]) - special_torch.log_ndtr(-self.grid[:, -1:] / s)
        return below, above

    def _tails(self, z):
        """``(u, log dF/dz)`` of every entry of ``z`` (features by rows) as if
        beyond the grid, below it where ``z`` is below the grid's start and
        above it otherwise (entries inside are read as the grid's ends)."""
        s = self.DEFENSIVE_SCALE
        below_constant, above_constant = self._tail_constants()
        low = torch.minimum(z, self.grid[:, :1]) / s
        high = torch.maximum(z, self.grid[:, -1:]) / s
        is_below = z < self.grid[:, :1]
        u = torch.where(is_below,
                        _ndtri_exp(below_constant + special_torch.log_ndtr(low)),
                        -_ndtri_exp(above_constant + special_torch.log_ndtr(-high)))
        log_density = torch.where(is_below, below_constant + _log_normal(low),
                                  above_constant + _log_normal(high)) - math.log(s)
        return u, log_density

    def inverse(self, U):
        """The rows ``Z`` that map to ``U`` (NaN to NaN)."""
        if self.columns is not None:
            Z = U.clone()
            Z[:, self.columns] = self._unmap(U[:, self.columns])
            return Z
        return self._unmap(U)

    def _unmap(self, U):
        u = U.to(torch.float64).T.contiguous()
        lower, upper = special_torch.ndtr(u), special_torch.ndtr(-u)
        last = self.grid.shape[1] - 2
        # Below the median the distribution function is precise, above it the survival function.
        cell = torch.where(
            u < 0,
            (torch.searchsorted(self.cdf, lower) - 1).clamp_(0, last),
            (torch.searchsorted(-self.survival, -upper) - 1).clamp_(0, last))
        slope = torch.gather(self.log_slope, 1, cell).exp()
        from_lower = (lower - torch.gather(self.cdf, 1, cell)) / slope
        from_upper = (torch.gather(self.survival, 1, cell) - upper) / slope
        z = torch.gather(self.grid, 1, cell) + torch.where(u < 0, from_lower, from_upper)
        # Beyond the grid's mass: the wide Gaussian's tail (see _tails). The
        # test is in logs, as the forward map's: ndtr(u) against cdf[:, 0]
        # misplaces points next to the grid's end (by 0.07 at -22, measured).
        s = self.DEFENSIVE_SCALE
        below_constant, above_constant = self._tail_constants()
        log_lower, log_upper = special_torch.log_ndtr(u), special_torch.log_ndtr(-u)
        is_below = log_lower < below_constant + special_torch.log_ndtr(self.grid[:, :1] / s)
        is_above = log_upper < above_constant + special_torch.log_ndtr(-self.grid[:, -1:] / s)
        if is_below.any() or is_above.any():
            from_below = _ndtri_exp((log_lower - below_constant).clamp(max=_LOG_HALF))
            from_above = -_ndtri_exp((log_upper - above_constant).clamp(max=_LOG_HALF))
            tail = s * torch.where(u < 0, from_below, from_above)
            z = torch.where(is_below | is_above, tail, z)
        return torch.where(torch.isnan(u), torch.nan, z).T.to(U.dtype)


_LOG_HALF = math.log(0.5)
#: Newton steps of :func:`_ndtri_exp` from its asymptotic start (each
#: squares the relative error, which starts below 1e-2).
_NEWTON_STEPS = 6


def _log_normal(u):
    """The standard normal's log-density."""
    return -0.5 * u**2 - 0.5 * math.log(2 * math.pi)


def _ndtri_exp(log_p):
    """``Phi^-1(exp(log_p))`` for ``log_p <= log(1/2)``, also where ``exp``
    underflows (a value thousands of standard deviations out): there by
    Newton's method on ``log Phi``, from ``-sqrt(-2 log p)``."""
    tiny = log_p < -700.0
    u = special_torch.ndtri(torch.exp(log_p.clamp(min=-700.0)))  # finite, gradients too
    if tiny.any():
        target = torch.where(tiny, log_p, -700.0)
        v = -torch.sqrt(-2 * target)
        for _ in range(_NEWTON_STEPS):
            log_cdf = special_torch.log_ndtr(v)
            v = v - (log_cdf - target) * torch.exp(log_cdf - _log_normal(v))
        u = torch.where(tiny, v, u)
    return u


def _kernel_cdf(grid, knots, bandwidth, members=None):
    """The distribution and survival functions at ``grid`` of a Gaussian kernel
    density on ``knots``: each kernel's ``Phi(-|t|)`` once (torch's erfc is
    several times scipy's ndtr's speed), its lower tail where ``t < 0`` and
    its upper where ``t > 0``, each precise where it is small. With
    ``members`` (a boolean array of ``(len(knots), n_sets)``), one density
    for each set of knots, each a row of the two arrays returned.

    The (grid point, knot) matrices are most of a marginal map's fit, so
    they are made a block of grid points at a time (:data:`KERNEL_BLOCK`),
    in one buffer worked in place: small matrices stay in the cache, and
    large ones are fresh memory the system must map at every call. erfc's argument stops
    at 26.5, where erfc is 2e-307, since beyond it erfc leaves its fast path
    for subnormal numbers (the defensive Gaussian that
    :class:`MarginalGaussianization` adds is larger wherever the grid
    reaches)."""
    grid = torch.as_tensor(grid, dtype=torch.float64, device="cpu")
    knots = torch.as_tensor(knots, dtype=torch.float64, device="cpu")
    sets = torch.as_tensor(np.ones((len(knots), 1)) if members is None else members,
                           dtype=torch.float64, device="cpu")
    knots, order = torch.sort(knots)
    sets = sets[order]
    counts = sets.sum(0).clamp_(min=1)
    # Each set's knots at or below each grid point, counted on the sorted knots (the
    # kernels of those above the point are the ones whose lower tail, t < 0, it sits in).
    at_or_below = torch.cat([torch.zeros_like(sets[:1]), torch.cumsum(sets, 0)])[
        torch.searchsorted(knots, grid, right=True)]
    lower = torch.empty((len(grid), sets.shape[1]), dtype=torch.float64, device="cpu")
    upper = torch.empty_like(lower)
    block = max(KERNEL_BLOCK, KERNEL_BLOCK_ENTRIES // max(len(knots), 1))
    buffer = torch.empty((block, len(knots)), dtype=torch.float64, device="cpu")
    for start in range(0, len(grid), block):
        rows = slice(start, min(start + block, len(grid)))
        t = torch.sub(grid[rows, None], knots, out=buffer[:rows.stop - start])
        t.mul_(1 / (bandwidth * math.sqrt(2)))  # (z - knot) / (h sqrt 2)
        below = t < 0
        tail = torch.special.erfc(t.abs_().clamp_(max=26.5))  # t is spent
        tail_all = 0.5 * tail @ sets
        tail_below = 0.5 * tail.mul_(below) @ sets
        tail_above = tail_all - tail_below
        n_above = at_or_below[rows]
        n_below = counts - n_above
        lower[rows] = (tail_below + (n_above - tail_above)) / counts
        upper[rows] = (tail_above + (n_below - tail_below)) / counts
    if members is None:
        return lower[:, 0].numpy(), upper[:, 0].numpy()
    return lower.T.numpy(), upper.T.numpy()


#: The bandwidths :func:`_loo_bandwidth` chooses from, in standard deviations.
BANDWIDTHS = np.logspace(-3, 0, 16)


def _loo_bandwidth(values):
    """Bandwidth of a 1-D Gaussian kernel density with the best
    leave-one-out likelihood among :data:`BANDWIDTHS` (times the values'
    standard deviation); rows equal to the one left out are left out with
    it, so that ties (rounded data) do not pull the bandwidth to 0.

    Every third bandwidth is scored first, then the two each side of the
    best of those: the same choice as scoring all where the likelihood has
    one peak along the grid, as on every column of the benchmark tables
    (benchmarks/RESULTS.md), for 10 scorings instead of 16. In torch, whose
    exp is vectorized where numpy's float64 exp is not without AVX-512."""
    bandwidths = max(values.std(), 1e-6) * BANDWIDTHS
    values = torch.as_tensor(values, dtype=torch.float64, device="cpu")
    half_squares = 0.5 * (values[:, None] - values[None, :]) ** 2
    n_others = (half_squares != 0).sum(1).clamp_(min=1)
    half_squares[half_squares == 0] = math.inf  # the row itself and its ties: kernel 0

    def best_of(indices):
        chosen = torch.as_tensor(bandwidths[indices], dtype=torch.float64, device="cpu")
        # exp is several times slower where it underflows; terms clipped to
        # e^-700 (1e-304) stay far below the 1e-300 added to each density.
        kernel = (half_squares * (-1 / chosen**2)[:, None, None]).clamp_(min=-700.0).exp_()
        density = kernel.sum(2) / n_others / chosen[:, None]
        return indices[int(torch.log(density + 1e-300).mean(1).argmax())]

    coarse = best_of(np.arange(0, len(BANDWIDTHS), 3))
    return float(bandwidths[best_of(np.arange(max(coarse - 2, 0),
                                              min(coarse + 3, len(BANDWIDTHS))))])


def _fold_rows(data, folds, marginals, rng, layout, progress):
    """``(rows, map of all of data)``. ``rows``: for each fold, (training
    rows, held-out rows, log-Jacobian of the held-out rows), mapped by a
    :class:`MarginalGaussianization` fitted to the fold's training rows when
    ``marginals``, as they are otherwise. The map of all of data (None
    without ``marginals``) is fitted with the folds' maps, at little more
    cost (:meth:`MarginalGaussianization.fit_together`)."""
    if not marginals:
        return [(data[train], data[test], 0.0) for train, test in folds], None
    *maps, map_of_all = MarginalGaussianization.fit_together(
        data, [train for train, _ in folds], rng, _continuous_columns(layout), progress)
    rows = []
    for (train, test), transform in zip(folds, maps):
        with torch.no_grad():
            train_rows, _ = transform(torch.as_tensor(data[train], device="cpu"))
            test_rows, log_det = transform(torch.as_tensor(data[test], device="cpu"))
        rows.append((train_rows.numpy(), test_rows.numpy(), log_det.numpy()))
    return rows, map_of_all


def select_base(data, max_components, marginal_options, rng, layout=None, progress=None,
                min_ridge=0.0):
    """``(choice, map)``: ``choice``, ``(marginals, n_components, ridge)``, is
    the base with the best held-out log-likelihood on the rows of ``data``
    (numpy, standardized; with ``layout``, :class:`TableLayout`, a table of
    categories too); ``map``, the :class:`MarginalGaussianization` of all of
    ``data`` fitted with the folds' maps, or None (no map was tried, or the
    search saw a subset of the rows). ``progress``: called with a short note
    after each map column and each candidate's fits, or None.

    The candidates: with or without :class:`MarginalGaussianization` (the
    booleans in ``marginal_options``), times full-covariance Gaussian
    mixtures of :data:`COMPONENT_GRID` components (:data:`SMALL_TABLE_GRID`
    for small tables) up to ``max_components``, each with the best of the
    covariance ridges of :data:`RIDGE_GRID` from ``min_ridge`` on (tried from
    the smallest up, until one scores worse). Components grow until :data:`PATIENCE`
    (:data:`SMALL_TABLE_PATIENCE`) sizes in a row fail to improve the score,
    both options in step, and an option far behind the other stops
    (:data:`OPTION_MARGIN`). Held-out
    likelihood, not BIC: on small tables BIC picks mixtures whose components
    collapse onto a few rows (an example is in the user guide), and it cannot
    choose the ridge or the marginals. Scores are 3-fold cross-validated up to
    :data:`SPLIT_ROWS` rows, and from one held-out third above (where one split
    is precise and the fits cost most); at most :data:`SELECTION_ROWS` rows
    are used.
    """
    subset = len(data) > SELECTION_ROWS
    if subset:
        data = data[rng.choice(len(data), SELECTION_ROWS, replace=False)]
    splits = KFold(min(3, len(data)), shuffle=True, random_state=rng.randint(2**31 - 1))
    folds = list(splits.split(data))
    grid, patience = SMALL_TABLE_GRID, SMALL_TABLE_PATIENCE
    if len(data) > SPLIT_ROWS:
        folds, grid, patience = folds[:1], COMPONENT_GRID, PATIENCE
    smallest_fold = min(len(train) for train, _ in folds)
    fold_rows, maps = {}, {}
    for marginals in marginal_options:
        fold_rows[marginals], maps[marginals] = _fold_rows(data, folds, marginals, rng, layout,
                                                           progress)
    with thread_limit(1):  # EM's small products: a second BLAS thread costs more than it saves
        ridges = tuple(ridge for ridge in RIDGE_GRID if ridge >= min_ridge)
        choice = _search(fold_rows, grid, patience, smallest_fold, max_components, data.shape[1],
                         layout, progress, ridges)
    return choice, None if subset else maps.get(True)


def _search(fold_rows, grid, patience, smallest_fold, max_components, n_features, layout,
            progress, ridges=RIDGE_GRID):
    """:func:`select_base`'s growth of the mixtures, on each option's folds."""
    marginal_options = list(fold_rows)
    option_best = dict.fromkeys(marginal_options, -math.inf)
    misses = dict.fromkeys(marginal_options, 0)
    growing = list(marginal_options)
    margin = OPTION_MARGIN + OPTION_MARGIN_PER_FEATURE * n_features
    best, best_score = (False, 1, ridges[0]), -math.inf
    for n_components in grid:
        if n_components > max_components or n_components > smallest_fold // 2:
            break
        for marginals in growing:
            score, ridge = _best_ridge(fold_rows[marginals], n_components, layout, ridges)
            if progress is not None:
                progress(f"mixtures of {n_components} components")
            if score > best_score:
                best, best_score = (marginals, n_components, ridge), score
            if score > option_best[marginals]:
                option_best[marginals], misses[marginals] = score, 0
            else:
                misses[marginals] += 1
        growing = [marginals for marginals in growing if misses[marginals] < patience
                   and option_best[marginals] >= best_score - margin]
        if not growing:
            break
    return best


def _best_ridge(fold_rows, n_components, layout, ridges=RIDGE_GRID):
    """(score, ridge) of the best ridge for mixtures of ``n_components``:
    ridges tried from the smallest up until one scores worse, each from the
    last one's fits; then :data:`INNER_RIDGE` from the best one's fits,
    where that is one of :data:`INNER_RIDGE_BESIDE`."""
    best_score, best_ridge, best_fits = -math.inf, ridges[0], [None] * len(fold_rows)
    for ridge in ridges:
        score, fits = _cross_validated(fold_rows, n_components, ridge, layout, best_fits)
        if score <= best_score:
            break
        best_score, best_ridge, best_fits = score, ridge, fits
    if best_ridge in INNER_RIDGE_BESIDE and INNER_RIDGE >= ridges[0]:
        score, _ = _cross_validated(fold_rows, n_components, INNER_RIDGE, layout, best_fits)
        if score > best_score:
            best_score, best_ridge = score, INNER_RIDGE
    return best_score, best_ridge


def _cross_validated(fold_rows, n_components, ridge, layout, starts):
    """(mean held-out score over the folds, each fold's mixture) of mixtures
    with ``ridge``, EM started from ``starts`` (None: afresh)."""
    scores, fits = [], []
    for (train_rows, test_rows, log_det), start in zip(fold_rows, starts):
        held_out, fit = _held_out_scores(train_rows, test_rows, n_components, ridge, layout,
                                         start)
        scores.append(np.mean(held_out + log_det))
        fits.append(fit)
    return np.mean(scores), fits


def _held_out_scores(train_rows, test_rows, n_components, ridge, layout, start=None):
    """``(log-likelihoods of test_rows, the mixture)`` for a mixture fitted to
    ``train_rows``. EM starts from ``start`` when given (the fit with the
    previous ridge: a few iterations instead of a new k-means run and a
    full EM); complete continuous rows take the numpy EM of
    :mod:`skebm._em`."""
    if layout is None and not (np.isnan(train_rows).any() or np.isnan(test_rows).any()):
        tol = max(1e-3, SEARCH_TOL_PER_FEATURE * train_rows.shape[1])
        mixture = fit_gaussian_mixture(train_rows, n_components, ridge, start=start,
                                       max_iter=SEARCH_EM_ITERATIONS, tol=tol)
        return mixture_log_density(test_rows, *mixture), mixture
    mixture = GaussianMixtureDensity.fit_to(
        torch.as_tensor(train_rows, device="cpu"), n_components=n_components, ridge=ridge,
        max_iter=SEARCH_TABLE_ITERATIONS, tol=SEARCH_TABLE_TOL, start=start, draws=1,
        n_draws=SEARCH_TABLE_COMBINATIONS, **_table_arguments(layout))
    scores = mixture.log_prob(torch.as_tensor(test_rows, dtype=torch.float32, device="cpu"),
                              SEARCH_TABLE_COMBINATIONS)
    scores = scores.double().numpy()
    return scores, mixture


class TableLayout(NamedTuple):
    """Which columns of a table are categorical (a bool array) and how many
    categories each has."""

    categorical: np.ndarray
    n_categories: tuple


def _continuous_columns(layout):
    return None if layout is None else np.flatnonzero(~layout.categorical)


def _table_arguments(layout):
    if layout is None:
        return {}
    return {"categorical": torch.as_tensor(layout.categorical, device="cpu"),
            "n_categories": layout.n_categories}


def fit_base(name, Z, *, max_components, marginals, generator, choice=None, layout=None,
             progress=None, min_ridge=0.0):
    """The base density of a model of the standardized rows ``Z``:
    ``(marginal map or None, mixture on its output, choice)``.

    ``name``: ``"gaussian"`` (one component) or ``"gaussian_mixture"`` (up
    to ``max_components``); ``marginals``: ``"auto"`` (with or without
    :class:`MarginalGaussianization`, whichever cross-validates better),
    ``"kde"`` or ``"none"``. The choice ``(marginals or not, components,
    ridge)`` is made by :func:`select_base` unless given (its ridge checked
    on the rows the mixture is fitted to where the search saw a subset:
    :func:`_ridge_for_the_fit`); then the map and the mixture are fitted
    (the mixture by EM, to at most :data:`FIT_ROWS` of the rows). ``layout`` (a :class:`TableLayout`): the rows are a table
    with categorical columns; the map then leaves them as they are.
    ``progress``: called with a short note after each step of the work
    (a map's column, a candidate's fits), or None. ``min_ridge``: the
    smallest ridge the search may choose.
    """
    _check_size(len(Z), Z.shape[1], 1 if name == "gaussian" else max_components)
    seed = draw_seed(generator)
    rng = np.random.RandomState(seed)
    data = Z.detach().cpu().to(torch.float64).numpy()
    transform, searched = None, choice is None
    if searched:
        options = {"auto": (False, True), "kde": (True,), "none": (False,)}[marginals]
        if layout is not None and layout.categorical.all():
            options = (False,)  # no continuous column to map
        choice, transform = select_base(data, 1 if name == "gaussian" else max_components,
                                        options, rng, layout, progress, min_ridge)
    use_marginals, n_components, ridge = choice
    if not use_marginals:
        transform = None
    elif transform is None:  # the choice was given, or the search saw a subset of the rows
        transform = MarginalGaussianization.fit_to(data, rng, _continuous_columns(layout),
                                                   progress)
    if transform is not None:
        transform = transform.to(Z.device)
        with torch.no_grad():
            Z = transform(Z)[0]
    Z = _fit_rows(Z, layout, rng)
    if searched and len(data) > SELECTION_ROWS:
        ridge = _ridge_for_the_fit(Z, n_components, ridge, layout, rng, min_ridge)
        choice = (use_marginals, n_components, ridge)
    with thread_limit(1):  # as in the search
        mixture = GaussianMixtureDensity.fit_to(Z, n_components=n_components, ridge=ridge,
                                                seed=seed, **_table_arguments(layout))
    return transform, mixture, choice


def _ridge_for_the_fit(Z, n_components, ridge, layout, rng, min_ridge):
    """The ridge of the chosen mixture for its fit to the rows ``Z``: the
    search's ``ridge``, or a smaller one of :data:`RIDGE_GRID` (from
    ``min_ridge`` on) that scores better by :data:`RIDGE_CHECK_GAIN` on a
    held-out third of ``Z`` (at most :data:`RIDGE_CHECK_ROWS` of them),
    tried from the largest down until one does not. Where the search saw a
    subset, its fits saw two thirds of :data:`SELECTION_ROWS` rows, and the
    ridge a mixture needs shrinks with its rows: a categorical column's
    shifts, known better, leave smaller residuals (R's ``baseball``: the
    search's 0.1 against 0.01, 2.5 nats a row on held-out rows). A gain of
    less is not worth its slower fit (a survey table's 0.004 nats: 30 s more;
    benchmarks/RESULTS.md)."""
    smaller = [candidate for candidate in RIDGE_GRID if min_ridge <= candidate < ridge]
    if not smaller:
        return ridge
    rows = Z.detach().cpu().to(torch.float64).numpy()
    order = rng.permutation(len(rows))[:RIDGE_CHECK_ROWS]
    test_rows, train_rows = rows[order[:len(order) // 3]], rows[order[len(order) // 3:]]
    with thread_limit(1):
        scores, fit = _held_out_scores(train_rows, test_rows, n_components, ridge, layout)
        best_score, best_ridge = np.mean(scores), ridge
        for candidate in reversed(smaller):
            scores, fit = _held_out_scores(train_rows, test_rows, n_components, candidate,
                                           layout, fit)
            if np.mean(scores) <= best_score + RIDGE_CHECK_GAIN:
                break
            best_score, best_ridge = np.mean(scores), candidate
    return best_ridge


def _fit_rows(Z, layout, rng):
    """The rows of ``Z`` the chosen mixture is fitted to: all of them, or a
    random subset of at most :data:`FIT_ROWS` rows that expand by their
    missing categories (:func:`~skebm._mixture.expanded_sizes`) into at
    most :data:`FIT_EXPANDED_ROWS`."""
    sizes = torch.ones(len(Z), dtype=torch.float64, device=Z.device)
    if layout is not None:
        X, codes = _split(Z, torch.as_tensor(layout.categorical, device=Z.device))
        sizes = expanded_sizes(X, codes, layout.n_categories)
    if len(Z) <= FIT_ROWS and float(sizes.sum()) <= FIT_EXPANDED_ROWS:
        return Z
    order = torch.as_tensor(rng.permutation(len(Z)), device=Z.device)
    n_kept = int(torch.searchsorted(torch.cumsum(sizes[order], 0),
                                    torch.tensor([FIT_EXPANDED_ROWS], dtype=torch.float64,
                                                 device=Z.device), right=True))
    return Z[torch.sort(order[:min(n_kept, FIT_ROWS)]).values]


def _check_size(n_rows, n_features, max_components):
    """Refuse, before any fit, a base the rows cannot support or the memory
    cannot hold: a full covariance needs more rows than features, and the
    search holds about three (n_features, n_features) float64 matrices per
    component."""
    if n_features >= n_rows:
        raise ValueError(
            f"The base density, a full-covariance Gaussian (mixture), needs more training rows "
            f"than features; got {n_rows} training rows (those left after any held-out "
            f"validation share) of {n_features} features. Give more rows, or fewer features "
            "(e.g. sklearn.decomposition.PCA; images: fewer pixels).")
    refuse_beyond_memory(
        8 * (3 * max_components * n_features**2 + 4 * n_rows * (n_features + max_components)),
        f"The base density of {n_features} features and up to {max_components} components",
        "Lower base_components or reduce the features (e.g. sklearn.decomposition.PCA).")
