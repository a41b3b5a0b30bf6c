"""NCEDensity on tables: categorical columns, missing cells, conditionals."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from skebm import NCEDensity, ShortRunEBM, UnseenCategoryError
from skebm._mixture import CommonDraws, FreshDraws, fit_mixture
from skebm._nce_model import Cells
from skebm.base_density import GaussianMixtureDensity

QUICK = dict(hidden_layer_sizes=(32, 32), max_iter=30, n_importance_samples=20_000,
             random_state=0)
CATEGORIES = np.array(["a", "b", "c"], dtype=object)


def make_table(n_rows, seed):
    """Two continuous columns whose shape depends on a category: a parabola
    for "a", tilted Gaussians for "b" and "c"."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, n_rows, p=[0.5, 0.3, 0.2])
    x1 = rng.normal(size=n_rows)
    x2 = np.where(kind == 0, x1**2 - 1 + 0.3 * rng.normal(size=n_rows),
                  np.where(kind == 1, 2 + 0.5 * x1, -2 - 0.5 * x1) + 0.5 * rng.normal(size=n_rows))
    return pd.DataFrame({"x1": x1, "x2": 10 * x2, "kind": pd.Categorical(CATEGORIES[kind])})


@pytest.fixture(scope="module")
def table():
    return make_table(1500, 0), make_table(500, 1)


@pytest.fixture(scope="module")
def fitted(table):
    return NCEDensity(**QUICK).fit(table[0])


def test_columns_and_dependence_on_the_category(fitted, table):
    """The model sees the categories and uses them: it beats a Gaussian
    mixture of the continuous columns times the categories' frequencies."""
    train, test = table
    np.testing.assert_array_equal(fitted.is_categorical_, [False, False, True])
    assert list(fitted.categories_[0]) == ["a", "b", "c"]
    mixture = GaussianMixture(6, random_state=0).fit(train[["x1", "x2"]])
    frequency = train.kind.value_counts(normalize=True)
    independent = (mixture.score_samples(test[["x1", "x2"]])
                   + np.log(frequency[test.kind].to_numpy())).mean()
    assert fitted.score(test) > independent + 0.2


def test_mass_times_density_is_normalized(fitted, table):
    """The sum over categories of the 2-D integral of the density is 1."""
    train = table[0]
    grid_1 = np.linspace(train.x1.min() - 2, train.x1.max() + 2, 160)
    grid_2 = np.linspace(train.x2.min() - 20, train.x2.max() + 20, 160)
    g1, g2 = np.meshgrid(grid_1, grid_2, indexing="ij")
    cell = (grid_1[1] - grid_1[0]) * (grid_2[1] - grid_2[0])
    total = 0.0
    for category in CATEGORIES:
        rows = pd.DataFrame({"x1": g1.ravel(), "x2": g2.ravel(),
                             "kind": pd.Categorical([category] * g1.size, categories=CATEGORIES)})
        total += np.exp(fitted.score_samples(rows)).sum() * cell
    assert total == pytest.approx(1.0, abs=0.01)


def test_missing_cell_is_integrated_out(fitted, table):
    """log p(x1, kind) with x2 missing equals the log of the grid integral of
    p(x1, x2, kind) over x2, within the importance-sampling estimator's error."""
    train = table[0]
    grid_2 = np.linspace(train.x2.min() - 30, train.x2.max() + 30, 4000)
    for x1, category in [(0.3, "a"), (-1.0, "b"), (1.2, "c")]:
        rows = pd.DataFrame({"x1": x1, "x2": grid_2,
                             "kind": pd.Categorical([category] * len(grid_2), categories=CATEGORIES)})
        integral = np.log(np.exp(fitted.score_samples(rows)).sum() * (grid_2[1] - grid_2[0]))
        missing = pd.DataFrame({"x1": [x1], "x2": [np.nan],
                                "kind": pd.Categorical([category], categories=CATEGORIES)})
        assert fitted.score_samples(missing)[0] == pytest.approx(integral, abs=0.05)
    # A missing category sums the categories' probabilities.
    row = pd.DataFrame({"x1": [0.3], "x2": [5.0], "kind": pd.Categorical([np.nan], categories=CATEGORIES)})
    each = [fitted.score_samples(row.assign(kind=pd.Categorical([c], categories=CATEGORIES)))[0]
            for c in CATEGORIES]
    assert fitted.score_samples(row)[0] == pytest.approx(np.logaddexp.reduce(each), abs=0.05)


def test_samples_have_valid_categories_in_the_right_proportions(fitted, table):
    samples = fitted.sample(3000, random_state=0)
    assert isinstance(samples, pd.DataFrame) and list(samples.columns) == ["x1", "x2", "kind"]
    assert set(samples.kind) <= set(CATEGORIES)
    share = samples.kind.value_counts(normalize=True)
    for category, expected in zip(CATEGORIES, [0.5, 0.3, 0.2]):
        assert share[category] == pytest.approx(expected, abs=0.05)
    # Within category "a", x2/10 follows x1^2 - 1.
    a = samples[samples.kind == "a"]
    assert np.median(np.abs(a.x2 / 10 - (a.x1**2 - 1))) < 0.5


