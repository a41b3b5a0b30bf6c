"""Samplers: Metropolis-adjusted Langevin, sampling-importance-resampling, the alias method."""

import numpy as np
import pytest
import torch

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
