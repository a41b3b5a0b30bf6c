"""PCDRestrictedBoltzmann against scikit-learn's BernoulliRBM, same hyperparameters.

For each data set, both models are fitted in the same run, one after the
other, and for both this reports

- the fit time (on digits the fastest of ``--repeats`` fits each), and
  their ratio BernoulliRBM / skebm. skebm's ``fit``
  includes its estimate of log Z (AIS, default schedule); the training alone
  is shown too (fit time minus the time of that AIS, rerun on its weights);
- the held-out pseudo-likelihood over all features, exact and deterministic
  (what BernoulliRBM.score_samples estimates from one random feature),
  nats per row, computed in float32;
- the held-out log-likelihood ``-F(v) - log Z`` with log Z from the same AIS
  evaluator (skebm.partition.rbm_ais_log_partition, same seed and schedule,
  base model from the training data's marginals) applied to both models'
  weights, nats per row, with the AIS standard error.

Data sets:

- digits/16 (sklearn.datasets.load_digits, 1797 x 64 scaled to [0, 1]), 80/20
  split: n_components=256, learning_rate=0.06, batch_size=10, n_iter=20;
- Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (60k train /
  10k test, 784 pixels scaled to [0, 1]): n_components=500,
  learning_rate=0.05, batch_size=100, n_iter=10. Skipped when the package is
  absent: ``sudo apt-get install dataset-fashion-mnist``.

Usage::

    python benchmarks/rbm_vs_sklearn.py [--datasets digits fashion] [--seed 0]
        [--n-iter-scale 1.0] [--ais-temperatures 10000] [--ais-chains 100]
        [--repeats 3] [--device auto] [--n-threads N]

Prints a markdown table for benchmarks/RESULTS.md.
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
from skebm.partition import rbm_ais_log_partition, rbm_free_energy
from skebm.rbm import rbm_pseudo_likelihood

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
            generator=torch.Generator().manual_seed(args.seed),
        )
        ais_seconds = time.perf_counter() - start
        log_lik = (-rbm_free_energy(test, weights, visible_bias, hidden_bias)).mean().item() - log_z
    return pseudo, log_lik, log_z_std, ais_seconds


def run(name, args):
    data = load(name, args.seed)
    if data is None:
        return None
    X_train, X_test = data
    params = dict(SETTINGS[name])
    params["n_iter"] = max(1, round(params["n_iter"] * args.n_iter_scale))
    row = {"data": f"{name} ({len(X_train)} x {X_train.shape[1]}, {params})"}

    # Small data: the best of several fits, alternating, so that a busy
    # neighbour on the machine hurts neither side more.
    repeats = args.repeats if name == "digits" else 1
    sk_times, ours_times = [], []
    for _ in range(repeats):
        sk, seconds = timed(lambda: BernoulliRBM(**params, random_state=args.seed).fit(X_train))
        sk_times.append(seconds)
        ours, seconds = timed(lambda: PCDRestrictedBoltzmann(
            **params, random_state=args.seed, device=args.device, n_threads=args.n_threads
        ).fit(X_train))
        ours_times.append(seconds)
    row["sk_time"], row["ours_time"] = min(sk_times), min(ours_times)
    row["sk"] = evaluate(sk.components_.T, sk.intercept_visible_, sk.intercept_hidden_,
                         X_train, X_test, args)

    row["ours"] = evaluate(ours.components_.T, ours.intercept_visible_, ours.intercept_hidden_,
                           X_train, X_test, args)
    # The training alone: minus the time of fit's own AIS (default schedule), rerun.
    module = ours.module_
    start = time.perf_counter()
    with torch.no_grad():
        rbm_ais_log_partition(module.weights, module.visible_bias, module.hidden_bias,
                              base_visible_bias=module.base_visible_bias,
                              n_chains=ours.n_ais_chains, n_temperatures=ours.n_ais_temperatures,
                              generator=torch.Generator().manual_seed(args.seed))
    row["ours_train_time"] = row["ours_time"] - (time.perf_counter() - start)
    row["ours_own"] = (ours.score(X_test), ours.log_partition_std_, ours.n_ais_temperatures)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion"],
                        choices=sorted(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-iter-scale", type=float, default=1.0,
                        help="multiply the epochs (for a quick look; 1 for the reported numbers)")
    parser.add_argument("--ais-temperatures", type=int, default=10000)
    parser.add_argument("--ais-chains", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits per model on digits; the fastest counts")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-threads", type=int, default=None)
    args = parser.parse_args()

    # numpy's BLAS gets the cores this process may use (taskset), no more:
    # oversubscribed BLAS threads would slow BernoulliRBM down unfairly.
    n_cores = len(os.sched_getaffinity(0))
    with threadpool_limits(n_cores):
        rows = [row for row in (run(name, args) for name in args.datasets) if row is not None]
    print(f"\n{platform.machine()}, {n_cores} core(s) for this process "
          f"(numpy BLAS threads: {n_cores}; skebm n_threads: {args.n_threads or 'default (1)'}), "
          f"torch {torch.__version__}, scikit-learn {sklearn.__version__}; evaluation AIS: "
          f"{args.ais_chains} chains x {args.ais_temperatures} temperatures\n")
    print("| data | model | fit time (s) | ratio sklearn/skebm | held-out pseudo-LL | "
          "held-out AIS log-lik (+- s.e. of log Z) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        pseudo, log_lik, std, _ = row["sk"]
        print(f"| {row['data']} | BernoulliRBM | {row['sk_time']:.2f} | 1 | {pseudo:.2f} | "
              f"{log_lik:.2f} +- {std:.2f} |")
        pseudo, log_lik, std, _ = row["ours"]
        print(f"| | PCDRestrictedBoltzmann, fit incl. its AIS | {row['ours_time']:.2f} | "
              f"{row['sk_time'] / row['ours_time']:.2f} | {pseudo:.2f} | "
              f"{log_lik:.2f} +- {std:.2f} |")
        print(f"| | PCDRestrictedBoltzmann, training only | {row['ours_train_time']:.2f} | "
              f"{row['sk_time'] / row['ours_train_time']:.2f} | | |")
    for row in rows:
        score, std, n_temperatures = row["ours_own"]
        print(f"\n{row['data'].split(' ')[0]}: PCDRestrictedBoltzmann.score(X_test) with fit's own "
              f"log Z ({n_temperatures} AIS temperatures): {score:.2f} (s.e. {std:.2f})")


if __name__ == "__main__":
    main()