def test_gibbs_scores_every_category_of_a_column_in_few_calls(fitted, monkeypatch):
    """A Gibbs sweep scores each row with its categorical column set to each
    category, in calls of about GIBBS_ROWS rows (here 4 rows, so a
    category's copies of the 3 rows straddle calls): the scores are the
    model's log-density of each such row, and a sweep redraws only the free
    rows' categories."""
    import skebm._nce_model

    module = fitted.module_
    [(column, count)] = module._categorical_columns()
    U = module.base.sample(3, torch.Generator().manual_seed(0))
    U[:, column] = torch.tensor([0.0, 2.0, 1.0], dtype=U.dtype)
    monkeypatch.setattr(skebm._nce_model, "GIBBS_ROWS", 4)
    scores = module._category_log_densities(U, column, count)
    assert scores.shape == (3, count)
    for code in range(count):
        rows = U.clone()
        rows[:, column] = code
        torch.testing.assert_close(scores[:, code], module.latent_log_density(rows),
                                   rtol=1e-5, atol=1e-5)
    free = torch.zeros_like(U, dtype=torch.bool)
    free[1, column] = True
    swept = module._gibbs_categories(U, free, torch.Generator().manual_seed(0))
    torch.testing.assert_close(swept[[0, 2]], U[[0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(swept[1, :column], U[1, :column], rtol=0, atol=0)


def test_sample_conditional_keeps_known_cells_and_follows_the_model(fitted, table):
    test = table[1].copy()
    hidden = test.copy()
    rng = np.random.default_rng(0)
    hide_kind = rng.random(len(test)) < 0.5
    hidden.loc[hide_kind, "kind"] = np.nan
    hidden.loc[~hide_kind, "x2"] = np.nan
    completed = fitted.sample_conditional(hidden, random_state=0)
    np.testing.assert_array_equal(completed.x1.to_numpy(), test.x1.to_numpy())
    known = ~hide_kind
    assert (completed.kind[known] == test.kind[known]).all()
    np.testing.assert_array_equal(completed.x2[hide_kind].to_numpy(), test.x2[hide_kind].to_numpy())
    # The category is mostly determined by (x1, x2): far better than the base rate.
    assert (completed.kind[hide_kind] == test.kind[hide_kind]).mean() > 0.8
    # Drawn x2 given x1 and the category follows its curve.
    a = known & (test.kind == "a").to_numpy()
    assert np.median(np.abs(completed.x2[a] / 10 - (test.x1[a] ** 2 - 1))) < 0.5


def test_draws_come_back_in_the_fitted_dtypes():
    """A DataFrame's draws and completions keep its dtypes: a pandas
    category stays one, strings, booleans and counts too. A column of counts
    modelled as continuous is drawn with fractions, and stays float64."""
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"x": rng.normal(size=n),
                          "kind": pd.Categorical(rng.choice(["a", "b"], n)),
                          "name": rng.choice(["u", "v", "w"], n).astype(object),
                          "flag": rng.random(n) < 0.4,
                          "count": rng.poisson(3.0, n)})
    quick = {**QUICK, "max_iter": 2}
    model = NCEDensity(**quick).fit(frame)
    assert model.sample(50, random_state=0).dtypes.to_dict() == frame.dtypes.to_dict()
    hidden = frame.head(20).copy()
    hidden.loc[::2, "count"] = np.nan
    hidden.loc[1::2, "kind"] = np.nan
    completed = model.sample_conditional(hidden, random_state=0)
    assert completed.dtypes.to_dict() == frame.dtypes.to_dict()
    assert (completed["count"][1::2] == frame["count"][1:20:2]).all()
    continuous = NCEDensity(**quick, integer_features=None).fit(frame)
    drawn = continuous.sample(50, random_state=0)["count"]
    assert drawn.dtype == np.float64 and (drawn != np.round(drawn)).any()


def test_draws_beyond_a_small_integer_dtype_are_not_wrapped_around():
    """Draws of 128 in an int8 column and 256 in a uint8 one came back as
    -128 and 0 (numpy's cast wraps around): such a column stays as drawn."""
    from skebm._table import _in_fitted_dtypes

    drawn = pd.DataFrame({"level": [120.0, 128.0], "pix": [250.0, 255.0],
                          "wide": [256.0, 3.0]})
    kept = _in_fitted_dtypes(drawn.copy(), [np.dtype(np.int8), np.dtype(np.uint8),
                                            np.dtype(np.uint8)])
    assert kept["level"].tolist() == [120, 128] and kept["wide"].tolist() == [256, 3]
    assert kept["pix"].dtype == np.uint8 and kept["pix"].tolist() == [250, 255]


def test_fit_with_missing_cells_keeps_every_row(table):
    train = table[0].head(600).copy()
    rng = np.random.default_rng(1)
    for column in train.columns:
        train.loc[rng.random(len(train)) < 0.2, column] = np.nan
    model = NCEDensity(**{**QUICK, "max_iter": 5}).fit(train)
    scores = model.score_samples(train)
    assert np.isfinite(scores).all() and len(scores) == len(train)
    assert model.mean_[0] == pytest.approx(np.nanmean(train.x1))
    completed = model.sample_conditional(train, random_state=0)
    assert not completed.isna().any().any()


@pytest.mark.parametrize("estimator", [NCEDensity, ShortRunEBM])
def test_validation_keeps_its_rows_completions_and_scores_them_alike(table, estimator,
                                                                     monkeypatch):
    """Validation rows with missing cells: their completions, made once
    (KeptCompletions), score every epoch as the completions made again
    would; too many to keep, each epoch makes them again, to the same
    validation scores."""
    import skebm._missing
    from skebm._missing import KeptCompletions, missing_draws, observed_log_density
    from skebm._runtime import make_generator

    train = table[0].head(300).copy()
    settings = {**QUICK, "max_iter": 3}
    if estimator is ShortRunEBM:  # no categorical columns
        train, settings = train[["x1", "x2"]].copy(), dict(max_iter=3, random_state=0)
    rng = np.random.default_rng(2)
    for column in train.columns:
        train.loc[rng.random(len(train)) < 0.2, column] = np.nan
    model = estimator(**settings).fit(train)
    module = model._inference_module()
    Z = module.base.sample(50, make_generator(0, "cpu")).to(torch.float64)
    Z[torch.rand(Z.shape, generator=make_generator(1, "cpu")) < 0.3] = torch.nan
    Z[0] = torch.nan  # a row with no observed cell
    draws = missing_draws(Z, make_generator(2, "cpu"))
    with torch.no_grad():
        kept = KeptCompletions.made(module, Z, draws)
        assert kept is not None and len(kept.completed) == int(torch.isnan(Z).any(1).sum())
        torch.testing.assert_close(observed_log_density(module, Z, draws, kept),
                                   observed_log_density(module, Z, draws))
    history = [record["validation_score"] for record in model.history_]
    monkeypatch.setattr(skebm._missing, "KEPT_COMPLETION_BYTES", 0)
    again = estimator(**settings).fit(train)
    np.testing.assert_allclose([record["validation_score"] for record in again.history_],
                               history, rtol=1e-6)


def gaussian_only_model(X):
    """``(model, mean, covariance)``: an NCEDensity fitted to X whose energy
    is set to 0 and whose base is one Gaussian (of that mean and covariance,
    on the standardized rows), so that its scores are the Gaussian's."""
    model = NCEDensity(**{**QUICK, "max_iter": 1}, marginals="none", base="gaussian",
                       base_scale=1.0).fit(X)
    with torch.no_grad():
        model.module_.energy.layers[-1].weight.zero_()
        model.module_.energy.layers[-1].bias.zero_()
    model._log_partition_memo.pop("estimate", None)
    base = model.module_.base
    covariance = (base.cholesky[0] @ base.cholesky[0].T).double().cpu().numpy()
    return model, base.means[0].double().cpu().numpy(), covariance


def test_missing_values_of_a_mixture_only_model_are_exact():
    """A model whose energy is 0 scores a row with missing cells by the
    mixture's analytic marginal."""
    rng = np.random.default_rng(0)
    X = rng.multivariate_normal([0, 1, 2], [[1, 0.8, 0.3], [0.8, 1, 0.5], [0.3, 0.5, 2]], 400)
    model, mean, covariance = gaussian_only_model(X)
    rows = np.array([[0.5, np.nan, 1.0], [np.nan, np.nan, 3.0], [0.1, 0.2, 0.3]])
    for row, score in zip(rows, model.score_samples(rows)):
        seen = ~np.isnan(row)
        z = (row[seen] - model.mean_[seen]) / model.scale_[seen]
        expected = (multivariate_normal(mean[seen], covariance[np.ix_(seen, seen)]).logpdf(z)
                    - np.log(model.scale_[seen]).sum())
        assert score == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("by_row", [False, True])
def test_gaussian_observed_of_mixed_rows_is_each_rows_own(by_row):
    """Complete rows go apart from rows missing continuous cells (they have
    no block to condition on): each row's log-density, conditional mean and
    factors (the identity past its own missing block) are those it gets
    alone, with one mean per component or one per row and component."""
    from skebm._mixture import gaussian_observed

    rng = np.random.default_rng(0)
    means = torch.as_tensor(rng.normal(size=(2, 3)))
    if by_row:
        means = means + torch.as_tensor(rng.normal(size=(6, 2, 3)))
    A = rng.normal(size=(2, 3, 3))
    covariances = torch.as_tensor(A @ A.transpose(0, 2, 1) + np.eye(3))
    X = torch.as_tensor(rng.normal(size=(6, 3)))
    X[1, 0] = X[3, 1] = X[3, 2] = X[4, 2] = float("nan")
    log_density, conditional_mean, (_, factors) = gaussian_observed(X, means, covariances,
                                                                    with_missing=True)
    assert factors.shape == (6, 2, 2, 2)
    for i in range(6):
        density, mean, (_, own) = gaussian_observed(
            X[i:i + 1], means[i:i + 1] if by_row else means, covariances, with_missing=True)
        torch.testing.assert_close(log_density[i], density[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(conditional_mean[i], mean[0], rtol=1e-12, atol=1e-12)
        width = own.shape[2]
        torch.testing.assert_close(factors[i, :, :width, :width], own[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(factors[i, :, width:, width:],
                                   torch.eye(2 - width, dtype=X.dtype).expand(2, -1, -1))


def test_em_with_missing_cells_matches_the_complete_data_fit():
    """EM on rows with 10% of cells missing lands near the complete-data
    maximum likelihood, and with no cell missing equals it."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(-2, 1, (300, 3)), rng.normal(2, 0.5, (300, 3))])
    codes = torch.zeros(len(X), 0, dtype=torch.long)
    full = fit_mixture(torch.as_tensor(X), codes, [], 2, 1e-6, 0)
    holes = X.copy()
    holes[rng.random(X.shape) < 0.1] = np.nan
    gappy = fit_mixture(torch.as_tensor(holes), codes, [], 2, 1e-6, 0)
    order = lambda means: np.argsort(means[:, 0].numpy())
    np.testing.assert_allclose(gappy[1][order(gappy[1])], full[1][order(full[1])], atol=0.15)
    assert sorted(full[0].tolist()) == pytest.approx([0.5, 0.5], abs=1e-3)


def test_a_mixture_of_categories_alone_is_a_latent_class_model():
    """With no continuous column, EM fits the categories' probabilities
    alone (nothing for them to shift): two classes of three binary items
    with missing answers are found, and the probabilities of all eight
    answer patterns sum to 1."""
    from skebm._mixture import log_density

    rng = np.random.default_rng(0)
    yes = np.where(rng.random(3000)[:, None] < 0.5, [0.9, 0.8, 0.9], [0.1, 0.2, 0.1])
    codes = torch.as_tensor((rng.random((3000, 3)) < yes).astype(int))
    codes[torch.as_tensor(rng.random((3000, 3)) < 0.2)] = -1
    X = torch.zeros(3000, 0, dtype=torch.float64)
    parameters = fit_mixture(X, codes, [2, 2, 2], 2, 1e-6, 0)
    weights, means, _, log_probs, shifts = parameters
    assert means.shape == (2, 0) and shifts.shape == (2, 3, 0)
    assert sorted(weights.tolist()) == pytest.approx([0.5, 0.5], abs=0.03)
    np.testing.assert_allclose(np.sort(log_probs[:, :, 1].exp().numpy(), 0),
                               [[0.1, 0.2, 0.1], [0.9, 0.8, 0.9]], atol=0.04)
    patterns = torch.as_tensor(np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).reshape(3, -1).T)
    total = log_density(torch.zeros(8, 0, dtype=torch.float64), patterns, parameters).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)


def test_rows_with_no_observed_cell_teach_a_fit_nothing():
    """A row whose every cell is missing has probability 1 under any model:
    fit leaves it out (it would cost a sum over all 2**12 answer patterns
    here), so the model is the one fitted without it, and it scores 0. A fit
    left with too few rows is refused."""
    rng = np.random.default_rng(0)
    answers = pd.DataFrame((rng.random((200, 12)) < 0.5).astype(float))
    answers[rng.random(answers.shape) < 0.1] = np.nan
    empty = pd.DataFrame(np.full((5, 12), np.nan))
    model = NCEDensity(**{**QUICK, "max_iter": 3}).fit(answers)
    padded = NCEDensity(**{**QUICK, "max_iter": 3}).fit(
        pd.concat([empty, answers], ignore_index=True))
    # The same model to rounding: the two fits may run on different thread counts.
    np.testing.assert_allclose(padded.score_samples(answers), model.score_samples(answers),
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(padded.score_samples(empty), 0.0)
    with pytest.raises(ValueError, match=r"X has 1 row\(s\) with an observed cell; a fit "
                       "needs 2"):
        NCEDensity(**QUICK).fit(pd.concat([empty, answers.iloc[:1].fillna(1.0)]))


def test_location_model_with_missing_categories():
    """One component of a location model, c ~ Bernoulli(0.3) and x ~ N(2c, 1):
    EM with a fifth of the categories missing recovers the shift and the
    category's probability; a row missing its category draws it with its
    posterior given x, and a row missing x draws it around its category's
    mean."""
    rng = np.random.default_rng(0)
    codes = (rng.random(4000) < 0.3).astype(float)
    x = 2 * codes + rng.normal(size=4000)
    codes[rng.random(4000) < 0.2] = np.nan
    Z = torch.as_tensor(np.column_stack([x, codes]))
    mixture = GaussianMixtureDensity.fit_to(
        Z, categorical=torch.tensor([False, True]), n_categories=(2,)).double()
    assert float(mixture.shifts[0, 0, 0]) == pytest.approx(2.0, abs=0.1)
    assert float(mixture.category_log_probs[0, 0, 1].exp()) == pytest.approx(0.3, abs=0.02)
    assert float(mixture.cholesky[0, 0, 0]) == pytest.approx(1.0, abs=0.05)
    rows = torch.tensor([[1.5, np.nan], [np.nan, 1.0]], dtype=torch.float64)
    one = 0.3 * np.exp(-0.5 * 0.5**2)
    posterior = one / (one + 0.7 * np.exp(-0.5 * 1.5**2))
    # Each row's own numbers, or numbers common to the rows: the same law.
    for numbers in (FreshDraws(4000, torch.Generator().manual_seed(0)),
                    CommonDraws.drawn(4000, 2, torch.Generator().manual_seed(0))):
        draws = mixture.complete(mixture.conditionals(rows), numbers)
        assert float(draws[0, :, 1].mean()) == pytest.approx(posterior, abs=0.03)
        assert torch.all(draws[0, :, 0] == 1.5) and torch.all(draws[1, :, 1] == 1.0)
        assert float(draws[1, :, 0].mean()) == pytest.approx(2.0, abs=0.1)
        assert float(draws[1, :, 0].std()) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("product_adds", [0, 10**6])
@pytest.mark.parametrize("n_categories, dense_shifts, left_out", [
    ([], 512, []), ([3], 512, []), ([2, 7, 3], 512, []), ([3, 60, 1], 512, []),
    ([5, 40, 30], 512, []), ([5, 40, 30], 4, [2]), ([9, 4, 20, 3], 4, [0, 1])])
def test_location_fit_solves_the_weighted_least_squares(n_categories, dense_shifts, left_out,
                                                         product_adds, monkeypatch):
    """The M-step's means and shifts (the largest column eliminated through
    its diagonal block) are each component's weighted least squares of the
    rows on D = [1, category indicators], SHIFT_PSEUDO_ROWS pseudo-rows at 0
    behind every shift, solved here densely from the indicators; the rows'
    fitted means are D's product with the coefficients, for every component
    at once (the E-step's) and for one component a row (a draw's). The
    dense block's sums and the means made by lookups and by products of
    indicators alike (``product_adds``: 0, always lookups; 10**6, always
    products). Past ``dense_shifts`` (DENSE_SHIFTS) the widest columns but
    the widest of all are ``left_out`` of D, their shifts 0."""
    import skebm._mixture
    from skebm._mixture import (SHIFT_PSEUDO_ROWS, _located_means, _location_fit, _shift_index,
                                category_indicators, category_shifts, location_design)

    monkeypatch.setattr(skebm._mixture, "PRODUCT_ADDS_PER_LOOKUP", product_adds)
    monkeypatch.setattr(skebm._mixture, "DENSE_SHIFTS", dense_shifts)

    rng = np.random.default_rng(0)
    n, k, d = 400, 3, 2
    codes = torch.as_tensor(np.column_stack([rng.integers(0, c, n) for c in n_categories])
                            if n_categories else np.zeros((n, 0), dtype=int))
    responsibilities = torch.as_tensor(rng.random((n, k)))
    completed = torch.as_tensor(rng.normal(size=(n, k, d)))
    design = location_design(_shift_index(codes, n_categories), n_categories)
    means, shifts = _location_fit(responsibilities, completed, design, n_categories, 1e-15)
    # Each column's indicators, zero for a column left out: its shifts solve
    # to 0 there, held by their pseudo-rows alone.
    indicators = [np.ones((n, 1))] + [np.eye(c)[codes[:, j].numpy()][:, 1:] * (j not in left_out)
                                      for j, c in enumerate(n_categories)]
    D = np.hstack(indicators)
    for c in range(k):
        r = responsibilities[:, c].numpy()
        prior = np.diag([0.0] + [SHIFT_PSEUDO_ROWS] * (D.shape[1] - 1))
        solved = np.linalg.solve(D.T @ (r[:, None] * D) + prior,
                                 D.T @ (r[:, None] * completed[:, c].numpy()))
        np.testing.assert_allclose(means[c].numpy(), solved[0], atol=1e-10)
        np.testing.assert_allclose(shifts[c].numpy(), solved[1:], atol=1e-10)
        if n_categories:
            every = _located_means(_shift_index(codes, n_categories), means, shifts,
                                   category_indicators(codes, n_categories, torch.float64))
            np.testing.assert_allclose(every[:, c].numpy(), D @ solved, atol=1e-10)
    for j in left_out:
        start = sum(n_categories[:j]) - j
        assert torch.all(shifts[:, start:start + n_categories[j] - 1] == 0)
    if n_categories:
        own = torch.as_tensor(rng.integers(0, k, n))
        np.testing.assert_allclose(
            (means[own] + category_shifts(codes, n_categories, shifts, own)).numpy(),
            every[torch.arange(n), own].numpy(), atol=1e-12)


def test_category_sums_by_indicators_and_by_lookups_agree(monkeypatch):
    """The E-step's category log-likelihoods and the M-step's tallies, made
    by products of the rows' category indicators and by lookups of each
    column's category, against a sum written out: missing entries (-1)
    add 0 and spread by the component's probabilities; a probability of 0
    (-inf) gives -inf, not the NaN of 0 * -inf in a product."""
    import skebm._mixture
    from skebm._mixture import _category_log_likelihoods, _category_tallies, category_indicators

    rng = np.random.default_rng(0)
    n_categories, n, k = [3, 2, 5], 50, 4
    codes = np.column_stack([rng.integers(-1, c, n) for c in n_categories])
    log_probs = np.full((k, 3, 5), -np.inf)
    for j, c in enumerate(n_categories):
        log_probs[:, j, :c] = np.log(rng.dirichlet(np.ones(c), size=k))
    responsibilities = rng.random((n, k))
    expected_log = sum(np.where(codes[:, [j]] >= 0,
                                log_probs[:, j, np.maximum(codes[:, j], 0)].T, 0)
                       for j in range(3))
    codes_t, log_probs_t = torch.as_tensor(codes), torch.as_tensor(log_probs)
    indicators = category_indicators(codes_t, n_categories, torch.float64)
    assert indicators is not None
    for given in (indicators, None):
        np.testing.assert_allclose(
            _category_log_likelihoods(codes_t, log_probs_t, given).numpy(), expected_log,
            atol=1e-12)
        tallies = _category_tallies(torch.as_tensor(responsibilities), codes_t, n_categories,
                                    log_probs_t, given)
        for j, c in enumerate(n_categories):
            one_hot = (codes[:, [j]] == np.arange(c)).astype(float)
            missing = (codes[:, j] < 0).astype(float)
            expected = (one_hot.T @ responsibilities).T + (
                (missing @ responsibilities)[:, None] * np.exp(log_probs[:, j, :c]))
            np.testing.assert_allclose(tallies[j].numpy(), expected, atol=1e-12)
    log_probs[0, 0, 1] = -np.inf  # category 1 of the first column impossible in component 0
    with_zero = _category_log_likelihoods(codes_t, torch.as_tensor(log_probs), indicators)
    assert not torch.isnan(with_zero).any()
    assert torch.isneginf(with_zero[codes[:, 0] == 1, 0]).all()
    assert category_indicators(codes_t, [3, 2, 500], torch.float64) is None  # too wide
    monkeypatch.setattr(skebm._mixture, "INDICATOR_BYTES", 8 * n * 10 - 1)  # too large
    assert category_indicators(codes_t, n_categories, torch.float64) is None


def test_category_draws_follow_each_components_probabilities():
    """Categories drawn by the inverse distribution function: each
    component's frequencies, a category of probability 0 never drawn, a
    shorter column's padding never drawn."""
    from skebm._mixture import draw_categories

    probs = torch.tensor([[[0.5, 0.0, 0.5, 0.0], [0.9, 0.1, 0.0, 0.0]],
                          [[0.1, 0.2, 0.3, 0.4], [0.2, 0.8, 0.0, 0.0]]], dtype=torch.float64)
    log_probs = torch.log(probs)
    log_probs[:, 1, 2:] = -torch.inf  # the second column has two categories
    components = torch.tensor([0, 1]).repeat(20000)
    u = torch.rand(len(components), 2, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)
    codes = draw_categories(log_probs, components, u)
    for c in range(2):
        for j in range(2):
            share = np.bincount(codes[components == c, j].numpy(), minlength=4) / 20000
            np.testing.assert_allclose(share, probs[c, j].numpy(), atol=0.012)
    assert not (codes[components == 0, 0] == 1).any() and codes[:, 1].max() <= 1


def test_common_numbers_draw_each_components_categories_once():
    """With the same numbers for every row (scoring), the proposal draws a
    component's categories once and every row that takes that component at
    a draw gets them: the categories drawn row by row, from the same
    numbers, are the same."""
    from skebm._mixture import (COMMON_COMBINATIONS_SEED, CategoryProposal, _latin_hypercube,
                                draw_categories)

    generator = torch.Generator().manual_seed(0)
    n_categories, n_rows, n_draws = [3, 2, 5, 4], 6, 16
    log_probs = torch.full((3, 4, 5), -torch.inf, dtype=torch.float64)
    for j, count in enumerate(n_categories):
        log_probs[:, j, :count] = torch.log_softmax(
            torch.randn(3, count, generator=generator, dtype=torch.float64), 1)
    log_shares = torch.log_softmax(torch.randn(n_rows, 3, generator=generator,
                                               dtype=torch.float64), 1)
    proposal = CategoryProposal(log_shares, log_probs, None, n_draws)
    rows = torch.arange(n_rows).repeat_interleave(n_draws)
    codes = torch.randint(-1, 2, (n_rows, 4), generator=generator)[rows]
    drawn, _ = proposal.draw(rows, codes)
    u = _latin_hypercube(1, n_draws, 5, torch.Generator().manual_seed(COMMON_COMBINATIONS_SEED))
    u = u[0].repeat(n_rows, 1)
    components = torch.searchsorted(torch.cumsum(log_shares[rows].exp(), 1),
                                    u[:, :1].contiguous(), right=True).squeeze(1).clamp(max=2)
    one_by_one = torch.where(codes < 0, draw_categories(log_probs, components, u[:, 1:]), codes)
    assert torch.equal(drawn, one_by_one) and (drawn >= 0).all()


def test_repeated_draws_merge_into_one_row_each_with_their_weights_summed():
    """_merged keeps each (row, combination) once, in the order of sorted
    rows of codes, its copies' weights log-summed: as sorting the rows of
    codes gives it, also where the key's digits would pass 62 bits and are
    ranked on the way (columns of a million categories)."""
    from skebm._mixture import _merged, _row_logsumexp

    generator = torch.Generator().manual_seed(0)
    for counts in ([3] * 6, [10**6] * 6):
        rows = torch.randint(0, 5, (400,), generator=generator).sort().values
        codes = torch.randint(-1, 3, (400, 6), generator=generator)
        log_weights = torch.randn(400, generator=generator, dtype=torch.float64)
        merged_rows, merged_codes, merged_weights = _merged(rows, codes, log_weights, counts)
        unique, inverse = torch.unique(torch.cat([rows[:, None], codes], 1), dim=0,
                                       return_inverse=True)
        assert len(unique) < 400
        assert torch.equal(merged_rows, unique[:, 0]) and torch.equal(merged_codes, unique[:, 1:])
        torch.testing.assert_close(merged_weights,
                                   _row_logsumexp(log_weights[:, None], inverse, len(unique)))


def test_rows_missing_too_many_category_combinations_are_refused():
    """A row missing eight ten-valued categories would expand into 10^8
    rows: refused before any is made, with what to do, unless a proposal
    lets its combinations be drawn (:data:`COMBINATIONS_PER_ROW` of them,
    or the proposal's own count, each a complete row); two such columns are
    summed over exactly, and one of ten categories is drawn only where the
    proposal draws fewer than ten."""
    from skebm._mixture import COMBINATIONS_PER_ROW, CategoryProposal, expand_categories

    codes = torch.full((3, 8), -1)
    with pytest.raises(ValueError, match="combinations"):
        expand_categories(codes, [10] * 8)
    proposal = CategoryProposal.of_frequencies(codes, [10] * 8, torch.Generator())
    rows, drawn, log_weights = expand_categories(codes, [10] * 8, proposal=proposal)
    assert rows.tolist() == sorted(list(range(3)) * COMBINATIONS_PER_ROW)
    assert (drawn >= 0).all() and (drawn < 10).all()
    # Uniform draws from 10**8 combinations, each weighed 10**8 / n.
    np.testing.assert_allclose(log_weights.numpy(), np.log(1e8 / COMBINATIONS_PER_ROW))
    for n_draws in (16, 9, 10):
        proposal = CategoryProposal.of_frequencies(codes, [10] * 8, torch.Generator(), n_draws)
        rows, _, _ = expand_categories(codes, [10] * 8, proposal=proposal)
        assert rows.tolist() == sorted(list(range(3)) * n_draws)
        proposal = CategoryProposal.of_frequencies(codes[:, :1], [10], torch.Generator(), n_draws)
        rows, _, log_weights = expand_categories(codes[:, :1], [10], proposal=proposal)
        if n_draws < 10:  # drawn, the same combination drawn again merged
            assert len(rows) <= 3 * n_draws and (log_weights != 0).all()
        else:  # every one of the ten
            assert rows.tolist() == sorted(list(range(3)) * 10) and (log_weights == 0).all()
    rows, filled, log_weights = expand_categories(torch.tensor([[-1, 2, -1], [1, 0, 0]]),
                                                  [2, 3, 3])
    assert (log_weights == 0).all()
    assert rows.tolist() == [0] * 6 + [1]
    assert sorted(map(tuple, filled[:6].tolist())) == [(a, 2, b) for a in range(2)
                                                       for b in range(3)]
    assert filled[6].tolist() == [1, 0, 0]


def test_the_chosen_mixture_is_fitted_to_rows_that_expand_within_the_budget(monkeypatch):
    """Rows that expand by their missing categories into more than
    FIT_EXPANDED_ROWS are fitted by a random subset that stays within it
    (before, a fit of tens of thousands of such rows was refused after its
    search); rows within it are all fitted, and a default fit of a table
    past it completes."""
    import skebm.base_density as base_density
    from skebm._mixture import expanded_sizes

    rng = np.random.default_rng(0)
    n = 200
    codes = rng.integers(0, 10, (n, 3)).astype(float)
    codes[:150, :2] = np.nan  # 150 rows of 100 combinations, 50 complete
    x = rng.normal(size=(n, 1))
    x[:10] = np.nan  # no continuous entry: not expanded
    Z = torch.as_tensor(np.hstack([x, codes]))
    layout = base_density.TableLayout(np.array([False, True, True, True]), (10, 10, 10))
    sizes = expanded_sizes(Z[:, :1], torch.nan_to_num(Z[:, 1:], -1).long(), [10] * 3)
    assert sizes.tolist() == [1] * 10 + [100] * 140 + [1] * 50
    assert base_density._fit_rows(Z, layout, np.random.RandomState(0)) is Z
    monkeypatch.setattr(base_density, "FIT_EXPANDED_ROWS", 2_000)
    kept = base_density._fit_rows(Z, layout, np.random.RandomState(0))
    kept_sizes = expanded_sizes(kept[:, :1], torch.nan_to_num(kept[:, 1:], -1).long(),
                                [10] * 3)
    assert 2_000 - 100 < float(kept_sizes.sum()) <= 2_000  # as many as fit
    observed = kept[:, 0][~kept[:, 0].isnan()]
    positions = [int(np.flatnonzero(x[:, 0] == value)[0]) for value in observed.tolist()]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    table = pd.DataFrame({"x": x[:, 0], **{f"c{j}": pd.Categorical(codes[:, j])
                                           for j in range(3)}})
    model = NCEDensity(max_iter=2, random_state=0).fit(table)
    assert np.isfinite(model.score_samples(table)).all()


def _all_categorical_rows(n_rows=300, seed=0):
    """Rows of three categorical columns (2, 3 and 4 categories), a third
    of their entries missing, and no continuous column."""
    rng = np.random.default_rng(seed)
    n_categories = [2, 3, 4]
    codes = torch.as_tensor(np.column_stack([rng.integers(0, n, n_rows) for n in n_categories]))
    codes[torch.as_tensor(rng.random(codes.shape) < 0.3)] = -1
    return torch.zeros(n_rows, 0, dtype=torch.float64), codes, n_categories


def _mixed_rows(n_rows=400, seed=0):
    """Rows of two continuous columns, shifted by the categories of three
    categorical columns (2, 3 and 4 categories), a fifth of the categorical
    entries missing and a tenth of the rows missing both continuous ones."""
    _, codes, n_categories = _all_categorical_rows(n_rows, seed)
    rng = np.random.default_rng(seed + 1)
    complete = np.column_stack([rng.integers(0, n, n_rows) for n in n_categories])
    X = rng.normal(size=(n_rows, 2)) + np.column_stack([complete[:, 1], complete[:, 2] / 2])
    X[rng.random(n_rows) < 0.1] = np.nan
    codes = torch.as_tensor(np.where(rng.random(complete.shape) < 0.2, -1, complete))
    return torch.as_tensor(X), codes, n_categories


def _fully_expanded(X, codes, n_categories):
    """The rows expanded into every combination of their missing
    categories, none summed out: what EM read before summing out."""
    from skebm._mixture import Expansion, _shift_index, expand_categories, missing_columns

    rows, filled, log_weights = expand_categories(codes, n_categories)
    return Expansion(rows, X[rows], filled, torch.zeros(len(rows), dtype=torch.bool),
                     log_weights, missing_columns(X[rows]), _shift_index(filled, n_categories),
                     n_categories)


def test_rows_without_continuous_entries_sum_their_missing_categories_out():
    """A row with no observed continuous entry is not expanded: its
    log-density equals that of its every combination summed, and EM, whose
    complete data then leave its continuous entries out, climbs the same
    likelihood at every step to the same fixed point as EM on every
    combination."""
    from skebm._mixture import (_expanded_terms, _expect, _maximize, _row_logsumexp, expand,
                                fit_mixture, log_density)

    X, codes, n_categories = _mixed_rows()
    summed, full = expand(X, codes, n_categories), _fully_expanded(X, codes, n_categories)
    assert len(summed.rows) < len(full.rows) and (summed.codes < 0).any()
    parameters = fit_mixture(X, codes, n_categories, 2, 1e-3, 0, max_iter=3)
    np.testing.assert_allclose(
        log_density(X, codes, parameters).numpy(),
        _row_logsumexp(_expanded_terms(full, parameters)[0], full.rows, len(X)).numpy(),
        rtol=1e-12, atol=1e-12)
    scores = []
    for _ in range(30):
        expected, score = _expect(X, parameters, summed)
        parameters = _maximize(expected, summed, n_categories, 1e-3)
        scores.append(score)
    assert np.all(np.diff(scores) > -1e-12) and scores[-1] > scores[0] + 0.01
    # EM on every combination, to its fixed point. With a ridge of 1e-3 the
    # two would differ by it: added at each M-step, it weighs n / n_gaussian
    # times as much where the Gaussians count every row.
    ridge = 1e-9
    for _ in range(1000):
        stepped = _maximize(_expect(X, parameters, full)[0], full, n_categories, ridge)
        change = max(float((after - before).abs().max()) for after, before
                     in zip(stepped, parameters) if after.numel() and before.isfinite().all())
        parameters = stepped
        if change < 1e-9:
            break
    assert change < 1e-9
    assert parameters[4].abs().max() > 0.5  # the categories shift the continuous columns
    stepped = _maximize(_expect(X, parameters, summed)[0], summed, n_categories, ridge)
    for before, after in zip(parameters, stepped):
        np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-7)


def test_missing_categories_without_continuous_columns_are_summed_out():
    """Without continuous columns a row's missing categories are summed out
    in closed form, one row however many it misses: the row's log-density,
    the E-step and the M-step equal those of the row expanded into every
    combination of them."""
    from skebm._mixture import (_expanded_terms, _expect, _maximize, _row_logsumexp, expand,
                                fit_mixture, log_density)

    X, codes, n_categories = _all_categorical_rows()
    summed = expand(X, codes, n_categories)
    assert len(summed.rows) == len(codes)
    expanded = _fully_expanded(X, codes, n_categories)
    rows = expanded.rows
    assert len(rows) > 2 * len(codes)
    parameters = fit_mixture(X, codes, n_categories, 3, 1e-6, 0, max_iter=5)
    np.testing.assert_allclose(
        log_density(X, codes, parameters).numpy(),
        _row_logsumexp(_expanded_terms(expanded, parameters)[0], rows, len(codes)).numpy(),
        rtol=1e-12, atol=1e-12)
    steps = []
    for expansion in (summed, expanded):
        expected, score = _expect(X, parameters, expansion)
        steps.append((score, *_maximize(expected, expansion, n_categories, 1e-6)))
    for by_sum, by_expansion in zip(*steps):
        np.testing.assert_allclose(np.asarray(by_sum), np.asarray(by_expansion), rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("common", [False, True])
def test_summed_out_categories_shift_the_continuous_entries_drawn(common):
    """A row with no observed continuous entry draws its missing categories
    from their conditional (as its every combination, expanded, would have
    them) and its continuous entries from the drawn component's Gaussian
    shifted by the drawn categories."""
    from skebm._mixture import (CommonDraws, ComponentConditionals, FreshDraws,
                                expand_categories, fit_mixture)

    X, codes, n_categories = _mixed_rows()
    parameters = fit_mixture(X, codes, n_categories, 2, 1e-3, 0, max_iter=20)
    row, nothing = torch.tensor([[1, -1, -1]]), torch.full((1, 2), torch.nan, dtype=X.dtype)
    n_draws, generator = 40000, torch.Generator().manual_seed(2)
    draws = (CommonDraws.drawn(n_draws, 5, generator) if common
             else FreshDraws(n_draws, generator))
    drawn_X, drawn = ComponentConditionals(parameters, nothing, row).sample(draws)
    assert (drawn[0, :, 0] == 1).all()
    _, combinations, _ = expand_categories(row, n_categories)
    exact = ComponentConditionals(parameters, nothing.expand(12, 2), combinations)
    share = torch.softmax(exact.log_marginal, 0)
    index = (drawn[0, :, 1] * 4 + drawn[0, :, 2]).numpy()
    np.testing.assert_allclose(np.bincount(index, minlength=12) / n_draws, share.numpy(),
                               atol=0.01)
    # The mean of the continuous entries drawn with the commonest combination.
    top = int(share.argmax())
    at_top = torch.as_tensor(index == top)
    posterior = exact.posterior[top]  # its components' shares, summing to 1
    expected = (posterior[:, None] * exact.means[top]).sum(0)
    np.testing.assert_allclose(drawn_X[0, at_top].mean(0).numpy(), expected.numpy(),
                               atol=0.06)


@pytest.mark.parametrize("common", [False, True])
def test_summed_out_categories_are_drawn_from_their_conditional(common):
    """A row's missing categories, summed out in fit, are drawn from their
    exact conditional given its observed ones (the posterior of the
    expanded combinations), observed entries kept, both with fresh numbers
    and with the numbers common to every row."""
    from skebm._mixture import (CommonDraws, ComponentConditionals, FreshDraws, expand,
                                expand_categories, fit_mixture)

    X, codes, n_categories = _all_categorical_rows()
    parameters = fit_mixture(X, codes, n_categories, 3, 1e-6, 0)
    row = torch.tensor([[-1, 2, -1]])
    n_draws, generator = 40000, torch.Generator().manual_seed(1)
    draws = (CommonDraws.drawn(n_draws, 3, generator) if common
             else FreshDraws(n_draws, generator))
    _, drawn = ComponentConditionals(parameters, X[:1], row).sample(draws)
    assert (drawn[0, :, 1] == 2).all()
    # The exact conditional of the 8 combinations of the two missing columns.
    _, combinations, _ = expand_categories(row, n_categories)
    joint = ComponentConditionals(parameters, X[:1].expand(8, 0), combinations).log_marginal
    exact = torch.softmax(joint, 0).numpy()
    assert len(expand(X[:1], row, n_categories).rows) == 1
    index = (drawn[0, :, 0] * 4 + drawn[0, :, 2]).numpy()
    np.testing.assert_allclose(np.bincount(index, minlength=8) / n_draws, exact, atol=0.01)


@pytest.mark.parametrize("continuous", [np.nan, 1.0])
def test_a_row_missing_most_of_many_categories_is_fitted_scored_and_filled(continuous):
    """A row missing 29 of 30 binary categories would expand into 2**29
    rows, past the ten million refused. With its continuous cell missing
    too, it stays one row (its categories sum out); with it observed, it is
    summed over COMBINATIONS_PER_ROW combinations drawn. The model fits with it, and scores
    it as the probability of its one observed category (near the data's
    share) times the density of its continuous cell (a unit Gaussian about
    that category, 1), and fills it with binary values, the known ones
    kept."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (300, 30)).astype(float)
    X = np.column_stack([rng.normal(size=300) + bits[:, 0], bits])
    X[0] = np.nan
    X[0, :2] = continuous, 1.0
    model = NCEDensity(**{**QUICK, "max_iter": 5}).fit(X)
    assert model.is_categorical_[1:].all()
    expected = np.log(np.mean(bits[1:, 0] == 1))
    if not np.isnan(continuous):
        expected += norm.logpdf(continuous, loc=1.0)
    np.testing.assert_allclose(model.score_samples(X[:1]), expected, atol=0.15)
    filled = model.sample_conditional(X[:1], random_state=0)
    assert filled[0, 1] == 1.0 and np.isin(filled[0, 2:], [0.0, 1.0]).all()
    assert np.isfinite(filled[0, 0]) and (np.isnan(continuous) or filled[0, 0] == continuous)


def test_training_completes_rows_of_many_categories_from_combinations_of_their_own():
    """A row of more combinations of missing categories than
    COMBINATIONS_PER_ROW is completed, in training and by
    ``sample_conditional``'s starts (fresh numbers), from combinations drawn
    for it at that call, not from the ones common to every row that its
    score sums over: else training would take those few combinations for
    data, and the scores that sum over them would follow."""
    from skebm._runtime import make_generator

    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (300, 30)).astype(float)
    X = np.column_stack([rng.normal(size=300) + bits[:, 0], bits])
    model = NCEDensity(**{**QUICK, "max_iter": 2}).fit(X)
    module = model._inference_module()
    Z = module.base.sample(1, make_generator(0, "cpu")).to(torch.float64).repeat(400, 1)
    Z[:, 2:] = torch.nan  # 2**29 combinations, the continuous cell observed
    U, _ = module.latent(Z)
    common = module.base.conditionals(U)
    common_codes = common.codes[common.rows == 0]  # every row's: the same numbers
    assert torch.equal(common.codes[common.rows == 399], common_codes)
    assert len(common_codes) <= 256
    with torch.no_grad():
        completed, _, _ = module.completions(Z, FreshDraws(1, make_generator(1, "cpu")))
    drawn = completed[:, 0, module.base.categorical].long()
    assert (drawn[:, 0] == Z[0, 1]).all()
    in_common = (drawn[:, None, :] == common_codes[None]).all(2).any(1)
    assert in_common.float().mean() < 0.05
    assert len(torch.unique(drawn, dim=0)) > 390


def _rows_of_many_combinations(n_rows, seed, count=5, n_categorical=6):
    """Two continuous columns shifted by ``n_categorical`` categorical ones
    of ``count`` categories, the categories mostly following a latent
    class, so that a row's continuous cells tell much of its missing
    categories."""
    rng = np.random.default_rng(seed)
    latent = rng.integers(0, 2, n_rows)
    codes = np.where(rng.random((n_rows, n_categorical)) < 0.7, 2 * latent[:, None],
                     rng.integers(0, count, (n_rows, n_categorical)))
    half = n_categorical // 2
    X = rng.normal(size=(n_rows, 2)) + np.column_stack(
        [codes[:, :half].sum(1) / half, codes[:, half:].sum(1) / half - latent])
    return torch.as_tensor(X), torch.as_tensor(codes), [count] * n_categorical


def test_rows_of_many_missing_categories_are_summed_by_importance_sampling():
    """A row with an observed continuous cell and more combinations of
    missing categories than COMBINATIONS_PER_ROW (5**6 here) scores an
    importance-sampling estimate of the sum over all of them: within 0.25
    nats of it on every row and without a bias beyond 0.03 on average;
    the same alone as in a batch; a row of fewer combinations (5**3) exactly.
    Its categories are drawn from their conditional, as the expansion into
    every combination gives it, within 0.06 in each column's shares (from
    256 combinations drawn, resampled)."""
    from skebm._mixture import (COMBINATIONS_PER_ROW, ComponentConditionals, FreshDraws,
                                fit_mixture, log_density)

    X, codes, n_categories = _rows_of_many_combinations(600, 0)
    parameters = fit_mixture(X, codes, n_categories, 3, 1e-3, 0)
    X_test, codes_test, _ = _rows_of_many_combinations(40, 1)
    missing = torch.full_like(codes_test, -1)
    missing[:10, :3] = codes_test[:10, :3]  # 5**3 combinations: summed exactly
    assert 5**3 <= COMBINATIONS_PER_ROW < 5**6
    estimate = log_density(X_test, missing, parameters)
    full = _fully_expanded(X_test, missing, n_categories)
    exact = _row_logsumexp_of(full, parameters, len(X_test))
    np.testing.assert_allclose(estimate[:10].numpy(), exact[:10].numpy(), rtol=1e-10)
    error = (estimate - exact)[10:].numpy()
    assert np.abs(error).max() < 0.25 and abs(error.mean()) < 0.03 and error.std() > 1e-4
    alone = torch.cat([log_density(X_test[i:i + 1], missing[i:i + 1], parameters)
                       for i in (10, 11)])
    np.testing.assert_allclose(alone.numpy(), estimate[10:12].numpy(), rtol=1e-10)
    # One row's draws against its exact conditional, column by column.
    row = slice(10, 11)
    _, drawn = ComponentConditionals(parameters, X_test[row], missing[row]).sample(
        FreshDraws(20000, torch.Generator().manual_seed(0)))
    exact_row = ComponentConditionals(parameters, X_test[row].expand(5**6, -1),
                                      full.codes[full.rows == 10])
    posterior = torch.softmax(exact_row.log_marginal, 0)
    for j in range(6):
        shares = torch.zeros(5, dtype=torch.float64).index_add_(
            0, full.codes[full.rows == 10][:, j], posterior)
        np.testing.assert_allclose(np.bincount(drawn[0, :, j].numpy(), minlength=5) / 20000,
                                   shares.numpy(), atol=0.06)


def _row_logsumexp_of(expansion, parameters, n_rows):
    """Each row's log-density summed over its rows in ``expansion``."""
    from skebm._mixture import _expanded_terms, _row_logsumexp

    return _row_logsumexp(_expanded_terms(expansion, parameters)[0], expansion.rows, n_rows)


def test_a_fit_with_rows_of_many_missing_categories_matches_the_exact_one(monkeypatch):
    """EM on rows whose combinations are drawn climbs its objective (but for
    its priors' pull, a few 1e-6 near the fixed point), and its fits end,
    by the exact likelihood of held-out rows, within 0.015 nats of EM on
    every combination on average over three seeds, each within 0.04 (4
    columns of 8 categories, a quarter of the rows missing all of them)."""
    import skebm._mixture as mixture

    X, codes, n_categories = _rows_of_many_combinations(200, 2, count=8, n_categorical=4)
    codes[:50] = -1
    X_test, codes_test, _ = _rows_of_many_combinations(400, 3, count=8, n_categorical=4)
    start = mixture.fit_mixture(X, codes, n_categories, 2, 1e-3, 0, max_iter=1)
    sampled = mixture.expand(X, codes, n_categories, mixture.CategoryProposal.of_mixture(
        start, codes, torch.Generator().manual_seed(0)))
    drawn = sampled.rows < 50
    assert (sampled.log_weights[drawn] != 0).all() and (sampled.log_weights[~drawn] == 0).all()
    path, parameters = [], start
    for _ in range(10):
        expected, score = mixture._expect(X, parameters, sampled)
        parameters = mixture._maximize(expected, sampled, n_categories, 1e-3)
        path.append(score)
    assert np.all(np.diff(path) > -1e-6) and path[-1] > path[0] + 0.01

    def held_out(seed):
        parameters = mixture.fit_mixture(X, codes, n_categories, 2, 1e-3, seed)
        return float(mixture.log_density(X_test, codes_test, parameters).mean())

    by_draws = np.array([held_out(seed) for seed in range(3)])
    monkeypatch.setattr(mixture, "COMBINATIONS_PER_ROW", 8**4)
    exact = held_out(0)
    assert abs(by_draws.mean() - exact) < 0.015 and np.abs(by_draws - exact).max() < 0.04


def test_categorical_features_forms(table):
    train = table[0]
    as_objects = train.to_numpy(dtype=object)
    quick = {**QUICK, "max_iter": 1}
    for spec, data in [([2], as_objects), ([False, False, True], as_objects),
                       (["kind"], train), ("from_dtype", train)]:
        model = NCEDensity(**quick, categorical_features=spec).fit(data)
        np.testing.assert_array_equal(model.is_categorical_, [False, False, True])
    binary = np.column_stack([train.x1, train.x2, (train.kind == "a").astype(float)])
    assert NCEDensity(**quick).fit(binary).is_categorical_.tolist() == [False, False, True]
    assert not NCEDensity(**quick, categorical_features=None).fit(binary).is_categorical_.any()


def test_bad_tables_are_refused_with_the_column_named(fitted, table):
    train = table[0]
    unseen = train.head(4).assign(kind=pd.Categorical(["a", "zebra", "b", "yak"]))
    message = "'kind' has a category not seen in fit: 'zebra'.*; 2 of 4 rows hold one"
    with pytest.raises(UnseenCategoryError, match=message) as error:
        fitted.score_samples(unseen)
    assert error.value.rows.tolist() == [False, True, False, True]  # every such row
    empty = train.assign(x2=np.nan)
    with pytest.raises(ValueError, match="'x2' has no observed value"):
        NCEDensity(**QUICK).fit(empty)
    with pytest.raises(ValueError, match="'x1' is not numeric"):
        NCEDensity(**QUICK, categorical_features=["kind"]).fit(
            train.assign(x1=train.x1.astype(str)))
    with pytest.raises(ValueError, match="names columns X lacks"):
        NCEDensity(**QUICK, categorical_features=["colour"]).fit(train)


INF_FEW_LEVELS = np.where(np.arange(120) % 3 == 0, np.inf, np.arange(120) % 2 * 1.0)


@pytest.mark.parametrize("column, values", [
    ("k", INF_FEW_LEVELS),  # "auto" would make inf a category of this flag
    ("k", -INF_FEW_LEVELS),
    ("k", INF_FEW_LEVELS.astype(object)),  # a category column by its dtype
    ("x2", np.where(np.arange(120) == 4, -np.inf, 1.0)),  # continuous
])
def test_infinite_cells_are_refused_at_fit_with_the_column_named(table, column, values):
    """+inf or -inf in a table, in a categorical column or a continuous one,
    is refused as the same values in a float array are."""
    bad = table[0].head(120).assign(**{column: values})
    with pytest.raises(ValueError, match=f"Column '{column}' holds infinity"):
        NCEDensity(**{**QUICK, "max_iter": 1}).fit(bad)
    with pytest.raises(ValueError, match=f"Column {list(bad.columns).index(column)} holds "
                                         "infinity"):
        NCEDensity(**{**QUICK, "max_iter": 1}).fit(bad.to_numpy(dtype=object))


def test_infinite_cells_are_refused_at_score_with_the_column_named(fitted, table):
    """At score time too, in a continuous column and in a categorical one
    (where inf is no category); NaN stays a missing cell."""
    test = table[1].head(120)
    rows = np.arange(len(test))
    with pytest.raises(ValueError, match="'x1' holds infinity .* first at row 3"):
        fitted.score_samples(test.assign(x1=np.where(rows == 3, np.inf, test.x1)))
    flags = NCEDensity(**{**QUICK, "max_iter": 1}).fit(table[0].head(120).assign(k=rows % 2 * 1.0))
    assert flags.is_categorical_.tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="'k' holds infinity"):
        flags.score_samples(test.assign(k=np.where(rows == 5, -np.inf, rows % 2 * 1.0)))
    gaps = test.assign(k=np.where(rows == 5, np.nan, rows % 2 * 1.0),
                       x1=np.where(rows == 6, np.nan, test.x1))
    assert np.isfinite(flags.score_samples(gaps)).all()


def test_numbers_where_strings_were_fitted_are_unseen_categories(table):
    """Numbers in a column fitted as string categories are categories not
    seen in fit, named with their column (not a TypeError of numpy's sort)."""
    train = table[0].head(120)
    rows = np.arange(len(train))
    strings = NCEDensity(**{**QUICK, "max_iter": 1}).fit(train)
    with pytest.raises(ValueError, match="'kind' has a category not seen in fit: 0 "):
        strings.score_samples(train.assign(kind=rows % 3))
    one_number = train.kind.astype(object).where(rows != 4, 2)
    with pytest.raises(ValueError, match="'kind' has a category not seen in fit: 2 "):
        strings.score_samples(train.assign(kind=one_number))


def test_strings_where_numbers_were_fitted_are_unseen_categories(table):
    """And strings in a column fitted as number categories."""
    train = table[0].head(120)
    rows = np.arange(len(train))
    numbers = NCEDensity(**{**QUICK, "max_iter": 1}).fit(train.assign(kind=rows % 3))
    assert [values.tolist() for values in numbers.categories_] == [[0.0, 1.0, 2.0]]
    for given in [train.kind, train.kind.astype(object), train.kind.astype(object).where(
            rows != 4, "b").where(rows == 4, rows % 3)]:
        with pytest.raises(ValueError, match="'kind' has a category not seen in fit: '[abc]'"):
            numbers.score_samples(train.assign(kind=given))
    assert np.isfinite(numbers.score_samples(train.assign(kind=rows % 3 * 1.0))).all()


def test_failed_fit_leaves_the_table_as_it_was(table):
    train = table[0]
    model = NCEDensity(**{**QUICK, "max_iter": 1}).fit(train)
    before = model.score_samples(train.head(20))
    with pytest.raises(ValueError):
        model.fit(train.assign(x2=np.nan))
    np.testing.assert_array_equal(model.is_categorical_, [False, False, True])
    np.testing.assert_array_equal(model.score_samples(train.head(20)), before)


def test_pickle_round_trip_of_a_table_model(fitted, table):
    test = table[1].head(50)
    clone = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(clone.score_samples(test), fitted.score_samples(test), rtol=1e-12)
    pd.testing.assert_frame_equal(clone.sample(5, random_state=1), fitted.sample(5, random_state=1))


def test_mixture_log_prob_with_categories_and_gaps():
    """GaussianMixtureDensity on a table: log weight + Gaussian marginal at
    the mean shifted by the row's category + category log-probability,
    summed over components; a missing category is summed over. The category
    here is the sign of x1, so one component shifts x1's mean by the gap
    between the two halves' means, and its draws keep that gap."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    codes = (X[:, :1] > 0).astype(float)
    Z = torch.as_tensor(np.hstack([X, codes]), dtype=torch.float32)
    mixture = GaussianMixtureDensity.fit_to(Z, n_components=2, categorical=torch.tensor(
        [False, False, True]), n_categories=(2,)).double()
    covariance = lambda k: (mixture.cholesky[k] @ mixture.cholesky[k].T)[:1, :1].numpy()
    term = lambda k, code: (
        float(mixture.log_weights[k]) + float(mixture.category_log_probs[k, 0, code])
        + multivariate_normal(mixture.means[k, :1].numpy()
                              + code * mixture.shifts[k, 0, :1].numpy(),
                              covariance(k)).logpdf([0.4]))
    rows = torch.tensor([[0.4, np.nan, 1.0], [0.4, np.nan, np.nan]], dtype=torch.float64)
    scores = mixture.log_prob(rows).numpy()
    assert scores[0] == pytest.approx(np.logaddexp.reduce([term(k, 1) for k in range(2)]),
                                      abs=1e-9)
    assert scores[1] == pytest.approx(
        np.logaddexp.reduce([term(k, c) for k in range(2) for c in (0, 1)]), abs=1e-9)
    # One component: the shift is the gap between the halves' means, 2 sqrt(2 / pi).
    single = GaussianMixtureDensity.fit_to(Z, categorical=torch.tensor(
        [False, False, True]), n_categories=(2,))
    assert float(single.shifts[0, 0, 0]) == pytest.approx(2 * np.sqrt(2 / np.pi), abs=0.2)
    draws = single.sample(4000, torch.Generator().manual_seed(0)).numpy()
    assert set(draws[:, 2].tolist()) <= {0.0, 1.0}
    gap = draws[draws[:, 2] == 1, 0].mean() - draws[draws[:, 2] == 0, 0].mean()
    assert gap == pytest.approx(float(single.shifts[0, 0, 0]), abs=0.1)


def test_outlier_detector_takes_the_table(fitted, table):
    """DensityOutlierDetector hands a table density the DataFrame as it is,
    and flags rows whose category contradicts their continuous cells."""
    from sklearn.model_selection import KFold

    from skebm import DensityOutlierDetector

    train, test = table
    detector = DensityOutlierDetector(NCEDensity(**{**QUICK, "max_iter": 5}), contamination=0.05,
                                      cv=KFold(2, shuffle=True, random_state=0)).fit(train)
    assert list(detector.feature_names_in_) == ["x1", "x2", "kind"]
    normal = test[test.kind == "a"].head(50)
    swapped = normal.assign(kind=pd.Categorical(["c"] * len(normal), categories=CATEGORIES))
    assert (detector.predict(normal) == 1).mean() > 0.8
    # The true density, at its own 5% threshold, flags 43 of these 50 rows:
    # a row of "a" near x1 = 0 is also a likely "c".
    assert (detector.predict(swapped) == -1).mean() >= 0.75


def test_conditional_mean_is_the_conditional_expectation(fitted, table):
    """A Gaussian-only model's conditional mean of a missing cell is the
    Gaussian's, within the Monte-Carlo error of 256 draws; on the table, the
    filled category is the most probable one (mostly the true one)."""
    rng = np.random.default_rng(0)
    X = rng.multivariate_normal([0, 1], [[1, 0.9], [0.9, 1]], 500)
    model = NCEDensity(**{**QUICK, "max_iter": 1}, base="gaussian", marginals="none",
                       base_scale=1.0).fit(X)
    with torch.no_grad():
        model.module_.energy.layers[-1].weight.zero_()
        model.module_.energy.layers[-1].bias.zero_()
    base = model.module_.base
    covariance = (base.cholesky[0] @ base.cholesky[0].T).double().cpu().numpy()
    mean = base.means[0].double().cpu().numpy()
    rows = np.array([[1.5, np.nan], [np.nan, -1.0]])
    filled = model.conditional_mean(rows, random_state=0)
    for row, value in zip(rows, filled):
        free = np.isnan(row)
        known = (row[~free] - model.mean_[~free]) / model.scale_[~free]
        gain = covariance[free][:, ~free] / covariance[~free][:, ~free]
        expected = (mean[free] + gain @ (known - mean[~free])) * model.scale_[free] + model.mean_[free]
        spread = np.sqrt(covariance[free][:, free] - gain @ covariance[~free][:, free]).item()
        assert value[free] == pytest.approx(expected, abs=4 * spread * model.scale_[free].item() / 16)
        assert value[~free] == row[~free]
    test = table[1]
    hidden = test.assign(kind=pd.Categorical([np.nan] * len(test), categories=CATEGORIES))
    assert (fitted.conditional_mean(hidden).kind == test.kind).mean() > 0.8


def test_every_tensor_of_a_table_model_moves_with_it(fitted):
    """What the GPU path needs: the table's tensors (category masks and
    probabilities, the one-hot layer's mask, Langevin's mask) are buffers
    that .to() moves, with no tensor left behind as a plain attribute."""
    module = pickle.loads(pickle.dumps(fitted)).module_.to("meta")
    assert all(tensor.device.type == "meta" for tensor in module.buffers())
    assert all(tensor.device.type == "meta" for tensor in module.parameters())
    for submodule in module.modules():
        stray = [name for name, value in vars(submodule).items()
                 if isinstance(value, torch.Tensor)]
        assert not stray, f"{type(submodule).__name__} keeps tensors outside its buffers: {stray}"


def assert_scored_alike_on_another_device(scores, expected, incomplete):
    """Every row alike up to rounding, rows with missing cells too: their
    estimate's draws come from a CPU generator on any device (a GPU's
    stream is not the CPU's). ``incomplete`` says which rows had missing
    cells, so that a failure names the kind of row."""
    for rows in (~incomplete, incomplete):
        np.testing.assert_allclose(scores[rows], expected[rows], rtol=1e-6)


def test_gpu_pickle_of_a_point_mass_model_loads_on_cpu_only_machine(amounts_model,
                                                                    monkeypatch):
    """A model with point masses, as a GPU-fitted one pickles it, loads on a
    machine without CUDA and scores as before."""
    state = amounts_model.__getstate__()
    state["device_"] = "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = NCEDensity.__new__(NCEDensity)
    restored.__setstate__(state)
    test = make_amounts(50, 2)
    np.testing.assert_allclose(restored.score_samples(test), amounts_model.score_samples(test),
                               rtol=1e-10)
    assert restored.sample(200, random_state=0)[:, 1].min() == 0.0


def test_gpu_pickle_of_a_table_model_loads_on_cpu_only_machine(fitted, table, monkeypatch):
    state = fitted.__getstate__()
    state["device_"] = "cuda:0"  # as written by a GPU-fitted model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = NCEDensity.__new__(NCEDensity)
    restored.__setstate__(state)
    test = table[1].head(30).copy()
    test.loc[test.index[:10], "x2"] = np.nan
    assert_scored_alike_on_another_device(restored.score_samples(test),
                                          fitted.score_samples(test),
                                          test.isna().any(axis=1).to_numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_table_fit_on_gpu_scores_and_completes_like_cpu(table, unpickled_without_cuda):
    train, test = table
    test = test.head(100).copy()
    test.loc[test.index[:30], "kind"] = np.nan
    model = NCEDensity(**{**QUICK, "device": "cuda"}).fit(train)
    assert model.device_.type == "cuda"
    scores = model.score_samples(test)
    restored = unpickled_without_cuda(model)
    assert restored.device_.type == "cpu"
    assert_scored_alike_on_another_device(restored.score_samples(test), scores,
                                          test.isna().any(axis=1).to_numpy())
    assert not model.sample_conditional(test, random_state=0).isna().any().any()


def test_auto_leaves_sparse_counts_out_of_the_categories():
    """Raw digits (counts 0-16): edge pixels take a few values, mostly 0;
    "auto" makes them integer columns, not categories, so a held-out half
    scores (masses of 64 integer cells, which may warn that they are
    uncertain)."""
    from sklearn.datasets import load_digits

    X = load_digits().data
    model = NCEDensity(**{**QUICK, "max_iter": 1}).fit(X[::2])
    assert not model.is_categorical_.any() and model.is_integer_.all()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "NCEDensity: the probabilities of the integer cells")
        assert np.isfinite(model.score_samples(X[1::2])).all()


def test_auto_leaves_a_few_values_of_a_small_table_out_of_the_categories():
    """statsmodels' stackloss has 21 rows: a half holds its air flow at five
    values, two rows each, and the other half brings a sixth. "auto" keeps
    such a column numeric (here integers), so the held-out half scores; the
    same values over 100 rows, 20 each, make a category."""
    rng = np.random.default_rng(0)
    flow = np.repeat([50.0, 58.0, 62.0, 75.0, 80.0], 2)
    X = np.column_stack([flow, flow / 10 + rng.normal(size=10), rng.normal(size=10)])
    model = NCEDensity(**{**QUICK, "max_iter": 1}).fit(X)
    assert model.is_categorical_.tolist() == [False, False, False]
    assert model.is_integer_.tolist() == [True, False, False]
    held_out = X[:3] + [[3.0, 0.0, 0.0]]  # flows of 53, 61 and 61
    assert np.isfinite(model.score_samples(held_out)).all()
    many = np.tile(X, (10, 1)) + np.column_stack([np.zeros(100), rng.normal(size=(100, 2))])
    assert NCEDensity(**{**QUICK, "max_iter": 1}).fit(many).is_categorical_.tolist() == [
        True, False, False]


def test_nullable_integers_and_empty_tables(table):
    """pandas' nullable integers (pd.NA) are numbers with missing cells, for
    the density and for DensityImputer; an empty table is refused for its
    rows, not for an empty column."""
    from skebm import DensityImputer

    train = table[0].head(300).copy()
    counts = np.random.default_rng(0).integers(0, 100, len(train)).astype(object)
    counts[::7] = None
    train["count"] = pd.array(counts, dtype="Int64")
    model = NCEDensity(**{**QUICK, "max_iter": 2})
    filled = DensityImputer(model, random_state=0).fit_transform(train)
    assert not pd.isna(filled).any()
    np.testing.assert_array_equal(filled[1::7, 3].astype(float), train["count"].iloc[1::7])
    with pytest.raises(ValueError, match="0 sample"):
        NCEDensity(**QUICK).fit(train.iloc[:0])


def make_counts(n_rows, seed):
    """A count (Poisson, mean 3) and a continuous column that follows it."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, n_rows)
    return np.column_stack([counts, rng.normal(0.5 * counts, 1.0)]).astype(float)


@pytest.fixture(scope="module")
def counts_model():
    return NCEDensity(**QUICK).fit(make_counts(1500, 0))


def test_integer_column_mass_times_density_is_normalized(counts_model):
    """The sum over integers of the 1-D integral of the density is 1."""
    assert counts_model.is_integer_.tolist() == [True, False]
    grid = np.linspace(-8, 16, 481)
    total = sum(np.trapezoid(np.exp(counts_model.score_samples(
        np.column_stack([np.full_like(grid, k), grid]))), grid) for k in range(-5, 20))
    assert total == pytest.approx(1.0, abs=0.01)


def test_integer_mass_of_a_gaussian_only_model_is_its_cell_integral():
    """With the energy at 0 and one Gaussian as the base, an integer's mass
    is the Gaussian's integral over its cell: the estimate (128 stratified
    points of the cell) is within 0.002 nats of it (4e-4 when written),
    whether the continuous cell is observed or missing."""
    from scipy.stats import norm

    model, mean, covariance = gaussian_only_model(make_counts(1500, 0))
    rows = np.array([[0.0, -0.5], [3.0, 1.5], [7.0, 2.0], [2.0, np.nan]])
    for (k, x), score in zip(rows, model.score_samples(rows)):
        edges = (np.array([k - 0.5, k + 0.5]) - model.mean_[0]) / model.scale_[0]
        if np.isnan(x):
            spread = np.sqrt(covariance[0, 0])
            expected = np.log(np.diff(norm.cdf(edges, mean[0], spread))[0])
        else:
            z = (x - model.mean_[1]) / model.scale_[1]
            gain = covariance[0, 1] / covariance[1, 1]
            spread = np.sqrt(covariance[0, 0] - gain * covariance[0, 1])
            cell = np.diff(norm.cdf(edges, mean[0] + gain * (z - mean[1]), spread))[0]
            expected = (np.log(cell) + norm.logpdf(z, mean[1], np.sqrt(covariance[1, 1]))
                        - np.log(model.scale_[1]))
        assert score == pytest.approx(expected, abs=2e-3)


def test_integer_draws_are_integers_and_known_cells_stay(counts_model):
    """``sample`` and ``sample_conditional`` draw integers where the column
    holds them; a known cell comes back as given (a non-integer one, of
    probability 0, is refused: see the test below); ``conditional_mean``
    gives the expectation, not rounded."""
    drawn = counts_model.sample(400, random_state=0)
    assert np.array_equal(drawn[:, 0], np.round(drawn[:, 0]))
    assert not np.array_equal(drawn[:, 1], np.round(drawn[:, 1]))
    assert np.mean(drawn[:, 0]) == pytest.approx(3.0, abs=0.4)
    rows = np.array([[np.nan, 1.0], [np.nan, 3.0]])
    completed = counts_model.sample_conditional(rows, random_state=0)
    assert np.array_equal(completed[:, 0], np.round(completed[:, 0]))
    assert completed[0, 1] == 1.0
    with pytest.raises(UnseenCategoryError, match="Column 0 holds integers"):
        counts_model.sample_conditional([[2.5, np.nan]], random_state=0)
    means = counts_model.conditional_mean(rows, random_state=0)
    assert not np.array_equal(means[:, 0], np.round(means[:, 0]))
    assert means[1, 0] > means[0, 0]  # more x, more counts


def test_integer_features_forms():
    """"auto" takes the numeric columns of integers that are not categories;
    indices, masks and names pick columns; a named column that is a category
    or holds fractions is refused, naming it."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"count": rng.poisson(4.0, 200), "flag": rng.integers(0, 2, 200),
                          "x": rng.normal(size=200),
                          "whole": np.round(10 * rng.normal(size=200))})
    quick = {**QUICK, "max_iter": 1}
    assert NCEDensity(**quick).fit(frame).is_integer_.tolist() == [True, False, False, True]
    assert not NCEDensity(**quick, integer_features=None).fit(frame).is_integer_.any()
    for spec in ([0], ["count"], np.array([True, False, False, False])):
        model = NCEDensity(**quick, integer_features=spec).fit(frame)
        assert model.is_integer_.tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="'x', which holds values that are not integers"):
        NCEDensity(**quick, integer_features=["x"]).fit(frame)
    with pytest.raises(ValueError, match="'flag', which is categorical"):
        NCEDensity(**quick, integer_features=["flag"]).fit(frame)


def test_uncertain_cell_masses_warn(counts_model):
    """Scores of many integer columns whose density varies within the cells
    (raw digits: 64 pixels of 0-16) warn that the masses are uncertain; a
    count beside a continuous column does not."""
    import warnings

    from sklearn.datasets import load_digits

    X = load_digits().data
    model = NCEDensity(**{**QUICK, "max_iter": 10}).fit(X[:600])
    with pytest.warns(RuntimeWarning,
                      match="probabilities of the integer cells or point masses are uncertain"):
        model.score_samples(X[600:700])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts_model.score_samples(make_counts(200, 2))


def test_a_row_as_pandas_makes_it_scores_as_in_its_table(fitted, table):
    """``df.iloc[i].to_frame().T`` gives every column object dtype: numbers
    there are numbers, at score and at fit (as in an object array)."""
    test = table[1]
    row = test.iloc[3].to_frame().T
    assert (row.dtypes == object).all()
    np.testing.assert_allclose(fitted.score_samples(row), fitted.score_samples(test.iloc[[3]]),
                               rtol=1e-12)
    as_objects = NCEDensity(**{**QUICK, "max_iter": 1}).fit(table[0].head(120).astype(object))
    assert as_objects.is_categorical_.tolist() == [False, False, True]


def test_numpy_strings_and_lists_of_mixed_rows_are_tables(table):
    """A numpy string array (np.array of mixed rows makes every cell a
    string) and a list of mixed rows fit as the object array does."""
    train = table[0].head(120)
    rows = train[["x1", "kind"]].astype(object).to_numpy()
    reference = NCEDensity(**{**QUICK, "max_iter": 1}).fit(rows)
    for given in (rows.astype(str), rows.tolist()):
        model = NCEDensity(**{**QUICK, "max_iter": 1}).fit(given)
        assert model.is_categorical_.tolist() == [False, True]
        np.testing.assert_allclose(model.score_samples(given), reference.score_samples(rows),
                                   rtol=1e-9)


def test_cells_to_draw_may_hold_anything_and_rows_keep_their_index(fitted, table):
    """With a mask, a placeholder ('?') or an infinity in a cell to draw is
    no input; the completed DataFrame keeps the input's index, so that
    assigning a column back aligns by row."""
    test = table[1].head(8).set_axis(np.arange(100, 108))
    mask = np.zeros(test.shape, dtype=bool)
    mask[::2, 2] = mask[1::2, 0] = True
    odd = test.astype({"kind": object}).copy()
    odd.loc[mask[:, 2], "kind"] = "?"
    odd.loc[mask[:, 0], "x1"] = np.inf
    completed = fitted.sample_conditional(odd, mask, random_state=0)
    reference = fitted.sample_conditional(test.mask(mask), random_state=0)
    assert list(completed.index) == list(test.index)
    pd.testing.assert_frame_equal(completed, reference)
    np.testing.assert_array_equal(completed.x2, test.x2)
    assert list(fitted.conditional_mean(test.mask(mask), random_state=0).index) == list(test.index)


def test_a_row_with_nothing_observed_has_log_probability_0(fitted, table):
    """Observing nothing is certain: exactly 0, not an estimate near it."""
    rows = table[1].head(3).copy()
    rows.iloc[1] = np.nan
    scores = fitted.score_samples(rows)
    assert scores[1] == 0.0
    np.testing.assert_array_equal(scores[[0, 2]], fitted.score_samples(rows.iloc[[0, 2]]))


def test_decimal_amounts_are_numbers_and_dates_are_refused_with_a_remedy(table):
    """A money column of Decimal is a number column, not a category per
    amount; a date column is refused with what to do about it."""
    from decimal import Decimal

    train = table[0].head(200)
    amounts = train.assign(x1=[Decimal(f"{v:.2f}") for v in train.x1])
    model = NCEDensity(**{**QUICK, "max_iter": 1}).fit(amounts)
    assert model.is_categorical_.tolist() == [False, False, True]
    reference = NCEDensity(**{**QUICK, "max_iter": 1}).fit(amounts.astype({"x1": float}))
    np.testing.assert_allclose(model.score_samples(amounts), reference.score_samples(amounts),
                               rtol=1e-9)
    dates = train.assign(when=pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(200), "D"))
    with pytest.raises(TypeError, match="'when' holds Timestamp values.*Convert the column"):
        NCEDensity(**{**QUICK, "max_iter": 1}).fit(dates)
    # numpy counts durations and complex numbers as numbers; a float holds neither whole
    durations = train.assign(took=pd.to_timedelta(np.arange(200), "h"))
    with pytest.raises(TypeError, match="'took' holds durations.*a duration to a number"):
        NCEDensity(**{**QUICK, "max_iter": 1}).fit(durations)
    complex_values = train.assign(x1=train.x1 + 1j)
    with pytest.raises(TypeError, match="'x1' holds complex numbers"):
        NCEDensity(**{**QUICK, "max_iter": 1}).fit(complex_values)


@pytest.mark.parametrize("marginals", ["auto", "kde"])
def test_a_column_observed_once_is_fitted(marginals):
    """A column with one observed value: the base search's folds whose
    training rows miss it map the column as it is (they crashed), and every
    row scores."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=100), "y": rng.normal(size=100),
                      "z": np.r_[1.5, [np.nan] * 99]})
    model = NCEDensity(**{**QUICK, "max_iter": 2}, marginals=marginals).fit(X)
    assert np.isfinite(model.score_samples(X)).all()


