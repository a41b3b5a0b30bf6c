"""Estimates of log Z, the log of a model's normalizing constant.

- :func:`importance_log_partition`: importance sampling from a proposal with a
  known density, with a delta-method standard error.
- :func:`annealed_importance_log_partition`: annealed importance sampling
  (AIS) from a normalized base density to ``base * exp(log_ratio)``, with
  Metropolis-adjusted Langevin transitions, for any differentiable model.
- :func:`grid_log_integral`: numerical integration of a density over a
  1-D interval or a 2-D rectangle, to check that a model claiming to be
  normalized is (and log Z itself for models of one or two features).
- :func:`rbm_free_energy`, :func:`rbm_exact_log_partition` and
  :func:`rbm_ais_log_partition`: log Z of a restricted Boltzmann machine, by
  enumerating its smaller layer or by AIS with Gibbs transitions.

Both AIS functions share one schedule of temperatures
(:func:`ais_temperatures`) and one estimator of log Z from the weights
(:func:`importance_log_partition`).
"""

import math

import numpy as np
import torch
from torch.nn.functional import softplus

from .samplers import bernoulli, metropolis_adjusted_langevin

__all__ = [
    "MAX_EXACT_UNITS",
    "ais_temperatures",
    "annealed_importance_log_partition",
    "grid_log_integral",
    "importance_log_partition",
    "rbm_ais_log_partition",
    "rbm_exact_log_partition",
    "rbm_free_energy",
]

#: Largest layer :func:`rbm_exact_log_partition` enumerates (2**20 states).
MAX_EXACT_UNITS = 20


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
    """log of the integral of ``exp(log_density)`` over a 1-D interval or a
    2-D rectangle.

    Midpoint rule on ``n_points`` points per axis.

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

    Returns
    -------
    log_integral : float
        Close to 0 when the density is normalized and the grid covers its mass.
    """
    if len(bounds) not in (1, 2):
        raise ValueError(f"grid_log_integral integrates over 1 or 2 dimensions, got {len(bounds)}.")
    axes, cell = [], 1.0
    for low, high in bounds:
        width = (high - low) / n_points
        axes.append(low + width * (np.arange(n_points) + 0.5))
        cell *= width
    grid = np.stack(np.meshgrid(*axes), axis=-1).reshape(-1, len(bounds))
    values = np.asarray(log_density(grid), dtype=np.float64)
    top = values.max()
    return float(top + np.log(np.exp(values - top).sum() * cell))


def annealed_importance_log_partition(sample_base, log_base, log_ratio, *, n_chains=100,
                                      n_temperatures=1000, generator, step_size=0.1):
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
        Normalized log-density of the base of an ``(m, d)`` tensor.
    log_ratio : callable
        ``log p* - log base`` of an ``(m, d)`` tensor; differentiable.
    n_chains : int, default=100
    n_temperatures : int, default=1000
    generator : torch.Generator
    step_size : float, default=0.1
        Initial step size of the Langevin proposals.

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
    betas = ais_temperatures(n_temperatures).tolist()
    z = sample_base(n_chains, generator)
    log_weights = torch.zeros(n_chains, dtype=torch.float64, device=z.device)
    for previous, beta in zip(betas[:-1], betas[1:]):
        with torch.no_grad():
            log_weights += (beta - previous) * log_ratio(z).to(torch.float64)
        if beta == 1.0:
            break
        target = lambda x, beta=beta: log_base(x) + beta * log_ratio(x)
        z, acceptance = metropolis_adjusted_langevin(target, z, 1, step_size, generator)
        step_size *= math.exp(acceptance - 0.574)
    return importance_log_partition(log_weights)


# -- restricted Boltzmann machines -------------------------------------------
# Energy E(v, h) = -b.v - c.h - v.W.h with Bernoulli visible units, and
# E(v, h) = |v - b|^2 / 2 - c.h - v.W.h with unit-variance Gaussian ones;
# W has shape (n_visible, n_hidden), the hidden units are Bernoulli.


def rbm_free_energy(visible, weights, visible_bias, hidden_bias, visible_units="bernoulli"):
    """Free energy ``F(v) = -log sum_h exp(-E(v, h))`` of each row of ``visible``.

    ``p(v) = exp(-F(v)) / Z``. Bernoulli visible units:
    ``F(v) = -b.v - sum_j softplus(c_j + (v W)_j)``; Gaussian ones:
    ``F(v) = |v - b|^2 / 2 - sum_j softplus(c_j + (v W)_j)``.

    Returns
    -------
    torch.Tensor of shape (n_rows,)
    """
    hidden_term = softplus(torch.addmm(hidden_bias, visible, weights)).sum(1)
    if visible_units == "bernoulli":
        return -(visible @ visible_bias) - hidden_term
    return 0.5 * ((visible - visible_bias) ** 2).sum(1) - hidden_term


