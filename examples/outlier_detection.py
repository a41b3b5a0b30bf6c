"""Novelty detection on digits from a density
=============================================

A density flags the rows it finds unlikely. ``DensityOutlierDetector`` wraps
any estimator with ``score_samples`` (skebm's densities and scikit-learn's)
in scikit-learn's outlier-detector API: ``predict`` gives +1 (inlier) or -1
(outlier), ``decision_function`` is the log-density minus the threshold
``offset_``, set so that a share ``contamination`` of the training rows falls
below it.

Here the densities learn digits 0-4 and meet 5-9 for the first time: the
ROC AUC says how well their log-densities tell the two apart, beside
``IsolationForest``. Digits are dequantized first, ``(X + U(0, 1)) / 17``, so
that every feature is continuous (``benchmarks/outlier_digits.py`` has the
full comparison).

Run: ``python examples/outlier_detection.py``. About two minutes on 2 CPU
cores: NCEDensity's fit is most of it (103-147 s under ``nice`` beside other
processes in ``benchmarks/RESULTS.md``'s novelty run); with
``SKEBM_FAST_EXAMPLES=1`` (the documentation build) NCEDensity's base is a
single Gaussian on the standardized features and it trains 3 epochs.
"""

import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

from skebm import DensityOutlierDetector, NCEDensity
from skebm.plotting import plot_samples_grid

FAST = os.environ.get("SKEBM_FAST_EXAMPLES") == "1"
nce_params = dict(base="gaussian", marginals="none", max_iter=3) if FAST else {}
print(f"NCEDensity({nce_params})" + (" (SKEBM_FAST_EXAMPLES=1)" if FAST else ""))

X, digit = load_digits(return_X_y=True)
X = (X + np.random.default_rng(0).uniform(size=X.shape)) / 17
train_rows, held_out_rows = train_test_split(np.flatnonzero(digit < 5), test_size=0.5,
                                             random_state=0)
train = X[train_rows]
scored_rows = np.r_[held_out_rows, np.flatnonzero(digit >= 5)]
scored, is_novelty = X[scored_rows], (digit[scored_rows] >= 5).astype(int)

detectors = {
    "NCEDensity": DensityOutlierDetector(NCEDensity(random_state=0, **nce_params),
                                         contamination=0.05),
    "GaussianMixture(4)": DensityOutlierDetector(GaussianMixture(4, random_state=0),
                                                 contamination=0.05),
    "IsolationForest": IsolationForest(contamination=0.05, random_state=0),
}
for name, detector in detectors.items():
    detector.fit(train)
    flagged = detector.predict(scored) == -1
    print(f"{name:18s} ROC AUC {roc_auc_score(is_novelty, -detector.score_samples(scored)):.3f}, "
          f"flags {flagged[is_novelty == 0].mean():.0%} of held-out 0-4 and "
          f"{flagged[is_novelty == 1].mean():.0%} of 5-9")

# %%
# The held-out rows NCEDensity finds most normal (top) and least normal
# (bottom): the least normal are mostly novelties, and the inliers among them
# are oddly drawn.
detector = detectors["NCEDensity"]
order = np.argsort(detector.decision_function(scored))
plot_samples_grid(scored[order[::-1][:24]], image_shape=(8, 8), n_cols=12,
                  title="most normal", vmin=0, vmax=1)
plot_samples_grid(scored[order[:24]], image_shape=(8, 8), n_cols=12,
                  title="least normal", vmin=0, vmax=1)
print("digits of the least normal 24:", digit[scored_rows[order[:24]]])
