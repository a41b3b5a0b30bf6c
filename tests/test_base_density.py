"""Base densities: the Gaussian mixture, the marginal map, the choice by held-out likelihood."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from skebm.base_density import GaussianMixtureDensity, MarginalGaussianization, fit_base

@pytest.mark.parametrize("n_components", [1, 3])
def test_mixture_density_and_samples(n_components):
    generator = torch.Generator().manual_seed(0)
    data = torch.cat([torch.randn(300, 2, generator=generator) + 4,
                      torch.randn(300, 2, generator=generator) * 0.5])
    noise = GaussianMixtureDensity.fit_to(data, n_components=n_components).widened(1.5)
    assert noise.n_components == n_components
    x = torch.randn(50, 2, generator=generator) * 3
    expected = np.log(sum(
        np.exp(noise.log_weights[k].item())
        * multivariate_normal(noise.means[k].numpy(), (noise.cholesky[k] @ noise.cholesky[k].T).numpy()).pdf(x.numpy())
        for k in range(noise.n_components)
    ))
    np.testing.assert_allclose(noise.log_prob(x).numpy(), expected, rtol=1e-5)
    # Samples have the mixture's mean and covariance.
    draws = noise.sample(40000, generator).double()
    weights = noise.log_weights.exp().double()
    mean = (weights[:, None] * noise.means.double()).sum(0)
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.05)
    if n_components == 1:
        # One Gaussian: the data's covariance, widened by scale**2.
        np.testing.assert_allclose(
            (noise.cholesky[0] @ noise.cholesky[0].T).numpy(), 2.25 * np.cov(data.numpy().T), rtol=1e-4
        )


def _three_components(dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(3, 3, 3, generator=generator, dtype=dtype)
    covariances = factors @ factors.transpose(-1, -2) + 0.1 * torch.eye(3, dtype=dtype)
    return GaussianMixtureDensity(torch.tensor([0.2, 0.3, 0.5], dtype=dtype),
                                  torch.randn(3, 3, generator=generator, dtype=dtype),
                                  covariances)


def test_the_mixtures_gradient_by_hand_is_autograds():
    """Langevin chains take the base's log-density and its gradient by hand,
    through the inverse factors; both are log_prob's and autograd's."""
    mixture = _three_components()
    Z = torch.randn(40, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    Z.requires_grad_(True)
    expected = mixture.log_prob(Z)
    expected_gradient, = torch.autograd.grad(expected.sum(), Z)
    log_prob, gradient = mixture.log_prob_and_gradient(Z.detach())
    torch.testing.assert_close(log_prob, expected.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(gradient, expected_gradient, rtol=0, atol=1e-10)


def test_moment_matching_and_noise():
    """Two unit Gaussians at -a and +a on the first axis, equally weighted,
    have mean 0 and covariance I + a^2 on that axis; noise of std s adds s^2
    to every variance of every component."""
    mixture = GaussianMixtureDensity(torch.tensor([0.5, 0.5], dtype=torch.float64),
                                     torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64),
                                     torch.eye(2, dtype=torch.float64).repeat(2, 1, 1))
    matched = mixture.moment_matched()
    assert matched.n_components == 1
    torch.testing.assert_close(matched.means[0], torch.zeros(2, dtype=torch.float64))
    covariance = matched.cholesky[0] @ matched.cholesky[0].T
    torch.testing.assert_close(covariance, torch.diag(torch.tensor([5.0, 1.0],
                                                                   dtype=torch.float64)))
    noisy = _three_components().with_noise(0.5)
    original = _three_components()
    torch.testing.assert_close(noisy.cholesky @ noisy.cholesky.transpose(-1, -2),
                               original.cholesky @ original.cholesky.transpose(-1, -2)
                               + 0.25 * torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(noisy.means, original.means, rtol=0, atol=0)


def test_base_is_chosen_by_held_out_likelihood():
    """Three separated clusters: a mixture of 3 or more, not one Gaussian; and on
    skewed (log-normal) features the marginal map is chosen."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    data = centres[torch.arange(900) % 3] + torch.randn(900, 2, generator=generator)
    marginals, mixture, _ = fit_base("gaussian_mixture", data, max_components=16,
                                     marginals="none", generator=generator)
    assert marginals is None and mixture.n_components >= 3
    _, one, _ = fit_base("gaussian", data, max_components=16, marginals="none",
                         generator=generator)
    assert one.n_components == 1
    skewed = torch.exp(torch.randn(900, 3, generator=generator, dtype=torch.float64))
    skewed = ((skewed - skewed.mean(0)) / skewed.std(0)).float()
    marginals, _, choice = fit_base("gaussian_mixture", skewed, max_components=16,
                                    marginals="auto", generator=generator)
    assert marginals is not None and choice[0]