def test_conditional_mean_of_a_numeric_flag_is_the_mean_of_its_values():
    """A numeric column that "auto" models as categories is a number to the
    user: its conditional mean is the model's probability of each value
    times the value (those probabilities read off score_samples of the
    row's completions), where a column named categorical gets its most
    probable value. Known cells come back as given."""
    rng = np.random.default_rng(0)
    flag = rng.integers(0, 2, 800)
    X = np.column_stack([rng.normal(2.0 * flag, 1.0), 10.0 + 10.0 * flag])
    rows = np.array([[-1.0, np.nan], [1.0, np.nan], [3.0, np.nan], [np.nan, 20.0]])
    quick = {**QUICK, "max_iter": 3}
    found = NCEDensity(**quick).fit(X)
    assert found.is_categorical_.tolist() == [False, True]
    means = found.conditional_mean(rows, random_state=0)
    completions = np.column_stack([np.repeat(rows[:3, 0], 2), np.tile([10.0, 20.0], 3)])
    log_p = found.score_samples(completions).reshape(3, 2)
    probability = np.exp(log_p - np.logaddexp(log_p[:, :1], log_p[:, 1:]))
    # 256 completions: a probability's standard error is at most 0.03, 0.3 in values.
    assert means[:3, 1] == pytest.approx(probability @ [10.0, 20.0], abs=1.25)
    assert 10.0 < means[1, 1] < 20.0 and means[0, 1] < means[1, 1] < means[2, 1]
    assert np.all((10.0 <= means[:, 1]) & (means[:, 1] <= 20.0))  # never past the values
    assert means[3, 1] == 20.0 and np.array_equal(means[:3, 0], rows[:3, 0])
    named = NCEDensity(**quick, categorical_features=[1]).fit(X)
    assert set(named.conditional_mean(rows, random_state=0)[:, 1]) <= {10.0, 20.0}


