"""Quickstart: NCEDensity on the 8gaussians toy data.

Fits NCEDensity, KernelDensity (bandwidth by cross-validation) and
GaussianMixture (components by BIC) on the same 2500 points, prints each one's
held-out log-likelihood beside the true density's, and writes
``quickstart.png``: the data, the learned density and samples from it.

Run: python examples/quickstart.py
"""

import time

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from skebm import NCEDensity
from skebm.datasets import eight_gaussians_log_density, make_toy_2d
from skebm.plotting import plot_density_2d

X = make_toy_2d("8gaussians", 5000, random_state=0)
X_train, X_test = X[:2500], X[2500:]

start = time.perf_counter()
nce = NCEDensity(random_state=0).fit(X_train)
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

figure = plot_density_2d(nce, X_train)
figure.savefig("quickstart.png", dpi=100)
print("wrote quickstart.png")
