"""Gaussian mixtures over rows with categorical columns and missing entries.

Each component is a location model: independent categorical distributions
for the categorical columns and, given a row's categories, a full-covariance
Gaussian over the continuous columns whose mean is the component's mean
shifted by one vector per category (category 0 of each column shifts by 0;
the shifts of a row's categories add up). Within a component the categories
thus move the continuous columns, so that the probability of a category
given the continuous columns varies with them (linearly in the log-odds, as
in linear discriminant analysis), where independent factors (a latent class
model) would keep it constant within the component. Only where the
shifts would cost a solve wider than :data:`DENSE_SHIFTS` (two columns of
hundreds of categories) do the narrower column's categories stay
independent of the continuous columns within a component.

A missing entry (NaN) is marginalized exactly: a continuous one through the
Gaussian of the observed columns, a categorical one by summing over its
categories. For that a row with missing categories is expanded into one row
per combination of them (:func:`expand_categories`), each complete in its
categories. A row with no observed continuous entry needs no expansion
(:func:`expand`): its continuous entries integrate to 1 whatever their mean,
so within a component its categories are independent and a missing one's
factor sums to 1 (a row missing 16 binary answers costs one row, not
65,536). A row with an observed continuous entry and more than
:data:`COMBINATIONS_PER_ROW` combinations is summed by importance sampling
over that many of them instead, drawn from the mixture's
components (:class:`CategoryProposal`): an unbiased estimate of its
density, where every combination would cost rows by the million. The same
algebra gives each row's conditional distribution of its missing entries,
which is how models draw them, and the EM fit of such a mixture to
incomplete rows (Ghahramani & Jordan 1994).

All functions work on float64 tensors: ``X`` the continuous columns (NaN
where missing), ``codes`` the categorical ones (long, -1 where missing).
A mixture's parameters are ``(weights, means, covariances, log_probs,
shifts)``: ``log_probs`` (n_components, n_categorical, most categories),
-inf beyond a column's categories; ``shifts`` (n_components, sum over
columns of categories - 1, n_continuous), in column order.

References
----------
.. [1] Olkin, I. and Tate, R. F. "Multivariate correlation models with mixed
   discrete and continuous variables." Ann. Math. Statist. 32 (1961).
.. [2] Ghahramani, Z. and Jordan, M. I. "Supervised learning from incomplete
   data via an EM approach." NeurIPS 1994.
.. [3] McKay, M. D., Beckman, R. J. and Conover, W. J. "A comparison of
   three methods for selecting values of input variables in the analysis
   of output from a computer code." Technometrics 21 (1979).
"""

import functools
import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import special

from ._em import kmeans_labels

__all__ = ["CommonDraws", "ComponentConditionals", "FreshDraws", "category_counts",
           "category_shifts", "draw_categories", "expand_categories", "expanded_sizes",
           "filled_rows", "fit_mixture", "gaussian_observed", "log_density",
           "missing_covariance_sums"]

#: Pseudo-count added to every category of every component in the M-step, so
#: that no category seen in fit gets probability 0 in a component.
CATEGORY_PSEUDO_COUNT = 0.5
#: Pseudo-rows at shift 0 behind every category's shift in the M-step: a
#: category that a component holds few rows of moves its mean little.
SHIFT_PSEUDO_ROWS = 1.0
#: Most shifts that the M-step solves for as one dense system (its cost
#: grows with the cube of their number, per component and step): the
#: widest column's shifts come apart from it (:func:`_location_fit`), and
#: the other columns get shifts, narrowest first, while theirs add up to at
#: most this many. A column left out keeps shifts of 0: within a component
#: its categories are independent of the continuous columns.
DENSE_SHIFTS = 512


def gaussian_observed(X, means, covariances, *, with_missing=False, columns=None):
    """Each row's Gaussians over its observed columns, one per component:
    ``(log-density of the observed entries, (n_rows, n_components);
    conditional mean of every entry, (n_rows, n_components, n_columns))``
    and, with ``with_missing``, the conditional distribution of the missing
    entries in compact form, ``(columns, factors)``: ``columns`` (n_rows,
    width) each row's missing columns, padded with ``n_columns``;
    ``factors`` (n_rows, n_components, width, width) the Cholesky factors
    of their conditional precision (the identity on the padding).
    ``means``: (n_components, n_columns), or (n_rows, n_components,
    n_columns) for means that differ by row (:func:`_located_means`).

    It is all done through each component's precision ``L = S^-1``: for a
    row with missing entries ``m``, the conditional precision of ``m`` is
    ``L_mm``, the conditional mean ``mu_m - L_mm^-1 L_mo d_o`` and
    ``log det S_oo = log det S + log det L_mm``, so a row costs a factor of
    the size of its missing block, not of its observed one (Schur
    complements). Computed in float64, returned in ``X``'s dtype; rows go in
    chunks of bounded memory. ``columns``: :func:`missing_columns` of ``X``,
    when the caller has them.
    """
    dtype, n_columns = X.dtype, X.shape[1]
    X, means, covariances = (t.to(torch.float64) for t in (X, means, covariances))
    factor = torch.linalg.cholesky(covariances)
    log_dets = 2 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)
    # The precisions with one more row and column, of zeros, for the padding.
    precisions = torch.nn.functional.pad(torch.cholesky_inverse(factor), (0, 1, 0, 1))
    if columns is None:
        columns = missing_columns(X)
    some = (columns < n_columns).any(1)  # rows missing a continuous entry
    if some.all() or not some.any():
        log_density, conditional_mean, factors = _in_chunks(X, columns, means, precisions,
                                                            log_dets)
    else:  # the complete rows (those of rows missing only categories, say) condition on nothing
        by_row = means.dim() == 3
        parts = [_in_chunks(X[rows], columns[rows, :width], means[rows] if by_row else means,
                            precisions, log_dets)
                 for rows, width in ((~some, 0), (some, columns.shape[1]))]
        log_density = X.new_empty(len(X), len(covariances))
        conditional_mean = X.new_empty(len(X), len(covariances), n_columns)
        for rows, (part_density, part_mean, _) in zip((~some, some), parts):
            log_density[rows], conditional_mean[rows] = part_density, part_mean
        if with_missing:  # the identity for a row missing no cell
            factors = torch.eye(columns.shape[1], dtype=X.dtype, device=X.device).repeat(
                len(X), len(covariances), 1, 1)
            factors[some] = parts[1][2]
    if not with_missing:
        return log_density.to(dtype), conditional_mean.to(dtype)
    return log_density.to(dtype), conditional_mean.to(dtype), (columns, factors)


#: Elements of the batched (rows, components, ...) tensors at once.
_CHUNK_ELEMENTS = 2**22

#: Multiply-adds of a product that cost about one lookup of a row's
#: category or one sum into a bin, for the choice between products of
#: indicators and lookups (:func:`category_indicators`,
#: :func:`_normal_sums`), kept below the ratio measured in
#: benchmarks/RESULTS.md.
PRODUCT_ADDS_PER_LOOKUP = 16
#: Most bytes of the category indicators that an expansion keeps
#: (:func:`category_indicators`); beyond, its rows' categories are looked up.
INDICATOR_BYTES = 2**28


def missing_columns(X):
    """``(n_rows, width)``: each row's missing (NaN) columns in increasing
    order, padded with ``n_columns``; ``width`` is the most any row misses."""
    n_columns = X.shape[1]
    missing = torch.isnan(X)
    width = int(missing.sum(1).max()) if len(X) else 0
    padded_index = torch.where(missing, torch.arange(n_columns, device=X.device), n_columns)
    return torch.sort(padded_index, dim=1).values[:, :width]