def test_strings_of_digits_in_an_object_array_are_text():
    """Zip codes are categories, not numbers, and come back as given."""
    rng = np.random.default_rng(0)
    zips = np.array(["02134", "02139", "10001", "94105"], dtype=object)
    X = np.empty((200, 2), dtype=object)
    X[:, 0] = rng.normal(size=200)
    X[:, 1] = rng.choice(zips, 200)
    model = NCEDensity(**dict(QUICK, max_iter=2)).fit(X)
    np.testing.assert_array_equal(model.is_categorical_, [False, True])
    assert set(np.asarray(model.sample(50, random_state=0))[:, 1]) <= set(zips)


def test_none_marks_a_missing_number_in_a_dataframe_column_of_objects():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    numbers = rng.normal(size=200).astype(object)
    numbers[::10] = None
    frame = pd.DataFrame({"a": numbers, "b": rng.normal(size=200)})
    model = NCEDensity(**dict(QUICK, max_iter=2)).fit(frame)
    np.testing.assert_array_equal(model.is_categorical_, [False, False])
    as_floats = frame.assign(a=frame["a"].astype(float))
    np.testing.assert_allclose(model.score_samples(frame), model.score_samples(as_floats))


@pytest.mark.parametrize("parameter", ["categorical_features", "integer_features"])
def test_an_empty_list_names_no_columns(parameter):
    """As HistGradientBoostingClassifier takes it: what a list built by code
    may be."""
    X = np.random.default_rng(0).normal(size=(150, 2))
    model = NCEDensity(**dict(QUICK, max_iter=2), **{parameter: []}).fit(X)
    assert not np.any(model.is_categorical_)


