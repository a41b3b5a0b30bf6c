"""DensityImputer: scikit-learn's imputer API over any density's conditional draws.

Most tests use small stub densities defined here, whose conditionals are
known exactly (a Gaussian, a categorical column), so that what is tested is
the imputer's arithmetic and API, quickly; one smoke test runs a real skebm
density.
"""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted, validate_data

import skebm._runtime
from skebm import DensityImputer, NCEDensity, PCDRestrictedBoltzmann, ShortRunEBM

RHO = 0.9
COV = np.array([[1.0, RHO], [RHO, 1.0]])

#: Rows handed to the stubs' ``sample_conditional``, per call.
CALLS = []


class GaussianStub(BaseEstimator):
    """A Gaussian density with exact conditional draws. ``cov`` given: that
    zero-mean Gaussian, whatever the data; None: the mean and covariance of
    the complete training rows (of all rows, mean-filled, when fewer than
    two are complete). ``perturb`` moves every returned entry, the observed
    ones included, by that much; ``fail`` makes ``fit`` raise."""

    def __init__(self, cov=None, perturb=0.0, fail=False, random_state=None):
        self.cov = cov
        self.perturb = perturb
        self.fail = fail
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X, ensure_all_finite="allow-nan")
        if self.fail:
            raise RuntimeError("stub fit failed")
        if self.cov is not None:
            self.mean_ = np.zeros(X.shape[1])
            self.cov_ = np.asarray(self.cov, dtype=np.float64)
            return self
        complete = X[~np.isnan(X).any(axis=1)]
        if len(complete) < 2:
            complete = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
            complete = np.nan_to_num(complete)
        self.mean_ = complete.mean(axis=0)
        self.cov_ = np.atleast_2d(np.cov(complete.T, bias=True)) + 1e-3 * np.eye(X.shape[1])
        return self

    def sample_conditional(self, X, mask=None, *, random_state=None):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        CALLS.append(len(X))
        free = np.isnan(X) if mask is None else mask
        rng = check_random_state(random_state)
        out = X.copy()
        for pattern in np.unique(free, axis=0):
            rows = np.flatnonzero((free == pattern).all(axis=1))
            m, o = pattern, ~pattern
            if not m.any():
                continue
            S = self.cov_
            gain = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)]) if o.any() else np.zeros(
                (m.sum(), 0))
            mean = self.mean_[m] + (X[np.ix_(rows, o)] - self.mean_[o]) @ gain.T
            cov = S[np.ix_(m, m)] - gain @ S[np.ix_(o, m)]
            noise = rng.standard_normal((len(rows), m.sum())) @ np.linalg.cholesky(cov).T
            out[np.ix_(rows, m)] = mean + noise
        return out + self.perturb

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class CategoryStub(BaseEstimator):
    """Two independent columns: ``x`` ~ N(5, 1) and a category drawn with
    ``p`` from ``levels``. On arrays the levels are the codes 0., 1., 2.
    and ``is_categorical_`` marks column 1; on a DataFrame (columns ``x``,
    ``color``) the levels are strings and the draws come back as a
    DataFrame, as NCEDensity's will."""

    def __init__(self, p=(0.1, 0.8, 0.1)):
        self.p = p

    def fit(self, X, y=None):
        self.is_frame_ = hasattr(X, "columns")
        self.levels_ = ["red", "green", "blue"] if self.is_frame_ else [0.0, 1.0, 2.0]
        self.n_features_in_ = 2
        self.is_categorical_ = np.array([False, True])
        return self

    def sample_conditional(self, X, mask=None, *, random_state=None):
        rng = check_random_state(random_state)
        CALLS.append(len(X))
        if self.is_frame_:
            out = X.copy()
            out["color"] = out["color"].astype(object)  # any level, whatever X's dtype holds
            x, color = out["x"].isna().to_numpy(), out["color"].isna().to_numpy()
            out.loc[x, "x"] = rng.normal(5.0, 1.0, x.sum())
            out.loc[color, "color"] = rng.choice(self.levels_, color.sum(), p=self.p)
            return out
        out = np.array(X, dtype=np.float64)
        x, color = np.isnan(out[:, 0]), np.isnan(out[:, 1])
        out[x, 0] = rng.normal(5.0, 1.0, x.sum())
        out[color, 1] = rng.choice(self.levels_, color.sum(), p=self.p)
        return out


