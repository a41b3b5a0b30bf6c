"""A restricted Boltzmann machine's mathematics, in one place.

Energy ``E(v, h) = -b.v - c.h - v.W.h`` with Bernoulli visible units, and
``E(v, h) = |v - b|^2 / 2 - c.h - v.W.h`` with unit-variance Gaussian ones;
``W`` has shape ``(n_visible, n_hidden)`` and the hidden units are Bernoulli.
Here: the free energy, the conditionals and block Gibbs sampling, log Z
(exact by enumeration, or by annealed importance sampling), the
pseudo-likelihood, and the (P)CD update with its module of parameters.
:class:`~skebm.rbm.PCDRestrictedBoltzmann` is the estimator around them.
"""

import math

import torch
from torch import nn
from torch.nn.functional import softplus

from .partition import ais_temperatures, importance_log_partition

__all__ = ["MAX_EXACT_UNITS", "ContrastiveDivergence", "RBMModule", "bernoulli", "block_gibbs",
           "rbm_ais_log_partition", "rbm_exact_log_partition", "rbm_free_energy",
           "rbm_pseudo_likelihood", "rbm_sample_visible"]

#: Largest layer :func:`rbm_exact_log_partition` enumerates (2**20 states).
MAX_EXACT_UNITS = 20


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
        float32 (faster, and precise enough for draws), while the importance
        weights are always accumulated in float64.

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
def bernoulli(probabilities, generator):
    """0/1 draws (same dtype) with the given probabilities: ``u < p`` for
    uniform ``u``. Faster than ``torch.bernoulli`` on the CPU, and as
    exact."""
    uniform = torch.rand(probabilities.shape, generator=generator,
                         dtype=probabilities.dtype, device=probabilities.device)
    return uniform.lt_(probabilities)


def rbm_sample_visible(hidden, weights, visible_bias, visible_units, generator):
    """Draw visible units given hidden ones in an RBM.

    ``weights`` has shape ``(n_visible, n_hidden)``. Bernoulli units are 1 with
    probability ``sigmoid(visible_bias + weights @ h)``; Gaussian units (unit
    variance) are ``N(visible_bias + weights @ h, 1)``.
    """
    activation = torch.addmm(visible_bias, hidden, weights.t())
    if visible_units == "bernoulli":
        return bernoulli(torch.sigmoid_(activation), generator)
    noise = torch.randn(activation.shape, generator=generator, device=activation.device,
                        dtype=activation.dtype)
    return activation.add_(noise)


def block_gibbs(visible, weights, visible_bias, hidden_bias, n_steps, generator, *,
                visible_units="bernoulli", free=None):
    """Run ``n_steps`` of block Gibbs sampling in an RBM from ``visible``.

    One step draws every hidden unit given the visible ones, then every
    visible unit given the hidden ones (the layers are conditionally
    independent, so each half-step is exact). The chains' stationary
    distribution is the RBM's ``p(v)`` (Hinton 2002).

    Parameters
    ----------
    visible : torch.Tensor of shape (n_chains, n_visible)
        Starting states, one chain per row.
    weights : torch.Tensor of shape (n_visible, n_hidden)
    visible_bias : torch.Tensor of shape (n_visible,)
    hidden_bias : torch.Tensor of shape (n_hidden,)
    n_steps : int
        Number of full (hidden then visible) steps; 0 returns ``visible``.
    generator : torch.Generator
    visible_units : {"bernoulli", "gaussian"}, default="bernoulli"
    free : torch.Tensor of bool, shape (n_chains, n_visible), or None
        If given, only these visible units are drawn; the others keep their
        values in ``visible`` (they are clamped), so the chains sample the
        free units given the clamped ones, ``p(v_free | v_clamped)``.

    Returns
    -------
    torch.Tensor of shape (n_chains, n_visible)
        The chains' states after ``n_steps``.

    References
    ----------
    .. [1] Hinton, G. E. "Training products of experts by minimizing
       contrastive divergence." Neural Computation 14 (2002).
    """
    clamped = visible
    for _ in range(n_steps):
        hidden = bernoulli(torch.sigmoid_(torch.addmm(hidden_bias, visible, weights)), generator)
        visible = rbm_sample_visible(hidden, weights, visible_bias, visible_units, generator)
        if free is not None:
            visible = torch.where(free, visible, clamped)
    return visible