def _binary_states(n_units, start, stop, dtype, device):
    """Rows ``start .. stop - 1`` of the ``2**n_units`` binary vectors, in order."""
    codes = torch.arange(start, stop, device=device)
    return ((codes[:, None] >> torch.arange(n_units, device=device)) & 1).to(dtype)


def rbm_exact_log_partition(weights, visible_bias, hidden_bias, visible_units="bernoulli",
                            *, chunk_size=65536):
    """Exact log Z of an RBM, by enumerating its smaller layer.

    Given one layer, the other sums (or, Gaussian visible units, integrates)
    out in closed form, so log Z is a log-sum-exp over the ``2**k`` states of
    a layer of ``k`` units. Enumerating the hidden layer of a Gaussian RBM
    uses ``integral exp(-|v - b|^2 / 2 + v.u) dv =
    (2 pi)^(d/2) exp(b.u + |u|^2 / 2)``; a Gaussian visible layer cannot be
    enumerated, so there the hidden layer must be the small one.

    Parameters
    ----------
    weights : torch.Tensor of shape (n_visible, n_hidden)
    visible_bias : torch.Tensor of shape (n_visible,)
    hidden_bias : torch.Tensor of shape (n_hidden,)
    visible_units : {"bernoulli", "gaussian"}, default="bernoulli"
    chunk_size : int, default=65536
        States evaluated at once (bounds the memory).

    Returns
    -------
    log_z : float
        Computed in float64.
    """
    weights, visible_bias, hidden_bias = (
        t.detach().to(torch.float64) for t in (weights, visible_bias, hidden_bias)
    )
    n_visible, n_hidden = weights.shape
    enumerate_visible = visible_units == "bernoulli" and n_visible <= n_hidden
    n_units = n_visible if enumerate_visible else n_hidden
    if n_units > MAX_EXACT_UNITS:
        raise ValueError(
            f"Exact log Z enumerates 2**{n_units} states; at most {MAX_EXACT_UNITS} units "
            "can be enumerated. Use rbm_ais_log_partition."
        )
    terms = []
    for start in range(0, 2**n_units, chunk_size):
        states = _binary_states(n_units, start, min(2**n_units, start + chunk_size),
                                torch.float64, weights.device)
        if enumerate_visible:
            terms.append(-rbm_free_energy(states, weights, visible_bias, hidden_bias))
            continue
        # -F(h) = c.h + log sum_v exp(v.(b + W h)) (or its Gaussian integral).
        top_down = states @ weights.t()
        if visible_units == "bernoulli":
            visible_term = softplus(top_down + visible_bias).sum(1)
        else:
            visible_term = top_down @ visible_bias + 0.5 * (top_down**2).sum(1)
        terms.append(states @ hidden_bias + visible_term)
    log_z = torch.logsumexp(torch.cat(terms), dim=0).item()
    if visible_units == "gaussian":
        log_z += 0.5 * n_visible * math.log(2 * math.pi)
    return log_z


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
        torch.linspace(0.0, 0.5, n_low + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.5, 0.9, n_mid + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.9, 1.0, n_high + 1, dtype=torch.float64),
    ])


