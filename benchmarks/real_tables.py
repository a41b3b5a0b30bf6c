"""Every table statsmodels bundles, handed to NCEDensity as a user would.

An audit, not a likelihood race: each table as ``load_pandas()`` gives it
(datetime columns dropped, at most 5,000 rows drawn), split 50/50 by the
seed, then

- ``NCEDensity()`` fitted to one half and scoring the other (its mean and
  its 1% quantile, nats per row, in the table's units), and a draw of rows;
- ``DensityImputer(NCEDensity())`` fitted to the same half and filling 10%
  of the other half's cells, hidden completely at random;
- the time of ``GaussianMixture``'s BIC search over 1-16 full-covariance
  components (``_common.fit_gmm``) on the standardized numeric columns of
  the half's complete rows, for the ratio of fit times.

Its score is not shown: where columns are categories, integers or point
masses it is a density at spikes, in no common unit with NCEDensity's
probabilities (``mixed_tables.py`` and ``integer_columns.py`` make that
comparison fair). A row says what the default call did: the columns "auto"
made categorical (cat) and integer (int), the errors, and the warnings by
their first words.

Run: ``python benchmarks/real_tables.py [--tables anes96 fair ...] [--seed 0]``
(``pip install statsmodels``, a benchmark-only dependency).
"""

import argparse
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from _common import fit_gmm
from skebm import DensityImputer, NCEDensity

TABLES = ("anes96", "cancer", "ccard", "china_smoking", "committee", "copper", "cpunish",
          "danish_data", "elnino", "engel", "fair", "fertility", "grunfeld", "heart",
          "longley", "macrodata", "modechoice", "randhie", "scotland", "spector",
          "stackloss", "star98", "statecrime", "strikes")
MAX_ROWS = 5000
HIDDEN_SHARE = 0.1


def load(name, seed):
    import statsmodels.api as sm

    table = getattr(sm.datasets, name).load_pandas().data
    table = table.select_dtypes(exclude=["datetime"])
    if len(table) > MAX_ROWS:
        table = table.sample(MAX_ROWS, random_state=seed)
    return train_test_split(table, test_size=0.5, random_state=seed)


def gmm_search_time(X, seed):
    """Seconds of the mixture's BIC search on the rows of X (None: too few)."""
    if len(X) <= X.shape[1]:
        return None
    Z = StandardScaler().fit_transform(X)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its own convergence notes are not audited
        fit_gmm(Z, seed)
    return time.perf_counter() - start


def attempt(call):
    """``(result or None, error or None, short warnings)`` of ``call()``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = call(), None
        except Exception as exception:  # an audit reports every failure
            result, error = None, f"{type(exception).__name__}: {str(exception)[:70]}"
    notes = sorted({" ".join(str(w.message).split(": ", 1)[-1].split()[:6]) for w in caught})
    return result, error, notes


def audit(name, seed):
    train, test = load(name, seed)
    start = time.perf_counter()
    model, error, notes = attempt(lambda: NCEDensity(random_state=seed).fit(train))
    fit_time = time.perf_counter() - start
    scored = ""
    if model is not None:
        scores, error, more = attempt(lambda: model.score_samples(test))
        notes += more
        if scores is not None:
            scored = f"{scores.mean():.2f} ({np.quantile(scores, 0.01):.1f})"
            _, error, more = attempt(lambda: model.sample(5, random_state=seed))
            notes += more
    hidden = test.mask(np.random.default_rng(seed).random(test.shape) < HIDDEN_SHARE)
    filled, impute_error, _ = attempt(
        lambda: DensityImputer(NCEDensity(random_state=seed)).fit(train).transform(hidden))
    peer_time = gmm_search_time(train.select_dtypes("number").dropna().to_numpy(), seed)
    kinds = (f"{model.is_categorical_.sum()} / {model.is_integer_.sum()}"
             if model is not None else "")
    ratio = f"{fit_time / peer_time:.1f}x" if model is not None and peer_time else ""
    print(f"| {name} | {len(train)}x{train.shape[1]} | {kinds} | "
          f"{fit_time:.1f} | {peer_time or float('nan'):.2f} | {ratio} | {scored} | "
          f"{'yes' if filled is not None else impute_error} | {error or ''} | "
          f"{'; '.join(sorted(set(notes)))} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=TABLES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, seed {args.seed}\n")
    print("| table | training rows | cat / int | NCEDensity() fit s | GMM (BIC) fit s | ratio "
          "| held-out nats (1%) | DensityImputer | error | warnings |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.tables:
        audit(name, args.seed)


if __name__ == "__main__":
    main()
