"""DensityOutlierDetector: scikit-learn's outlier-detector API over any density."""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.datasets import make_moons
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import (GridSearchCV, GroupKFold, KFold, ShuffleSplit,
                                     StratifiedKFold)
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skebm import DensityOutlierDetector, NCEDensity, UnseenCategoryError
from skebm.outlier import UNSEEN_SCORE

# The checks fit dozens of times on tiny data: the smallest NCEDensity that
# trains (a single Gaussian base, no per-feature maps to cross-validate).
QUICK_NCE = dict(hidden_layer_sizes=(16,), fourier_features=4, max_iter=3, base="gaussian",
                 marginals="none", n_importance_samples=1024, random_state=0)


@parametrize_with_checks([
    DensityOutlierDetector(GaussianMixture(random_state=0)),
    DensityOutlierDetector(KernelDensity(), contamination=0.1),
    DensityOutlierDetector(NCEDensity(**QUICK_NCE)),
])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def gaussian_rows():
    return np.random.default_rng(0).normal(size=(1000, 3))


@pytest.mark.parametrize("contamination", [0.01, 0.1, 0.5])
def test_offset_is_the_contamination_quantile(gaussian_rows, contamination):
    detector = DensityOutlierDetector(GaussianMixture(random_state=0),
                                      contamination=contamination).fit(gaussian_rows)
    scores = detector.score_samples(gaussian_rows)
    assert detector.offset_ == pytest.approx(np.percentile(scores, 100 * contamination))
    assert np.mean(detector.predict(gaussian_rows) == -1) == pytest.approx(contamination,
                                                                          abs=1e-3)
    np.testing.assert_allclose(detector.decision_function(gaussian_rows),
                               scores - detector.offset_)
    np.testing.assert_array_equal(detector.fit_predict(gaussian_rows),
                                  detector.predict(gaussian_rows))


def test_score_samples_are_the_wrapped_densitys(gaussian_rows):
    detector = DensityOutlierDetector(KernelDensity(bandwidth=0.5)).fit(gaussian_rows)
    alone = KernelDensity(bandwidth=0.5).fit(gaussian_rows)
    np.testing.assert_allclose(detector.score_samples(gaussian_rows[:50]),
                               alone.score_samples(gaussian_rows[:50]))
    assert not hasattr(detector.density, "tree_")  # the parameter was cloned, not fitted


@pytest.mark.parametrize("density", [
    GaussianMixture(random_state=0),
    NCEDensity(**{**QUICK_NCE, "max_iter": 20})])
def test_a_planted_far_row_is_flagged(gaussian_rows, density):
    X = np.vstack([gaussian_rows, [[8.0, -8.0, 8.0]]])
    detector = DensityOutlierDetector(density, contamination=0.01).fit(X)
    assert detector.predict(X)[-1] == -1
    assert np.argmin(detector.decision_function(X)) == len(X) - 1
    assert detector.predict([[0.0, 0.0, 0.0]])[0] == 1


def test_the_default_density_is_nce_density(gaussian_rows):
    """DensityOutlierDetector() works as IsolationForest() does, with no
    argument: a default NCEDensity (as DensityImputer's), the parameter
    itself left None."""
    X = np.vstack([gaussian_rows[:300], [[8.0, -8.0, 8.0]]])
    detector = DensityOutlierDetector(contamination=0.02)
    assert detector.get_params()["density"] is None
    detector.fit(X)
    assert type(detector.density_) is NCEDensity
    assert detector.density_.get_params() == NCEDensity().get_params()
    assert detector.density is None
    assert detector.predict(X)[-1] == -1


def test_tuned_in_a_pipeline_by_grid_search():
    """Two moons with 10% uniform outliers; GridSearchCV picks the KDE bandwidth
    by the ROC AUC of decision_function against +1/-1 labels (fit ignores them)."""
    rng = np.random.default_rng(0)
    inliers, _ = make_moons(400, noise=0.05, random_state=0)
    outliers = rng.uniform(inliers.min(axis=0) - 0.5, inliers.max(axis=0) + 0.5, size=(40, 2))
    order = rng.permutation(440)
    X = np.vstack([inliers, outliers])[order]
    y = np.repeat([1, -1], [400, 40])[order]
    pipe = make_pipeline(StandardScaler(),
                         DensityOutlierDetector(KernelDensity(), contamination=0.1))
    search = GridSearchCV(pipe, {"densityoutlierdetector__density__bandwidth": [0.1, 2.0]},
                          scoring="roc_auc", cv=3).fit(X, y)
    # A bandwidth of 2 standard deviations fills the gap between the moons,
    # where uniform outliers fall; 0.1 follows the moons.
    narrow, wide = search.cv_results_["mean_test_score"]
    assert narrow > 0.95 and wide < 0.8
    assert search.best_params_["densityoutlierdetector__density__bandwidth"] == 0.1
    assert np.mean(search.predict(X) == -1) == pytest.approx(0.1, abs=0.005)


