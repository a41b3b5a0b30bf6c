"""Tune NCEDensity with GridSearchCV
===================================

Selection by held-out log-likelihood.

``NCEDensity.score`` is the mean normalized log-likelihood, so GridSearchCV
and cross_val_score compare real likelihoods, exactly as they do for
KernelDensity or GaussianMixture. Here a small grid over the network size and
the noise ratio is searched on the rings data (four thin concentric circles,
where the network's size matters) with 3-fold cross-validation, and the winner
is scored on held-out data.

Run: ``python examples/grid_search.py`` (the picture needs matplotlib,
``pip install "skebm[plot]"``). About a minute and a half on 2 idle CPU
cores (172 s of CPU time over the two workers, measured under ``nice``
beside busy processes); with ``SKEBM_FAST_EXAMPLES=1`` (the
documentation build) 400 rows, a base of at most 4 mixture components and 3
epochs per fit.
"""

import os

from sklearn.model_selection import GridSearchCV

from skebm import NCEDensity
from skebm.datasets import make_toy_2d
from skebm.plotting import plot_density_2d

FAST = os.environ.get("SKEBM_FAST_EXAMPLES") == "1"
n_rows, max_iter, base_components = (400, 3, 4) if FAST else (3000, 100, 32)
print(f"{n_rows} rows, at most {max_iter} epochs per fit, base_components={base_components}"
      + (" (SKEBM_FAST_EXAMPLES=1)" if FAST else ""))
X = make_toy_2d("rings", n_rows, random_state=0)
X_train, X_test = X[: n_rows // 2], X[n_rows // 2:]

search = GridSearchCV(
    NCEDensity(max_iter=max_iter, base_components=base_components, random_state=0),
    {"hidden_layer_sizes": [(16,), (128, 128, 128)], "noise_ratio": [1, 8]},
    cv=3,
    n_jobs=2,  # NCEDensity uses one torch thread by default, so workers do not fight
)
search.fit(X_train)

print("mean held-out log-likelihood per point, by candidate (3-fold CV):")
for params, score in sorted(
    zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]),
    key=lambda item: -item[1],
):
    print(f"  {score:8.3f}  {params}")
print(f"best: {search.best_params_}")
print(f"held-out log-likelihood of the refitted best model: {search.score(X_test):.3f}")

# %%
# The refitted best model: the training data, its density and samples from it.
figure = plot_density_2d(search.best_estimator_, X_train)
