"""How many torch threads should a small skebm model use on a 2-core CPU?

Times the same NCEDensity fit (8gaussians, 2500 points, default model, 30
epochs) with ``n_threads`` = 1 and 2, alone and as two parallel joblib
workers (what ``GridSearchCV(n_jobs=2)`` does), all in one run.

Usage: python benchmarks/threads.py
"""

import time

from joblib import Parallel, delayed

from skebm import NCEDensity
from skebm.datasets import make_toy_2d

X = make_toy_2d("8gaussians", 2500, random_state=0)


def fit(n_threads):
    start = time.perf_counter()
    NCEDensity(max_iter=30, random_state=0, n_threads=n_threads).fit(X)
    return time.perf_counter() - start


print("| setting | n_threads=1 | n_threads=2 | ratio 2/1 |")
print("|---|---|---|---|")
alone = {n: fit(n) for n in (1, 2)}
print(f"| one fit | {alone[1]:.1f} s | {alone[2]:.1f} s | {alone[2] / alone[1]:.2f} |")
parallel = {}
for n in (1, 2):
    start = time.perf_counter()
    Parallel(n_jobs=2)(delayed(fit)(n) for _ in range(2))
    parallel[n] = time.perf_counter() - start
print(f"| two fits, joblib n_jobs=2 | {parallel[1]:.1f} s | {parallel[2]:.1f} s | "
      f"{parallel[2] / parallel[1]:.2f} |")
