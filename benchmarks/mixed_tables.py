"""Tables with categories and missing cells: NCEDensity beside GaussianMixture.

Held-out mean log-likelihood (nats per row) on 50/50 splits, one per seed:

- ``diabetes`` (scikit-learn's, 442 x 10): its second column (sex) takes two
  values. ``NCEDensity()`` as a user calls it on the raw table
  (``categorical_features="auto"`` makes the two-valued column categorical),
  so its score is log P(sex) + log p(other columns | sex), in the table's
  units.
- ``penguins`` (``palmerpenguins.load_penguins()``, 344 x 8, species, island
  and sex as strings, 19 missing cells, year an integer with three values):
  ``NCEDensity()`` on the DataFrame as it comes, NaN included, no
  preprocessing (year becomes categorical under "auto" too; flipper length
  and body mass are integer columns, scored by the mass of the unit cell
  around each value: against the mixture's density of them, the same to
  about 1e-4 nats, for the cells are 1/14 and 1/800 of the columns' spread).

The peer is ``GaussianMixture`` with 1-16 full-covariance components chosen
by BIC, as a user would fit it: on the standardized numeric columns, the
categorical columns one-hot encoded (penguins: complete rows only, since it
refuses NaN; diabetes: the raw table). Its density on a one-hot or binary
coordinate is a density on a spike, not comparable with a probability, so
it is made fair by scoring the same event NCEDensity scores: the mixture's
probability that its categorical coordinates decode to the observed
categories (one-hot: the observed category has the largest coordinate;
binary: the coordinate is on the observed value's side of the midpoint),
times its density of the continuous columns. Per component that is the
Gaussian density of the continuous columns times a multivariate normal
orthant probability (scipy's ``multivariate_normal.cdf``) of the conditional
Gaussian of the categorical coordinates; the mixture sums them. Both scores
are then in the same units: nats of a probability for the categories times
a density (in the table's own units) for the rest. The "density on the
spikes" row is the mixture's ``score_samples`` as a user would read it,
shown for reference only. Penguins are compared on the held-out complete
rows (where the peer can score); NCEDensity's score over all held-out rows,
missing cells integrated out, is reported beside it.

Run: ``python benchmarks/mixed_tables.py [--seeds 0 1] [--datasets diabetes penguins]``
"""

import argparse
import platform
import time

import numpy as np
import pandas as pd
from scipy.stats import multivariate_normal
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

from _common import fit_gmm, mean_and_each, rows_over_seeds
from skebm import NCEDensity


def load(name):
    """(table, list of categorical column names) as a user gets them."""
    if name == "diabetes":
        return load_diabetes(as_frame=True).data, ["sex"]
    from palmerpenguins import load_penguins
    return load_penguins(), ["species", "island", "sex", "year"]


def peer_encoding(train, test, categorical):
    """The peer's view: standardized numeric columns, then each categorical
    column one-hot (a two-valued numeric column kept as one coordinate).
    Returns (train array, test array, blocks, log-Jacobian of the
    standardization), ``blocks`` one (columns, kind, observed-event data) per
    categorical column of the test rows."""
    numeric = [c for c in train.columns if c not in categorical]
    mean, scale = train[numeric].mean(), train[numeric].std(ddof=0)
    parts_train, parts_test = [(train[numeric] - mean) / scale], [(test[numeric] - mean) / scale]
    blocks, start = [], len(numeric)
    for column in categorical:
        levels = sorted(train[column].dropna().unique())
        if len(levels) == 2 and pd.api.types.is_numeric_dtype(train[column]):
            parts_train.append(train[[column]].astype(float))
            parts_test.append(test[[column]].astype(float))
            blocks.append(([start], "binary", levels))
            start += 1
        else:
            for part, frame in ((parts_train, train), (parts_test, test)):
                part.append(pd.DataFrame({f"{column}={v}": (frame[column] == v).astype(float)
                                          for v in levels}, index=frame.index))
            blocks.append((list(range(start, start + len(levels))), "one_hot", levels))
            start += len(levels)
    encode = lambda parts: pd.concat(parts, axis=1).to_numpy(dtype=float)
    return encode(parts_train), encode(parts_test), blocks, float(np.log(scale).sum())