def test_the_searchs_ridge_is_checked_on_the_rows_the_mixture_is_fitted_to(monkeypatch):
    """Where the search saw a subset of the rows (more than SELECTION_ROWS),
    the chosen ridge is checked on the rows the mixture is fitted to: a
    direction of variance 1e-3, which the search's 0.1 would blur, takes a
    smaller ridge; a choice given (a refit) is kept as it is."""
    import skebm.base_density as base_density

    rng = np.random.default_rng(0)
    x = rng.normal(size=6000)
    data = torch.as_tensor(np.column_stack([x, x + 0.03 * rng.normal(size=6000)]))
    data = ((data - data.mean(0)) / data.std(0)).float()
    monkeypatch.setattr(base_density, "select_base", lambda *args: ((False, 1, 0.1), None))
    generator = torch.Generator().manual_seed(0)
    _, mixture, choice = fit_base("gaussian_mixture", data, max_components=4, marginals="none",
                                  generator=generator)
    assert choice[:2] == (False, 1) and choice[2] <= 1e-3
    covariance = mixture.cholesky[0] @ mixture.cholesky[0].T
    assert torch.linalg.eigvalsh(covariance.double())[0] < 0.01
    _, _, given = fit_base("gaussian_mixture", data, max_components=4, marginals="none",
                           generator=generator, choice=(False, 1, 0.1))
    assert given == (False, 1, 0.1)


def test_the_ridge_check_stops_at_the_first_smaller_ridge_that_gains_too_little(monkeypatch):
    """The smaller ridges are tried from the largest down, each from the
    last one's fit, and the first that scores less than RIDGE_CHECK_GAIN
    better ends the check; none below ``min_ridge``."""
    import skebm.base_density as base_density

    gain = base_density.RIDGE_CHECK_GAIN
    scores = {1e-1: -2.0, 1e-2: -1.0, 1e-3: -1.0 + gain / 2, 1e-6: 0.0}
    tried = []

    def held_out_scores(train_rows, test_rows, n_components, ridge, layout, start=None):
        tried.append((ridge, start))
        return np.full(len(test_rows), scores[ridge]), ridge

    monkeypatch.setattr(base_density, "_held_out_scores", held_out_scores)
    rng = np.random.RandomState(0)
    rows = torch.zeros(30, 2)
    assert base_density._ridge_for_the_fit(rows, 2, 1e-1, None, rng, 0.0) == 1e-2
    assert tried == [(1e-1, None), (1e-2, 1e-1), (1e-3, 1e-2)]
    tried.clear()
    assert base_density._ridge_for_the_fit(rows, 2, 1e-1, None, rng, 5e-2) == 1e-1
    assert tried == []


@pytest.fixture(scope="module", params=["bounded", "skewed", "rounded"])
def marginal_map(request):
    """A map fitted to one feature: uniform, exponential, or rounded (ties)."""
    rng = np.random.RandomState(0)
    column = {"bounded": rng.uniform(size=500), "skewed": rng.exponential(size=500),
              "rounded": np.round(rng.normal(size=500), 1)}[request.param]
    column = (column - column.mean()) / column.std()
    return MarginalGaussianization.fit_to(column[:, None], rng), column


def _log_density(transform, z):
    """log f(z) of the fitted feature: log |du/dz| + log phi(u)."""
    u, log_det = transform(z[:, None])
    return log_det - 0.5 * u[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)