def gaussian_rows(n=2000, seed=0):
    return np.random.default_rng(seed).multivariate_normal([0, 0], COV, size=n)


def hide_second(X, share=0.5, seed=1):
    """X with column 1 NaN in ``share`` of the rows, and the mask."""
    missing = np.zeros(X.shape, dtype=bool)
    missing[:, 1] = np.random.default_rng(seed).uniform(size=len(X)) < share
    return np.where(missing, np.nan, X), missing


@parametrize_with_checks([
    DensityImputer(GaussianStub(), random_state=0),
    DensityImputer(GaussianStub(), sample_posterior=True, add_indicator=True, random_state=0),
])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_conditional_mean_is_the_gaussian_one_within_monte_carlo_error():
    X = gaussian_rows()
    X_missing, missing = hide_second(X)
    n_draws = 16
    filled = DensityImputer(GaussianStub(cov=COV), n_draws=n_draws,
                            random_state=0).fit(X).transform(X_missing)
    # The mean of n_draws draws of N(rho x0, 1 - rho^2): its error has this sd.
    error = (filled[:, 1] - RHO * X[:, 0])[missing[:, 1]]
    sd = np.sqrt((1 - RHO**2) / n_draws)
    assert abs(error.mean()) < 4 * sd / np.sqrt(len(error))
    assert error.std() == pytest.approx(sd, rel=0.1)  # n_draws draws averaged, not fewer
    assert np.abs(error).max() < 5 * sd


def test_sample_posterior_keeps_the_conditional_spread():
    X = gaussian_rows()
    X_missing, missing = hide_second(X)
    imputer = DensityImputer(GaussianStub(cov=COV), sample_posterior=True, random_state=0)
    error = (imputer.fit(X).transform(X_missing)[:, 1] - RHO * X[:, 0])[missing[:, 1]]
    assert error.var() == pytest.approx(1 - RHO**2, abs=0.03)
    assert abs(error.mean()) < 0.05


def test_observed_cells_bit_exact_and_complete_rows_not_drawn():
    X = np.random.default_rng(0).normal(size=(300, 4)) * np.pi
    missing = np.random.default_rng(1).uniform(size=X.shape) < 0.2
    missing[:100] = False
    X_missing = np.where(missing, np.nan, X)
    # The stub moves even the observed entries it returns: they must not leak.
    imputer = DensityImputer(GaussianStub(perturb=1e-9), n_draws=3, random_state=0).fit(X)
    CALLS.clear()
    filled = imputer.transform(X_missing)
    assert filled.dtype == np.float64 and filled.shape == X.shape
    assert not np.isnan(filled).any()
    np.testing.assert_array_equal(filled[~missing], X[~missing])
    assert CALLS == [int(missing.any(axis=1).sum())] * 3
    CALLS.clear()
    np.testing.assert_array_equal(imputer.transform(X[:50]), X[:50])  # nothing to draw
    assert CALLS == []


@pytest.mark.parametrize("sample_posterior", [False, True])
def test_filled_values_are_kept_within_min_value_and_max_value(sample_posterior):
    """As IterativeImputer's bounds: a filled numeric cell beyond one is set
    to it (bounds per feature or for all), observed cells and categorical
    columns are left as they are, and the bounds are the fitted ones."""
    X = gaussian_rows(400)
    X_missing, missing = hide_second(X)
    params = dict(sample_posterior=sample_posterior, n_draws=4, random_state=0)
    free = DensityImputer(GaussianStub(cov=COV), **params).fit(X).transform(X_missing)
    assert (free[missing] < 0).any() and (free[missing] > 0.5).any()  # the bounds bind
    imputer = DensityImputer(GaussianStub(cov=COV), min_value=[-np.inf, 0.0], max_value=0.5,
                             **params).fit(X)
    filled = imputer.transform(X_missing)
    np.testing.assert_array_equal(filled[missing], np.clip(free[missing], 0.0, 0.5))
    np.testing.assert_array_equal(filled[~missing], X[~missing])  # below 0 too
    imputer.set_params(min_value=-np.inf, max_value=np.inf)
    np.testing.assert_array_equal(imputer.transform(X_missing), filled)
    rows = np.column_stack([np.full(300, np.nan), np.full(300, np.nan)])
    observed = np.column_stack([np.full(300, 5.0), np.tile([0.0, 1.0, 2.0], 100)])
    codes = DensityImputer(CategoryStub(), max_value=1.0, **{**params, "n_draws": 1}).fit(
        observed).transform(rows)
    assert (codes[:, 0] == 1.0).all() and (codes[:, 1] == 2.0).any()  # x ~ N(5, 1); a code


