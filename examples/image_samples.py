"""Digits drawn and completed by ShortRunEBM and PCDRestrictedBoltzmann
======================================================================

Two energy-based models of 8x8 digit images (grey levels in [0, 1]):
``ShortRunEBM`` with a small convolutional energy (``image_shape=(1, 8, 8)``)
trained by short-run Langevin, and ``PCDRestrictedBoltzmann`` trained by
persistent contrastive divergence. Both draw new images (``sample``) and
complete images whose lower half was erased (``sample_conditional``, the
known pixels kept exactly).

Run: ``python examples/image_samples.py``. About a minute and a half on 2
idle CPU cores: ShortRunEBM's fit on half of digits is most of it (81-83 s
in ``benchmarks/RESULTS.md``, issue 8); the rest takes seconds. With
``SKEBM_FAST_EXAMPLES=1`` (the documentation build) 500 training images,
one epoch for ShortRunEBM and 3 for the RBM, and 50 sampling steps, so the
pictures are rougher.
"""

import os

import numpy as np
from sklearn.datasets import load_digits

from skebm import PCDRestrictedBoltzmann, ShortRunEBM
from skebm.plotting import plot_inpainting, plot_samples_grid

FAST = os.environ.get("SKEBM_FAST_EXAMPLES") == "1"
n_train, ebm_epochs, rbm_epochs, n_steps = (500, 1, 3, 50) if FAST else (898, 100, 50, None)
print(f"{n_train} images; ShortRunEBM: at most {ebm_epochs} epochs, RBM: {rbm_epochs}"
      + (" (SKEBM_FAST_EXAMPLES=1)" if FAST else ""))

X = load_digits().data / 16
order = np.random.default_rng(0).permutation(len(X))
train, test = X[order[:n_train]], X[order[898:]]
steps = {} if n_steps is None else {"n_steps": n_steps}  # else each method's default

ebm = ShortRunEBM(image_shape=(1, 8, 8), max_iter=ebm_epochs, random_state=0).fit(train)
rbm = PCDRestrictedBoltzmann(n_components=256, learning_rate=0.05, n_iter=rbm_epochs,
                             random_state=0).fit(train)

# %%
# New digits from each model.
ebm_figure = plot_samples_grid(ebm.sample(64, random_state=0, **steps), image_shape=(1, 8, 8),
                               title="ShortRunEBM samples", vmin=0, vmax=1)
rbm_figure = plot_samples_grid(rbm.sample(64, random_state=0, **steps), image_shape=(1, 8, 8),
                               title="PCDRestrictedBoltzmann samples", vmin=0, vmax=1)

# %%
# Inpainting: the lower half of held-out digits (red in the second line) is
# drawn given the upper half.
rows = test[:12]
mask = np.zeros_like(rows, dtype=bool)
mask[:, 32:] = True
inpainting_figure = plot_inpainting(rows, mask, {
    "ShortRunEBM": ebm.sample_conditional(rows, mask, random_state=0, **steps),
    "RBM": rbm.sample_conditional(rows, mask, random_state=0, **steps)}, image_shape=(1, 8, 8))
