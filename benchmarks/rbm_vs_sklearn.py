"""PCDRestrictedBoltzmann against scikit-learn's BernoulliRBM, same hyperparameters.

Measured as a user runs them: default settings for both (numpy's BLAS with
its default threads for BernoulliRBM, skebm's default thread policy), one
process, not pinned, every second of ``fit`` counted. For each data set and
seed, both models are fitted one after the other, and this reports

- the fit times and their ratio BernoulliRBM / skebm (on digits the faster
  of ``--repeats`` fits each, alternating);
- the held-out pseudo-likelihood over all features, exact and deterministic
  (what BernoulliRBM.score_samples estimates from one random feature),
  nats per row, computed in float32;
- the held-out log-likelihood ``-F(v) - log Z`` with log Z from one AIS
  evaluator (skebm.partition.rbm_ais_log_partition, same seed and schedule,
  base model from the training data's marginals) applied to both models'
  weights, nats per row, with the AIS standard error;
- the time of skebm's first ``score`` call, which makes its own log Z
  estimate (AIS, default schedule): the price of a likelihood, paid only
  when one is asked for.

After the default runs come the extra rows: both pinned to one core (this
process's affinity set to one core, numpy's BLAS at 1 thread, skebm
``n_threads=1``), first seed only.

Data sets:

- digits/16 (sklearn.datasets.load_digits, 1797 x 64 scaled to [0, 1]), 80/20
  split: n_components=256, learning_rate=0.06, batch_size=10, n_iter=20;
- Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (60k train /
  10k test, 784 pixels scaled to [0, 1]): n_components=500,
  learning_rate=0.05, batch_size=100, n_iter=10. Skipped when the package is
  absent: ``sudo apt-get install dataset-fashion-mnist``.

Usage::

    python benchmarks/rbm_vs_sklearn.py [--datasets digits fashion] [--seeds 0 1 2 3]
        [--fashion-seeds 0 1] [--n-iter-scale 1.0] [--ais-temperatures 10000]
        [--ais-chains 100] [--repeats 3] [--no-pinned]

Prints markdown tables for benchmarks/RESULTS.md.
"""

import argparse
import gzip
import os
import platform
import time

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import BernoulliRBM
from threadpoolctl import threadpool_limits

from skebm import PCDRestrictedBoltzmann
from skebm._rbm_model import rbm_ais_log_partition, rbm_free_energy, rbm_pseudo_likelihood

FASHION_DIR = "/usr/share/datasets/fashion-mnist"

SETTINGS = {
    "digits": dict(n_components=256, learning_rate=0.06, batch_size=10, n_iter=20),
    "fashion": dict(n_components=500, learning_rate=0.05, batch_size=100, n_iter=10),
}


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows * cols)


def load(name, seed):
    """(X_train, X_test) in [0, 1], or None when the data is not installed."""
    if name == "digits":
        X = load_digits().data / 16.0
        return train_test_split(X, test_size=0.2, random_state=seed)
    paths = [os.path.join(FASHION_DIR, f"{part}-images-idx3-ubyte.gz") for part in ("train", "t10k")]
    if not all(os.path.exists(path) for path in paths):
        print(f"Fashion-MNIST skipped: {FASHION_DIR} not found. Install it with "
              "`sudo apt-get install dataset-fashion-mnist`.")
        return None
    return [read_idx_images(path) / 255.0 for path in paths]


def timed(fit):
    start = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - start


def evaluate(weights, visible_bias, hidden_bias, X_train, X_test, args):
    """Held-out (pseudo-likelihood, AIS log-likelihood, its std, AIS seconds)."""
    weights, visible_bias, hidden_bias = (
        torch.as_tensor(t, dtype=torch.float64) for t in (weights, visible_bias, hidden_bias)
    )
    test = torch.as_tensor(X_test, dtype=torch.float64)
    rates = np.clip(X_train.mean(0), 1e-3, 1 - 1e-3)
    base = torch.as_tensor(np.log(rates) - np.log1p(-rates))
    with torch.no_grad():
        # float32 (its log1p form keeps a relative 1e-5, tests/test_rbm.py), 3x faster.
        pseudo = rbm_pseudo_likelihood(
            test.float(), weights.float(), visible_bias.float(), hidden_bias.float()
        ).double().mean().item()
        start = time.perf_counter()
        log_z, log_z_std = rbm_ais_log_partition(
            weights, visible_bias, hidden_bias, base_visible_bias=base,
            n_chains=args.ais_chains, n_temperatures=args.ais_temperatures,
            generator=torch.Generator().manual_seed(0),  # one evaluator for all
        )
        ais_seconds = time.perf_counter() - start
        log_lik = (-rbm_free_energy(test, weights, visible_bias, hidden_bias)).mean().item() - log_z
    return pseudo, log_lik, log_z_std, ais_seconds


