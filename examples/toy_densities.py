"""NCEDensity on six toy 2-D densities: data, learned density, samples.

Writes ``toy_densities.png`` (one row per data set). About two minutes on 2
CPU cores.

Run: python examples/toy_densities.py
"""

import matplotlib.pyplot as plt

from skebm import NCEDensity
from skebm.datasets import make_toy_2d
from skebm.plotting import plot_density_2d

NAMES = ["8gaussians", "checkerboard", "2spirals", "rings", "pinwheel", "moons"]

figure, axes = plt.subplots(len(NAMES), 3, figsize=(9, 3 * len(NAMES)))
for row, name in zip(axes, NAMES):
    X = make_toy_2d(name, 2500, random_state=0)
    model = NCEDensity(random_state=0).fit(X)
    plot_density_2d(model, X, axes=row)
    row[0].set_ylabel(name)
    print(f"{name:13s} log-likelihood {model.score(X):.3f} (training data), {model.n_iter_} epochs")
figure.tight_layout()
figure.savefig("toy_densities.png", dpi=80)
print("wrote toy_densities.png")
