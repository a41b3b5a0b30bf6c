"""Default fits, timed as users run them, beside the tool each user would pick.

Every row: an skebm estimator with default parameters (only ``random_state``
set) and its peer with its own defaults, both fitted in this one process,
unpinned, with everything ``fit`` does counted (NCEDensity's base search and
log Z, the mixture's BIC search over 1-10 components); the held-out score of
each and the ratio of fit times.

- NCEDensity vs GaussianMixture (full covariances, components by BIC, 1 to
  10): iris, wine, breast cancer, diabetes (standardized halves), digits
  (dequantized, ``(X + U(0, 1)) / 17``), ``gauss8x4`` (four independent 2-D
  8gaussians side by side: 3000 training rows, 8 features, 8^4 modes) and
  ``fashion20`` (3000 Fashion-MNIST images, PCA to 20 features; needs the
  Debian package ``dataset-fashion-mnist``) and ``skewed5000x64`` (the
  size the fit-time budget names: 5000 training and 1000 held-out rows of
  64 features from ten Gaussian factors plus noise, every third column
  exponentiated), held-out nats per row;
- ``GridSearchCV(NCEDensity(), 6 candidates, cv=5, n_jobs=2)`` on wine;
- PCDRestrictedBoltzmann vs BernoulliRBM on digits / 16 (pseudo-likelihood),
  and with Gaussian visible units vs GaussianMixture on wine (held-out nats);
- ShortRunEBM vs GaussianMixture on moons (``--slow``: also digits images);
- NCESoftmaxClassifier vs LogisticRegression on digits / 16 (accuracy).

``--busy N`` keeps N other processes spinning through the whole run, as a
machine shared with other work.

Usage::

    python benchmarks/fit_times.py [--rows nce grid rbm shortrun classifier]
        [--tables iris wine ...] [--seed 0] [--busy 0] [--slow] [--device auto]
"""

import argparse
import gzip
import multiprocessing
import os
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits, load_iris,
                              load_wine, make_moons)
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import BernoulliRBM
from sklearn.preprocessing import StandardScaler

from skebm import NCEDensity, NCESoftmaxClassifier, PCDRestrictedBoltzmann, ShortRunEBM
from skebm._runtime import resolve_device
from skebm.datasets import make_toy_2d

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
LOADERS = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer,
           "diabetes": load_diabetes}
TABLES = ["iris", "wine", "breast_cancer", "diabetes", "digits", "gauss8x4", "fashion20",
          "skewed5000x64"]


def load_table(name, seed):
    """(train, test) halves, or None when the data is not installed."""
    if name == "digits":
        X = load_digits().data
        X = (X + np.random.default_rng(seed).uniform(size=X.shape)) / 17
        return train_test_split(X, test_size=0.5, random_state=seed)
    if name == "gauss8x4":
        X = np.hstack([make_toy_2d("8gaussians", 6000, random_state=10 * seed + i)
                       for i in range(4)])
        return X[:3000], X[3000:]
    if name == "skewed5000x64":
        rng = np.random.default_rng(seed)
        factors, loadings = rng.normal(size=(6000, 10)), rng.normal(size=(10, 64))
        X = factors @ loadings / np.sqrt(10) + 0.5 * rng.normal(size=(6000, 64))
        X[:, ::3] = np.exp(X[:, ::3])
        return X[:5000], X[5000:]
    if name == "fashion20":
        if not os.path.exists(FASHION):
            print(f"fashion20 skipped: {FASHION} not found (apt-get install dataset-fashion-mnist)")
            return None
        with gzip.open(FASHION, "rb") as f:
            images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
        rows = np.random.default_rng(seed).choice(len(images), 6000, replace=False)
        train, test = train_test_split(images[rows] / 255.0, test_size=0.5, random_state=seed)
        pca = PCA(20, random_state=seed).fit(train)
        return pca.transform(train), pca.transform(test)
    train, test = train_test_split(LOADERS[name]().data, test_size=0.5, random_state=seed)
    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


