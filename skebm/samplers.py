"""Samplers that draw from an unnormalized density ``exp(log_density(z))``.

Each takes its ``torch.Generator`` explicitly and never touches the global
random state.
"""

import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "AliasSampler",
    "langevin",
    "metropolis_adjusted_langevin",
    "sampling_importance_resampling",
    "with_gradient",
]


def sampling_importance_resampling(log_density, proposal, n_samples, n_candidates, generator):
    """Draw ``n_samples`` rows by sampling-importance-resampling.

    For each output row, ``n_candidates`` points are drawn from ``proposal``
    and one of them is kept with probability proportional to the importance
    weight ``exp(log_density(z) - proposal.log_prob(z))``. The result tends to
    the target as ``n_candidates`` grows; with few candidates it leans towards
    the proposal, which a few Metropolis-adjusted steps afterwards correct.

    Parameters
    ----------
    log_density : callable
        Unnormalized target log-density of an ``(m, d)`` tensor.
    proposal : object with ``sample(n, generator)`` and ``log_prob(z)``
    n_samples, n_candidates : int
    generator : torch.Generator

    Returns
    -------
    torch.Tensor of shape (n_samples, d)
    """
    candidates = proposal.sample(n_samples * n_candidates, generator)
    log_weights = (log_density(candidates) - proposal.log_prob(candidates)).view(
        n_samples, n_candidates
    )
    log_weights = torch.nan_to_num(log_weights, nan=-torch.inf)
    chosen = torch.multinomial(torch.softmax(log_weights, dim=1), 1, generator=generator)
    rows = torch.arange(n_samples, device=candidates.device) * n_candidates + chosen.squeeze(1)
    return candidates[rows]


def _log_density_and_grad(log_density, z):
    # Even inside a caller's torch.no_grad() or torch.inference_mode(), whose
    # tensors autograd refuses: those are copied.
    with torch.inference_mode(False), torch.enable_grad():
        z = (z.clone() if z.is_inference() else z.detach()).requires_grad_(True)
        value = log_density(z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def with_gradient(function):
    """``z -> (function(z), its gradient in z)`` by autograd, for the
    samplers that take a value and its gradient (``function``: one value per
    row of ``z``, differentiable; rows must not interact)."""
    return lambda z: _log_density_and_grad(function, z)


def _mala_proposal(z, grad, step_size, generator, masked=lambda noise: noise):
    """A Metropolis-adjusted Langevin proposal from ``z``, where the target's
    log-density has gradient ``grad``: ``z + step_size**2 / 2 * grad +
    step_size * noise`` (the noise through ``masked``)."""
    noise = masked(torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype))
    return z + 0.5 * step_size**2 * grad + step_size * noise


def _mala_accepts(current, proposed, step_size, generator):
    """Which chains take their proposal, by the Metropolis-Hastings test of a
    Langevin proposal: ``current`` and ``proposed`` are each ``(z, log-density,
    its gradient)``."""
    (z, value, grad), (proposal, new_value, new_grad) = current, proposed
    forward = ((proposal - z - 0.5 * step_size**2 * grad) ** 2).sum(-1)
    backward = ((z - proposal - 0.5 * step_size**2 * new_grad) ** 2).sum(-1)
    log_ratio = new_value - value - (backward - forward) / (2 * step_size**2)
    uniform = torch.rand(len(z), generator=generator, device=z.device, dtype=z.dtype)
    return torch.log(uniform) < torch.nan_to_num(log_ratio, nan=-torch.inf)


def metropolis_adjusted_langevin(
    log_density, z, n_steps, step_size, generator, *, target_acceptance=0.574, mask=None
):
    """Run Metropolis-adjusted Langevin (MALA) chains from ``z``.

    Each step proposes ``z' = z + step_size**2 / 2 * grad + step_size * noise``
    and accepts it with the Metropolis-Hastings probability, so the target
    ``exp(log_density)`` is left exactly invariant. During the first half of
    the steps the (shared) step size is adapted towards ``target_acceptance``
    (Roberts & Rosenthal 1998); the second half runs with it fixed.

    Parameters
    ----------
    log_density : callable
        Unnormalized target log-density of an ``(m, d)`` tensor; differentiable.
    z : torch.Tensor of shape (m, d)
        Starting points, one chain each.
    n_steps : int
    step_size : float
        Initial step size.
    generator : torch.Generator
    mask : torch.Tensor of shape (m, d) or (d,), or None
        Where the chains move (1) and where they stay (0): the others are
        held fixed, so the chains follow the conditional of the moving entries.

    Returns
    -------
    z : torch.Tensor of shape (m, d)
        The chains' final states.
    acceptance : float
        Mean acceptance rate over the fixed-step half (over all steps if none).

    References
    ----------
    .. [1] Roberts, G. O. and Rosenthal, J. S. "Optimal scaling of discrete
       approximations to Langevin diffusions." JRSS B 60 (1998).
    """
    masked = (lambda grad: grad) if mask is None else (lambda grad: grad * mask)
    value, grad = _log_density_and_grad(log_density, z)
    grad = masked(grad)
    z = z.detach()
    accepted_total, counted = 0.0, 0
    for step in range(n_steps):
        proposal = _mala_proposal(z, grad, step_size, generator, masked)
        new_value, new_grad = _log_density_and_grad(log_density, proposal)
        new_grad = masked(new_grad)
        accept = _mala_accepts((z, value, grad), (proposal, new_value, new_grad), step_size,
                              generator)
        z = torch.where(accept[:, None], proposal, z)
        value = torch.where(accept, new_value, value)
        grad = torch.where(accept[:, None], new_grad, grad)
        rate = accept.to(z.dtype).mean().item()
        if step < n_steps // 2:
            # In float32, as the step has always been adapted, whatever torch's default.
            step_size *= float(torch.exp(torch.tensor(rate - target_acceptance,
                                                      dtype=torch.float32, device="cpu")))
        else:
            accepted_total += rate
            counted += 1
    return z, (accepted_total / counted if counted else rate if n_steps else 0.0)