def with_holes(X, seed):
    """X with some cells of every row missing, never all: one cell of each
    row kept, another hidden, the others hidden at random."""
    rng = np.random.default_rng(seed)
    rows, n_features = np.arange(len(X)), X.shape[1]
    kept = rng.integers(n_features, size=len(X))
    holes = rng.random(X.shape) < 0.4
    holes[rows, (kept + rng.integers(1, n_features, size=len(X))) % n_features] = True
    holes[rows, kept] = False
    return np.where(holes, np.nan, X)


def quick_trained(X, **settings):
    """An NCEDensity fitted to X for a few epochs, its energy not 0."""
    model = NCEDensity(hidden_layer_sizes=(16,), max_iter=3, early_stopping=False,
                       n_importance_samples=4096, random_state=0, **settings).fit(X)
    assert not model.module_.energy.is_zero()
    return model


def test_a_rows_answers_do_not_depend_on_its_batch(assert_batch_free):
    """A row with missing cells (continuous, categorical) scores the same
    alone as in any batch, and gets the same conditional mean: its
    completions come from numbers common to every row, not from a stream
    that the rows before it consume."""
    codes = make_table(600, 0).assign(kind=lambda frame: frame.kind.cat.codes).to_numpy(float)
    model = quick_trained(codes, categorical_features=[2])
    rows = with_holes(make_table(150, 1).assign(
        kind=lambda frame: frame.kind.cat.codes).to_numpy(float), 2)
    assert_batch_free(model.score_samples, rows)
    assert_batch_free(lambda X: model.conditional_mean(X, random_state=0), rows)
    assert_batch_free(model.conditional_mean, rows)  # None: the seed drawn at fit


