"""Helpers the benchmark scripts share (run them from the repository root)."""

import ast

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity


def parse_params(items):
    """``["name=value", ...]`` from the command line as a dict of Python literals."""
    return {name: ast.literal_eval(value) for name, value in (item.split("=", 1) for item in items)}


def mmd2(A, B, *, biased=False):
    """Squared maximum mean discrepancy between the rows of A and B,
    Gaussian kernel with the median squared distance of the pooled rows as
    bandwidth (the median heuristic). ``mmd2(train subset, test)`` is the
    floor a sampler can reach.

    Unbiased by default: 0 on average when A and B come from one
    distribution, so the floor can be 0 or negative and ratios to it
    meaningless. ``biased=True`` keeps each sample's kernel diagonal (the
    V-statistic): always positive, its floor is the sampling noise of n
    and m rows, and a ratio to it says how much discrepancy a sampler adds."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    pooled = np.vstack([A, B])
    sq = ((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1)
    K = np.exp(-sq / np.median(sq[np.triu_indices(len(pooled), 1)]))
    n, m = len(A), len(B)
    Kaa, Kbb, Kab = K[:n, :n], K[n:, n:], K[:n, n:]
    if biased:
        return Kaa.mean() + Kbb.mean() - 2 * Kab.mean()
    return ((Kaa.sum() - np.trace(Kaa)) / (n * (n - 1))
            + (Kbb.sum() - np.trace(Kbb)) / (m * (m - 1)) - 2 * Kab.mean())


def mean_and_each(values, digits):
    """``"mean (first, second, ...)"``: a table cell for one number over seeds."""
    return (f"{np.mean(values):.{digits}f} "
            f"({', '.join(f'{value:.{digits}f}' for value in values)})")


def rows_over_seeds(run, name, seeds):
    """``run(name, seed)`` returns ``(rows, shape)``, each row ``(label,
    *values)``: ``({label: [values of each seed]}, the last seed's shape)``."""
    results, shape = {}, None
    for seed in seeds:
        rows, shape = run(name, seed)
        for label, *values in rows:
            results.setdefault(label, []).append(tuple(values))
    return results, shape


def fit_gmm(X, seed):
    """GaussianMixture, full covariances, 1 to 16 components chosen by BIC."""
    models = []
    for k in range(1, 17):
        if k > len(X):
            break
        models.append(GaussianMixture(k, covariance_type="full", random_state=seed).fit(X))
    return min(models, key=lambda model: model.bic(X))


def fit_kde(X):
    """KernelDensity with its bandwidth chosen by 5-fold grid search."""
    grid = {"bandwidth": np.logspace(-2, 1, 30) * X.std(axis=0).mean()}  # 0.01 to 10 std
    return GridSearchCV(KernelDensity(), grid, cv=5).fit(X).best_estimator_


#: Columns of statsmodels' tables that a density should not see: anes96's
#: logpopul is log(popul + 0.1), a copy of a column, which no density has;
#: modechoice's individual is an identifier.
STATSMODELS_DROPPED = ["logpopul", "individual"]


def load_statsmodels_table(name):
    """A table bundled with statsmodels (``pip install statsmodels``, a
    benchmark-only dependency) as a DataFrame, without
    :data:`STATSMODELS_DROPPED`."""
    import statsmodels.api as sm
    table = getattr(sm.datasets, name).load_pandas().data
    return table.drop(columns=STATSMODELS_DROPPED, errors="ignore")
