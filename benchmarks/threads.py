"""How many torch threads should skebm use? The thread policy, case by case.

skebm's default (``n_threads=None``) picks one thread for steps under
``skebm._runtime.PARALLEL_WORK`` multiply-adds, else the idle cores within the
limit the environment sets (see ``skebm._runtime.cpu_threads``). This script
times that default against forcing 1 and 2 threads, in one process, for:

1. a lone fit on idle cores, small and large models;
2. the same fits beside a busy process (a second process spinning on one core);
3. ``GridSearchCV(NCEDensity(), n_jobs=1, 2, -1)`` with default settings;
4. the limits set from outside: the threads torch has in a joblib (loky)
   worker, under ``OMP_NUM_THREADS=1`` and under ``threadpoolctl``.

Fashion-MNIST rows come from the Debian package ``dataset-fashion-mnist``;
without it the Fashion case is skipped. About 8 minutes on 2 cores.

Usage: python benchmarks/threads.py [--sections fits grid limits] [--oversubscribed]
"""

import argparse
import gzip
import multiprocessing
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_limits

from skebm import NCEDensity, PCDRestrictedBoltzmann
from skebm._runtime import PARALLEL_WORK, idle_cores
from skebm.datasets import make_toy_2d

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
TOY = make_toy_2d("8gaussians", 2500, random_state=0)
DIGITS = load_digits().data / 16


def fashion_rows(n):
    if not os.path.exists(FASHION):
        return None
    with gzip.open(FASHION) as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 784)[:n] / 255.0


CASES = [
    ("RBM digits, batch 10, 256 hidden, 20 epochs (README)",
     lambda n: PCDRestrictedBoltzmann(256, learning_rate=0.06, batch_size=10, n_iter=20,
                                      random_state=0, n_threads=n), DIGITS),
    ("RBM digits, batch 100, 256 hidden, 60 epochs",
     lambda n: PCDRestrictedBoltzmann(256, learning_rate=0.06, batch_size=100, n_iter=60,
                                      random_state=0, n_threads=n), DIGITS),
    ("RBM Fashion 10k, batch 100, 500 hidden, 2 epochs",
     lambda n: PCDRestrictedBoltzmann(500, learning_rate=0.05, batch_size=100, n_iter=2,
                                      random_state=0, n_threads=n), fashion_rows(10000)),
    ("NCEDensity (32, 32), 16 Fourier, 8gaussians, 20 epochs",
     lambda n: NCEDensity(hidden_layer_sizes=(32, 32), fourier_features=16, max_iter=20,
                          early_stopping=False, random_state=0, n_threads=n), TOY),
    ("NCEDensity default, 8gaussians, 20 epochs",
     lambda n: NCEDensity(max_iter=20, early_stopping=False, random_state=0, n_threads=n), TOY),
]


def timed_fit(make, X, n_threads):
    start = time.perf_counter()
    make(n_threads).fit(X)
    return time.perf_counter() - start


def chosen_threads(make, X):
    model = make(None)
    return model._cpu_threads(model._multiply_adds_per_step(X.shape[1], {}), torch.device("cpu"))


def fit_table(title):
    """Each case: one warm-up fit, then the three settings twice, interleaved;
    the faster of each pair counts."""
    print(f"\n### {title}\n")
    print("| model | work per step | default picks | default | 1 thread | 2 threads |")
    print("|---|---|---|---|---|---|")
    for name, make, X in CASES:
        if X is None:
            print(f"| {name} | skipped: no Fashion-MNIST | | | | |")
            continue
        timed_fit(make, X, 1)
        picks = chosen_threads(make, X)
        times = {}
        for _ in range(2):
            for n in (None, 1, 2):
                times[n] = min(times.get(n, np.inf), timed_fit(make, X, n))
        work = make(None)._multiply_adds_per_step(X.shape[1], {})
        print(f"| {name} | {work / 1e6:.1f} M | {picks} | {times[None]:.2f} s | "
              f"{times[1]:.2f} s ({times[1] / times[None]:.2f}x) | "
              f"{times[2]:.2f} s ({times[2] / times[None]:.2f}x) |")


def grid_search_table(oversubscribed):
    """Default NCEDensity (100 epochs at most, early stopping), 4 candidates,
    GridSearchCV's default 5 folds. The first parallel search pays for starting joblib's worker
    processes (each imports torch), as a user's first search does; the
    later ones reuse them."""
    grid = {"hidden_layer_sizes": [(64, 64), (128, 128, 128)], "noise_ratio": [4, 8]}
    print("\n### GridSearchCV(NCEDensity(), 4 candidates, default 5-fold CV on 8gaussians): "
          "20 fits and a refit\n")
    print("| n_jobs | n_threads | workers | time | speed vs n_jobs=1 |")
    print("|---|---|---|---|---|")
    runs = [(2, None, "started by this search"), (1, None, "-"),
            (2, None, "already running"), (-1, None, "already running")]
    if oversubscribed:  # two threads in each of two workers: 11 minutes here
        runs.append((2, 2, "already running"))
    times = {}
    for n_jobs, n_threads, workers in runs:
        search = GridSearchCV(NCEDensity(random_state=0, n_threads=n_threads), grid,
                              n_jobs=n_jobs)
        start = time.perf_counter()
        search.fit(TOY)
        times[n_jobs, n_threads, workers] = time.perf_counter() - start
    serial = times[1, None, "-"]
    for (n_jobs, n_threads, workers), seconds in times.items():
        print(f"| {n_jobs} | {n_threads or 'default'} | {workers} | {seconds:.1f} s | "
              f"{serial / seconds:.2f}x |")


def torch_threads_in_worker():
    import torch as worker_torch

    return worker_torch.get_num_threads()


def limits_table():
    print("\n### Limits set from outside: threads torch has, hence the most skebm uses\n")
    print("| setting | torch.get_num_threads() |")
    print("|---|---|")
    print(f"| this process | {torch.get_num_threads()} |")
    with threadpool_limits(1):
        print(f"| inside threadpoolctl.threadpool_limits(1) | {torch.get_num_threads()} |")
    workers = Parallel(n_jobs=2)(delayed(torch_threads_in_worker)() for _ in range(2))
    print(f"| joblib (loky) worker, n_jobs=2 | {workers[0]} |")
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    print(f"| new process with OMP_NUM_THREADS=1 | {out.stdout.strip()} |")


def spin(seconds):
    end = time.time() + seconds
    while time.time() < end:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["fits", "grid", "limits"],
                        choices=["fits", "grid", "limits"])
    parser.add_argument("--oversubscribed", action="store_true",
                        help="add the grid search with n_threads=2 in each worker (slow)")
    args = parser.parse_args()
    sections = args.sections
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"PARALLEL_WORK = {PARALLEL_WORK / 1e6:.0f} M multiply-adds per step; "
          f"idle cores now: {idle_cores()}")
    if "fits" in sections:
        fit_table("A lone fit on idle cores")
        busy = multiprocessing.Process(target=spin, args=(600,), daemon=True)
        busy.start()
        time.sleep(1.0)
        try:
            fit_table(f"Beside a busy process (idle cores seen: {idle_cores()})")
        finally:
            busy.terminate()
            busy.join()
        time.sleep(1.0)
    if "grid" in sections:
        grid_search_table(args.oversubscribed)
    if "limits" in sections:
        limits_table()


if __name__ == "__main__":
    main()
