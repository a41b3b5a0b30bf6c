"""Estimates of log Z, the log of a model's normalizing constant.

- :func:`importance_log_partition`: importance sampling from a proposal with a
  known density, with a delta-method standard error.
- :func:`grid_log_integral`: numerical integration of a density over a
  rectangular 2-D grid, to check that a model claiming to be normalized is.
"""

import math

import numpy as np
import torch

__all__ = ["grid_log_integral", "importance_log_partition"]


def importance_log_partition(log_weights):
    """log of the mean of ``exp(log_weights)``, and its standard error.

    With ``log_weights = -E(x) - log q(x)`` for ``x ~ q``, the mean of the
    weights is an unbiased estimate of ``Z = integral of exp(-E)``. The standard
    error of ``log Z`` is the delta-method one, ``std(w) / (sqrt(n) mean(w))``;
    it is honest only when the weights have finite variance (``q`` has heavier
    tails than the model), and it is an underestimate when a few weights
    dominate.

    Parameters
    ----------
    log_weights : torch.Tensor of shape (n,)

    Returns
    -------
    log_z : float
    log_z_std : float
    """
    log_weights = log_weights.to(torch.float64)
    n = log_weights.numel()
    log_mean = torch.logsumexp(log_weights, dim=0) - math.log(n)
    relative = torch.exp(log_weights - log_mean)  # w / mean(w)
    std_error = relative.std(unbiased=True) / math.sqrt(n) if n > 1 else torch.tensor(math.inf)
    return float(log_mean), float(std_error)


def grid_log_integral(log_density, bounds, n_points=400):
    """log of the integral of ``exp(log_density)`` over a 2-D rectangle.

    Midpoint rule on an ``n_points x n_points`` grid.

    Parameters
    ----------
    log_density : callable
        Maps an ``(m, 2)`` float64 array to ``m`` log-densities (an estimator's
        ``score_samples``, say).
    bounds : ((x_min, x_max), (y_min, y_max))
        The rectangle. It must hold essentially all of the mass for the result
        to be close to 0 for a normalized density.
    n_points : int, default=400
        Grid points per axis.

    Returns
    -------
    log_integral : float
        Close to 0 when the density is normalized and the grid covers its mass.
    """
    (x_min, x_max), (y_min, y_max) = bounds
    dx = (x_max - x_min) / n_points
    dy = (y_max - y_min) / n_points
    xs = x_min + dx * (np.arange(n_points) + 0.5)
    ys = y_min + dy * (np.arange(n_points) + 0.5)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    values = np.asarray(log_density(grid), dtype=np.float64)
    top = values.max()
    return float(top + np.log(np.exp(values - top).sum() * dx * dy))
