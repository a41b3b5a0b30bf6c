"""NCEDensity's model: a base density reweighted by an energy network, its
NCE logit, and the frozen snapshot that self-adapting NCE draws noise from."""

import copy
import math

import torch
from torch import nn

from ._missing import MissingCells
from .samplers import metropolis_adjusted_langevin, sampling_importance_resampling

__all__ = ["Cells", "NCEModel", "Snapshot", "cell_offsets", "dequantized", "inner_cell_width"]

#: Step size of the Metropolis-adjusted Langevin moves (of ``sample`` and of
#: the snapshot's pool), in the base's standardized units.
MALA_STEP_SIZE = 0.1
#: ``sample``: proposal draws each row is resampled from.
SIR_CANDIDATES = 32
#: Rows that a Gibbs sweep over the categories scores at once (a row once
#: per category of its column).
GIBBS_ROWS = 2**14
#: Self-adapting noise: rows in the pool that follows the frozen model, and
#: Langevin steps that move it at each refresh.
_POOL_ROWS = 8192
_POOL_MALA_STEPS = 5
#: Training draws noise from the proposal this many steps' worth at a time:
#: a mixture draws component by component, and with one call per step, on
#: 32 components, the calls cost as much as the draws (benchmarks/RESULTS.md).
#: The reserve starts empty with every epoch that early stopping scores (it
#: switches modes, :meth:`NCEModel.train`), and such epochs are often 11
#: steps: 4 wastes one.
NOISE_RESERVE_STEPS = 4


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
            log_density, self.pool[rows], _POOL_MALA_STEPS, MALA_STEP_SIZE, generator,
            mask=module.moving)
        self.pool.copy_(pool)

    def sample(self, n_samples, generator):
        rows = torch.randint(len(self.pool), (n_samples,), generator=generator,
                             device=self.pool.device)
        return self.pool[rows]


