"""Rows with missing cells under a model that reweights a base density.

Such a model (``NCEDensity``'s, ``ShortRunEBM``'s) is ``log p(u) = log b(u)
- E(u) - log Z`` on coordinates ``u`` of the standardized row (``latent``:
a map with its log-Jacobian, or the identity), with ``b`` a Gaussian
mixture whose conditionals given any observed cells are exact. So the
density of a row's observed cells is the base's marginal of them times the
mean of ``exp(-E)`` over the base's conditional of the missing ones:
importance sampling with that conditional as proposal, exact while ``E =
0``. The same draws, resampled by ``exp(-E)``, impute the row from the
model's conditional.

An estimate (a log-density, a conditional mean) is made from
:class:`~skebm._mixture.CommonDraws`, the same numbers for every row, so
that a fitted model answers a row alike whatever batch it comes in; an
imputation is a random draw, from :class:`~skebm._mixture.FreshDraws`.
"""

import math
from typing import NamedTuple

import torch

from ._mixture import CommonDraws, FreshDraws
from ._runtime import make_generator

__all__ = ["CONDITIONAL_MEAN_DRAWS", "INCOMPLETE_ROWS_AT_ONCE", "MISSING_DRAWS",
           "TRAINING_CANDIDATES", "ConditionalMeanMixin", "KeptCompletions", "MissingCells",
           "common_generator", "missing_draws", "observed_log_density"]

#: Draws of a row's missing cells from the base's conditional that its
#: log-density averages over (importance sampling).
MISSING_DRAWS = 128
#: Candidates that training resamples one completion of a row from.
TRAINING_CANDIDATES = 8
#: Candidates that ``sample_conditional`` resamples a row's start from.
CONDITIONAL_CANDIDATES = 64
#: Completions that a conditional mean averages.
CONDITIONAL_MEAN_DRAWS = 256
#: Rows with missing cells handled at once (their draws' memory).
INCOMPLETE_ROWS_AT_ONCE = 64
#: Most bytes of the completions that validation keeps for every epoch
#: (:class:`KeptCompletions`); beyond, each epoch draws them again.
KEPT_COMPLETION_BYTES = 2**26


