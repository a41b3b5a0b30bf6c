"""Fixtures that several test modules share."""

import pytest

from skebm.datasets import make_toy_2d


@pytest.fixture(scope="module")
def eight_gaussians():
    """8gaussians, 2000 training and 2000 test points."""
    X = make_toy_2d("8gaussians", 4000, random_state=0)
    return X[:2000], X[2000:]


def pytest_configure(config):
    """Plots render off screen in the tests, whatever the machine's display."""
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
