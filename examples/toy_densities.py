"""NCEDensity on six toy 2-D densities
======================================

One row per data set: the data, the learned density and samples from the
fitted model, with default parameters.

Run from the repository root: ``python examples/toy_densities.py
[docs/toy_densities.png]`` (the picture is written when a file name is
given; that command refreshes the picture in ``docs/``). About two minutes on 2 idle
CPU cores (110 s of CPU time, measured under ``nice`` beside busy
processes; NCEDensity trains these on one thread); with
``SKEBM_FAST_EXAMPLES=1`` (the documentation build) 400 points, a base of at
most 8 mixture components and 5 epochs per data set.
"""

import os
import sys

import matplotlib.pyplot as plt

from skebm import NCEDensity
from skebm.datasets import make_toy_2d
from skebm.plotting import plot_density_2d

FAST = os.environ.get("SKEBM_FAST_EXAMPLES") == "1"
n_points, max_iter, base_components = (400, 5, 8) if FAST else (2500, 100, 32)
print(f"{n_points} points, at most {max_iter} epochs, base_components={base_components}"
      + (" (SKEBM_FAST_EXAMPLES=1)" if FAST else ""))
NAMES = ["8gaussians", "checkerboard", "2spirals", "rings", "pinwheel", "moons"]

figure, axes = plt.subplots(len(NAMES), 3, figsize=(10, 3 * len(NAMES)))
for row, name in zip(axes, NAMES):
    X = make_toy_2d(name, n_points, random_state=0)
    model = NCEDensity(max_iter=max_iter, base_components=base_components,
                       random_state=0).fit(X)
    plot_density_2d(model, X, axes=row)
    row[0].set_ylabel(name)
    print(f"{name:13s} log-likelihood {model.score(X):.3f} (training data), {model.n_iter_} epochs")
figure.tight_layout()
if sys.argv[1:]:
    figure.savefig(sys.argv[1], dpi=80)
