"""Fixtures that several test modules share."""

import pickle

import numpy as np
import pytest
import torch

from skebm.datasets import make_toy_2d


@pytest.fixture(scope="module")
def eight_gaussians():
    """8gaussians, 2000 training and 2000 test points."""
    X = make_toy_2d("8gaussians", 4000, random_state=0)
    return X[:2000], X[2000:]


@pytest.fixture(scope="session")
def assert_batch_free():
    """A check that ``answer`` (a fitted model's ``score_samples``,
    ``conditional_mean``, ...) gives each row the same whatever batch it
    comes in: some rows alone, every row in X, and every row twice in a
    shuffled batch of twice X's rows. Equal up to float rounding, not
    exactly: sums over a batch round by its size. X should hold more rows
    with missing cells than a model handles at once, so that its chunks
    are exercised too."""
    def check(answer, X, rows=(0, 1, 7, -1)):
        together = answer(X)
        alone = np.concatenate([answer(X[[row]]) for row in rows])
        np.testing.assert_allclose(alone, together[list(rows)], rtol=1e-5, atol=1e-6)
        order = np.random.default_rng(0).permutation(2 * len(X))
        shuffled = np.empty_like(np.concatenate([together, together]))
        shuffled[order] = answer(np.concatenate([X, X])[order])
        np.testing.assert_allclose(shuffled[:len(X)], together, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(shuffled[len(X):], together, rtol=1e-5, atol=1e-6)

    return check


@pytest.fixture
def unpickled_without_cuda(monkeypatch):
    """Unpickles a fitted model as a machine without CUDA does: onto the CPU."""
    def load(model):
        state = pickle.dumps(model)
        with monkeypatch.context() as patch:
            patch.setattr(torch.cuda, "is_available", lambda: False)
            return pickle.loads(state)

    return load


def pytest_configure(config):
    """Plots render off screen in the tests, whatever the machine's display."""
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
