"""Full-covariance Gaussian mixtures on complete rows, fitted by EM in numpy.

The iterations are scikit-learn's ``GaussianMixture``'s: k-means labels
(k-means++ seeding, then Lloyd's iterations) as the first responsibilities,
covariances with a ridge added to the diagonal, and a stop once the mean
log-likelihood gains less than ``tol``. A fit therefore gives that class's
mixture, to rounding. What it leaves out are the class's checks and set-up
on every call, which on the small folds of the base search cost more than
the iterations themselves, and the search fits a mixture for every fold,
size and ridge it tries.

All functions take and return float64 numpy arrays; a mixture is
``(weights, means, covariances)``.

References
----------
.. [1] Dempster, A. P., Laird, N. M. and Rubin, D. B. "Maximum likelihood
   from incomplete data via the EM algorithm." JRSS B 39 (1977).
.. [2] Arthur, D. and Vassilvitskii, S. "k-means++: the advantages of
   careful seeding." SODA 2007.
"""

import math

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import kmeans_plusplus

__all__ = ["fit_gaussian_mixture", "kmeans_labels", "mixture_log_density"]

#: Lloyd's iterations at most, and the tolerance on the centres' squared
#: shift in units of the mean feature variance (scikit-learn's KMeans).
KMEANS_ITERATIONS, KMEANS_TOL = 300, 1e-4


def kmeans_labels(X, n_clusters, seed):
    """Each row's cluster by k-means from k-means++ seeds (``seed``: an
    int), of the rows of ``X`` (numpy or scipy sparse: a distance then
    costs the row's entries, not its width). Lloyd's iterations stop when
    no label changes or the centres move less than the tolerance; a
    cluster left empty keeps its centre."""
    centres, _ = kmeans_plusplus(X, n_clusters, random_state=seed)
    tol = KMEANS_TOL * _mean_variance(X)
    labels = None
    for _ in range(KMEANS_ITERATIONS):
        new_labels = _nearest(X, centres)
        if labels is not None and (new_labels == labels).all():
            return labels
        labels = new_labels
        counts = np.bincount(labels, minlength=n_clusters)
        sums = _one_hot(labels, n_clusters).T @ X
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        shift, centres = ((moved - centres) ** 2).sum(), moved
        if shift <= tol:
            break
    return _nearest(X, centres)


def fit_gaussian_mixture(X, n_components, ridge, *, seed=0, start=None, max_iter=100,
                         tol=1e-3):
    """EM for a mixture of ``n_components`` full-covariance Gaussians on the
    rows of ``X``, from ``start`` (a mixture: a fit with another ridge, say)
    or from the k-means labels of ``seed``."""
    if start is None:
        start = _maximize(X, _one_hot(kmeans_labels(X, n_components, seed), n_components), ridge)
    mixture, previous = start, -math.inf
    for _ in range(max_iter):
        log_joint = _log_joint(X, *mixture)
        log_density = _logsumexp(log_joint)
        mixture = _maximize(X, np.exp(log_joint - log_density[:, None]), ridge)
        score = log_density.mean()
        if abs(score - previous) < tol:
            break
        previous = score
    return mixture


def mixture_log_density(X, weights, means, covariances):
    """``(n_rows,)``: each row's log-density under the mixture."""
    return _logsumexp(_log_joint(X, weights, means, covariances))


def _log_joint(X, weights, means, covariances):
    """``(n_rows, n_components)``: log weight + log-density of each component,
    through ``(x - mu)^T L^-T``, ``L L^T`` the covariance."""
    factor = np.linalg.cholesky(covariances)
    pull = np.linalg.inv(factor).transpose(0, 2, 1)
    solved = X @ pull - means[:, None] @ pull  # (n_components, n_rows, n_features)
    log_det = 2 * np.log(np.diagonal(factor, axis1=1, axis2=2)).sum(1)
    return (np.log(weights) - 0.5 * (log_det + X.shape[1] * math.log(2 * math.pi))
            - 0.5 * np.einsum("knd,knd->nk", solved, solved))


def _maximize(X, responsibilities, ridge):
    """The M-step: the mixture of these (n_rows, n_components)
    responsibilities, each covariance plus ``ridge`` on its diagonal (a
    component with no rows gets a tiny weight and the ridge alone)."""
    counts = responsibilities.sum(0) + 10 * np.finfo(X.dtype).eps
    means = responsibilities.T @ X / counts[:, None]
    centred = X - means[:, None]
    weighted = responsibilities.T[:, :, None] * centred
    covariances = weighted.transpose(0, 2, 1) @ centred / counts[:, None, None]
    covariances += ridge * np.eye(X.shape[1])
    return counts / len(X), means, covariances


def _mean_variance(X):
    """The mean over the columns of ``X`` (numpy or scipy sparse) of their
    variance."""
    if not sp.issparse(X):
        return X.var(0).mean()
    mean = np.asarray(X.mean(0)).ravel()
    return (np.asarray(X.multiply(X).mean(0)).ravel() - mean**2).mean()


def _nearest(X, centres):
    return ((centres**2).sum(1) - 2 * X @ centres.T).argmin(1)


def _one_hot(labels, n_columns):
    encoded = np.zeros((len(labels), n_columns))
    encoded[np.arange(len(labels)), labels] = 1
    return encoded


def _logsumexp(values):
    top = values.max(1)
    return top + np.log(np.exp(values - top[:, None]).sum(1))
