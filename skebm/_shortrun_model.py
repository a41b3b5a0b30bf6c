"""ShortRunEBM's model: a Gaussian mixture reweighted by an energy network,
with the whitened coordinates its Langevin chains run in and its persistent
chains."""

import contextlib
import copy
import math

import torch
from sklearn.utils import gen_batches
from torch import nn

from ._missing import MissingCells
from ._mixture import filled_rows
from .nets import LOW_DIMENSION
from .partition import (annealed_importance_log_partition, grid_log_integral,
                        importance_log_partition)
from .samplers import langevin

__all__ = ["ShortRunModel", "frozen"]

#: ``step_size="auto"``: the step starts here and is multiplied after each
#: update by exp(acceptance - target), so that a Metropolis test would accept
#: this share of the chains' steps: high, since the chains have no Metropolis
#: correction and training degrades as acceptance falls (see the user guide).
INITIAL_STEP_SIZE = 0.001
TARGET_ACCEPTANCE = 0.97

#: The grid of log Z for one or two features: whitened coordinates in
#: [-GRID_RADIUS, GRID_RADIUS] (the base puts 1e-15 of its mass outside), so
#: many points per axis.
GRID_RADIUS = 8.0
GRID_POINTS = {1: 20_000, 2: 600}

#: Rows of the energy evaluated at once by :meth:`ShortRunModel.sampled_log_partition`
#: in every epoch: a convolutional network's float32 activations for
#: thousands of rows outgrow the CPU's caches, and the pass slows down
#: (measured in benchmarks/RESULTS.md).
DRAWS_AT_ONCE = 512


