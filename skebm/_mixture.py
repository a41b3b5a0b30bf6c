"""Gaussian mixtures over rows with categorical columns and missing entries.

Each component is a full-covariance Gaussian over the continuous columns
times an independent categorical distribution for each categorical column
(a latent class model on the categories). A missing entry (NaN) is
marginalized exactly: the Gaussian of its observed columns, the categorical
factors of its observed categories. The same algebra gives each row's
conditional distribution of its missing entries, which is how models draw
them, and the EM fit of such a mixture to incomplete rows (Ghahramani &
Jordan 1994).

All functions work on float64 tensors: ``X`` the continuous columns (NaN
where missing), ``codes`` the categorical ones (long, -1 where missing).

References
----------
.. [1] Ghahramani, Z. and Jordan, M. I. "Supervised learning from incomplete
   data via an EM approach." NeurIPS 1994.
"""

import math

import numpy as np
import torch

__all__ = ["ComponentConditionals", "category_log_likelihoods", "fit_mixture",
           "gaussian_observed", "missing_covariance_sums"]

#: Pseudo-count added to every category of every component in the M-step, so
#: that no category seen in fit gets probability 0 in a component.
CATEGORY_PSEUDO_COUNT = 0.5


def gaussian_observed(X, means, covariances, *, with_missing=False):
    """Each row's Gaussians over its observed columns, one per component:
    ``(log-density of the observed entries, (n_rows, n_components);
    conditional mean of every entry, (n_rows, n_components, n_columns))``
    and, with ``with_missing``, the conditional distribution of the missing
    entries in compact form, ``(columns, factors)``: ``columns`` (n_rows,
    width) each row's missing columns, padded with ``n_columns``;
    ``factors`` (n_rows, n_components, width, width) the Cholesky factors
    of their conditional precision (the identity on the padding).

    It is all done through each component's precision ``L = S^-1``: for a
    row with missing entries ``m``, the conditional precision of ``m`` is
    ``L_mm``, the conditional mean ``mu_m - L_mm^-1 L_mo d_o`` and
    ``log det S_oo = log det S + log det L_mm``, so a row costs a factor of
    the size of its missing block, not of its observed one (Schur
    complements). Computed in float64, returned in ``X``'s dtype; rows go in
    chunks of bounded memory.
    """
    dtype, n_columns = X.dtype, X.shape[1]
    X, means, covariances = (t.to(torch.float64) for t in (X, means, covariances))
    factor = torch.linalg.cholesky(covariances)
    log_dets = 2 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)
    # The precisions with one more row and column, of zeros, for the padding.
    precisions = torch.nn.functional.pad(torch.cholesky_inverse(factor), (0, 1, 0, 1))
    missing = torch.isnan(X)
    width = int(missing.sum(1).max()) if len(X) else 0
    padded_index = torch.where(missing, torch.arange(n_columns, device=X.device), n_columns)
    columns = torch.sort(padded_index, dim=1).values[:, :width]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, len(means) * max(n_columns, width**2)))
    parts = [_gaussian_observed(rows, row_columns, means, precisions, log_dets)
             for rows, row_columns in zip(torch.split(X, chunk), torch.split(columns, chunk))]
    log_density, conditional_mean, factors = (
        torch.cat(outputs) for outputs in zip(*parts)) if parts else (
        _gaussian_observed(X, columns, means, precisions, log_dets))
    if not with_missing:
        return log_density.to(dtype), conditional_mean.to(dtype)
    return log_density.to(dtype), conditional_mean.to(dtype), (columns, factors)


#: Elements of the batched (rows, components, ...) tensors at once.
_CHUNK_ELEMENTS = 2**22


