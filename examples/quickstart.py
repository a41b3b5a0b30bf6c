"""Quickstart: NCEDensity on the 8gaussians toy data
=====================================================

Fits NCEDensity, KernelDensity (bandwidth by cross-validation) and
GaussianMixture (components by BIC) on the same 2500 points, prints each one's
held-out log-likelihood beside the true density's, and draws the data, the
learned density and samples from it.

Run: ``python examples/quickstart.py [quickstart.png]`` (the picture is
written when a file name is given). About 16 s on 2 CPU cores
(measured under ``nice`` beside another process, OpenBLAS on one thread); with
``SKEBM_FAST_EXAMPLES=1`` (the documentation build) a quarter of the points,
a base of at most 8 mixture components and at most 10 epochs.
"""

import os
import sys
import time

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from skebm import NCEDensity
from skebm.datasets import eight_gaussians_log_density, make_toy_2d
from skebm.plotting import plot_density_2d

FAST = os.environ.get("SKEBM_FAST_EXAMPLES") == "1"
n_points, max_iter, base_components = (1250, 10, 8) if FAST else (5000, 100, 32)
print(f"{n_points} points, at most {max_iter} epochs, base_components={base_components}"
      + (" (SKEBM_FAST_EXAMPLES=1)" if FAST else ""))
X = make_toy_2d("8gaussians", n_points, random_state=0)
X_train, X_test = X[: n_points // 2], X[n_points // 2:]

start = time.perf_counter()
nce = NCEDensity(max_iter=max_iter, base_components=base_components,
                 random_state=0).fit(X_train)
print(f"NCEDensity fitted in {time.perf_counter() - start:.1f} s "
      f"(log Z = {nce.log_partition_:.3f} +- {nce.log_partition_std_:.3f})")

kde = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-2, 0, 20)}, cv=5).fit(X_train)
gmm = min((GaussianMixture(k, random_state=0).fit(X_train) for k in range(1, 16)),
          key=lambda model: model.bic(X_train))

print("held-out log-likelihood per point (higher is better)")
print(f"  true density          {eight_gaussians_log_density(X_test).mean():.3f}")
print(f"  NCEDensity            {nce.score(X_test):.3f}")
print(f"  KernelDensity (CV)    {kde.score(X_test) / len(X_test):.3f}")
print(f"  GaussianMixture (BIC) {gmm.score(X_test):.3f}  ({gmm.n_components} components)")

# %%
# The data, the learned density (in the data's units) and samples from it.
figure = plot_density_2d(nce, X_train)
if sys.argv[1:]:
    figure.savefig(sys.argv[1], dpi=100)
