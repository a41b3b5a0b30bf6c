"""NCEDensity against KernelDensity and GaussianMixture on toy 2-D densities.

For each data set: 5000 points, 50/50 train/test split; held-out mean
log-likelihood (nats per point) and fit time of

- KernelDensity, bandwidth chosen by 5-fold GridSearchCV over a wide log grid
  (the time includes the search);
- GaussianMixture, full covariances, 1 to 30 components chosen by BIC (the
  time includes all 30 fits);
- NCEDensity with default parameters, and its grid-integrated normalization
  (integral of exp(score_samples) over a box around the data; 1 is perfect).

For 8gaussians the true density's held-out score is printed too.

Usage::

    python benchmarks/density_2d.py [--datasets rings moons ...] [--seed 0]
        [--param max_iter=100 early_stopping=False ...]

Prints a markdown table for benchmarks/RESULTS.md.
"""

import argparse
import platform
import time

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from _common import parse_params
from skebm import NCEDensity
from skebm.datasets import eight_gaussians_log_density, make_toy_2d
from skebm.partition import grid_log_integral

DATASETS = ["8gaussians", "checkerboard", "2spirals", "rings", "pinwheel", "moons"]


def timed(fit):
    start = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - start


def fit_kde(X):
    grid = {"bandwidth": np.logspace(-2.5, 0.5, 40)}
    return GridSearchCV(KernelDensity(), grid, cv=5).fit(X).best_estimator_


def fit_gmm(X, seed):
    models = [GaussianMixture(k, random_state=seed).fit(X) for k in range(1, 31)]
    return min(models, key=lambda model: model.bic(X))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--param", nargs="*", default=[], metavar="NAME=VALUE",
                        help="NCEDensity parameters other than the defaults, as Python literals")
    args = parser.parse_args()
    params = parse_params(args.param)

    print(f"# {platform.node()} | {platform.processor() or platform.machine()} | "
          f"torch {torch.__version__} | {torch.get_num_threads()} threads available | "
          f"NCEDensity({params or 'defaults'})")
    print("| data | KDE | GMM (k) | NCEDensity | NCE - best peer | normalization | "
          "fit s KDE / GMM / NCE |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets:
        X = make_toy_2d(name, 5000, random_state=args.seed)
        X_train, X_test = X[:2500], X[2500:]
        kde, kde_time = timed(lambda: fit_kde(X_train))
        gmm, gmm_time = timed(lambda: fit_gmm(X_train, args.seed))
        nce, nce_time = timed(lambda: NCEDensity(random_state=args.seed, **params).fit(X_train))
        kde_score = kde.score(X_test) / len(X_test)
        gmm_score = gmm.score(X_test)
        nce_score = nce.score(X_test)
        low, high = X.min(axis=0), X.max(axis=0)
        pad = 0.25 * (high - low)
        bounds = tuple(zip(low - pad, high + pad))
        normalization = np.exp(grid_log_integral(nce.score_samples, bounds, n_points=500))
        label = name
        if name == "8gaussians":
            label += f" (true {eight_gaussians_log_density(X_test).mean():.3f})"
        print(f"| {label} | {kde_score:.3f} | {gmm_score:.3f} ({gmm.n_components}) | "
              f"{nce_score:.3f} | {nce_score - max(kde_score, gmm_score):+.3f} | "
              f"{normalization:.3f} | {kde_time:.1f} / {gmm_time:.1f} / {nce_time:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