def langevin(energy_and_gradient, z, n_steps, step_size, noise_scale, generator, *,
             grad_clip=None):
    """Run (unadjusted) Langevin chains from ``z`` down an energy.

    Each step is ``z <- z - step_size * grad E(z) + noise_scale * xi`` with
    ``xi ~ N(0, I)``. For small steps the chains tend to the distribution
    ``exp(-E(z) / T)`` of temperature ``T = noise_scale**2 / (2 * step_size)``:
    ``noise_scale = sqrt(2 * step_size)`` samples ``exp(-E)`` itself (up to a
    discretisation bias of order ``step_size``), a smaller ``noise_scale``
    samples a colder, sharper distribution, and ``noise_scale = 0`` is
    gradient descent on ``E``. Short-run EBMs often train with the two set
    apart (Nijkamp et al. 2019; Du & Mordatch 2019); there the chains are a
    learned generator rather than a sampler of ``exp(-E)``. No Metropolis
    correction is made (see :func:`metropolis_adjusted_langevin` for that).

    Parameters
    ----------
    energy_and_gradient : callable
        ``(E(z), grad E(z))`` of an ``(m, d)`` tensor ``z``, a value per row:
        :func:`with_gradient` of a differentiable ``E``, or a gradient
        worked out by hand.
    z : torch.Tensor of shape (m, d)
        Starting points, one chain each.
    n_steps : int
    step_size : float
        The gradient's coefficient.
    noise_scale : float
        Standard deviation of the noise added at each step.
    generator : torch.Generator
    grad_clip : float or None, default=None
        If set, each row's gradient is scaled down to at most this norm
        before the step (a guard against the large gradients of an untrained
        energy).

    Returns
    -------
    z : torch.Tensor of shape (m, d)
        The chains' final states (detached).
    stats : dict
        ``"grad_norm"``: mean norm of the (unclipped) gradient per row and
        step (large: the chains are pushed hard; near 0: they have settled
        where the energy is flat). ``"acceptance"``: the mean probability
        with which a Metropolis test (MALA's, for ``exp(-E / T)``) would have
        accepted the steps, none of which is rejected here: near 1, the
        discretisation is faithful to ``exp(-E / T)``; well below, the step
        is too large for the energy's curvature and the chains sample a
        distorted version of it. NaN without noise or with fewer than two
        steps (each step's test needs the next step's gradient, so the last
        one is not tested).

    References
    ----------
    .. [1] Nijkamp, E., Hill, M., Zhu, S.-C. and Wu, Y. N. "Learning
       non-convergent non-persistent short-run MCMC toward energy-based
       model." NeurIPS 2019.
    .. [2] Du, Y. and Mordatch, I. "Implicit generation and generalization
       in energy-based models." NeurIPS 2019.
    .. [3] Roberts, G. O. and Tweedie, R. L. "Exponential convergence of
       Langevin distributions and their discrete approximations." Bernoulli
       2 (1996).
    """
    z = z.detach()
    statistics = _ChainStatistics(step_size, noise_scale, z.numel())
    for _ in range(n_steps):
        value, grad = energy_and_gradient(z)
        drift = step_size * grad
        if grad_clip is not None:
            norm = grad.flatten(1).norm(dim=1)
            shape = (-1,) + (1,) * (grad.dim() - 1)
            drift = drift * (grad_clip / norm.clamp_min(grad_clip)).view(shape)
        statistics.add(z, value, grad, drift)
        z = z - drift
        if noise_scale:
            z = z + noise_scale * torch.randn(z.shape, generator=generator, device=z.device,
                                              dtype=z.dtype)
    return z, statistics.result()


