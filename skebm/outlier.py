"""Novelty and outlier detection from any density estimator."""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.model_selection import KFold, check_cv
from sklearn.utils import _safe_indexing, get_tags
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._checks import input_attributes_restored_on_failure
from ._table import UnseenCategoryError, blanked, missing_cells

__all__ = ["DensityOutlierDetector"]

#: Training rows kept (evenly spaced) for the thresholds of rows with missing
#: cells; each count of missing cells costs one scoring of them, on first use.
THRESHOLD_ROWS = 500
#: The score of a row with a category the density did not see in fit: it has
#: probability 0, but scikit-learn's metrics (``roc_auc_score``) refuse -inf.
UNSEEN_SCORE = np.finfo(np.float64).min


class DensityOutlierDetector(OutlierMixin, BaseEstimator):
    """Flag the rows a density finds unlikely: outlier detection from any density.

    Wraps an estimator with ``fit`` and ``score_samples`` (skebm's
    densities, :class:`~sklearn.neighbors.KernelDensity`,
    :class:`~sklearn.mixture.GaussianMixture`, ...) in scikit-learn's
    outlier-detector API. As in :class:`~sklearn.ensemble.IsolationForest`,
    the threshold ``offset_`` is the ``contamination`` quantile of the
    training rows' log-densities. Fit on clean rows, it detects novelties;
    fit on rows with outliers among them, ``contamination`` is the share you
    expect there. A flexible density scores its own training rows higher
    than new ones, so that threshold flags more than ``contamination`` of
    new inliers; with ``cv`` it is set on out-of-fold scores instead, as new
    rows will be scored. ``score_samples`` is the density's own, normalized
    or not: only the order of the rows matters.

    A row with missing cells (where the density takes them) scores the
    log-density of its observed cells, which is not comparable with a
    complete row's: fewer cells, fewer terms. Its threshold is therefore
    that of training rows missing as many cells: ``offset_`` moved by what
    blanking that many cells, drawn at random, does to the
    ``contamination`` quantile of about :data:`THRESHOLD_ROWS` complete
    training rows (a smaller table's rows each blanked several ways), once
    per count. Training rows with missing cells count toward ``offset_`` by
    the same shifts, each as a complete row's score would stand, so that
    ``contamination`` of each count of missing cells is flagged. The rows
    are scored as for ``offset_``: by the fitted density,
    or with ``cv`` by the clone that held each out (the clones are kept for
    this; an in-sample score of a blanked row keeps less of what the
    density learned of that row, and sets thresholds too low). Which cells
    are missing is not taken into account, only how many. A row with no
    observed cell has no evidence against it: its decision is 0, an
    inlier. A row with a category the density did not see in fit has
    probability 0 under it: it scores the lowest float,
    :data:`UNSEEN_SCORE` (finite, for scikit-learn's metrics), an outlier,
    where the density alone refuses it (:class:`~skebm.UnseenCategoryError`);
    so does a row the density itself scores -inf (``KernelDensity``'s
    compact kernels, far from every training row).

    Read more in the :ref:`User Guide <outlier_detection>`.

    Parameters
    ----------
    density : estimator with ``fit`` and ``score_samples``, default=None
        The density model. It is cloned at ``fit``; the fitted clone is
        ``density_``. ``score_samples`` should be a log-density (higher
        means more normal); a normalized one is not needed, only the order
        of the rows matters. None: ``NCEDensity()`` (seed it by passing
        ``NCEDensity(random_state=0)``), as :class:`~skebm.DensityImputer` does.
    contamination : float in (0, 0.5], default=0.01
        Expected share of outliers among the training rows: the quantile of
        their ``score_samples`` that becomes the threshold ``offset_``.
        There is no ``"auto"``: IsolationForest's fixed threshold belongs to
        its own score's scale, and a log-density has no such scale (it moves
        with the units and the number of features), so the share is stated.
    cv : int, cross-validation generator, iterable or None, default=None
        How the training rows are scored for the threshold. None: by the
        fitted density itself, as :class:`~sklearn.ensemble.IsolationForest`
        does (``contamination`` of the training rows is then predicted an
        outlier). Otherwise the splits of
        :func:`~sklearn.model_selection.check_cv`: each held-out part is
        scored by a clone of ``density`` fitted on the rest, which costs one
        more fit per split and makes ``contamination`` the share of *new*
        inliers predicted an outlier. An int k is k-fold over shuffled rows
        (a fixed shuffle, so a fit repeats): rows in an order (by class, by
        time) would otherwise leave each held-out part unlike the rows its
        clone saw, and the threshold far too low. The splits must hold out
        every row exactly once (k-fold, not ``ShuffleSplit``), from the rows
        alone (not ``StratifiedKFold`` or ``GroupKFold``, which need labels
        or groups).

    Attributes
    ----------
    density_ : estimator
        The fitted clone of ``density``.
    offset_ : float
        The threshold on ``score_samples`` of complete rows:
        ``decision_function(X) = score_samples(X) - offset_``, and rows with
        a negative decision are outliers (a row with missing cells has the
        threshold of its count of them, see above).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    sklearn.ensemble.IsolationForest : Outlier detection by random trees.
    sklearn.neighbors.LocalOutlierFactor : Outlier detection by local density.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.neighbors import KernelDensity
    >>> from skebm import DensityOutlierDetector
    >>> X = np.random.default_rng(0).normal(size=(500, 2))
    >>> detector = DensityOutlierDetector(KernelDensity(), contamination=0.02).fit(X)
    >>> float(np.mean(detector.predict(X) == -1))
    0.02
    >>> detector.predict([[0.0, 0.1], [6.0, -6.0]])
    array([ 1, -1])
    """

    _parameter_constraints = {
        "density": [None, HasMethods(["fit", "score_samples"])],
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
        "cv": [None, "cv_object"],
    }

    def __init__(self, density=None, *, contamination=0.01, cv=None):
        self.density = density
        self.contamination = contamination
        self.cv = cv

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the density to X and set the threshold from its training scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows.
        y : None
            Ignored.

        Returns
        -------
        self : DensityOutlierDetector
        """
        with input_attributes_restored_on_failure(self):
            return self._fit_validated(X)

    def _fit_validated(self, X):
        """``fit``'s work; on failure it may have set ``n_features_in_`` and
        ``feature_names_in_`` (only)."""
        X = self._validated(X, reset=True)
        prototype = self._density()
        density = clone(prototype).fit(X)
        counts = _missing(X).sum(1)
        kept = (_kept_rows(counts) if get_tags(prototype).input_tags.allow_nan else None)
        scorers = []  # with cv, (fold clone, positions of the kept rows it held out)
        if self.cv is None:
            scores = _log_densities(density, X)
        else:
            scores = np.empty(X.shape[0])
            for train, held_out in _held_out_once(_splits(self.cv), X):
                fold = clone(prototype).fit(_safe_indexing(X, train))
                scores[held_out] = _log_densities(fold, _safe_indexing(X, held_out))
                if kept is not None:
                    scorers.append((fold, np.flatnonzero(np.isin(kept, held_out))))
        if np.all(scores == UNSEEN_SCORE):
            raise ValueError(
                "Every held-out row has a category that the clone of its fold did not "
                "see in fit, so no threshold can be set from them: give fewer folds "
                "(cv), or drop the column of (nearly) unique categories.")
        memo = {"rows": None if kept is None else _safe_indexing(X, kept), "scorers": scorers,
                "percent": 100.0 * self.contamination, "shifts": {}}
        # Each training row's score as a complete row's would stand: less
        # the shift of its count of missing cells.
        observed = counts < X.shape[1]
        shifts = self._shifts(counts[observed], memo, density)
        offset = _quantile(scores[observed] - shifts, memo["percent"])
        self.density_ = density
        self.offset_ = offset
        self._threshold_memo = memo
        return self

    def _offsets(self, missing):
        """The threshold of each row, given where its cells are missing:
        ``offset_``, or that of its count of missing cells."""
        memo = getattr(self, "_threshold_memo", {"rows": None})  # None: pickled before it was
        return self.offset_ + self._shifts(missing.sum(1), memo, self.density_)

    def _shifts(self, counts, memo, density):
        """How far the threshold of a row missing ``counts`` cells (each
        fewer than all) lies from a complete row's: 0 for a complete row,
        else what blanking that many cells of each kept training row (drawn
        at random, seeded by the count) does to their quantile, made once
        per count. Each kept row is scored as ``offset_`` scored it: by the
        fitted ``density``, or with ``cv`` by the clone that did not see
        it."""
        shifts = np.zeros(len(counts))
        if memo["rows"] is None:
            return shifts
        rows = memo["rows"]
        # Without cv (or pickled before the fold clones were kept): in-sample.
        scorers = memo.get("scorers") or [(density, np.arange(len(rows)))]
        known = memo.setdefault("shifts", {})  # absent: pickled before shifts were kept

        def quantile(X):
            scores = np.empty(X.shape[0])
            for scorer, positions in scorers:
                scores[positions] = _log_densities(scorer, _safe_indexing(X, positions))
            return _quantile(scores, memo["percent"])

        for count in np.unique(counts[counts > 0]):
            if count not in known:
                if "complete" not in memo:
                    memo["complete"] = quantile(rows)
                n_rows, n_features = rows.shape
                ranks = np.random.RandomState(count).rand(n_rows, n_features).argsort(1).argsort(1)
                known[count] = quantile(blanked(rows, ranks < count)) - memo["complete"]
            shifts[counts == count] = known[count]
        return shifts

    def score_samples(self, X):
        """The fitted density's ``score_samples``: higher is more normal
        (:data:`UNSEEN_SCORE` for a row with a category not seen in fit).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "density_")
        return _log_densities(self.density_, self._validated(X, reset=False))

    def decision_function(self, X):
        """``score_samples(X) - offset_`` (a row with missing cells: less the
        threshold of its count of them; none observed: 0): negative for
        outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "density_")
        X = self._validated(X, reset=False)
        scores = _log_densities(self.density_, X)
        missing = _missing(X)
        observed = ~missing.all(1)
        decision = np.zeros(len(scores))
        decision[observed] = scores[observed] - self._offsets(missing[observed])
        return decision

    def predict(self, X):
        """+1 for the rows at or above the threshold (inliers), -1 below it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "density_")
        return np.where(self.decision_function(X) < 0, -1, 1)

    def _density(self):
        """``density``, or the default ``NCEDensity()`` where it is None."""
        if self.density is not None:
            return self.density
        from .nce import NCEDensity

        return NCEDensity()

    def _validated(self, X, *, reset):
        """X checked here, with what the wrapped density accepts, so that
        feature counts and names are checked whatever the density does; a
        density that takes tables (categories) gets the table as it is."""
        input_tags = get_tags(self._density()).input_tags
        if input_tags.categorical:
            if not hasattr(X, "columns"):  # shape and dtype checks; strings stay strings
                X = check_array(X, dtype=None, ensure_all_finite="allow-nan")
            validate_data(self, X, reset=reset, skip_check_array=True)
            return X
        try:
            return validate_data(
                self, X, reset=reset, accept_sparse=["csr", "csc"] if input_tags.sparse else False,
                ensure_all_finite="allow-nan" if input_tags.allow_nan else True)
        except ValueError as error:
            if "convert string" not in str(error):
                raise
            raise ValueError(
                f"X holds text ({error}), which {type(self._density()).__name__} does not take. "
                "Give a density that takes categorical columns (skebm's NCEDensity), or encode "
                "them first (a OneHotEncoder before DensityOutlierDetector in a Pipeline)."
            ) from error

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        density_tags = get_tags(self._density())
        tags.input_tags.sparse = density_tags.input_tags.sparse
        tags.input_tags.allow_nan = density_tags.input_tags.allow_nan
        tags.input_tags.positive_only = density_tags.input_tags.positive_only
        tags.non_deterministic = density_tags.non_deterministic
        return tags


