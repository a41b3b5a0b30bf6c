"""Checks of what users give: counts, and the input attributes a failed fit
must leave as they were."""

import contextlib
import numbers

import numpy as np

__all__ = ["check_n_samples", "check_n_steps", "input_attributes_restored_on_failure",
           "is_integer"]

#: What scikit-learn's ``validate_data(reset=True)`` sets (or removes) on the
#: estimator, and a table's columns (:mod:`skebm._table`): set at the door,
#: before a fit can fail.
_INPUT_ATTRIBUTES = ("n_features_in_", "feature_names_in_", "_table")


@contextlib.contextmanager
def input_attributes_restored_on_failure(estimator):
    """Run the block; if it raises anything (KeyboardInterrupt included), put
    ``n_features_in_`` and ``feature_names_in_`` back as they were before it,
    absent if they were, and re-raise: a failed fit leaves the estimator as
    it found it, fitted to the earlier data or not fitted at all."""
    state = vars(estimator)
    saved = {name: state[name] for name in _INPUT_ATTRIBUTES if name in state}
    try:
        yield
    except BaseException:
        for name in _INPUT_ATTRIBUTES:
            state.pop(name, None)
        state.update(saved)
        raise


def is_integer(value):
    """Whether ``value`` is an integer (numpy's included), a bool not being one."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_n_steps(n_steps):
    """A chain length given to ``sample`` or ``sample_conditional``."""
    if not is_integer(n_steps) or n_steps < 0:
        raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}.")


def check_n_samples(n_samples):
    """The number of rows asked of ``sample``."""
    if not is_integer(n_samples) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