class Cells(nn.Module):
    """The cells of values that a table's entries stand for, on ``z``: an
    integer's (``widths``: each column's cell width, 0 where it holds no
    integers) around it, a point mass's at a column's end (``censored``:
    each column's censoring points, low and high, -inf and inf where it has
    none) all of the line beyond the point, and a point mass's between a
    column's ends (``inner``: each column's point, NaN where it has none;
    None: no column has one) a cell the model's line gets inserted just
    above the point (``inner_widths``: each one's width, from
    :func:`inner_cell_width`; 0 where a column has none), so that the
    entries above the point lie that much higher there (:meth:`lifted`).
    Training spreads the entries at a point at an end over the
    :data:`CENSORED_CELL` beyond it, and those at an inner point over its
    cell. An entry within :data:`CENSORED_TOLERANCE` of its point, or beyond
    an end's, is at the point; ``censored=None``: no column has a point at
    an end."""

    def __init__(self, widths, censored=None, inner=None, inner_widths=None):
        super().__init__()
        if censored is None:
            censored = torch.tensor([-math.inf, math.inf], dtype=widths.dtype,
                                    device=widths.device).repeat(len(widths), 1)
        self.register_buffer("widths", widths)
        self.register_buffer("censored", censored)
        self.register_buffer("inner", inner)
        self.register_buffer("inner_widths", inner_widths)

    def __setstate__(self, state):
        super().__setstate__(state)
        for name in ("inner", "inner_widths"):  # pickled before inner points were modelled
            self._buffers.setdefault(name, None)

    def spread(self, Z, offsets):
        """``Z`` with each entry moved within its cell, ``offsets`` (of
        ``Z``'s shape or broadcast to it, in ``[-1/2, 1/2)``) of its width."""
        return self._moved(Z, offsets, (offsets + 0.5) * CENSORED_CELL)

    def holds(self, Z):
        """Which rows of ``Z`` have an entry in a cell: all, with integer
        columns; otherwise those with an entry at a point mass."""
        if self.widths.any():
            return torch.ones(len(Z), dtype=torch.bool, device=Z.device)
        return self.at_points(Z).any(1)

    def at_points(self, Z):
        """Where an entry of ``Z`` is at a point mass (boolean, ``Z``'s shape)."""
        low, high = self.at_points_by_side(Z)
        return low | high | self.at_inner_points(Z)

    def at_points_by_side(self, Z):
        """``(at the low point, at the high point)`` of a column's ends, each
        as :meth:`at_points`."""
        return (Z <= self.censored[:, 0] + CENSORED_TOLERANCE,
                Z >= self.censored[:, 1] - CENSORED_TOLERANCE)

    def at_inner_points(self, Z):
        """Where an entry of ``Z`` is at a point mass between its column's ends."""
        if self.inner is None:
            return torch.zeros(Z.shape, dtype=torch.bool, device=Z.device)
        return (Z - self.inner).abs() <= CENSORED_TOLERANCE

    def lifted(self, Z):
        """``Z`` on the model's line: each entry above its column's inner
        point moved up by the point's cell (the point's own entries are
        moved into the cell by :meth:`spread` and :meth:`points`)."""
        if self.inner is None:
            return Z
        return Z + self.inner_widths * (Z > self.inner + CENSORED_TOLERANCE).to(Z.dtype)

    def unlifted(self, Z):
        """Rows of the model's line back on ``z``: an entry in an inner
        point's cell on the point, one above the cell moved down by it."""
        if self.inner is None:
            return Z
        above = Z - self.inner
        in_cell = (above >= 0) & (above <= self.inner_widths)
        Z = torch.where(above > self.inner_widths, Z - self.inner_widths, Z)
        return torch.where(in_cell, self.inner.to(Z.dtype).expand_as(Z), Z)

    def points(self, Z, offsets):
        """``(copies, log_weights)``: a copy of each row of ``Z`` for each row
        of ``offsets`` (:func:`cell_offsets`; a row's copies consecutive),
        each integer moved within its cell by its offset, each entry at a
        point mass at an end moved beyond it to the quantile at ``offset +
        1/2`` of an exponential distribution of mean :data:`CENSORED_CELL`,
        each one at an inner point moved within its cell by its offset; and
        each copy's log importance weight, minus the log of those
        exponential (and uniform) densities. The mean over a row's copies of
        density times weight is an unbiased estimate of its mass over its
        cells, all the mass beyond a point at an end included, as ``sample``
        puts it on the point."""
        depth = -torch.log1p(-(offsets + 0.5)) * CENSORED_CELL
        moved = self._moved(Z[:, None, :], offsets, depth)
        low, high = self.at_points_by_side(Z)
        log_weights = torch.where((low | high)[:, None, :],
                                  math.log(CENSORED_CELL) + depth / CENSORED_CELL, 0.0)
        if self.inner is not None:
            log_weights = torch.where(self.at_inner_points(Z)[:, None, :],
                                      torch.log(self.inner_widths), log_weights)
        log_weights = log_weights.sum(2)
        return moved.reshape(-1, Z.shape[1]), log_weights.reshape(-1)

    def _moved(self, Z, offsets, depth):
        """``Z`` on the model's line, with each integer moved by its offset
        times its cell's width, each entry at a point mass at an end
        ``depth`` beyond the point, and each one at an inner point moved
        within its cell by its offset."""
        low, high = self.at_points_by_side(Z)
        moved = torch.where(low, self.censored[:, 0] - depth,
                            self.lifted(Z) + offsets * self.widths)
        moved = torch.where(high, self.censored[:, 1] + depth, moved)
        if self.inner is None:
            return moved
        in_cell = self.inner + (offsets + 0.5) * self.inner_widths
        return torch.where(self.at_inner_points(Z), in_cell, moved)

    def on_points(self, Z):
        """Rows of the model's line back on ``z`` (:meth:`unlifted`), with
        each entry beyond a point mass at an end put on it."""
        return torch.clamp(self.unlifted(Z), self.censored[:, 0], self.censored[:, 1])


#: Width, on ``z`` (standard deviations), of a point mass's cell. Kernels and
#: mixture components smooth the step in density at the point, moving mass
#: across it, and a wider, flatter spread makes the step smaller: two, not
#: one, is ahead on randhie's and star98's tables, level on Fair's, with
#: draws nearer the data's share at the point; three lost randhie's gain
#: (benchmarks/RESULTS.md).
CENSORED_CELL = 2.0
#: How near its point, on ``z``, an entry is at it (float32's rounding of the
#: standardized point is far smaller).
CENSORED_TOLERANCE = 1e-5


#: Half-width, on ``z``, of the neighbourhood of an inner point mass whose
#: other values measure the column's density next to it, and the bounds of
#: its cell's width (:func:`inner_cell_width`).
INNER_NEIGHBOURHOOD = 0.25
INNER_CELL_BOUNDS = (0.25, 2.0)


