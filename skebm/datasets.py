"""Toy 2-D data sets for density estimation, and a loader of the King James
Bible as a next-word prediction task.

The generators follow the recipes of the toy data in FFJORD (Grathwohl et al.
2019), which have become the standard playground for 2-D density models.  They
differ from those recipes in one way on purpose: every draw goes through a
``numpy.random.Generator`` built from ``random_state``, never through numpy's
global random state, so the same seed always gives the same data.

References
----------
.. [1] Grathwohl, W., Chen, R. T. Q., Bettencourt, J., Sutskever, I. and
   Duvenaud, D. "FFJORD: Free-form continuous dynamics for scalable reversible
   generative models." ICLR 2019.
"""

import re
import shutil
import subprocess

import numpy as np
from scipy.special import logsumexp
from sklearn.utils import Bunch, check_random_state

__all__ = ["TOY_DATASETS", "eight_gaussians_log_density", "load_kjv_next_word", "make_toy_2d"]

# 8gaussians: centres on a circle of radius 4, unit spread 0.5, everything
# divided by 1.414 at the end (the reference recipe's constants).
_EIGHT_GAUSSIANS_RADIUS = 4.0
_EIGHT_GAUSSIANS_STD = 0.5
_EIGHT_GAUSSIANS_SHRINK = 1.414


def _eight_gaussians_centres():
    angles = np.arange(8) * np.pi / 4
    return _EIGHT_GAUSSIANS_RADIUS * np.column_stack([np.cos(angles), np.sin(angles)])


def _eight_gaussians(n_samples, rng):
    centres = _eight_gaussians_centres()
    points = rng.standard_normal((n_samples, 2)) * _EIGHT_GAUSSIANS_STD
    points += centres[rng.integers(0, 8, size=n_samples)]
    return points / _EIGHT_GAUSSIANS_SHRINK


