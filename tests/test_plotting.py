"""skebm.plotting: each plot rendered to a PNG that is a real, non-blank image."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402

from skebm import NCEDensity  # noqa: E402
from skebm.plotting import (plot_density_2d, plot_inpainting, plot_samples_grid,  # noqa: E402
                            plot_training_curve)

DPI = 50


def rendered(figure, path):
    """Save at DPI, read back; the pixels and the figure's size in pixels."""
    expected = tuple(np.round(figure.get_size_inches()[::-1] * DPI).astype(int))
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == expected
    assert pixels[..., :3].std() > 0.05  # not one flat colour
    return pixels


class _SampledMixture(GaussianMixture):
    """GaussianMixture with skebm's ``sample(n_samples, random_state)``."""

    def sample(self, n_samples=1, random_state=None):
        return super().sample(n_samples)[0]


@pytest.fixture(scope="module")
def digits():
    return load_digits().data[:40] / 16


def test_density_2d_has_a_colour_bar_and_axes_in_data_units(eight_gaussians, tmp_path):
    X = eight_gaussians[0]
    model = _SampledMixture(8, random_state=0).fit(X)
    figure = plot_density_2d(model, X, resolution=50, n_samples=200)
    data, density, samples, colour_bar = figure.axes
    assert colour_bar.get_ylabel() == "density"
    for ax in (data, density, samples):
        low, high = ax.get_xlim()
        assert low < X[:, 0].min() and high > X[:, 0].max()  # the data's units
        assert len(ax.get_xticks()) > 1
        assert ax.get_xlabel() == "feature 0"
    rendered(figure, tmp_path / "density.png")


def test_density_2d_wants_two_features(digits):
    with pytest.raises(ValueError, match="2 features"):
        plot_density_2d(None, digits)


def test_samples_grid_is_one_cell_per_image(digits, tmp_path):
    figure = plot_samples_grid(digits[:12], image_shape=(1, 8, 8), n_cols=4)
    mosaic = figure.axes[0].get_images()[0].get_array()
    assert mosaic.shape == (3 * 9 + 1, 4 * 9 + 1, 3)  # 3 x 4 images, 1 pixel apart
    np.testing.assert_allclose(mosaic[1:9, 1:9, 0], 1 - digits[0].reshape(8, 8) / digits[:12].max(),
                               atol=0.02)  # grey, dark ink on white
    pixels = rendered(figure, tmp_path / "grid.png")
    assert np.allclose(pixels[..., 0], pixels[..., 1], atol=0.02)  # grey


def test_samples_grid_in_colour(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(4, 3 * 5 * 6))
    figure = plot_samples_grid(images, image_shape=(3, 5, 6))
    mosaic = figure.axes[0].get_images()[0].get_array()
    assert mosaic.shape == (2 * 6 + 1, 2 * 7 + 1, 3)
    first = images[0].reshape(3, 5, 6).transpose(1, 2, 0)
    np.testing.assert_allclose(mosaic[1:6, 1:7], (first - images.min()) / np.ptp(images))
    pixels = rendered(figure, tmp_path / "colour.png")
    assert not np.allclose(pixels[..., 0], pixels[..., 1], atol=0.02)


@pytest.mark.parametrize("shape", [(2, 8, 8), (7, 7), (1, 8)])
def test_samples_grid_refuses_shapes_that_do_not_fit(digits, shape):
    with pytest.raises(ValueError, match="image_shape"):
        plot_samples_grid(digits, image_shape=shape)


def test_inpainting_lines(digits, tmp_path):
    X = digits[:6]
    mask = np.zeros_like(X, dtype=bool)
    mask[:, 32:] = True
    completed = np.where(mask, 1 - X, X)
    figure = plot_inpainting(X, mask, {"model A": completed, "model B": X},
                             image_shape=(8, 8))
    labels = [ax.get_ylabel() for ax in figure.axes]
    assert labels == ["original", "known part", "model A", "model B"]
    known = figure.axes[1].get_images()[0].get_array()
    assert np.allclose(known[6, 1], (0.85, 0.33, 0.31))  # a hidden pixel, lower half
    assert not np.allclose(known[2, 1], (0.85, 0.33, 0.31))  # a known one
    rendered(figure, tmp_path / "inpainting.png")
    with pytest.raises(ValueError, match="mask has shape"):
        plot_inpainting(X, mask[:2], completed, image_shape=(8, 8))


def test_training_curve(tmp_path):
    X = np.random.default_rng(0).normal(size=(300, 2))
    model = NCEDensity(hidden_layer_sizes=(8,), max_iter=3, n_importance_samples=512,
                       random_state=0).fit(X)
    figure = plot_training_curve(model)
    lines = figure.axes[0].get_lines()
    assert len(lines) == 2 and len(lines[0].get_xdata()) == len(model.history_)
    rendered(figure, tmp_path / "curve.png")