class MissingCells:
    """What a model module needs for rows with NaN: mixed into a module with
    ``latent(Z) -> (U, log |dU/dZ|)`` and its inverse ``from_latent``,
    ``base`` (a :class:`~skebm.base_density.GaussianMixtureDensity` on
    ``u``), ``energy`` (on ``u``) and ``_categorical_columns()`` (``(column,
    number of categories)`` of each categorical column)."""

    def completions(self, Z, draws, log_constraint=None):
        """Draws of the missing (NaN) entries of rows ``Z`` from the base's
        conditional, made from the numbers of ``draws`` (a
        :class:`~skebm._mixture.FreshDraws` or
        :class:`~skebm._mixture.CommonDraws`): ``(U, log_weights,
        log_observed)``, ``U`` of shape (n_rows, n_draws, n_features) on
        ``u``, ``log_weights = -E(U)`` (the
        base's conditional is the proposal, so the model's conditional is it
        reweighted by exp(-E)), ``log_observed`` the base's log-density of
        the observed entries with the map's log-Jacobian. ``log_constraint``
        (:meth:`_conditioning`) adds to the log weights, unless it rules out
        every completion of a row."""
        U, log_det = self.latent(Z)
        conditionals = self.base.conditionals(U, draws.combination_generator)
        completed = self.base.complete(conditionals, draws)
        log_weights = self.completion_log_weights(completed)
        if log_constraint is not None:
            constrained = log_weights + log_constraint(completed)
            possible = torch.isfinite(constrained).any(1, keepdim=True)
            log_weights = torch.where(possible, constrained, log_weights)
        return completed, log_weights, conditionals.log_marginal.to(Z.dtype) + log_det

    def completion_log_weights(self, completed):
        """``-E`` of completions (n_rows, n_draws, n_features) on ``u``."""
        return -self.energy(completed.reshape(-1, completed.shape[2])).view(completed.shape[:2])

    def _conditioning(self, Z):
        """``(Z, log_constraint)``: the rows to complete, and None or a
        function of their completions (on ``u``) that adds to each one's log
        weight (see :meth:`NCEModel._conditioning`). Here: as they are."""
        return Z, None

    def _on_points(self, Z):
        """Completed rows of ``z`` as the model's draws (as they are)."""
        return Z

    def observed_log_density(self, Z, draws):
        """The unnormalized log-density of each row's observed entries, its
        missing ones integrated out by importance sampling from the base's
        conditional with the draws of ``draws`` (a
        :class:`~skebm._mixture.CommonDraws`; exact while ``E = 0``)."""
        _, log_weights, log_observed = self.completions(Z, draws)
        return _importance_sampled(log_observed, log_weights)

    def impute(self, Z, n_candidates, generator, log_constraint=None):
        """Rows ``Z`` with each missing entry drawn from the model's
        conditional by sampling-importance-resampling (one of
        ``n_candidates`` completions, by weight), on ``u``."""
        completed, log_weights, _ = self.completions(Z, FreshDraws(n_candidates, generator),
                                                     log_constraint)
        # A model gone non-finite in training picks any candidate: its loss
        # is then not finite, which the divergence guard reports.
        chosen = torch.multinomial(torch.softmax(log_weights, 1).nan_to_num(1.0), 1,
                                   generator=generator)
        return completed[torch.arange(len(Z), device=Z.device), chosen.squeeze(1)]

    def conditional_mean(self, Z, free, draws, levels=None):
        """Rows ``Z`` with each ``free`` entry replaced by its conditional
        mean under the model, on ``z``: self-normalized importance sampling
        over the completions of ``draws`` (a
        :class:`~skebm._mixture.CommonDraws`) from the base's conditional,
        weighted by ``exp(-E)`` (each completion as :meth:`_on_points` gives
        it). A category gets its most probable code; a categorical
        column in ``levels`` (``{column: tensor of the values its codes
        stand for}``) gets the mean of those values instead."""
        levels = levels or {}
        Z, log_constraint = self._conditioning(torch.where(free, torch.nan, Z))
        completed, log_weights, _ = self.completions(Z, draws, log_constraint)
        weights = torch.softmax(log_weights, 1)[:, :, None]
        rows = self._on_points(self.from_latent(completed.reshape(-1, Z.shape[1])))
        rows = rows.view(completed.shape)
        filled = (weights * rows).sum(1)
        for column, count in self._categorical_columns():
            probabilities = weights.new_zeros(len(Z), count).scatter_add_(
                1, rows[:, :, column].long(), weights[:, :, 0])
            if column in levels:  # within the values' range, whatever the rounding
                values = levels[column]
                filled[:, column] = (probabilities @ values).clamp(values.min(), values.max())
            else:
                filled[:, column] = probabilities.argmax(1).to(Z.dtype)
        return torch.where(free, filled, Z)


class ConditionalMeanMixin:
    """``conditional_mean`` for an estimator whose fitted module is a
    :class:`MissingCells` model."""

    def conditional_mean(self, X, mask=None, *, random_state=None):
        """Fill in cells of X by their expected value given the others.

        For each row, each free cell (``mask`` True, or X's missing cells
        when ``mask`` is None) gets its mean under the model's conditional
        distribution given the known cells, the value with the least expected
        squared error. A categorical cell gets its most probable category,
        except in a numeric column that ``categorical_features="auto"``
        modelled as categories (a flag, a year of three): there the mean of
        its values, a number as in the column's other cells. The estimate is
        self-normalized importance sampling: 256 completions from the base
        density's conditional (exact for its Gaussian mixture), weighted by
        ``exp(-E)``, their random numbers the same for every row, so that a
        row's fill does not depend on the other rows of X. The known cells
        come back exactly as given.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, `n_features_in_`)
            Known values; the free cells may hold anything, NaN included
            (but an integer beyond 2**53, refused in any input).
        mask : array-like of bool, shape (n_samples, `n_features_in_`), or None
            True where a value is to be filled; None means X's missing cells.
        random_state : int, RandomState instance or None, default=None
            Seeds the completions. None: a seed drawn at fit, so that the
            estimate is the same at every call, as ``score_samples`` is.

        Returns
        -------
        X_filled : ndarray of shape (n_samples, `n_features_in_`) or DataFrame
            float64; a DataFrame when categories are strings, its columns
            in the fitted DataFrame's dtypes where the values allow.
        """
        self._check_fitted()
        module = self._inference_module()
        table = getattr(self, "_table", None)
        levels = {} if table is None else table.mean_levels()
        # The same numbers for every chunk of rows, so a row's mean does not
        # depend on its batch (the chunks' generator goes unused).
        seed = self._log_partition_memo["seed"] + 2 if random_state is None else random_state
        draws = CommonDraws.drawn(CONDITIONAL_MEAN_DRAWS, self.n_features_in_,
                                  common_generator(seed), self._inference_device())

        def fill(Z, free, _):
            on_device = {column: torch.as_tensor(values, dtype=Z.dtype, device=Z.device)
                         for column, values in levels.items()}
            return module.conditional_mean(Z, free, draws, on_device)

        return self._complete_rows(X, mask, fill, random_state,
                                   chunk_rows=INCOMPLETE_ROWS_AT_ONCE // 4, draws=False,
                                   passes_per_row=CONDITIONAL_MEAN_DRAWS)


