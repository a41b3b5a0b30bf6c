"""Imputation of hidden cells: DensityImputer beside scikit-learn's imputers.

Tables: scikit-learn's bundled iris, wine, breast_cancer and diabetes
(``load_*(return_X_y=True)``, complete); ``--tables anes96`` adds a survey
from statsmodels (:func:`load_anes96`), small integer codes. In each, a
share of the cells (``--rates``, default 10% and 30%) is hidden completely
at random: exactly that many cells, drawn in a seeded random order and
skipped when hiding one would leave its row or its column with no observed
cell.

Every imputer gets the same hidden table, standardized with the observed
cells' means and standard deviations (``StandardScaler`` ignores NaN; KNN's
distances need it, the others do not mind), and its output is scaled back.
Contenders, with their defaults:

- ``SimpleImputer()`` (column means);
- ``KNNImputer()`` (5 neighbours);
- ``IterativeImputer(BayesianRidge)``: ``IterativeImputer()``, whose default
  estimator is ``BayesianRidge``;
- ``IterativeImputer(ExtraTrees)``: ``IterativeImputer(estimator=
  ExtraTreesRegressor(n_estimators=10, random_state=0))``, as in
  scikit-learn's imputer comparison example;
- ``DensityImputer(NCEDensity())``: ``DensityImputer(NCEDensity(
  random_state=seed), random_state=seed)``, the conditional mean from
  ``NCEDensity.conditional_mean`` (importance sampling over 256 completions
  per row; a numeric column that ``categorical_features="auto"`` models as
  categories, e.g. diabetes' sex, gets the mean of its values);
- ``DensityImputer(ShortRunEBM())`` (only when asked, ``--imputers
  shortrun``): ``DensityImputer(ShortRunEBM(random_state=seed),
  random_state=seed)``, the conditional mean from
  ``ShortRunEBM.conditional_mean`` (importance sampling over 256 completions
  from its base's conditional, a Gaussian mixture's); every column
  continuous.

Columns:

- RMSE of the hidden cells in standardized units: each error divided by its
  column's standard deviation over the full (complete) table, pooled over
  all hidden cells (0 is perfect; 1 is about what the column mean scores);
- seconds of ``fit_transform`` (the imputer alone);
- a downstream score on the imputed table: 5-fold cross-validated accuracy
  of ``StandardScaler() + LogisticRegression()`` (iris, wine,
  breast_cancer; anes96's vote) or R^2 of ``StandardScaler() + Ridge()``
  (diabetes). The table is imputed once, before the split (as an analyst
  filling a table would), the same for every imputer; the row ``(complete
  table)`` scores the table with nothing hidden.

Each cell is the mean ± standard deviation over ``--seeds`` seeds (the
cells hidden and every random_state change with the seed).

``--penguins``: the Palmer penguins table (``pip install palmerpenguins``, a
benchmark-only dependency), 344 rows, with its own missing values (a few in
the measurements, 11 in ``sex``): species, island and sex are categories,
the five other columns numbers (``year`` included). A further 10% of its
observed cells are hidden as above, and only those are scored (the table's
own NaN have no truth): RMSE over the numeric cells in standardized units,
and the share of categorical cells (island, sex, species) filled with the
right category. How each imputer sees the table, to keep the comparison
fair (each gets the whole table, all its columns, and nothing else):

- ``DensityImputer(NCEDensity())``: the DataFrame itself, the three
  category columns as pandas ``category`` dtype, NaN included; a category
  gets its most probable value, ``year`` (numbers) the mean of its values;
- ``SimpleImputer``: ``strategy="most_frequent"`` for the categories, the
  mean for numbers;
- ``IterativeImputer(BayesianRidge)``: numbers standardized (observed
  cells), each category one-hot encoded with its first level dropped (a
  missing category is a whole block of NaN, which the other columns
  predict); a category is decoded as the argmax of ``(1 - sum of the
  block, block)``. The first level is dropped because a full one-hot
  block sums to 1: each of its columns is then predicted exactly by the
  block's others, which for a missing category are themselves imputed, and
  the iterations stay at the columns' means (every missing island came back
  as the most frequent one).

Without NaN support in the installed NCEDensity, its rows print the error
it raises; ``--imputers`` chooses the contenders.

Usage (from the repository root)::

    python benchmarks/imputation.py [--tables iris wine breast_cancer diabetes]
        [--rates 0.1 0.3] [--seeds 3] [--imputers simple knn iterative trees density]
        [--penguins]
"""

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _common import load_statsmodels_table
from skebm import DensityImputer, NCEDensity, ShortRunEBM


def load_anes96(return_X_y=True):
    """The 1996 American National Election Study as statsmodels bundles it
    (:func:`_common.load_statsmodels_table`): 944 rows of 9 survey answers
    (population, TV news days, 7-point left-right scales of oneself and the
    two candidates, party identification, age, education and income
    brackets), y the vote (Clinton 0, Dole 1)."""
    frame = load_statsmodels_table("anes96")
    return frame.drop(columns="vote").to_numpy(), frame["vote"].to_numpy()