@pytest.mark.parametrize("bounds, message", [
    (dict(min_value=[0.0, 1.0, 2.0]), "min_value must be a number or 2 numbers"),
    (dict(max_value=[np.nan, 1.0]), "max_value must be a number or 2 numbers"),
    (dict(min_value=1.0, max_value=[2.0, 0.5]), r"min_value exceeds max_value for feature 1"),
])
def test_bad_bounds_are_refused_at_fit_and_nothing_is_lost(bounds, message):
    X = gaussian_rows(50)
    imputer = DensityImputer(GaussianStub(), **bounds)
    with pytest.raises(ValueError, match=message):
        imputer.fit(X)
    assert not hasattr(imputer, "n_features_in_") and not hasattr(imputer, "density_")


def test_random_state_int_makes_transform_and_fit_transform_reproducible():
    X_missing, _ = hide_second(gaussian_rows(200))
    imputer = DensityImputer(GaussianStub(), n_draws=2, random_state=0)
    first = imputer.fit_transform(X_missing)
    np.testing.assert_array_equal(imputer.transform(X_missing), first)
    np.testing.assert_array_equal(clone(imputer).fit(X_missing).transform(X_missing), first)
    again = pickle.loads(pickle.dumps(imputer))
    np.testing.assert_array_equal(again.transform(X_missing), first)
    streaming = clone(imputer).set_params(random_state=np.random.RandomState(0)).fit(X_missing)
    assert not np.array_equal(streaming.transform(X_missing), streaming.transform(X_missing))


def test_add_indicator_columns_and_feature_names():
    pd = pytest.importorskip("pandas")
    X = np.random.default_rng(0).normal(size=(100, 3))
    missing = np.zeros(X.shape, dtype=bool)
    missing[::3, 0] = missing[1::4, 2] = True
    frame = pd.DataFrame(np.where(missing, np.nan, X), columns=["a", "b", "c"])
    imputer = DensityImputer(GaussianStub(), n_draws=2, add_indicator=True,
                             random_state=0).fit(frame)
    assert list(imputer.get_feature_names_out()) == [
        "a", "b", "c", "missingindicator_a", "missingindicator_c"]
    filled = imputer.transform(frame)
    assert filled.shape == (100, 5)
    np.testing.assert_array_equal(filled[:, 3:], missing[:, [0, 2]])
    # A column missing only at transform gets no indicator (as SimpleImputer).
    new = frame.copy()
    new.loc[0, "b"] = np.nan
    assert imputer.transform(new).shape == (100, 5)
    unnamed = clone(imputer).fit(frame.to_numpy())
    assert list(unnamed.get_feature_names_out()) == [
        "x0", "x1", "x2", "missingindicator_x0", "missingindicator_x2"]
    assert list(clone(imputer).set_params(add_indicator=False).fit(frame)
                .get_feature_names_out()) == ["a", "b", "c"]