def test_marginal_map_is_a_normalized_change_of_variables(marginal_map):
    transform, column = marginal_map
    z = torch.linspace(-40, 40, 800_001, dtype=torch.float64)
    mass = torch.exp(_log_density(transform, z)).sum().item() * (80 / 800_000)
    assert mass == pytest.approx(1.0, abs=1e-3)
    # log |du/dz| is the derivative of the map (central differences inside cells).
    points = torch.as_tensor(np.random.RandomState(1).normal(size=200))
    h = 1e-7
    up, _ = transform((points + h)[:, None])
    down, _ = transform((points - h)[:, None])
    _, log_det = transform(points[:, None])
    np.testing.assert_allclose(((up - down) / (2 * h))[:, 0].log().numpy(), log_det.numpy(),
                               atol=1e-3)
    # The inverse undoes the map, and the data map to about N(0, 1).
    np.testing.assert_allclose(transform.inverse(transform(points[:, None])[0])[:, 0].numpy(),
                               points.numpy(), atol=1e-8)
    u, _ = transform(torch.as_tensor(column)[:, None])
    # (about: the kernel smooths sharp edges and ties, so u of the data is a little narrower)
    assert abs(u.mean().item()) < 0.1 and abs(u.std().item() - 1) < 0.2


def test_kernel_cdf_is_the_exact_kde_distribution_in_both_tails():
    """Each tail summed from its own small terms: the lower tail far below
    the knots and the upper far above them are precise to 1e-12 relative,
    down to 1e-290, where a plain 1 - F would be 0."""
    from scipy.special import log_ndtr

    from skebm.base_density import _kernel_cdf

    knots = np.random.RandomState(0).normal(size=300)
    bandwidth = 0.1
    grid = np.linspace(-9, 9, 2001)
    lower, upper = _kernel_cdf(grid, knots, bandwidth)
    t = (grid[:, None] - knots[None, :]) / bandwidth
    for computed, log_terms in ((lower, log_ndtr(t)), (upper, log_ndtr(-t))):
        exact = np.exp(np.logaddexp.reduce(log_terms, axis=1) - np.log(len(knots)))
        shown = exact > 1e-290
        assert shown.sum() > 1500 and (exact[shown] < 1e-100).any()
        np.testing.assert_allclose(computed[shown], exact[shown], rtol=1e-12)
        assert (computed[~shown] < 1e-280).all()


def test_maps_fitted_together_are_each_the_kernel_density_of_their_own_rows():
    """Folds' maps fitted together share the bandwidth chosen on all rows;
    each is the kernel density of its own rows, in both tails, and the map
    of all rows is the one fitted alone."""
    from scipy.special import log_ndtr

    from skebm.base_density import _loo_bandwidth

    rng = np.random.RandomState(0)
    data = rng.gamma(2.0, size=(240, 2))
    data = (data - data.mean(0)) / data.std(0)
    folds = [np.arange(0, 160), np.arange(80, 240), np.array([5])]
    *fold_maps, map_of_all = MarginalGaussianization.fit_together(
        data, folds, np.random.RandomState(1))
    alone = MarginalGaussianization.fit_to(data, np.random.RandomState(1))
    for name in ("grid", "cdf", "survival"):
        torch.testing.assert_close(getattr(map_of_all, name), getattr(alone, name),
                                   rtol=1e-12, atol=0)
    w, s = MarginalGaussianization.DEFENSIVE_WEIGHT, MarginalGaussianization.DEFENSIVE_SCALE
    for j in range(2):
        bandwidth = _loo_bandwidth(data[:, j])
        for rows, fitted in zip(folds, fold_maps):
            grid = fitted.grid[j].numpy()
            t = (grid[:, None] - data[rows, j]) / bandwidth
            for computed, log_terms, sign in ((fitted.cdf, log_ndtr(t), 1),
                                              (fitted.survival, log_ndtr(-t), -1)):
                log_kde = np.logaddexp.reduce(log_terms, axis=1) - np.log(len(rows))
                expected = (1 - w) * np.exp(log_kde) + w * np.exp(log_ndtr(sign * grid / s))
                np.testing.assert_allclose(computed[j].numpy(), expected, rtol=1e-11)


