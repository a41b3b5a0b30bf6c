"""Which of n_steps, step_size and learning_rate matters most for a short-run EBM?
==================================================================================

EBMs trained with short-run MCMC are known to be sensitive to the sampler's
settings and the optimizer's (Nijkamp et al. 2020; the energy_models
master's thesis, University of Chicago, studied the same question on
images). Because ``ShortRunEBM.score`` is a normalized held-out
log-likelihood, scikit-learn's ``GridSearchCV`` answers it directly: fit
every combination with 3-fold cross-validation on the 2-D 8gaussians data
and read, for each parameter, how far apart the mean scores of its values
lie (the spread of its marginal means). A fit that diverges is recorded as
NaN (``ConvergenceDivergedError`` is a ``ValueError``) and counted as the
worst score.

``step_size="auto"`` (the default) adapts the step to the data during
training; it is in the grid beside fixed steps. The fits use
``base="gaussian"``: on 8gaussians the default mixture base already fits
the data, and the energy, whose training these settings steer, would
barely move.

Run from the repository root: ``python examples/shortrun_grid_search.py``
(the picture needs matplotlib, ``pip install "skebm[plot]"``).
About 7 minutes on 2 idle CPU cores (873 s of CPU time over the two workers,
measured under ``nice`` beside busy processes); with
``SKEBM_FAST_EXAMPLES=1`` (the documentation build) 400 points, one epoch
per fit, 2 folds and a grid of 2 x 2 x 2, which ranks nothing: it shows the
method, not the answer.
"""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from skebm import ShortRunEBM
from skebm.datasets import make_toy_2d

FAST = os.environ.get("SKEBM_FAST_EXAMPLES") == "1"
n_points, max_iter, cv = (400, 1, 2) if FAST else (2000, 15, 3)
print(f"{n_points} points, {max_iter} epochs per fit, {cv} folds"
      + (" (SKEBM_FAST_EXAMPLES=1)" if FAST else ""))
X = make_toy_2d("8gaussians", n_points, random_state=0)
grid = {
    "n_steps": [10, 30],
    "step_size": [0.001, 0.005, 0.02, "auto"],
    "learning_rate": [3e-4, 1e-3, 3e-3],
}
if FAST:
    grid = {"n_steps": [10, 30], "step_size": [0.005, "auto"], "learning_rate": [1e-3, 3e-3]}
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # read history_ instead
    search = GridSearchCV(ShortRunEBM(base="gaussian", max_iter=max_iter, random_state=0),
                          grid, cv=cv, n_jobs=2).fit(X)

params = search.cv_results_["params"]
scores = search.cv_results_["mean_test_score"]
scores = np.nan_to_num(scores, nan=np.nanmin(scores))
for index in np.argsort(-scores):
    print(f"{scores[index]:8.3f}  {params[index]}")
print(f"\nbest: {search.best_params_}, held-out {search.best_score_:.3f} nats per point")
print("\nspread of the marginal mean scores (larger: the parameter matters more)")
figure, axes = plt.subplots(1, len(grid), figsize=(9, 2.8), sharey=True)
for ax, (name, values) in zip(axes, grid.items()):
    means = {value: scores[[p[name] == value for p in params]].mean() for value in values}
    print(f"  {name:>13}: {max(means.values()) - min(means.values()):.3f} nats ("
          + ", ".join(f"{value}: {score:.3f}" for value, score in means.items()) + ")")
    ax.plot(range(len(values)), list(means.values()), "o-")
    ax.set_xticks(range(len(values)), [str(value) for value in values])
    ax.set_xlabel(name)
axes[0].set_ylabel("mean CV score (nats per point)")
figure.suptitle("marginal mean held-out log-likelihood of each parameter's values")
figure.tight_layout()