@pytest.mark.parametrize("keep", [False, True])
def test_a_column_with_no_observed_value_is_left_out_or_kept_as_scikit_learns_imputers(keep):
    """As SimpleImputer: a column empty at fit is left out of the output,
    with a warning that names it (the density never sees it), or with
    keep_empty_features kept, its missing cells 0 and its observed ones as
    given; the indicator still marks it. The same output shape and names as
    SimpleImputer's; set_params after fit changes nothing."""
    pd = pytest.importorskip("pandas")
    X_missing, missing = hide_second(gaussian_rows(200))
    frame = pd.DataFrame({"a": X_missing[:, 0], "empty": np.nan, "b": X_missing[:, 1]})
    options = dict(keep_empty_features=keep, add_indicator=True)
    imputer = DensityImputer(GaussianStub(), n_draws=2, random_state=0, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filled = imputer.fit_transform(frame)
    skipped = [w for w in caught if "Skipping features without any observed values" in
               str(w.message)]
    assert len(skipped) == (0 if keep else 1)
    if not keep:
        assert "['empty']" in str(skipped[0].message)
    assert imputer.density_.n_features_in_ == 2
    peer = SimpleImputer(**options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = peer.fit_transform(frame)
    assert filled.shape == expected.shape == (200, 5 if keep else 4)
    assert list(imputer.get_feature_names_out()) == list(peer.get_feature_names_out())
    columns = list(imputer.get_feature_names_out())
    out = pd.DataFrame(filled, columns=columns)
    np.testing.assert_array_equal(out["a"], X_missing[:, 0])
    assert not np.isnan(out["b"]).any()
    np.testing.assert_array_equal(out["missingindicator_empty"], 1.0)
    if keep:
        np.testing.assert_array_equal(out["empty"], 0.0)
        seen = frame.assign(empty=3.5)
        assert (imputer.transform(seen)[:, 1] == 3.5).all()
    imputer.set_params(keep_empty_features=not keep)
    assert imputer.transform(frame).shape == filled.shape
    assert list(imputer.get_feature_names_out()) == columns
    assert list(imputer.set_output(transform="pandas").transform(frame).columns) == columns


def test_a_table_of_empty_columns_is_refused_and_nothing_is_lost():
    imputer = DensityImputer(GaussianStub()).fit(gaussian_rows(20))
    before = dict(vars(imputer))
    with pytest.raises(ValueError, match="Every column of X is missing in every row"):
        imputer.fit(np.full((10, 2), np.nan))
    assert vars(imputer).keys() == before.keys()
    assert all(vars(imputer)[name] is value for name, value in before.items())


def test_set_output_pandas_gives_a_named_frame():
    pd = pytest.importorskip("pandas")
    X_missing, missing = hide_second(gaussian_rows(100))
    frame = pd.DataFrame(X_missing, columns=["left", "right"], index=np.arange(100) + 7)
    imputer = DensityImputer(GaussianStub(), n_draws=2, add_indicator=True, random_state=0)
    out = imputer.set_output(transform="pandas").fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["left", "right", "missingindicator_right"]
    assert list(out.index) == list(frame.index)
    assert not out[["left", "right"]].isna().any().any()


def test_pipeline_cross_val_score_beats_simple_imputer():
    # y says whether x0 > x2; x0 is hidden in 30% of the rows, and x1 is a
    # noisy copy of it: the conditional mean recovers x0 from x1, the column
    # mean cannot (one linear model must then serve both kinds of rows).
    rng = np.random.default_rng(0)
    z = rng.normal(size=600)
    X = np.column_stack([z + 0.1 * rng.normal(size=600), z + 0.1 * rng.normal(size=600),
                         rng.normal(size=600)])
    y = (X[:, 0] > X[:, 2]).astype(int)
    X[rng.uniform(size=600) < 0.3, 0] = np.nan
    X[rng.uniform(size=600) < 0.1, 1] = np.nan

    def score(imputer):
        return cross_val_score(make_pipeline(imputer, LogisticRegression()), X, y, cv=5).mean()

    ours = score(DensityImputer(GaussianStub(), n_draws=5, random_state=0))
    assert ours > score(SimpleImputer()) + 0.02


def test_failed_fit_leaves_attributes_as_they_were():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(hide_second(gaussian_rows(50))[0], columns=["a", "b"])
    imputer = DensityImputer(GaussianStub(), add_indicator=True).fit(frame)
    before = dict(vars(imputer))
    imputer.set_params(density__fail=True)
    with pytest.raises(RuntimeError, match="stub fit failed"):
        imputer.fit(np.zeros((10, 3)))
    after = vars(imputer)
    assert after.keys() == before.keys()
    for name in ("n_features_in_", "feature_names_in_", "density_", "indicator_",
                 "is_categorical_"):
        assert after[name] is before[name]
    fresh = DensityImputer(GaussianStub(fail=True))
    with pytest.raises(RuntimeError, match="stub fit failed"):
        fresh.fit(frame)
    assert not [name for name in vars(fresh) if name.endswith("_")]


def test_categorical_columns_get_the_most_frequent_draw():
    X = np.column_stack([np.full(200, 1.5), np.zeros(200)])
    X[:100, 0] = np.nan
    X[50:150, 1] = np.nan
    imputer = DensityImputer(CategoryStub(), n_draws=40, random_state=0).fit(X)
    np.testing.assert_array_equal(imputer.is_categorical_, [False, True])
    filled = imputer.transform(X)
    np.testing.assert_array_equal(filled[50:150, 1], 1.0)  # the mode, never an average
    assert abs(filled[:100, 0].mean() - 5.0) < 4 / np.sqrt(40 * 100)
    one_draw = DensityImputer(CategoryStub(), sample_posterior=True, random_state=0).fit(X)
    drawn = one_draw.transform(X)[50:150, 1]
    assert set(drawn) <= {0.0, 1.0, 2.0} and len(set(drawn)) > 1


def test_string_categories_of_a_dataframe():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x": np.linspace(0, 1, 60),
                          "color": pd.Series(["red", "blue", "green"] * 20, dtype=object)})
    frame.loc[::4, "x"] = np.nan
    frame.loc[1::3, "color"] = None
    imputer = DensityImputer(CategoryStub(), n_draws=30, random_state=0).fit(frame)
    filled = imputer.transform(frame)
    assert filled.dtype == object and filled.shape == (60, 2)
    assert list(filled[1::3, 1]) == ["green"] * 20
    observed = frame["color"].notna().to_numpy()
    assert list(filled[observed, 1]) == list(frame["color"][observed])
    assert np.allclose(filled[::4, 0].astype(float), 5.0, atol=1.0)
    out = imputer.set_output(transform="pandas").transform(frame)
    assert list(out.columns) == ["x", "color"] and not out.isna().any().any()
    assert out["x"].dtype == np.float64 and list(out.index) == list(frame.index)
    assert list(out["color"]) == list(filled[:, 1])


