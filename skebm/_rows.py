"""How training rows reach torch: standardized, dense or sparse, with targets.

A container of rows has ``len``, indexing by a tensor of row numbers (one
minibatch, on the device) and ``subset`` (the same kind of container); a
plain tensor is one too.
"""

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.sparsefuncs import mean_variance_axis

__all__ = ["LabelledRows", "RowsWith", "SparseRows", "as_tensor", "dense_rows", "standardization",
           "take"]


def standardization(X):
    """Mean and scale of each column (dense or sparse X, NaN left out);
    constant columns get scale 1. Constant is judged relative to the column's own magnitude, so a
    column of values near 1e-30 is scaled like one near 1.

    A column whose squares would overflow or underflow float64 (values
    beyond about 1e144, or all below about 1e-144) is divided by the power
    of two above its largest magnitude, and its statistics multiplied back:
    dividing by a power of two is exact, so they are the same numbers. Other
    columns are read as they are, without a copy."""
    X = X.astype(np.float64, copy=False)
    unit = _power_of_two_units(X)
    rescaled = np.any(unit != 1.0)
    if sp.issparse(X):
        mean, variance = mean_variance_axis(X @ sp.diags(1.0 / unit) if rescaled else X, axis=0)
        scale = np.sqrt(variance)
    else:
        scaled = X / unit if rescaled else X
        if np.isnan(scaled).any():  # missing cells: the statistics of the observed ones
            mean, scale = np.nanmean(scaled, axis=0), np.nanstd(scaled, axis=0)
        else:
            mean, scale = scaled.mean(axis=0), scaled.std(axis=0)
    mean, scale = mean * unit, scale * unit
    scale[scale <= 10 * np.finfo(np.float64).eps * np.abs(mean)] = 1.0
    return mean, scale


#: Largest magnitudes between these keep a column as it is in
#: :func:`standardization`: its squares, summed over any number of rows a
#: machine holds, stay normal float64 numbers.
_SAFE_MAGNITUDES = (2.0**-480, 2.0**480)


def _power_of_two_units(X):
    """Per column, 1, or the power of two above its largest magnitude where
    that lies outside :data:`_SAFE_MAGNITUDES` (a column of zeros or of NaN
    alone: 1)."""
    if sp.issparse(X):
        largest = abs(X).max(axis=0).toarray().ravel()
    else:  # no array-sized temporary; NaN left out
        largest = np.fmax(np.fmax.reduce(X, axis=0), -np.fmin.reduce(X, axis=0))
    low, high = _SAFE_MAGNITUDES
    outside = np.isfinite(largest) & (largest > 0) & ((largest < low) | (largest > high))
    return np.where(outside, np.ldexp(1.0, np.frexp(np.where(outside, largest, 1.0))[1]), 1.0)


def as_tensor(array, device, dtype):
    """``array`` as a tensor of ``dtype`` on ``device`` (copied when read-only)."""
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch warns about read-only memory
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype, device=device)


def dense_rows(X, rows, mean, scale, device, dtype):
    """``X[rows]`` (numpy or scipy sparse), densified, standardized (unless
    ``mean`` is None), as a tensor."""
    block = X[rows]
    block = block.toarray() if sp.issparse(block) else block
    if mean is not None:
        block = (block.astype(np.float64) - mean) / scale
    return as_tensor(block, device, dtype)


def take(rows, index):
    """The rows at ``index`` (a tensor), in a container of the same kind."""
    return rows.subset(index) if hasattr(rows, "subset") else rows[index]


class SparseRows:
    """Sparse training rows kept as scipy CSR on the CPU.

    Indexing gives a dense float32 tensor of those rows on the device,
    standardized: only one minibatch is ever dense. ``subset`` keeps rows
    sparse; ``mean(0)`` is the column means, as a tensor's.
    """

    def __init__(self, X, mean, scale, device):
        self.X, self.mean_, self.scale_, self.device = X.tocsr(), mean, scale, device
        self.shape = X.shape

    def __len__(self):
        return self.X.shape[0]

    def __getitem__(self, index):
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return dense_rows(self.X, index, self.mean_, self.scale_, self.device, torch.float32)

    def subset(self, index):
        return SparseRows(self.X[index.cpu().numpy()], self.mean_, self.scale_, self.device)

    def mean(self, dim):
        if dim != 0:
            raise ValueError("SparseRows.mean takes dim=0 only.")
        means = np.asarray(self.X.mean(axis=0)).ravel()
        if self.mean_ is not None:
            means = (means - self.mean_) / self.scale_
        return torch.as_tensor(means, dtype=torch.float32, device=self.device)


class RowsWith:
    """Rows with values made from each once (their image under a fixed
    map, say), or None, shuffled and split by one index: indexing gives
    ``(rows, values)``, the values None without them."""

    def __init__(self, rows, values=None):
        self.rows, self.values = rows, values
        self.shape = rows.shape

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index], None if self.values is None else self.values[index]


class LabelledRows:
    """Training rows with their targets (and weights), shuffled and split
    by one index.

    ``rows`` is any container of rows; ``targets`` a tensor of integer codes
    on the same device; ``weights`` a float tensor of each row's weight, or
    None (every row weighs 1). Indexing gives the minibatch ``(rows,
    targets, weights)``, its weights None without weights; ``attributes``
    are the fitted attributes that come with the targets (a classifier's
    ``classes_``), for the hooks to read before they are set on the
    estimator.
    """

    def __init__(self, rows, targets, attributes, weights=None):
        self.rows, self.targets, self.attributes = rows, targets, attributes
        self.weights = weights
        self.shape = rows.shape

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return (self.rows[index], self.targets[index],
                None if self.weights is None else self.weights[index])

    def subset(self, index):
        return LabelledRows(take(self.rows, index), self.targets[index], self.attributes,
                            None if self.weights is None else self.weights[index])