def event_constraints(row, blocks, discrete):
    """(A, b): the observed categories of ``row`` as ``A y > b`` on the
    categorical coordinates ``discrete`` (a list of column indices)."""
    position = {column: i for i, column in enumerate(discrete)}
    rows, bounds = [], []
    for columns, kind, levels in blocks:
        if kind == "binary":
            mid = 0.5 * (levels[0] + levels[1])
            sign = 1.0 if row[columns[0]] > mid else -1.0
            a = np.zeros(len(discrete))
            a[position[columns[0]]] = sign
            rows.append(a)
            bounds.append(sign * mid)
        else:
            observed = columns[int(np.argmax(row[columns]))]
            for other in columns:
                if other != observed:
                    a = np.zeros(len(discrete))
                    a[position[observed]], a[position[other]] = 1.0, -1.0
                    rows.append(a)
                    bounds.append(0.0)
    return np.array(rows), np.array(bounds)


def peer_fair_scores(mixture, Y, blocks):
    """log P(categorical coordinates decode to the observed categories,
    continuous columns) under a fitted GaussianMixture, per row."""
    discrete = [c for columns, _, _ in blocks for c in columns]
    continuous = [c for c in range(Y.shape[1]) if c not in discrete]
    scores = []
    for row in Y:
        A, b = event_constraints(row, blocks, discrete)
        terms = []
        for weight, mean, cov in zip(mixture.weights_, mixture.means_, mixture.covariances_):
            cc, cd = np.ix_(continuous, continuous), np.ix_(continuous, discrete)
            dd = np.ix_(discrete, discrete)
            gain = np.linalg.solve(cov[cc], cov[cd]).T
            cond_mean = mean[discrete] + gain @ (row[continuous] - mean[continuous])
            cond_cov = cov[dd] - gain @ cov[cd]
            # P(A y > b) = P(-A y < -b), y ~ N(cond_mean, cond_cov)
            probability = multivariate_normal(-A @ cond_mean, A @ cond_cov @ A.T,
                                              allow_singular=True).cdf(-b)
            density = multivariate_normal(mean[continuous], cov[cc]).logpdf(row[continuous])
            terms.append(np.log(weight) + density + np.log(max(probability, 1e-300)))
        scores.append(np.logaddexp.reduce(terms))
    return np.array(scores)


def run(name, seed):
    table, categorical = load(name)
    train, test = train_test_split(table, test_size=0.5, random_state=seed)
    rows = []
    start = time.perf_counter()
    model = NCEDensity(random_state=seed).fit(train)
    nce_time = time.perf_counter() - start
    complete = test.dropna()
    rows.append(("NCEDensity() on the table as it comes", model.score(complete), nce_time,
                 model.score(test) if len(complete) < len(test) else None))
    peer_train = train.dropna()
    Y_train, Y_test, blocks, log_scale = peer_encoding(peer_train, complete, categorical)
    start = time.perf_counter()
    mixture = fit_gmm(Y_train, seed)
    gmm_time = time.perf_counter() - start
    rows.append(("GaussianMixture (BIC), fair: P(categories) x density",
                 float(np.mean(peer_fair_scores(mixture, Y_test, blocks))) - log_scale,
                 gmm_time, None))
    rows.append(("GaussianMixture (BIC), density on the spikes (reference only)",
                 float(np.mean(mixture.score_samples(Y_test))) - log_scale, gmm_time, None))
    return rows, (len(train), table.shape[1], int(train.isna().sum().sum()),
                  list(np.asarray(table.columns)[model.is_categorical_]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["diabetes", "penguins"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"{platform.processor() or platform.machine()}")
    for name in args.datasets:
        results, shape = rows_over_seeds(run, name, args.seeds)
        n_rows, n_columns, n_missing, categorical = shape
        print(f"\n### {name}: {n_rows} x {n_columns} training rows, {n_missing} missing cells "
              f"(last seed), categorical per NCEDensity: {categorical}\n")
        print("| model | held-out log-likelihood, complete rows (per seed) | all rows | fit (s) |")
        print("|---|---|---|---|")
        for label, values in results.items():
            every = [v[2] for v in values if v[2] is not None]
            every = f"{np.mean(every):.2f}" if every else ""
            print(f"| {label} | {mean_and_each([v[0] for v in values], 2)} | {every} | "
                  f"{np.mean([v[1] for v in values]):.1f} |")


if __name__ == "__main__":
    main()
