"""Imputation of missing values from any density's conditional distribution."""

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.impute import MissingIndicator
from sklearn.utils import _safe_indexing, check_array, check_random_state, get_tags
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from ._base import TorchEstimator
from ._checks import input_attributes_restored_on_failure
from ._runtime import refuse_beyond_memory
from ._table import _in_fitted_dtypes, is_number, missing_cells, numbers_only

__all__ = ["DensityImputer"]


class DensityImputer(TransformerMixin, BaseEstimator):
    """Fill in missing values by drawing them from a density given the rest of the row.

    Wraps an estimator with ``fit`` and ``sample_conditional`` (skebm's
    densities) in scikit-learn's imputer API. The density is fitted to X as
    given, missing values included: whether it accepts them (and columns of
    categories) is the density's to decide, and its errors are raised as
    they are. ``transform`` asks it, for every row with a missing value
    (NaN, or None in a column of objects), for draws of the missing entries
    from its conditional distribution given the observed ones; observed
    entries come back exactly as given and rows without a missing value are
    not drawn for. Every row of X is nevertheless checked, before anything
    is drawn, as the density checks what ``sample_conditional`` takes: with
    a skebm density, a value it would refuse (a string in a numeric column,
    a category not seen in fit, an infinite value) is its error, in a
    complete row too. A density of another library sees, and checks, only
    the rows with a missing value.

    By default the filled value is an estimate of the conditional mean: the
    density's own ``conditional_mean`` where it has one (``NCEDensity``:
    importance sampling over 256 completions; a category's most probable
    value, but in a numeric column the density models as categories, a
    flag, the mean of its values), else the average of ``n_draws`` draws,
    and in categorical columns the value drawn most often (the mean of
    category codes is not a category). That
    minimizes the expected squared error of each cell, as
    :class:`~sklearn.impute.IterativeImputer` does with its regressions,
    but it shrinks the filled values toward the centre: their spread is too
    small. ``sample_posterior=True`` fills one draw instead, which keeps the
    joint distribution (spread and correlations included) at the price of
    more noise per cell; imputing several times with different seeds and
    pooling the analyses is multiple imputation [1]_.

    Parameters
    ----------
    density : estimator with ``fit`` and ``sample_conditional``, default=None
        The density model. It is cloned at ``fit``; the fitted clone is
        ``density_``. None: ``NCEDensity(random_state=random_state)`` (an
        int drawn from ``random_state`` when it is a RandomState instance).
        ``sample_conditional(X, random_state=...)`` must return X with its
        missing entries drawn (an array or a DataFrame of X's shape).
    sample_posterior : bool, default=False
        Fill one conditional draw per missing cell instead of the average of
        ``n_draws`` draws (the most frequent draw in categorical columns).
    n_draws : int >= 1, default=20
        Draws averaged per missing cell when ``sample_posterior`` is False
        and the density has no ``conditional_mean``;
        each costs one ``sample_conditional`` call over the rows with missing
        values, and the Monte-Carlo error of the mean falls as
        ``1 / sqrt(n_draws)`` of the conditional's standard deviation.
        ``transform`` refuses, before the first draw, ``n_draws`` whose
        draws (``n_draws`` x rows with a missing value x features float64
        values) would exceed half the free memory: they are made one at a
        time, but so many are out of reach in time as well.
        Unused when ``sample_posterior`` is True or the density has
        ``conditional_mean``.
    min_value, max_value : float or array-like of shape (n_features,), \
            default=-np.inf and np.inf
        Bounds of the filled values of each numeric column, as in
        :class:`~sklearn.impute.IterativeImputer`: a filled cell beyond one
        is set to it, so that a count or an amount (``min_value=0``) is
        never filled with a negative number: a density's tails reach beyond
        the range of its training rows (``NCEDensity`` puts a point mass at
        a column's end, an amount often exactly 0, back on its point, but
        not the tail of a column without one; the user guide measures how
        often). With
        ``sample_posterior``, the conditional's mass beyond a bound moves
        onto it. Categorical columns and the observed values are left as
        they are.
    keep_empty_features : bool, default=False
        What becomes of a column with no observed value at ``fit``, as in
        scikit-learn's imputers: the density is fitted without it (it has
        nothing to learn of the column), and ``transform`` leaves the column
        out of its output, with a warning at ``fit``; True keeps it, its
        missing cells filled with 0. (In a cross-validation fold, a column
        whose few observed values all fell in the held-out rows is such a
        column.)
    add_indicator : bool, default=False
        If True, a :class:`~sklearn.impute.MissingIndicator` transform stacks
        onto the output, as in :class:`~sklearn.impute.SimpleImputer`: a
        column per feature that had missing values at fit, True where the
        value was missing.
    random_state : int, RandomState instance or None, default=None
        Seeds the draws: each ``transform`` draws its seeds for
        ``sample_conditional`` from ``check_random_state(random_state)``, so
        with an int, ``transform`` and ``fit_transform`` return the same
        values for the same X and fitted density. A conditional mean, an
        estimate rather than a draw, takes a seed drawn once at ``fit``:
        ``transform`` then answers a row alike at every call, whatever
        ``random_state``. Also the seed of the default density.

    Attributes
    ----------
    density_ : estimator
        The fitted clone of ``density``.
    is_categorical_ : ndarray of bool, shape (`n_features_in_`,)
        The columns filled with the most frequent draw rather than the mean:
        those the density marks in its own ``is_categorical_``, and those of
        the training X that are not numeric.
    indicator_ : :class:`~sklearn.impute.MissingIndicator` or None
        Indicator of the missing values; None when ``add_indicator`` is
        False.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    sklearn.impute.IterativeImputer : Imputation by regressing each feature
        on the others in turn.
    sklearn.impute.KNNImputer : Imputation from the nearest complete rows.
    sklearn.impute.SimpleImputer : Imputation by a statistic of each column.

    References
    ----------
    .. [1] Rubin, D. B. "Multiple Imputation for Nonresponse in Surveys."
       Wiley, 1987.

    Examples
    --------
    >>> import numpy as np
    >>> from skebm import DensityImputer, ShortRunEBM
    >>> rng = np.random.default_rng(0)
    >>> X = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], size=500)
    >>> imputer = DensityImputer(ShortRunEBM(max_iter=2, random_state=0),
    ...                          random_state=0).fit(X)
    >>> filled = imputer.transform([[1.0, np.nan], [np.nan, -2.0]])
    >>> filled.shape, bool(np.isnan(filled).any()), filled[0, 0], filled[1, 1]
    ((2, 2), False, np.float64(1.0), np.float64(-2.0))
    """

    _parameter_constraints = {
        "density": [None, HasMethods(["fit", "sample_conditional"])],
        "sample_posterior": ["boolean"],
        "n_draws": [Interval(numbers.Integral, 1, None, closed="left")],
        "min_value": [None, Interval(numbers.Real, None, None, closed="both"), "array-like"],
        "max_value": [None, Interval(numbers.Real, None, None, closed="both"), "array-like"],
        "keep_empty_features": ["boolean"],
        "add_indicator": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, density=None, *, sample_posterior=False, n_draws=20, min_value=-np.inf,
                 max_value=np.inf, keep_empty_features=False, add_indicator=False,
                 random_state=None):
        self.density = density
        self.sample_posterior = sample_posterior
        self.n_draws = n_draws
        self.min_value = min_value
        self.max_value = max_value
        self.keep_empty_features = keep_empty_features
        self.add_indicator = add_indicator
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit a clone of the density to X, missing values included.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training rows, NaN (or None) where a value is missing; what the
            density accepts.
        y : None
            Ignored.

        Returns
        -------
        self : DensityImputer
        """
        with input_attributes_restored_on_failure(self):
            return self._fit_validated(X)

    def _fit_validated(self, X):
        """``fit``'s work; on failure it may have set ``n_features_in_`` and
        ``feature_names_in_`` (only)."""
        values, missing = _table(X)
        validate_data(self, X, reset=True, skip_check_array=True)
        lower, upper = _limits(self.min_value, self.max_value, values.shape[1])
        kept = self._observed_columns(missing)
        X_kept, values_kept = _columns(X, values, kept)
        density = self._make_density().fit(X_kept)
        is_categorical = np.zeros(values.shape[1], dtype=bool)
        is_categorical[kept] = _non_numeric_columns(X_kept, values_kept)
        marked = getattr(density, "is_categorical_", None)
        if marked is not None:
            marked = np.asarray(marked, dtype=bool)
            if marked.shape != (len(kept),):
                raise ValueError(
                    f"The density's is_categorical_ has shape {marked.shape}; expected one "
                    f"flag per feature, ({len(kept)},).")
            is_categorical[kept] |= marked
        indicator = None
        if self.add_indicator:
            indicator = MissingIndicator(error_on_new=False).fit(_nan_where(missing))
        self.density_ = density
        # A fitted imputer answers as it was fitted, whatever set_params does since.
        self._transform_options = (self.sample_posterior, self.n_draws, self.random_state)
        self._limits = lower[kept], upper[kept]
        self._kept, self._keep_empty = kept, self.keep_empty_features
        # A conditional mean is an estimate, not a draw: its seed is fixed
        # here, so that transform answers a row alike at every call.
        self._mean_seed = int(check_random_state(self.random_state).randint(
            np.iinfo(np.int32).max))
        self.is_categorical_ = is_categorical
        self.indicator_ = indicator
        self._text_table = values_kept.dtype == object
        return self

    def _observed_columns(self, missing):
        """The indices of the columns with an observed value; a warning
        names the others unless ``keep_empty_features``, and a table with
        none is refused."""
        empty = missing.all(axis=0) if len(missing) else np.zeros(missing.shape[1], dtype=bool)
        if empty.all():
            raise ValueError("Every column of X is missing in every row: there is nothing "
                             "to fit a density to.")
        if empty.any() and not self.keep_empty_features:
            names = getattr(self, "feature_names_in_", np.arange(len(empty)))
            warnings.warn(
                f"Skipping features without any observed values: {names[empty].tolist()}. "
                "The density needs an observed value of a column to fill it; "
                "keep_empty_features=True keeps them, filled with 0.", UserWarning)
        return np.flatnonzero(~empty)

    def _make_density(self):
        if self.density is not None:
            return clone(self.density)
        from .nce import NCEDensity

        seed = self.random_state
        if seed is not None and not isinstance(seed, numbers.Integral):
            seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
        return NCEDensity(random_state=seed)

    def transform(self, X):
        """Fill in the missing values of X from the density's conditional.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, `n_features_in_`)
            Rows to complete, NaN (or None) where a value is missing.

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features_out)
            X with its missing values filled: float64 when all its columns
            are numeric, object otherwise; the observed entries exactly as
            given. With ``add_indicator``, the indicator columns follow.
            Or the container ``set_output`` asks for (its pandas DataFrame
            with a dtype per column).
        """
        check_is_fitted(self, "density_")
        all_values, all_missing = _table(X)
        validate_data(self, X, reset=False, skip_check_array=True)
        kept = getattr(self, "_kept", None)  # None: pickled before it was kept
        kept = np.arange(all_values.shape[1]) if kept is None else kept
        X_all = X
        X, values = _columns(X_all, all_values, kept)
        missing = all_missing[:, kept]
        if getattr(self, "_text_table", False) and values.dtype != object:
            values = values.astype(object)  # its text cells are all missing here
        with warnings.catch_warnings():  # the check above has warned of X's feature names
            warnings.filterwarnings("ignore", message="X (does not have valid|has) feature names")
            if isinstance(self.density_, TorchEstimator):
                # Its own checks of what sample_conditional takes, on every row.
                self.density_._conditional_inputs(X, None)
            is_categorical = self.is_categorical_[kept] | _non_numeric_columns(X, values)
            rows = np.flatnonzero(missing.any(axis=1))
            if len(rows):
                X_rows = _safe_indexing(X, rows, axis=0) if len(rows) < len(values) else X
                values[rows] = self._within_limits(
                    self._filled(X_rows, values[rows], missing[rows], is_categorical),
                    missing[rows], is_categorical)
        if getattr(self, "_keep_empty", False) and len(kept) < all_values.shape[1]:
            # The empty columns back, as scikit-learn's imputers keep them: 0 where missing.
            full = np.where(all_missing, 0, all_values).astype(values.dtype)
            full[:, kept] = values
            X, values = X_all, full
        if self.indicator_ is not None:
            values = np.hstack([values, self.indicator_.transform(_nan_where(all_missing))])
        frame = hasattr(X, "columns") and hasattr(X, "dtypes")
        if ((values.dtype == object or frame)
                and _get_output_config("transform", self)["dense"] == "pandas"):
            # One dtype per column, not object (or float64) throughout: X's
            # own where the filled values allow (a categorical's categories
            # and order, pandas' nullable dtypes, an integer column's), else,
            # and for X's object columns (pandas' dtype for any column that
            # held None), float64 for numbers, bool for flags, str for text.
            import pandas as pd

            filled = pd.DataFrame(values, index=X.index if frame else None).infer_objects()
            dtypes = [inferred if given == object else given
                      for given, inferred in zip(getattr(X, "dtypes", []), filled.dtypes)]
            return _in_fitted_dtypes(filled, dtypes)
        return values

    def _filled(self, X, values, missing, is_categorical):
        """``values`` (the rows of X as an array) with their ``missing``
        entries filled: one draw of ``density_.sample_conditional`` with
        ``sample_posterior``, else its ``conditional_mean`` where it has
        one, else the mean (numeric columns) or the most frequent
        (categorical columns) of ``n_draws`` draws. Each call of
        ``sample_conditional`` gets a seed drawn from ``random_state`` when
        it is made; ``conditional_mean`` the seed drawn at fit."""
        sample_posterior, n_draws, random_state = self._transform_options
        random_state = check_random_state(random_state)

        def seed():
            return random_state.randint(np.iinfo(np.int32).max)

        if sample_posterior:
            return np.where(missing, self._draw(X, values, seed()), values)
        if hasattr(self.density_, "conditional_mean"):
            mean_seed = getattr(self, "_mean_seed", None)  # None: pickled before it was kept
            return np.where(missing, self._draw(
                X, values, seed() if mean_seed is None else mean_seed, "conditional_mean"), values)
        # Held at once: the running sum, one draw and the filled copy (plus
        # the counts of the categorical cells, below that for few categories);
        # drawn in all: n_draws draws, the cost refused beyond reach.
        refuse_beyond_memory(
            max(n_draws, 3) * values.size * 8,
            f"Averaging {n_draws:,} conditional draws of {values.shape[0]:,} rows x "
            f"{values.shape[1]:,} features",
            "Lower n_draws, transform fewer rows at a time, or set sample_posterior=True.")
        numeric = np.flatnonzero(~is_categorical)
        categorical = np.flatnonzero(is_categorical)
        total = np.zeros((values.shape[0], len(numeric)))
        votes = [_Votes(np.flatnonzero(missing[:, j])) for j in categorical]
        for _ in range(n_draws):
            draw = self._draw(X, values, seed())
            total += draw[:, numeric].astype(np.float64)
            for j, column_votes in zip(categorical, votes):
                column_votes.add(draw[column_votes.rows, j])
        filled = values.copy()
        filled[:, numeric] = np.where(missing[:, numeric], total / n_draws, values[:, numeric])
        for j, column_votes in zip(categorical, votes):
            filled[column_votes.rows, j] = column_votes.most_frequent()
        return filled

    def _within_limits(self, filled, missing, is_categorical):
        """``filled`` with each filled cell of a numeric column moved into
        the bounds fitted from ``min_value`` and ``max_value``."""
        lower, upper = getattr(self, "_limits", (None, None))  # None: pickled before them
        if lower is None:
            return filled
        for j in np.flatnonzero(~is_categorical & (np.isfinite(lower) | np.isfinite(upper))):
            rows = missing[:, j]
            filled[rows, j] = np.clip(filled[rows, j].astype(np.float64), lower[j], upper[j])
        return filled

    def _draw(self, X, values, seed, method="sample_conditional"):
        """One ``sample_conditional`` (or ``conditional_mean``) of X, as an
        array of ``values``' dtype."""
        draw = getattr(self.density_, method)(X, random_state=int(seed))
        if hasattr(draw, "to_numpy"):
            draw = draw.to_numpy(dtype=values.dtype)
        draw = np.asarray(draw, dtype=values.dtype)
        name = type(self.density_).__name__
        if draw.shape != values.shape:
            raise ValueError(f"{name}.sample_conditional returned shape {draw.shape} for X of "
                             f"shape {values.shape}.")
        if missing_cells(draw[missing_cells(values)]).any():
            raise ValueError(f"{name}.sample_conditional left missing values in X unfilled.")
        return draw

    def get_feature_names_out(self, input_features=None):
        """The input feature names, then ``missingindicator_<name>`` for the
        indicator's columns.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input feature names; None means ``feature_names_in_``, or
            ``x0, x1, ...`` when fit saw no names.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self, "n_features_in_")
        names = _check_feature_names_in(self, input_features)
        kept = getattr(self, "_kept", None)
        out = names if kept is None or getattr(self, "_keep_empty", False) else names[kept]
        if getattr(self, "indicator_", None) is None:
            return out
        return np.concatenate([out, self.indicator_.get_feature_names_out(names)])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        if self.density is None:
            from .nce import NCEDensity

            tags.non_deterministic = get_tags(NCEDensity()).non_deterministic
        else:
            tags.non_deterministic = get_tags(self.density).non_deterministic
        return tags


def _limits(min_value, max_value, n_features):
    """``(lower, upper)``: float64 arrays of ``n_features`` bounds from
    ``min_value`` and ``max_value`` (a number for every feature, one per
    feature, or None for none), refused where a lower bound exceeds its
    upper one."""
    bounds = []
    for name, value, default in (("min_value", min_value, -np.inf),
                                 ("max_value", max_value, np.inf)):
        value = np.asarray(default if value is None else value, dtype=np.float64)
        if value.ndim == 0:
            value = np.full(n_features, float(value))
        if value.shape != (n_features,) or np.isnan(value).any():
            raise ValueError(f"{name} must be a number or {n_features} numbers, one per feature, "
                             f"without NaN; got {value.tolist()!r}.")
        bounds.append(value)
    lower, upper = bounds
    if np.any(lower > upper):
        j = int(np.argmax(lower > upper))
        raise ValueError(f"min_value exceeds max_value for feature {j} ({lower[j]:g} > "
                         f"{upper[j]:g}).")
    return lower, upper


class _Votes:
    """Counts of the values drawn for some cells of one categorical column."""

    def __init__(self, rows):
        self.rows = rows
        self.index = {}  # value -> column of counts, in the order first drawn
        self.values = []
        self.counts = np.zeros((len(rows), 0), dtype=np.int64)

    def add(self, drawn):
        codes = np.fromiter((self._code(value) for value in drawn), dtype=np.int64,
                            count=len(drawn))
        new = len(self.values) - self.counts.shape[1]
        if new:
            self.counts = np.pad(self.counts, ((0, 0), (0, new)))
        np.add.at(self.counts, (np.arange(len(drawn)), codes), 1)

    def _code(self, value):
        if value not in self.index:
            self.index[value] = len(self.values)
            self.values.append(value)
        return self.index[value]

    def most_frequent(self):
        """The most frequent value of each cell; ties go to the value drawn first."""
        if not len(self.rows):
            return np.empty(0)
        chosen = np.empty(len(self.rows), dtype=object)
        chosen[:] = [self.values[code] for code in self.counts.argmax(axis=1)]
        return chosen


def _table(X):
    """X as a 2-D array (float64 when numeric, else object) with every
    missing value as NaN, and the boolean mask of the missing values. A
    DataFrame is read column by column as it is (check_array would cast
    every column to float as soon as one is a nullable integer)."""
    if hasattr(X, "columns") and hasattr(X, "dtypes"):
        numeric = all(getattr(dtype, "kind", "O") in "iuf" for dtype in X.dtypes)
        values = (X.to_numpy(dtype=np.float64, na_value=np.nan) if numeric
                  else X.astype(object).to_numpy())
    else:
        values = check_array(X, dtype=None, ensure_all_finite="allow-nan")
    if values.dtype.kind in "biuf":
        values = values.astype(np.float64)
        return values, np.isnan(values)
    values = values.astype(object)
    missing = missing_cells(values)
    values[missing] = np.nan
    if numbers_only(values):  # numbers with None for the missing ones
        values = values.astype(np.float64)
    return values, missing


def _columns(X, values, kept):
    """``(X, values)`` with only the columns ``kept`` (X's own container)."""
    if len(kept) == values.shape[1]:
        return X, values
    return _safe_indexing(X, kept, axis=1), values[:, kept]


def _non_numeric_columns(X, values):
    """Columns that cannot be averaged: a DataFrame's columns of non-numeric
    dtype (categories, strings, booleans), or in an object array those with
    an observed value that is not a number."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and hasattr(X, "columns"):
        return np.array([getattr(dtype, "kind", "O") not in "iuf" for dtype in dtypes])
    if values.dtype != object:
        return np.zeros(values.shape[1], dtype=bool)
    return ~np.frompyfunc(is_number, 1, 1)(values).astype(bool).all(axis=0)


def _nan_where(missing):
    """A float array, NaN where ``missing``: what MissingIndicator reads."""
    return np.where(missing, np.nan, 0.0)
