"""NCEDensity against GaussianMixture, KernelDensity and a normalizing flow on real tables.

Held-out mean log-likelihood (nats per row) on a 50/50 split of

- iris (4 features), wine (13), breast cancer (30) and, with
  ``--datasets diabetes``, diabetes (10): standardized with the training
  half's mean and standard deviation;
- digits (64 features), dequantized as ``(X + U(0, 1)) / 17``;
- ``make_blobs`` (10 centres, 8 features) at growing row counts, for the fit
  time's growth (``--blobs``).

Contenders, all in this one process:

- ``NCEDensity()`` with default parameters, and ``noise="self"`` at several
  ``noise_update_interval`` values (``--intervals``);
- ``ShortRunEBM()`` with default parameters (``--methods shortrun``);
- ``GaussianMixture``: full covariances, 1 to 16 components chosen by BIC
  (time includes every fit of the search);
- ``KernelDensity``: bandwidth by 5-fold grid search (time includes it);
- zuko's neural spline flow (``zuko.flows.NSF``, 3 transforms, 5 from 30
  features on, hidden 2 x 128, Adam 1e-3, batch 128, early stopping on 10%
  of the training half with patience 30 epochs). zuko is a benchmark-only
  dependency: ``pip install zuko``.

Columns: held-out log-likelihood, log Z standard error (NCEDensity), fit
time, and for digits the MMD^2 (Gaussian kernel, median-heuristic bandwidth)
between 800 samples and the held-out half, beside the floor MMD^2 of 800
training rows.

Usage::

    python benchmarks/density_tabular.py [--datasets iris wine ...] [--seeds 0 1]
        [--methods nce gmm kde flow self shortrun] [--intervals 10 100 1000]
        [--blobs 5000 80000 1000000] [--param name=value ...]

Prints markdown tables for benchmarks/RESULTS.md: one per data set and seed,
then the mean over seeds.
"""

import argparse
import platform
import time

import numpy as np
import torch
from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits, load_iris,
                              load_wine, make_blobs)
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from _common import fit_gmm, fit_kde, mean_and_each, mmd2, parse_params
from skebm import NCEDensity, ShortRunEBM

DATASETS = ["iris", "wine", "breast_cancer", "digits"]
LOADERS = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer,
           "diabetes": load_diabetes}
N_SAMPLES_MMD = 800


def load(name, seed):
    """(train, test) halves of a data set, prepared as the docstring says."""
    if name == "digits":
        X = load_digits().data
        X = (X + np.random.default_rng(seed).uniform(size=X.shape)) / 17
        return train_test_split(X, test_size=0.5, random_state=seed)
    if name.startswith("blobs"):
        n_rows = int(name[len("blobs"):])
        X, _ = make_blobs(2 * n_rows, n_features=8, centers=10, random_state=seed)
        return train_test_split(X, test_size=0.5, random_state=seed)
    train, test = train_test_split(LOADERS[name]().data, test_size=0.5, random_state=seed)
    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


class Flow:
    """zuko's neural spline flow, trained with early stopping; the
    scikit-learn-like face the table needs (fit, score, sample)."""

    def __init__(self, seed, max_epochs=1000, patience=30, batch_size=128):
        self.seed, self.max_epochs, self.patience, self.batch_size = (
            seed, max_epochs, patience, batch_size)

    def fit(self, X):
        import copy

        import zuko

        torch.manual_seed(self.seed)
        X = torch.as_tensor(X, dtype=torch.float32)
        order = torch.randperm(len(X))
        n_val = max(1, len(X) // 10)
        val, train = X[order[:n_val]], X[order[n_val:]]
        transforms = 5 if X.shape[1] >= 30 else 3
        self.flow = zuko.flows.NSF(X.shape[1], transforms=transforms, hidden_features=(128, 128))
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=1e-3)
        best, best_state, waited = -np.inf, None, 0
        for _ in range(self.max_epochs):
            for batch in train[torch.randperm(len(train))].split(self.batch_size):
                loss = -self.flow().log_prob(batch).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                score = self.flow().log_prob(val).mean().item()
            if score > best:
                best, best_state, waited = score, copy.deepcopy(self.flow.state_dict()), 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        self.flow.load_state_dict(best_state)
        return self

    def score_samples(self, X):
        with torch.no_grad():
            return self.flow().log_prob(torch.as_tensor(X, dtype=torch.float32)).numpy()

    def sample(self, n_samples, random_state=None):
        torch.manual_seed(random_state or 0)
        with torch.no_grad():
            return self.flow().sample((n_samples,)).numpy()