def fit_both(params, X_train, seed, repeats, n_threads=None):
    """(BernoulliRBM, its fit seconds, skebm's model, its fit seconds): the
    fastest of ``repeats`` fits each, alternating, so that a busy neighbour
    on the machine hurts neither side more."""
    sk_times, ours_times = [], []
    for _ in range(repeats):
        sk, seconds = timed(lambda: BernoulliRBM(**params, random_state=seed).fit(X_train))
        sk_times.append(seconds)
        ours, seconds = timed(lambda: PCDRestrictedBoltzmann(
            **params, random_state=seed, n_threads=n_threads).fit(X_train))
        ours_times.append(seconds)
    return sk, min(sk_times), ours, min(ours_times)


def setting(name, args):
    """(hyperparameters, fits per model) for data set ``name``."""
    params = dict(SETTINGS[name])
    params["n_iter"] = max(1, round(params["n_iter"] * args.n_iter_scale))
    return params, args.repeats if name == "digits" else 1


def run(name, seeds, args):
    """One row per seed for data set ``name``."""
    rows = []
    params, repeats = setting(name, args)
    for seed in seeds:
        data = load(name, seed)
        if data is None:
            return rows
        X_train, X_test = data
        sk, sk_time, ours, ours_time = fit_both(params, X_train, seed, repeats)
        start = time.perf_counter()
        own_score = ours.score(X_test)  # first use: skebm estimates its log Z now
        score_time = time.perf_counter() - start
        rows.append({
            "data": f"{name} ({len(X_train)} x {X_train.shape[1]})", "params": params,
            "seed": seed, "sk_time": sk_time, "ours_time": ours_time, "score_time": score_time,
            "own_score": (own_score, ours.log_partition_std_),
            "sk": evaluate(sk.components_.T, sk.intercept_visible_, sk.intercept_hidden_,
                           X_train, X_test, args),
            "ours": evaluate(ours.components_.T, ours.intercept_visible_,
                             ours.intercept_hidden_, X_train, X_test, args),
        })
    return rows


def pinned_row(name, seed, args):
    """Both on one core: this process pinned, numpy's BLAS and torch at 1 thread."""
    data = load(name, seed)
    if data is None:
        return None
    X_train, _ = data
    params, repeats = setting(name, args)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        with threadpool_limits(1):
            _, sk_time, _, ours_time = fit_both(params, X_train, seed, repeats, n_threads=1)
    finally:
        os.sched_setaffinity(0, affinity)
    return sk_time, ours_time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion"],
                        choices=sorted(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3],
                        help="seeds on digits")
    parser.add_argument("--fashion-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-iter-scale", type=float, default=1.0,
                        help="multiply the epochs (for a quick look; 1 for the reported numbers)")
    parser.add_argument("--ais-temperatures", type=int, default=10000)
    parser.add_argument("--ais-chains", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits per model on digits; the fastest counts")
    parser.add_argument("--no-pinned", action="store_true", help="skip the one-core rows")
    args = parser.parse_args()

    print(f"\n{platform.machine()}, {len(os.sched_getaffinity(0))} cores, defaults for both "
          f"(numpy BLAS threads: library default; skebm n_threads=None), torch "
          f"{torch.__version__}, scikit-learn {sklearn.__version__}; evaluation AIS: "
          f"{args.ais_chains} chains x {args.ais_temperatures} temperatures")
    for name in args.datasets:
        rows = run(name, args.seeds if name == "digits" else args.fashion_seeds, args)
        if not rows:
            continue
        print(f"\n### {rows[0]['data']}, {rows[0]['params']}\n")
        print("| seed | BernoulliRBM fit | skebm fit | ratio | skebm first score() "
              "(its AIS) | pseudo-LL BernoulliRBM / skebm | AIS log-lik BernoulliRBM / skebm |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            (sk_pseudo, sk_ll, sk_std, _), (pseudo, ll, std, _) = row["sk"], row["ours"]
            print(f"| {row['seed']} | {row['sk_time']:.2f} s | {row['ours_time']:.2f} s | "
                  f"{row['sk_time'] / row['ours_time']:.2f}x | {row['score_time']:.2f} s | "
                  f"{sk_pseudo:.2f} / {pseudo:.2f} | {sk_ll:.2f} +- {sk_std:.2f} / "
                  f"{ll:.2f} +- {std:.2f} |")
        mean = lambda key, i: np.mean([row[key][i] for row in rows])
        ratios = [row["sk_time"] / row["ours_time"] for row in rows]
        print(f"| mean | | | {np.mean(ratios):.2f}x | | {mean('sk', 0):.2f} / "
              f"{mean('ours', 0):.2f} | {mean('sk', 1):.2f} / {mean('ours', 1):.2f} |")
        own, own_std = rows[0]["own_score"]
        print(f"\nskebm's own score(X_test), seed {rows[0]['seed']}, log Z from its default "
              f"AIS: {own:.2f} (s.e. of log Z {own_std:.2f})")
        if not args.no_pinned:
            sk_time, ours_time = pinned_row(name, rows[0]["seed"], args)
            print(f"\nExtra row, both pinned to one core (BLAS 1 thread, n_threads=1), seed "
                  f"{rows[0]['seed']}: BernoulliRBM {sk_time:.2f} s, skebm {ours_time:.2f} s, "
                  f"ratio {sk_time / ours_time:.2f}x")


if __name__ == "__main__":
    main()