def test_an_integer_rows_score_does_not_depend_on_its_batch(assert_batch_free):
    """The same with an integer column, whose cells' points are common to
    every row too."""
    model = quick_trained(make_counts(600, 0))
    assert model.is_integer_.tolist() == [True, False]
    assert_batch_free(model.score_samples, with_holes(make_counts(150, 1), 2))


@pytest.mark.parametrize("make", [lambda: NCEDensity(**{**QUICK, "max_iter": 1}),
                                  lambda: ShortRunEBM(max_iter=1, random_state=0)],
                         ids=["nce", "shortrun"])
def test_integers_beyond_float64s_exact_ones_are_refused(make):
    """Integers beyond 2**53 (identifiers) have no exact float64: five
    distinct ones became one value, a constant column, silently. fit and
    score_samples refuse them, naming the column; 2**53 itself is exact,
    and a failed fit leaves the fitted model as it was."""
    rng = np.random.default_rng(0)
    ids = 2**60 + rng.integers(0, 5, 100)
    frame = pd.DataFrame({"x": rng.normal(size=100), "id": ids})
    array = np.column_stack([rng.integers(0, 3, 100), ids])
    for X, column in [(frame, "Column 'id'"), (array, "Column 1")]:
        with pytest.raises(ValueError, match=f"{column} holds 100 integer.* beyond 2\\*\\*53"):
            make().fit(X)
    exact = frame.assign(id=rng.integers(0, 5, 100) + 2**53 - 4)
    model = make().fit(exact)
    with pytest.raises(ValueError, match="Column 'id' holds 100 integer"):
        model.fit(frame)
    with pytest.raises(ValueError, match="Column 'id' holds 100 integer"):
        model.score_samples(frame)
    assert list(model.feature_names_in_) == ["x", "id"] and np.isfinite(model.scale_).all()