@pytest.mark.parametrize("contamination", [0.0, 0.6, -0.1, "auto"])
def test_bad_contamination_is_a_clear_value_error(gaussian_rows, contamination):
    with pytest.raises(ValueError, match="'contamination' parameter .* must be"):
        DensityOutlierDetector(KernelDensity(), contamination=contamination).fit(gaussian_rows)


def test_density_without_score_samples_is_a_clear_value_error(gaussian_rows):
    with pytest.raises(ValueError, match="'density' parameter .* 'fit' and 'score_samples'"):
        DensityOutlierDetector(StandardScaler()).fit(gaussian_rows)


def test_unfitted_and_wrong_width_are_refused(gaussian_rows):
    detector = DensityOutlierDetector(KernelDensity())
    with pytest.raises(NotFittedError):
        detector.predict(gaussian_rows)
    detector.fit(gaussian_rows)
    with pytest.raises(ValueError, match="3 features"):
        detector.predict(gaussian_rows[:, :2])


def test_cv_sets_the_threshold_for_new_rows():
    """A narrow kernel density scores its training rows far above new rows:
    the training-quantile threshold flags most new inliers; the out-of-fold
    threshold flags about contamination of them."""
    rng = np.random.default_rng(0)
    X, X_new = rng.normal(size=(600, 4)), rng.normal(size=(2000, 4))
    plain = DensityOutlierDetector(KernelDensity(bandwidth=0.1), contamination=0.05).fit(X)
    assert np.mean(plain.predict(X_new) == -1) > 0.5
    crossed = DensityOutlierDetector(KernelDensity(bandwidth=0.1), contamination=0.05,
                                     cv=5).fit(X)
    assert np.mean(crossed.predict(X_new) == -1) == pytest.approx(0.05, abs=0.03)
    assert crossed.offset_ < plain.offset_
    # The same fitted density either way: only the threshold differs.
    np.testing.assert_array_equal(crossed.score_samples(X_new), plain.score_samples(X_new))


def test_an_int_cv_shuffles_rows_in_order():
    """Rows sorted by a feature: unshuffled folds hold out the ends no clone
    saw, and their threshold flags a tenth of what it should; cv=5 shuffles."""
    rng = np.random.default_rng(0)
    X, X_new = rng.normal(size=(600, 3)), rng.normal(size=(4000, 3))
    X = X[np.argsort(X[:, 0])]
    flagged = lambda cv: np.mean(DensityOutlierDetector(
        GaussianMixture(), contamination=0.05, cv=cv).fit(X).predict(X_new) == -1)
    assert flagged(KFold(5)) < 0.02
    assert flagged(5) == pytest.approx(0.05, abs=0.015)


def test_rows_with_missing_cells_get_the_threshold_of_their_count():
    """A row's score is the density of its observed cells: more cells, more
    terms. New inliers are flagged at about contamination whether complete
    or with cells missing, by a threshold per count of missing cells; no
    cell observed, no evidence."""
    rng = np.random.default_rng(0)
    X, X_new = rng.normal(size=(600, 3)), rng.normal(size=(2000, 3))
    detector = DensityOutlierDetector(NCEDensity(**QUICK_NCE), contamination=0.1).fit(X)
    last_two, any_two = X_new.copy(), X_new.copy()
    last_two[:, 1:] = np.nan
    any_two[np.arange(2000)[:, None], rng.random((2000, 3)).argsort(1)[:, :2]] = np.nan
    for rows in (X_new, last_two, any_two):
        assert np.mean(detector.predict(rows) == -1) == pytest.approx(0.1, abs=0.03)
    threshold = detector.score_samples(any_two) - detector.decision_function(any_two)
    np.testing.assert_allclose(threshold, threshold[0], rtol=1e-12)
    assert threshold[0] > detector.offset_ + 1  # two terms fewer
    mixed = np.vstack([X_new[:3], last_two[:3], np.full((1, 3), np.nan)])
    decision = detector.decision_function(mixed)
    np.testing.assert_array_equal(decision[:3], detector.decision_function(X_new[:3]))
    # (a missing cell's integral is estimated from draws common to every row)
    np.testing.assert_allclose(decision[3:6], detector.decision_function(last_two[:3]),
                               rtol=1e-6)
    assert decision[6] == 0.0 and detector.predict(mixed)[6] == 1


