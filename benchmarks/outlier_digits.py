"""Novelty detection on digits: 0-4 are the inliers, 5-9 the novelties.

The rows of digits 0-4 are split 50/50 (seeded); every model is fitted on
the first half only, then scores the held-out 0-4 rows and all the 5-9 rows.
The columns:

- ROC AUC of ``-score_samples`` with the novelties as the positive class
  (1 is perfect, 0.5 is chance);
- with the threshold at ``contamination=0.05`` (5% of the training rows
  flagged), the share of held-out inliers flagged (should be near 5%) and of
  novelties flagged (higher is better);
- fit time, model selection included.

With ``--cv K`` the densities' thresholds are set on out-of-fold scores
(``DensityOutlierDetector(cv=K)``), which changes the share flagged, not the
ROC AUC.

Preprocessing, the same for every model, as a user with grey levels would do
for a density: digits are dequantized, ``(X + U(0, 1)) / 17`` (uniform noise
drawn once per row, training and scored rows alike), so that every feature
is continuous and in (0, 1), as in ``density_tabular.py``.

Contenders, all with their default parameters; the densities inside
``DensityOutlierDetector(density, contamination=0.05)``:

- ``NCEDensity()``, ``ShortRunEBM()`` (the MLP energy) and
  ``PCDRestrictedBoltzmann()`` (its likelihood at grey levels is a score to
  rank rows with, see its docstring);
- ``KernelDensity`` with the bandwidth chosen by 5-fold grid search, and
  ``GaussianMixture`` (full covariances, 1 to 16 components by BIC), chosen
  on the training half and wrapped;
- ``IsolationForest(contamination=0.05)`` and
  ``LocalOutlierFactor(novelty=True, contamination=0.05)``.

Usage (from the repository root)::

    python benchmarks/outlier_digits.py [--seeds 0 1 2] [--methods nce shortrun rbm kde gmm
        iforest lof] [--cv 5]

Prints markdown tables for benchmarks/RESULTS.md: one per seed, then the mean
over seeds.
"""

import argparse
import platform
import time

import numpy as np
import sklearn
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import LocalOutlierFactor

from _common import fit_gmm, fit_kde, mean_and_each
from skebm import DensityOutlierDetector, NCEDensity, PCDRestrictedBoltzmann, ShortRunEBM

METHODS = ["nce", "shortrun", "rbm", "kde", "gmm", "iforest", "lof"]
CONTAMINATION = 0.05


def load(seed):
    """(training inliers, held-out inliers, novelties), dequantized."""
    X, digit = load_digits(return_X_y=True)
    X = (X + np.random.default_rng(seed).uniform(size=X.shape)) / 17
    train, held_out = train_test_split(X[digit < 5], test_size=0.5, random_state=seed)
    return train, held_out, X[digit >= 5]


def contenders(methods, seed, cv):
    """(label, fit) pairs; ``fit(X)`` returns a fitted outlier detector."""
    wrap = lambda density: DensityOutlierDetector(density, contamination=CONTAMINATION, cv=cv)
    factories = {
        "nce": ("NCEDensity()", lambda X: wrap(NCEDensity(random_state=seed)).fit(X)),
        "shortrun": ("ShortRunEBM()", lambda X: wrap(ShortRunEBM(random_state=seed)).fit(X)),
        "rbm": ("PCDRestrictedBoltzmann()",
                lambda X: wrap(PCDRestrictedBoltzmann(random_state=seed)).fit(X)),
        "kde": ("KernelDensity (CV)", lambda X: wrap(clone(fit_kde(X))).fit(X)),
        "gmm": ("GaussianMixture (BIC)", lambda X: wrap(clone(fit_gmm(X, seed))).fit(X)),
        "iforest": ("IsolationForest()", lambda X: IsolationForest(
            contamination=CONTAMINATION, random_state=seed).fit(X)),
        "lof": ("LocalOutlierFactor(novelty=True)", lambda X: LocalOutlierFactor(
            novelty=True, contamination=CONTAMINATION).fit(X)),
    }
    return [factories[name] for name in methods]


def run(methods, seed, cv):
    train, held_out, novelties = load(seed)
    scored = np.vstack([held_out, novelties])
    is_novelty = np.repeat([0, 1], [len(held_out), len(novelties)])
    rows = []
    for label, fit in contenders(methods, seed, cv):
        start = time.perf_counter()
        detector = fit(train)
        fit_time = time.perf_counter() - start
        flagged = detector.predict(scored) == -1
        row = {"model": label, "auc": roc_auc_score(is_novelty, -detector.score_samples(scored)),
               "inliers_flagged": flagged[is_novelty == 0].mean(),
               "novelties_flagged": flagged[is_novelty == 1].mean(), "fit_s": fit_time}
        rows.append(row)
        print(f"  seed {seed} {label}: AUC {row['auc']:.3f} ({fit_time:.1f} s)", flush=True)
    return rows, (len(train), len(held_out), len(novelties))


def table(seed, sizes, rows):
    lines = [f"### seed {seed} ({sizes[0]} training inliers; {sizes[1]} held-out inliers, "
             f"{sizes[2]} novelties scored)", "",
             "| model | ROC AUC | inliers flagged | novelties flagged | fit (s) |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['auc']:.3f} | {row['inliers_flagged']:.1%} | "
                     f"{row['novelties_flagged']:.1%} | {row['fit_s']:.1f} |")
    return "\n".join(lines)


def summary(by_seed):
    lines = ["### Mean over seeds", "", "| model | ROC AUC (per seed) | fit (s) |", "|---|---|---|"]
    for i, row in enumerate(by_seed[0]):
        aucs = [rows[i]["auc"] for rows in by_seed]
        times = [rows[i]["fit_s"] for rows in by_seed]
        lines.append(f"| {row['model']} | {mean_and_each(aucs, 3)} | {np.mean(times):.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--cv", type=int, default=None,
                        help="folds for the densities' out-of-fold thresholds")
    args = parser.parse_args()
    print(f"# {platform.node()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, seeds {args.seeds}, threshold cv {args.cv}")
    tables, by_seed = [], []
    for seed in args.seeds:
        rows, sizes = run(args.methods, seed, args.cv)
        tables.append(table(seed, sizes, rows))
        by_seed.append(rows)
    print()
    print("\n\n".join(tables))
    print()
    print(summary(by_seed))


if __name__ == "__main__":
    main()