def test_pandas_output_keeps_a_category_dtype_where_the_values_allow():
    """An ordered category column comes back in its dtype (it came back as
    text); where a filled value is not among the dtype's categories, it
    stays text rather than turning to NaN."""
    pd = pytest.importorskip("pandas")
    order = pd.CategoricalDtype(["red", "green", "blue"], ordered=True)
    frame = pd.DataFrame({"x": np.linspace(0, 1, 60),
                          "color": pd.Series(["red", "blue", "green"] * 20, dtype=order)})
    frame.loc[1::3, "color"] = np.nan
    imputer = DensityImputer(CategoryStub(), sample_posterior=True, random_state=0).fit(frame)
    imputer.set_output(transform="pandas")
    out = imputer.transform(frame)
    assert out["color"].dtype == order and not out.isna().any().any()
    narrow = frame.assign(color=frame["color"].cat.remove_categories("green"))
    out = imputer.transform(narrow)
    assert not out.isna().any().any() and "green" in set(out["color"])


def test_parameters_are_validated_and_memory_guarded(monkeypatch):
    X = gaussian_rows(50)
    with pytest.raises(InvalidParameterError, match="n_draws"):
        DensityImputer(GaussianStub(), n_draws=0).fit(X)
    with pytest.raises(InvalidParameterError, match="density"):
        DensityImputer(LogisticRegression()).fit(X)
    imputer = DensityImputer(GaussianStub(), random_state=0).fit(X)
    monkeypatch.setattr(skebm._runtime, "available_memory", lambda device: 1000)
    CALLS.clear()
    with pytest.raises(ValueError, match="conditional draws.*sample_posterior=True"):
        imputer.transform(hide_second(X)[0])
    assert CALLS == []  # refused before drawing


class UnfillingStub(GaussianStub):
    def sample_conditional(self, X, mask=None, *, random_state=None):
        return np.asarray(X, dtype=np.float64)


@pytest.mark.parametrize("sample_posterior", [False, True])
def test_a_density_that_leaves_cells_unfilled_is_an_error(sample_posterior):
    imputer = DensityImputer(UnfillingStub(), sample_posterior=sample_posterior, n_draws=2)
    with pytest.raises(ValueError, match="UnfillingStub.sample_conditional left missing"):
        imputer.fit_transform(hide_second(gaussian_rows(50))[0])


