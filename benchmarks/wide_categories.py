"""Two wide categorical columns: NCEDensity's fit time and held-out score.

A synthetic table of ``--rows`` training rows (5,000 held out): two
categorical columns ``c1``, ``c2`` of ``K1`` and ``K2`` equally likely
categories, and two continuous ones, ``a = e1[c1] + e2[c2] + N(0, 1)`` and
``b = a / 2 + N(0, 1)``, each category's effect ``e`` drawn once from
``N(0, --effect^2)`` (0: the categories move nothing). Each category has a
few rows, as a zip code or a product id would; a base that shifts the
continuous columns' mean by every category of both columns solves for
``K1 + K2`` shifts at once.

No peer takes such a table as it is (``GaussianMixture`` on a one-hot
encoding of thousands of columns is not a density of the categories); the
reference is the true density, whose held-out score is the best any model
can reach. Held-out rows with a category not seen in fit are left out
(NCEDensity refuses them). ``--missing p`` hides each training cell with
probability ``p`` (the held-out rows stay complete).

Run: ``python benchmarks/wide_categories.py [--rows 5000] [--sizes 300x300 700x700
1500x1500] [--effect 1] [--missing 0]``
"""

import argparse
import platform
import time

import numpy as np
import pandas as pd

from skebm import NCEDensity


def make_table(n_rows, effects, rng):
    """``(table, true log-density of each row)``."""
    e1, e2 = effects
    c1, c2 = rng.integers(0, len(e1), n_rows), rng.integers(0, len(e2), n_rows)
    a = e1[c1] + e2[c2] + rng.normal(size=n_rows)
    b = a / 2 + rng.normal(size=n_rows)
    table = pd.DataFrame({
        "a": a, "b": b,
        "c1": pd.Categorical(c1.astype(str), categories=[str(i) for i in range(len(e1))]),
        "c2": pd.Categorical(c2.astype(str), categories=[str(i) for i in range(len(e2))])})
    log_normal = -0.5 * np.log(2 * np.pi)
    truth = (-np.log(len(e1)) - np.log(len(e2))
             + 2 * log_normal - 0.5 * (a - e1[c1] - e2[c2]) ** 2 - 0.5 * (b - a / 2) ** 2)
    return table, truth


def run(n_rows, k1, k2, effect, missing, seed):
    rng = np.random.default_rng(seed)
    effects = rng.normal(size=k1) * effect, rng.normal(size=k2) * effect
    train, _ = make_table(n_rows, effects, rng)
    train = train.mask(np.random.default_rng(seed + 1).random(train.shape) < missing)
    test, truth = make_table(5000, effects, rng)
    seen = (test.c1.isin(set(train.c1)) & test.c2.isin(set(train.c2))).to_numpy()
    start = time.perf_counter()
    model = NCEDensity(random_state=seed).fit(train)
    fit = time.perf_counter() - start
    return fit, model.base_n_components_, model.score(test[seen]), truth[seen].mean(), seen.mean()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--sizes", nargs="+", default=["300x300", "700x700", "1500x1500"])
    parser.add_argument("--effect", type=float, default=1.0)
    parser.add_argument("--missing", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {args.rows} training rows, "
          f"effect sd {args.effect}, training cells missing {args.missing:.0%}, seed {args.seed}")
    print("| K1 x K2 | NCEDensity() fit s | base components | held-out | true density "
          "| held-out rows scored |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        k1, k2 = (int(k) for k in size.split("x"))
        fit, components, score, truth, share = run(args.rows, k1, k2, args.effect, args.missing,
                                                    args.seed)
        print(f"| {k1} x {k2} | {fit:.1f} | {components} | {score:.3f} | {truth:.3f} "
              f"| {share:.1%} |", flush=True)


if __name__ == "__main__":
    main()