def _in_chunks(X, columns, means, precisions, log_dets):
    """:func:`_gaussian_observed` on chunks of rows of bounded memory."""
    n_columns, width = X.shape[1], columns.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, len(precisions) * max(n_columns, width**2)))
    if len(X) <= chunk:
        return _gaussian_observed(X, columns, means, precisions, log_dets)
    by_row = means.dim() == 3
    chunks = zip(torch.split(X, chunk), torch.split(columns, chunk),
                 torch.split(means, chunk) if by_row else itertools.repeat(means))
    parts = [_gaussian_observed(rows, row_columns, row_means, precisions, log_dets)
             for rows, row_columns, row_means in chunks]
    return tuple(torch.cat(outputs) for outputs in zip(*parts))


def _gaussian_observed(X, columns, means, precisions, log_dets):
    n_rows, n_columns = X.shape
    n_components, width = len(precisions), columns.shape[1]
    if width == 0:  # complete rows, the search's usual case: no block to condition on
        centred = X[:, None, :] - means
        pulled = torch.einsum("kde,nke->nkd", precisions[:, :n_columns, :n_columns], centred)
        log_density = (-0.5 * (centred * pulled).sum(-1) - 0.5 * log_dets
                       - 0.5 * n_columns * math.log(2 * math.pi))
        return (log_density, X[:, None, :].expand(-1, n_components, -1).clone(),
                X.new_empty(n_rows, n_components, 0, 0))
    observed = ~torch.isnan(X)
    centred = torch.where(observed[:, None, :], X[:, None, :] - means, 0.0)  # d, 0 where missing
    pulled = torch.einsum("kde,nke->nkd", precisions[:, :n_columns, :n_columns], centred)  # L d
    # L_mm (the identity on the padding) and L_mo d_o, gathered at the missing columns.
    block = precisions.flatten(1)[:, _block_cells(columns, n_columns)].transpose(0, 1)
    padding = columns == n_columns
    eye = torch.eye(width, dtype=X.dtype, device=X.device)
    block = torch.where((padding[:, :, None] & padding[:, None, :])[:, None], eye, block)
    pulled_missing = torch.nn.functional.pad(pulled, (0, 1)).gather(
        2, columns[:, None, :].expand(-1, n_components, -1))
    # Rows missing no cell (padding only) keep the identity and a shift of 0,
    # with no factorization: most rows, where few continuous cells are missing.
    some = ~padding.all(1)
    factors = eye.expand(n_rows, n_components, width, width).clone()
    factors[some] = torch.linalg.cholesky(block[some])
    shift = torch.zeros_like(pulled_missing)  # L_mm^-1 L_mo d_o
    shift[some] = torch.cholesky_solve(pulled_missing[some, ..., None], factors[some]).squeeze(-1)
    quadratic = (centred * pulled).sum(-1) - (pulled_missing * shift).sum(-1)
    log_det = log_dets + 2 * torch.log(torch.diagonal(factors, dim1=-2, dim2=-1)).sum(-1)
    log_density = (-0.5 * quadratic - 0.5 * log_det
                   - 0.5 * observed.sum(1, keepdim=True).to(X.dtype) * math.log(2 * math.pi))
    moved = torch.zeros(n_rows, n_components, n_columns + 1, dtype=X.dtype, device=X.device)
    moved.scatter_(2, columns[:, None, :].expand(-1, n_components, -1), -shift)
    conditional_mean = torch.where(observed[:, None, :], X[:, None, :],
                                   means + moved[..., :n_columns])
    return log_density, conditional_mean, factors


def missing_covariance_sums(columns, factors, weights, n_columns):
    """``(n_components, n_columns, n_columns)``: the ``weights`` (n_rows,
    n_components) weighted sums of the rows' conditional covariances of their
    missing entries, ``(columns, factors)`` as :func:`gaussian_observed`
    returns them (zero outside each row's missing block)."""
    n_components = factors.shape[1]
    some = (columns < n_columns).any(1)  # the other rows' blocks are padding only
    columns, factors, weights = columns[some], factors[some], weights[some]
    blocks = weights[:, :, None, None] * torch.cholesky_inverse(factors)  # (n, K, w, w)
    sums = torch.zeros(n_components, (n_columns + 1)**2, dtype=factors.dtype,
                       device=factors.device)
    sums.index_add_(1, _block_cells(columns, n_columns).reshape(-1),
                    blocks.transpose(0, 1).reshape(n_components, -1))
    return sums.view(n_components, n_columns + 1, n_columns + 1)[:, :n_columns, :n_columns]


def _block_cells(columns, n_columns):
    """``(n_rows, width, width)``: where each row's missing block lies in a
    flattened ``(n_columns + 1, n_columns + 1)`` matrix, the last row and
    column the padding's: one flat index gathers faster than a pair of
    them."""
    return columns[:, :, None] * (n_columns + 1) + columns[:, None, :]


def category_counts(log_probs):
    """The number of categories of each categorical column, from the
    components' log-probabilities (-inf beyond a column's categories)."""
    return [int(count) for count in torch.isfinite(log_probs[0]).sum(-1).tolist()]


def _category_log_likelihoods(codes, log_probs, indicators=None):
    """``(n_rows, n_components)``: the sum over the categorical entries of
    each component's log-probability; a missing entry (-1, left only where
    the categories are summed out) adds log 1 = 0. ``indicators``: the
    codes' :func:`category_indicators`, or None."""
    if indicators is not None:
        flat = torch.cat([log_probs[:, j, :count] for j, count in
                          enumerate(indicators.n_categories)], 1)
        if bool(torch.isfinite(flat).all()):  # a product would make 0 * -inf NaN
            return indicators.matrix @ flat.T
    # Each column's log-probabilities by category, the components side by
    # side (rows gathered whole), and a row of zeros that a missing entry takes.
    by_category = torch.nn.functional.pad(log_probs.permute(1, 2, 0), (0, 0, 0, 1))
    none = by_category.shape[1] - 1
    total = torch.zeros(len(codes), log_probs.shape[0], dtype=log_probs.dtype,
                        device=log_probs.device)
    for j in range(codes.shape[1]):
        column = codes[:, j]
        total += by_category[j].index_select(0, torch.where(column >= 0, column, none))
    return total


def _category_tallies(responsibilities, codes, n_categories, log_probs=None, indicators=None):
    """Each categorical column's expected category counts per component,
    ``(n_components, categories)``: a row's responsibility at its category,
    or, where the category is missing (summed out), spread over the
    categories by the component's probabilities ``log_probs`` (None:
    evenly). ``indicators``: the codes' :func:`category_indicators`, or
    None."""
    if indicators is not None:
        observed = (indicators.matrix.T @ responsibilities).T.split(n_categories, 1)
    else:
        observed = [torch.zeros(count, responsibilities.shape[1], dtype=responsibilities.dtype,
                                device=responsibilities.device).index_add_(
            0, codes[:, j].clamp(min=0), (codes[:, j, None] >= 0) * responsibilities).T
                    for j, count in enumerate(n_categories)]
    missing = codes < 0
    if not missing.any():
        return list(observed)
    unseen = missing.to(responsibilities.dtype).T @ responsibilities  # (columns, components)
    tallies = []
    for j, count in enumerate(n_categories):
        shares = (torch.full_like(observed[j], 1 / count) if log_probs is None
                  else log_probs[:, j, :count].exp())
        tallies.append(observed[j] + unseen[j][:, None] * shares)
    return tallies


class CategoryIndicators(NamedTuple):
    """Rows' categories as indicators, ``matrix`` (n_rows, sum of
    ``n_categories``), the columns' blocks side by side, none set in a
    block of a missing entry (-1); ``shift_cells``: where the shifts (of
    each column's categories 1, 2, ...) lie among the matrix's columns."""

    matrix: torch.Tensor
    n_categories: list
    shift_cells: torch.Tensor