def gmm_bic(X, seed):
    """GaussianMixture with 1 to 10 full-covariance components, the best BIC."""
    models = [GaussianMixture(k, covariance_type="full", random_state=seed).fit(X)
              for k in range(1, 11) if k <= len(X) // 2]
    return min(models, key=lambda model: model.bic(X))


def timed(fit):
    start = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - start


def row(name, ours, ours_time, peer, peer_time, ours_score, peer_score, digits=2):
    print(f"| {name} | {ours} | {ours_time:.1f} | {ours_score:.{digits}f} | {peer} | "
          f"{peer_time:.2f} | {peer_score:.{digits}f} | {ours_time / peer_time:.1f}x |",
          flush=True)


def nce_rows(tables, seed):
    for name in tables:
        halves = load_table(name, seed)
        if halves is None:
            continue
        train, test = halves
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            ours, ours_time = timed(
                lambda: NCEDensity(random_state=seed, device=DEVICE).fit(train))
        # max_iter ran out before early stopping ended the fit:
        cut = any(issubclass(w.category, ConvergenceWarning) for w in caught)
        peer, peer_time = timed(lambda: gmm_bic(train, seed))
        row(f"{name} {train.shape[0]}x{train.shape[1]}",
            "NCEDensity()" + (" (max_iter reached)" if cut else ""), ours_time,
            "GaussianMixture (BIC)", peer_time, ours.score(test), peer.score(test))


def grid_row(seed):
    train, test = load_table("wine", seed)
    grid = {"hidden_layer_sizes": [(64,), (128, 128, 128)], "noise_ratio": [4, 8, 16]}
    search, search_time = timed(lambda: GridSearchCV(NCEDensity(random_state=seed,
                                                                device=DEVICE), grid, cv=5,
                                                     n_jobs=2).fit(train))
    peer_grid = {"n_components": list(range(1, 7))}
    peer, peer_time = timed(lambda: GridSearchCV(
        GaussianMixture(covariance_type="full", random_state=seed), peer_grid, cv=5,
        n_jobs=2).fit(train))
    row("wine, GridSearchCV 6 candidates, cv=5, n_jobs=2", "NCEDensity()", search_time,
        "GaussianMixture", peer_time, search.score(test), peer.score(test))


def rbm_row(seed):
    X = load_digits().data / 16
    train, test = train_test_split(X, test_size=0.2, random_state=seed)
    ours, ours_time = timed(
        lambda: PCDRestrictedBoltzmann(random_state=seed, device=DEVICE).fit(train))
    peer, peer_time = timed(lambda: BernoulliRBM(random_state=seed).fit(train))
    peer_score = np.mean([peer.score_samples(test) for _ in range(20)])  # it is random
    row("digits/16 1437x64 (pseudo-likelihood)", "PCDRestrictedBoltzmann()", ours_time,
        "BernoulliRBM()", peer_time, ours.pseudo_likelihood(test).mean(), peer_score)
    train, test = load_table("wine", seed)
    ours, ours_time = timed(lambda: PCDRestrictedBoltzmann(
        visible_units="gaussian", random_state=seed, device=DEVICE).fit(train))
    peer, peer_time = timed(lambda: gmm_bic(train, seed))
    row("wine 89x13", 'PCDRestrictedBoltzmann(visible_units="gaussian")', ours_time,
        "GaussianMixture (BIC)", peer_time, ours.score(test), peer.score(test))


def shortrun_rows(seed, slow):
    X, _ = make_moons(5000, noise=0.1, random_state=seed)
    train, test = X[:2500], X[2500:]
    ours, ours_time = timed(lambda: ShortRunEBM(random_state=seed, device=DEVICE).fit(train))
    peer, peer_time = timed(lambda: gmm_bic(train, seed))
    row("moons 2500x2", "ShortRunEBM()", ours_time, "GaussianMixture (BIC)", peer_time,
        ours.score(test), peer.score(test))
    if slow:
        train, test = load_table("digits", seed)
        ours, ours_time = timed(lambda: ShortRunEBM(image_shape=(1, 8, 8), random_state=seed,
                                                    device=DEVICE).fit(train))
        peer, peer_time = timed(lambda: gmm_bic(train, seed))
        row("digits images 898x64", "ShortRunEBM(image_shape=(1, 8, 8))", ours_time,
            "GaussianMixture (BIC)", peer_time, ours.score(test), peer.score(test))


def classifier_row(seed):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16, y, test_size=0.2,
                                                        random_state=seed)
    ours, ours_time = timed(lambda: NCESoftmaxClassifier(random_state=seed, device=DEVICE).fit(
        X_train, y_train))
    peer, peer_time = timed(lambda: LogisticRegression().fit(X_train, y_train))
    row("digits/16 1437x64, 10 classes (accuracy)", "NCESoftmaxClassifier()", ours_time,
        "LogisticRegression()", peer_time, ours.score(X_test, y_test),
        peer.score(X_test, y_test), digits=3)


def spin():
    while True:
        pass


#: The skebm estimators' ``device`` (``--device``): "auto" as users run
#: them; "cpu" on a GPU machine times the same fits on its host's cores.
DEVICE = "auto"


def device_name():
    """Where the skebm fits run: the GPU's name, or the device's."""
    device = resolve_device(DEVICE)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+",
                        default=["nce", "grid", "rbm", "shortrun", "classifier"])
    parser.add_argument("--tables", nargs="+", default=TABLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--busy", type=int, default=0, help="processes kept spinning meanwhile")
    parser.add_argument("--slow", action="store_true", help="also ShortRunEBM on digit images")
    parser.add_argument("--device", default="auto", help="the skebm estimators' device")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {args.busy} busy processes "
          f"beside, seed {args.seed}, device {device_name()}\n")
    print("| data | skebm | fit s | held-out | peer | fit s | held-out | time ratio |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        if "nce" in args.rows:
            nce_rows(args.tables, args.seed)
        if "grid" in args.rows:
            grid_row(args.seed)
        if "rbm" in args.rows:
            rbm_row(args.seed)
        if "shortrun" in args.rows:
            shortrun_rows(args.seed, args.slow)
        if "classifier" in args.rows:
            classifier_row(args.seed)
    finally:
        for spinner in spinners:
            spinner.terminate()


if __name__ == "__main__":
    main()
