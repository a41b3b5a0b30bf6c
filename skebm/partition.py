"""Estimates of log Z, the log of a model's normalizing constant.

- :func:`importance_log_partition`: importance sampling from a proposal with a
  known density, with a delta-method standard error.
- :func:`annealed_importance_log_partition`: annealed importance sampling
  (AIS) from a normalized base density to ``base * exp(log_ratio)``, with
  Metropolis-adjusted Langevin transitions, for any differentiable model.
- :func:`grid_log_integral`: numerical integration of a density over a
  1-D interval or a 2-D rectangle, to check that a model claiming to be
  normalized is (and log Z itself for models of one or two features).

AIS here and the RBM's (:func:`skebm._rbm_model.rbm_ais_log_partition`) share
one schedule of temperatures (:func:`ais_temperatures`) and one estimator of
log Z from the weights (:func:`importance_log_partition`).
"""

import itertools
import math

import numpy as np
import torch

from ._runtime import refuse_beyond_memory
from .samplers import _mala_accepts, _mala_proposal

__all__ = [
    "ais_temperatures",
    "annealed_importance_log_partition",
    "grid_log_integral",
    "importance_log_partition",
    "refuse_ais_beyond_memory",
    "refuse_log_partition_beyond_memory",
]

#: float32 copies of the chains' states that an AIS step holds at once (the
#: state, a proposal, their gradients, noise), with room to spare.
AIS_STATE_COPIES = 8


def refuse_log_partition_beyond_memory(n_bytes, method, parameter, value,
                                       device=torch.device("cpu")):
    """A ``ValueError``, before anything is allocated, when log Z by
    ``method`` with ``parameter=value`` needs ``n_bytes``, more than memory
    holds. Its advice is a refit: a fitted model estimates log Z with the
    value it was fitted with."""
    refuse_beyond_memory(n_bytes, f"log Z {method} with {parameter}={value:,}",
                         f"Refit with a lower {parameter}: a fitted model keeps the value it "
                         "was fitted with.", device)


