import math
import pickle

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

import skebm._shortrun_model as shortrun_model
from skebm import ConvergenceDivergedError, DensityImputer, ShortRunEBM
from skebm.datasets import (
    _EIGHT_GAUSSIANS_SHRINK,
    _EIGHT_GAUSSIANS_STD,
    _eight_gaussians_centres,
    make_toy_2d,
)
from skebm.partition import annealed_importance_log_partition, grid_log_integral
from skebm.samplers import _ChainStatistics, langevin, with_gradient
from skebm.shortrun import _VALIDATION_DRAWS

# Small and quick: the checks fit dozens of times on tiny data.
QUICK = dict(hidden_layer_sizes=(16, 16), fourier_features=8, max_iter=3, n_steps=5,
             buffer_size=100, n_ais_chains=10, n_ais_temperatures=20, random_state=0)
# Tests below that add device="cpu" rest on what seed 0 gives on the CPU's
# stream (a one-component base, early stopping past epoch 0); a GPU's stream
# is another seed's.


@parametrize_with_checks([ShortRunEBM(**QUICK)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


CENTRES = _eight_gaussians_centres() / _EIGHT_GAUSSIANS_SHRINK
MODE_STD = _EIGHT_GAUSSIANS_STD / _EIGHT_GAUSSIANS_SHRINK


@pytest.fixture(scope="module")
def fitted(eight_gaussians):
    X_train, _ = eight_gaussians
    return ShortRunEBM(max_iter=30, random_state=0).fit(X_train)


@pytest.fixture(scope="module", params=["gaussian", "gaussian_mixture"])
def moved(request, eight_gaussians):
    """A model on each base whose energy matters: three epochs of training,
    and on the mixture (which starts so near 8gaussians that a trained
    energy stays small) the output layer scaled up."""
    X_train, _ = eight_gaussians
    model = ShortRunEBM(base=request.param, early_stopping=False, max_iter=3,
                        random_state=0).fit(X_train)
    assert (model.base_n_components_ > 1) == (request.param == "gaussian_mixture")
    if request.param == "gaussian_mixture":
        with torch.no_grad():
            model.module_.energy.layers[-1].weight.mul_(300.0)
    return model


def test_score_samples_integrates_to_one(moved):
    """log Z by its own grid in whitened coordinates; checked here on an
    independent grid in the data's units."""
    assert moved.log_partition_method_ == "grid"
    mass = np.exp(grid_log_integral(moved.score_samples, ((-5, 5), (-5, 5)), n_points=300))
    assert abs(mass - 1) < 0.05


def test_ais_agrees_with_the_grid(moved):
    """The AIS estimate of log Z (used from three features on, with the
    gradients of the network and of the base by hand) against the grid on a
    fitted 2-D model; the values and gradients by hand against autograd's,
    and AIS on autograd's within the estimates' errors. (Not the chains step
    by step: an acceptance decided within rounding sends a chain elsewhere,
    as one of 200 chains went at the 244th of 1000 steps.)"""
    fitted, model = moved, moved._inference_module()

    def ais(log_ratio, log_base=model.base_log_density_and_gradient):
        return annealed_importance_log_partition(
            model.draw_base, log_base, log_ratio,
            n_chains=200, n_temperatures=1000,
            generator=torch.Generator(fitted.device_).manual_seed(0))

    log_z, log_z_std = ais(lambda U: tuple(-term for term in model.energy_and_gradient(U)))
    assert log_z_std < 0.1
    assert abs(log_z - fitted.log_partition_) < 3 * log_z_std + 0.05
    assert abs(fitted.log_partition_) > 0.2  # the model has moved off its Gaussian
    energy = with_gradient(lambda U: model.energy(model.to_data(U)))
    log_base = with_gradient(lambda U: model.base.log_prob(model.to_data(U)))
    U = 1.5 * model.draw_base(500, torch.Generator(fitted.device_).manual_seed(1))
    for by_hand, by_autograd in zip(model.energy_and_gradient(U), energy(U)):
        np.testing.assert_allclose(by_hand.cpu(), by_autograd.cpu(), rtol=1e-9, atol=1e-9)
    (value, gradient), (value_autograd, gradient_autograd) = (
        model.base_log_density_and_gradient(U), log_base(U))
    # By hand, the base is normalized in u: its values differ from those in z
    # by a constant. The mixture's go through its inverse factors, taken in
    # float32 before the float64 copy: alike to about 1e-7, not 1e-15.
    offset = value - value_autograd
    assert offset.max() - offset.min() < 1e-5
    np.testing.assert_allclose(gradient.cpu(), gradient_autograd.cpu(), rtol=1e-6,
                               atol=1e-6 * gradient_autograd.abs().max().item())
    log_z_autograd, log_z_autograd_std = ais(
        with_gradient(lambda U: -model.energy(model.to_data(U))), log_base)
    assert abs(log_z_autograd - log_z) < 3 * math.hypot(log_z_std, log_z_autograd_std)


def test_learns_the_density_and_samples_land_on_the_modes(fitted, eight_gaussians):
    from skebm.datasets import eight_gaussians_log_density

    _, X_test = eight_gaussians
    # The Gaussian the model starts from scores about -4.0 nats per point.
    assert fitted.score(X_test) > eight_gaussians_log_density(X_test).mean() - 0.3
    samples = fitted.sample(2000, random_state=1)
    distance = np.sqrt(((samples[:, None, :] - CENTRES[None]) ** 2).sum(-1)).min(1)
    assert np.mean(distance < 3 * MODE_STD) > 0.9
    # Every mode gets its share (1/8 each; at least half of it).
    nearest = np.argmin(((samples[:, None, :] - CENTRES[None]) ** 2).sum(-1), axis=1)
    assert np.bincount(nearest, minlength=8).min() > 2000 / 16


def test_history_reports_the_chains(fitted):
    record = fitted.history_[-1]
    assert {"loss", "energy_gap", "data_energy", "chain_grad_norm"} <= set(record)
    assert abs(record["energy_gap"]) < 2.0 and record["chain_acceptance"] > 0.9
    assert record["chain_grad_norm"] > 0


def test_a_cell_beyond_the_squares_of_float64_is_standardized():
    """One cell of 1e160 (its square overflows float64) made the column's
    scale inf and every score -inf: the standardization must not square
    the values as they are."""
    X = np.random.default_rng(0).normal(size=(200, 2))
    X[5, 1] = 1e160
    model = ShortRunEBM(max_iter=2, random_state=0).fit(X)
    assert np.all(np.isfinite(model.scale_))
    assert np.all(np.isfinite(model.score_samples(X[:10])))


def test_exploding_gap_warns(eight_gaussians):
    X_train, _ = eight_gaussians
    with pytest.warns(ConvergenceWarning, match="energy gap"):
        ShortRunEBM(max_iter=1, n_steps=2, step_size=1e-6, learning_rate=0.05, alpha=0,
                    random_state=0).fit(X_train)


def test_langevin_samples_a_known_gaussian():
    """At temperature 1 and a small step, unadjusted Langevin draws N(m, S)
    up to a bias of order step_size."""
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    covariance = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    precision = torch.linalg.inv(covariance)
    energy = lambda z: 0.5 * (((z - mean) @ precision) * (z - mean)).sum(1)
    generator = torch.Generator().manual_seed(0)
    start = torch.zeros(20000, 2, dtype=torch.float64)
    step = 0.01
    z, stats = langevin(with_gradient(energy), start, 1000, step, math.sqrt(2 * step), generator)
    np.testing.assert_allclose(z.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(torch.cov(z.T), covariance, atol=0.04)
    assert stats["grad_norm"] > 0 and 0.99 < stats["acceptance"] <= 1
    # At temperature T the covariance is T times as large.
    cold, _ = langevin(with_gradient(energy), start, 1000, step, math.sqrt(2 * step * 0.25),
                        generator)
    np.testing.assert_allclose(torch.cov(cold.T), 0.25 * covariance, atol=0.02)


@pytest.mark.parametrize("block_elements", [2, 2**20])
def test_langevin_statistics_are_those_of_each_step(monkeypatch, block_elements):
    """The statistics, counted a block of steps at a time, are the mean
    gradient norm and the mean Metropolis (MALA) acceptance of each step,
    written here step by step from the chains' path."""
    monkeypatch.setattr(_ChainStatistics, "BLOCK_ELEMENTS", block_elements)
    energy = lambda z: (z**4).sum(1) + 0.5 * (z**2).sum(1)
    gradient = lambda z: 4 * z**3 + z
    start = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    step, noise, n_steps = 0.05, 0.4, 6
    # The same generator seed replays the same noise: the path, step by step.
    path = [start] + [langevin(with_gradient(energy), start, t, step, noise,
                               torch.Generator().manual_seed(1))[0]
                      for t in range(1, n_steps)]
    _, stats = langevin(with_gradient(energy), start, n_steps, step, noise,
                        torch.Generator().manual_seed(1))
    temperature = noise**2 / (2 * step)
    acceptances = []
    for z, z_next in zip(path[:-1], path[1:]):
        log_q_forward = -((z_next - z + step * gradient(z)) ** 2).sum(1) / (2 * noise**2)
        log_q_backward = -((z - z_next + step * gradient(z_next)) ** 2).sum(1) / (2 * noise**2)
        log_ratio = (energy(z) - energy(z_next)) / temperature + log_q_backward - log_q_forward
        acceptances.append(torch.exp(log_ratio.clamp(max=0)).mean())
    norms = [gradient(z).norm(dim=1).mean() for z in path]
    np.testing.assert_allclose(stats["acceptance"], torch.stack(acceptances).mean(), rtol=1e-10)
    np.testing.assert_allclose(stats["grad_norm"], torch.stack(norms).mean(), rtol=1e-10)
    assert 0.1 < stats["acceptance"] < 0.99  # a step large enough for the test to see


def test_langevin_clips_gradients():
    energy = lambda z: 1e6 * (z**2).sum(1)
    z, _ = langevin(with_gradient(energy), torch.ones(3, 2), 1, 1.0, 0.0, None, grad_clip=1.0)
    moved = (torch.ones(3, 2) - z).norm(dim=1)
    np.testing.assert_allclose(moved, 1.0, rtol=1e-6)


def test_persistent_sampling_continues_from_the_buffer(eight_gaussians):
    X_train, _ = eight_gaussians
    model = ShortRunEBM(max_iter=2, buffer_size=500, step_size=1e-4, random_state=0)
    model.fit(X_train)
    assert model.module_.buffer.shape == (500, 2)
    # Move every chain of the buffer to one point: a sample of a few steps stays near it.
    point = model.module_.to_whitened(torch.tensor([[2.0, 2.0]], device=model.device_))
    model.module_.buffer[:] = point
    samples = model.sample(200, n_steps=1, random_state=0)
    target = np.array([2.0, 2.0]) * model.scale_ + model.mean_
    assert np.abs(samples - target).max() < 0.2
    assert samples.std(0).min() > 0  # chains, not copies
    # The draw leaves the fitted buffer alone.
    assert torch.equal(model.module_.buffer, point.expand(500, 2))


def test_short_run_mode_has_no_buffer_and_samples_from_init(eight_gaussians):
    X_train, _ = eight_gaussians
    model = ShortRunEBM(max_iter=2, persistent=False, init="uniform", step_size=1e-8,
                        random_state=0)
    model.fit(X_train)
    assert model.module_.buffer.shape == (0, 2)
    samples = model.sample(2000, n_steps=1, random_state=0)
    # One tiny step from uniform over the data's box: still uniform over it.
    low, high = X_train.min(0), X_train.max(0)
    assert np.all(samples > low - 0.01) and np.all(samples < high + 0.01)
    assert np.all(np.abs(samples.mean(0) - (low + high) / 2) < 0.2)


def test_short_runs_start_from_the_mixture(eight_gaussians):
    """Without a buffer, each draw is a fresh run from the base: with a
    mixture fitted to 8gaussians, one short step from its draws lands on
    the modes."""
    X_train, _ = eight_gaussians
    model = ShortRunEBM(max_iter=2, persistent=False, random_state=0).fit(X_train)
    assert model.module_.buffer.shape == (0, 2) and model.base_n_components_ >= 8
    samples = model.sample(2000, n_steps=1, random_state=0)
    nearest = np.linalg.norm(samples[:, None] - CENTRES[None], axis=2).min(1)
    assert np.mean(nearest < 3 * MODE_STD) > 0.9


@pytest.fixture(scope="module")
def correlated_gaussian():
    rng = np.random.RandomState(0)
    covariance = np.array([[1.0, 0.8], [0.8, 1.0]])
    return rng.multivariate_normal([0.0, 0.0], covariance, size=3000)


def test_sample_conditional_keeps_the_known_values_and_draws_the_conditional(
        correlated_gaussian):
    model = ShortRunEBM(max_iter=5, random_state=0).fit(correlated_gaussian)
    X = np.full((4000, 2), np.nan)
    X[:, 0] = 1.0
    completed = model.sample_conditional(X, random_state=0)
    np.testing.assert_array_equal(completed[:, 0], 1.0)  # exactly as given
    # x2 | x1 = 1 ~ N(0.8, 0.36) for the true Gaussian the model learned.
    assert abs(completed[:, 1].mean() - 0.8) < 0.1
    assert abs(completed[:, 1].std() - 0.6) < 0.08
    # A boolean mask instead of NaN, rows with different masks, a row with nothing to draw.
    X = np.array([[1.0, 5.0], [7.0, 1.0], [0.5, 0.5]])
    mask = np.array([[False, True], [True, False], [False, False]])
    completed = model.sample_conditional(X, mask, random_state=0)
    np.testing.assert_array_equal(completed[~mask], X[~mask])
    assert abs(completed[0, 1] - 0.8) < 2.5 and abs(completed[1, 0] - 0.8) < 2.5
    # Reproducible.
    np.testing.assert_array_equal(model.sample_conditional(X, mask, random_state=0), completed)
    # Rows freeing different cells run side by side, each from its own conditional;
    # rows freeing one cell beside rows freeing two have a padding coordinate.
    X = np.ones((3000, 2))
    mask = np.zeros(X.shape, dtype=bool)
    mask[:1000, 1] = mask[1000:2000, 0] = mask[2000:] = True
    completed = model.sample_conditional(X, mask, random_state=0)
    for rows, column in ((slice(0, 1000), 1), (slice(1000, 2000), 0)):
        assert abs(completed[rows, column].mean() - 0.8) < 0.1
        assert abs(completed[rows, column].std() - 0.6) < 0.08
    both = completed[2000:]
    assert np.abs(both.mean(0)).max() < 0.15 and np.abs(both.std(0) - 1).max() < 0.1
    assert abs(np.corrcoef(both.T)[0, 1] - 0.8) < 0.1


@pytest.mark.parametrize("x", [-0.3, 1.5])
def test_sample_conditional_follows_the_models_conditional_across_its_modes(fitted, x):
    """Given x, y has a mode above and one below on 8gaussians; Langevin
    chains seldom cross between them, so the draws' share of each comes from
    the resampled start. The draws' histogram against the model's own
    conditional on a grid (exact draws: a total variation of about 0.03)."""
    edges = np.linspace(-6, 6, 41)
    fine = np.linspace(-6, 6, 801)
    middles = (fine[1:] + fine[:-1]) / 2
    density = np.exp(fitted.score_samples(np.column_stack([np.full(800, x), middles])))
    conditional = density.reshape(40, 20).sum(1) / density.sum()
    rows = np.column_stack([np.full(2000, x), np.full(2000, np.nan)])
    drawn = fitted.sample_conditional(rows, n_steps=50, random_state=0)[:, 1]
    counts = np.histogram(drawn, edges)[0] / 2000
    assert 0.5 * np.abs(counts - conditional).sum() + 0.5 * (1 - counts.sum()) < 0.08


def _one_or_two_clusters(two):
    rng = np.random.RandomState(0)
    X = rng.multivariate_normal(np.zeros(3), np.eye(3) + 0.6, size=300)
    if two:  # the base is then a mixture
        X[:150] += 6.0
    return X


@pytest.mark.parametrize("two_clusters", [False, True])
def test_the_conditional_chains_gradient_by_hand_is_the_energys(monkeypatch, two_clusters):
    """sample_conditional's chains move the freed cells in whitened
    coordinates of the frame's conditional; the gradient they take by hand
    (the network's and the base's, through F^-T, padding included) is the
    energy's, by central differences in float64."""
    X = _one_or_two_clusters(two_clusters)
    model = ShortRunEBM(**{**QUICK, "device": "cpu", "early_stopping": False}).fit(X)
    assert (model.base_n_components_ > 1) == two_clusters
    with torch.no_grad():  # an energy that matters beside the Gaussian's |v|^2 / 2
        model.module_.energy.layers[-1].weight.mul_(300.0)
    taken = []

    def capture(energy_and_gradient, start, *args, **kwargs):
        taken.append((energy_and_gradient, start))
        return start, None

    monkeypatch.setattr(shortrun_model, "langevin", capture)
    rows = X[:6].copy()
    rows[:3, 0] = np.nan  # one freed cell beside two: a padding coordinate
    rows[3:, 1:] = np.nan
    model.sample_conditional(rows, random_state=0)
    energy_and_gradient, start = taken[0]
    V = torch.randn(start.shape, dtype=start.dtype, generator=torch.Generator().manual_seed(0))
    grad = energy_and_gradient(V)[1]
    expected = torch.zeros_like(V)
    for j in range(V.shape[1]):
        step = torch.zeros_like(V)
        step[:, j] = 1e-6
        expected[:, j] = (energy_and_gradient(V + step)[0]
                          - energy_and_gradient(V - step)[0]) / 2e-6
    if not two_clusters:  # the network's part beside the Gaussian's
        assert (grad - V).abs().max() > 0.5
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-7)


def test_the_training_chains_energy_by_hand_is_the_models():
    """Training's chains run in the frame's whitened coordinates on
    -log b(z(u)) + E(z(u)), b a mixture: value (up to a constant) and
    gradient by hand are the model's, by autograd in float64."""
    model = ShortRunEBM(**{**QUICK, "device": "cpu", "early_stopping": False})
    model.fit(_one_or_two_clusters(True))
    module = model._inference_module()
    with torch.no_grad():
        module.energy.layers[-1].weight.mul_(300.0)
    U = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    energy, grad = module.whitened_energy_and_gradient(U)
    U.requires_grad_(True)
    Z = module.to_data(U)
    expected = module.energy(Z) - module.base.log_prob(Z)
    expected_grad, = torch.autograd.grad(expected.sum(), U)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(energy - energy[0], (expected - expected[0]).detach(),
                               rtol=0, atol=1e-6)
    assert (grad + module.base_log_density_and_gradient(U.detach())[1]).abs().max() > 0.5


def test_sample_conditional_bad_input(correlated_gaussian):
    model = ShortRunEBM(**QUICK).fit(correlated_gaussian)
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        model.sample_conditional(np.zeros((2, 2)), np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        model.sample_conditional(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="known values must be finite"):
        model.sample_conditional([[np.nan, 1.0]], np.array([[False, True]]))
    with pytest.raises(ValueError, match="2 features"):
        model.sample_conditional(np.zeros((2, 3)))


def test_text_is_refused_with_a_pointer_to_ncedensity(correlated_gaussian):
    """Text columns get an error that says who takes them, at fit and after;
    not an imputer, since ShortRunEBM takes missing cells itself."""
    pd = pytest.importorskip("pandas")
    text = pd.DataFrame({"x": correlated_gaussian[:200, 0], "kind": ["a", "b"] * 100})
    with pytest.raises(ValueError, match=r"does not take text .*'a'.*OneHotEncoder") as error:
        ShortRunEBM(**QUICK).fit(text)
    assert "Imputer" not in str(error.value)
    model = ShortRunEBM(**QUICK).fit(text[["x"]].assign(y=correlated_gaussian[:200, 1]))
    with pytest.raises(ValueError, match="NCEDensity models tables"):
        model.score_samples(text.rename(columns={"kind": "y"}))


def test_missing_cells_are_the_gaussians_marginal_while_the_energy_is_zero(correlated_gaussian):
    """With E = 0 the model is its Gaussian: a row with a missing cell
    scores the Gaussian's marginal density of its observed cell, exactly,
    and the cell's conditional mean is the Gaussian's."""
    model = ShortRunEBM(**QUICK).fit(correlated_gaussian)
    with torch.no_grad():
        for parameter in model.module_.energy.parameters():
            parameter.zero_()
    base = model.module_.base
    mean = model.mean_ + model.scale_ * base.means[0].double().cpu().numpy()
    factor = base.cholesky[0].double().cpu().numpy()
    covariance = np.outer(model.scale_, model.scale_) * (factor @ factor.T)
    rows = correlated_gaussian[:5].copy()
    rows[:, 1] = np.nan
    expected = norm.logpdf(rows[:, 0], loc=mean[0], scale=np.sqrt(covariance[0, 0]))
    np.testing.assert_allclose(model.score_samples(rows), expected, atol=1e-6)
    # Its conditional mean: 256 equally weighted draws of the exact conditional.
    slope = covariance[1, 0] / covariance[0, 0]
    exact = mean[1] + slope * (rows[:, 0] - mean[0])
    spread = np.sqrt(covariance[1, 1] - slope * covariance[1, 0])
    filled = model.conditional_mean(rows, random_state=0)
    np.testing.assert_array_equal(filled[:, 0], rows[:, 0])
    assert np.abs(filled[:, 1] - exact).max() < 4 * spread / np.sqrt(256)


def test_a_spectrally_normed_model_pickles(correlated_gaussian):
    """torch refuses to pickle a parametrized module: the fitted model
    pickles with its spectral norms taken off and put back, their
    power-iteration vectors included, and the original is left whole. A warm
    start goes on from the copy as from the original."""
    model = ShortRunEBM(**{**QUICK, "spectral_norm": True}).fit(correlated_gaussian)
    X = correlated_gaussian[:50]
    copy = pickle.loads(pickle.dumps(model))
    original, copied = model.module_.state_dict(), copy.module_.state_dict()
    assert original.keys() == copied.keys() and any("_u" in key for key in original)
    for key in original:
        torch.testing.assert_close(copied[key], original[key], rtol=0, atol=0)
    np.testing.assert_allclose(copy.score_samples(X), model.score_samples(X), rtol=1e-12)
    for fitted in (model, copy):
        fitted.set_params(warm_start=True, max_iter=1).fit(correlated_gaussian)
    np.testing.assert_allclose(copy.score_samples(X), model.score_samples(X), rtol=1e-9)


def test_the_gaussian_alone_has_log_z_0_without_ais(monkeypatch):
    """A zero energy (what early stopping keeps when no epoch beats the
    Gaussian) has log Z = 0 exactly: no AIS is run for it, and the scores
    are the Gaussian's."""
    X = np.random.RandomState(0).multivariate_normal(np.zeros(3), np.eye(3) + 0.5, size=300)
    model = ShortRunEBM(**QUICK, device="cpu").fit(X)  # its stream: one component
    with torch.no_grad():
        model.module_.energy.layers[-1].weight.zero_()
        model.module_.energy.layers[-1].bias.zero_()

    def refused(*args, **kwargs):
        raise AssertionError("AIS ran for a zero energy")

    monkeypatch.setattr(shortrun_model, "annealed_importance_log_partition", refused)
    assert model.log_partition_method_ == "ais"
    assert (model.log_partition_, model.log_partition_std_) == (0.0, 0.0)
    base = model.module_.base
    mean = model.mean_ + model.scale_ * base.means[0].double().cpu().numpy()
    factor = model.scale_[:, None] * base.cholesky[0].double().cpu().numpy()
    expected = multivariate_normal(mean, factor @ factor.T).logpdf(X[:5])
    np.testing.assert_allclose(model.score_samples(X[:5]), expected, atol=1e-6)


@pytest.mark.parametrize("verbose, watching, shown", [
    (1, False, True), (0, True, True), (0, False, False), (-1, True, False)])
def test_a_long_first_score_shows_a_bar(monkeypatch, capsys, verbose, watching, shown):
    """AIS's temperatures get a bar by the fit's rule (here after 0 seconds
    for verbose=0); the same log Z with or without it."""
    import skebm._base

    monkeypatch.setattr(skebm._base, "QUIET_BAR_DELAY", 0.0)
    monkeypatch.setattr(skebm._base, "watched", lambda: watching)
    X = np.random.RandomState(0).multivariate_normal(np.zeros(3), np.eye(3) + 0.5, size=200)
    model = ShortRunEBM(**{**QUICK, "device": "cpu", "verbose": -1}).fit(X)
    quiet = model.log_partition_
    model = ShortRunEBM(**{**QUICK, "device": "cpu", "verbose": verbose}).fit(X)
    capsys.readouterr()
    assert model.log_partition_ == quiet
    err = capsys.readouterr().err
    assert ("ShortRunEBM log Z by AIS" in err) == shown
    if verbose > 0:
        assert f"{QUICK['n_ais_temperatures']}/{QUICK['n_ais_temperatures']}" in err


def test_missing_cells_score_the_observed_ones(fitted, eight_gaussians):
    """A row with a missing cell scores the log-density of its observed one
    (importance sampling from the Gaussian's conditional), against the grid
    integral of the row's density over the missing cell. Each row's estimate
    errs by up to a few tenths of a nat (128 draws of a one-mode proposal
    for eight modes); their mean is close."""
    rows = eight_gaussians[1][:40]
    grid = np.linspace(-5, 5, 2001)
    for column in (0, 1):
        holes = rows.copy()
        holes[:, column] = np.nan
        points = np.repeat(rows, len(grid), 0)
        points[:, column] = np.tile(grid, len(rows))
        exact = (logsumexp(fitted.score_samples(points).reshape(len(rows), -1), axis=1)
                 + np.log(grid[1] - grid[0]))
        error = fitted.score_samples(holes) - exact
        assert abs(error.mean()) < 0.15
        assert np.abs(error).max() < 1.0


def test_a_rows_score_does_not_depend_on_its_batch(correlated_gaussian, assert_batch_free):
    """A row with a missing cell scores the same alone as in any batch, and
    gets the same conditional mean: its completions come from numbers common
    to every row, not from a stream that the rows before it consume."""
    model = ShortRunEBM(**QUICK, early_stopping=False).fit(correlated_gaussian[:600])
    assert not model.module_.energy.is_zero()
    rows = correlated_gaussian[600:750].copy()
    rows[np.arange(len(rows)), np.arange(len(rows)) % 2] = np.nan
    assert_batch_free(model.score_samples, rows)
    assert_batch_free(lambda X: model.conditional_mean(X, random_state=0), rows)
    assert_batch_free(model.conditional_mean, rows)  # None: the seed drawn at fit


def test_fit_takes_missing_cells(correlated_gaussian):
    """Rows with missing cells train, their cells drawn from the model's
    conditional: the model scores held-out rows as one fitted to the
    complete rows does, and DensityImputer fills the cells with it near the
    Gaussian's conditional mean. A column never observed is refused by
    name."""
    train, test = correlated_gaussian[:1000], correlated_gaussian[1000:2000]
    holes = train.copy()
    holes[np.random.RandomState(1).rand(*holes.shape) < 0.2] = np.nan
    settings = {**QUICK, "max_iter": 5}
    with_holes = ShortRunEBM(**settings).fit(holes)
    complete = ShortRunEBM(**settings).fit(train)
    assert abs(with_holes.score(test) - complete.score(test)) < 0.1
    filled = DensityImputer(ShortRunEBM(**settings), random_state=0).fit(holes).transform(holes)
    missing = np.isnan(holes)
    np.testing.assert_array_equal(filled[~missing], holes[~missing])
    only_second = missing[:, 1] & ~missing[:, 0]
    conditional_mean = 0.8 * holes[only_second, 0]
    assert np.sqrt(np.mean((filled[only_second, 1] - conditional_mean) ** 2)) < 0.3
    holes[:, 1] = np.nan
    with pytest.raises(ValueError, match="Column 1 has no observed value"):
        ShortRunEBM(**QUICK).fit(holes)


def test_images_use_a_cnn_and_ais():
    X = load_digits().data[:300] / 16
    model = ShortRunEBM(image_shape=(1, 8, 8), hidden_layer_sizes=(8, 8), max_iter=2,
                        n_steps=5, buffer_size=200, n_ais_chains=20, n_ais_temperatures=50,
                        random_state=0).fit(X)
    assert type(model.module_.energy).__name__ == "ConvEnergy"
    assert model.log_partition_method_ == "ais"
    assert np.isfinite(model.score(X)) and np.isfinite(model.log_partition_std_)
    # One mean and scale for every pixel.
    assert np.unique(model.mean_).size == 1 and np.unique(model.scale_).size == 1
    assert model.sample(3, random_state=0).shape == (3, 64)
    with pytest.raises(ValueError, match="values per image"):
        ShortRunEBM(image_shape=(1, 8, 7), max_iter=1).fit(X)


def test_spectral_norm_is_reproducible_and_leaves_the_global_stream(eight_gaussians):
    X_train, _ = eight_gaussians
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models = [ShortRunEBM(spectral_norm=True, max_iter=1, n_steps=3, buffer_size=100,
                          random_state=0).fit(X_train[:300]) for _ in range(2)]
    assert torch.equal(torch.rand(3), expected)
    np.testing.assert_array_equal(models[0].score_samples(X_train[:20]),
                                  models[1].score_samples(X_train[:20]))


def test_fit_failure_leaves_the_model_as_it_was(eight_gaussians):
    X_train, _ = eight_gaussians
    model = ShortRunEBM(**QUICK).fit(X_train[:200])
    fitted_state = dict(vars(model))
    scores = model.score_samples(X_train[:20])
    with pytest.raises(ValueError, match="values per image"):
        model.set_params(image_shape=(1, 1, 3)).fit(X_train[:200])
    model.set_params(image_shape=None)
    assert vars(model).keys() == fitted_state.keys()
    assert all(vars(model)[key] is value for key, value in fitted_state.items())
    np.testing.assert_array_equal(model.score_samples(X_train[:20]), scores)


def test_early_stopping_keeps_the_best_epoch_and_its_criterion_matches_the_grid():
    """Early stopping ends the fit when the held-out likelihood stalls and
    keeps the best epoch; the criterion's log Z (importance sampling from the
    base, the same draws every epoch) agrees with the exact grid integral.
    On the Gaussian base, where the energy moves far (on a mixture, log Z
    stays near 0)."""
    X = make_toy_2d("moons", 1200, random_state=0)
    model = ShortRunEBM(base="gaussian", hidden_layer_sizes=(32, 32), max_iter=200,
                        n_iter_no_change=3, n_steps=10, random_state=0).fit(X)
    assert model.n_iter_ < 200 and len(model.history_) == model.n_iter_
    scores = [record["validation_score"] for record in model.history_]
    assert np.argmax(scores) < len(scores) - 1  # it stopped after the best epoch
    module = model._inference_module()
    with torch.no_grad():
        sampled = module.sampled_log_partition(module.base_draws(
            _VALIDATION_DRAWS, torch.Generator(model.device_).manual_seed(0)))
    assert abs(sampled - model.log_partition_) < 0.05


def _flat_parameters(network):
    return torch.cat([param.detach().flatten() for param in network.parameters()]).double().cpu()


class _Recorded(ShortRunEBM):
    """Records the trained parameters (at the start, then after each update)
    and the validation rows."""

    def _build(self, Z, generator, scale):
        module = super()._build(Z, generator, scale)
        self.trained_ = [_flat_parameters(module.energy)]
        return module

    def _training_step(self, module, batch, generator, rule):
        step = super()._training_step(module, batch, generator, rule)
        self.trained_.append(_flat_parameters(module.energy))
        return step

    def _validation_set(self, module, Z_val):
        self.validation_ = super()._validation_set(module, Z_val)
        return self.validation_


@pytest.mark.parametrize("decay", [0.9, 0.0])
def test_the_fitted_network_is_the_moving_average_of_the_trained_parameters(
        eight_gaussians, decay):
    """After each update the average moves 1 - average_decay of the way to
    the trained parameters (more over the first updates), and ``fit`` ends
    with the network set to it; average_decay=0 keeps the last update's
    parameters."""
    X_train, _ = eight_gaussians
    model = _Recorded(**dict(QUICK, early_stopping=False, max_iter=2, average_decay=decay))
    model.fit(X_train[:300])
    expected = model.trained_[0]
    for t, trained in enumerate(model.trained_[1:]):
        step_decay = min(decay, (1 + t) / (10 + t))  # the first updates move it more
        expected = step_decay * expected + (1 - step_decay) * trained
    fitted = _flat_parameters(model.module_.energy)
    assert len(model.trained_) == 1 + 2 * 5  # 300 rows, batches of 64: 5 updates an epoch
    np.testing.assert_allclose(fitted, expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(fitted, model.trained_[-1]) == (decay == 0)
    assert model.module_.average is None  # not kept in the fitted model


def test_partial_fit_keeps_no_average(eight_gaussians):
    """One call is one epoch, too short for an average to follow."""
    X_train, _ = eight_gaussians
    model = _Recorded(**dict(QUICK, average_decay=0.9)).partial_fit(X_train[:300])
    torch.testing.assert_close(_flat_parameters(model.module_.energy), model.trained_[-1])
    assert len(model.trained_) == 6


def test_early_stopping_scores_the_average(eight_gaussians):
    """The kept model (the best epoch's average) scores the validation rows
    as its epoch's record says."""
    X_train, _ = eight_gaussians
    model = _Recorded(**dict(QUICK, device="cpu", max_iter=6, n_iter_no_change=2))
    model.fit(X_train[:400])
    best = max(record["validation_score"] for record in model.history_)
    assert model._scored_validation(model.module_, model.validation_) == pytest.approx(
        best, abs=1e-5)


def test_auto_steps_are_fewer_for_one_or_two_features():
    """n_steps="auto": 20 Langevin steps on one or two features, 30 on more
    (images included); a number is taken as given."""
    rng = np.random.default_rng(0)
    settings = dict(QUICK, n_steps="auto", max_iter=1, early_stopping=False)
    for n_features, steps in [(1, 20), (2, 20), (3, 30)]:
        model = ShortRunEBM(**settings).fit(rng.normal(size=(100, n_features)))
        assert model.module_.n_steps == steps
    images = ShortRunEBM(**dict(settings, image_shape=(1, 2, 2), hidden_layer_sizes=(4,)))
    assert images.fit(rng.normal(size=(100, 4))).module_.n_steps == 30
    assert ShortRunEBM(**settings).set_params(n_steps=7).fit(
        rng.normal(size=(100, 2))).module_.n_steps == 7


def test_an_epoch_visits_at_most_1024_rows(monkeypatch, eight_gaussians):
    """On larger data an epoch is 1,024 random rows (16 updates of 64), so
    that early stopping's patience spans as many updates as on small data."""
    batches = []
    train_step = ShortRunEBM._training_step

    def counted(self, module, batch, *args):
        batches.append(len(batch))
        return train_step(self, module, batch, *args)

    monkeypatch.setattr(ShortRunEBM, "_training_step", counted)
    X_train, _ = eight_gaussians
    model = ShortRunEBM(**dict(QUICK, max_iter=2, early_stopping=False)).fit(X_train)
    assert len(X_train) > 1024 and batches == [64] * 32 and model.n_iter_ == 2
    batches.clear()
    ShortRunEBM(**dict(QUICK, max_iter=1, early_stopping=False)).fit(X_train[:300])
    assert batches == [64] * 4 + [44]  # smaller data: every row


def test_a_kept_base_is_refitted_to_every_row():
    """A learning rate that wrecks the network: early stopping keeps epoch 0,
    the base alone, which is then refitted to all the rows, the validation
    share included, with the choice made on the training share: for one
    Gaussian, their mean (0 after standardization) and covariance plus the
    ridge."""
    X = np.random.RandomState(0).multivariate_normal(np.zeros(3), np.eye(3) + 0.5, size=400)
    model = ShortRunEBM(**{**QUICK, "device": "cpu", "learning_rate": 0.3,
                           "n_iter_no_change": 2}).fit(X)
    assert model.module_.energy.is_zero() and model.base_n_components_ == 1
    Z = (X - model.mean_) / model.scale_
    base = model.module_.base
    np.testing.assert_allclose(base.means[0].numpy(), 0.0, atol=1e-6)
    covariance = (base.cholesky[0] @ base.cholesky[0].T).double().cpu().numpy()
    np.testing.assert_allclose(covariance, np.cov(Z.T) + model.base_ridge_ * np.eye(3),
                               rtol=1e-5, atol=1e-6)
    # A new base leaves the buffer's chains where they were, in the data's units.
    module = model.module_
    whitened, before = module.buffer.clone(), module.to_data(module.buffer)
    module.set_base(base.with_noise(0.5))
    assert (module.buffer - whitened).abs().max() > 0.1  # new coordinates
    torch.testing.assert_close(module.to_data(module.buffer), before, rtol=0, atol=1e-5)


def test_chains_that_blow_up_beside_missing_cells_get_the_divergence_error():
    """A step far too large sends the chains to infinity and the network to
    NaN; the next update's missing cells are drawn from that network, and
    the fit still ends in the estimator's divergence error, not in torch's
    complaint about the draw's probabilities."""
    X = np.random.RandomState(0).multivariate_normal(np.zeros(3), np.eye(3) + 0.5, size=300)
    X[::7, 1] = np.nan
    with pytest.raises(ConvergenceDivergedError, match="ShortRunEBM diverged in epoch 1"):
        ShortRunEBM(step_size=50.0, max_iter=3, random_state=0).fit(X)


def test_the_base_has_no_component_narrower_than_the_chains_can_follow():
    """A binary column lets a mixture put spikes of width sqrt(1e-6) on its
    two values, which the chains' first steps cannot follow (they went to
    infinity on diabetes with missing cells): the base's ridge is at least
    1e-3, and such a table fits."""
    rng = np.random.RandomState(0)
    X = np.column_stack([rng.randint(2, size=400), rng.normal(size=(400, 2))])
    X[:, 1] += 2 * X[:, 0]
    X[::9, 1] = np.nan
    model = ShortRunEBM(max_iter=3, random_state=0).fit(X)
    assert model.base_ridge_ >= 1e-3 and model.base_n_components_ > 1
    assert np.isfinite(model.score_samples(X)).all()