@pytest.mark.parametrize("kind", ["normal", "uniform", "heavy_tails", "rounded", "two_clusters"])
def test_the_bandwidth_is_the_best_leave_one_out_bandwidth_of_the_grid(kind):
    """The coarse-then-fine search chooses the bandwidth that scoring every
    bandwidth of the grid would (here the best lies 1 or 2 steps beside a
    coarse one, or on one): the leave-one-out log-likelihood, ties left
    out with the row, worked out here row by row."""
    from skebm.base_density import BANDWIDTHS, _loo_bandwidth

    rng = np.random.RandomState(1)
    values = {"normal": lambda: rng.normal(size=120), "uniform": lambda: rng.uniform(size=60),
              "heavy_tails": lambda: rng.standard_t(3, size=200),
              "rounded": lambda: np.round(3 * rng.normal(size=120)),
              "two_clusters": lambda: np.r_[rng.normal(size=60), 8 + 0.05 * rng.normal(size=60)],
              }[kind]()

    def leave_one_out(bandwidth):
        scores = []
        for value in values:
            others = values[values != value]
            density = np.exp(-0.5 * ((value - others) / bandwidth) ** 2).sum() / bandwidth
            scores.append(np.log(density / max(len(others), 1) + 1e-300))
        return np.mean(scores)

    grid = values.std() * BANDWIDTHS
    assert _loo_bandwidth(values) == pytest.approx(max(grid, key=leave_one_out), rel=1e-12)


def test_beyond_the_grid_the_map_follows_the_wide_gaussian(marginal_map):
    """Beyond the grid (20 standard deviations past the data) the density
    keeps falling, as the wide Gaussian does, and holds exactly the mass the
    grid leaves there (a clamp once gave every far value one score, and
    unbounded mass); the inverse undoes the map out there too."""
    transform, _ = marginal_map
    low, high = transform.grid[0, 0].item(), transform.grid[0, -1].item()
    far = torch.tensor([-1e12, -1e6, -1e3, low - 1, high + 1, 1e3, 1e6, 1e12],
                       dtype=torch.float64)
    log_density = _log_density(transform, far)
    assert torch.isfinite(log_density).all()
    assert (torch.diff(log_density[:4]) > 0).all() and (torch.diff(log_density[4:]) < 0).all()
    u, _ = transform(far[:, None])
    np.testing.assert_allclose(transform.inverse(u)[:, 0].numpy(), far.numpy(), rtol=1e-12)
    for start, stop, mass in ((low - 60, low, transform.cdf[0, 0]),
                              (high, high + 60, transform.survival[0, -1])):
        z = torch.linspace(start, stop, 600_001, dtype=torch.float64)
        integral = torch.trapezoid(torch.exp(_log_density(transform, z)), z)
        assert integral.item() == pytest.approx(mass.item(), rel=1e-4)


@pytest.mark.parametrize("make", [lambda: __import__("skebm").NCEDensity(),
                                  lambda: __import__("skebm").ShortRunEBM()])
def test_wide_data_is_refused_at_once(make):
    """Fewer rows than features: no full covariance exists for them, and the
    search used to run for minutes in a 10,000 x 10,000 Cholesky."""
    X = np.random.default_rng(0).normal(size=(20, 10_000))
    with pytest.raises(ValueError, match="more training rows than features.*PCA"):
        make().fit(X)


def test_a_base_the_memory_cannot_hold_is_refused_before_allocating(monkeypatch):
    import skebm._runtime

    monkeypatch.setattr(skebm._runtime, "available_memory", lambda device: 2**28)
    with pytest.raises(ValueError, match="GiB.*base_components"):
        fit_base("gaussian_mixture", torch.zeros(5000, 600), max_components=32,
                 marginals="none", generator=torch.Generator().manual_seed(0))


def test_base_search_stops_growing_the_option_far_behind(monkeypatch):
    """Cubed exponentials: the marginal map wins by many nats a row, so the
    option without it stops after its first size, and the choice is the one
    the full search makes."""
    from skebm import base_density

    rng = np.random.RandomState(0)
    data = rng.exponential(size=(300, 5)) ** 3
    data = (data - data.mean(0)) / data.std(0)
    sizes = {False: [], True: []}
    best_ridge = base_density._best_ridge

    def spy(fold_rows, n_components, layout, ridges):
        mapped = not isinstance(fold_rows[0][2], float)  # without the map, log_det is 0.0
        sizes[mapped].append(n_components)
        return best_ridge(fold_rows, n_components, layout, ridges)

    monkeypatch.setattr(base_density, "_best_ridge", spy)
    choice, _ = base_density.select_base(data, 16, (False, True), np.random.RandomState(0))
    assert choice[0] and sizes[False] == [1] and len(sizes[True]) > 1
    monkeypatch.setattr(base_density, "OPTION_MARGIN", math.inf)
    sizes = {False: [], True: []}
    assert base_density.select_base(data, 16, (False, True), np.random.RandomState(0))[0] == choice
    assert len(sizes[False]) > 1