def inner_cell_width(column, point):
    """The width, on ``z``, of the cell of the inner point mass ``point`` of
    the training values ``column`` (NaN for a missing cell): the width over
    which the point's rows, spread evenly, have the density of the column's
    other values next to it, so that the model's line has no step at the
    cell's edges, within :data:`INNER_CELL_BOUNDS`."""
    offset = (column[~torch.isnan(column)] - point).abs()
    at_point = int((offset <= CENSORED_TOLERANCE).sum())
    near = int(((offset > CENSORED_TOLERANCE) & (offset <= INNER_NEIGHBOURHOOD)).sum())
    low, high = INNER_CELL_BOUNDS
    return high if near == 0 else min(max(at_point * 2 * INNER_NEIGHBOURHOOD / near, low), high)


def dequantized(Z, cells, generator):
    """Rows ``Z`` with each entry spread over its cell (:class:`Cells`; None:
    Z as it is), a uniform offset in each."""
    if cells is None:
        return Z
    offsets = torch.rand(Z.shape, generator=generator, dtype=Z.dtype, device=Z.device) - 0.5
    return cells.spread(Z, offsets)


def cell_offsets(n_points, n_features, generator, dtype, device=None):
    """``(n_points, n_features)`` offsets in ``[-1/2, 1/2)`` of a cell's
    width, drawn from ``generator`` and moved to ``device`` (None: the
    generator's): a Latin hypercube (in every column, one offset in each of
    ``n_points`` equal strata, in a random order), so every point is uniform
    over the cell, and the mean of a density over the points is an unbiased
    estimate of its mass, with far less spread than from independent points
    when the density is smooth."""
    shape = (n_points, n_features)
    options = dict(generator=generator, dtype=dtype, device=generator.device)
    strata = torch.argsort(torch.rand(shape, **options), dim=0)
    return ((strata + torch.rand(shape, **options)) / n_points - 0.5).to(device)