def test_a_category_not_seen_in_fit_is_an_outlier():
    """A row with a category the density never saw has probability 0: it
    scores the lowest float (finite, for scikit-learn's metrics) and is an
    outlier; the other rows score as they would alone. With cv, a held-out
    fold's category that its clone never saw counts as the lowest score,
    and the threshold stays finite; if every held-out row has one, no
    threshold can be set, and fit says so."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"x": rng.normal(size=300),
                         "kind": pd.Categorical(rng.choice(["a", "b"], 300))})
    detector = DensityOutlierDetector(NCEDensity(**QUICK_NCE), contamination=0.05).fit(rows)
    new = rows.head(4).assign(kind=pd.Categorical(["a", "zebra", "b", "zebra"]))
    scores = detector.score_samples(new)
    np.testing.assert_array_equal(scores[[1, 3]], UNSEEN_SCORE)
    np.testing.assert_allclose(scores[[0, 2]], detector.score_samples(rows.head(4))[[0, 2]],
                               rtol=1e-6)
    np.testing.assert_array_equal(detector.predict(new)[[1, 3]], [-1, -1])
    decision = detector.decision_function(new)
    assert np.all(np.isfinite(decision)) and decision[[1, 3]].max() < decision[[0, 2]].min()
    assert roc_auc_score([1, 0, 1, 0], decision) == 1.0
    with_rare = rows.assign(kind=rows.kind.cat.add_categories("rare"))
    with_rare.loc[:5, "kind"] = "rare"  # 6 rows: some folds' clones never see it
    cv = DensityOutlierDetector(NCEDensity(**QUICK_NCE), contamination=0.01,
                                cv=KFold(5)).fit(with_rare)
    assert np.isfinite(cv.offset_)
    unique = rows.assign(kind=pd.Categorical([f"id{i}" for i in range(300)]))
    with pytest.raises(ValueError, match="Every held-out row has a category"):
        DensityOutlierDetector(NCEDensity(**QUICK_NCE), cv=3).fit(unique)


def test_text_for_a_density_without_categories_is_refused_with_the_way_out():
    """KernelDensity takes numbers only: the detector says so, and what to do,
    where numpy's "could not convert string to float" said neither."""
    rows = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "firm": ["a", "b", "a", "b"]})
    with pytest.raises(ValueError, match=r"X holds text \(could not convert string to float: "
                                         r"'a'\), which KernelDensity does not take.*NCEDensity"):
        DensityOutlierDetector(KernelDensity()).fit(rows)


def test_a_value_too_far_for_float64_is_refused_by_the_density_and_an_outlier():
    """1e200 standard deviations out, a square overflows: the density scored
    it -inf, and with a missing cell in the row raised an IndexError deep in
    torch. Now it refuses the row, naming the column, and the detector
    flags it as it flags an unseen category."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"x": rng.normal(size=300), "y": rng.normal(size=300)})
    detector = DensityOutlierDetector(NCEDensity(**QUICK_NCE), contamination=0.05).fit(rows)
    new = pd.DataFrame({"x": [0.0, 1e200, 0.5], "y": [0.0, np.nan, 1e120]})
    for call in (detector.density_.score_samples, detector.density_.conditional_mean,
                 lambda X: detector.density_.sample_conditional(X, random_state=0)):
        with pytest.raises(UnseenCategoryError, match=r"Column 'x' holds 1e\+200 \(row 1\)"):
            call(new)
    np.testing.assert_array_equal(detector.score_samples(new), [
        detector.score_samples(new.head(1))[0], UNSEEN_SCORE, UNSEEN_SCORE])
    np.testing.assert_array_equal(detector.predict(new), [1, -1, -1])


def test_the_unseen_category_error_pickles_with_its_rows():
    """joblib's workers send errors back pickled."""
    error = pickle.loads(pickle.dumps(UnseenCategoryError("message", np.array([False, True]))))
    assert str(error) == "message" and error.rows.tolist() == [False, True]


def test_a_cv_that_does_not_hold_out_every_row_once_is_refused(gaussian_rows):
    with pytest.raises(ValueError, match="hold out every row exactly once"):
        DensityOutlierDetector(KernelDensity(), cv=ShuffleSplit(1, test_size=0.1,
                                                                random_state=0)).fit(gaussian_rows)
    # Splitters that need labels or groups get a clear error, not split()'s TypeError.
    for cv in (StratifiedKFold(3), GroupKFold(3)):
        with pytest.raises(ValueError, match=f"{type(cv).__name__} needs labels or groups"):
            DensityOutlierDetector(KernelDensity(), cv=cv).fit(gaussian_rows)


