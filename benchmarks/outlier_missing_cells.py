"""DensityOutlierDetector fitted on rows with missing cells: the share of
rows flagged, by count of missing cells, against ``contamination``.

Two tables: 3,000 + 3,000 rows of a correlated 6-D Gaussian, and breast
cancer split 50/50. The training half has ``--rate`` of its cells hidden
completely at random; the held-out half is scored complete and with k cells
hidden per row. A threshold that keeps its promise flags about
``contamination`` of the training rows, and (the density fitting well) of
each group of held-out rows.

    python benchmarks/outlier_missing_cells.py [--rate 0.15] [--contamination 0.1] [--cv 5]
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from skebm import DensityOutlierDetector, NCEDensity


def tables(seed):
    rng = np.random.default_rng(seed)
    covariance = 0.5 * np.eye(6) + 0.5
    yield "gaussian 6-D, 3000 + 3000", (rng.multivariate_normal(np.zeros(6), covariance, 3000),
                                        rng.multivariate_normal(np.zeros(6), covariance, 3000))
    X = load_breast_cancer().data
    yield "breast cancer, 284 + 285", tuple(train_test_split(X, test_size=0.5, random_state=seed))


def hidden(X, rate, rng):
    X = X.copy()
    X[rng.random(X.shape) < rate] = np.nan
    return X


def with_k_missing(X, k, rng):
    X = X.copy()
    X[np.arange(len(X))[:, None], rng.random(X.shape).argsort(1)[:, :k]] = np.nan
    return X


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=0.15)
    parser.add_argument("--contamination", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cv", type=int, default=None, help="the detector's cv (None: in-sample)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"contamination={args.contamination}, cv={args.cv}, {args.rate:.0%} of training cells "
          "hidden\n")
    print("| data | fit (s) | training rows flagged | held-out, k = 0 | k = 1 | k = 2 | k = 3 |")
    print("|---|---|---|---|---|---|---|")
    for name, (X_train, X_test) in tables(args.seed):
        X_train = hidden(X_train, args.rate, rng)
        start = time.perf_counter()
        detector = DensityOutlierDetector(NCEDensity(random_state=args.seed),
                                          contamination=args.contamination,
                                          cv=args.cv).fit(X_train)
        seconds = time.perf_counter() - start
        flagged = [np.mean(detector.predict(X_train) == -1)]
        flagged += [np.mean(detector.predict(with_k_missing(X_test, k, rng)) == -1)
                    for k in range(4)]
        print(f"| {name} | {seconds:.1f} | " + " | ".join(f"{f:.3f}" for f in flagged) + " |",
              flush=True)


if __name__ == "__main__":
    warnings.simplefilter("ignore", ConvergenceWarning)  # not the subject here
    main()