class _ChainStatistics:
    """:func:`langevin`'s statistics, from each step's states, energies,
    gradients and drifts, worked out for a block of steps at once: on a few
    chains of a small network a step is a few dozen small operations, and a
    dozen more per step for the statistics slowed it measurably (see
    benchmarks/RESULTS.md). A block holds at most :attr:`BLOCK_ELEMENTS`
    entries of the states."""

    BLOCK_ELEMENTS = 2**20

    def __init__(self, step_size, noise_scale, n_elements):
        self.step_size, self.noise_scale = step_size, noise_scale
        self.block = max(2, self.BLOCK_ELEMENTS // max(n_elements, 1))
        self.steps = []  # (z, E(z), gradient, drift) of the steps not yet counted
        self.norm_sum, self.n_norms = 0.0, 0
        self.acceptance_sum, self.n_tests = 0.0, 0

    def add(self, z, value, grad, drift):
        self.steps.append((z, value, grad, drift))
        if len(self.steps) > self.block:
            self._count(keep_last=True)

    def result(self):
        self._count(keep_last=False)
        return {"grad_norm": float(self.norm_sum / self.n_norms) if self.n_norms else 0.0,
                "acceptance": float(self.acceptance_sum / self.n_tests) if self.n_tests
                else math.nan}

    def _count(self, keep_last):
        """Counts the steps held (the last one's gradient left for the next
        block when ``keep_last``, since its test needs the next step)."""
        if not self.steps:
            return
        z, value, grad, drift = (torch.stack(parts) for parts in zip(*self.steps))
        z, grad, drift = z.flatten(2), grad.flatten(2), drift.flatten(2)
        counted = grad[:-1] if keep_last else grad
        self.norm_sum += counted.norm(dim=2).sum()
        self.n_norms += counted.shape[0] * counted.shape[1]
        if self.noise_scale and len(z) > 1:
            # The Metropolis test of each step from z[t] to z[t + 1].
            moved = z[1:] - z[:-1]
            forward = ((moved + drift[:-1]) ** 2).sum(2)
            backward = ((drift[1:] - moved) ** 2).sum(2)
            temperature = self.noise_scale**2 / (2 * self.step_size)
            log_ratio = (value[:-1] - value[1:]) / temperature - (backward - forward) / (
                2 * self.noise_scale**2)
            self.acceptance_sum += torch.exp(log_ratio.clamp(max=0.0)).sum()
            self.n_tests += log_ratio.numel()
        self.steps = self.steps[-1:] if keep_last else []


class AliasSampler(nn.Module):
    """Draws from a fixed discrete distribution in O(1) per draw (the alias method).

    The table is built once in O(n) (Vose 1991): each of the ``n`` cells
    holds its own category with probability ``threshold[i]`` and one other
    category, ``alias[i]``, otherwise. A draw picks a cell uniformly and
    flips one biased coin, so ``n_samples`` draws are three vectorized
    operations on the table's device, whatever ``n``. As a module, the
    table moves between devices and pickles with its owner.

    Parameters
    ----------
    weights : array-like of shape (n,)
        Non-negative, not all zero; normalized here. Categories of weight 0
        are never drawn.

    References
    ----------
    .. [1] Walker, A. J. "An efficient method for generating discrete random
       variables with general distributions." ACM TOMS 3 (1977).
    .. [2] Vose, M. D. "A linear algorithm for generating random numbers with
       a given distribution." IEEE TSE 17 (1991).
    """

    def __init__(self, weights):
        super().__init__()
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or not len(weights):
            raise ValueError("weights must be a non-empty 1-D array.")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero.")
        probabilities = weights / weights.sum()
        n = len(probabilities)
        scaled = probabilities * n
        threshold, alias = np.ones(n), np.arange(n)
        small = [i for i in range(n) if scaled[i] < 1]
        large = [i for i in range(n) if scaled[i] >= 1]
        while small and large:
            low, high = small.pop(), large.pop()
            threshold[low], alias[low] = scaled[low], high
            scaled[high] -= 1 - scaled[low]
            (small if scaled[high] < 1 else large).append(high)
        # What is left in either list holds its cell whole (threshold 1), up to rounding.
        # float32 tables: every device has float32 (MPS has no float64).
        self.register_buffer("threshold",
                             torch.as_tensor(threshold, dtype=torch.float32, device="cpu"))
        self.register_buffer("alias", torch.as_tensor(alias, dtype=torch.long, device="cpu"))
        self.register_buffer("log_probabilities", torch.log(torch.as_tensor(
            probabilities, dtype=torch.float64, device="cpu")).float())

    def sample(self, n_samples, generator):
        """``n_samples`` category indices (int64), on the table's device."""
        device = self.threshold.device
        cells = torch.randint(len(self.threshold), (n_samples,), generator=generator,
                              device=device)
        coins = torch.rand(n_samples, generator=generator, device=device,
                           dtype=self.threshold.dtype)
        return torch.where(coins < self.threshold[cells], cells, self.alias[cells])

    def log_prob(self, categories):
        """log q of each category index."""
        return self.log_probabilities[categories]
