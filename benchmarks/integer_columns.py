"""Tables of integers: NCEDensity's probabilities beside GaussianMixture.

Held-out mean log-likelihood (nats per row) on 50/50 splits, one per seed:

- ``digits``: scikit-learn's 8x8 digits as they come (1797 x 64, every pixel
  an integer 0-16), not dequantized.
- ``diabetes``: scikit-learn's diabetes table unscaled (``scaled=False``,
  442 x 10): age, total cholesterol (s1) and glucose (s6) are integers, sex
  is 1 or 2, the rest are measurements with decimals.

``NCEDensity()`` as a user calls it on the table: ``integer_features="auto"``
gives each integer column a probability per integer (the mass of the unit
cell around it), and ``categorical_features="auto"`` makes columns of 2-5
common values categorical, so a row's score is the log of a probability of
its integers and categories times a density of its other columns.

The peer is ``GaussianMixture`` with 1-16 full-covariance components chosen
by BIC. As a user reads it (``score_samples`` on the raw rows), it is a
density at points of a lattice, where a mixture may put spikes: shown for
reference only. Made fair, it scores the same event: the mixture is fitted
to the training rows with each integer spread uniformly over its cell (the
same dequantization NCEDensity trains on), and a held-out row scores the
mixture's mass over the row's cells, estimated as NCEDensity estimates its
own: the mean density at 128 stratified points of the cells (one Latin
hypercube here, two of 64 in NCEDensity). The row
"NCEDensity(integer_features=None)" is the model before integer columns
(densities at integer points), for reference.

- ``anes96``, ``modechoice``: real survey and choice tables bundled with
  statsmodels (:data:`STATSMODELS_TABLES`; ``pip install statsmodels``, a
  benchmark-only dependency), as numbers.

Run: ``python benchmarks/integer_columns.py [--seeds 0 1] [--datasets digits diabetes anes96
modechoice]``
"""

import argparse
import platform
import time

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split

from _common import fit_gmm, load_statsmodels_table, mean_and_each, rows_over_seeds
from skebm import NCEDensity
from skebm._nce_model import cell_offsets, cell_points

POINTS = 128


#: Survey and choice tables bundled with statsmodels (a benchmark-only
#: dependency), all integer codes: ``anes96`` (944 x 10, the 1996 American
#: National Election Study: 7-point scales, income and education brackets,
#: age, population, a binary vote) and ``modechoice`` (840 x 8, travel mode
#: choice: the mode, a choice flag, times, costs, income, party size).
STATSMODELS_TABLES = ("anes96", "modechoice")


def load(name):
    if name == "digits":
        return load_digits().data
    if name in STATSMODELS_TABLES:
        return load_statsmodels_table(name).to_numpy()
    return load_diabetes(scaled=False).data


def integer_columns(X):
    return np.all(X == np.round(X), axis=0)


def mixture_cell_masses(mixture, X, integer, seed):
    """log of the mixture's mass over each row's integer cells (times its
    density of the other columns): the mean density at stratified points."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.as_tensor(integer.astype(np.float64))
    offsets = cell_offsets(POINTS, X.shape[1], generator, torch.float64)
    points = cell_points(torch.as_tensor(X), cells, offsets).numpy()
    log_density = mixture.score_samples(points).reshape(len(X), POINTS)
    return logsumexp(log_density, axis=1) - np.log(POINTS)


def timed(fit):
    start = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - start


def run(name, seed):
    X = load(name)
    train, test = train_test_split(X, test_size=0.5, random_state=seed)
    integer = integer_columns(train)
    rng = np.random.default_rng(seed)
    model, nce_time = timed(lambda: NCEDensity(random_state=seed).fit(train))
    dequantized = train + integer * (rng.uniform(size=train.shape) - 0.5)
    fair, fair_time = timed(lambda: fit_gmm(dequantized, seed))
    raw, raw_time = timed(lambda: fit_gmm(train, seed))
    before, before_time = timed(
        lambda: NCEDensity(random_state=seed, integer_features=None).fit(train))
    kinds = (int(model.is_integer_.sum()), int(model.is_categorical_.sum()))
    return [
        ("NCEDensity(): probabilities of integers and categories x density",
         model.score(test), nce_time),
        ("GaussianMixture (BIC) on dequantized rows, fair: mass of the cells x density",
         float(np.mean(mixture_cell_masses(fair, test, integer, seed))), fair_time),
        ("GaussianMixture (BIC) on the raw rows, density at the points (reference only)",
         float(np.mean(raw.score_samples(test))), raw_time),
        ("NCEDensity(integer_features=None), density at the points (reference only)",
         before.score(test), before_time),
    ], (len(train), X.shape[1], int(integer.sum()), kinds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "diabetes"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    for name in args.datasets:
        results, shape = rows_over_seeds(run, name, args.seeds)
        n_rows, n_columns, n_integer, (n_int_model, n_cat_model) = shape
        print(f"\n### {name}: {n_rows} x {n_columns} training rows, {n_integer} integer "
              f"columns; NCEDensity: {n_int_model} integer, {n_cat_model} categorical\n")
        print("| model | held-out log-likelihood (per seed) | fit (s) |")
        print("|---|---|---|")
        for label, values in results.items():
            print(f"| {label} | {mean_and_each([v[0] for v in values], 2)} | "
                  f"{np.mean([v[1] for v in values]):.1f} |")


if __name__ == "__main__":
    main()
