"""NCEDensity's model: a base density reweighted by an energy network, its
NCE logit, and the frozen snapshot that self-adapting NCE draws noise from."""

import copy
import math

import torch
from torch import nn

from .samplers import metropolis_adjusted_langevin, sampling_importance_resampling

__all__ = ["NCEModel", "Snapshot"]

#: Step size of the Metropolis-adjusted Langevin moves (of ``sample`` and of
#: the snapshot's pool), in the base's standardized units.
MALA_STEP_SIZE = 0.1
#: ``sample``: proposal draws each row is resampled from.
SIR_CANDIDATES = 32
#: Self-adapting noise: rows in the pool that follows the frozen model, and
#: Langevin steps that move it at each refresh.
_POOL_ROWS = 8192
_POOL_MALA_STEPS = 5


class Snapshot(nn.Module):
    """A frozen copy of the model, used as the noise of self-adapting NCE.

    Its density is ``b(z) exp(-E_f(z) - c_f)``, with ``E_f`` a copy of the
    energy network frozen at the last refresh and ``c_f`` its log Z, tracked
    across refreshes. Its samples are a pool of rows that follows it: at the
    start, exact draws from the base ``b`` (the frozen model with ``E_f = 0``);
    at each refresh, the pool is reweighted by the ratio of the new frozen
    model to the old, ``exp(-(E_new - E_old))``, resampled by those weights
    and moved by a few Metropolis-adjusted Langevin steps that leave the new
    frozen model invariant (a resample-move step of sequential Monte Carlo).
    The mean weight is also the ratio of the two normalizing constants, which
    is how ``c_f`` is tracked.
    """

    def __init__(self, energy, base, generator):
        super().__init__()
        self.energy = copy.deepcopy(energy).requires_grad_(False)
        self.register_buffer("log_partition",
                             torch.zeros((), dtype=torch.float32, device=generator.device))
        self.register_buffer("pool", base.sample(_POOL_ROWS, generator))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=generator.device))
        self.register_buffer("effective_sample_size",
                             torch.ones((), dtype=torch.float32, device=generator.device))

    def log_prob_minus_base(self, Z):
        """``log p_f(z) - log b(z)``: the frozen model relative to the base."""
        return -self.energy(Z) - self.log_partition

    def step(self, module, interval, generator):
        """Count a training step, refreshing first when ``interval`` have passed."""
        if self.steps >= interval:
            self.refresh(module, generator)
            self.steps.zero_()
        self.steps += 1

    def refresh(self, module, generator):
        """Freeze the current ``model`` as the noise and move the pool to it."""
        with torch.no_grad():
            log_weights = self.energy(self.pool) - module.energy(self.pool)
            self.log_partition += torch.logsumexp(log_weights, 0) - math.log(len(self.pool))
            weights = torch.softmax(log_weights, 0)
            self.effective_sample_size.copy_(1.0 / (weights**2).sum() / len(self.pool))
            rows = torch.multinomial(weights, len(self.pool), replacement=True,
                                     generator=generator)
            self.energy.load_state_dict(module.energy.state_dict())
        log_density = lambda Z: module.base.log_prob(Z) - self.energy(Z)
        pool, _ = metropolis_adjusted_langevin(
            log_density, self.pool[rows], _POOL_MALA_STEPS, MALA_STEP_SIZE, generator)
        self.pool.copy_(pool)

    def sample(self, n_samples, generator):
        rows = torch.randint(len(self.pool), (n_samples,), generator=generator,
                             device=self.pool.device)
        return self.pool[rows]


class NCEModel(nn.Module):
    """The trainable model on the standardized data ``z``.

    ``u = marginals(z)`` maps each feature to a standard normal variable (the
    identity when ``marginals`` is None); on ``u`` the model is
    log p(u) = log b(u) - E(u) - c, with b the base mixture, E the energy
    network and c = log Z, and the density of ``z`` is
    p(u(z)) |du/dz|. ``proposal`` is the base widened by ``noise_scale``:
    NCE's noise (unless self-adapting, then ``snapshot`` is) and the
    proposal of importance sampling and of ``sample``. Noise, proposal and
    pool live on ``u``, where the Jacobian cancels from every ratio. The
    densities are modules, so their buffers travel with the model between
    devices."""

    def __init__(self, energy, marginals, base, proposal, base_choice, snapshot=None):
        super().__init__()
        self.energy = energy
        self.marginals = marginals
        self.base = base
        self.proposal = proposal
        self.base_choice = base_choice  # (marginals or not, components, ridge), for a refit
        self.snapshot = snapshot
        self.log_partition = nn.Parameter(torch.zeros((), dtype=torch.float32,
                                                      device=base.means.device))

    def latent(self, Z):
        """``(U, log |dU/dZ|)`` of standardized rows."""
        if self.marginals is None:
            return Z, torch.zeros(len(Z), dtype=Z.dtype, device=Z.device)
        return self.marginals(Z)

    def from_latent(self, U):
        return U if self.marginals is None else self.marginals.inverse(U)

    def latent_log_density(self, U):
        """``log b(u) - E(u)``: the unnormalized log-density on ``u``."""
        return self.base.log_prob(U) - self.energy(U)

    def unnormalized_log_density(self, Z):
        U, log_det = self.latent(Z)
        return self.latent_log_density(U) + log_det

    def log_importance_weights(self, U):
        """``log b(u) - E(u) - log proposal(u)``, for rows drawn from the proposal."""
        if self.proposal is self.base:
            return -self.energy(U)
        return self.latent_log_density(U) - self.proposal.log_prob(U)

    def nce_logit(self, U, log_noise_ratio):
        """log p(u) - log(nu q(u)), q the noise: the logit that u is data."""
        if self.snapshot is None:
            log_ratio = self.log_importance_weights(U) - self.log_partition
        else:  # log b cancels between the model and its frozen copy
            log_ratio = -self.energy(U) - self.log_partition - self.snapshot.log_prob_minus_base(U)
        return log_ratio - log_noise_ratio

    def sample_noise(self, n_samples, generator):
        source = self.proposal if self.snapshot is None else self.snapshot
        return source.sample(n_samples, generator)

    def sample(self, n_samples, n_steps, generator):
        """Rows of the model, on ``z``: sampling-importance-resampling from the
        proposal, then ``n_steps`` Metropolis-adjusted Langevin steps, which
        leave the model exactly invariant and separate rows resampling made
        identical."""
        with torch.no_grad():
            start = sampling_importance_resampling(
                self.latent_log_density, self.proposal, n_samples, SIR_CANDIDATES, generator)
        chains, _ = metropolis_adjusted_langevin(
            self.latent_log_density, start, n_steps, MALA_STEP_SIZE, generator)
        with torch.no_grad():
            return self.from_latent(chains)