class RBMModule(nn.Module):
    """An RBM's parameters and training state, all moved and pickled together.

    The weight parameter is ``components``, shape ``(n_hidden, n_visible)``
    as BernoulliRBM's ``components_`` (this layout makes the products of a
    step faster on a CPU); ``weights`` is its transpose, the
    ``(n_visible, n_hidden)`` view that the functions of
    :mod:`skebm.partition` and :mod:`skebm.samplers` take. ``chain_hidden`` holds the
    persistent chains as ``P(h = 1 | v)`` of each chain's last visible state,
    from which the next step draws ``h``. ``base_visible_bias`` (the data's
    marginals) is where sampling and AIS start; the ``*_velocity`` buffers are
    the momentum. ``visible_units`` is kept with the parameters it goes with.
    """

    def __init__(self, n_visible, n_hidden, n_chains, base_visible_bias, visible_units,
                 generator):
        super().__init__()
        self.visible_units = visible_units
        float32 = dict(dtype=torch.float32, device=generator.device)
        components = 0.01 * torch.randn(n_hidden, n_visible, generator=generator, **float32)
        self.components = nn.Parameter(components, requires_grad=False)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible, **float32), requires_grad=False)
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden, **float32), requires_grad=False)
        self.register_buffer("chain_hidden", torch.zeros(n_chains, n_hidden, **float32))
        self.register_buffer("base_visible_bias", base_visible_bias.clone())
        for name, param in list(self.named_parameters()):
            self.register_buffer(f"{name}_velocity", torch.zeros_like(param))

    @property
    def weights(self):
        return self.components.t()

    def hidden_probabilities(self, visible):
        return torch.sigmoid(torch.addmm(self.hidden_bias, visible, self.weights))

    def free_energy(self, visible):
        return rbm_free_energy(visible, self.weights, self.visible_bias, self.hidden_bias,
                               self.visible_units)

    def reconstruction_error(self, visible):
        """Mean squared difference of ``visible`` and its mean-field reconstruction."""
        activation = torch.addmm(self.visible_bias, self.hidden_probabilities(visible),
                                 self.weights.t())
        if self.visible_units == "bernoulli":
            activation = torch.sigmoid(activation)
        return float(((visible - activation) ** 2).mean())

    def gibbs(self, visible, n_steps, generator, *, free=None):
        """:func:`block_gibbs` from ``visible`` (only the ``free`` units move, if given)."""
        return block_gibbs(visible, self.weights, self.visible_bias, self.hidden_bias, n_steps,
                           generator, visible_units=self.visible_units, free=free)

    def draw_marginals(self, n_rows, generator):
        """Rows of independent units with the data's marginals."""
        base = self.base_visible_bias
        if self.visible_units == "bernoulli":
            return bernoulli(torch.sigmoid(base).expand(n_rows, -1), generator)
        return base + torch.randn(n_rows, len(base), generator=generator, dtype=base.dtype,
                                  device=base.device)

    @property
    def log_partition_is_exact(self):
        """Whether :func:`rbm_exact_log_partition` can enumerate the model."""
        n_hidden, n_visible = self.components.shape
        smaller = n_hidden if self.visible_units == "gaussian" else min(n_visible, n_hidden)
        return smaller <= MAX_EXACT_UNITS

    def log_partition(self, generator, *, n_ais_chains, n_ais_temperatures):
        """``(log Z, standard error)``: exact when enumerable, by AIS otherwise."""
        args = (self.weights, self.visible_bias, self.hidden_bias, self.visible_units)
        if self.log_partition_is_exact:
            return rbm_exact_log_partition(*args), 0.0
        return rbm_ais_log_partition(
            *args, base_visible_bias=self.base_visible_bias, n_chains=n_ais_chains,
            n_temperatures=n_ais_temperatures, generator=generator)


