"""Plots for fitted density models (needs the ``plot`` extra: matplotlib)."""

import numpy as np

__all__ = ["plot_density_2d", "plot_training_curve"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("skebm.plotting needs matplotlib: pip install 'skebm[plot]'") from exc
    return plt


def plot_density_2d(model, X, *, n_samples=2000, resolution=200, random_state=0, axes=None):
    """Three panels: the data, the learned density, and samples from the model.

    Parameters
    ----------
    model : fitted estimator with ``score_samples`` and ``sample``
        Trained on 2-D data.
    X : array-like of shape (n_samples, 2)
        Data to show (and to size the plotting window).
    n_samples : int, default=2000
        Number of model samples to draw.
    resolution : int, default=200
        Grid points per axis for the density panel.
    random_state : int, default=0
        Seed of the model samples.
    axes : sequence of 3 matplotlib axes, optional
        Where to draw; a new figure is made otherwise.

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    plt = _pyplot()
    X = np.asarray(X, dtype=np.float64)
    if axes is None:
        figure, axes = plt.subplots(1, 3, figsize=(12, 4))
    else:
        figure = axes[0].figure
    low, high = X.min(axis=0), X.max(axis=0)
    pad = 0.1 * (high - low)
    low, high = low - pad, high + pad
    xs = np.linspace(low[0], high[0], resolution)
    ys = np.linspace(low[1], high[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    density = np.exp(model.score_samples(grid)).reshape(resolution, resolution)
    samples = model.sample(n_samples, random_state=random_state)

    axes[0].scatter(X[:, 0], X[:, 1], s=1, alpha=0.5)
    axes[0].set_title("data")
    axes[1].imshow(density, origin="lower", extent=(low[0], high[0], low[1], high[1]),
                   aspect="auto", cmap="viridis")
    axes[1].set_title("learned density")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5, color="C1")
    axes[2].set_title("samples")
    for ax in axes:
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_xticks([])
        ax.set_yticks([])
    figure.tight_layout()
    return figure


def plot_training_curve(model, *, ax=None):
    """Training loss (and validation score, if any) per epoch from ``history_``.

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    plt = _pyplot()
    if ax is None:
        figure, ax = plt.subplots(figsize=(5, 3.5))
    else:
        figure = ax.figure
    epochs = [record["epoch"] for record in model.history_]
    ax.plot(epochs, [record["loss"] for record in model.history_], label="training loss")
    if model.history_ and "validation_score" in model.history_[0]:
        ax.plot(epochs, [-record["validation_score"] for record in model.history_],
                label="validation loss")
    ax.set_xlabel("epoch")
    ax.legend()
    figure.tight_layout()
    return figure
