"""log Z estimators: importance sampling, grid integration, annealed importance sampling."""

import math

import numpy as np
import pytest
import torch

from skebm.partition import (
    annealed_importance_log_partition,
    grid_log_integral,
    importance_log_partition,
)
from skebm.samplers import with_gradient

# A correlated 2-D Gaussian target, known exactly.
MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)
TARGET = torch.distributions.MultivariateNormal(MEAN, COV)


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
            sample_base, with_gradient(log_base), with_gradient(log_ratio), n_chains=100,
            n_temperatures=n_temperatures,
            generator=torch.Generator().manual_seed(seed)) for seed in range(3)])
        return estimates[:, 0] - exact, estimates[:, 1]

    errors, stds = runs(1000)
    # The reported standard error is honest: errors stay within 3 of them.
    assert np.all(np.abs(errors) < 3 * stds + 0.02) and np.all(stds < 0.1)
    few_errors, _ = runs(3)
    assert np.sqrt(np.mean(few_errors**2)) > 3 * np.sqrt(np.mean(errors**2))


def _spike_log_density(width):
    """A standard normal with a tenth of its mass moved to a spike at 0.3."""
    from scipy.stats import norm

    return lambda x: np.logaddexp(np.log(0.9) + norm.logpdf(x).sum(1),
                                  np.log(0.1) + norm.logpdf(x, 0.3, width).sum(1))


@pytest.mark.parametrize("n_features", [1, 2])
def test_grid_error_gauge_is_nil_when_smooth_and_exceeds_a_coarse_grids_error(n_features):
    """The sub-grids agree on a smooth density (the gauge is rounding) and
    disagree, by more than the full grid errs, on a spike of a quarter of
    the spacing (the density integrates to 1)."""
    bounds = [(-8, 8)] * n_features
    value, error = grid_log_integral(_spike_log_density(1.0), bounds, 200, with_error=True)
    assert abs(value) < 1e-12 and error < 1e-12
    value, error = grid_log_integral(_spike_log_density(0.02), bounds, 200, with_error=True)
    assert error > max(abs(value), 0.005)
    with pytest.raises(ValueError, match="even n_points"):
        grid_log_integral(_spike_log_density(1.0), bounds, 201, with_error=True)