def _missing(X):
    """Where X (numpy, scipy sparse or a DataFrame) has missing cells."""
    if hasattr(X, "tocsr"):
        return np.zeros(X.shape, dtype=bool)
    return missing_cells(np.asarray(X, dtype=object) if hasattr(X, "columns") else np.asarray(X))


def _kept_rows(counts):
    """Indices of the training rows kept for the thresholds of rows with
    missing cells, given each row's count of them: about
    :data:`THRESHOLD_ROWS` evenly spaced complete rows (all rows when fewer
    than a tenth of that are complete), each row of a smaller table
    repeated (to be blanked anew each time) up to that many."""
    candidates = np.flatnonzero(counts == 0)
    if len(candidates) < THRESHOLD_ROWS // 10:
        candidates = np.arange(len(counts))
    kept = candidates[::max(1, -(-len(candidates) // THRESHOLD_ROWS))]
    return np.tile(kept, max(1, THRESHOLD_ROWS // len(kept)))


def _log_densities(density, X):
    """``density.score_samples(X)`` as float64; a row of probability 0
    scores :data:`UNSEEN_SCORE`: one the density scores -inf (a compact
    kernel's far rows), or one with a category it did not see in fit, which
    it refuses (the others are then scored without it)."""
    try:
        return np.maximum(np.asarray(density.score_samples(X), dtype=np.float64), UNSEEN_SCORE)
    except UnseenCategoryError as error:
        scores = np.full(len(error.rows), UNSEEN_SCORE)
        seen = np.flatnonzero(~error.rows)
        if len(seen):
            scores[seen] = _log_densities(density, _safe_indexing(X, seen))
        return scores


def _quantile(scores, percent):
    """The ``percent`` percentile of ``scores``, rows of probability 0
    (:data:`UNSEEN_SCORE`) counted as the lowest (an interpolation from
    that score would overflow)."""
    seen = scores[scores > UNSEEN_SCORE]
    if 0 < len(seen) < len(scores):
        scores = np.maximum(scores, seen.min())
    return float(np.percentile(scores, percent))


def _held_out_once(splitter, X):
    """The (train, held-out) splits of ``splitter``, refused unless they
    hold out every row exactly once (a ShuffleSplit would leave some rows
    without a score), or that need labels or groups (the rows have none)."""
    try:
        splits = list(splitter.split(X))
    except (TypeError, ValueError) as error:  # StratifiedKFold's missing y, GroupKFold's groups
        raise ValueError(
            f"cv must split the rows alone, as KFold does: {type(splitter).__name__} needs "
            f"labels or groups ({error}), and an outlier detector's rows have none.") from error
    times = np.bincount(np.concatenate([held_out for _, held_out in splits]),
                        minlength=X.shape[0])
    if np.any(times != 1):
        raise ValueError(
            f"cv must hold out every row exactly once, as KFold does; its splits hold "
            f"out {np.sum(times == 0)} rows never and {np.sum(times > 1)} more than once.")
    return splits


def _splits(cv):
    """The splitter of the ``cv`` parameter: an int k is a shuffled k-fold."""
    if isinstance(cv, numbers.Integral):
        return KFold(cv, shuffle=True, random_state=0)
    return check_cv(cv)