def eight_gaussians_log_density(X):
    """True log-density of the ``"8gaussians"`` distribution.

    Parameters
    ----------
    X : array-like of shape (n_samples, 2)
        Points at which to evaluate the density.

    Returns
    -------
    log_density : ndarray of shape (n_samples,)
        ``log p(x)`` in nats, for the same distribution that
        ``make_toy_2d("8gaussians")`` samples from.
    """
    X = np.asarray(X, dtype=np.float64)
    centres = _eight_gaussians_centres() / _EIGHT_GAUSSIANS_SHRINK
    std = _EIGHT_GAUSSIANS_STD / _EIGHT_GAUSSIANS_SHRINK
    sq_dist = ((X[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    log_component = -0.5 * sq_dist / std**2 - np.log(2 * np.pi * std**2)
    return logsumexp(log_component, axis=1) - np.log(8)


def _two_spirals(n_samples, rng):
    n_half = n_samples // 2
    n_other = n_samples - n_half
    turns = np.sqrt(rng.random(n_samples)) * 540 * (2 * np.pi) / 360
    arm = np.column_stack([-np.cos(turns) * turns, np.sin(turns) * turns])
    arm += rng.random((n_samples, 2)) * 0.5
    arm[n_other:] *= -1  # the second spiral is the first one rotated by pi
    points = arm / 3 + rng.standard_normal((n_samples, 2)) * 0.1
    return points[rng.permutation(n_samples)]


def _checkerboard(n_samples, rng):
    x1 = rng.random(n_samples) * 4 - 2
    x2 = rng.random(n_samples) - rng.integers(0, 2, size=n_samples) * 2
    x2 += np.floor(x1) % 2
    return np.column_stack([x1, x2]) * 2


def _rings(n_samples, rng):
    # Four concentric circles with evenly spaced angles, radial noise 0.08.
    sizes = [n_samples - 3 * (n_samples // 4)] + [n_samples // 4] * 3
    radii = [0.25, 0.5, 0.75, 1.0]
    circles = []
    for size, radius in zip(sizes, radii):
        angles = np.linspace(0, 2 * np.pi, size, endpoint=False)
        circles.append(radius * np.column_stack([np.cos(angles), np.sin(angles)]))
    points = np.vstack(circles) * 3.0
    points = points[rng.permutation(n_samples)]
    return points + rng.normal(scale=0.08, size=points.shape)


def _pinwheel(n_samples, rng):
    radial_std, tangential_std, n_arms, rate = 0.3, 0.1, 5, 0.25
    arms = rng.integers(0, n_arms, size=n_samples)
    features = rng.standard_normal((n_samples, 2)) * [radial_std, tangential_std]
    features[:, 0] += 1.0
    angles = 2 * np.pi * arms / n_arms + rate * np.exp(features[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    rotated = np.column_stack(
        [features[:, 0] * cos + features[:, 1] * sin, -features[:, 0] * sin + features[:, 1] * cos]
    )
    return 2 * rotated


def _swissroll(n_samples, rng):
    t = 1.5 * np.pi * (1 + 2 * rng.random(n_samples))
    points = np.column_stack([t * np.cos(t), t * np.sin(t)])
    return (points + rng.standard_normal((n_samples, 2))) / 5


def _circles(n_samples, rng):
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer
    angles = np.concatenate(
        [np.linspace(0, 2 * np.pi, n_outer, endpoint=False),
         np.linspace(0, 2 * np.pi, n_inner, endpoint=False)]
    )
    radii = np.concatenate([np.ones(n_outer), np.full(n_inner, 0.5)])
    points = radii[:, None] * np.column_stack([np.cos(angles), np.sin(angles)])
    points = points[rng.permutation(n_samples)]
    return 3 * (points + rng.normal(scale=0.08, size=points.shape))


def _moons(n_samples, rng):
    n_upper = n_samples // 2
    n_lower = n_samples - n_upper
    upper = np.linspace(0, np.pi, n_upper)
    lower = np.linspace(0, np.pi, n_lower)
    points = np.vstack(
        [np.column_stack([np.cos(upper), np.sin(upper)]),
         np.column_stack([1 - np.cos(lower), 1 - np.sin(lower) - 0.5])]
    )
    points = points[rng.permutation(n_samples)]
    points += rng.normal(scale=0.1, size=points.shape)
    return points * 2 + np.array([-1.0, -0.2])


_GENERATORS = {
    "8gaussians": _eight_gaussians,
    "2spirals": _two_spirals,
    "checkerboard": _checkerboard,
    "rings": _rings,
    "pinwheel": _pinwheel,
    "swissroll": _swissroll,
    "circles": _circles,
    "moons": _moons,
}

#: Names accepted by :func:`make_toy_2d`.
TOY_DATASETS = tuple(_GENERATORS)


def make_toy_2d(name, n_samples=1000, *, random_state=None):
    """Draw points from one of the standard toy 2-D distributions.

    Parameters
    ----------
    name : str
        Which distribution to sample: "8gaussians", "2spirals",
        "checkerboard", "rings", "pinwheel", "swissroll", "circles" or
        "moons".
    n_samples : int, default=1000
        Number of points.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw. The global numpy random state is never used, so the
        same integer always gives the same points.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
        The points, in float64, shuffled.

    Examples
    --------
    >>> from skebm.datasets import make_toy_2d
    >>> make_toy_2d("8gaussians", 5, random_state=0).shape
    (5, 2)
    """
    if name not in _GENERATORS:
        raise ValueError(f"Unknown toy data set {name!r}; choose one of {TOY_DATASETS}.")
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    rng = np.random.default_rng(seed)
    return np.asarray(_GENERATORS[name](int(n_samples), rng), dtype=np.float64)


_KJV_INSTALL = ("the King James Bible is read with the `bible` program of the Debian package "
                "bible-kjv: `apt-get update && apt-get install bible-kjv`.")


def load_kjv_next_word(*, n_context=3, train_fraction=0.9):
    """The King James Bible as next-word prediction: a classifier's task with
    about 12,000 classes.

    The whole text (``bible "gen1:1-rev22:21"``, from the Debian package
    ``bible-kjv``) is lower-cased and cut into words with the regex
    ``[a-z']+`` (790,889 words). Each word from the ``n_context``-th on is a
    row: its context is the previous ``n_context`` words, tagged with their
    position (``"-3:in -2:the -1:beginning"``), and its target is the word.
    The first ``train_fraction`` of the words are the training text (with 3
    words of context and 0.9: 711,797 rows, 11,862 classes), the rest the
    test text (79,089 rows; a test row's context may reach back into the
    training text). The contexts go to a vectorizer with
    ``token_pattern=r"\\S+"``.

    Parameters
    ----------
    n_context : int, default=3
        Words of context.
    train_fraction : float, default=0.9
        Share of the words, from the start, that train.

    Returns
    -------
    data : Bunch
        ``contexts_train``, ``contexts_test`` (lists of str), ``y_train``,
        ``y_test`` (arrays of str).

    Raises
    ------
    OSError
        When the ``bible`` program is not installed (the message says how to
        install it).
    """
    program = shutil.which("bible")
    if program is None:
        raise OSError("load_kjv_next_word: " + _KJV_INSTALL)
    text = subprocess.run([program, "gen1:1-rev22:21"], capture_output=True, text=True,
                          check=True).stdout
    words = re.findall(r"[a-z']+", text.lower())
    n_train = int(train_fraction * len(words))
    contexts = [" ".join(f"-{n_context - j}:{words[i - n_context + j]}" for j in range(n_context))
                for i in range(n_context, len(words))]
    targets = np.asarray(words[n_context:])
    split = n_train - n_context
    return Bunch(contexts_train=contexts[:split], contexts_test=contexts[split:],
                 y_train=targets[:split], y_test=targets[split:])
