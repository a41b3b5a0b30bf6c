"""Tune NCEDensity with GridSearchCV: selection by held-out log-likelihood.

``NCEDensity.score`` is the mean normalized log-likelihood, so GridSearchCV
and cross_val_score compare real likelihoods, exactly as they do for
KernelDensity or GaussianMixture. Here a small grid over the network size and
the noise ratio is searched on the rings data (four thin concentric circles,
where the network's size matters) with 3-fold cross-validation, and the winner
is scored on held-out data.

Run: python examples/grid_search.py   (about a minute on 2 CPU cores)
"""

from sklearn.model_selection import GridSearchCV

from skebm import NCEDensity
from skebm.datasets import make_toy_2d

X = make_toy_2d("rings", 3000, random_state=0)
X_train, X_test = X[:1500], X[1500:]

search = GridSearchCV(
    NCEDensity(random_state=0),
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
