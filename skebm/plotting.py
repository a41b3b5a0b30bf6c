"""Plots for fitted density models (needs the ``plot`` extra: matplotlib).

Every function draws with :mod:`matplotlib.pyplot` under whatever backend
is in use (skebm never chooses one) and returns the
:class:`~matplotlib.figure.Figure`, to show or to ``savefig``.
"""

import numpy as np

__all__ = ["plot_density_2d", "plot_inpainting", "plot_samples_grid", "plot_training_curve"]

# Colour of the hidden pixels in the "known part" of an inpainting picture.
_HIDDEN_COLOUR = (0.85, 0.33, 0.31)


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("skebm.plotting needs matplotlib: pip install 'skebm[plot]'") from exc
    return plt


def plot_density_2d(model, X, *, n_samples=2000, resolution=200, random_state=0, axes=None):
    """Three panels: the data, the learned density, and samples from the model.

    All three share the data's axes and units; the density panel has a
    colour bar of ``exp(score_samples)``.

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
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_density_2d needs 2 features; X has shape {X.shape}.")
    new_figure = axes is None
    if new_figure:
        figure, axes = plt.subplots(1, 3, figsize=(13, 4))
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
    names = getattr(model, "feature_names_in_", ["feature 0", "feature 1"])

    axes[0].scatter(X[:, 0], X[:, 1], s=1, alpha=0.5)
    axes[0].set_title("data")
    image = axes[1].imshow(density, origin="lower", extent=(low[0], high[0], low[1], high[1]),
                           aspect="auto", cmap="viridis")
    figure.colorbar(image, ax=axes[1], label="density")
    axes[1].set_title("learned density")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5, color="C1")
    axes[2].set_title("samples")
    for ax in axes:
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_xlabel(names[0])
    axes[0].set_ylabel(names[1])
    if new_figure:
        figure.tight_layout()
    return figure


def _as_images(X, image_shape):
    """Rows of X as an array of images (n, H, W) or (n, H, W, 3)."""
    X = np.asarray(X, dtype=np.float64)
    shape = tuple(image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"image_shape must be (height, width) or (channels, height, width) "
                         f"with 1 or 3 channels; got {tuple(image_shape)}.")
    if X.ndim != 2 or X.shape[1] != np.prod(shape):
        raise ValueError(f"Each row must hold {np.prod(shape)} values for image_shape "
                         f"{tuple(image_shape)}; X has shape {X.shape}.")
    images = X.reshape(len(X), *shape)  # channels first, as ShortRunEBM's image_shape
    return images[:, 0] if shape[0] == 1 else images.transpose(0, 2, 3, 1)


def _to_rgb(images, vmin, vmax, cmap):
    """Images (grey or RGB, any range) as RGB in [0, 1]; NaN pixels in the
    hidden colour."""
    scaled = np.clip((images - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    hidden = np.isnan(scaled)
    if scaled.ndim == 3:  # grey: through the colour map
        rgb = cmap(np.nan_to_num(scaled))[..., :3]
    else:
        hidden = hidden.any(axis=-1)
        rgb = np.nan_to_num(scaled)
    rgb[hidden] = _HIDDEN_COLOUR
    return rgb


def _mosaic(rgb, n_cols, pad=1):
    """RGB images (n, H, W, 3) tiled n_cols wide on white, ``pad`` pixels apart."""
    n, height, width, _ = rgb.shape
    n_rows = -(-n // n_cols)
    out = np.ones((n_rows * (height + pad) + pad, n_cols * (width + pad) + pad, 3))
    for i, image in enumerate(rgb):
        top, left = pad + (i // n_cols) * (height + pad), pad + (i % n_cols) * (width + pad)
        out[top:top + height, left:left + width] = image
    return out


def _value_range(arrays, vmin, vmax):
    values = np.concatenate([np.ravel(a) for a in arrays])
    values = values[np.isfinite(values)]
    low = values.min() if vmin is None else vmin
    high = values.max() if vmax is None else vmax
    return low, high


def plot_samples_grid(X, *, image_shape, n_cols=None, vmin=None, vmax=None, cmap="gray_r",
                      title=None, ax=None):
    """A grid of images, one per row of X (samples of a model, or data).

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
        Flattened images, as the models take and ``sample`` returns them.
    image_shape : tuple of int
        ``(channels, height, width)`` as in :class:`~skebm.ShortRunEBM`
        (channels first, 1 for grey or 3 for colour), or ``(height, width)``.
    n_cols : int, optional
        Images per line of the grid; about the square root of their number
        by default.
    vmin, vmax : float, optional
        Values shown as the ends of the colour map (each channel's 0 and 1
        in colour); the range of X by default.
    cmap : str or Colormap, default="gray_r"
        Colour map of grey images (``"gray_r"``: dark ink on white, as digits).
    title : str, optional
        Title above the grid.
    ax : matplotlib axes, optional
        Where to draw; a new figure is made otherwise.

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    plt = _pyplot()
    images = _as_images(X, image_shape)
    n_cols = n_cols or int(np.ceil(np.sqrt(len(images))))
    low, high = _value_range([images], vmin, vmax)
    mosaic = _mosaic(_to_rgb(images, low, high, plt.get_cmap(cmap)), n_cols)
    if ax is None:
        height, width = mosaic.shape[:2]
        scale = 6 / max(height, width)
        figure, ax = plt.subplots(figsize=(max(2, width * scale), max(2, height * scale)))
    else:
        figure = ax.figure
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return figure