def _lookups_cost_less(n_categories):
    """Whether columns of these categories have more than
    :data:`PRODUCT_ADDS_PER_LOOKUP` of them on average: then a lookup of
    each row's category costs less than a product of its one-hot row."""
    return sum(n_categories) > PRODUCT_ADDS_PER_LOOKUP * len(n_categories)


def category_indicators(codes, n_categories, dtype):
    """The :class:`CategoryIndicators` of ``codes``, where they are narrow
    enough for products with them to cost less than lookups of each
    column's category (:data:`PRODUCT_ADDS_PER_LOOKUP` categories a
    column on average at most) and take at most :data:`INDICATOR_BYTES`;
    None otherwise."""
    total = sum(n_categories)
    if (not n_categories or _lookups_cost_less(n_categories)
            or len(codes) * total * torch.finfo(dtype).bits // 8 > INDICATOR_BYTES):
        return None
    offsets = np.cumsum([0, *n_categories[:-1]])
    cells = torch.where(codes >= 0, codes + torch.as_tensor(offsets, device=codes.device),
                        total)  # a missing entry: cut off below
    matrix = torch.zeros(len(codes), total + 1, dtype=dtype, device=codes.device)
    shift_cells = [offset + category for offset, count in zip(offsets, n_categories)
                   for category in range(1, count)]
    return CategoryIndicators(matrix.scatter_(1, cells, 1.0)[:, :total], list(n_categories),
                              torch.as_tensor(shift_cells, dtype=torch.long, device=codes.device))


def _shift_index(codes, n_categories):
    """``(n_rows, n_categorical)``: the position of each row's category of
    each column among the shifts (columns in order, each from its category
    1), or one past the last shift for a category 0, whose shift is 0."""
    index, start = [], 0
    none = sum(n_categories) - len(n_categories)
    for j, count in enumerate(n_categories):
        index.append(torch.where(codes[:, j] > 0, start + codes[:, j] - 1, none))
        start += count - 1
    if not index:
        return torch.zeros(len(codes), 0, dtype=torch.long, device=codes.device)
    return torch.stack(index, 1)


def category_shifts(codes, n_categories, shifts, components):
    """``(n_rows, n_continuous)``: how far each row's (complete) categories
    shift the mean of the continuous columns in the row's own component
    (``components``, one per row): a draw needs no other component's, and
    all of them cost ``n_components`` times the work."""
    start = torch.zeros(len(codes), shifts.shape[2], dtype=shifts.dtype, device=shifts.device)
    return _plus_shifts(start, _shift_index(codes, n_categories), shifts, components)


def _located_means(shift_index, means, shifts, indicators=None):
    """``(n_rows, n_components, n_continuous)``: each component's mean of the
    continuous columns given each row's categories, from the rows'
    :func:`_shift_index`, or from their :func:`category_indicators` (None:
    none made) by one product; ``means`` itself when there are no shifts."""
    if not shifts.shape[1]:
        return means
    if indicators is None:
        return _plus_shifts(means[None], shift_index, shifts)
    n_components, _, n_continuous = shifts.shape
    by_category = shifts.new_zeros(indicators.matrix.shape[1], n_components, n_continuous)
    by_category.index_copy_(0, indicators.shift_cells, shifts.transpose(0, 1))  # 0: no shift
    shifted = indicators.matrix @ by_category.view(len(by_category), -1)
    return means + shifted.view(len(shifted), n_components, n_continuous)


def _plus_shifts(total, shift_index, shifts, components=None):
    """``total`` plus the shifts of each row's categories (its
    :func:`_shift_index`) in every component (then ``(n_rows,
    n_components, n_continuous)``) or in ``components``, one per row."""
    padded = torch.nn.functional.pad(shifts, (0, 0, 0, 1))  # category 0's shift of 0 last
    if components is None:  # every component's shifts of a category side by side
        by_shift = padded.transpose(0, 1).contiguous()
        for column in shift_index.T:
            total = total + by_shift.index_select(0, column)
        return total
    for column in shift_index.T:
        total = total + padded[components, column]
    return total


def draw_categories(log_probs, components, u):
    """``(n_rows, n_categorical)`` categories drawn for rows of the given
    ``components`` from ``log_probs`` (n_components, n_categorical, most
    categories) with the uniform numbers ``u`` (n_rows, n_categorical), by
    the inverse distribution function: each component's function shifted
    by its index and laid end to end is one increasing sequence, which a
    row's ``component + u`` searches. A draw costs the log of the
    categories, not a pass over them, as a row's own multinomial would (a
    column of a thousand categories)."""
    n_components, n_columns, most = log_probs.shape
    cdf = torch.cumsum(log_probs.exp(), -1) + torch.arange(
        n_components, dtype=log_probs.dtype, device=log_probs.device)[:, None, None]
    u = u.to(log_probs.dtype)
    possible = torch.isfinite(log_probs)
    # Rounding may leave a function short of 1, and a draw past its last
    # category: that draw takes the last category of positive probability.
    last = (possible * torch.arange(most, device=log_probs.device)).argmax(-1)
    codes = torch.empty(len(components), n_columns, dtype=torch.long, device=log_probs.device)
    for j in range(n_columns):
        found = torch.searchsorted(cdf[:, j].reshape(-1), components + u[:, j], right=True)
        found = (found - components * most).clamp_(0, most - 1)
        codes[:, j] = torch.where(possible[components, j, found], found, last[components, j])
    return codes


#: Most rows that the rows with missing categories may expand into.
MAX_EXPANDED_ROWS = 10_000_000
#: Most rows that a row with missing categories and an observed continuous
#: entry expands into: one per combination of its missing categories up to
#: this many; beyond, this many combinations drawn, summed by importance
#: sampling (a fit's search may ask for fewer: :func:`fit_mixture`).
COMBINATIONS_PER_ROW = 256
#: Seed of the numbers that every row summed by importance sampling when
#: scored draws its combinations from, so that it scores alike in any batch.
COMMON_COMBINATIONS_SEED = 20261205


class CategoryProposal(NamedTuple):
    """Where a row summed by importance sampling draws its missing categories
    from: a component from the row's ``log_shares`` (n_rows, n_components),
    then each missing entry independently from that component's
    ``log_probs`` (n_components, n_categorical, most categories; -inf
    beyond a column's categories), by Latin hypercube numbers from
    ``generator`` or, None, the same numbers for every row; ``n_draws``
    combinations for each row of more than that many (the class methods'
    None: :data:`COMBINATIONS_PER_ROW`)."""

    log_shares: torch.Tensor
    log_probs: torch.Tensor
    generator: object
    n_draws: int

    @classmethod
    def of_frequencies(cls, codes, n_categories, generator, n_draws=None):
        """One component: the columns' observed frequencies, each category
        given :data:`CATEGORY_PSEUDO_COUNT` more (what a fit draws from
        before any parameter is known)."""
        most = max(n_categories, default=1)
        log_probs = torch.full((1, len(n_categories), most), -math.inf, dtype=torch.float64,
                               device=codes.device)
        for j, count in enumerate(n_categories):
            column = codes[:, j]
            tally = torch.bincount(column[column >= 0], minlength=count).to(torch.float64)
            tally = tally + CATEGORY_PSEUDO_COUNT
            log_probs[0, j, :count] = torch.log(tally / tally.sum())
        return cls(log_probs.new_zeros(len(codes), 1), log_probs, generator,
                   n_draws or COMBINATIONS_PER_ROW)

    @classmethod
    def of_mixture(cls, parameters, codes, generator=None, n_draws=None):
        """The mixture's components, each row's shares their posterior given
        its observed categories: close to the row's conditional of its
        missing categories where the continuous entries say little."""
        weights, log_probs = parameters[0], parameters[3]
        log_shares = torch.log_softmax(
            torch.log(weights) + _category_log_likelihoods(codes, log_probs), 1)
        return cls(log_shares, log_probs, generator, n_draws or COMBINATIONS_PER_ROW)

    def draw(self, rows, codes):
        """``(codes, log_weights)``: ``codes`` (``n_draws`` copies of each
        of the ``rows``, one after the other) with their
        missing entries drawn, each copy's ``log_weights`` ``-log q - log
        n``: with them the copies' sum is an unbiased estimate of the sum
        over every combination."""
        n_copies, n_columns = codes.shape
        generator = self.generator
        if generator is None:
            generator = torch.Generator().manual_seed(COMMON_COMBINATIONS_SEED)
        n_draws = self.n_draws
        n_sets = 1 if self.generator is None else n_copies // n_draws
        u = _latin_hypercube(n_sets, n_draws, 1 + n_columns, generator)
        u = u.to(codes.device).expand(n_copies // n_draws, -1, -1)
        u = u.reshape(n_copies, 1 + n_columns)
        log_shares = self.log_shares[rows]
        cdf = torch.cumsum(log_shares.exp(), 1)
        components = torch.searchsorted(cdf, u[:, :1].contiguous(), right=True).squeeze(1)
        components = components.clamp_(max=cdf.shape[1] - 1)
        if self.generator is None:
            # The same numbers for every row: a component's draws are the same
            # for every row, drawn once.
            n_components = self.log_probs.shape[0]
            by_component = draw_categories(
                self.log_probs, torch.arange(n_components, device=codes.device).repeat_interleave(
                    n_draws), u[:n_draws, 1:].repeat(n_components, 1))
            drawn = by_component[components * n_draws
                                 + torch.arange(n_copies, device=codes.device) % n_draws]
        else:
            drawn = draw_categories(self.log_probs, components, u[:, 1:])
        missing = codes < 0
        codes = torch.where(missing, drawn, codes)
        log_q = torch.logsumexp(log_shares + _category_log_likelihoods(
            torch.where(missing, codes, -1), self.log_probs), 1)
        return codes, -log_q - math.log(n_draws)


def _latin_hypercube(n_sets, n_draws, n_columns, generator):
    """``(n_sets, n_draws, n_columns)`` uniform numbers, each column of a set
    stratified: one number in each of ``n_draws`` equal intervals, in random
    order. Each number is uniform, so an estimate stays unbiased; the spread
    of a sum over the draws shrinks."""
    options = dict(generator=generator, dtype=torch.float64, device=generator.device)
    shape = (n_sets, n_draws, n_columns)
    strata = torch.argsort(torch.rand(shape, **options), dim=1)
    return (strata + torch.rand(shape, **options)) / n_draws


def _combinations(missing, n_categories):
    """Each row's number of combinations of the categories of its
    ``missing`` (a mask) categorical entries, as float64."""
    log_counts = torch.log(torch.as_tensor(n_categories, dtype=torch.float64,
                                           device=missing.device))
    return torch.where(missing, log_counts, 0.0).sum(1).exp().round()


def expanded_sizes(X, codes, n_categories):
    """How many rows each of the rows ``(X, codes)`` becomes in a fit's
    :func:`expand`: one per combination of its missing categories, up to
    :data:`COMBINATIONS_PER_ROW`, and one where no continuous entry is
    observed."""
    summed = torch.isnan(X).all(1)
    combinations = _combinations((codes < 0) & ~summed[:, None], n_categories)
    return combinations.clamp_(max=COMBINATIONS_PER_ROW)


def expand_categories(codes, n_categories, summed=None, proposal=None):
    """``(rows, codes, log_weights)``: each row once per combination of the
    categories of its missing (-1) categorical entries, ``rows``
    (non-decreasing) the row each comes from, ``codes`` with the missing
    entries filled in, ``log_weights`` 0. Rows without missing categories,
    and the rows ``summed`` (a mask; their missing entries stay -1), come
    once, as they are. With a ``proposal`` (a :class:`CategoryProposal`), a
    row of more combinations than the proposal's ``n_draws`` comes that many
    times, its missing entries drawn from the
    proposal, its ``log_weights`` those of importance sampling (the copies
    of a combination drawn again merged: :func:`_merged`). Refused beyond
    :data:`MAX_EXPANDED_ROWS`."""
    if summed is None:
        summed = torch.zeros(len(codes), dtype=torch.bool, device=codes.device)
    missing = (codes < 0) & ~summed[:, None]
    rows = torch.arange(len(codes), device=codes.device)
    log_weights = torch.zeros(len(codes), dtype=torch.float64, device=codes.device)
    if not missing.any():
        return rows, codes, log_weights
    combinations = _combinations(missing, n_categories)
    sampled, n_draws = torch.zeros_like(summed), COMBINATIONS_PER_ROW
    if proposal is not None:
        n_draws = proposal.n_draws
        sampled = combinations > n_draws
    expanded = float(torch.where(sampled, n_draws, combinations).sum())
    if expanded > MAX_EXPANDED_ROWS:
        raise ValueError(
            f"Rows with missing categorical entries and an observed continuous one are summed "
            f"over the combinations of the missing categories (up to {n_draws:,} each, drawn "
            f"beyond); these rows have "
            f"{expanded:,.0f} in all, more than {MAX_EXPANDED_ROWS:,}. Fill some categorical "
            "entries first (e.g. sklearn.impute.SimpleImputer(strategy='most_frequent')) or "
            "drop the rows missing most of them.")
    for j, count in enumerate(n_categories):
        free = (codes[:, j] < 0) & ~summed[rows] & ~sampled[rows]
        if not free.any():
            continue
        repeats = torch.where(free, count, 1)
        rows, codes = rows.repeat_interleave(repeats), codes.repeat_interleave(repeats, 0)
        starts = (torch.cumsum(repeats, 0) - repeats).repeat_interleave(repeats)
        position = torch.arange(len(rows), device=codes.device) - starts
        codes[:, j] = torch.where(free.repeat_interleave(repeats), position, codes[:, j])
    log_weights = log_weights[rows]
    if sampled.any():
        repeats = torch.where(sampled[rows], n_draws, 1)
        rows, codes = rows.repeat_interleave(repeats), codes.repeat_interleave(repeats, 0)
        log_weights = log_weights.repeat_interleave(repeats)
        drawn = sampled[rows]
        codes[drawn], log_weights[drawn] = proposal.draw(rows[drawn], codes[drawn])
        rows, codes, log_weights = _merged(rows, codes, log_weights, n_categories)
    return rows, codes, log_weights


def _merged(rows, codes, log_weights, n_categories):
    """The expanded rows with each combination of a row once, the weights of
    its copies summed: the same sum, in fewer rows (a proposal that knows a
    row well draws the same few combinations again and again). Each copy is
    keyed by one integer, its row and then its categories (+1, a missing one
    0) as digits, so that one sort of integers finds the repeats (faster
    than sorting rows of codes); where the digits would pass 62 bits,
    the key so far is first replaced by its rank. The rows stay in order."""
    key, room = rows, int(rows[-1]) + 1  # key < room
    for column, count in zip(codes.T, n_categories):
        if room * (count + 1) >= 2**62:
            key, room = torch.unique(key, return_inverse=True)[1], len(key)
        key, room = key * (count + 1) + column + 1, room * (count + 1)
    inverse = torch.unique(key, return_inverse=True)[1]
    n_merged = int(inverse.max()) + 1
    first = torch.zeros(n_merged, dtype=torch.long, device=rows.device).scatter_(
        0, inverse, torch.arange(len(rows), device=rows.device))
    return rows[first], codes[first], _row_logsumexp(log_weights[:, None], inverse, n_merged)


@dataclass
class Expansion:
    """Rows expanded by their missing categories (:func:`expand_categories`),
    with what the E- and M-steps read of them that no parameter changes, so
    that an EM fit computes it once: ``rows`` (the row each comes from),
    ``X`` (their continuous entries), ``codes`` (complete but in the
    ``summed`` rows: see :func:`expand`), ``columns``
    (:func:`missing_columns` of ``X``), ``shift_index``
    (:func:`_shift_index`), ``log_weights`` (0, or those of importance
    sampling where a row's combinations are drawn) and, made when first
    asked, ``location_design`` (:func:`location_design`; None without
    categorical columns) and ``category_indicators``
    (:func:`category_indicators`)."""

    rows: torch.Tensor
    X: torch.Tensor
    codes: torch.Tensor
    summed: torch.Tensor
    log_weights: torch.Tensor
    columns: torch.Tensor
    shift_index: torch.Tensor
    n_categories: list

    @functools.cached_property
    def location_design(self):
        return location_design(self.shift_index, self.n_categories, self.X.dtype)

    @functools.cached_property
    def category_indicators(self):
        return category_indicators(self.codes, self.n_categories, self.X.dtype)

    def gaussian_weights(self, responsibilities):
        """The ``responsibilities`` with which the rows count in the fit of
        the components' Gaussians: 0 for the ``summed`` rows, whose
        likelihood their Gaussians do not touch."""
        return responsibilities * self._gaussian_rows

    @functools.cached_property
    def _gaussian_rows(self):
        return (~self.summed).to(self.X.dtype)[:, None]


def expand(X, codes, n_categories, proposal=None):
    """The :class:`Expansion` of the rows ``(X, codes)``, rows of many
    combinations drawn from ``proposal`` (see :func:`expand_categories`).
    A row with no observed continuous entry is not expanded (``summed``):
    its continuous entries integrate to 1 whatever their mean, so within a
    component its categories are independent, and a missing one's factor
    sums to 1 (it stays -1). Its expected category counts in a component
    are the component's probabilities; its continuous entries are left out
    of EM's complete data (:meth:`Expansion.gaussian_weights`): a smaller
    augmentation, the same likelihood to climb, so the same fixed points."""
    summed = torch.isnan(X).all(1)
    rows, codes, log_weights = expand_categories(codes, n_categories, summed, proposal)
    if len(rows) != len(X):
        X, summed = X[rows], summed[rows]
    return Expansion(rows, X, codes, summed, log_weights.to(X.dtype), missing_columns(X),
                     _shift_index(codes, n_categories), list(n_categories))


def _expanded_terms(expansion, parameters, *, with_missing=False):
    """The E-step's pieces, on the rows expanded by their missing categories
    (an :class:`Expansion`): ``(log_joint, conditional means, missing)``,
    ``log_joint`` (n_expanded, n_components) the log of weight
    times joint density of the observed entries and the expanded row's
    categories, the conditional means and ``missing`` (with
    ``with_missing``) as :func:`gaussian_observed` gives them."""
    weights, means, covariances, log_probs, shifts = parameters
    X = expansion.X
    log_joint = (torch.log(weights) + expansion.log_weights[:, None] + _category_log_likelihoods(
        expansion.codes, log_probs, expansion.category_indicators))
    completed = X[:, None, :].expand(-1, len(weights), -1)
    missing = None
    if X.shape[1]:
        located = _located_means(expansion.shift_index, means, shifts,
                                 expansion.category_indicators)
        log_density, completed, *missing = gaussian_observed(
            X, located, covariances, with_missing=with_missing, columns=expansion.columns)
        log_joint = log_joint + log_density
    return log_joint, completed, (missing[0] if missing else None)


def _row_logsumexp(values, rows, n_rows):
    """``(n_rows,)``: the log of the sum of ``exp(values)`` over each row's
    expanded rows (``rows``) and components."""
    per_row = torch.logsumexp(values, 1)
    if len(per_row) == n_rows:
        return per_row
    top = torch.full((n_rows,), -math.inf, dtype=values.dtype, device=values.device)
    top.scatter_reduce_(0, rows, per_row, reduce="amax")
    total = torch.zeros(n_rows, dtype=values.dtype, device=values.device)
    total.index_add_(0, rows, torch.exp(per_row - top[rows]))
    return top + torch.log(total)


def log_density(X, codes, parameters, n_draws=None):
    """``(n_rows,)``: each row's log-density of its observed entries (missing
    continuous entries integrated out, missing categories summed over, by
    importance sampling where a row has more than ``n_draws`` of them, None:
    :data:`COMBINATIONS_PER_ROW`)."""
    expansion = expand(X, codes, category_counts(parameters[3]),
                       CategoryProposal.of_mixture(parameters, codes, n_draws=n_draws))
    log_joint, _, _ = _expanded_terms(expansion, parameters)
    return _row_logsumexp(log_joint, expansion.rows, len(X))


class ComponentConditionals:
    """Each row's conditional distribution of its missing entries under a
    mixture: the posterior over (combination of its missing categories,
    component) given the observed entries (over the component alone for a
    row with no observed continuous entry: see :func:`expand`; over drawn
    combinations, weighed, for a row of more than
    :data:`COMBINATIONS_PER_ROW`: sampling-importance-resampling), and for
    each such pair the conditional Gaussian of the missing continuous
    entries.

    ``log_marginal`` is each row's log-density of its observed entries (an
    estimate where its combinations are drawn). The combinations are drawn
    from ``generator``, or, None, from the numbers common to every row
    (:class:`CategoryProposal`).
    """

    def __init__(self, parameters, X, codes, generator=None):
        self.X, self.log_probs, self.shifts = X, parameters[3], parameters[4]
        self.n_categories = category_counts(self.log_probs)
        expansion = expand(X, codes, self.n_categories,
                           CategoryProposal.of_mixture(parameters, codes, generator))
        self.rows, self.codes = expansion.rows, expansion.codes
        log_joint, self.means, missing = _expanded_terms(expansion, parameters, with_missing=True)
        self.columns, self.factors = missing if missing is not None else (None, None)
        self.log_marginal = _row_logsumexp(log_joint, self.rows, len(X))
        self.posterior = torch.exp(log_joint - self.log_marginal[self.rows, None])

    def sample(self, draws):
        """``(n_rows, n_draws, ...)`` completions: ``X`` and ``codes`` with
        their missing entries drawn, observed entries as given, from the
        numbers of ``draws`` (:class:`FreshDraws` or :class:`CommonDraws`):
        a (categories, component) pair from the row's posterior, then the
        missing continuous entries from that pair's conditional Gaussian
        (or, where the categories are summed out, a component, then each
        missing category from the component's probabilities, which then
        shift the drawn continuous entries, all of them missing)."""
        n_rows, n_components = len(self.X), self.posterior.shape[1]
        # Each row's (expanded row, component) pairs side by side, padded with 0.
        group = torch.bincount(self.rows, minlength=n_rows)
        starts = torch.cumsum(group, 0) - group
        slots = torch.arange(len(self.rows), device=self.rows.device) - starts[self.rows]
        table = torch.zeros(n_rows, int(group.max()), n_components, dtype=self.posterior.dtype,
                            device=self.posterior.device)
        table[self.rows, slots] = self.posterior
        picks = draws.choose(table.view(n_rows, -1))  # (n_rows, n_draws)
        expanded = starts[:, None] + torch.div(picks, n_components, rounding_mode="floor")
        components = picks % n_components
        X = self.X[:, None, :].expand(-1, picks.shape[1], -1)
        if X.shape[2]:
            columns = self.columns[expanded]  # (n_rows, n_draws, width)
            X = filled_rows(X, columns, self.means[expanded, components],
                            self.factors[expanded, components], draws.normals_at(columns))
        codes = self.codes[expanded]
        missing = codes < 0
        if missing.any():
            u = draws.uniforms_of_categories(codes.shape, X.shape[2])
            drawn = draw_categories(self.log_probs, components.reshape(-1),
                                    u.reshape(-1, codes.shape[2])).view(codes.shape)
            drawn = torch.where(missing, drawn, -1)  # -1: no shift
            if X.shape[2]:
                X = X + category_shifts(drawn.view(-1, codes.shape[2]), self.n_categories,
                                        self.shifts, components.reshape(-1)).view(X.shape)
            codes = torch.where(missing, drawn, codes)
        return X, codes


class FreshDraws:
    """The random numbers of ``n_draws`` draws of each row, new for every
    row and every call: for a random draw (a row imputed in training, the
    start of ``sample_conditional``), which is to vary with them."""

    def __init__(self, n_draws, generator):
        self.n_draws, self.generator = n_draws, generator

    @property
    def combination_generator(self):
        """Where a row summed by importance sampling draws its combinations
        of missing categories from (:class:`ComponentConditionals`): this
        generator, new ones at every call. Training imputes its rows so;
        with the common combinations the energy would learn those few as
        data and the scores, which sum over the same ones, would follow."""
        return self.generator

    def choose(self, probabilities):
        """``(n_rows, n_draws)``: indices drawn from each row's
        ``probabilities`` (n_rows, n_choices)."""
        return torch.multinomial(probabilities, self.n_draws, replacement=True,
                                 generator=self.generator)

    def normals_at(self, columns):
        """Standard normal numbers, one for each entry of ``columns``
        (n_rows, n_draws, width), each draw's missing columns."""
        return torch.randn(columns.shape, generator=self.generator, dtype=torch.float64,
                           device=columns.device)

    def uniforms_of_categories(self, shape, offset):
        """Uniform numbers of ``shape`` (n_rows, n_draws, n_categorical),
        fresh (``offset``, which :class:`CommonDraws` needs, is unused)."""
        return torch.rand(shape, generator=self.generator, dtype=torch.float64,
                          device=self.generator.device)


class CommonDraws:
    """The random numbers of ``n_draws`` draws, common to every row, for the
    estimates that average draws (a row's log-density of its observed
    entries, its conditional mean): draw ``d`` of any row takes its choice
    from ``uniforms[d]`` (by the inverse distribution function of the row's
    probabilities) and the standard normal number of its missing continuous
    column ``c`` from ``normals[d, c]``. A row's estimate then depends on the
    row and the numbers alone, not on the rows beside it in its batch (as
    numbers drawn row after row from one generator would), while its own
    draws stay independent of each other.

    ``uniforms`` (n_draws,) and ``normals`` (n_draws, n_columns) serve every
    row alike; with a leading row axis, each row has its own
    (:meth:`by_copy`)."""

    def __init__(self, uniforms, normals):
        self.uniforms, self.normals = uniforms, normals

    @classmethod
    def drawn(cls, n_draws, n_columns, generator, device=None):
        """Numbers of ``n_draws`` draws of rows of up to ``n_columns``
        continuous columns, drawn from ``generator`` and moved to ``device``
        (None: the generator's); the uniforms in (0, 1], so that a choice
        never falls before a row's first possible index."""
        options = dict(generator=generator, dtype=torch.float64, device=generator.device)
        return cls(1 - torch.rand(n_draws, **options).to(device),
                   torch.randn(n_draws, n_columns, **options).to(device))

    @property
    def n_draws(self):
        return self.uniforms.shape[-1]

    @property
    def combination_generator(self):
        """None: a row's combinations of missing categories are the common
        ones (:class:`CategoryProposal`), as its other numbers are."""
        return None

    def by_copy(self, n_rows):
        """The numbers of ``n_draws`` copies of each of ``n_rows`` rows (a
        row's copies consecutive), one draw per copy: copy ``d`` of every row
        takes draw ``d``'s numbers."""
        return CommonDraws(self.uniforms.repeat(n_rows)[:, None],
                           self.normals.repeat(n_rows, 1)[:, None])

    def rows(self, index):
        """The numbers of the rows ``index`` of the batch."""
        if self.uniforms.dim() == 1:
            return self
        return CommonDraws(self.uniforms[index], self.normals[index])

    def choose(self, probabilities):
        """``(n_rows, n_draws)``: for each draw the first index at which the
        row's cumulative ``probabilities`` (n_rows, n_choices) reach its
        uniform times their total, never an index of probability 0."""
        cdf = torch.cumsum(probabilities, 1)
        targets = self.uniforms.expand(len(cdf), self.n_draws) * cdf[:, -1:]
        return torch.searchsorted(cdf, targets.contiguous())

    def normals_at(self, columns):
        """The numbers of the entries of ``columns`` (n_rows, n_draws,
        width), a column index past the last (padding) taking any."""
        padded = torch.nn.functional.pad(self.normals, (0, 1))
        return padded.expand(*columns.shape[:2], -1).gather(-1, columns)

    def uniforms_of_categories(self, shape, offset):
        """Uniform numbers of ``shape`` (n_rows, n_draws, n_categorical),
        draw ``d``'s of categorical column ``j`` the normal distribution
        function of ``normals[d, offset + j]``: past the ``offset``
        continuous columns, so that no normal number serves two entries."""
        return special.ndtr(self.normals[..., offset:offset + shape[2]]).expand(shape)


def filled_rows(X, columns, means, factors, U):
    """Rows ``X`` (``(..., n_columns)``) with their missing entries at
    ``mean + F^-T u``: ``columns`` and ``factors`` as :func:`gaussian_observed`
    gives them (``F F^T`` the missing block's conditional precision),
    ``means`` the conditional means of every entry, ``U`` (``(...,
    width)``) the whitened coordinates; ``u ~ N(0, I)`` draws the block from
    its conditional Gaussian. A padding coordinate moves nothing."""
    spread = torch.linalg.solve_triangular(factors.transpose(-1, -2), U[..., None],
                                           upper=True).squeeze(-1)
    located = torch.nn.functional.pad(means, (0, 1)).gather(-1, columns) + spread
    return torch.nn.functional.pad(X, (0, 1)).scatter(-1, columns, located)[..., :-1]


def fit_mixture(X, codes, n_categories, n_components, ridge, seed, *,
                max_iter=100, tol=1e-3, start=None, draws=2, n_draws=None):
    """EM for a mixture of location models on rows with missing entries:
    ``(weights, means, covariances, log_probs, shifts)``.

    The E-step marginalizes each row's missing entries; the M-step uses the
    expected sufficient statistics (conditional means, and conditional
    covariances added to the scatter): the means and shifts of a component
    are a weighted least-squares fit of the rows on their categories. Starts
    from ``start`` (parameters, a fit with another ridge, say) or from
    k-means on the rows with missing continuous entries at the column mean
    and categories one-hot; stops when the mean log-likelihood gains less
    than ``tol``. A row of more combinations of missing categories than
    ``n_draws`` (None: :data:`COMBINATIONS_PER_ROW`) is summed over that
    many drawn from the start's components; EM climbs that fixed objective,
    then, the components known better, on combinations drawn from them,
    ``draws`` times in all: on drawn sums EM fits their noise too, the less
    so the closer the proposal is to the rows' conditionals.
    """
    generator, expansion = torch.Generator().manual_seed(int(seed)), None
    if start is None:
        expansion = expand(X, codes, n_categories, CategoryProposal.of_frequencies(
            codes, n_categories, generator, n_draws))
        start = _maximize(_kmeans_start(X, codes, n_categories, n_components, seed, expansion),
                          expansion, n_categories, ridge)
    parameters = start
    for draw in range(draws):
        if expansion is None or expansion.log_weights.any():
            expansion = expand(X, codes, n_categories,
                               CategoryProposal.of_mixture(parameters, codes, generator, n_draws))
        elif draw:  # nothing drawn: the first climb was the fit
            break
        parameters = _climb(X, parameters, expansion, n_categories, ridge, max_iter, tol)
    return parameters


def _climb(X, parameters, expansion, n_categories, ridge, max_iter, tol):
    """EM steps from ``parameters`` on the rows ``expansion``, until the
    mean log-likelihood gains less than ``tol`` or ``max_iter`` steps."""
    previous = -math.inf
    for _ in range(max_iter):
        expected, score = _expect(X, parameters, expansion)
        parameters = _maximize(expected, expansion, n_categories, ridge)
        if score - previous < tol:
            break
        previous = score
    return parameters


class Expected(NamedTuple):
    """What the M-step takes of the rows: ``responsibilities`` (n_expanded,
    n_components); ``completed``, their conditional means per component;
    ``spread``, each component's responsibility-weighted sum of the missing
    entries' conditional covariances; ``tallies``, each categorical column's
    expected category counts per component (:func:`_category_tallies`)."""

    responsibilities: torch.Tensor
    completed: torch.Tensor
    spread: torch.Tensor
    tallies: list


def _kmeans_start(X, codes, n_categories, n_components, seed, expansion):
    """Hard responsibilities from k-means (shared evenly by a row's
    expansions), missing continuous entries at 0 (the mean of standardized
    rows), missing categories spread evenly and no spread: the
    :class:`Expected` that the first M-step takes. k-means reads the
    categories one-hot, sparse where lookups cost less: a column of
    thousands of categories then costs it a row's one entry, not
    thousands."""
    n_rows, n_continuous = X.shape
    labels = np.zeros(n_rows, dtype=int)
    if n_components > 1:
        features = torch.nan_to_num(X).cpu().numpy()
        if n_categories:
            features = sp.hstack([features] + [
                _sparse_one_hot(c, count)
                for c, count in zip(codes.T.cpu().numpy(), n_categories)], format="csr")
            if not _lookups_cost_less(n_categories):
                features = features.toarray()
        labels = kmeans_labels(features, n_components, seed)
    rows = expansion.rows
    shares = 1.0 / torch.bincount(rows, minlength=n_rows).to(X.dtype)
    responsibilities = torch.zeros(len(rows), n_components, dtype=X.dtype, device=X.device)
    labels = torch.as_tensor(labels, device=X.device)[rows]
    responsibilities[torch.arange(len(rows), device=X.device), labels] = shares[rows]
    completed = torch.nan_to_num(X)[rows][:, None, :].expand(-1, n_components, -1)
    spread = torch.zeros(n_components, n_continuous, n_continuous, dtype=X.dtype, device=X.device)
    return Expected(responsibilities, completed, spread,
                    _category_tallies(responsibilities, expansion.codes, n_categories,
                                      indicators=expansion.category_indicators))


def _sparse_one_hot(codes, n_categories):
    """``(n_rows, n_categories)`` scipy CSR: each row's category as a 1, or,
    where it is missing (-1), ``1 / n_categories`` for every category."""
    missing = codes < 0
    counts = np.where(missing, n_categories, 1)
    columns = np.where(missing, 0, codes)
    # A missing row's entries count up from 0 through its categories.
    columns = np.repeat(columns, counts) + (np.arange(counts.sum())
                                            - np.repeat(np.cumsum(counts) - counts, counts)
                                            ) * np.repeat(missing, counts)
    values = np.repeat(np.where(missing, 1 / n_categories, 1.0), counts)
    return sp.csr_matrix((values, columns, np.concatenate([[0], np.cumsum(counts)])),
                         shape=(len(codes), n_categories))


def _expect(X, parameters, expansion):
    """The E-step on the expanded rows: ``(Expected, mean log-likelihood)``."""
    n_continuous, n_components = X.shape[1], len(parameters[0])
    log_joint, completed, missing = _expanded_terms(expansion, parameters, with_missing=True)
    log_marginal = _row_logsumexp(log_joint, expansion.rows, len(X))
    responsibilities = torch.exp(log_joint - log_marginal[expansion.rows, None])
    spread = torch.zeros(n_components, n_continuous, n_continuous, dtype=X.dtype,
                         device=X.device)
    if expansion.columns.shape[1]:  # some entry missing
        spread = missing_covariance_sums(*missing, expansion.gaussian_weights(responsibilities),
                                         n_continuous)
    tallies = _category_tallies(responsibilities, expansion.codes, expansion.n_categories,
                                parameters[3], expansion.category_indicators)
    return (Expected(responsibilities, completed, spread, tallies),
            log_marginal.mean().item())


class LocationDesign(NamedTuple):
    """What :func:`_location_fit` reads of the rows' categories, which no
    parameter changes, so that an EM fit makes it once.

    The largest column's shifts are the diagonal part, the intercept and
    the shifts of the ``others`` (the columns within :data:`DENSE_SHIFTS`)
    the dense part; each part has one bin more,
    for the categories 0 (dropped). ``dense_bins`` (n_rows, 1 + others):
    each row's dense bins; ``cross_cells`` (the same size): their cells in
    the flattened (dense, diagonal) matrix; ``diagonal_bins`` (n_rows,);
    ``indicators``: the bins as indicators ``[D, E]`` (n_rows, n_dense +
    n_diagonal; the dropped bins left out) where :func:`_normal_sums` makes
    its sums by products of them, or None."""

    dense_bins: torch.Tensor
    cross_cells: torch.Tensor
    diagonal_bins: torch.Tensor
    n_dense: int
    n_diagonal: int
    largest: int
    others: list
    starts: np.ndarray
    indicators: object


def location_design(shift_index, n_categories, dtype=torch.float64):
    """The :class:`LocationDesign` of rows with this :func:`_shift_index`
    (its indicators in ``dtype``); None without categorical columns."""
    if not n_categories:
        return None
    largest = int(np.argmax(n_categories))
    starts = np.concatenate([[0], np.cumsum(np.asarray(n_categories) - 1)])
    none = int(starts[-1])  # shift_index's entry for a category 0
    # The dense part: the intercept (bin 0), then the shifts of the other
    # columns within DENSE_SHIFTS, then one bin for their categories 0
    # (dropped).
    others, n_dense = [], 1
    for j in sorted(range(len(n_categories)), key=lambda j: n_categories[j]):
        if j != largest and n_dense - 1 + n_categories[j] - 1 <= DENSE_SHIFTS:
            others.append(j)
            n_dense += n_categories[j] - 1
    others.sort()
    bins = [torch.zeros(len(shift_index), dtype=torch.long, device=shift_index.device)]
    offset = 1
    for j in others:
        index = shift_index[:, j]
        bins.append(torch.where(index == none, n_dense, index - int(starts[j]) + offset))
        offset += n_categories[j] - 1
    bins = torch.stack(bins, 1)  # (n_rows, 1 + others)
    # The largest column's shifts, then one bin for its category 0 (dropped).
    n_diagonal = n_categories[largest] - 1
    index = shift_index[:, largest]
    diagonal_bins = torch.where(index == none, n_diagonal, index - int(starts[largest]))
    cross_cells = (bins * (n_diagonal + 1) + diagonal_bins[:, None]).T.reshape(-1)
    # Products of [D, E] where it is narrow (its width squared at most
    # PRODUCT_ADDS_PER_LOOKUP times the pairs of its columns' blocks, the
    # intercept's among them) and small enough to keep.
    width, n_rows, n_blocks = n_dense + n_diagonal, len(shift_index), len(others) + 2
    indicators = None
    if (width**2 <= PRODUCT_ADDS_PER_LOOKUP * n_blocks * (n_blocks + 1) // 2
            and n_rows * width * torch.finfo(dtype).bits // 8 <= INDICATOR_BYTES):
        # The dropped bins go to a last column, cut off.
        indicators = torch.zeros(n_rows, width + 1, dtype=dtype, device=shift_index.device)
        indicators.scatter_(1, torch.where(bins == n_dense, width, bins), 1.0)
        indicators.scatter_(1, torch.where(diagonal_bins == n_diagonal, width,
                                           n_dense + diagonal_bins)[:, None], 1.0)
        indicators = indicators[:, :-1]
    return LocationDesign(bins, cross_cells, diagonal_bins, n_dense, n_diagonal, largest, others,
                          starts, indicators)


def _location_fit(responsibilities, completed, design, n_categories, tiny):
    """``(means, shifts)`` of each component: the weighted least squares of
    the rows on ``[1, category indicators]`` (the indicators of each
    column's categories 1, 2, ...), the shifts held towards 0 by
    :data:`SHIFT_PSEUDO_ROWS` pseudo-rows; ``design``: the rows'
    :class:`LocationDesign` (None without categorical columns).

    Within one column a row has one category, so that column's block of the
    normal equations ``D^T diag(r_k) D`` is diagonal: the largest column's
    shifts are eliminated through it, and only the intercept and the other
    columns' shifts are solved as a dense system (a column of a thousand
    categories then costs about what one of two does); the columns that
    would make it wider than :data:`DENSE_SHIFTS` keep shifts of 0. The
    sums: :func:`_normal_sums`."""
    n_components = responsibilities.shape[1]
    dtype, device = completed.dtype, completed.device
    weighted = responsibilities[:, :, None] * completed
    if not n_categories:
        means = weighted.sum(0) / (responsibilities.sum(0) + tiny)[:, None]
        return means, means.new_zeros(n_components, 0, means.shape[1])
    n_dense, starts = design.n_dense, design.starts
    dense, cross, dense_moments, diagonal_moments = _normal_sums(design, responsibilities,
                                                                 weighted)
    # cross's intercept row counts each category's rows: the diagonal block.
    inverse = 1 / (cross[:, 0] + SHIFT_PSEUDO_ROWS)  # (n_components, n_diagonal)
    prior = torch.full((n_dense,), SHIFT_PSEUDO_ROWS, dtype=dtype, device=device)
    prior[0] = tiny
    schur = dense + torch.diag(prior) - (cross * inverse[:, None]) @ cross.transpose(1, 2)
    solved = torch.linalg.solve(schur, dense_moments
                                - cross @ (inverse[:, :, None] * diagonal_moments))
    diagonal = inverse[:, :, None] * (diagonal_moments - cross.transpose(1, 2) @ solved)
    shifts = torch.zeros(n_components, int(starts[-1]), completed.shape[2], dtype=dtype,
                         device=device)  # 0 for the columns the design leaves out
    largest = design.largest
    shifts[:, int(starts[largest]):int(starts[largest + 1])] = diagonal
    offset = 1
    for j in design.others:
        count = n_categories[j] - 1
        shifts[:, int(starts[j]):int(starts[j]) + count] = solved[:, offset:offset + count]
        offset += count
    return solved[:, 0], shifts


def _normal_sums(design, responsibilities, weighted):
    """``(dense, cross, dense_moments, diagonal_moments)``, the sums of
    :func:`_location_fit`'s normal equations for each component ``k``:
    ``D^T R_k D``, ``D^T R_k E``, ``D^T R_k Y_k`` and ``E^T R_k Y_k``, where
    ``D`` indicates each row's dense bins and ``E`` its diagonal bin
    (:class:`LocationDesign`; the bins of the categories 0 dropped),
    ``R_k = diag(r_k)`` and ``weighted`` is ``R_k Y_k``, (rows, components,
    continuous columns).

    Made by products of ``[D, E]`` where the design keeps it (narrow: see
    :func:`location_design`), by sums into bins otherwise: a sum into a bin
    costs as much as tens of a product's multiply-adds, but a product costs
    the width squared per row where the sums cost the pairs of columns."""
    bins, diagonal_bins = design.dense_bins, design.diagonal_bins
    n_dense, n_diagonal = design.n_dense, design.n_diagonal
    (n_rows, n_columns), n_components = bins.shape, responsibilities.shape[1]
    indicators = design.indicators
    if indicators is not None:
        width = indicators.shape[1]
        chunk = max(1, _CHUNK_ELEMENTS // (n_components * width))
        gram = sum((part.T * part_weights.T[:, None, :]) @ part for part, part_weights in zip(
            torch.split(indicators, chunk), torch.split(responsibilities, chunk)))
        moments = (indicators.T @ weighted.reshape(n_rows, -1)).view(
            width, *weighted.shape[1:]).transpose(0, 1)
        return (gram[:, :n_dense, :n_dense], gram[:, :n_dense, n_dense:],
                moments[:, :n_dense], moments[:, n_dense:])
    per_bin = responsibilities.repeat(n_columns, 1)  # the rows once per dense bin
    dense = responsibilities.new_zeros((n_dense + 1) ** 2, n_components)
    dense_moments = weighted.new_zeros(n_dense + 1, *weighted.shape[1:])
    for i, column in enumerate(bins.T):  # a column's bins against its own and the later ones'
        later = bins.T[i:]
        dense.index_add_(0, (column[None, :] * (n_dense + 1) + later).reshape(-1),
                         per_bin[:len(later) * n_rows])
        dense_moments.index_add_(0, column, weighted)
    # The later columns' bins come after a column's (the dropped bins, last,
    # are cut): the sums above fill the upper triangle and the diagonal.
    dense = dense.view(n_dense + 1, n_dense + 1, n_components)[:-1, :-1]
    dense = (dense + dense.transpose(0, 1) - torch.diag_embed(
        torch.diagonal(dense), dim1=0, dim2=1)).permute(2, 0, 1)
    cross = responsibilities.new_zeros((n_dense + 1) * (n_diagonal + 1), n_components)
    cross = cross.index_add_(0, design.cross_cells, per_bin)
    cross = cross.view(n_dense + 1, n_diagonal + 1, n_components)[:-1, :-1].permute(2, 0, 1)
    diagonal_moments = weighted.new_zeros(n_diagonal + 1, *weighted.shape[1:])
    diagonal_moments = diagonal_moments.index_add_(0, diagonal_bins, weighted)
    return (dense, cross, dense_moments[:-1].transpose(0, 1),
            diagonal_moments[:-1].transpose(0, 1))


def _maximize(expected, expansion, n_categories, ridge):
    """The M-step on the expanded rows (``expansion``): the parameters
    that maximize the expected log-likelihood (:class:`Expected`), the
    shifts held towards 0 by :data:`SHIFT_PSEUDO_ROWS`."""
    responsibilities, completed, spread, tallies = expected
    dtype, device = completed.dtype, completed.device
    tiny = 10 * torch.finfo(dtype).eps
    counts = responsibilities.sum(0) + tiny
    weights = counts / counts.sum()
    responsibilities = expansion.gaussian_weights(responsibilities)
    gaussian_counts = responsibilities.sum(0) + tiny
    if completed.shape[2]:
        means, shifts = _location_fit(responsibilities, completed, expansion.location_design,
                                      n_categories, tiny)
    else:  # no continuous columns: nothing for the categories to shift
        means = completed.new_zeros(len(counts), 0)
        shifts = completed.new_zeros(len(counts), sum(n - 1 for n in n_categories), 0)
    centred = completed - _located_means(expansion.shift_index, means, shifts,
                                         expansion.category_indicators)
    weighted = (responsibilities[:, :, None] * centred).permute(1, 2, 0)  # (k, d, n)
    covariances = (weighted @ centred.transpose(0, 1) + spread) / gaussian_counts[:, None, None]
    covariances.diagonal(dim1=-2, dim2=-1).add_(ridge)
    most = max(n_categories, default=1)
    log_probs = torch.full((len(counts), len(n_categories), most), -math.inf, dtype=dtype,
                           device=device)
    for j, count in enumerate(n_categories):
        tally = tallies[j] + CATEGORY_PSEUDO_COUNT
        log_probs[:, j, :count] = torch.log(tally / tally.sum(1, keepdim=True))
    return weights, means, covariances, log_probs, shifts
