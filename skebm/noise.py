"""Noise distributions for noise-contrastive estimation.

A noise is a ``torch.nn.Module`` with two methods, both on torch tensors of the
(standardized) data space:

- ``sample(n_samples, generator)``: an ``(n_samples, n_features)`` draw;
- ``log_prob(Z)``: the normalized log-density of each row.

Being modules, noises move between devices and pickle with the estimator
that owns them. Each class has a ``fit_to(Z, ...)`` constructor that builds it
from training data.
"""

import math

import torch
from torch import nn

__all__ = ["GaussianNoise", "make_noise"]


class GaussianNoise(nn.Module):
    """A multivariate normal with the data's mean and (widened) covariance.

    Parameters
    ----------
    mean : torch.Tensor of shape (n_features,)
    covariance : torch.Tensor of shape (n_features, n_features)
        Must be positive definite.
    """

    def __init__(self, mean, covariance):
        super().__init__()
        cholesky = torch.linalg.cholesky(covariance)
        self.register_buffer("mean", mean)
        self.register_buffer("cholesky", cholesky)

    @classmethod
    def fit_to(cls, Z, *, scale=1.0):
        """The Gaussian fitted to ``Z``, its covariance multiplied by ``scale**2``.

        A small ridge keeps the covariance positive definite for collinear or
        constant features.
        """
        Z = Z.to(torch.float64)
        mean = Z.mean(dim=0)
        centred = Z - mean
        covariance = centred.T @ centred / max(len(Z) - 1, 1)
        covariance = covariance + 1e-6 * torch.eye(Z.shape[1], dtype=Z.dtype, device=Z.device)
        return cls(mean.float(), (covariance * scale**2).float())

    def sample(self, n_samples, generator):
        eps = torch.randn(
            n_samples, len(self.mean), generator=generator, device=self.mean.device,
            dtype=self.mean.dtype,
        )
        return self.mean + eps @ self.cholesky.T

    def log_prob(self, Z):
        centred = (Z - self.mean).unsqueeze(-1)
        white = torch.linalg.solve_triangular(self.cholesky, centred, upper=False).squeeze(-1)
        log_det = torch.log(torch.diagonal(self.cholesky)).sum()
        n_features = Z.shape[-1]
        return -0.5 * (white**2).sum(-1) - log_det - 0.5 * n_features * math.log(2 * math.pi)


_NOISES = {"gaussian": GaussianNoise}


def make_noise(name, Z, **options):
    """Fit the noise called ``name`` to the standardized data ``Z``."""
    return _NOISES[name].fit_to(Z, **options)
