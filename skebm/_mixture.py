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
           "gaussian_observed"]

#: Pseudo-count added to every category of every component in the M-step, so
#: that no category seen in fit gets probability 0 in a component.
CATEGORY_PSEUDO_COUNT = 0.5


def gaussian_observed(X, means, covariances, *, with_precision=False):
    """Each row's Gaussians over its observed columns, one per component:
    ``(log-density of the observed entries, (n_rows, n_components);
    conditional mean of every entry, (n_rows, n_components, n_columns))``
    and, with ``with_precision``, ``P``, the inverse of the observed block of
    the covariance, zero elsewhere ((n_rows, n_components, n_columns,
    n_columns)): the conditional covariance of the missing entries is then
    ``S - S P S`` (zero outside the missing block).

    The observed block of a covariance is padded with the identity on the
    missing columns (``A = M S M + I - M``), so one batched Cholesky factor
    serves rows with any pattern of missing entries: its log-determinant is
    that of the observed block, and ``A^-1`` restricted to it is that block's
    inverse. Rows go in chunks of bounded memory.
    """
    n_components, n_columns = means.shape
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n_components * n_columns**2))
    parts = [_gaussian_observed(block, means, covariances, with_precision)
             for block in torch.split(X, chunk)] or [
        _gaussian_observed(X, means, covariances, with_precision)]
    return tuple(torch.cat(outputs) for outputs in zip(*parts))


#: Elements of the batched (rows, components, columns, columns) matrices at once.
_CHUNK_ELEMENTS = 2**22


def _gaussian_observed(X, means, covariances, with_precision):
    observed = ~torch.isnan(X)
    weight = observed.to(X.dtype)[:, None, :]  # (n, 1, d)
    centred = torch.where(observed[:, None, :], X[:, None, :] - means, 0.0)  # (n, K, d)
    if observed.all():  # one factor per component for every row
        factor = torch.linalg.cholesky(covariances)
        solved = torch.cholesky_solve(centred.permute(1, 2, 0), factor).permute(2, 0, 1)
        log_det = 2 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)
        precision = torch.cholesky_inverse(factor).expand(len(X), -1, -1, -1) if (
            with_precision) else None
    else:
        eye = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
        both = (observed[:, :, None] & observed[:, None, :])[:, None]  # (n, 1, d, d)
        cholesky = torch.linalg.cholesky(torch.where(both, covariances, eye))
        log_det = 2 * torch.log(torch.diagonal(cholesky, dim1=-2, dim2=-1)).sum(-1)
        # A^-1 is the observed block's inverse there and the identity elsewhere.
        precision = torch.where(both, torch.cholesky_inverse(cholesky), 0.0)
        solved = torch.einsum("nkde,nke->nkd", precision, centred)
    log_density = (-0.5 * (centred * solved).sum(-1) - 0.5 * log_det
                   - 0.5 * weight.sum(-1) * math.log(2 * math.pi))
    conditional_mean = torch.where(observed[:, None, :], X[:, None, :],
                                   means + torch.einsum("nkd,kde->nke", solved, covariances))
    if not with_precision:
        return log_density, conditional_mean
    return log_density, conditional_mean, precision


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
            log_density, self.means, precision = gaussian_observed(
                X, means, covariances, with_precision=True)
            covariance = covariances - covariances @ precision @ covariances
            log_joint = log_joint + log_density
            # The conditional covariance, identity on observed columns, factored;
            # the factor keeps observed rows and columns of the identity.
            missing = torch.isnan(X).to(X.dtype)[:, None, None, :]
            eye = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
            self.factors = torch.linalg.cholesky(covariance + eye * (1 - missing)
                                                 + 1e-12 * eye * missing)
        self.log_marginal = torch.logsumexp(log_joint, 1)
        self.posterior = torch.softmax(log_joint, 1)

    def sample(self, n_draws, generator):
        """``(n_rows, n_draws, ...)`` completions: ``X`` and ``codes`` with
        their missing entries drawn, observed entries as given."""
        n_rows = len(self.X)
        components = torch.multinomial(self.posterior, n_draws, replacement=True,
                                       generator=generator)  # (n_rows, n_draws)
        X = self.X[:, None, :].expand(-1, n_draws, -1).clone()
        missing = torch.isnan(X)
        if X.shape[2]:
            noise = torch.randn(X.shape, generator=generator, dtype=X.dtype, device=X.device)
            rows = torch.arange(n_rows, device=X.device)[:, None]
            means = self.means[rows, components]  # (n_rows, n_draws, d)
            factors = self.factors[rows, components]  # (n_rows, n_draws, d, d)
            draws = means + (factors @ noise[..., None]).squeeze(-1)
            X = torch.where(missing, draws, X)
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
    incomplete = bool(torch.isnan(X).any())
    if n_continuous:
        gaussians = gaussian_observed(X, means, covariances, with_precision=incomplete)
        log_joint = log_joint + gaussians[0]
        completed = gaussians[1]
    responsibilities = torch.softmax(log_joint, 1)
    if incomplete:  # the missing entries' conditional covariances S - S P S, summed
        summed = torch.einsum("nk,nkde->kde", responsibilities, gaussians[2])
        spread = (responsibilities.sum(0)[:, None, None] * covariances
                  - covariances @ summed @ covariances)
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