def refuse_ais_beyond_memory(n_chains, n_units, device):
    """:func:`refuse_log_partition_beyond_memory` for ``n_chains`` AIS chains
    over ``n_units`` units."""
    refuse_log_partition_beyond_memory(4 * AIS_STATE_COPIES * n_chains * n_units, "by AIS",
                                       "n_ais_chains", n_chains, device)


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
    std_error = float(relative.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.inf
    return float(log_mean), std_error


def grid_log_integral(log_density, bounds, n_points=400, *, with_error=False):
    """log of the integral of ``exp(log_density)`` over a 1-D interval or a
    2-D rectangle.

    Midpoint rule on ``n_points`` points per axis. Its error is gauged for
    free from the grid's own values: every other point of each axis is a
    grid of twice the spacing (2 of them in 1-D, 4 in 2-D), and half the
    spread of their log-integrals measures how far a grid this coarse is
    from convergence. Where the density is smooth on the scale of the grid
    they agree to many digits; structure a few points wide makes them
    disagree, by more than the full grid errs. It is a gauge, not a bound:
    structure far narrower than the spacing can escape every grid.

    Parameters
    ----------
    log_density : callable
        Maps an ``(m, d)`` float64 array (``d = len(bounds)``) to ``m``
        log-densities (an estimator's ``score_samples``, say).
    bounds : ((x_min, x_max),) or ((x_min, x_max), (y_min, y_max))
        The interval or rectangle. It must hold essentially all of the mass
        for the result to be close to 0 for a normalized density.
    n_points : int, default=400
        Grid points per axis.
    with_error : bool, default=False
        Also return the gauge of the error (``n_points`` must then be even).

    Returns
    -------
    log_integral : float
        Close to 0 when the density is normalized and the grid covers its mass.
    error : float
        With ``with_error``: half the spread of the coarser grids' log-integrals.
    """
    if len(bounds) not in (1, 2):
        raise ValueError(f"grid_log_integral integrates over 1 or 2 dimensions, got {len(bounds)}.")
    if with_error and n_points % 2:
        raise ValueError(f"grid_log_integral's error needs an even n_points, got {n_points}.")
    axes, cell = [], 1.0
    for low, high in bounds:
        width = (high - low) / n_points
        axes.append(low + width * (np.arange(n_points) + 0.5))
        cell *= width
    grid = np.stack(np.meshgrid(*axes), axis=-1).reshape(-1, len(bounds))
    values = np.asarray(log_density(grid), dtype=np.float64)
    top = values.max()
    weights = np.exp(values - top)
    log_integral = float(top + np.log(weights.sum() * cell))
    if not with_error:
        return log_integral
    weights = weights.reshape((n_points,) * len(bounds))
    coarse = [np.log(weights[tuple(slice(start, None, 2) for start in starts)].sum()
                     * cell * 2 ** len(bounds))
              for starts in itertools.product((0, 1), repeat=len(bounds))]
    return log_integral, float((max(coarse) - min(coarse)) / 2)


def annealed_importance_log_partition(sample_base, log_base, log_ratio, *, n_chains=100,
                                      n_temperatures=1000, generator, step_size=0.1,
                                      progress=None):
    """log Z of ``p*(z) = base(z) exp(log_ratio(z))``, by annealed importance sampling.

    ``base`` is a normalized density, so ``Z = E_base[exp(log_ratio)]``.
    Chains start from the base and move through the intermediate densities
    ``p_k ~ base * exp(beta_k * log_ratio)``, ``beta`` from 0 to 1 on
    :func:`ais_temperatures`' schedule, by one Metropolis-adjusted Langevin
    step at each (which leaves ``p_k`` exactly invariant; the step size
    follows the acceptance rate towards 0.574 from one temperature to the
    next). Each chain's weight is the sum of
    ``(beta_k - beta_(k-1)) * log_ratio(z)`` at the state it reached; the
    mean weight estimates ``Z`` without bias (Neal 2001), and log Z is
    biased low by about half its squared relative error.

    Parameters
    ----------
    sample_base : callable
        ``sample_base(n, generator)``: n draws from the base, an ``(n, d)``
        tensor.
    log_base : callable
        Normalized log-density of the base of an ``(m, d)`` tensor and its
        gradient: ``(values, gradient)``, by hand or by
        :func:`~skebm.samplers.with_gradient`.
    log_ratio : callable
        ``log p* - log base`` of an ``(m, d)`` tensor and its gradient, alike.
    n_chains : int, default=100
    n_temperatures : int, default=1000
    generator : torch.Generator
    step_size : float, default=0.1
        Initial step size of the Langevin proposals.
    progress : callable or None, default=None
        Called with no argument after each of the ``n_temperatures``
        temperatures (a progress bar's ``update``).

    Returns
    -------
    log_z : float
    log_z_std : float
        Standard error across the chains (delta method, see
        :func:`importance_log_partition`).

    References
    ----------
    .. [1] Neal, R. M. "Annealed importance sampling." Statistics and
       Computing 11 (2001).
    """
    # The base's and the ratio's values and gradients are kept apart at the
    # chains' states, so that one pass of each per temperature serves the
    # weights, this temperature's step and the next one's.
    betas = ais_temperatures(n_temperatures).tolist()
    z = sample_base(n_chains, generator)
    base, ratio = log_base(z), log_ratio(z)
    log_weights = torch.zeros(n_chains, dtype=torch.float64, device=z.device)
    for previous, beta in zip(betas[:-1], betas[1:]):
        log_weights += (beta - previous) * ratio[0].to(torch.float64)
        if progress is not None:
            progress()
        if beta == 1.0:
            break
        # One Metropolis-adjusted Langevin step, which leaves base * exp(beta * ratio) invariant.
        target = lambda base, ratio, beta=beta: (base[0] + beta * ratio[0],
                                                 base[1] + beta * ratio[1])
        proposal = _mala_proposal(z, target(base, ratio)[1], step_size, generator)
        new_base, new_ratio = log_base(proposal), log_ratio(proposal)
        accept = _mala_accepts((z, *target(base, ratio)),
                               (proposal, *target(new_base, new_ratio)), step_size, generator)
        z = torch.where(accept[:, None], proposal, z)
        base, ratio = _taken(accept, new_base, base), _taken(accept, new_ratio, ratio)
        step_size *= math.exp(accept.to(z.dtype).mean().item() - 0.574)
    return importance_log_partition(log_weights)


def _taken(accept, new, old):
    """(value, gradient) of each chain: ``new`` where accepted, ``old`` elsewhere."""
    return (torch.where(accept, new[0], old[0]),
            torch.where(accept[:, None], new[1], old[1]))


def ais_temperatures(n_temperatures):
    """The inverse temperatures 0 = beta_0 < ... < beta_K = 1 of AIS.

    Salakhutdinov & Murray (2008) spaced 500 of them uniformly on [0, 0.5],
    4,000 on [0.5, 0.9] and 10,000 on [0.9, 1]: denser where the distributions
    change fastest. The same proportions, scaled to ``n_temperatures``.
    """
    if n_temperatures < 3:
        raise ValueError(f"n_temperatures must be at least 3, got {n_temperatures}.")
    n_low = max(1, round(n_temperatures * 500 / 14500))
    n_mid = max(1, round(n_temperatures * 4000 / 14500))
    n_high = max(1, n_temperatures - n_low - n_mid)
    return torch.cat([
        torch.linspace(0.0, 0.5, n_low + 1, dtype=torch.float64, device="cpu")[:-1],
        torch.linspace(0.5, 0.9, n_mid + 1, dtype=torch.float64, device="cpu")[:-1],
        torch.linspace(0.9, 1.0, n_high + 1, dtype=torch.float64, device="cpu"),
    ])
