"""The shared pieces: samplers, log Z estimators, noises, device and seeding."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from skebm._base import make_generator, resolve_device, torch_threads
from skebm.nets import MLPEnergy
from skebm.noise import GaussianMixtureNoise, MarginalGaussianization, fit_base
from skebm.partition import (
    annealed_importance_log_partition,
    grid_log_integral,
    importance_log_partition,
)
from skebm.samplers import metropolis_adjusted_langevin, sampling_importance_resampling

# A correlated 2-D Gaussian target, known exactly.
MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)
TARGET = torch.distributions.MultivariateNormal(MEAN, COV)


def test_mala_samples_the_target():
    generator = torch.Generator().manual_seed(0)
    start = torch.zeros(4000, 2, dtype=torch.float64) + 5.0  # far from the target
    draws, acceptance = metropolis_adjusted_langevin(TARGET.log_prob, start, 200, 0.5, generator)
    assert 0.3 < acceptance < 0.8
    np.testing.assert_allclose(draws.mean(0), MEAN, atol=0.08)
    np.testing.assert_allclose(torch.cov(draws.T), COV, atol=0.12)


def test_mala_leaves_the_target_invariant_exactly():
    """Started at exact draws, a few large steps keep the distribution: the
    Metropolis correction is what makes this hold (plain Langevin with a step
    this large would inflate the variance)."""
    generator = torch.Generator().manual_seed(1)
    start = MEAN + torch.randn(20000, 2, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(COV).T
    draws, _ = metropolis_adjusted_langevin(TARGET.log_prob, start, 6, 1.2, generator)
    np.testing.assert_allclose(torch.cov(draws.T), COV, atol=0.07)
    unadjusted = start + 0.5 * 1.2**2 * torch.linalg.solve(COV, (MEAN - start).T).T
    unadjusted = unadjusted + 1.2 * torch.randn(start.shape, generator=generator, dtype=torch.float64)
    assert torch.cov(unadjusted.T)[1, 1] > COV[1, 1] + 0.3


def test_sampling_importance_resampling_reweights_the_proposal():
    generator = torch.Generator().manual_seed(0)
    proposal = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                      4 * torch.eye(2, dtype=torch.float64))

    class Proposal:
        sample = staticmethod(lambda n, g: proposal.mean + 2 * torch.randn(n, 2, generator=g, dtype=torch.float64))
        log_prob = staticmethod(proposal.log_prob)

    draws = sampling_importance_resampling(TARGET.log_prob, Proposal, 5000, 64, generator)
    np.testing.assert_allclose(draws.mean(0), MEAN, atol=0.1)
    np.testing.assert_allclose(torch.cov(draws.T), COV, atol=0.2)


def test_importance_log_partition_and_its_error():
    generator = torch.Generator().manual_seed(0)
    # exp(-E) = 3.5 * N(x; MEAN, COV): log Z = log 3.5. Proposal: wider Gaussian.
    proposal = torch.distributions.MultivariateNormal(MEAN, 2 * COV)
    cholesky = torch.linalg.cholesky(2 * COV)
    estimates, errors = [], []
    for _ in range(40):
        x = MEAN + torch.randn(2000, 2, generator=generator, dtype=torch.float64) @ cholesky.T
        log_weights = math.log(3.5) + TARGET.log_prob(x) - proposal.log_prob(x)
        log_z, error = importance_log_partition(log_weights)
        estimates.append(log_z)
        errors.append(error)
    estimates = np.array(estimates)
    assert estimates.mean() == pytest.approx(math.log(3.5), abs=0.01)
    # The reported standard error matches the spread across repetitions.
    assert np.mean(errors) == pytest.approx(estimates.std(), rel=0.35)


def test_grid_log_integral_of_a_gaussian():
    log_density = lambda X: TARGET.log_prob(torch.as_tensor(X)).numpy()
    assert abs(grid_log_integral(log_density, ((-8, 10), (-10, 6)), 300)) < 1e-4
    # Half the plane holds half the mass.
    half = grid_log_integral(log_density, ((1, 10), (-10, 6)), 300)
    assert half == pytest.approx(math.log(0.5), abs=1e-3)


def test_grid_log_integral_in_one_dimension():
    log_density = lambda X: -0.5 * X[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    assert abs(grid_log_integral(log_density, ((-9, 9),), 2000)) < 1e-6
    assert grid_log_integral(log_density, ((0, 9),), 2000) == pytest.approx(math.log(0.5))
    with pytest.raises(ValueError, match="1 or 2 dimensions"):
        grid_log_integral(log_density, ((0, 1),) * 3)


def test_annealed_importance_sampling_of_a_known_integral():
    """base N(0, I) in 5-D times exp(-z.A.z / 2 + b.z): Z = det(I + A)^(-1/2)
    exp(b.(I + A)^-1 b / 2). The target is narrower and shifted, so plain
    importance sampling from the base errs far more than AIS."""
    d = 5
    A = torch.diag(torch.tensor([8.0, 4.0, 2.0, 0.0, 1.0], dtype=torch.float64))
    b = torch.tensor([3.0, -2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    precision = torch.eye(d, dtype=torch.float64) + A
    exact = float(-0.5 * torch.logdet(precision) + 0.5 * b @ torch.linalg.solve(precision, b))
    log_ratio = lambda z: -0.5 * ((z @ A) * z).sum(1) + z @ b
    sample_base = lambda n, generator: torch.randn(n, d, generator=generator,
                                                   dtype=torch.float64)
    log_base = lambda z: -0.5 * (z**2).sum(1) - 0.5 * d * math.log(2 * math.pi)

    def runs(n_temperatures):
        estimates = np.array([annealed_importance_log_partition(
            sample_base, log_base, log_ratio, n_chains=100, n_temperatures=n_temperatures,
            generator=torch.Generator().manual_seed(seed)) for seed in range(3)])
        return estimates[:, 0] - exact, estimates[:, 1]

    errors, stds = runs(1000)
    # The reported standard error is honest: errors stay within 3 of them.
    assert np.all(np.abs(errors) < 3 * stds + 0.02) and np.all(stds < 0.1)
    few_errors, _ = runs(3)
    assert np.sqrt(np.mean(few_errors**2)) > 3 * np.sqrt(np.mean(errors**2))


@pytest.mark.parametrize("n_components", [1, 3])
def test_mixture_density_and_samples(n_components):
    generator = torch.Generator().manual_seed(0)
    data = torch.cat([torch.randn(300, 2, generator=generator) + 4,
                      torch.randn(300, 2, generator=generator) * 0.5])
    noise = GaussianMixtureNoise.fit_to(data, n_components=n_components).widened(1.5)
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


def test_marginal_map_keeps_far_rows_finite(marginal_map):
    transform, _ = marginal_map
    far = torch.tensor([-1e6, -50.0, 50.0, 1e6], dtype=torch.float64)
    assert torch.isfinite(_log_density(transform, far)).all()
    assert torch.isfinite(transform(far[:, None])[0]).all()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu-of-dreams")


def test_generators_are_private_and_seeded():
    state = torch.get_rng_state()
    a = torch.rand(3, generator=make_generator(7, "cpu"))
    b = torch.rand(3, generator=make_generator(7, "cpu"))
    c = torch.rand(3, generator=make_generator(np.random.RandomState(7), "cpu"))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())


def test_network_init_uses_only_its_generator():
    state = torch.get_rng_state()
    first = MLPEnergy(2, (8, 8), "relu", torch.Generator().manual_seed(0), fourier_features=4)
    second = MLPEnergy(2, (8, 8), "relu", torch.Generator().manual_seed(0), fourier_features=4)
    assert torch.equal(state, torch.get_rng_state())
    for p, q in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(p, q)
    zero = MLPEnergy(2, (8,), "silu", torch.Generator().manual_seed(0), zero_output=True)
    assert torch.equal(zero(torch.randn(5, 2)), torch.zeros(5))


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_alias_sampler_draws_its_distribution():
    from scipy.stats import chisquare

    from skebm.samplers import AliasSampler

    # Zipf frequencies raised to 0.75 (word2vec's noise), and a class never seen.
    weights = (1.0 / np.arange(1, 51)) ** 0.75
    weights[7] = 0.0
    sampler = AliasSampler(weights)
    draws = sampler.sample(200_000, torch.Generator().manual_seed(0)).numpy()
    counts = np.bincount(draws, minlength=50)
    expected = weights / weights.sum() * len(draws)
    assert counts[7] == 0
    keep = expected > 0
    assert chisquare(counts[keep], expected[keep]).pvalue > 0.001
    # A sampler that ignored the weights (uniform draws) fails the same test.
    uniform = np.bincount(torch.randint(50, (200_000,), generator=torch.Generator()
                                        .manual_seed(0)).numpy(), minlength=50)
    assert chisquare(uniform[keep], expected[keep] * uniform[keep].sum() / len(draws)
                     ).pvalue < 1e-10
    np.testing.assert_allclose(sampler.log_prob(torch.tensor([0, 1])).exp().numpy(),
                               weights[:2] / weights.sum(), rtol=1e-6)
    # Same seed, same draws; one category always comes back.
    np.testing.assert_array_equal(
        sampler.sample(10, torch.Generator().manual_seed(1)),
        sampler.sample(10, torch.Generator().manual_seed(1)))
    assert set(AliasSampler([0.0, 3.0]).sample(100, torch.Generator()).tolist()) == {1}
    for bad in ([], [1.0, -1.0], [0.0, 0.0], [[1.0]], [np.nan]):
        with pytest.raises(ValueError, match="weights must"):
            AliasSampler(bad)


def test_lazy_adam_is_sparse_adam_on_sparse_rows_and_adam_on_dense():
    """One LazyAdam over both kinds of parameter takes the steps torch's
    SparseAdam takes on the table and Adam on the dense vector; rows no
    gradient touched have not moved."""
    from skebm.optim import LazyAdam

    generator = torch.Generator().manual_seed(0)
    table = torch.nn.Parameter(torch.randn(50, 7, generator=generator))
    bias = torch.nn.Parameter(torch.randn(7, generator=generator))
    lazy_table, lazy_bias = (torch.nn.Parameter(p.detach().clone()) for p in (table, bias))
    reference = [torch.optim.SparseAdam([table], lr=0.01), torch.optim.Adam([bias], lr=0.01)]
    lazy = LazyAdam([lazy_table, lazy_bias], lr=0.01)
    touched = torch.zeros(50, dtype=torch.bool)
    for _ in range(20):
        rows = torch.randint(40, (30,), generator=generator)  # rows 40-49 never drawn
        touched[rows] = True
        x = torch.randn(30, 7, generator=generator)
        for (t, b), optimizers in [((table, bias), reference), ((lazy_table, lazy_bias), [lazy])]:
            for optimizer in optimizers:
                optimizer.zero_grad()
            ((torch.nn.functional.embedding(rows, t, sparse=True) + b) * x).sum().pow(2).backward()
            for optimizer in optimizers:
                optimizer.step()
    torch.testing.assert_close(lazy_table, table, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lazy_bias, bias, rtol=1e-5, atol=1e-6)
    start = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    assert (lazy_table.detach()[touched] != start[touched]).all()
    torch.testing.assert_close(lazy_table.detach()[~touched], start[~touched], rtol=0, atol=0)