def missing_draws(Z, generator):
    """The :class:`~skebm._mixture.CommonDraws` of :data:`MISSING_DRAWS`
    draws, from ``generator``, that rows like ``Z`` integrate their missing
    cells over, on ``Z``'s device."""
    return CommonDraws.drawn(MISSING_DRAWS, Z.shape[1], generator, Z.device)


def common_generator(seed):
    """The generator of the numbers that a fitted model's estimates share
    across rows (:class:`~skebm._mixture.CommonDraws`): a CPU one, whatever
    the model's device, its numbers moved to the device after. A GPU's
    stream differs from the CPU's for the same seed, so a model moved
    between devices would otherwise answer a row with missing cells from
    other draws (the differences measured are in ``benchmarks/RESULTS.md``)."""
    return make_generator(seed, "cpu")


def observed_log_density(module, Z, draws, kept=None):
    """The unnormalized log-density of each row of ``Z`` (standardized) under
    ``module`` (a :class:`MissingCells` model with
    ``unnormalized_log_density``): complete rows as they are, a row with
    missing cells that of its observed ones, from the draws of ``draws`` (a
    :class:`~skebm._mixture.CommonDraws`), or from ``kept``, the
    :class:`KeptCompletions` of ``Z`` with them."""
    incomplete = torch.isnan(Z).any(1)
    if not incomplete.any():
        return module.unnormalized_log_density(Z)
    value = torch.empty(len(Z), dtype=Z.dtype, device=Z.device)
    value[~incomplete] = module.unnormalized_log_density(Z[~incomplete])
    if kept is not None:
        value[incomplete] = kept.log_density(module)
        return value
    rows = torch.nonzero(incomplete).squeeze(1)
    for block in _blocks(rows, draws):
        value[block] = module.observed_log_density(Z[block], draws.rows(block))
    return value


class KeptCompletions(NamedTuple):
    """The completions of rows' missing cells from the base's conditional
    (n_incomplete, n_draws, n_features, on ``u``) and the log-density of
    their observed cells: all that the density of the observed cells needs
    but the energy. With a fixed base and common draws they are the same
    at every epoch, and validation makes them once."""

    completed: torch.Tensor
    log_observed: torch.Tensor

    @classmethod
    def made(cls, module, Z, draws):
        """Those of the rows of ``Z`` that miss a cell, from the numbers of
        ``draws`` (a :class:`~skebm._mixture.CommonDraws`); None where no
        row misses one, or where they would take more than
        :data:`KEPT_COMPLETION_BYTES`."""
        rows = torch.nonzero(torch.isnan(Z).any(1)).squeeze(1)
        size = 8 * len(rows) * draws.n_draws * Z.shape[1]
        if not len(rows) or size > KEPT_COMPLETION_BYTES:
            return None
        parts = [module.completions(Z[block], draws.rows(block))
                 for block in _blocks(rows, draws)]
        return cls(torch.cat([part[0] for part in parts]), torch.cat([part[2] for part in parts]))

    def log_density(self, module):
        """The rows' log-density of their observed cells under ``module``'s
        energy now (as :meth:`MissingCells.observed_log_density`)."""
        log_weights = torch.cat([module.completion_log_weights(block) for block in
                                 self.completed.split(INCOMPLETE_ROWS_AT_ONCE)])
        return _importance_sampled(self.log_observed, log_weights)


def _blocks(rows, draws):
    """The ``rows`` (indices) in blocks whose completions by ``draws`` take
    the memory of :data:`INCOMPLETE_ROWS_AT_ONCE` rows of
    :data:`MISSING_DRAWS` draws."""
    return torch.split(rows, max(1, INCOMPLETE_ROWS_AT_ONCE * MISSING_DRAWS // draws.n_draws))


def _importance_sampled(log_observed, log_weights):
    """A row's log-density of its observed cells: that of the base, plus the
    log of the mean of its completions' weights ``exp(-E)`` (the base's
    conditional the proposal)."""
    return log_observed + torch.logsumexp(log_weights, 1) - math.log(log_weights.shape[1])