def test_a_value_between_integers_has_probability_0():
    """An integer column's model is a probability per integer: 2.5 has none,
    and is refused as an unseen category is (it scored the mass of the unit
    interval around it); in a table with both, one error holds every such
    row, and an outlier detector flags them all."""
    from skebm import DensityOutlierDetector
    from skebm.outlier import UNSEEN_SCORE

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.normal(size=300), "n": rng.poisson(3.0, 300).astype(float),
                          "kind": rng.choice(["a", "b"], 300)})
    quick = {**QUICK, "max_iter": 1, "integer_features": ["n"]}
    model = NCEDensity(**quick).fit(train.drop(columns="kind"))
    rows = pd.DataFrame({"x": [0.0, 0.0, 0.0], "n": [2.0, 2.5, 3.0]})
    message = r"Column 'n' holds integers \(integer_features\), but 2.5 is none; 1 of 3 rows"
    with pytest.raises(UnseenCategoryError, match=message) as error:
        model.score_samples(rows)
    assert error.value.rows.tolist() == [False, True, False]
    # (and says how "auto" may take a column of fractions for integers)
    assert "integer_features=None models every numeric column" in str(error.value)
    with pytest.raises(UnseenCategoryError, match=message):
        model.sample_conditional(rows.assign(x=np.nan), random_state=0)
    rows["kind"] = ["a", "c", "zebra"]
    detector = DensityOutlierDetector(NCEDensity(**quick)).fit(train)
    with pytest.raises(UnseenCategoryError, match="'kind' has a category not seen.*'n' holds "
                       "integers.*; 2 of 3 rows hold one") as error:
        detector.density_.score_samples(rows)
    assert error.value.rows.tolist() == [False, True, True]
    scores = detector.score_samples(rows)
    assert scores[0] > UNSEEN_SCORE and scores[1:].tolist() == [UNSEEN_SCORE] * 2


def test_an_unseen_year_is_named_as_the_user_wrote_it():
    """A numeric column of a few whole values ("auto" makes it categorical)
    shows an unseen value and the values seen as integers, not floats."""
    X = pd.DataFrame({"x": np.random.default_rng(0).normal(size=120),
                      "year": np.arange(120) % 3 + 2007})
    model = NCEDensity(**{**QUICK, "max_iter": 1}).fit(X)
    with pytest.raises(UnseenCategoryError,
                       match=r"not seen in fit: 2010 \(seen: \[2007, 2008, 2009\]\)") as error:
        model.score_samples(X.head(2).assign(year=2010))
    # "auto" chose categories for these numbers: the message says how to keep them numbers.
    assert ("name the categorical columns in categorical_features (or pass None) to model "
            "'year' as numbers") in str(error.value)
    named = NCEDensity(**{**QUICK, "max_iter": 1, "categorical_features": ["year"]}).fit(X)
    with pytest.raises(UnseenCategoryError) as error:
        named.score_samples(X.head(2).assign(year=2010))
    assert "as numbers" not in str(error.value)


def test_a_column_of_identifiers_is_named_in_a_warning():
    """A text column whose categories are mostly seen once (a name, a date
    written as text) is named at fit, with what it leads to: nearly every
    new row is refused. Two kinds, or 40 towns of about 5 rows each, are
    not."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=100), "kind": rng.choice(["a", "b"], size=100),
                      "day": [f"2004-{1 + i // 28:02d}-{1 + i % 28:02d}" for i in range(100)]})
    with pytest.warns(UserWarning, match="column 'day' has 100 categories in 100 cells, 100 of "
                      "them seen once: an identifier, or dates or numbers written as text"):
        NCEDensity(**{**QUICK, "max_iter": 1}).fit(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        towns = pd.concat([X.drop(columns="day")] * 2, ignore_index=True)
        NCEDensity(**{**QUICK, "max_iter": 1}).fit(
            towns.assign(town=[f"town {i % 40}" for i in range(200)]))
    assert not [w for w in caught if "identifier" in str(w.message)]


def test_point_masses_are_found_and_codes_named_in_a_warning():
    """A measurement that is exactly 1 in 40% of the rows, between its least
    and greatest values, has an inner point mass; an amount that is 0 in
    60% of the rows, its least value, one at its end; neither is warned of.
    Ages coded in six brackets are named in a warning. Counts with as many
    zeros (integer columns, a probability each), iris's most repeated
    measurement (19% of its column) and diabetes' cholesterol ratio,
    rounded to whole numbers (3 in 29% of the rows, 4 in 24%), are no point
    masses."""
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(0)
    amount = np.where(rng.uniform(size=300) < 0.6, 0.0, rng.exponential(size=300))
    counts = np.where(rng.uniform(size=300) < 0.6, 0, rng.poisson(3, size=300))
    ratio = np.where(rng.uniform(size=300) < 0.4, 1.0, rng.normal(1.0, 0.3, size=300))
    frame = pd.DataFrame({"x": rng.normal(size=300), "ratio": ratio, "count": counts,
                          "amount": amount})

    def fitted(X):
        """(the model, the messages of its warnings of spikes)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = NCEDensity(**{**QUICK, "max_iter": 1}).fit(X)
        return model, [str(w.message) for w in caught if "can only put a spike" in str(w.message)]

    model, messages = fitted(frame)
    assert messages == []
    np.testing.assert_array_equal(model.inner_point_masses_, [np.nan, 1.0, np.nan, np.nan])
    np.testing.assert_array_equal(model.point_masses_[3], [0.0, np.inf])
    for X in [load_iris().data] + [train_test_split(load_diabetes(scaled=False).data,
                                                    test_size=0.5, random_state=seed)[0]
                                   for seed in range(3)]:  # 3 holds 31% of some halves' ratio
        model, messages = fitted(X)
        assert messages == [] and np.isnan(model.inner_point_masses_).all()
        assert np.isinf(model.point_masses_).all()
    ages = rng.choice([17.5, 22.0, 27.0, 32.0, 37.0, 42.0], size=300)
    _, [message] = fitted(frame.drop(columns="ratio").assign(age=ages))
    assert "a code rather than a measurement (column 'age' takes 6 values)" in message