def _gaussian_observed(X, columns, means, precisions, log_dets):
    n_rows, n_columns = X.shape
    n_components, width = len(means), columns.shape[1]
    observed = ~torch.isnan(X)
    centred = torch.where(observed[:, None, :], X[:, None, :] - means, 0.0)  # d, 0 where missing
    pulled = torch.einsum("kde,nke->nkd", precisions[:, :n_columns, :n_columns], centred)  # L d
    # L_mm (the identity on the padding) and L_mo d_o, gathered at the missing columns.
    block = precisions[:, columns[:, :, None], columns[:, None, :]].transpose(0, 1)
    padding = columns == n_columns
    eye = torch.eye(width, dtype=X.dtype, device=X.device)
    block = torch.where((padding[:, :, None] & padding[:, None, :])[:, None], eye, block)
    pulled_missing = torch.nn.functional.pad(pulled, (0, 1)).gather(
        2, columns[:, None, :].expand(-1, n_components, -1))
    factors = torch.linalg.cholesky(block)
    shift = torch.cholesky_solve(pulled_missing[..., None], factors).squeeze(-1)  # L_mm^-1 L_mo d_o
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
    blocks = weights[:, :, None, None] * torch.cholesky_inverse(factors)  # (n, K, w, w)
    cells = columns[:, :, None] * (n_columns + 1) + columns[:, None, :]  # (n, w, w)
    sums = torch.zeros(n_components, (n_columns + 1)**2, dtype=factors.dtype,
                       device=factors.device)
    sums.index_add_(1, cells.reshape(-1), blocks.transpose(0, 1).reshape(n_components, -1))
    return sums.view(n_components, n_columns + 1, n_columns + 1)[:, :n_columns, :n_columns]


def category_log_likelihoods(codes, log_probs):
    """``(n_rows, n_components)``: the sum over observed categorical entries of
    each component's log-probability. ``log_probs``: (n_components,
    n_columns, most categories), -inf beyond a column's categories."""
    total = torch.zeros(len(codes), log_probs.shape[0], dtype=log_probs.dtype,
                        device=log_probs.device)
    for j in range(codes.shape[1]):
        values = log_probs[:, j, codes[:, j].clamp(min=0)].T
        total = total + torch.where((codes[:, j] >= 0)[:, None], values, 0.0)
    return total


class ComponentConditionals:
    """Each row's conditional distribution of its missing entries under a
    mixture: the posterior over components given the observed entries, and
    per component the conditional Gaussian of the missing continuous
    entries (categorical ones keep the component's own probabilities).

    ``log_marginal`` is each row's log-density of its observed entries.
    """

    def __init__(self, log_weights, means, covariances, log_probs, X, codes):
        self.X, self.codes, self.log_probs = X, codes, log_probs
        log_joint = log_weights + category_log_likelihoods(codes, log_probs)
        if X.shape[1]:
            log_density, self.means, (self.columns, self.factors) = gaussian_observed(
                X, means, covariances, with_missing=True)
            log_joint = log_joint + log_density
        self.log_marginal = torch.logsumexp(log_joint, 1)
        self.posterior = torch.softmax(log_joint, 1)

    def sample(self, n_draws, generator):
        """``(n_rows, n_draws, ...)`` completions: ``X`` and ``codes`` with
        their missing entries drawn, observed entries as given."""
        n_rows = len(self.X)
        components = torch.multinomial(self.posterior, n_draws, replacement=True,
                                       generator=generator)  # (n_rows, n_draws)
        X = self.X[:, None, :].expand(-1, n_draws, -1).clone()
        if X.shape[2]:  # a missing block: its conditional mean plus F^-T z, F F^T its precision
            rows = torch.arange(n_rows, device=X.device)[:, None]
            columns = self.columns[:, None, :].expand(-1, n_draws, -1)
            factors = self.factors[rows, components]  # (n_rows, n_draws, width, width)
            noise = torch.randn(columns.shape, generator=generator, dtype=X.dtype,
                                device=X.device)
            spread = torch.linalg.solve_triangular(factors.transpose(-1, -2), noise[..., None],
                                                   upper=True).squeeze(-1)
            means = torch.nn.functional.pad(self.means[rows, components], (0, 1))
            X = torch.nn.functional.pad(X, (0, 1))
            X.scatter_(2, columns, means.gather(2, columns) + spread)
            X = X[..., :-1]
        codes = self.codes[:, None, :].expand(-1, n_draws, -1).clone()
        for j in range(codes.shape[2]):
            free = codes[:, :, j] < 0
            if free.any():
                probs = self.log_probs[components[free], j].exp()
                codes[:, :, j][free] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return X, codes