LOADERS = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer,
           "diabetes": load_diabetes, "anes96": load_anes96}
DEFAULT_TABLES = ["iris", "wine", "breast_cancer", "diabetes"]
IMPUTERS = {
    "simple": ("SimpleImputer()", lambda seed: SimpleImputer()),
    "knn": ("KNNImputer()", lambda seed: KNNImputer()),
    "iterative": ("IterativeImputer(BayesianRidge)",
                  lambda seed: IterativeImputer(random_state=seed)),
    "trees": ("IterativeImputer(ExtraTrees)",
              lambda seed: IterativeImputer(
                  estimator=ExtraTreesRegressor(n_estimators=10, random_state=0),
                  random_state=seed)),
    "density": ("DensityImputer(NCEDensity())",
                lambda seed: DensityImputer(NCEDensity(random_state=seed), random_state=seed)),
    "shortrun": ("DensityImputer(ShortRunEBM())",
                 lambda seed: DensityImputer(ShortRunEBM(random_state=seed), random_state=seed)),
}
CATEGORIES = ["island", "sex", "species"]


def hide(missing, rate, rng):
    """A mask of ``rate`` of all cells, hidden at random among the cells not
    already ``missing``, never leaving a row or a column with none observed."""
    n_rows, n_columns = missing.shape
    target = int(round(rate * missing.size))
    observed_in_row = (~missing).sum(axis=1)
    observed_in_column = (~missing).sum(axis=0)
    hidden = np.zeros_like(missing)
    for cell in rng.permutation(missing.size):
        if hidden.sum() == target:
            break
        i, j = divmod(cell, n_columns)
        if missing[i, j] or observed_in_row[i] == 1 or observed_in_column[j] == 1:
            continue
        hidden[i, j] = True
        observed_in_row[i] -= 1
        observed_in_column[j] -= 1
    return hidden


def mean_std(values, digits):
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def failure(error):
    """A table cell for an exception."""
    text = f"{type(error).__name__}: {error}".replace("|", "/").replace("\n", " ")
    return f"error: {text[:140]}"


def impute_standardized(imputer, X):
    """``imputer.fit_transform`` of X standardized by its observed cells,
    scaled back; and its seconds."""
    scaler = StandardScaler().fit(X)
    start = time.perf_counter()
    filled = imputer.fit_transform(scaler.transform(X))
    seconds = time.perf_counter() - start
    return scaler.inverse_transform(filled), seconds


def downstream(name, X, y):
    if name == "diabetes":
        model = make_pipeline(StandardScaler(), Ridge())
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return cross_val_score(model, X, y, cv=5).mean()


def table_rows(name, rates, seeds, imputers):
    X, y = LOADERS[name](return_X_y=True)
    std = X.std(axis=0)
    shape = f"{X.shape[0]}x{X.shape[1]}"
    print(f"| {name} {shape} | 0% | (complete table) | | | {downstream(name, X, y):.3f} |",
          flush=True)
    for rate in rates:
        masks = [hide(np.zeros(X.shape, dtype=bool), rate, np.random.default_rng(seed))
                 for seed in seeds]
        for key in imputers:
            label, make = IMPUTERS[key]
            rmse, seconds, scores = [], [], []
            try:
                for seed, hidden in zip(seeds, masks):
                    filled, took = impute_standardized(make(seed), np.where(hidden, np.nan, X))
                    rmse.append(np.sqrt(np.mean(((filled - X) / std)[hidden] ** 2)))
                    seconds.append(took)
                    scores.append(downstream(name, filled, y))
            except Exception as error:  # noqa: BLE001 - reported in the table
                print(f"| {name} {shape} | {rate:.0%} | {label} | {failure(error)} | | |",
                      flush=True)
                continue
            print(f"| {name} {shape} | {rate:.0%} | {label} | {mean_std(rmse, 3)} | "
                  f"{mean_std(seconds, 2)} | {mean_std(scores, 3)} |", flush=True)


def load_penguins_frame():
    """The penguins DataFrame, categories as ``category`` dtype; None (and a
    note) when palmerpenguins is not installed."""
    try:
        from palmerpenguins import load_penguins
    except ImportError:
        print("penguins skipped: palmerpenguins is not installed (pip install palmerpenguins)")
        return None
    frame = load_penguins()
    for column in CATEGORIES:
        frame[column] = frame[column].astype("category")
    numeric = [column for column in frame.columns if column not in CATEGORIES]
    frame[numeric] = frame[numeric].astype(np.float64)
    return frame


def penguins_simple(frame, seed):
    filled = frame.copy()
    for column in frame.columns:
        strategy = "most_frequent" if column in CATEGORIES else "mean"
        values = frame[[column]].astype(object if column in CATEGORIES else np.float64)
        filled[column] = SimpleImputer(strategy=strategy).fit_transform(values)[:, 0]
    return filled