# -- point masses at a column's end, modelled as censored values --------------
def make_amounts(n_rows, seed):
    """x, and an amount that is 0 more often the larger x is (0 in about half
    the rows, its least value), exponential otherwise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_rows)
    zero = rng.uniform(size=n_rows) < 1 / (1 + np.exp(-2 * x))
    return np.column_stack([x, np.where(zero, 0.0, rng.exponential(size=n_rows))])


@pytest.fixture(scope="module")
def amounts_model():
    return NCEDensity(**QUICK).fit(make_amounts(600, 0))


def test_a_point_mass_at_a_columns_end_scores_a_probability(amounts_model):
    """The rows at the point score its probability times the density of x,
    the others a density: integrated over x (and the amount beyond 0), the
    two make 1. The point's probability is the mass the model puts at or
    beyond it, the share of its draws there."""
    xs = np.linspace(-7, 7, 281)
    amounts = np.concatenate([np.geomspace(1e-4, 1, 200), np.linspace(1, 40, 800)[1:]])
    grid = np.array(np.meshgrid(xs, amounts, indexing="ij")).reshape(2, -1).T
    density = np.exp(amounts_model.score_samples(grid)).reshape(len(xs), len(amounts))
    continuous = np.trapezoid(np.trapezoid(density, amounts, axis=1), xs)
    at_point = np.exp(amounts_model.score_samples(np.column_stack([xs, np.zeros_like(xs)])))
    point = np.trapezoid(at_point, xs)
    assert abs(continuous + point - 1) < 0.01
    draws = amounts_model.sample(4000, random_state=1)
    assert abs(np.mean(draws[:, 1] == 0) - point) < 0.03
    assert point > 0.3 and continuous > 0.3  # both parts are there


def test_draws_put_a_point_mass_back(amounts_model):
    """No draw, conditional draw or conditional mean lies beyond the point; a
    draw there is the point itself, and known cells come back as given. A
    value beyond the point scores as the point (a censored value)."""
    X = make_amounts(200, 1)
    np.testing.assert_array_equal(amounts_model.point_masses_, [[-np.inf, np.inf], [0, np.inf]])
    draws = amounts_model.sample(2000, random_state=0)
    assert draws[:, 1].min() == 0.0 and 0.3 < np.mean(draws[:, 1] == 0) < 0.7
    hidden = X.copy()
    hidden[:, 1] = np.nan
    completed = amounts_model.sample_conditional(hidden, random_state=0)
    np.testing.assert_array_equal(completed[:, 0], X[:, 0])
    assert completed[:, 1].min() == 0.0 and 0.2 < np.mean(completed[:, 1] == 0) < 0.8
    # A large x makes 0 likelier, given x as given the point.
    zero_given_x = [np.mean(completed[part, 1] == 0) for part in (X[:, 0] < -0.5, X[:, 0] > 0.5)]
    assert zero_given_x[1] > zero_given_x[0] + 0.3
    means = amounts_model.conditional_mean(hidden)
    assert means[:, 1].min() >= 0.0
    assert np.mean(means[X[:, 0] > 0.5, 1]) < np.mean(means[X[:, 0] < -0.5, 1])
    hidden_x = X.copy()
    hidden_x[:, 0] = np.nan
    filled = amounts_model.sample_conditional(hidden_x, random_state=0)
    np.testing.assert_array_equal(filled[:, 1], X[:, 1])
    # x given the point is larger than x given an amount.
    assert np.mean(filled[X[:, 1] == 0, 0]) > np.mean(filled[X[:, 1] > 0, 0]) + 0.5
    rows = np.array([[0.3, 0.0], [0.3, -0.5], [0.3, 0.5]])
    scores = amounts_model.score_samples(rows)
    assert scores[0] == scores[1] and scores[0] != scores[2]


def test_a_point_mass_at_the_greatest_value_is_censored_there():
    """The same at the other end: the amount's negative has its point at its
    greatest value, where draws stop."""
    X = make_amounts(600, 0) * [1, -1]
    model = NCEDensity(**{**QUICK, "max_iter": 5}).fit(X)
    np.testing.assert_array_equal(model.point_masses_[1], [-np.inf, 0.0])
    draws = model.sample(1000, random_state=0)
    assert draws[:, 1].max() == 0.0 and 0.3 < np.mean(draws[:, 1] == 0) < 0.7


def test_a_floor_and_a_ceiling_are_point_masses_where_they_stand_out():
    """A share that is 0 in 15% of the rows and 1 in 20% has a point mass at
    each end (twice as common as any value between); a measurement rounded
    to one decimal whose least value is 12% of the rows, beside 8% for a
    value between, has none, nor has a column whose least value is 5%."""
    from skebm._table import TableColumns

    rng = np.random.default_rng(0)
    share = rng.uniform(0.05, 0.95, size=1000)
    share[:150], share[150:350] = 0.0, 1.0
    rounded = np.round(rng.normal(size=1000), 1)
    rounded[:120] = rounded.min()
    rounded[120:200] = 0.3
    floor = np.where(rng.uniform(size=1000) < 0.05, 0.0, rng.exponential(size=1000))
    table = TableColumns.fit(np.column_stack([share, rounded, floor]), None, None)
    np.testing.assert_array_equal(table.censored, [[0, 1], [-np.inf, np.inf], [-np.inf, np.inf]])


# -- a point mass between a column's ends ----------------------------------
def make_ratios(n_rows, seed):
    """x, and a ratio that is exactly 1 (between its least and greatest
    values) in about 40% of the rows, likelier the larger x is, normal
    around 1 + x / 2 otherwise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_rows)
    at_one = rng.uniform(size=n_rows) < 0.8 / (1 + np.exp(-2 * x))
    return np.column_stack([x, np.where(at_one, 1.0, rng.normal(1 + x / 2, 0.5))])


def make_returns(n_rows, seed):
    """x, and a return that is exactly 0 (between its least and greatest
    values) in about 30% of the rows, likelier the larger x is, Laplace
    around x / 2 otherwise: a column whose density peaks at the point, so
    its cell is narrower than a ratio's (:func:`inner_cell_width`)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_rows)
    at_zero = rng.uniform(size=n_rows) < 0.6 / (1 + np.exp(-2 * x))
    return np.column_stack([x, np.where(at_zero, 0.0, rng.laplace(x / 2, 1.0))])


@pytest.fixture(scope="module")
def ratios_model():
    return NCEDensity(**QUICK).fit(make_ratios(600, 0))


@pytest.mark.parametrize("make, point, width", [(make_ratios, 1.0, 2.0),
                                                (make_returns, 0.0, 1.0)])
def test_a_point_mass_between_a_columns_ends_scores_a_probability(make, point, width):
    """The rows at the inner point score its probability times the density
    of x, the others a density: integrated over x and the second column,
    the two make 1, whatever the width of the point's cell. The point's
    probability is the share of the draws on it."""
    model = NCEDensity(**QUICK).fit(make(600, 0))
    np.testing.assert_array_equal(model.inner_point_masses_, [np.nan, point])
    np.testing.assert_array_equal(model.point_masses_, [[-np.inf, np.inf]] * 2)
    assert model.module_.cells.inner_widths[1].item() == pytest.approx(width, abs=0.1)
    xs, values = np.linspace(-7, 7, 281), point + np.linspace(-12, 12, 2401)
    grid = np.array(np.meshgrid(xs, values, indexing="ij")).reshape(2, -1).T
    density = np.exp(model.score_samples(grid)).reshape(len(xs), len(values))
    continuous = np.trapezoid(np.trapezoid(density, values, axis=1), xs)
    at_point = np.trapezoid(np.exp(model.score_samples(
        np.column_stack([xs, np.full_like(xs, point)]))), xs)
    assert abs(continuous + at_point - 1) < 0.01
    assert 0.2 < at_point < 0.5 and continuous > 0.5  # both parts are there
    draws = model.sample(4000, random_state=1)
    assert abs(np.mean(draws[:, 1] == point) - at_point) < 0.03
    # The density goes on on both sides of the point, where the data are.
    assert np.mean(draws[:, 1] < point - 0.1) > 0.15
    assert np.mean(draws[:, 1] > point + 0.1) > 0.15


def test_the_cell_of_an_inner_point_mass_is_as_wide_as_the_density_next_to_it_says():
    """100 rows at 0 beside 1,000 values evenly over [-2, 2] (250 per unit,
    so 125 within a quarter on either side): spread at that density, the
    100 rows need a cell of 0.4; with no value near the point, the widest
    cell; with many, the narrowest."""
    from skebm._nce_model import INNER_CELL_BOUNDS, inner_cell_width

    others = torch.linspace(-2, 2, 1001, dtype=torch.float64)
    others = others[others != 0]
    column = torch.cat([others, torch.zeros(100, dtype=torch.float64), torch.tensor([np.nan])])
    assert inner_cell_width(column, 0.0) == pytest.approx(0.4, rel=0.02)
    far = torch.cat([others[others.abs() > 1], torch.zeros(100, dtype=torch.float64)])
    assert inner_cell_width(far, 0.0) == INNER_CELL_BOUNDS[1]
    near = torch.cat([others / 100, torch.zeros(100, dtype=torch.float64)])
    assert inner_cell_width(near, 0.0) == INNER_CELL_BOUNDS[0]


def test_draws_put_an_inner_point_mass_back(ratios_model):
    """Draws, conditional draws and conditional means of the ratio are the
    point or values off it, as the data; given x, the point is likelier the
    larger x, as in the data; a known ratio at the point conditions x on the
    point's cell; known cells come back as given."""
    X = make_ratios(300, 1)
    hidden = X.copy()
    hidden[:, 1] = np.nan
    completed = ratios_model.sample_conditional(hidden, random_state=0)
    np.testing.assert_array_equal(completed[:, 0], X[:, 0])
    at_one = [np.mean(completed[part, 1] == 1.0) for part in (X[:, 0] < -0.5, X[:, 0] > 0.5)]
    assert at_one[0] < 0.3 and at_one[1] > at_one[0] + 0.3
    means = ratios_model.conditional_mean(hidden)
    assert np.all(np.isfinite(means[:, 1]))
    assert np.mean(means[X[:, 0] > 0.5, 1]) > np.mean(means[X[:, 0] < -0.5, 1])
    hidden_x = X.copy()
    hidden_x[:, 0] = np.nan
    filled = ratios_model.sample_conditional(hidden_x, random_state=0)
    np.testing.assert_array_equal(filled[:, 1], X[:, 1])
    assert np.mean(filled[X[:, 1] == 1.0, 0]) > np.mean(filled[X[:, 1] != 1.0, 0]) + 0.3
    rows = np.array([[0.3, 1.0], [0.3, 1.0 + 1e-9], [0.3, 1.1]])
    scores = ratios_model.score_samples(rows)
    assert scores[0] == scores[1] and scores[0] != scores[2]


def test_models_pickled_before_inner_point_masses_load(amounts_model):
    """A fitted model whose table and cells predate inner points (neither
    holds one) scores and draws as it did."""
    import copy

    X = make_amounts(100, 2)
    old = copy.deepcopy(amounts_model)
    del old._table.inner, old._table.inner_reach
    del old.module_.cells._buffers["inner"], old.module_.cells._buffers["inner_widths"]
    loaded = pickle.loads(pickle.dumps(old))
    np.testing.assert_allclose(loaded.score_samples(X), amounts_model.score_samples(X),
                               rtol=1e-10)
    np.testing.assert_array_equal(loaded.sample(50, random_state=0),
                                  amounts_model.sample(50, random_state=0))
    assert np.isnan(loaded.inner_point_masses_).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("make, point", [(make_amounts, 0.0), (make_ratios, 1.0)])
def test_a_point_mass_model_fit_on_gpu_scores_and_draws_like_cpu(unpickled_without_cuda,
                                                                  make, point):
    """Fitted on a GPU, the rows at the point (at the column's end, or
    between its ends) and off it score as the model unpickled on a CPU
    scores them, and draws there are the point."""
    X = make(600, 0)
    model = NCEDensity(**{**QUICK, "device": "cuda"}).fit(X)
    assert model.device_.type == "cuda"
    test = make(100, 1)
    restored = unpickled_without_cuda(model)
    assert restored.device_.type == "cpu"
    assert_scored_alike_on_another_device(restored.score_samples(test),
                                          model.score_samples(test), test[:, 1] == point)
    draws = model.sample(500, random_state=0)
    assert 0.3 < np.mean(draws[:, 1] == point) < 0.7
    assert make is make_ratios or draws[:, 1].min() == point  # none beyond an end


def test_a_model_pickled_before_point_masses_loads(counts_model):
    """A fitted model whose module held its integers' cell widths as a buffer
    (before :class:`Cells`) loads and scores as the model it was."""
    import copy

    X = make_counts(50, 3)
    old = copy.deepcopy(counts_model)
    widths = old.module_.cells.widths
    del old.module_.cells
    old.module_.register_buffer("cells", widths)
    loaded = pickle.loads(pickle.dumps(old))
    assert isinstance(loaded.module_.cells, Cells)
    np.testing.assert_allclose(loaded.score_samples(X), counts_model.score_samples(X),
                               rtol=1e-10)


def test_kmeans_reads_sparse_categories_as_their_dense_one_hot():
    """The base's k-means start reads the categories one-hot as scipy CSR (a
    missing category spread over its column's): the same rows as the dense
    one-hot, and the same labels from them as from the dense rows and as
    scikit-learn's KMeans."""
    import scipy.sparse as sp
    from sklearn.cluster import KMeans

    from skebm._em import kmeans_labels
    from skebm._mixture import _sparse_one_hot

    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 6, 300)
    one_hot = _sparse_one_hot(codes, 6)
    dense = np.eye(6)[np.maximum(codes, 0)] * (codes >= 0)[:, None] + (codes < 0)[:, None] / 6
    np.testing.assert_array_equal(one_hot.toarray(), dense)
    continuous = rng.normal(size=(300, 2)) + 2 * dense[:, :2]
    labels = kmeans_labels(sp.hstack([continuous, one_hot], format="csr"), 4, 0)
    rows = np.hstack([continuous, dense])
    assert len(np.unique(labels)) == 4
    np.testing.assert_array_equal(labels, kmeans_labels(rows, 4, 0))
    np.testing.assert_array_equal(labels, KMeans(4, n_init=1, random_state=0).fit(rows).labels_)