class ContrastiveDivergence:
    """The (P)CD-k update of an RBM, written by hand (no autograd).

    The log-likelihood gradient is ``<v h>_data - <v h>_model`` for the
    weights (``<v>`` and ``<h>`` for the biases). The model's statistics come
    from the chains after ``n_gibbs_steps`` block Gibbs steps, started from
    the persistent chains (PCD) or the minibatch (CD). At a batch of 10 the
    cost is per call, not arithmetic, so the data's and the chains' rows go
    through each product together: one product for ``P(h | v)`` of both, one
    ``addmm_`` for the whole weight gradient, with each row weighted by
    ``+learning_rate / n_data`` or ``-learning_rate / n_chains``.
    """

    def __init__(self, estimator, module):
        self.module = module
        self.learning_rate = estimator._learning_rate()
        self.n_gibbs_steps = estimator.n_gibbs_steps
        self.persistent = estimator.persistent
        self.visible_units = estimator.visible_units
        self.momentum = estimator.momentum
        self.weight_decay = estimator.weight_decay
        # Looked up once: a small step costs per call, so attribute lookups and
        # views per step would be a visible share of it. Every update below is
        # in place, so the view ``weights`` stays the transpose of ``components``.
        self.components, self.weights = module.components, module.components.t()
        self.visible_bias, self.hidden_bias = module.visible_bias, module.hidden_bias
        self._row_weights = {}

    def row_weights(self, n_data, n_model, like):
        key = (n_data, n_model)
        if key not in self._row_weights:
            self._row_weights[key] = torch.cat([
                torch.full((n_data,), self.learning_rate / n_data, dtype=like.dtype,
                           device=like.device),
                torch.full((n_model,), -self.learning_rate / n_model, dtype=like.dtype,
                           device=like.device),
            ])
        return self._row_weights[key]

    def step(self, batch, generator):
        # Nothing here requires grad (the parameters are created with
        # requires_grad=False), so no autograd graph is built without no_grad.
        weights, visible_bias, hidden_bias = self.weights, self.visible_bias, self.hidden_bias
        if self.persistent:
            hidden_model = self.module.chain_hidden
        else:
            hidden_data = hidden_model = torch.sigmoid(torch.addmm(hidden_bias, batch, weights))
        for step in range(self.n_gibbs_steps):
            if step:
                hidden_model = torch.sigmoid(torch.addmm(hidden_bias, visible_model, weights))
            hidden = bernoulli(hidden_model, generator)
            visible_model = rbm_sample_visible(hidden, weights, visible_bias,
                                               self.visible_units, generator)
        n_data = len(batch)
        visible_both = torch.cat([batch, visible_model])
        if self.persistent:
            hidden_both = torch.sigmoid(torch.addmm(hidden_bias, visible_both, weights))
            self.module.chain_hidden.copy_(hidden_both[n_data:])
        else:
            hidden_model = torch.sigmoid(torch.addmm(hidden_bias, visible_model, weights))
            hidden_both = torch.cat([hidden_data, hidden_model])
        row_weights = self.row_weights(n_data, len(visible_model), batch)
        # Rows weighted on the visible side, usually the narrower one.
        weighted_visible = visible_both * row_weights[:, None]
        hidden_t = hidden_both.t()
        if self.momentum == 0 and self.weight_decay == 0:
            self.components.addmm_(hidden_t, weighted_visible)
            visible_bias.addmv_(visible_both.t(), row_weights)
            hidden_bias.addmv_(hidden_t, row_weights)
            return
        module = self.module
        step_w = module.components_velocity.mul_(self.momentum)
        if self.weight_decay:
            step_w.add_(self.components, alpha=-self.learning_rate * self.weight_decay)
        step_w.addmm_(hidden_t, weighted_visible)
        module.visible_bias_velocity.mul_(self.momentum).addmv_(visible_both.t(), row_weights)
        module.hidden_bias_velocity.mul_(self.momentum).addmv_(hidden_t, row_weights)
        self.components.add_(step_w)
        visible_bias.add_(module.visible_bias_velocity)
        hidden_bias.add_(module.hidden_bias_velocity)


def rbm_pseudo_likelihood(visible, weights, visible_bias, hidden_bias):
    """``sum_i log sigmoid(F(v^(i)) - F(v))`` per row of a Bernoulli RBM,
    ``v^(i)`` being ``v`` with feature i flipped to ``1 - v_i`` (Besag 1975).

    Flipping feature i moves the hidden pre-activations ``x = c + v W`` by
    ``d_i W_i`` (``d_i = 1 - 2 v_i``), so every flip is evaluated without a
    new product:

        F(v^(i)) - F(v) = -b_i d_i - sum_j log1p(sigmoid(x_j) expm1(d_i W_ij))

    (``softplus(x + t) - softplus(x) = log1p(sigmoid(x) expm1(t))``, accurate
    to a relative 1e-7 in float32 too). Computed in the dtype of the inputs;
    rows go in blocks that keep the (rows, features, hidden) intermediate
    near 4 million numbers.

    Returns
    -------
    torch.Tensor of shape (n_rows,)
    """
    n_visible, n_hidden = weights.shape
    rows_per_block = max(1, 4_000_000 // (n_visible * n_hidden))
    out = []
    for start in range(0, len(visible), rows_per_block):
        v = visible[start : start + rows_per_block]
        hidden_probabilities = torch.sigmoid(torch.addmm(hidden_bias, v, weights))
        flip = 1 - 2 * v
        change = torch.expm1(flip[:, :, None] * weights).mul_(hidden_probabilities[:, None, :])
        delta = (-visible_bias * flip).sub_(change.log1p_().sum(2))
        out.append(torch.nn.functional.logsigmoid(delta).sum(1))
    if not out:
        return visible.new_zeros(0)
    return torch.cat(out)