def test_a_densitys_own_minus_infinity_is_the_lowest_float():
    """KernelDensity's compact kernels score far rows -inf, which
    roc_auc_score refuses: the detector scores them UNSEEN_SCORE, as rows of
    probability 0, and flags them."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    new = np.vstack([rng.normal(size=(20, 2)), np.full((3, 2), 8.0)])
    truth = np.r_[np.zeros(20), np.ones(3)]
    detector = DensityOutlierDetector(KernelDensity(kernel="tophat", bandwidth=0.5),
                                      contamination=0.05).fit(X)
    assert np.isneginf(detector.density_.score_samples(new[-3:])).all()
    np.testing.assert_array_equal(detector.score_samples(new)[-3:], UNSEEN_SCORE)
    assert roc_auc_score(truth, -detector.decision_function(new)) > 0.9
    np.testing.assert_array_equal(detector.predict(new)[-3:], -1)


class _NormalCells(BaseEstimator):
    """The standard normal density of a row's observed cells: its marginal
    of them, exactly."""

    def fit(self, X, y=None):
        return self

    def score_samples(self, X):
        X = np.asarray(X, dtype=np.float64)
        return np.where(np.isnan(X), 0.0, -0.5 * X**2 - 0.5 * np.log(2 * np.pi)).sum(1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class _MemorizingDensity(_NormalCells):
    """:class:`_NormalCells`, plus 3 nats for each observed cell of a row
    seen in fit: an overfitting density, whose in-sample score of a row
    falls as cells are blanked faster than a new row's does."""

    def fit(self, X, y=None):
        self.seen_ = np.asarray(X, dtype=np.float64)
        return self

    def score_samples(self, X):
        X = np.asarray(X, dtype=np.float64)
        observed = ~np.isnan(X)
        matches = (X[:, None, :] == self.seen_[None]) | ~observed[:, None, :]
        memorized = matches.all(2).any(1)
        return super().score_samples(X) + 3.0 * observed.sum(1) * memorized


def test_training_rows_with_missing_cells_set_the_threshold_of_complete_rows():
    """offset_ is the threshold of complete rows even when the training rows
    miss cells: each training row counts as a complete row's score would
    stand (less the shift of its count). A quantile of the raw scores, whose
    incomplete rows score higher (fewer terms), flagged about 0.15 of new
    complete rows at contamination 0.1."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    X[rng.random(X.shape) < 0.25] = np.nan
    detector = DensityOutlierDetector(_NormalCells(), contamination=0.1).fit(X)
    assert np.mean(detector.predict(X) == -1) == pytest.approx(0.1, abs=0.02)
    X_new = rng.normal(size=(4000, 4))
    for count in (0, 1, 2):
        rows = X_new.copy()
        rows[np.arange(4000)[:, None], rng.random((4000, 4)).argsort(1)[:, :count]] = np.nan
        assert np.mean(detector.predict(rows) == -1) == pytest.approx(0.1, abs=0.02)


def test_with_cv_the_threshold_of_rows_with_missing_cells_is_out_of_fold():
    """With cv, a row missing k cells is held to a threshold moved by what
    blanking does to held-out scores, as offset_ is set on held-out scores.
    In-sample, blanking also takes away what the density memorized of the
    row, and new rows with missing cells were flagged far less than
    contamination."""
    rng = np.random.default_rng(0)
    X, X_new = rng.normal(size=(300, 4)), rng.normal(size=(3000, 4))
    detector = DensityOutlierDetector(_MemorizingDensity(), contamination=0.1, cv=5).fit(X)
    assert np.mean(detector.predict(X_new) == -1) == pytest.approx(0.1, abs=0.04)
    two_missing = X_new.copy()
    two_missing[np.arange(3000)[:, None], rng.random((3000, 4)).argsort(1)[:, :2]] = np.nan
    assert np.mean(detector.predict(two_missing) == -1) == pytest.approx(0.1, abs=0.04)


class _InterruptedDensity(KernelDensity):
    """A density whose fit is interrupted."""

    def fit(self, X, y=None, sample_weight=None):
        raise KeyboardInterrupt


def test_a_failed_fit_changes_nothing(gaussian_rows):
    """A failed first fit leaves the detector unfitted (NotFittedError, not
    an AttributeError); a failed refit, on another number of features,
    leaves the fitted one as it was, its feature names included."""
    import pandas as pd

    detector = DensityOutlierDetector(_InterruptedDensity())
    with pytest.raises(KeyboardInterrupt):
        detector.fit(gaussian_rows)
    assert not hasattr(detector, "n_features_in_")
    for method in (detector.predict, detector.decision_function, detector.score_samples):
        with pytest.raises(NotFittedError):
            method(gaussian_rows)
    named = pd.DataFrame(gaussian_rows, columns=["a", "b", "c"])
    detector.set_params(density=KernelDensity()).fit(named)
    before = detector.decision_function(named)
    with pytest.raises(KeyboardInterrupt):
        detector.set_params(density=_InterruptedDensity()).fit(gaussian_rows[:, :2])
    assert detector.n_features_in_ == 3
    np.testing.assert_array_equal(detector.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_array_equal(detector.decision_function(named), before)