def rbm_ais_log_partition(weights, visible_bias, hidden_bias, visible_units="bernoulli", *,
                          base_visible_bias=None, n_chains=100, n_temperatures=10000,
                          generator=None, precise_sampling=False):
    """log Z of an RBM by annealed importance sampling (AIS).

    The chains start from a base model A with the same units, no weights and
    visible biases ``base_visible_bias`` (its log Z_A is known in closed form;
    with biases fitted to the data's marginals, A is close to the RBM B and
    the estimate is precise). They move through the intermediate models

        p_k(v) ~ exp((1 - beta_k) g_A(v) + beta_k g_B(v)) prod_j (1 + exp(beta_k (c_j + (v W)_j)))

    (``g`` the visible bias term: ``b.v``, or ``-|v - b|^2 / 2`` for
    Gaussian units) by one block Gibbs step each, and accumulate the
    importance weights ``log p*_k(v_k) - log p*_(k-1)(v_k)``. The mean weight
    estimates ``Z_B / Z_A`` without bias (Neal 2001; Salakhutdinov & Murray
    2008); its log is biased low by about half its squared relative error,
    so a short schedule tends to underestimate log Z.

    Parameters
    ----------
    weights : torch.Tensor of shape (n_visible, n_hidden)
    visible_bias : torch.Tensor of shape (n_visible,)
    hidden_bias : torch.Tensor of shape (n_hidden,)
    visible_units : {"bernoulli", "gaussian"}, default="bernoulli"
    base_visible_bias : torch.Tensor of shape (n_visible,) or None
        Visible biases of the base model: for Bernoulli units the logits of
        the training data's column means, for Gaussian units their means.
        None uses ``visible_bias``.
    n_chains : int, default=100
        Independent AIS runs (Salakhutdinov & Murray used 100).
    n_temperatures : int, default=10000
        Intermediate distributions (they used 14,500); see
        :func:`ais_temperatures`.
    generator : torch.Generator or None
        Source of randomness; None makes a fresh, unseeded one.
    precise_sampling : bool, default=False
        Run the Gibbs transitions in float64 too. By default they run in
        float32 (twice as fast on a CPU), while the importance weights are
        always accumulated in float64.

    Returns
    -------
    log_z : float
    log_z_std : float
        Standard error of ``log_z`` across the chains (delta method, see
        :func:`importance_log_partition`).

    References
    ----------
    .. [1] Neal, R. M. "Annealed importance sampling." Statistics and
       Computing 11 (2001).
    .. [2] Salakhutdinov, R. and Murray, I. "On the quantitative analysis of
       deep belief networks." ICML 2008.
    """
    weights, visible_bias, hidden_bias = (
        t.detach().to(torch.float64) for t in (weights, visible_bias, hidden_bias)
    )
    device = weights.device
    sampling_dtype = torch.float64 if precise_sampling else torch.float32
    if generator is None:
        generator = torch.Generator(device=device)
        generator.seed()
    base = visible_bias if base_visible_bias is None else base_visible_bias
    base = torch.as_tensor(base, dtype=torch.float64, device=device)
    n_visible, n_hidden = weights.shape
    gaussian = visible_units == "gaussian"
    betas = ais_temperatures(n_temperatures).tolist()

    # Draw from A and take its log Z_A (the hidden units of A are fair coins).
    if gaussian:
        visible = base + torch.randn(n_chains, n_visible, generator=generator,
                                     dtype=torch.float64, device=device)
        log_z_base = 0.5 * n_visible * math.log(2 * math.pi)
    else:
        visible = bernoulli(torch.sigmoid(base).expand(n_chains, n_visible), generator)
        log_z_base = softplus(base).sum().item()
    log_z_base += n_hidden * math.log(2.0)

    # log p*_beta(v) is linear in beta apart from the hidden term: its visible
    # part g_B(v) - g_A(v) = v.(b - b_A) (+ (|b_A|^2 - |b|^2) / 2, Gaussian).
    bias_shift = visible_bias - base
    visible_offset = 0.5 * (base @ base - visible_bias @ visible_bias).item() if gaussian else 0.0
    # The increments of the hidden term, softplus(beta x) - softplus(beta' x)
    # for x = c + v W, are written
    #     relu(step x) + log1p(sigmoid(-beta' |x|) expm1(-step |x|)),  step = beta - beta',
    # (from softplus(a) - softplus(b) = log1p(sigmoid(b) expm1(a - b))): the
    # log1p argument stays in [-1/2, 0], so this is accurate to a relative
    # 1e-7 even in float32, where a difference of two softplus would lose a
    # small increment to rounding. Sums are taken in float64.
    fast_weights_t, fast_weights, fast_hidden_bias, fast_base, fast_shift = (
        t.to(sampling_dtype) for t in (weights.t(), weights, hidden_bias, base, bias_shift))
    visible = visible.to(sampling_dtype)
    log_weights = torch.zeros(n_chains, dtype=torch.float64, device=device)
    for k in range(1, len(betas)):
        beta, previous = betas[k], betas[k - 1]
        step = beta - previous
        bottom_up = torch.addmm(fast_hidden_bias, visible, fast_weights)
        magnitude = bottom_up.abs()
        increments = torch.sigmoid(magnitude * -previous).mul_(
            magnitude.mul_(-step).expm1_()).log1p_()
        log_weights.add_(increments.sum(1, dtype=torch.float64))
        log_weights.add_(torch.relu(bottom_up).sum(1, dtype=torch.float64), alpha=step)
        log_weights.add_(visible @ fast_shift, alpha=step)
        if k == len(betas) - 1:
            break
        # One Gibbs step that leaves p_k invariant: h ~ p_k(h | v), v ~ p_k(v | h).
        hidden = bernoulli(bottom_up.mul_(beta).sigmoid_(), generator)
        top_down = torch.addmm(torch.add(fast_base, fast_shift, alpha=beta), hidden,
                               fast_weights_t, alpha=beta)
        if gaussian:
            visible = top_down.add_(torch.randn(top_down.shape, generator=generator,
                                                dtype=top_down.dtype, device=device))
        else:
            visible = bernoulli(top_down.sigmoid_(), generator)
    log_weights += visible_offset
    log_ratio, log_ratio_std = importance_log_partition(log_weights)
    return log_z_base + log_ratio, log_ratio_std