def test_default_density_is_a_seeded_nce_density():
    assert isinstance(DensityImputer(random_state=3)._make_density(), NCEDensity)
    assert DensityImputer(random_state=3)._make_density().random_state == 3
    assert DensityImputer().get_params()["density"] is None


def test_with_a_real_density():
    X = gaussian_rows(400)
    X_missing, missing = hide_second(X[:100])
    density = ShortRunEBM(hidden_layer_sizes=(16,), max_iter=2, random_state=0)
    filled = DensityImputer(density, n_draws=2, random_state=0).fit(X).transform(X_missing)
    np.testing.assert_array_equal(filled[~missing], X[:100][~missing])
    hidden = missing[:, 1]
    assert np.corrcoef(filled[hidden, 1], X[:100][hidden, 0])[0, 1] > 0.7


# The smallest NCEDensity that trains (as in test_outlier.py).
QUICK_NCE = dict(hidden_layer_sizes=(16,), fourier_features=4, max_iter=3, base="gaussian",
                 marginals="none", n_importance_samples=1024, random_state=0)


def test_with_nce_density_fitted_on_missing_values():
    X = gaussian_rows(400)
    X_missing, missing = hide_second(X, share=0.3)
    imputer = DensityImputer(NCEDensity(**QUICK_NCE), n_draws=4, random_state=0)
    filled = imputer.fit_transform(X_missing)
    np.testing.assert_array_equal(filled[~missing], X[~missing])
    hidden = missing[:, 1]
    # Its conditional mean follows rho * x0, closer than the column mean does.
    error = filled[hidden, 1] - X[hidden, 1]
    assert np.sqrt(np.mean(error**2)) < 0.6 < np.sqrt(np.mean(X[hidden, 1] ** 2))


@pytest.mark.parametrize("random_state", [0, None])
def test_a_rows_conditional_mean_does_not_depend_on_its_batch(assert_batch_free, random_state):
    """transform fills a row alike alone and in any batch, at every call
    (the density's conditional mean: its completions are common to every
    row, their seed drawn at fit; random_state=None drew one per call)."""
    X_missing, _ = hide_second(gaussian_rows(300), share=0.5)
    density = NCEDensity(**QUICK_NCE, early_stopping=False)
    imputer = DensityImputer(density, random_state=random_state).fit(X_missing)
    assert not imputer.density_.module_.energy.is_zero()
    assert_batch_free(imputer.transform, X_missing, rows=(1, 2, 3, -1))


def test_with_nce_density_on_a_dataframe_with_string_categories():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    species = rng.choice(["adelie", "gentoo"], 300)
    frame = pd.DataFrame({"size": rng.normal(size=300) + 4 * (species == "gentoo"),
                          "species": pd.Categorical(species)})
    frame.loc[rng.uniform(size=300) < 0.2, "species"] = np.nan
    frame.loc[rng.uniform(size=300) < 0.1, "size"] = np.nan
    imputer = DensityImputer(NCEDensity(**{**QUICK_NCE, "base": "gaussian_mixture"}),
                             n_draws=4, random_state=0).fit(frame)
    np.testing.assert_array_equal(imputer.is_categorical_, [False, True])
    filled = imputer.transform(frame)
    assert filled.dtype == object and not pd.isna(filled).any()
    hidden = frame["species"].isna().to_numpy()
    assert set(filled[hidden, 1]) <= {"adelie", "gentoo"}
    assert np.mean(filled[hidden, 1] == species[hidden]) > 0.9  # from the size, 4 sd apart


class MeanStub(GaussianStub):
    """A Gaussian stub that also offers its exact ``conditional_mean``."""

    def conditional_mean(self, X, mask=None, *, random_state=None):
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        out = X.copy()
        for row in out:
            free = np.isnan(row)
            if free.any() and (~free).any():
                gain = np.linalg.solve(self.cov_[~free][:, ~free], self.cov_[~free][:, free]).T
                row[free] = self.mean_[free] + gain @ (row[~free] - self.mean_[~free])
            elif free.any():
                row[free] = self.mean_[free]
        return out


