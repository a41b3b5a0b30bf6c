"""Checks of what users give: counts, and the input attributes a failed fit
must leave as they were."""

import contextlib
import numbers

import numpy as np
import scipy.sparse as sp

from ._table import _column_name

__all__ = ["check_n_samples", "check_n_steps", "input_attributes_restored_on_failure",
           "is_integer", "refuse_inexact_integers"]

#: Largest magnitude up to which float64 holds every integer exactly.
EXACT_INTEGERS = 2**53

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


def refuse_inexact_integers(X):
    """Refuse X (an array, sparse, a DataFrame, lists) with integers float64
    cannot hold exactly, beyond :data:`EXACT_INTEGERS` in magnitude: skebm
    computes in float64, where each would become its nearest float and
    distinct ones (identifiers, say) one value, silently. The error names
    the first column with one."""
    dtype = getattr(X, "dtype", None)  # numpy or scipy; a DataFrame has dtypes
    if dtype is not None and dtype.kind not in "iuO":
        return  # floats and booleans: nothing to look through
    names = None
    if hasattr(X, "columns") and hasattr(X, "dtypes"):
        names = np.asarray(X.columns, dtype=object)
        # Integer and object columns only (the others are read as floats already).
        columns = [X.iloc[:, j].dropna().to_numpy()
                   if getattr(dtype, "kind", "O") in "iuO" else np.empty(0)
                   for j, dtype in enumerate(X.dtypes)]
        found = [values[_beyond_exact(values)] for values in columns]
        at = np.repeat(np.arange(len(found)), [len(values) for values in found])
        found = np.array([value for values in found for value in values.tolist()], dtype=object)
    elif sp.issparse(X):
        if not _beyond_exact(X.tocsr().data).any():
            return  # (a corpus of counts: no copy)
        X = X.tocoo()
        beyond = _beyond_exact(X.data)
        at, found = X.col[beyond], X.data[beyond]
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            return  # validation refuses it in scikit-learn's words
        beyond = _beyond_exact(X)
        at, found = np.nonzero(beyond)[1], X[beyond]
    if len(at):
        j = at.min()
        raise ValueError(
            f"Column {_column_name(names, j)} holds {np.sum(at == j)} integer(s) beyond 2**53 "
            f"in magnitude (such as {found[at == j][0]}), which float64, what skebm computes "
            "in, cannot hold exactly: distinct values would become one. Subtract an offset or "
            "divide by a power of ten, or drop the column if it is an identifier.")


def _beyond_exact(values):
    """Where a numpy array holds an integer beyond :data:`EXACT_INTEGERS` in
    magnitude (integer dtypes, and Python integers among objects)."""
    if values.dtype.kind in "iu":
        return (values > EXACT_INTEGERS) | (values < -EXACT_INTEGERS)
    if values.dtype == object:
        return np.frompyfunc(lambda value: is_integer(value) and abs(value) > EXACT_INTEGERS,
                             1, 1)(values).astype(bool)
    return np.zeros(values.shape, dtype=bool)