class NCEModel(MissingCells, nn.Module):
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

    def __init__(self, energy, marginals, base, proposal, base_choice, snapshot=None,
                 cells=None):
        super().__init__()
        self.energy = energy
        self.cells = cells  # a table's integers' and point masses' Cells, or None
        # Which columns Langevin moves: the continuous ones (None: all).
        self.register_buffer("moving", (~base.categorical).to(torch.float32)
                             if base.table else None)
        self.marginals = marginals
        self.base = base
        self.proposal = proposal
        self.base_choice = base_choice  # (marginals or not, components, ridge), for a refit
        self.snapshot = snapshot
        self.log_partition = nn.Parameter(torch.zeros((), dtype=torch.float32,
                                                      device=base.means.device))
        self._noise_reserve = None  # noise drawn ahead, during training (sample_noise)

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
        """Noise rows for a training step: the snapshot's, or the proposal's,
        drawn :data:`NOISE_RESERVE_STEPS` steps ahead and kept until the
        training run ends (:meth:`train`)."""
        if self.snapshot is not None:
            return self.snapshot.sample(n_samples, generator)
        if self._noise_reserve is None or len(self._noise_reserve) < n_samples:
            self._noise_reserve = self.proposal.sample(NOISE_RESERVE_STEPS * n_samples,
                                                       generator)
        noise, self._noise_reserve = (self._noise_reserve[:n_samples],
                                      self._noise_reserve[n_samples:])
        return noise

    def train(self, mode=True):
        """nn.Module's ``train``, which also drops the noise drawn ahead, so
        that no reserve outlives a training run (nor moves devices with the
        module: it is no buffer)."""
        self._noise_reserve = None
        return super().train(mode)

    def _conditioning(self, Z):
        """``(Z, log_constraint)``: rows ``Z`` on the model's line, with each
        known entry at a point mass made free, and the function that rules
        out (log weight -inf) each completion (on ``u``) that puts such an
        entry outside its point's cell (short of a point at an end, or off
        an inner point's cell), so that a row is conditioned on being at the
        point (all the mass of its cell), not on a value there; None where
        no entry is at one."""
        if self.cells is None:
            return Z, None
        at_low, at_high = self.cells.at_points_by_side(Z)
        at_inner = self.cells.at_inner_points(Z)
        lifted = self.cells.lifted(Z)
        if not (at_low | at_high | at_inner).any():
            return lifted, None
        censored = self.cells.censored
        ends, _ = self.latent(torch.where(torch.isinf(censored), 0.0, censored).T.to(Z.dtype))
        inner = self.cells.inner
        if inner is not None:  # the ends of each inner point's cell, on u
            inner = torch.nan_to_num(inner.to(Z.dtype))
            cell, _ = self.latent(torch.stack([inner, inner + self.cells.inner_widths]))

        def log_constraint(completed):
            short = ((at_low[:, None, :] & (completed > ends[0]))
                     | (at_high[:, None, :] & (completed < ends[1])))
            if inner is not None:
                short |= at_inner[:, None, :] & ((completed < cell[0]) | (completed > cell[1]))
            return torch.where(short.any(2), -math.inf, 0.0).to(completed.dtype)

        return torch.where(at_low | at_high | at_inner, torch.nan, lifted), log_constraint

    def _on_points(self, Z):
        """Rows of the model's line back on ``z``, each entry beyond a point
        mass at an end put on it (:meth:`Cells.on_points`)."""
        return Z if self.cells is None else self.cells.on_points(Z)

    def __setstate__(self, state):
        super().__setstate__(state)
        if "cells" in self._buffers:  # pickled when a buffer held the integers' widths alone
            widths = self._buffers.pop("cells")
            self.cells = None if widths is None else Cells(widths)

    def sample(self, n_samples, n_steps, generator):
        """Rows of the model, on ``z``: sampling-importance-resampling from the
        proposal, then ``n_steps`` Metropolis-adjusted Langevin steps, which
        leave the model exactly invariant and separate rows resampling made
        identical (on a table, after a Gibbs sweep over the categories; the
        steps then move the continuous columns only)."""
        with torch.no_grad():
            start = sampling_importance_resampling(
                self.latent_log_density, self.proposal, n_samples, SIR_CANDIDATES, generator)
        return self._moved(start, None, n_steps, generator)

    def _moved(self, U, free, n_steps, generator):
        """Rows ``U`` moved by steps that leave the model (conditioned on the
        entries not ``free``; None: all free) invariant, back on ``z``."""
        if n_steps and self.moving is not None:
            with torch.no_grad():
                U = self._gibbs_categories(U, free, generator)
        mask = None if free is None else free.to(U.dtype)
        if self.moving is not None:
            mask = self.moving.to(U.dtype) if mask is None else mask * self.moving
        if mask is None or mask.any():
            U, _ = metropolis_adjusted_langevin(
                self.latent_log_density, U, n_steps, MALA_STEP_SIZE, generator, mask=mask)
        with torch.no_grad():
            Z = self.from_latent(U)
            return Z if self.cells is None else self.cells.unlifted(Z)

    def _categorical_columns(self):
        """``(column, number of categories)`` of each categorical column."""
        if self.moving is None:
            return []
        columns = torch.nonzero(self.moving == 0).squeeze(1).tolist()
        return list(zip(columns, self.energy.layers[0].n_categories))

    def _gibbs_categories(self, U, free, generator):
        """One sweep of Gibbs sampling over the categorical columns: each
        (free) category redrawn from its exact conditional given the rest of
        its row, every category of the column scored."""
        U = U.clone()
        for column, count in self._categorical_columns():
            rows = (torch.arange(len(U), device=U.device) if free is None
                    else torch.nonzero(free[:, column]).squeeze(1))
            if not len(rows):
                continue
            scores = self._category_log_densities(U[rows], column, count)
            U[rows, column] = torch.multinomial(torch.softmax(scores, 1), 1,
                                                generator=generator).squeeze(1).to(U.dtype)
        return U

    def _category_log_densities(self, U, column, count):
        """``(n_rows, count)``: the log-density of each row of ``U`` with its
        categorical ``column`` set to each category, about
        :data:`GIBBS_ROWS` rows a call: a column of thousands of categories
        costs few calls."""
        per_call = max(1, GIBBS_ROWS // len(U))
        scores = []
        for start in range(0, count, per_call):
            codes = torch.arange(start, min(count, start + per_call), dtype=U.dtype,
                                 device=U.device)
            rows = U.repeat(len(codes), 1)  # each category's copy of the rows in turn
            rows[:, column] = codes.repeat_interleave(len(U))
            scores.append(self.latent_log_density(rows).view(len(codes), len(U)))
        return torch.cat(scores).T

    # -- rows with missing entries (the rest in :class:`MissingCells`) ----------
    def complete(self, Z, free, n_candidates, n_steps, generator):
        """Rows ``Z`` with their ``free`` entries drawn given the others:
        sampling-importance-resampling from the base's conditional, then
        ``n_steps`` steps of the model's conditional; on ``z``."""
        Z, log_constraint = self._conditioning(torch.where(free, torch.nan, Z))
        with torch.no_grad():
            U = self.impute(Z, n_candidates, generator, log_constraint)
        return self._moved(U, free, n_steps, generator)