def test_a_density_conditional_mean_is_used_when_it_has_one():
    X = gaussian_rows(400)
    X_missing, missing = hide_second(X)
    imputer = DensityImputer(MeanStub(cov=COV), random_state=0).fit(X)
    CALLS.clear()
    filled = imputer.transform(X_missing)
    assert CALLS == []  # no draws: the exact conditional mean
    hidden = missing[:, 1]
    np.testing.assert_allclose(filled[hidden, 1], RHO * X[hidden, 0], rtol=1e-12)
    imputer.set_params(sample_posterior=True)  # no effect until the next fit
    np.testing.assert_array_equal(imputer.transform(X_missing), filled)
    drawn = imputer.fit(X).transform(X_missing)
    assert len(CALLS) == 1 and np.std(drawn[hidden, 1] - RHO * X[hidden, 0]) > 0.2


TINY_NCE = dict(QUICK_NCE, max_iter=2)
TINY_SHORTRUN = dict(hidden_layer_sizes=(8,), max_iter=2, random_state=0)


class SeedsAsNeeded(np.random.RandomState):
    """A RandomState that refuses to draw more than a few seeds at once."""

    def randint(self, *args, size=None, **kwargs):
        assert size is None or np.prod(size) <= 8, f"{size} seeds drawn at once"
        return super().randint(*args, size=size, **kwargs)


@pytest.mark.parametrize("density, message", [
    (NCEDensity(**TINY_NCE), "Column 1 was numeric in fit"),
    (ShortRunEBM(**TINY_SHORTRUN), "could not convert string to float: 'abc'"),
])
def test_a_complete_row_is_validated_as_the_density_validates(density, message):
    X = np.random.default_rng(0).normal(size=(120, 3))
    imputer = DensityImputer(density, random_state=0).fit(X)
    X_new = X.astype(object)
    X_new[0, 0] = np.nan
    X_new[3, 1] = "abc"  # in a complete row, which is not drawn for
    with pytest.raises(ValueError, match=message):
        imputer.transform(X_new)


def test_an_unseen_category_in_a_complete_row_is_refused_before_any_draw():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"size": rng.normal(size=120),
                          "color": rng.choice(["red", "blue"], 120).astype(object)})
    imputer = DensityImputer(NCEDensity(**{**TINY_NCE, "base": "gaussian_mixture"}),
                             random_state=0).fit(frame)
    drawn = []
    imputer.density_.conditional_mean = lambda X, *args, **kwargs: drawn.append(X)
    new = frame.copy()
    new.loc[0, "size"] = np.nan
    new.loc[5, "color"] = "purple"
    with pytest.raises(ValueError, match="'color' has a category not seen in fit: 'purple'"):
        imputer.transform(new)
    assert drawn == []


def test_n_draws_out_of_reach_is_refused_before_drawing():
    X = np.random.default_rng(0).normal(size=(120, 3))
    X_missing = X.copy()
    X_missing[::4, 0] = np.nan
    rbm = PCDRestrictedBoltzmann(visible_units="gaussian", n_components=4, n_iter=2,
                                 random_state=0)  # no conditional_mean: the mean is n_draws draws
    imputer = DensityImputer(rbm, n_draws=10**9, random_state=SeedsAsNeeded(0)).fit(X)
    drawn = []
    imputer.density_.sample_conditional = lambda X, *args, **kwargs: drawn.append(X)
    with pytest.raises(ValueError, match=r"1,000,000,000 conditional draws of 30 rows x 3 "
                                         r"features would need about [0-9.]+ GiB"):
        imputer.transform(X_missing)
    assert drawn == []


def test_n_draws_is_not_paid_for_where_the_density_has_its_conditional_mean():
    X = np.random.default_rng(0).normal(size=(120, 3))
    X_missing = X.copy()
    X_missing[::4, 0] = np.nan
    imputer = DensityImputer(NCEDensity(**TINY_NCE), n_draws=10**9,
                             random_state=SeedsAsNeeded(0)).fit(X)
    filled = imputer.transform(X_missing)  # one seed, one conditional_mean call
    assert not np.isnan(filled).any()
    np.testing.assert_array_equal(filled[:, 1:], X[:, 1:])