def plot_inpainting(X, mask, completions, *, image_shape, vmin=None, vmax=None, cmap="gray_r"):
    """Inpainting, one image per column: the original, the known part, and
    each model's completion.

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
        The original images, flattened.
    mask : array-like of bool, shape (n_images, n_features)
        True where a value was hidden and drawn by the model (the ``mask``
        of ``sample_conditional``). Hidden pixels are shown in red in the
        "known part" line.
    completions : array-like of shape (n_images, n_features), or dict
        What ``sample_conditional`` returned, or ``{label: completed rows}``
        for several models (one line each).
    image_shape : tuple of int
        ``(channels, height, width)`` or ``(height, width)``, as in
        :func:`plot_samples_grid`.
    vmin, vmax : float, optional
        Values shown as the ends of the colour map; the range of the
        original images by default.
    cmap : str or Colormap, default="gray_r"
        Colour map of grey images.

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    plt = _pyplot()
    X = np.asarray(X, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != X.shape:
        raise ValueError(f"mask has shape {mask.shape}; X has {X.shape}.")
    if not isinstance(completions, dict):
        completions = {"completed": completions}
    lines = {"original": X, "known part": np.where(mask, np.nan, X), **completions}
    images = {label: _as_images(rows, image_shape) for label, rows in lines.items()}
    low, high = _value_range([images["original"]], vmin, vmax)
    colour_map = plt.get_cmap(cmap)
    figure, axes = plt.subplots(len(images), 1, figsize=(max(3, 0.6 * len(X) + 1.5),
                                                         0.75 * len(images) + 0.3))
    for ax, (label, line) in zip(np.atleast_1d(axes), images.items()):
        ax.imshow(_mosaic(_to_rgb(line, low, high, colour_map), len(line)),
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    figure.tight_layout()
    return figure


def plot_training_curve(model, *, ax=None):
    """Training loss (and validation score, if any) per epoch from ``history_``.

    Parameters
    ----------
    model : fitted skebm estimator
        Any estimator with a ``history_``.
    ax : matplotlib axes, optional
        Where to draw; a new figure is made otherwise.

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    plt = _pyplot()
    new_figure = ax is None
    if new_figure:
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
    if new_figure:
        figure.tight_layout()
    return figure
