"""Noise distributions for noise-contrastive estimation.

A noise is a ``torch.nn.Module`` with two methods, both on torch tensors of the
(standardized) data space:

- ``sample(n_samples, generator)``: an ``(n_samples, n_features)`` draw;
- ``log_prob(Z)``: the normalized log-density of each row.

Being modules, noises move between devices and pickle with the estimator
that owns them. :func:`make_noise` builds one from training data.
"""

import math

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import nn

__all__ = ["GaussianMixtureNoise", "make_noise"]

#: Ridge added to every covariance, so collinear or constant features still
#: give a positive definite one.
COVARIANCE_RIDGE = 1e-6


class GaussianMixtureNoise(nn.Module):
    """A mixture of full-covariance Gaussians (one component: a Gaussian).

    Parameters
    ----------
    weights : torch.Tensor of shape (n_components,)
        Mixing proportions, summing to 1.
    means : torch.Tensor of shape (n_components, n_features)
    covariances : torch.Tensor of shape (n_components, n_features, n_features)
        Each positive definite.
    """

    def __init__(self, weights, means, covariances):
        super().__init__()
        self.register_buffer("log_weights", torch.log(weights))
        self.register_buffer("means", means)
        self.register_buffer("cholesky", torch.linalg.cholesky(covariances))

    @classmethod
    def fit_to(cls, Z, *, n_components=1, scale=1.0, seed=0):
        """Fit to the rows of ``Z`` by maximum likelihood (EM for a mixture).

        Every covariance is then multiplied by ``scale**2``; ``scale > 1``
        widens the noise so that it covers the tails of the data. The number of
        components is capped so that each has at least 10 rows per dimension
        plus one: with fewer, full covariances collapse onto the training rows
        (on 64-D digits, 16 components on 900 rows made a noise, and so a
        model, 490 nats per row worse than one Gaussian).
        """
        data = Z.detach().cpu().to(torch.float64).numpy()
        rows_per_component = 10 * (data.shape[1] + 1)
        n_components = max(1, min(n_components, len(data) // rows_per_component))
        if n_components == 1:
            means = data.mean(axis=0, keepdims=True)
            centred = data - means
            covariances = (centred.T @ centred / max(len(data) - 1, 1))[None]
            weights = np.ones(1)
        else:
            mixture = GaussianMixture(
                n_components, covariance_type="full", reg_covar=COVARIANCE_RIDGE,
                random_state=seed,
            ).fit(data)
            weights, means, covariances = mixture.weights_, mixture.means_, mixture.covariances_
        covariances = covariances + COVARIANCE_RIDGE * np.eye(data.shape[1])
        as_tensor = lambda array: torch.as_tensor(array, dtype=torch.float32, device=Z.device)
        return cls(as_tensor(weights), as_tensor(means), as_tensor(covariances * scale**2))

    @property
    def n_components(self):
        return len(self.log_weights)

    def sample(self, n_samples, generator):
        components = torch.multinomial(
            self.log_weights.exp(), n_samples, replacement=True, generator=generator
        )
        eps = torch.randn(
            n_samples, self.means.shape[1], 1, generator=generator, device=self.means.device,
            dtype=self.means.dtype,
        )
        return self.means[components] + (self.cholesky[components] @ eps).squeeze(-1)

    def log_prob(self, Z):
        """Log-density of each row; memory is one (n_samples, n_features)
        block at a time, whatever the number of components."""
        n_features = Z.shape[-1]
        log_det = torch.log(torch.diagonal(self.cholesky, dim1=-2, dim2=-1)).sum(-1)
        log_components = []
        for k in range(self.n_components):
            centred = (Z - self.means[k]).T
            white = torch.linalg.solve_triangular(self.cholesky[k], centred, upper=False)
            log_components.append(-0.5 * (white**2).sum(0) - log_det[k] + self.log_weights[k])
        log_norm = 0.5 * n_features * math.log(2 * math.pi)
        return torch.logsumexp(torch.stack(log_components), dim=0) - log_norm


def make_noise(name, Z, *, n_components, scale, generator):
    """Fit the noise called ``name`` to the standardized data ``Z``.

    ``"gaussian"``: one Gaussian with the data's mean and covariance;
    ``"gaussian_mixture"``: ``n_components`` of them, fitted by EM.
    """
    if name == "gaussian":
        n_components = 1
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))
    return GaussianMixtureNoise.fit_to(Z, n_components=n_components, scale=scale, seed=seed)