def test_numbers_with_none_for_missing_come_back_as_float64():
    """Rows of numbers with None (JSON records) are numbers, as SimpleImputer reads them."""
    X = np.random.default_rng(0).normal(size=(120, 3))
    X[::4, 1] = np.nan
    imputer = DensityImputer(NCEDensity(**TINY_NCE), random_state=0).fit(X)
    filled = imputer.transform([[0.1, None, 0.2], [None, 0.5, 1.0]])
    assert filled.dtype == np.float64 and not np.isnan(filled).any()
    np.testing.assert_array_equal(filled, imputer.transform([[0.1, np.nan, 0.2],
                                                             [np.nan, 0.5, 1.0]]))


def test_a_batch_whose_text_cells_are_all_missing_gets_categories():
    """One incoming record with its only text cell missing: the column is
    text, as in fit, though no cell of the batch says so."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "k": rng.choice(["a", "b", "c"], 200)})
    frame.loc[::7, "x"] = np.nan
    frame.loc[::11, "k"] = np.nan
    imputer = DensityImputer(NCEDensity(**TINY_NCE), random_state=0).fit(frame)
    filled = imputer.transform(frame.iloc[[0]])  # x and k missing
    assert filled.dtype == object and filled[0, 1] in {"a", "b", "c"}
    filled = imputer.transform(frame.iloc[[11]])  # k missing, x observed
    assert filled[0, 0] == frame["x"].iloc[11] and filled[0, 1] in {"a", "b", "c"}


def test_pandas_output_keeps_the_frames_dtypes():
    """With set_output(transform="pandas"), a numeric frame's columns come
    back in their own dtypes where the filled values allow: pandas'
    nullable Float64 and a complete int64 column (both came back float64),
    and Int64 filled with conditional means (fractions) as float64."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=120),
                          "f": pd.array(rng.normal(size=120), dtype="Float64"),
                          "i": pd.array(rng.integers(0, 40, 120), dtype="Int64"),
                          "k": rng.integers(0, 50, 120)})
    frame.loc[[3, 9], "x"], frame.loc[[4, 8], "f"], frame.loc[[5, 6], "i"] = np.nan, None, None
    imputer = DensityImputer(NCEDensity(**TINY_NCE), random_state=0).set_output(transform="pandas")
    filled = imputer.fit_transform(frame)
    assert filled.dtypes.to_dict() == {"x": np.float64, "f": pd.Float64Dtype(), "i": np.float64,
                                       "k": np.int64}
    assert not filled.isna().any().any()
    np.testing.assert_array_equal(filled["k"], frame["k"])


@pytest.mark.parametrize("flags", ["bool", "object", "boolean"])
def test_a_bool_column_comes_back_bool(flags):
    """A bool column is categorical ("from_dtype"), so its cells are filled
    with True or False and, with set_output(transform="pandas"), it comes
    back of dtype bool: with NaN elsewhere (it came back float64, 0.0 and
    1.0) and as objects with None (filled with a mean such as 0.4); pandas'
    nullable boolean with NA comes back in its own dtype."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=120), "b": rng.random(120) < 0.4})
    frame.loc[3, "x"] = np.nan
    if flags != "bool":  # the bool column has missing cells of its own
        frame["b"] = frame["b"].astype(flags)
        frame.loc[[4, 7], "b"] = None
    imputer = DensityImputer(NCEDensity(**TINY_NCE), random_state=0).fit(frame)
    filled = imputer.set_output(transform="pandas").transform(frame)
    expected = pd.BooleanDtype() if flags == "boolean" else np.bool_
    assert filled.dtypes.to_dict() == {"x": np.float64, "b": expected}
    observed = frame["b"].notna()
    assert (filled["b"][observed] == frame["b"][observed].astype(bool)).all()


def test_a_transform_without_the_feature_names_warns_once():
    """Fitted on a frame, given an array: scikit-learn's warning comes once,
    from the imputer (it came three times, the density repeating it)."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=100), "y": rng.normal(size=100)})
    frame.loc[:9, "x"] = np.nan
    imputer = DensityImputer(NCEDensity(**TINY_NCE), random_state=0).fit(frame)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imputer.transform(frame.head(3).to_numpy())
    assert [str(w.message) for w in caught if "feature names" in str(w.message)] == [
        "X does not have valid feature names, but DensityImputer was fitted with feature names"]