@pytest.mark.parametrize("n_features, tol", [(2, 1e-3), (64, 0.032)])
def test_search_em_tolerance_grows_with_the_features(monkeypatch, n_features, tol):
    """The search's candidates stop EM at 0.001 nats a row, or 0.0005 per
    feature where more (a row's log-likelihood sums its features)."""
    from skebm import _em, base_density

    tolerances = []
    fit = _em.fit_gaussian_mixture

    def spy(X, *args, **kwargs):
        tolerances.append(kwargs.get("tol", 1e-3))
        return fit(X, *args, **kwargs)

    monkeypatch.setattr(base_density, "fit_gaussian_mixture", spy)
    data = np.random.RandomState(0).normal(size=(200, n_features))
    base_density.select_base(data, 2, (False,), np.random.RandomState(0))
    assert tolerances and tolerances == pytest.approx([tol] * len(tolerances))


@pytest.mark.parametrize("n_components, ridge", [(1, 1e-6), (3, 1e-3), (5, 1e-1)])
def test_numpy_em_gives_scikit_learns_mixture(n_components, ridge):
    # The base search's EM leaves out GaussianMixture's per-call checks, not its
    # iterations: from the same k-means start it must reach the same mixture.
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_wine
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    from skebm._em import fit_gaussian_mixture, kmeans_labels, mixture_log_density

    X = StandardScaler().fit_transform(load_wine().data)
    train, test = X[::2], X[1::2]
    np.testing.assert_array_equal(
        kmeans_labels(train, n_components, 0),
        KMeans(n_components, n_init=1, random_state=0).fit(train).labels_)
    peer = GaussianMixture(n_components, reg_covar=ridge, random_state=0).fit(train)
    ours = fit_gaussian_mixture(train, n_components, ridge, seed=0)
    for mine, theirs in zip(ours, (peer.weights_, peer.means_, peer.covariances_)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mixture_log_density(test, *ours), peer.score_samples(test),
                               rtol=1e-8)
    # Warm-started from a fit with another ridge, as the search does.
    warm = fit_gaussian_mixture(train, n_components, 10 * ridge, start=ours)
    peer = GaussianMixture(n_components, reg_covar=10 * ridge, random_state=0,
                           weights_init=ours[0], means_init=ours[1],
                           precisions_init=np.linalg.inv(ours[2])).fit(train)
    np.testing.assert_allclose(mixture_log_density(test, *warm), peer.score_samples(test),
                               rtol=1e-6)


def test_a_column_of_one_value_maps_the_same_in_float32_and_float64():
    """Training rows are float32, inference rows float64: the map of a
    column whose rows are all one value (its other values held out) must not
    jump between the two roundings of that value."""
    value = -0.022366272042130077  # 3.5 standardized beside one 4.25 in 2,000 rows
    column = np.full((1800, 1), value)
    marginal = MarginalGaussianization.fit_to(column, np.random.RandomState(0))
    mapped = [marginal(torch.as_tensor(column[:1], dtype=dtype))[0].double()
              for dtype in (torch.float32, torch.float64)]
    torch.testing.assert_close(mapped[0], mapped[1], rtol=0, atol=1e-3)


def test_a_column_constant_but_for_one_row_gets_a_sane_density():
    """NCEDensity on such a table scored its typical rows -29,544 nats (the
    mixture +0.6): the row held out for validation left the column constant.
    The constant is a point mass at the column's least value, whose
    probability is about 1: the typical row scores about the density of
    its two standard normal columns."""
    from scipy.stats import norm

    from skebm import NCEDensity

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=2000), rng.normal(size=2000), np.full(2000, 3.5)])
    X[7, 2] = 4.25
    scores = NCEDensity(max_iter=3, random_state=0).fit(X).score_samples(X)
    normal = norm.logpdf(X[:, :2]).sum(1)
    assert abs(np.median(scores - normal)) < 0.2