def contenders(methods, intervals, seed, params):
    """(label, factory) pairs; a factory returns an unfitted model."""
    out = []
    if "nce" in methods:
        out.append(("NCEDensity()", lambda: NCEDensity(random_state=seed, **params)))
    if "self" in methods:
        for interval in intervals:
            out.append((f'NCEDensity(noise="self", interval={interval})',
                        lambda interval=interval: NCEDensity(
                            noise="self", noise_update_interval=interval, random_state=seed,
                            **params)))
    if "shortrun" in methods:
        out.append(("ShortRunEBM()", lambda: ShortRunEBM(random_state=seed)))
    if "gmm" in methods:
        out.append(("GaussianMixture (BIC)", None))
    if "kde" in methods:
        out.append(("KernelDensity (CV)", None))
    if "flow" in methods:
        out.append(("zuko NSF", lambda: Flow(seed)))
    return out


def run(name, train, test, methods, intervals, seed, params):
    rows = []
    with_mmd = name == "digits"
    if with_mmd:
        rng = np.random.default_rng(seed)
        floor = mmd2(train[rng.choice(len(train), N_SAMPLES_MMD, replace=False)], test)
    for label, factory in contenders(methods, intervals, seed, params):
        start = time.perf_counter()
        if label.startswith("GaussianMixture"):
            model = fit_gmm(train, seed)
        elif label.startswith("KernelDensity"):
            model = fit_kde(train)
        else:
            model = factory().fit(train)
        fit_time = time.perf_counter() - start
        score = float(np.mean(model.score_samples(test)))  # KernelDensity.score sums
        log_z_std = getattr(model, "log_partition_std_", None)
        row = {"model": label, "score": score, "log_z_std": log_z_std, "fit_s": fit_time}
        if with_mmd:
            if isinstance(model, GaussianMixture):  # seeded at construction; returns (X, labels)
                samples = model.sample(N_SAMPLES_MMD)[0]
            else:
                samples = model.sample(N_SAMPLES_MMD, random_state=seed)
            row["mmd2"] = mmd2(samples, test)
            row["mmd2_floor"] = floor
        rows.append(row)
        print(f"  {name} {label}: {score:.3f} ({fit_time:.1f} s)", flush=True)
    return rows


def table(name, shape, rows):
    lines = [f"### {name} ({shape[0]} x {shape[1]} training rows)", ""]
    with_mmd = "mmd2" in rows[0]
    header = "| model | held-out log-likelihood | log Z std | fit (s) |"
    rule = "|---|---|---|---|"
    if with_mmd:
        header += " MMD^2 (floor) |"
        rule += "---|"
    lines += [header, rule]
    for row in rows:
        std = "" if row["log_z_std"] is None else f"{row['log_z_std']:.3f}"
        line = f"| {row['model']} | {row['score']:.2f} | {std} | {row['fit_s']:.1f} |"
        if with_mmd:
            line += f" {row['mmd2']:.4f} ({row['mmd2_floor']:.4f}) |"
        lines.append(line)
    return "\n".join(lines)


def summary(results):
    """Mean held-out log-likelihood and fit time over seeds, per data set and model."""
    lines = ["### Mean over seeds", "", "| data | model | held-out log-likelihood | fit (s) |",
             "|---|---|---|---|"]
    for name, by_seed in results.items():
        labels = [row["model"] for row in by_seed[0]]
        for i, label in enumerate(labels):
            scores = [rows[i]["score"] for rows in by_seed]
            times = [rows[i]["fit_s"] for rows in by_seed]
            lines.append(f"| {name} | {label} | {mean_and_each(scores, 2)} | "
                         f"{np.mean(times):.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--methods", nargs="+", default=["nce", "self", "gmm", "kde", "flow"])
    parser.add_argument("--intervals", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--blobs", nargs="*", type=int, default=[],
                        help="training rows of make_blobs tables to add (nce and gmm only)")
    parser.add_argument("--param", nargs="*", default=[],
                        help="extra NCEDensity parameters, name=value")
    args = parser.parse_args()
    params = parse_params(args.param)

    print(f"# {platform.node()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, seeds {args.seeds}, "
          f"NCEDensity params {params or 'default'}")
    tables, results = [], {}
    for name in args.datasets + [f"blobs{n}" for n in args.blobs]:
        for seed in args.seeds:
            train, test = load(name, seed)
            methods = args.methods
            if name.startswith("blobs"):
                methods = [m for m in methods if m in ("nce", "gmm")]
            rows = run(name, train, test, methods, args.intervals, seed, params)
            tables.append(table(f"{name}, seed {seed}", train.shape, rows))
            results.setdefault(name, []).append(rows)
    print()
    print("\n\n".join(tables))
    print()
    print(summary(results))


if __name__ == "__main__":
    main()