def penguins_iterative(frame, seed):
    numeric = [column for column in frame.columns if column not in CATEGORIES]
    blocks, levels = [], {}
    scaler = StandardScaler().fit(frame[numeric])
    blocks.append(scaler.transform(frame[numeric]))
    for column in CATEGORIES:
        levels[column] = np.asarray(frame[column].cat.categories, dtype=object)
        codes = frame[column].cat.codes.to_numpy()
        block = (codes[:, None] == np.arange(1, len(levels[column]))).astype(np.float64)
        block[codes < 0] = np.nan  # the first level dropped: all 0
        blocks.append(block)
    imputed = IterativeImputer(random_state=seed).fit_transform(np.hstack(blocks))
    filled = frame.copy()
    filled[numeric] = scaler.inverse_transform(imputed[:, :len(numeric)])
    start = len(numeric)
    for column in CATEGORIES:
        block = imputed[:, start:start + len(levels[column]) - 1]
        start += len(levels[column]) - 1
        scores = np.column_stack([1 - block.sum(axis=1), block])
        decoded = levels[column][scores.argmax(axis=1)]
        filled[column] = np.where(frame[column].isna(), decoded, frame[column].astype(object))
    return filled


def penguins_density(frame, seed):
    imputer = DensityImputer(NCEDensity(random_state=seed), random_state=seed)
    return imputer.set_output(transform="pandas").fit_transform(frame)


PENGUIN_IMPUTERS = {
    "simple": ("SimpleImputer(most_frequent / mean)", penguins_simple),
    "iterative": ("IterativeImputer(BayesianRidge), one-hot", penguins_iterative),
    "density": ("DensityImputer(NCEDensity())", penguins_density),
}


def penguin_rows(seeds, imputers, rate=0.1):
    frame = load_penguins_frame()
    if frame is None:
        return
    numeric = [column for column in frame.columns if column not in CATEGORIES]
    std = frame[numeric].std(ddof=0).to_numpy()
    own = frame.isna().to_numpy()
    print(f"\nPalmer penguins {frame.shape[0]}x{frame.shape[1]}, {own.mean():.1%} of cells "
          f"missing, {rate:.0%} more hidden; scored on the hidden cells\n")
    print("| imputer | numeric RMSE (std units) | " + " | ".join(
        f"{column} accuracy" for column in CATEGORIES) + " | fit+transform s |")
    print("|---|---|" + "---|" * len(CATEGORIES) + "---|")
    masks = [hide(own, rate, np.random.default_rng(seed)) for seed in seeds]
    for key in imputers:
        if key not in PENGUIN_IMPUTERS:
            continue
        label, impute = PENGUIN_IMPUTERS[key]
        rmse, seconds, accuracy = [], [], {column: [] for column in CATEGORIES}
        try:
            for seed, hidden in zip(seeds, masks):
                given = frame.mask(hidden)
                start = time.perf_counter()
                filled = impute(given, seed)
                seconds.append(time.perf_counter() - start)
                columns = list(frame.columns)
                index = [columns.index(column) for column in numeric]
                truth = frame[numeric].to_numpy()
                guess = np.asarray(filled[numeric], dtype=np.float64)
                rmse.append(np.sqrt(np.mean(((guess - truth) / std)[hidden[:, index]] ** 2)))
                for column in CATEGORIES:
                    cells = hidden[:, columns.index(column)]
                    right = (np.asarray(filled[column], dtype=object)[cells]
                             == frame[column].astype(object).to_numpy()[cells])
                    accuracy[column].append(right.mean())
        except Exception as error:  # noqa: BLE001 - reported in the table
            print(f"| {label} | {failure(error)} |" + " |" * len(CATEGORIES) + " |", flush=True)
            continue
        print(f"| {label} | {mean_std(rmse, 3)} | " + " | ".join(
            mean_std(accuracy[column], 3) for column in CATEGORIES)
            + f" | {mean_std(seconds, 2)} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=DEFAULT_TABLES, choices=list(LOADERS))
    parser.add_argument("--rates", nargs="+", type=float, default=[0.1, 0.3])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds: 0, 1, ...")
    parser.add_argument("--imputers", nargs="+", choices=list(IMPUTERS),
                        default=[key for key in IMPUTERS if key != "shortrun"])
    parser.add_argument("--penguins", action="store_true",
                        help="also the Palmer penguins table (needs palmerpenguins)")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    warnings.filterwarnings("ignore", message=".*[Ee]arly stopping criterion not reached.*")
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, seeds {seeds}\n")
    print("| table | hidden | imputer | RMSE (std units) | fit+transform s | downstream |")
    print("|---|---|---|---|---|---|")
    for name in args.tables:
        table_rows(name, args.rates, seeds, args.imputers)
    print("\ndownstream: 5-fold accuracy of LogisticRegression (iris, wine, breast_cancer), "
          "R^2 of Ridge (diabetes), after StandardScaler")
    if args.penguins:
        penguin_rows(seeds, args.imputers)


if __name__ == "__main__":
    main()