def fit_mixture(X, codes, n_categories, n_components, ridge, seed, *,
                max_iter=100, tol=1e-3, start=None):
    """EM for a mixture of Gaussians times categorical factors on rows with
    missing entries: ``(weights, means, covariances, log_probs)``.

    The E-step marginalizes each row's missing entries; the M-step uses the
    expected sufficient statistics (conditional means, and conditional
    covariances added to the scatter). Starts from ``start`` (parameters, a
    fit with another ridge, say) or from k-means on the rows with missing
    continuous entries at the column mean and categories one-hot; stops when
    the mean log-likelihood gains less than ``tol``.
    """
    if start is None:
        start = _maximize(*_kmeans_start(X, codes, n_categories, n_components, seed),
                          codes, n_categories, ridge)
    parameters, previous = start, -math.inf
    for _ in range(max_iter):
        responsibilities, completed, spread, score = _expect(X, codes, parameters)
        parameters = _maximize(responsibilities, completed, spread, codes, n_categories, ridge)
        if score - previous < tol:
            break
        previous = score
    return parameters


def _kmeans_start(X, codes, n_categories, n_components, seed):
    """Hard responsibilities from k-means, missing entries at 0 (the mean of
    standardized rows) and no spread: what the first M-step takes."""
    from sklearn.cluster import KMeans

    n_rows, n_continuous = X.shape
    filled = torch.nan_to_num(X).cpu().numpy()
    one_hot = [np.eye(count)[np.maximum(c, 0)] * (c >= 0)[:, None] + (c < 0)[:, None] / count
               for c, count in zip(codes.T.cpu().numpy(), n_categories)]
    rows = np.hstack([filled, *one_hot]) if one_hot or n_continuous else filled
    labels = (np.zeros(n_rows, dtype=int) if n_components == 1 else
              KMeans(n_components, n_init=1, random_state=seed).fit(rows).labels_)
    responsibilities = torch.zeros(n_rows, n_components, dtype=X.dtype, device=X.device)
    responsibilities[torch.arange(n_rows), torch.as_tensor(labels, device=X.device)] = 1.0
    completed = torch.nan_to_num(X)[:, None, :].expand(-1, n_components, -1)
    spread = torch.zeros(n_components, n_continuous, n_continuous, dtype=X.dtype, device=X.device)
    return responsibilities, completed, spread


def _expect(X, codes, parameters):
    """The E-step: ``(responsibilities, conditional means of the rows per
    component, summed conditional covariances of their missing entries per
    component, mean log-likelihood)``."""
    weights, means, covariances, log_probs = parameters
    n_continuous = X.shape[1]
    log_joint = torch.log(weights) + category_log_likelihoods(codes, log_probs)
    completed = X[:, None, :].expand(-1, len(weights), -1)
    spread = torch.zeros(len(weights), n_continuous, n_continuous, dtype=X.dtype, device=X.device)
    if n_continuous:
        log_density, completed, missing = gaussian_observed(X, means, covariances,
                                                            with_missing=True)
        log_joint = log_joint + log_density
    responsibilities = torch.softmax(log_joint, 1)
    if n_continuous:
        spread = missing_covariance_sums(*missing, responsibilities, n_continuous)
    return responsibilities, completed, spread, torch.logsumexp(log_joint, 1).mean().item()


def _maximize(responsibilities, completed, spread, codes, n_categories, ridge):
    """The M-step: the parameters that maximize the expected log-likelihood
    (``spread``: each component's responsibility-weighted sum of the missing
    entries' conditional covariances)."""
    counts = responsibilities.sum(0) + 10 * torch.finfo(responsibilities.dtype).eps
    weights = counts / counts.sum()
    means = torch.einsum("nk,nkd->kd", responsibilities, completed) / counts[:, None]
    centred = completed - means
    n_continuous = completed.shape[2]
    covariances = (torch.einsum("nk,nkd,nke->kde", responsibilities, centred, centred)
                   + spread) / counts[:, None, None]
    covariances = covariances + ridge * torch.eye(n_continuous, dtype=completed.dtype,
                                                  device=completed.device)
    most = max(n_categories, default=1)
    log_probs = torch.full((len(counts), len(n_categories), most), -math.inf,
                           dtype=completed.dtype, device=completed.device)
    for j, count in enumerate(n_categories):
        observed = codes[:, j] >= 0
        one_hot = torch.nn.functional.one_hot(codes[observed, j], count).to(completed.dtype)
        tallies = responsibilities[observed].T @ one_hot + CATEGORY_PSEUDO_COUNT
        log_probs[:, j, :count] = torch.log(tallies / tallies.sum(1, keepdim=True))
    return weights, means, covariances, log_probs