def test_the_search_keeps_to_the_smallest_ridge_it_is_given():
    """Three tight clusters, whose best ridge is the smallest: with a floor,
    the choice is the floor."""
    rng = np.random.RandomState(0)
    data = np.repeat(rng.normal(scale=3, size=(3, 2)), 100, axis=0)
    data += 1e-3 * rng.normal(size=(300, 2))
    data = (data - data.mean(0)) / data.std(0)
    assert fit_base("gaussian_mixture", torch.as_tensor(data), max_components=8,
                    marginals="none", generator=torch.Generator().manual_seed(0))[2][2] < 1e-3
    choice = fit_base("gaussian_mixture", torch.as_tensor(data), max_components=8,
                      marginals="none", generator=torch.Generator().manual_seed(0),
                      min_ridge=1e-2)[2]
    assert choice[2] == 1e-2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_search_finds_a_ridge_between_the_tiny_and_the_coarse(seed):
    """Rows with tight directions (standard deviation 0.02 in 5 of 10),
    whose best ridge lies between 1e-6 and 1e-3: the chosen base scores on
    new rows within 0.01 nats of the best of a fine grid of ridges. With
    nothing tried between 1e-6 and 1e-3, it trailed by 0.02-0.03."""
    from skebm._em import fit_gaussian_mixture, mixture_log_density
    from skebm.base_density import select_base

    rng = np.random.RandomState(seed)
    scales = np.r_[np.ones(5), np.full(5, 0.02)]
    rotation = np.linalg.qr(rng.normal(size=(10, 10)))[0]
    train, test = ((rng.normal(size=(n, 10)) * scales) @ rotation.T for n in (200, 5000))
    mean, scale = train.mean(0), train.std(0)
    train, test = (train - mean) / scale, (test - mean) / scale
    held_out = lambda ridge: mixture_log_density(
        test, *fit_gaussian_mixture(train, 1, ridge, seed=0)).mean()
    ridge = select_base(train, 1, (False,), np.random.RandomState(0))[0][2]
    assert held_out(ridge) > max(map(held_out, np.logspace(-6, -2, 9))) - 0.01


def smooth_curves(n_rows, seed):
    """Rows like a yearly indicator of countries (fertility rates): 52 years
    of a smooth decline from each row's level, so neighbouring columns are
    nearly equal and the covariance's smallest eigenvalues lie far below the
    search's first ridge (1e-6); the early years of a few rows unrecorded, one
    row with none at all. Standardized."""
    rng = np.random.default_rng(seed)
    years = np.linspace(0, 1, 52)
    level, drop = rng.uniform(4, 7, n_rows), rng.uniform(0, 4, n_rows)
    centre, width = rng.uniform(0.2, 0.9, n_rows), rng.uniform(0.05, 0.3, n_rows)
    X = level[:, None] - drop[:, None] / (1 + np.exp(-(years - centre[:, None]) / width[:, None]))
    X = X + 1e-4 * rng.normal(size=X.shape)
    Z = (X - X.mean(0)) / X.std(0)
    for row, unrecorded in zip(rng.choice(n_rows, 6, replace=False), [20, 25, 30, 35, 45, 52]):
        Z[row, :unrecorded] = np.nan
    return Z


@pytest.mark.parametrize("seed", range(6))
def test_a_near_singular_mixture_stays_positive_definite(seed):
    """A mixture of two components fitted to 66 such rows with the ridge of
    1e-6: its covariances, rounded to float32 and multiplied back from
    float32 factors, were indefinite on 5 of these 6 seeds, and scoring the rows
    failed in the Cholesky factorization. Factored and multiplied in float64,
    they score every row."""
    Z = torch.as_tensor(smooth_curves(66, seed))
    base = GaussianMixtureDensity.fit_to(Z, n_components=2, ridge=1e-6, max_iter=25, tol=1e-2,
                                         seed=seed)
    assert torch.isfinite(base.log_prob(Z.to(torch.float32))).all()
    assert torch.isfinite(base.widened(1.5).log_prob(Z.to(torch.float32))).all()
