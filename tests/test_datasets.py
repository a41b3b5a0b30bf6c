import numpy as np
import pytest

from skebm.datasets import TOY_DATASETS, eight_gaussians_log_density, make_toy_2d
from skebm.partition import grid_log_integral


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_seeded_and_shaped(name):
    global_state = np.random.get_state()[1].copy()
    a = make_toy_2d(name, 1001, random_state=3)
    b = make_toy_2d(name, 1001, random_state=3)
    c = make_toy_2d(name, 1001, random_state=4)
    assert a.shape == (1001, 2) and a.dtype == np.float64
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # numpy's global random state is neither used nor advanced.
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)


def test_shapes_of_the_distributions():
    rings = make_toy_2d("rings", 4000, random_state=0)
    radii = np.sort(np.linalg.norm(rings, axis=1))
    # Four rings, at 0.75, 1.5, 2.25 and 3, a quarter of the points each.
    for quarter, radius in enumerate([0.75, 1.5, 2.25, 3.0]):
        assert np.median(radii[quarter * 1000 : (quarter + 1) * 1000]) == pytest.approx(radius, abs=0.03)
    board = make_toy_2d("checkerboard", 4000, random_state=0)
    cells = np.floor(board / 2).astype(int)
    assert board.min() >= -4 and board.max() <= 4
    # Only the cells whose coordinates have an even sum are filled.
    assert (np.sum(cells, axis=1) % 2 == 0).all()
    gaussians = make_toy_2d("8gaussians", 4000, random_state=0)
    assert np.linalg.norm(gaussians, axis=1).mean() == pytest.approx(4 / 1.414, abs=0.05)


def test_eight_gaussians_log_density_is_the_sampled_density():
    # Normalized on a grid.
    log_integral = grid_log_integral(eight_gaussians_log_density, ((-5, 5), (-5, 5)), 400)
    assert abs(log_integral) < 1e-3
    # The density of the samples: the mean log-density of draws is minus the
    # entropy, log 8 + log(2 pi e sigma^2) for well-separated components.
    X = make_toy_2d("8gaussians", 50000, random_state=0)
    sigma = 0.5 / 1.414
    entropy = np.log(8) + np.log(2 * np.pi * np.e * sigma**2)
    assert eight_gaussians_log_density(X).mean() == pytest.approx(-entropy, abs=0.01)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown toy data set"):
        make_toy_2d("spiral", 10)
    with pytest.raises(ValueError, match="positive integer"):
        make_toy_2d("moons", 0)