@contextlib.contextmanager
def frozen(module):
    """Parameters of ``module`` without gradients in the block: chains need
    the gradient in ``x`` only, and backward then skips the weights'."""
    flags = [(param, param.requires_grad) for param in module.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


class ShortRunModel(MissingCells, nn.Module):
    """The trainable model on the standardized data ``z``:
    ``log p(z) = log b(z) - E(z) - log Z``, ``b`` a Gaussian mixture fitted
    to the data, ``E`` the energy network (zero at the start).

    Chains run in whitened coordinates ``u``, ``z = mean + L u``, those of
    ``frame``, the one Gaussian with the base's mean and covariance (``L``
    the Cholesky factor of that covariance), where the model's energy is
    ``-log b(z(u)) + E(z(u))`` (``|u|^2 / 2 + E(z(u))`` when the base is one
    Gaussian, the frame itself): Langevin there is Langevin on ``z``
    preconditioned by the data's covariance, so one step size suits every
    direction however the features are scaled or correlated. ``buffer``
    holds the persistent chains (in ``u``; empty for short runs from the
    start); ``low`` and ``high`` the data's range, for ``init="uniform"``.
    The chains' settings (:meth:`set_chains`) are kept with the model, so
    that a fitted model samples as it was trained.
    """

    def __init__(self, energy, base, low, high, buffer_size, generator, init):
        super().__init__()
        self.energy = energy
        self.set_base(base)
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.init = init
        n_features = len(low)
        self.register_buffer("buffer", torch.empty(0, n_features, dtype=low.dtype,
                                                   device=low.device))
        self.buffer = self.draw_init(buffer_size, generator)
        self.average = None  # during a fit: the energy's moving average

    def set_base(self, base):
        """Make ``base`` the base, and the Gaussian with its mean and
        covariance the frame; chains already in the buffer keep their
        states, in the new frame's coordinates."""
        data = self.to_data(self.buffer) if hasattr(self, "buffer") else None
        self.base = base
        self.frame = base if base.n_components == 1 else base.moment_matched()
        if data is not None:
            self.buffer = self.to_whitened(data)

    # -- the moving average of the energy's parameters (during a fit) ---------
    def start_average(self):
        """Keep ``average``, a copy of the energy network that
        :meth:`update_average` moves toward it after every update."""
        self.average = copy.deepcopy(self.energy).requires_grad_(False)
        self.average_updates = 0

    @torch.no_grad()
    def update_average(self, decay):
        """Move the average's parameters toward the network's, by ``1 -
        decay`` or, over the first updates, more: the decay is at most
        ``(1 + t) / (10 + t)`` after ``t`` updates, so that the average
        follows the fast early moves of training rather than lagging ~1 /
        (1 - decay) updates behind them (the rule of TensorFlow's
        ``ExponentialMovingAverage`` with ``num_updates``). Buffers, such as
        spectral norms' vectors, are copied."""
        t = self.average_updates
        decay = min(decay, (1 + t) / (10 + t))
        self.average_updates += 1
        for kept, live in zip(self.average.parameters(), self.energy.parameters()):
            kept.lerp_(live, 1 - decay)
        for kept, live in zip(self.average.buffers(), self.energy.buffers()):
            kept.copy_(live)

    @contextlib.contextmanager
    def averaged(self):
        """The average in the network's place within the block (none kept:
        the network itself)."""
        if self.average is None:
            yield
            return
        live, self.energy = self.energy, self.average
        try:
            yield
        finally:
            self.energy = live

    @torch.no_grad()
    def keep_average(self):
        """The network takes the average's parameters, and the average goes."""
        for live, kept in zip(self.energy.parameters(), self.average.parameters()):
            live.copy_(kept)
        self.average = None

    @property
    def gaussian_base(self):
        """Whether the base is one Gaussian, the frame itself (a standard
        normal in ``u``)."""
        return self.base.n_components == 1

    @property
    def mean(self):
        return self.frame.means[0]

    @property
    def cholesky(self):
        return self.frame.cholesky[0]

    def to_data(self, U):
        return self.mean + U @ self.cholesky.T

    def to_whitened(self, Z):
        return torch.linalg.solve_triangular(self.cholesky, (Z - self.mean).T, upper=False).T

    # The coordinates of :class:`~skebm._missing.MissingCells` are ``z``
    # itself, and every column is continuous.
    def latent(self, Z):
        return Z, torch.zeros(len(Z), dtype=Z.dtype, device=Z.device)

    def from_latent(self, U):
        return U

    def _categorical_columns(self):
        return []

    @torch.no_grad()
    def energy_and_gradient(self, U):
        """``E(z(u))`` and its gradient in ``u``, without autograd (the
        network's by hand: :func:`~skebm.nets.energy_and_gradient`)."""
        energy, grad = self.energy.energy_and_gradient(self.to_data(U))
        return energy, grad @ self.cholesky

    def base_log_density(self, U):
        """The base's log-density in ``u`` (normalized there)."""
        if self.gaussian_base:
            return -0.5 * ((U**2).sum(1) + U.shape[1] * math.log(2 * math.pi))
        return self.base.log_prob(self.to_data(U)) + self._log_det()

    def base_log_density_and_gradient(self, U):
        """The base's log-density in ``u`` and its gradient, by hand (for
        chains: the mixture's products go through its inverse factors)."""
        if self.gaussian_base:
            return self.base_log_density(U), -U
        log_density, grad = self.base.log_prob_and_gradient(self.to_data(U))
        return log_density + self._log_det(), grad @ self.cholesky

    def _log_det(self):
        return torch.log(torch.diagonal(self.cholesky)).sum()

    def whitened_energy_and_gradient(self, U):
        """The energy in ``u``, ``-log b(z(u)) + E(z(u))`` (up to a
        constant), and its gradient, without autograd."""
        energy, grad = self.energy_and_gradient(U)
        log_base, base_grad = self.base_log_density_and_gradient(U)
        return energy - log_base, grad - base_grad

    def unnormalized_log_density(self, Z):
        return self.base.log_prob(Z) - self.energy(Z)

    def draw_init(self, n_rows, generator):
        """Starting states of chains, in ``u``: draws of the base, or uniform
        over the data's range."""
        if self.init == "gaussian":
            return self.draw_base(n_rows, generator)
        uniform = torch.rand(n_rows, len(self.low), generator=generator,
                             device=self.low.device, dtype=self.low.dtype)
        return self.to_whitened(self.low + (self.high - self.low) * uniform)

    def draw_base(self, n_rows, generator):
        """Draws of the base in ``u`` (standard normal when it is the frame)."""
        if self.gaussian_base or not n_rows:  # (no rows: no buffer for short runs)
            return torch.randn(n_rows, len(self.low), generator=generator,
                               device=self.low.device, dtype=self.low.dtype)
        return self.to_whitened(self.base.sample(n_rows, generator).to(self.low.dtype))

    def set_chains(self, *, n_steps, step_size, noise_scale, grad_clip, persistent, reinit_freq):
        """The chains' settings: ``step_size="auto"`` adapts the step (kept
        from a previous fit), ``noise_scale="auto"`` is ``sqrt(2 step)``."""
        self.adaptive = step_size == "auto"
        if not self.adaptive:
            self.step_size = step_size
        elif not hasattr(self, "step_size"):
            self.step_size = INITIAL_STEP_SIZE
        self.n_steps, self.noise_scale, self.grad_clip = n_steps, noise_scale, grad_clip
        self.persistent, self.reinit_freq = persistent, reinit_freq

    def steps(self):
        """(step size, noise scale) of a Langevin step."""
        noise = math.sqrt(2 * self.step_size) if self.noise_scale == "auto" else self.noise_scale
        return self.step_size, noise

    def run_chains(self, start, n_steps, generator):
        """``n_steps`` Langevin steps from ``start`` (in ``u``); (chains, statistics)."""
        return langevin(self.whitened_energy_and_gradient, start, n_steps, *self.steps(),
                        generator, grad_clip=self.grad_clip)

    def negatives(self, n_rows, generator):
        """Negatives for one training update, on ``z``, and the chains'
        statistics: persistent chains continue from the buffer (a share
        ``reinit_freq`` restarted) and are written back; an adaptive step
        moves toward :data:`TARGET_ACCEPTANCE`."""
        if self.persistent:
            rows = torch.randperm(len(self.buffer), generator=generator,
                                  device=generator.device)[:n_rows]
            restart = torch.rand(len(rows), generator=generator, dtype=torch.float32,
                                 device=generator.device) < self.reinit_freq
            start = torch.where(restart[:, None], self.draw_init(len(rows), generator),
                                self.buffer[rows])
        else:
            start = self.draw_init(n_rows, generator)
        step = self.step_size
        with frozen(self):
            chains, stats = self.run_chains(start, self.n_steps, generator)
        stats["step_size"] = step
        if self.adaptive and math.isfinite(stats["acceptance"]):
            self.step_size = step * math.exp(stats["acceptance"] - TARGET_ACCEPTANCE)
        if self.persistent:
            self.buffer[rows] = chains
        return self.to_data(chains), stats

    def sample(self, n_rows, n_steps, generator, *, replace):
        """Rows of the model, on ``z``: chains continued from the buffer (rows
        drawn with replacement when ``replace``), or fresh short runs."""
        if self.persistent:
            size = len(self.buffer)
            rows = (torch.randint(size, (n_rows,), generator=generator, device=generator.device)
                    if replace else
                    torch.randperm(size, generator=generator, device=generator.device)[:n_rows])
            start = self.buffer[rows]
        else:
            start = self.draw_init(n_rows, generator)
        return self.to_data(self.run_chains(start, n_steps, generator)[0])

    def complete(self, Z, free, n_candidates, n_steps, generator):
        """Rows ``Z`` with their ``free`` entries (a boolean tensor of Z's
        shape) drawn given the others: one of ``n_candidates`` draws of the
        base's conditional, kept with probability proportional to
        ``exp(-E)`` (so each mode of the model's conditional starts with its
        share of the chains, which Langevin steps seldom move between
        modes), then Langevin in each row's whitened coordinates of the
        frame's conditional, ``u`` with the free entries ``mean + F^-T u``
        (``F F^T`` their conditional precision), where only they move. Rows with
        different free entries run side by side: the coordinates are padded
        to the most any row frees, and a padding coordinate moves nothing."""
        if not free.any():
            return Z
        holes = torch.where(free, torch.nan, Z)
        conditionals = self.frame.conditionals(holes)
        columns = conditionals.columns
        means = conditionals.means[:, 0].to(Z.dtype)
        factors = conditionals.factors[:, 0].to(Z.dtype)
        rows_of = lambda V: filled_rows(Z, columns, means, factors, V)
        with torch.no_grad():
            resampled = self.impute(holes, n_candidates, generator)
        # Its coordinates: u = F^T (z - mean) on the free entries (0 on padding).
        offsets = (torch.nn.functional.pad(resampled, (0, 1)).gather(-1, columns)
                   - torch.nn.functional.pad(means, (0, 1)).gather(-1, columns))
        start = (factors.transpose(-1, -2) @ offsets[..., None]).squeeze(-1)

        def energy_and_gradient(V):
            # d rows / d V is F^-T on the freed entries: the gradient is F^-1
            # times the one in z at them (a padding coordinate's is 0).
            rows = rows_of(V)
            energy, grad = self.energy.energy_and_gradient(rows)
            log_base, base_grad = self.base.log_prob_and_gradient(rows)
            freed = torch.nn.functional.pad(grad - base_grad, (0, 1)).gather(-1, columns)
            grad = torch.linalg.solve_triangular(factors, freed[..., None], upper=False)
            return energy - log_base, grad.squeeze(-1)

        chains, _ = langevin(energy_and_gradient, start, n_steps, *self.steps(), generator,
                             grad_clip=self.grad_clip)
        return rows_of(chains)

    def base_draws(self, n_draws, generator):
        """``n_draws`` rows drawn from the base, in the data's coordinates."""
        return self.to_data(self.draw_base(n_draws, generator))

    def sampled_log_partition(self, draws):
        """log Z by importance sampling from the base: ``log E_b[exp(-E)]``,
        from the base's ``draws`` (:meth:`base_draws`; cheap and rough: for
        comparing epochs), which go through the network
        :data:`DRAWS_AT_ONCE` at a time."""
        return importance_log_partition(torch.cat([-self.energy(rows)
                                                   for rows in draws.split(DRAWS_AT_ONCE)]))[0]

    def log_partition(self, generator, *, n_ais_chains, n_ais_temperatures, chunk_rows,
                      progress=None):
        """``(log Z, standard error)``, log Z = log E_b[exp(-E)] in the
        whitened coordinates: a grid
        integral for one or two features (``chunk_rows(n)`` rows at a time;
        its error gauged by its coarser sub-grids),
        annealed importance sampling otherwise (``progress()`` called after
        each temperature); 0 exactly for the base alone (a zero energy,
        which early stopping may keep)."""
        if self.energy.is_zero():
            return 0.0, 0.0
        log_ratio = lambda U: -self.energy(self.to_data(U))
        n_features = len(self.low)
        if n_features > LOW_DIMENSION:
            negated = lambda U: tuple(-term for term in self.energy_and_gradient(U))
            return annealed_importance_log_partition(
                self.draw_base, self.base_log_density_and_gradient, negated, n_chains=n_ais_chains,
                n_temperatures=n_ais_temperatures, generator=generator, progress=progress)

        def log_integrand(U):
            U = torch.as_tensor(U, dtype=torch.float64, device=self.low.device)
            chunks = [self.base_log_density(U[rows]) + log_ratio(U[rows])
                      for rows in gen_batches(len(U), chunk_rows(len(U)))]
            return torch.cat(chunks).cpu().numpy()

        bounds = [(-GRID_RADIUS, GRID_RADIUS)] * n_features
        return grid_log_integral(log_integrand, bounds, GRID_POINTS[n_features],
                                 with_error=True)
