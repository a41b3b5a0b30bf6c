"""Fault sweep of issue 18: the inputs and faults a new user hits, against every
public estimator of skebm.

Each case fits a tiny model (a few epochs, a (16,) network, 120 rows) or calls
a method with a bad input, a bad hyperparameter, a huge request, a scaled
table, a fault of state (refit after a failure, pickle, clone, set_params),
an interrupt, threads, torch's global settings, or a pandas table, and is
classified as:

- ``clear error``: a ValueError, TypeError, NotFittedError, MemoryError (or a
  scikit-learn error) raised from skebm's or scikit-learn's own code, or any
  such refusal where the case expects one;
- ``correct``: no error, and the case's own check of the result passed (every
  case that may succeed has a check that can fail: finite scores, shapes,
  equality to a reference, the Jacobian relation, ...);
- ``silent wrong``: no error, but the check failed (or a refusal was needed
  and none came);
- ``crash``: an exception from inside torch, numpy, scipy or pandas, one of
  an unexpected type (AttributeError, IndexError, RuntimeError, ...), an
  allocation that hit the sweep's memory guard where a refusal was due, a
  worker that died, or a warning where an error was needed;
- ``hang``: the case ran past its timeout.

Cases run in child processes (two persistent ``spawn`` workers; a worker is
killed and replaced on a timeout, and replaced after a case that changes
process-wide state), so a hang or a segfault does not end the sweep. After
each case the worker checks that torch's thread count, default dtype and
default device, and the threads of the BLAS and OpenMP pools, are as before:
a case that leaves them changed is ``silent wrong`` (``leaked global state``),
and the worker puts them back.

Run from the repository root::

    python benchmarks/fault_matrix.py [--only SUBSTRING] [--json PATH] [--timeout S]

``--only`` keeps the cases whose ``estimator/category/name`` contains the
substring; ``--json`` writes every result; ``--timeout`` is the per-case limit
in seconds (default 60); ``--workers 1`` runs one case at a time. The whole
sweep (about 630 cases) takes about 3 minutes on 2 idle cores.
"""

import argparse
import collections
import contextlib
import copy
import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import re
import resource
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

NCE, RBM, SR, CLF, OUT, IMP = ("NCEDensity", "PCDRestrictedBoltzmann", "ShortRunEBM",
                               "NCESoftmaxClassifier", "DensityOutlierDetector", "DensityImputer")
KINDS = (NCE, RBM, SR, CLF, OUT, IMP)
TORCH_KINDS = (NCE, RBM, SR, CLF)
DENSITIES = (NCE, RBM, SR)
TABLE_KINDS = (NCE, OUT, IMP)

# The tiny settings every case starts from, and their source for reproductions.
TINY = {
    NCE: dict(hidden_layer_sizes=(16,), max_iter=2, early_stopping=False,
              n_importance_samples=2000, base_components=3, random_state=0),
    RBM: dict(n_components=8, n_iter=2, random_state=0),
    SR: dict(hidden_layer_sizes=(16,), max_iter=2, early_stopping=False, n_steps=5,
             buffer_size=256, n_ais_chains=8, n_ais_temperatures=30, random_state=0),
    CLF: dict(embedding_dim=8, max_iter=2, batch_size=64, random_state=0),
}


def _kwargs_src(params):
    return ", ".join(f"{name}={value!r}" for name, value in params.items())


TINY_SRC = {kind: f"{kind}({_kwargs_src(params)})" for kind, params in TINY.items()}
TINY_SRC[OUT] = f"DensityOutlierDetector({TINY_SRC[NCE]}, contamination=0.1)"
TINY_SRC[IMP] = f"DensityImputer({TINY_SRC[NCE]}, random_state=0)"

X_SRC = {kind: "X = np.random.default_rng(0).normal(size=(120, 3))" for kind in KINDS}
X_SRC[RBM] = "X = (np.random.default_rng(0).normal(size=(120, 6)) > 0).astype(float)"
Y_SRC = "y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)"
FRAME_SRC = ("import pandas as pd; rng = np.random.default_rng(0); "
             "df = pd.DataFrame({'x': rng.normal(size=120), 'z': rng.normal(size=120)}); "
             "c = np.random.default_rng(1).choice(['red', 'green', 'blue'], 120)")

#: Errors that count as a refusal (scikit-learn's own derive from these).
REFUSALS = (ValueError, TypeError, MemoryError)
#: A case that expects a refusal notes one slower than this.
QUICK_S = 10.0


# ----------------------------------------------------------------- the cases
@dataclass
class Case:
    """One fault: ``run(ctx)`` returns None when its check passed, else what
    failed; it raises when the estimator refuses. ``expect``: "ok" (must
    succeed), "error" (must refuse) or "either" (a clear refusal or a
    checked success)."""

    estimator: str
    category: str
    name: str
    run: Callable
    expect: str = "ok"
    repro: str = ""
    isolate: bool = False       # replace the worker after it (process-wide state)
    message: str = None         # a refusal's message must match this regex
    quick: bool = False         # a refusal must come within QUICK_S seconds
    error_type: type = None     # a refusal should be of this type

    @property
    def id(self):
        return f"{self.estimator}/{self.category}/{self.name}"


class Context:
    """What a running case may use: the warnings caught so far, a memory guard."""

    def __init__(self, warnings_list):
        self.warnings = warnings_list
        self.guard_tripped = False

    def warned(self, pattern=""):
        return [w for w in self.warnings if re.search(pattern, str(w.message))]

    @contextlib.contextmanager
    def memory_guard(self, extra_gib=4):
        """Cap the address space at its current size plus ``extra_gib``: an
        allocation that a refusal should have prevented fails instead of
        filling the machine, and is reported as a crash."""
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/status") as f:
            vm = int(re.search(r"VmSize:\s+(\d+)", f.read()).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + extra_gib * 2**30, hard))
        try:
            yield
        except (MemoryError, RuntimeError) as exc:
            message = str(exc)
            if (isinstance(exc, MemoryError) and ("Unable to allocate" in message or not message)
                    or isinstance(exc, RuntimeError) and "alloc" in message.lower()):
                self.guard_tripped = True
            raise
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ---------------------------------------------------------- data, estimators
def data(kind, n=120, d=None, seed=0):
    """The standard data of ``kind``: Gaussian rows, binary ones for the RBM."""
    d = (6 if kind == RBM else 3) if d is None else d
    X = np.random.default_rng(seed).normal(size=(n, d))
    return (X > 0).astype(float) if kind == RBM else X


def labels(n):
    """Three learnable classes of the rows of ``data(CLF, n)``."""
    X = np.random.default_rng(0).normal(size=(n, 3))
    return (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


def frame(n=120, **columns):
    """A DataFrame of two Gaussian columns ``x``, ``z`` and ``columns``."""
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n)})
    for name, column in columns.items():
        df[name] = column
    return df


def colors(n=120):
    return np.random.default_rng(1).choice(["red", "green", "blue"], n)


def make(kind, **params):
    """The tiny estimator of ``kind``, with ``params`` set (``density__...`` for
    the wrappers' density)."""
    import skebm

    if kind == OUT:
        est = skebm.DensityOutlierDetector(skebm.NCEDensity(**TINY[NCE]), contamination=0.1)
    elif kind == IMP:
        est = skebm.DensityImputer(skebm.NCEDensity(**TINY[NCE]), random_state=0)
    else:
        est = getattr(skebm, kind)(**TINY[kind])
    return est.set_params(**params) if params else est


def src(kind, **params):
    """Source of ``make(kind, **params)``, for reproductions."""
    return TINY_SRC[kind] + (f".set_params({_kwargs_src(params)})" if params else "")


def n_rows(X):
    from sklearn.utils.validation import _num_samples

    try:
        return _num_samples(X)
    except Exception:
        return len(X) if hasattr(X, "__len__") else 0


_DEFAULT = object()


def fit(kind, est, X, y=_DEFAULT):
    if kind == CLF:
        return est.fit(X, labels(n_rows(X)) if y is _DEFAULT else y)
    return est.fit(X)


def fit_src(kind, X="X"):
    return f"fit({X}, y)" if kind == CLF else f"fit({X})"


def out_src(kind, X="X"):
    return {CLF: f"predict_proba({X})", OUT: f"decision_function({X})",
            IMP: f"transform({X})"}.get(kind, f"score_samples({X})")


def repro(kind, body, **params):
    """A one-line reproduction: the data, then ``body`` with {E} the estimator."""
    lines = [X_SRC[kind]] + ([Y_SRC] if kind == CLF else [])
    body = (body.replace("{E}", src(kind, **params)).replace("{fit}", fit_src(kind))
            .replace("{out}", out_src(kind)))
    return "; ".join(lines + [body])


def with_holes(X):
    """X with NaN in every fourth row (column row % d), for the imputer; X as
    it is when it is not a float array, list of lists or DataFrame."""
    if hasattr(X, "iloc") and hasattr(X, "dtypes"):
        if len(X.columns) and all(getattr(t, "kind", "O") == "f" for t in X.dtypes) and len(X):
            X = X.copy()
            for i in range(0, len(X), 4):
                X.iloc[i, i % X.shape[1]] = np.nan
        return X
    if isinstance(X, list) and X and isinstance(X[0], list):
        return with_holes(np.array(X, dtype=float)).tolist()
    if isinstance(X, np.ndarray) and X.dtype.kind == "f" and X.ndim == 2 and X.size:
        X = X.copy()
        rows = np.arange(0, len(X), 4)
        X[rows, rows % X.shape[1]] = np.nan
    return X


def observe(kind, est, X):
    """``(value, failure)``: the estimator's main output on X as a float array
    (scores, probabilities, decisions, the imputed X) and what is wrong with
    it, or None."""
    n = n_rows(X)
    if kind in DENSITIES:
        s = np.asarray(est.score_samples(X), dtype=float)
        if s.shape != (n,):
            return s, f"score_samples shape {s.shape}, expected ({n},)"
        if not np.isfinite(s).all():
            return s, f"score_samples not finite in {np.sum(~np.isfinite(s))} of {n} rows"
        return s, None
    if kind == CLF:
        p = np.asarray(est.predict_proba(X), dtype=float)
        if p.shape != (n, len(est.classes_)):
            return p, f"predict_proba shape {p.shape}, expected ({n}, {len(est.classes_)})"
        if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
            return p, "predict_proba outside [0, 1] or not finite"
        if n and not np.allclose(p.sum(1), 1, atol=1e-6):
            return p, f"predict_proba rows sum to {p.sum(1).min():.6g}..{p.sum(1).max():.6g}"
        return p, None
    if kind == OUT:
        d = np.asarray(est.decision_function(X), dtype=float)
        labels_ = np.asarray(est.predict(X))
        if d.shape != (n,) or not np.isfinite(d).all():
            return d, f"decision_function shape {d.shape}, finite {np.isfinite(d).mean():.0%}"
        if not set(np.unique(labels_)) <= {-1, 1}:
            return d, f"predict gave labels {np.unique(labels_)}"
        return d, None
    # the imputer: fill holes made in X, keep the observed cells
    Xh = with_holes(X)
    filled = est.transform(Xh)
    return imputation_failure(Xh, filled)


def imputation_failure(Xh, filled):
    """``(filled as float, failure)`` for an imputation of the numeric ``Xh``."""
    import pandas as pd

    filled_values = np.asarray(filled)
    reference = np.asarray(Xh.to_numpy(dtype=float, na_value=np.nan) if hasattr(Xh, "to_numpy")
                           else Xh)
    if filled_values.shape != reference.shape:
        return None, f"transform shape {filled_values.shape}, expected {reference.shape}"
    if pd.isna(pd.DataFrame(filled_values)).to_numpy().any():
        return None, "transform left missing values"
    try:
        values = filled_values.astype(float)
        reference = reference.astype(float)
    except (TypeError, ValueError):
        return None, None  # non-numeric output: shape and completeness checked
    if not np.isfinite(values).all():
        return values, "transform gave non-finite values"
    observed = ~np.isnan(reference)
    if not np.allclose(values[observed], reference[observed], rtol=1e-6, atol=0):
        return values, "transform changed observed cells"
    return values, None


def fit_observe(kind, X, X_out=_DEFAULT, y=_DEFAULT, **params):
    est = fit(kind, make(kind, **params), X, y)
    return observe(kind, est, X if X_out is _DEFAULT else X_out)


def close(a, b, what, rtol=1e-6, atol=1e-6):
    """None when a and b are close, else what differs."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        return f"{what}: shapes {a.shape} and {b.shape}"
    if not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
        return f"{what}: differ by up to {np.nanmax(np.abs(a - b)):.3g}"
    return None


def first(*failures):
    return next((f for f in failures if f), None)


def torch_state():
    """Process-wide state a fit must leave as it was."""
    import torch
    from threadpoolctl import threadpool_info

    return {"torch threads": torch.get_num_threads(),
            "BLAS threads": tuple(p["num_threads"] for p in threadpool_info())}


def state_changed(before):
    after = torch_state()
    return None if after == before else f"global state changed: {before} -> {after}"


# ------------------------------------------------------------- bad values
#: Cases the wrappers (DensityOutlierDetector, DensityImputer, around an
#: NCEDensity) skip: they would repeat NCEDensity's.
WRAPPER_SKIPS = {"fit_numeric_strings", "fit_duplicate_rows", "fit_3_rows", "fit_3d", "score_1d"}
#: The table variants DensityOutlierDetector gets (its refusals are all run).
#: Values the density gives probability 0 at score time: the density refuses
#: them, the outlier detector flags their rows (``UNSEEN_SCORE``).
UNSEEN_VALUES = {"unseen_category_at_score", "unseen_string_at_score",
                 "numbers_in_category_column_at_score"}
OUTLIER_TABLE_VARIANTS = {"category_column", "nullable_Int64_with_NA_3_levels",
                          "row_all_NaN_at_fit"}


def corrupt(kind, value, rows=(3,), col=1, dtype=None):
    """The standard data of ``kind`` (as ``dtype``) with ``value`` in column
    ``col`` of ``rows``."""
    X = data(kind).astype(dtype) if dtype else data(kind).copy()
    for row in rows:
        X[row, col] = value
    return X


def bad_value_cases():
    cases = []

    def add(kind, name, run, expect, body, **kw):
        if kind in (OUT, IMP) and name in WRAPPER_SKIPS:
            return
        cases.append(Case(kind, "bad-values", name, run, expect, repro(kind, body), **kw))

    for kind in KINDS:
        nan_ok = kind in (NCE, SR, IMP)  # densities that marginalize missing cells
        nan_expect = "ok" if nan_ok else ("either" if kind == OUT else "error")

        # fit-time cells
        add(kind, "fit_nan_cell", lambda ctx, k=kind: fit_observe(k, corrupt(k, np.nan))[1],
            nan_expect, "X[3, 1] = np.nan; {E}.{fit}.{out}")
        add(kind, "fit_inf_cell", lambda ctx, k=kind: fit_observe(k, corrupt(k, np.inf))[1],
            "error", "X[3, 1] = np.inf; {E}.{fit}")
        add(kind, "fit_neg_inf_cell", lambda ctx, k=kind: fit_observe(k, corrupt(k, -np.inf))[1],
            "error", "X[3, 1] = -np.inf; {E}.{fit}")
        add(kind, "fit_string_cell",
            lambda ctx, k=kind: fit_observe(k, corrupt(k, "abc", dtype=object))[1],
            "error", "X = X.astype(object); X[3, 1] = 'abc'; {E}.{fit}")
        add(kind, "fit_numeric_strings",
            lambda ctx, k=kind: fit_observe(k, data(k).astype(str))[1],
            "either", "{E}.fit(X.astype(str)) then .{out} on the same strings")
        add(kind, "fit_none_cell",
            lambda ctx, k=kind: fit_observe(k, corrupt(k, None, dtype=object))[1],
            nan_expect, "X = X.astype(object); X[3, 1] = None; {E}.{fit}.{out}")
        add(kind, "fit_complex", lambda ctx, k=kind: fit_observe(k, data(k) + 1j)[1],
            "error", "{E}.fit(X + 1j)")
        add(kind, "fit_empty_rows", lambda ctx, k=kind: fit_observe(k, data(k)[:0])[1],
            "error", "{E}.fit(X[:0])")
        add(kind, "fit_one_row", lambda ctx, k=kind: fit_observe(k, data(k)[:1])[1],
            "error", "{E}.fit(X[:1])")
        for n in (2, 3):
            add(kind, f"fit_{n}_rows",
                lambda ctx, k=kind, n=n: fit_observe(k, data(k)[:n], y=labels(120)[[0, 1, 2][:n]]
                                                     if k == CLF else _DEFAULT)[1],
                "either", f"{{E}}.fit(X[:{n}]) then .{{out}}")
        add(kind, "fit_one_feature", lambda ctx, k=kind: fit_observe(k, data(k)[:, :1])[1],
            "ok", "{E}.fit(X[:, :1]) then .{out}")
        add(kind, "fit_constant_column",
            lambda ctx, k=kind: fit_observe(k, corrupt(k, 1.0, rows=range(120)))[1],
            "either", "X[:, 1] = 1.0; {E}.{fit}.{out}")
        add(kind, "fit_duplicate_rows",
            lambda ctx, k=kind: fit_observe(k, np.repeat(data(k)[:40], 3, axis=0))[1],
            "ok", "{E}.fit(np.repeat(X[:40], 3, axis=0)) then .{out}")
        # score-time cells, fit on clean data
        def at_score(value, k=kind, dtype=None):
            return fit_observe(k, data(k), X_out=corrupt(k, value, dtype=dtype))[1]

        add(kind, "score_nan_cell", lambda ctx, k=kind: at_score(np.nan, k),
            nan_expect, "X2 = X.copy(); X2[3, 1] = np.nan; {E}.{fit}; then .{out} on X2")
        add(kind, "score_inf_cell", lambda ctx, k=kind: at_score(np.inf, k),
            "error", "X2 = X.copy(); X2[3, 1] = np.inf; {E}.{fit}; then .{out} on X2")
        add(kind, "score_string_cell", lambda ctx, k=kind: at_score("abc", k, object),
            "error", "X2 = X.astype(object); X2[3, 1] = 'abc'; {E}.{fit}; then .{out} on X2")
        add(kind, "score_none_cell", lambda ctx, k=kind: at_score(None, k, object),
            nan_expect, "X2 = X.astype(object); X2[3, 1] = None; {E}.{fit}; then .{out} on X2")
    cases.append(Case(
        OUT, "bad-values", "fit_nan_cell_density_ShortRunEBM",
        lambda ctx: fit_observe(OUT, corrupt(OUT, np.nan), density=make(SR))[1], "ok",
        f"{X_SRC[OUT]}; X[3, 1] = np.nan; DensityOutlierDetector({TINY_SRC[SR]}).fit(X)"))

    # the classifier's targets
    def clf(name, y, expect, body):
        def run(ctx):
            est = make(CLF).fit(data(CLF), y)
            return observe(CLF, est, data(CLF))[1]

        cases.append(Case(CLF, "bad-values", name, run, expect, repro(CLF, body)))

    y = labels(120)
    clf("y_too_short", y[:-1], "error", "{E}.fit(X, y[:-1])")
    clf("y_one_class", np.zeros(120, int), "error", "{E}.fit(X, np.zeros(120, int))")
    clf("y_none", None, "error", "{E}.fit(X, None)")
    clf("y_nan", np.where(np.arange(120) == 3, np.nan, y.astype(float)), "error",
        "{E}.fit(X, np.where(np.arange(120) == 3, np.nan, y.astype(float)))")
    clf("y_column_vector", y[:, None], "either", "{E}.fit(X, y[:, None]).predict_proba(X)")
    clf("y_strings", np.array(["a", "b", "c"])[y], "ok",
        "{E}.fit(X, np.array(['a', 'b', 'c'])[y]).predict_proba(X)")
    clf("y_mixed_types", np.array([1, "a"], dtype=object)[y % 2], "either",
        "{E}.fit(X, np.array([1, 'a'], dtype=object)[y % 2]).predict_proba(X)")
    clf("y_2d_multioutput", np.c_[y, y], "error", "{E}.fit(X, np.c_[y, y])")

    def unseen_partial(ctx):
        est = make(CLF).partial_fit(data(CLF), labels(120), classes=[0, 1, 2])
        est.partial_fit(data(CLF), np.where(labels(120) == 2, 7, labels(120)))
        return "partial_fit accepted a label not in classes"

    cases.append(Case(CLF, "bad-values", "partial_fit_unseen_label", unseen_partial, "error",
                      repro(CLF, "e = {E}.partial_fit(X, y, classes=[0, 1, 2]); "
                                 "e.partial_fit(X, np.where(y == 2, 7, y))")))

    def unseen_warm(ctx):
        est = make(CLF).fit(data(CLF), labels(120))
        est.set_params(warm_start=True).fit(data(CLF), labels(120) + 5)
        return "warm_start fit accepted new labels"

    cases.append(Case(CLF, "bad-values", "warm_start_unseen_labels", unseen_warm, "error",
                      repro(CLF, "e = {E}.fit(X, y); e.set_params(warm_start=True).fit(X, y + 5)")))

    def unseen_score(ctx):
        est = make(CLF).fit(data(CLF), labels(120))
        accuracy = est.score(data(CLF), labels(120) + 5)
        return None if accuracy == 0 else f"score with unseen labels = {accuracy}"

    cases.append(Case(CLF, "bad-values", "score_unseen_labels", unseen_score, "either",
                      repro(CLF, "{E}.fit(X, y).score(X, y + 5)")))

    def partial_fit_no_classes(ctx):
        make(CLF).partial_fit(data(CLF), labels(120))
        return "first partial_fit without classes accepted"

    cases.append(Case(CLF, "bad-values", "partial_fit_without_classes", partial_fit_no_classes,
                      "error", repro(CLF, "{E}.partial_fit(X, y)")))

    def classes_missing_label(ctx):
        make(CLF).partial_fit(data(CLF), labels(120), classes=[0, 1])
        return "partial_fit accepted y with a label outside classes"

    cases.append(Case(CLF, "bad-values", "partial_fit_classes_missing_label",
                      classes_missing_label, "error",
                      repro(CLF, "{E}.partial_fit(X, y, classes=[0, 1])")))
    return cases


# ----------------------------------------------------------------- shapes
def shape_cases():
    import pandas as pd
    import scipy.sparse as sp

    cases = []

    def add(kind, name, run, expect, body):
        if kind in (OUT, IMP) and name in WRAPPER_SKIPS:
            return
        cases.append(Case(kind, "shapes", name, run, expect, repro(kind, body)))

    for kind in KINDS:
        sparse_native = kind in (RBM, CLF)

        add(kind, "fit_1d", lambda ctx, k=kind: fit_observe(k, data(k)[:, 0])[1],
            "error", "{E}.fit(X[:, 0])")
        add(kind, "fit_3d", lambda ctx, k=kind: fit_observe(k, data(k)[:, :, None])[1],
            "error", "{E}.fit(X[:, :, None])")
        add(kind, "score_1d", lambda ctx, k=kind: fit_observe(k, data(k), X_out=data(k)[0])[1],
            "error", "{E}.{fit}; then .{out} on X[0]")
        add(kind, "score_transposed",
            lambda ctx, k=kind: fit_observe(k, data(k), X_out=data(k).T)[1],
            "error", "{E}.{fit}; then .{out} on X.T")
        add(kind, "score_fewer_features",
            lambda ctx, k=kind: fit_observe(k, data(k), X_out=data(k)[:, :-1])[1],
            "error", "{E}.{fit}; then .{out} on X[:, :-1]")
        add(kind, "list_of_lists",
            lambda ctx, k=kind: same_as_array(k, data(k).tolist(), data(k).tolist()),
            "ok", "{E}.fit(X.tolist()) then .{out} on X.tolist(), compared to the ndarray")
        add(kind, "dataframe_named", lambda ctx, k=kind: first(
            same_as_array(k, pd.DataFrame(data(k), columns=names(k)),
                          pd.DataFrame(data(k), columns=names(k))),
            None if list(fit(k, make(k), pd.DataFrame(data(k), columns=names(k)))
                         .feature_names_in_) == names(k) else "feature_names_in_ wrong"),
            "ok", "df = pd.DataFrame(X, columns=['f0', 'f1', ...]); {E}.fit(df) then .{out} on df")
        add(kind, "dataframe_unnamed", lambda ctx, k=kind: same_as_array(
            k, pd.DataFrame(data(k)), pd.DataFrame(data(k))),
            "ok", "{E}.fit(pd.DataFrame(X)) then .{out} on pd.DataFrame(X)")
        add(kind, "dataframe_renamed_at_score", lambda ctx, k=kind: fit_observe(
            k, pd.DataFrame(data(k), columns=names(k)),
            X_out=pd.DataFrame(data(k), columns=[f"g{i}" for i in range(data(k).shape[1])]))[1],
            "error", "{E}.fit(pd.DataFrame(X, columns=['f0', ...])) then .{out} on columns "
                     "['g0', ...]")
        add(kind, "dataframe_reordered_at_score", lambda ctx, k=kind: fit_observe(
            k, pd.DataFrame(data(k), columns=names(k)),
            X_out=pd.DataFrame(data(k), columns=names(k))[names(k)[::-1]])[1],
            "error", "{E}.fit(df) then .{out} on df[df.columns[::-1]]")
        add(kind, "sparse_csr_fit", lambda ctx, k=kind: same_as_array(
                k,             sp.csr_matrix(data(k)), sp.csr_matrix(data(k))),
            "ok" if sparse_native else "either",
            "{E}.fit(scipy.sparse.csr_matrix(X)) then .{out} on it, compared to dense")
        if sparse_native:
            add(kind, "sparse_coo_array_fit", lambda ctx, k=kind: same_as_array(
                k,                 sp.coo_array(data(k)), sp.coo_array(data(k))),
                "ok", "{E}.fit(scipy.sparse.coo_array(X)) then .{out} on it")
        add(kind, "sparse_at_score_only", lambda ctx, k=kind: same_as_array(
                k,             data(k), sp.csr_matrix(data(k))),
            "ok" if sparse_native else "either",
            "{E}.{fit}; then .{out} on scipy.sparse.csr_matrix(X)")
    return cases


def names(kind):
    return [f"f{i}" for i in range(data(kind).shape[1])]


def same_as_array(kind, X_fit, X_out=_DEFAULT, rtol=1e-6):
    """Fit on ``X_fit`` and observe ``X_out`` (other containers of the data);
    the result must match fitting and observing the plain array."""
    value, failure = fit_observe(kind, X_fit, X_out)
    if failure:
        return failure
    reference, _ = fit_observe(kind, data(kind))
    return close(value, reference, "differs from the ndarray result", rtol=rtol, atol=1e-6)


def _read_only(X):
    X.setflags(write=False)
    return X


# ----------------------------------------------------------------- dtypes
def dtype_cases():
    cases = []
    for kind in KINDS:
        def cast(dtype, k=kind):
            X = data(k)
            if dtype == "int":
                return X.astype(int) if k == RBM else np.round(X * 10).astype(int)
            if dtype == "uint8":
                return X.astype(np.uint8) if k == RBM else np.clip(X * 20 + 128, 0, 255).astype(
                    np.uint8)
            if dtype == "bool":
                return X > 0 if k != RBM else X.astype(bool)
            return X.astype(dtype)

        for dtype in ("float16", "float32", "int", "uint8", "bool"):
            if kind in (OUT, IMP) and dtype in ("float16", "uint8", "bool"):
                continue
            expect = "either" if dtype == "bool" else "ok"
            cases.append(Case(
                kind, "dtypes", f"fit_{dtype}",
                lambda ctx, k=kind, t=dtype: fit_observe(k, cast(t, k))[1], expect,
                repro(kind, f"{{E}}.fit(X.astype({dtype!r})) then .{{out}} on it (ints: "
                            "np.round(X * 10))")))

        def float32_scores(ctx, k=kind):
            reference, failure = fit_observe(k, data(k))
            value, failure32 = fit_observe(k, data(k), X_out=data(k).astype(np.float32))
            return first(failure, failure32, close(value, reference, "float32 X at score time",
                                                   rtol=1e-3, atol=1e-3))

        cases.append(Case(kind, "dtypes", "score_float32_matches_float64", float32_scores, "ok",
                          repro(kind, "e = {E}.{fit}; e.{out} vs the same on "
                                      "X.astype(np.float32)")))
    return cases


# -------------------------------------------------------- hyperparameters
def hyperparameter_cases():
    cases = []

    def add(kind, params, expect, name=None, X=None):
        label = name or "_".join(f"{k}={v!r}" for k, v in params.items())

        def run(ctx, kind=kind, params=params, X=X):
            X_fit = data(kind) if X is None else X()
            return fit_observe(kind, X_fit, **params)[1]

        cases.append(Case(kind, "hyperparameters", label, run, expect,
                          repro(kind, "{E}.{fit}.{out}", **params)))

    epochs = {NCE: "max_iter", SR: "max_iter", CLF: "max_iter", RBM: "n_iter"}
    for kind in TORCH_KINDS:
        for value in (0, -1, 2.5, "3"):
            add(kind, {epochs[kind]: value}, "error")
        for value in (0, -0.1, "0.01"):
            add(kind, {"learning_rate": value}, "error")
        for value in (0, -5, 2.5, "64"):
            add(kind, {"batch_size": value}, "error")
        add(kind, {"batch_size": 10**6}, "ok", name="batch_size_above_n_rows")
        add(kind, {"device": "bogus"}, "error")
    for kind in (NCE, SR, CLF):
        for sizes in ((0,), (-3,), (2.5,)):
            add(kind, {"hidden_layer_sizes": sizes}, "error")
        add(kind, {"hidden_layer_sizes": ()}, "ok" if kind == CLF else "error")
        add(kind, {"hidden_layer_sizes": [8, 8]}, "ok")
    # NCEDensity
    for params in ({"noise_ratio": 0}, {"base_components": 0}, {"n_importance_samples": 1},
                   {"noise_scale": 0}):
        add(NCE, params, "error")
    for params in ({"noise": "self"}, {"marginals": "kde"}, {"base": "gaussian"}):
        add(NCE, params, "ok")
    # categorical_features of NCEDensity, on an ndarray and a DataFrame
    for spec, expect in (([5], "error"), ([-1], "error"), ([0.5], "error"),
                         (["nope"], "error"), ([True, False], "error"), ([0], "ok")):
        add(NCE, {"categorical_features": spec}, expect,
            name=f"categorical_features={spec!r} (ndarray)",
            X=lambda: np.c_[data(NCE)[:, :2], np.random.default_rng(2).integers(0, 3, 120)])
    for spec, expect in ((["nope"], "error"), (["c"], "ok"), ([9], "error"),
                         ([True, True], "error")):
        add(NCE, {"categorical_features": spec}, expect,
            name=f"categorical_features={spec!r} (DataFrame)", X=lambda: frame(c=colors()))
    # PCDRestrictedBoltzmann
    for params in ({"n_components": 0}, {"n_components": 2.5}, {"momentum": 1.0},
                   {"n_persistent_chains": 0}):
        add(RBM, params, "error")
    add(RBM, {"persistent": False}, "ok")
    add(RBM, {"visible_units": "gaussian"}, "ok", name="visible_units=gaussian on real X",
        X=lambda: data(NCE))
    add(RBM, {}, "error", name="bernoulli on real-valued X", X=lambda: data(NCE))
    # ShortRunEBM
    for params in ({"n_steps": 0}, {"step_size": 0}, {"buffer_size": 0},
                   {"image_shape": (1, 2, 2)}, {"image_shape": (1, -1, -3)},
                   {"image_shape": (1, 1, 3), "hidden_layer_sizes": (0,)}):
        add(SR, params, "error")
    for params in ({"persistent": False}, {"image_shape": (1, 1, 3)}):
        add(SR, params, "ok")
    # NCESoftmaxClassifier
    for params in ({"n_noise": 0}, {"noise_power": 1.5}, {"embedding_dim": 0}):
        add(CLF, params, "error")
    for params in ({"loss": "nce"}, {"loss": "sampled"}, {"loss": "in_batch"}):
        add(CLF, params, "ok")
    # DensityOutlierDetector
    from sklearn.neighbors import KernelDensity

    for params in ({"contamination": 0}, {"contamination": 0.6}, {"contamination": "auto"},
                   {"density": None}, {"density": "x"}, {"cv": 1}):
        add(OUT, params, "error")
    for params in ({"cv": 3}, {"density": KernelDensity()}):
        add(OUT, params, "ok")
    add(OUT, {"density": make(SR)}, "ok", name="density=ShortRunEBM(tiny)")
    # DensityImputer
    for params in ({"n_draws": 0}, {"n_draws": 2.5}, {"density": KernelDensity()},
                   {"density": "x"}):
        add(IMP, params, "error")
    add(IMP, {"sample_posterior": True}, "ok")
    add(IMP, {"density": make(SR)}, "ok", name="density=ShortRunEBM(tiny)")

    def indicator(ctx):
        est = make(IMP, add_indicator=True).fit(with_holes(data(IMP)))
        out = est.transform(with_holes(data(IMP)))
        return None if out.shape == (120, 6) and np.isfinite(out).all() else \
            f"add_indicator output shape {out.shape}"

    cases.append(Case(IMP, "hyperparameters", "add_indicator=True", indicator, "ok",
                      repro(IMP, "Xh = X.copy(); Xh[::4, 0] = np.nan; "
                                 "{E}.set_params(add_indicator=True).fit(Xh).transform(Xh)")))

    def rbm_imputer(ctx):
        X = data(RBM)
        Xh = with_holes(X)
        est = make(IMP, density=make(RBM)).fit(X)
        return imputation_failure(Xh, est.transform(Xh))[1]

    cases.append(Case(IMP, "hyperparameters", "density=PCDRestrictedBoltzmann(tiny)", rbm_imputer,
                      "ok", "DensityImputer(PCDRestrictedBoltzmann(n_components=8, n_iter=2, "
                            "random_state=0), random_state=0).fit(Xbin).transform(Xbin_with_nan)"))

    # method arguments: sample, sample_conditional
    for kind in DENSITIES:
        for n_samples in (0, 2.5):
            def bad_count(ctx, k=kind, n_samples=n_samples):
                fit(k, make(k), data(k)).sample(n_samples, random_state=0)
                return f"sample({n_samples!r}) accepted"

            cases.append(Case(kind, "hyperparameters", f"sample(n_samples={n_samples!r})",
                              bad_count, "error",
                              repro(kind, f"{{E}}.{{fit}}.sample({n_samples!r})")))

        def wrong_mask(ctx, k=kind):
            est = fit(k, make(k), data(k))
            est.sample_conditional(data(k)[:10], np.ones((2, 2), bool), random_state=0)
            return "a mask of the wrong shape accepted"

        cases.append(Case(kind, "hyperparameters", "sample_conditional(mask of wrong shape)",
                          wrong_mask, "error", repro(kind, "{E}.{fit}.sample_conditional("
                                                           "X[:10], np.ones((2, 2), bool))")))
    return cases


# ------------------------------------------------------------ huge requests
def huge_cases():
    cases = []

    def add(kind, name, run, body, expect="error"):
        cases.append(Case(kind, "huge", name, run, expect, repro(kind, body), quick=True,
                          message=r"\d" if expect == "error" else None))

    for kind in DENSITIES:
        def sample_huge(ctx, k=kind):
            est = fit(k, make(k), data(k))
            with ctx.memory_guard():
                est.sample(10**9)
            return "sample(10**9) accepted"

        add(kind, "sample(10**9)", sample_huge, "{E}.{fit}.sample(10**9)")


    def huge_parameter(kind, text, *, score=False, **params):
        """The case of ``params`` (``text``, as the repro writes them): the
        fit, or with ``score`` the scores after it, under the memory guard."""
        def run(ctx):
            X = data(kind)
            if score:
                est = make(kind, **params).fit(X)
                with ctx.memory_guard():
                    est.score_samples(X)
            else:
                with ctx.memory_guard():
                    make(kind, **params).fit(X)
            return f"{text} accepted"

        then = ".score_samples(X)" if score else ""
        add(kind, text, run, f"{{E}}.set_params({text}).fit(X){then}")

    huge_parameter(NCE, "n_importance_samples=10**10", score=True,
                   n_importance_samples=10**10)

    for kind in (NCE, SR, CLF):
        def big_net(ctx, k=kind):
            with ctx.memory_guard():
                fit(k, make(k, hidden_layer_sizes=(100000, 100000)), data(k))
            return "hidden_layer_sizes=(100000, 100000) accepted"

        add(kind, "hidden_layer_sizes=(100000, 100000)", big_net,
            "{E}.set_params(hidden_layer_sizes=(100000, 100000)).{fit}")

    huge_parameter(RBM, "n_components=10**9", n_components=10**9)
    huge_parameter(RBM, "n_persistent_chains=10**9", n_persistent_chains=10**9)

    def rbm_ais(ctx):
        X = (np.random.default_rng(0).normal(size=(120, 30)) > 0).astype(float)
        est = make(RBM, n_components=32, n_ais_chains=10**9).fit(X)
        with ctx.memory_guard():
            est.score_samples(X)
        return "n_ais_chains=10**9 accepted"

    add(RBM, "n_ais_chains=10**9 (AIS)", rbm_ais,
        "X = (rng.normal(size=(120, 30)) > 0) * 1.0; {E}.set_params(n_components=32, "
        "n_ais_chains=10**9).fit(X).score_samples(X)")

    huge_parameter(SR, "buffer_size=10**10", buffer_size=10**10)
    huge_parameter(SR, "n_ais_chains=10**9", score=True, n_ais_chains=10**9)

    def many_classes(ctx):
        import skebm

        classes = np.arange(10**8)
        with ctx.memory_guard():
            skebm.NCESoftmaxClassifier(random_state=0).partial_fit(
                data(CLF)[:3], np.array([0, 1, 2]), classes=classes)
        return "partial_fit(classes=np.arange(10**8)) accepted"

    cases.append(Case(CLF, "huge", "partial_fit(classes=np.arange(10**8))", many_classes,
                      "error", X_SRC[CLF] + "; NCESoftmaxClassifier(random_state=0).partial_fit("
                      "X[:3], [0, 1, 2], classes=np.arange(10**8))", quick=True, message=r"\d"))

    for method in ("predict_proba", "decision_function"):
        def huge_output(ctx, method=method):
            est = make(CLF).partial_fit(data(CLF)[:3], np.array([0, 1, 2]),
                                        classes=np.arange(10**5))
            X = np.zeros((10**6, 3))
            with ctx.memory_guard():
                getattr(est, method)(X)
            return f"{method} of 10**6 rows x 10**5 classes accepted"

        add(CLF, f"{method}(10**6 rows x 10**5 classes)", huge_output,
            "e = {E}.partial_fit(X[:3], [0, 1, 2], classes=np.arange(10**5)); "
            f"e.{method}(np.zeros((10**6, 3)))")

    def proba_small_many(ctx):
        est = make(CLF).partial_fit(data(CLF)[:3], np.array([0, 1, 2]), classes=np.arange(10**5))
        p = est.predict_proba(data(CLF)[:5])
        return None if p.shape == (5, 10**5) and np.allclose(p.sum(1), 1) else f"shape {p.shape}"

    cases.append(Case(CLF, "huge", "predict_proba(5 rows x 10**5 classes)", proba_small_many,
                      "ok", repro(CLF, "{E}.partial_fit(X[:3], [0, 1, 2], classes=np.arange("
                                       "10**5)).predict_proba(X[:5])")))

    def noise_huge(ctx):
        with ctx.memory_guard():
            make(CLF, loss="nce", n_noise=10**9).fit(data(CLF), labels(120))
        return "n_noise=10**9 accepted"

    add(CLF, "n_noise=10**9 (loss='nce')", noise_huge,
        "{E}.set_params(loss='nce', n_noise=10**9).fit(X, y)")

    def embedding_huge(ctx):
        with ctx.memory_guard():
            make(CLF, embedding_dim=10**9).fit(data(CLF), labels(120))
        return "embedding_dim=10**9 accepted"

    add(CLF, "embedding_dim=10**9", embedding_huge, "{E}.set_params(embedding_dim=10**9).fit(X, y)")

    def out_importance(ctx):
        with ctx.memory_guard():
            make(OUT, density__n_importance_samples=10**10).fit(data(OUT))
        return "density n_importance_samples=10**10 accepted"

    add(OUT, "density n_importance_samples=10**10", out_importance,
        "{E}.set_params(density__n_importance_samples=10**10).fit(X)")

    def imp_draws_mean(ctx):
        est = make(IMP, n_draws=10**9).fit(data(IMP))
        with ctx.memory_guard():
            return imputation_failure(with_holes(data(IMP)),
                                      est.transform(with_holes(data(IMP))))[1]

    add(IMP, "n_draws=10**9 (NCEDensity: conditional_mean)", imp_draws_mean,
        "Xh = X.copy(); Xh[::4, 0] = np.nan; {E}.set_params(n_draws=10**9).fit(X).transform(Xh)",
        expect="either")

    # A density without conditional_mean: the imputer averages n_draws draws.
    rbm = dict(TINY[RBM], visible_units="gaussian")

    def imp_draws_averaged(ctx):
        est = make(IMP, n_draws=10**9, density=make(RBM, **rbm)).fit(data(IMP))
        with ctx.memory_guard():
            est.transform(with_holes(data(IMP)))
        return "n_draws=10**9 with a density without conditional_mean accepted"

    add(IMP, "n_draws=10**9 (RBM: averaged draws)", imp_draws_averaged,
        f"Xh = X.copy(); Xh[::4, 0] = np.nan; DensityImputer(PCDRestrictedBoltzmann("
        f"{_kwargs_src(rbm)}), n_draws=10**9, random_state=0).fit(X).transform(Xh)")
    return cases


# ------------------------------------------------------------------ scales
#: score_samples(c X) must equal score_samples(X) - d log c to within this
#: many nats, on the mean over rows (each model fitted on its own data).
JACOBIAN_TOL = 0.5


def scale_cases():
    cases = []
    for kind in DENSITIES:
        params = {"visible_units": "gaussian", "learning_rate": 0.01} if kind == RBM else {}
        X_of = (lambda: data(NCE)) if kind == RBM else (lambda k=kind: data(k))
        for c in (1e-30, 1e-8, 1e8, 1e30):
            def jacobian(ctx, k=kind, c=c, params=params, X_of=X_of):
                X = X_of()
                s1, f1 = fit_observe(k, X, **params)
                sc, fc = fit_observe(k, c * X, **params)
                if f1 or fc:
                    return f1 or f"at scale {c:g}: {fc}"
                gap = float(np.mean(sc) - (np.mean(s1) - X.shape[1] * np.log(c)))
                if abs(gap) > JACOBIAN_TOL:
                    return (f"mean score_samples(cX) - [score_samples(X) - d log c] = {gap:.3g} "
                            f"nats (tolerance {JACOBIAN_TOL})")
                return None

            body = ("X = np.random.default_rng(0).normal(size=(120, 3)); "
                    f"a = {src(kind, **params)}.fit(X).score_samples(X); "
                    f"b = {src(kind, **params)}.fit({c:g} * X).score_samples({c:g} * X); "
                    f"b.mean() - (a.mean() - 3 * np.log({c:g}))")
            cases.append(Case(kind, "scales", f"jacobian_c={c:g}", jacobian, "ok", body))

        def far_rows(ctx, k=kind, params=params, X_of=X_of):
            X = X_of()
            est = fit(k, make(k, **params), X)
            inside = est.score_samples(X)
            far = est.score_samples(X * 1e30)
            if np.isnan(far).any() or np.isposinf(far).any():
                return "NaN or +inf score for rows 1e30 away"
            if not (far < inside.min()).all():
                return f"rows 1e30 away score {far.max():.3g}, above the data's {inside.min():.3g}"
            return None

        cases.append(Case(kind, "scales", "score_rows_1e30_away", far_rows, "either",
                          f"{X_SRC[NCE]}; e = {src(kind, **params)}.fit(X); "
                          "e.score_samples(X * 1e30) vs e.score_samples(X)"))

        def sample_scaled(ctx, k=kind, params=params, X_of=X_of):
            X = 1e30 * X_of()
            drawn = fit(k, make(k, **params), X).sample(50, random_state=0)
            if not np.isfinite(drawn).all():
                return "non-finite draws"
            ratio = drawn.std(0) / X.std(0)
            return None if ((ratio > 0.2) & (ratio < 5)).all() else \
                f"draws' std / data std = {np.round(ratio, 3)}"

        cases.append(Case(kind, "scales", "sample_at_1e30", sample_scaled, "ok",
                          f"{X_SRC[NCE]}; {src(kind, **params)}.fit(1e30 * X).sample(50)"))

    cases.append(Case(RBM, "scales", "bernoulli_X_times_1e30",
                      lambda ctx: fit_observe(RBM, data(RBM) * 1e30)[1], "error",
                      repro(RBM, "{E}.fit(X * 1e30)")))

    for c in (1e-30, 1e30):
        def outlier_scaled(ctx, c=c):
            est1 = make(OUT).fit(data(OUT))
            estc = make(OUT).fit(c * data(OUT))
            X_new = data(OUT, seed=1)
            same = np.mean(est1.predict(X_new) == estc.predict(c * X_new))
            return None if same >= 0.95 else f"only {same:.0%} of predictions agree after scaling"

        cases.append(Case(OUT, "scales", f"predict_invariant_c={c:g}", outlier_scaled, "ok",
                          repro(OUT, f"{{E}}.fit(X).predict(X2) vs {{E}}.fit({c:g} * X)"
                                     f".predict({c:g} * X2)")))

        def imputer_scaled(ctx, c=c):
            Xh = with_holes(data(IMP))
            a = make(IMP).fit(data(IMP)).transform(Xh)
            b = make(IMP).fit(c * data(IMP)).transform(c * Xh)
            if not np.isfinite(b).all():
                return "non-finite imputations"
            holes = np.isnan(Xh)
            err = np.abs(b[holes] / c - a[holes]).max()
            return None if err < 0.05 else f"imputations of cX / c differ by up to {err:.3g}"

        cases.append(Case(IMP, "scales", f"transform_equivariant_c={c:g}", imputer_scaled, "ok",
                          repro(IMP, f"{{E}}.fit(X).transform(Xh) vs {{E}}.fit({c:g} * X)"
                                     f".transform({c:g} * Xh) / {c:g}")))

    for c in (1e30, 1e8, 1e-30):
        def clf_scaled(ctx, c=c):
            est = make(CLF, max_iter=20).fit(c * data(CLF), labels(120))
            warned = ctx.warned(r"[Ss]cale")
            p = est.predict_proba(c * data(CLF))
            if not np.isfinite(p).all():
                return "non-finite probabilities" + (" (after a warning)" if warned else "")
            if warned:
                return None
            if np.ptp(p, axis=0).max() < 1e-3:
                return f"constant probabilities {np.round(p[0], 3)} with no warning"
            return None

        cases.append(Case(CLF, "scales", f"features_times_{c:g}", clf_scaled,
                          "either", repro(CLF, f"{{E}}.set_params(max_iter=20).fit({c:g} * X, y)"
                                               f".predict_proba({c:g} * X)")))
    return cases


# -------------------------------------------------------------------- state
PUBLIC_METHODS = {
    NCE: ("score_samples", "sample", "conditional_mean", "log_partition_", "is_categorical_"),
    RBM: ("score_samples", "transform", "pseudo_likelihood", "components_"),
    SR: ("score_samples", "sample_conditional", "log_partition_method_"),
    CLF: ("predict", "predict_proba", "score"),
    OUT: ("predict", "decision_function"),
    IMP: ("transform",),
}


def state_cases():
    from sklearn.base import clone

    cases = []

    def add(kind, name, run, body, expect="ok"):
        cases.append(Case(kind, "state", name, run, expect, repro(kind, body)))

    for kind in KINDS:
        for method in PUBLIC_METHODS[kind]:
            def unfitted(ctx, k=kind, m=method):
                est = make(k)
                X = data(k)
                if m == "sample":
                    est.sample(2)
                elif m == "score":
                    est.score(X, labels(120)) if k == CLF else est.score(X)
                elif m.endswith("_"):
                    getattr(est, m)
                else:
                    getattr(est, m)(X)
                return f"{m} before fit did not raise"

            from sklearn.exceptions import NotFittedError

            cases.append(Case(kind, "state", f"before_fit_{method}", unfitted, "error",
                              repro(kind, f"{{E}}.{method}" + ("" if method.endswith("_")
                                                               else "(X)")),
                              message=r"not fitted|fit", error_type=NotFittedError))

        def failed_refit(X_bad, y_bad=_DEFAULT, k=kind, params=None):
            def run(ctx):
                est = fit(k, make(k), data(k))
                before, _ = observe(k, est, data(k))
                names_before = getattr(est, "feature_names_in_", None)
                if params:
                    est.set_params(**params)
                try:
                    fit(k, est, X_bad(), y_bad)
                    return "the bad refit did not fail"
                except (ValueError, TypeError):
                    pass
                if params:
                    est.set_params(**{name: getattr(make(k), name) for name in params})
                if est.n_features_in_ != data(k).shape[1]:
                    return f"n_features_in_ became {est.n_features_in_} after a failed fit"
                if getattr(est, "feature_names_in_", None) is not names_before:
                    return "feature_names_in_ changed after a failed fit"
                after, failure = observe(k, est, data(k))
                return first(failure, close(after, before, "output after a failed refit",
                                            rtol=1e-12, atol=1e-12))
            return run

        d_new = (6 if kind == RBM else 3) + 2
        bad_wide = {
            NCE: lambda: data(NCE, n=4, d=5),            # rows <= features: the base refuses
            SR: lambda: data(SR, n=4, d=5),
            RBM: lambda: data(NCE, n=30, d=8) * 5,       # outside [0, 1], after validation
            CLF: lambda: data(CLF, d=5),
            OUT: lambda: data(OUT, n=4, d=5),
            IMP: lambda: data(IMP, n=4, d=5),
        }[kind]
        y_bad = np.zeros(120, int) if kind == CLF else _DEFAULT   # one class
        add(kind, "failed_refit_new_feature_count", failed_refit(bad_wide, y_bad),
            f"e = {{E}}.{{fit}}; e.fit(data with {d_new} features that fails after "
            "validation); e.n_features_in_ and e.{out} unchanged")
        import pandas as pd

        add(kind, "failed_refit_dataframe_names", failed_refit(
            lambda k=kind: pd.DataFrame(np.where(np.arange(120)[:, None] == 3, np.inf, data(k)),
                                        columns=names(k))),
            "e = {E}.{fit}; X2 = X.copy(); X2[3] = np.inf; e.fit(pd.DataFrame(X2, columns="
            "['f0', ...])) fails; no feature_names_in_ appears, e.{out} unchanged")
        bad_param = {NCE: {"max_iter": 0}, SR: {"max_iter": 0}, CLF: {"max_iter": 0},
                     RBM: {"n_iter": 0}, OUT: {"contamination": 0.9},
                     IMP: {"n_draws": 0}}[kind]
        add(kind, "failed_refit_bad_param", failed_refit(
            lambda k=kind: data(k, d=data(k).shape[1] + 1), params=bad_param),
            f"e = {{E}}.{{fit}}; e.set_params(**{bad_param!r}).fit(X with one more feature) "
            "fails; restore; e.{out} unchanged")

        def set_params_after(ctx, k=kind):
            after_params = {
                NCE: dict(n_importance_samples=50, noise_scale=3.0, hidden_layer_sizes=(4,),
                          categorical_features=[0]),
                RBM: dict(n_ais_chains=3, n_components=3, visible_units="gaussian"),
                SR: dict(n_steps=1, step_size=0.5, n_ais_chains=3, hidden_layer_sizes=(4,),
                         image_shape=(1, 1, 3)),
                CLF: dict(embedding_dim=2, hidden_layer_sizes=(4,), loss="nce"),
                OUT: dict(contamination=0.4, density__n_importance_samples=50),
                IMP: dict(n_draws=1, sample_posterior=True, random_state=5),
            }[k]
            est = fit(k, make(k), data(k))
            twin = fit(k, make(k), data(k))
            est.set_params(**after_params)   # before the first score: log Z is made lazily
            value, failure = observe(k, est, data(k))
            twin_value, _ = observe(k, twin, data(k))
            failures = [failure, close(value, twin_value, "output after set_params vs a twin "
                                       "fitted the same", rtol=1e-9, atol=1e-9)]
            if k in DENSITIES:
                a = est.sample(5, random_state=0)
                b = twin.sample(5, random_state=0)
                failures.append(close(a, b, "sample after set_params", rtol=1e-9, atol=1e-9))
            return first(*failures)

        add(kind, "set_params_after_fit", set_params_after,
            "e, t = {E}.{fit}, {E}.{fit}; e.set_params(<inference-looking params>); "
            "e.{out} vs t.{out} (and sample(5, random_state=0))")

        def clone_refit(ctx, k=kind):
            est = fit(k, make(k), data(k))
            value, _ = observe(k, est, data(k))
            copy_ = clone(est)
            if hasattr(copy_, "n_features_in_") or hasattr(copy_, "module_"):
                return "clone kept fitted attributes"
            other, failure = observe(k, fit(k, copy_, data(k)), data(k))
            return first(failure, close(other, value, "clone refit vs original", rtol=1e-9,
                                        atol=1e-9))

        add(kind, "clone_refit_reproduces", clone_refit,
            "e = {E}.{fit}; sklearn.base.clone(e).{fit}.{out} vs e.{out}")

        def pickle_round(ctx, k=kind, score_first=True):
            est = fit(k, make(k), data(k))
            twin = fit(k, make(k), data(k))
            if score_first:
                observe(k, est, data(k))
            loaded = pickle.loads(pickle.dumps(est))
            value, failure = observe(k, loaded, data(k))
            reference, _ = observe(k, twin, data(k))
            failures = [failure, close(value, reference, "pickled output", rtol=1e-9, atol=1e-9)]
            if k in DENSITIES:
                failures.append(close(loaded.sample(4, random_state=0),
                                      twin.sample(4, random_state=0), "pickled sample",
                                      rtol=1e-9, atol=1e-9))
            return first(*failures)

        add(kind, "pickle_after_score", pickle_round,
            "e = {E}.{fit}; e.{out}; pickle.loads(pickle.dumps(e)).{out} vs e.{out}")
        add(kind, "pickle_before_score",
            lambda ctx, k=kind: pickle_round(ctx, k, score_first=False),
            "e = {E}.{fit}; pickle.loads(pickle.dumps(e)).{out} vs a twin's")

        def deep_copy(ctx, k=kind):
            est = fit(k, make(k), data(k))
            value, _ = observe(k, est, data(k))
            other, failure = observe(k, copy.deepcopy(est), data(k))
            return first(failure, close(other, value, "deepcopy", rtol=1e-12, atol=1e-12))

        add(kind, "deepcopy", deep_copy, "e = {E}.{fit}; copy.deepcopy(e).{out} vs e.{out}")

    for kind in (NCE, SR, CLF):
        def warm(ctx, k=kind):
            est = fit(k, make(k), data(k))
            n_iter = est.n_iter_
            est.set_params(warm_start=True)
            value, failure = observe(k, fit(k, est, data(k)), data(k))
            if est.n_iter_ <= n_iter:
                return f"n_iter_ went from {n_iter} to {est.n_iter_} in a warm fit"
            return failure

        add(kind, "warm_start_continues", warm,
            "e = {E}.{fit}; e.set_params(warm_start=True).{fit}.{out}")

        def warm_new_width(ctx, k=kind):
            est = fit(k, make(k), data(k))
            est.set_params(warm_start=True)
            fit(k, est, data(k, d=data(k).shape[1] + 1))
            return "warm_start fit on another feature count accepted"

        add(kind, "warm_start_other_feature_count", warm_new_width,
            "e = {E}.{fit}; e.set_params(warm_start=True).fit(X with 4 features)",
            expect="error")

    for kind in TORCH_KINDS:
        def partial(ctx, k=kind):
            est = make(k)
            for chunk in (data(k)[:60], data(k)[60:]):
                if k == CLF:
                    est.partial_fit(chunk, labels(120)[:60], classes=[0, 1, 2])
                else:
                    est.partial_fit(chunk)
            return observe(k, est, data(k))[1]

        add(kind, "partial_fit_two_chunks", partial,
            "e = {E}; e.partial_fit(X[:60]); e.partial_fit(X[60:]); e.{out}")

        def partial_width(ctx, k=kind):
            est = make(k)
            if k == CLF:
                est.partial_fit(data(k), labels(120), classes=[0, 1, 2])
                est.partial_fit(data(k, d=4), labels(120))
            else:
                est.partial_fit(data(k))
                est.partial_fit(data(k, d=data(k).shape[1] + 1))
            return "partial_fit on another feature count accepted"

        add(kind, "partial_fit_other_feature_count", partial_width,
            "e = {E}; e.partial_fit(X); e.partial_fit(X with one more feature)", expect="error")
    return cases


# --------------------------------------------------------------- interrupts
LONG_FIT = {
    NCE: dict(max_iter=10**5, early_stopping=False),
    SR: dict(max_iter=10**5, early_stopping=False),
    RBM: dict(n_iter=10**6),
    CLF: dict(max_iter=10**6, early_stopping=False),
    OUT: dict(density__max_iter=10**5, density__early_stopping=False),
    IMP: dict(density__max_iter=10**5, density__early_stopping=False),
}


@contextlib.contextmanager
def epoch_interrupt(kind, est, at_call=2):
    """KeyboardInterrupt from the ``at_call``-th epoch of est's fits (of the
    wrapped NCEDensity's, for the wrappers)."""
    import skebm

    owner = skebm.NCEDensity if kind in (OUT, IMP) else est
    original = (skebm.NCEDensity._run_epoch if kind in (OUT, IMP) else est._run_epoch)
    calls = [0]

    def run_epoch(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= at_call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    if kind in (OUT, IMP):
        owner._run_epoch = lambda self, *a, **k: run_epoch(self, *a, **k)
    else:
        est._run_epoch = run_epoch
    try:
        yield
    finally:
        if kind in (OUT, IMP):
            owner._run_epoch = original
        else:
            del est._run_epoch


@contextlib.contextmanager
def alarm_interrupt(seconds):
    """KeyboardInterrupt from a SIGALRM handler after ``seconds``."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def interrupt_cases():
    cases = []

    def add(kind, name, run, body):
        cases.append(Case(kind, "interrupts", name, run, "ok", repro(kind, body), isolate=True))

    for kind in KINDS:

        def after_interrupt(est, k, before, reference_state):
            """What is wrong with ``est`` after an interrupted refit, or None."""
            if est.n_features_in_ != data(k).shape[1]:
                return f"n_features_in_ became {est.n_features_in_}"
            if hasattr(est, "feature_names_in_"):
                return "feature_names_in_ appeared"
            value, failure = observe(k, est, data(k))
            failure = failure or close(value, before, "output after the interrupt", rtol=1e-12,
                                       atol=1e-12)
            if failure:
                return failure
            refit, failure = observe(k, fit(k, est, data(k)), data(k))
            return first(failure, close(refit, before, "a refit after the interrupt vs the "
                                        "first fit", rtol=1e-9, atol=1e-9),
                         state_changed(reference_state))

        def epoch_refit(ctx, k=kind):
            import pandas as pd

            state = torch_state()
            est = fit(k, make(k), data(k))
            before, _ = observe(k, est, data(k))
            wide = data(k, d=data(k).shape[1] + 1)
            wide = pd.DataFrame(wide, columns=[f"f{i}" for i in range(wide.shape[1])])
            with epoch_interrupt(k, est):
                try:
                    fit(k, est, wide)
                    return "the patched fit was not interrupted"
                except KeyboardInterrupt:
                    pass
            return after_interrupt(est, k, before, state)

        add(kind, "epoch_interrupt_during_refit", epoch_refit,
            "e = {E}.{fit}; patch e._run_epoch to raise KeyboardInterrupt at epoch 2; "
            "e.fit(DataFrame with one more feature) -> KeyboardInterrupt; e.{out} unchanged")

        def epoch_first_fit(ctx, k=kind):
            from sklearn.exceptions import NotFittedError
            from sklearn.utils.validation import check_is_fitted

            state = torch_state()
            est = make(k)
            with epoch_interrupt(k, est):
                try:
                    fit(k, est, data(k))
                    return "the patched fit was not interrupted"
                except KeyboardInterrupt:
                    pass
            leftovers = [name for name in vars(est) if name.endswith("_") and
                         not name.startswith("_")]
            if leftovers:
                return f"an interrupted first fit left fitted attributes {leftovers}"
            try:
                check_is_fitted(est)
                return "check_is_fitted passes on the interrupted estimator"
            except NotFittedError:
                pass
            value, failure = observe(k, fit(k, est, data(k)), data(k))
            reference, _ = fit_observe(k, data(k))
            return first(failure, close(value, reference, "fit after an interrupted first fit",
                                        rtol=1e-9, atol=1e-9), state_changed(state))

        add(kind, "epoch_interrupt_first_fit", epoch_first_fit,
            "e = {E}; patch e._run_epoch to raise KeyboardInterrupt at epoch 2; e.{fit} -> "
            "KeyboardInterrupt; e must be unfitted, then e.{fit} works")

        def alarm_refit(ctx, k=kind):
            state = torch_state()
            est = fit(k, make(k), data(k))
            before, _ = observe(k, est, data(k))
            original = {name: est.get_params()[name] for name in LONG_FIT[k]}
            est.set_params(**LONG_FIT[k])
            started = time.perf_counter()
            try:
                with alarm_interrupt(0.5):
                    fit(k, est, data(k))
                return "the long fit ended before the alarm"
            except KeyboardInterrupt:
                pass
            waited = time.perf_counter() - started
            est.set_params(**original)
            failure = after_interrupt(est, k, before, state)
            if failure is None and waited > 5:
                return f"the interrupt took {waited:.1f} s to stop the fit"
            return failure

        add(kind, "alarm_interrupt_during_long_fit", alarm_refit,
            f"e = {{E}}.{{fit}}; e.set_params(**{LONG_FIT[kind]!r}); SIGALRM handler raising "
            "KeyboardInterrupt after 0.5 s during e.{fit}; restore params; e.{out} unchanged and "
            "a refit reproduces it")

    for kind, params, X_of in ((NCE, dict(n_importance_samples=4_000_000), lambda: data(NCE)),
                               (SR, dict(n_ais_chains=200, n_ais_temperatures=4000),
                                lambda: data(SR)),
                               (RBM, dict(n_components=32, n_ais_chains=200,
                                          n_ais_temperatures=3000),
                                lambda: (np.random.default_rng(0).normal(size=(120, 30)) > 0)
                                .astype(float))):
        def alarm_score(ctx, k=kind, params=params, X_of=X_of):
            import skebm.nce

            X = X_of()
            est = make(k, **params).fit(X)
            twin = make(k, **params).fit(X)
            # NCEDensity stops drawing once log Z is precise: here, only at
            # the last draw, so that the alarm finds it drawing.
            target = skebm.nce.LOG_Z_TARGET_ERROR
            skebm.nce.LOG_Z_TARGET_ERROR = 0.0
            try:
                with alarm_interrupt(0.3):
                    est.score_samples(X)
                return "log Z was made before the alarm"
            except KeyboardInterrupt:
                pass
            finally:
                skebm.nce.LOG_Z_TARGET_ERROR = target
            return close(est.score_samples(X), twin.score_samples(X),
                         "score_samples after an interrupted log Z vs a twin's", rtol=1e-9,
                         atol=1e-9)

        add(kind, "alarm_interrupt_during_log_partition", alarm_score,
            f"e = {{E}}.set_params(**{params!r}).fit(X); interrupt e.score_samples(X) after "
            "0.3 s; e.score_samples(X) vs an uninterrupted twin's")

    return cases


# ------------------------------------------------------------------ threads
def thread_cases():
    cases = []

    def add(kind, name, run, body, isolate=False):
        if kind in (OUT, IMP) and name in ("under_threadpool_limits_1",
                                            "torch_set_num_threads_1_kept"):
            return
        cases.append(Case(kind, "threads", name, run, "ok", repro(kind, body), isolate=isolate))

    def in_thread(function):
        result = {}

        def target():
            try:
                result["value"] = function()
            except BaseException as exc:  # noqa: BLE001 - reported below
                result["error"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        return thread, result

    def joined(thread, result):
        thread.join()
        if "error" in result:
            raise result["error"]
        return result["value"]

    for kind in KINDS:
        def one_thread(ctx, k=kind):
            reference, _ = fit_observe(k, data(k))
            value, failure = joined(*in_thread(lambda: fit_observe(k, data(k))))
            return first(failure, close(value, reference, "fit in a thread", rtol=1e-6,
                                        atol=1e-6))

        add(kind, "fit_in_thread", one_thread,
            "threading.Thread(target=lambda: {E}.{fit}) then .{out} vs the main thread's")

        def two_threads(ctx, k=kind):
            state = torch_state()
            X2 = data(k, seed=1)
            ref1, _ = fit_observe(k, data(k))
            ref2, _ = fit_observe(k, X2)
            a = in_thread(lambda: fit_observe(k, data(k)))
            b = in_thread(lambda: fit_observe(k, X2))
            (v1, f1), (v2, f2) = joined(*a), joined(*b)
            return first(f1, f2, close(v1, ref1, "first of two concurrent fits", rtol=1e-5,
                                       atol=1e-5),
                         close(v2, ref2, "second of two concurrent fits", rtol=1e-5, atol=1e-5),
                         state_changed(state))

        add(kind, "two_concurrent_fits", two_threads,
            "two threads each {E}.{fit} on different X; outputs vs sequential fits; "
            "torch.get_num_threads() unchanged")

        def shared_scores(ctx, k=kind):
            est = fit(k, make(k), data(k))     # log Z not made yet
            twin = fit(k, make(k), data(k))
            reference, _ = observe(k, twin, data(k))
            threads = [in_thread(lambda: observe(k, est, data(k))) for _ in range(3)]
            outputs = [joined(*t) for t in threads]
            return first(*[f for _, f in outputs],
                         *[close(v, reference, "concurrent outputs of one fitted estimator",
                                 rtol=1e-9, atol=1e-9) for v, _ in outputs])

        add(kind, "concurrent_outputs_one_estimator", shared_scores,
            "e = {E}.{fit}; three threads call e.{out} at once (first use); vs a twin's")

        def pool_limits(ctx, k=kind):
            from threadpoolctl import threadpool_info, threadpool_limits

            reference, _ = fit_observe(k, data(k))
            with threadpool_limits(limits=1):
                inside = [p["num_threads"] for p in threadpool_info()]
                value, failure = fit_observe(k, data(k))
                after = [p["num_threads"] for p in threadpool_info()]
            return first(failure, close(value, reference, "under threadpool_limits(1)",
                                        rtol=1e-6, atol=1e-6),
                         None if inside == after else f"BLAS threads {inside} -> {after}")

        add(kind, "under_threadpool_limits_1", pool_limits,
            "with threadpoolctl.threadpool_limits(1): {E}.{fit}.{out}")

        def torch_one_thread(ctx, k=kind):
            import torch

            previous = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                value, failure = fit_observe(k, data(k))
                now = torch.get_num_threads()
            finally:
                torch.set_num_threads(previous)
            return first(failure, None if now == 1 else
                         f"torch.get_num_threads() became {now} after fit (was set to 1)")

        add(kind, "torch_set_num_threads_1_kept", torch_one_thread,
            "torch.set_num_threads(1); {E}.{fit}.{out}; torch.get_num_threads() == 1")
    return cases


# ---------------------------------------------------------- torch settings
#: The torch-globals cases the wrappers (DensityOutlierDetector, DensityImputer) get.
WRAPPER_TORCH_CASES = ("default_dtype_float64_fit_and_score", "default_device_meta_fit_and_score",
                       "fit_inside_torch_no_grad")


def torch_cases():
    cases = []

    def add(kind, name, run, body, expect="ok"):
        if kind in (OUT, IMP) and name not in WRAPPER_TORCH_CASES:
            return
        cases.append(Case(kind, "torch-globals", name, run, expect, repro(kind, body),
                          isolate=True))

    @contextlib.contextmanager
    def default_dtype(dtype):
        import torch

        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)

    @contextlib.contextmanager
    def default_device(device):
        import torch

        torch.set_default_device(device)
        try:
            yield
        finally:
            torch.set_default_device(None)

    for kind in KINDS:
        def dtype_fit(ctx, k=kind, dtype="float64"):
            import torch

            reference, _ = fit_observe(k, data(k))
            with default_dtype(getattr(torch, dtype)):
                value, failure = fit_observe(k, data(k))
            return first(failure, close(value, reference, f"fit under default {dtype}",
                                        rtol=1e-5, atol=1e-5))

        add(kind, "default_dtype_float64_fit_and_score", dtype_fit,
            "torch.set_default_dtype(torch.float64); {E}.{fit}.{out} vs the float32-default one")
        def dtype_score(ctx, k=kind):
            import torch

            est = fit(k, make(k), data(k))
            twin = fit(k, make(k), data(k))
            with default_dtype(torch.float64):
                value, failure = observe(k, est, data(k))
            return first(failure, close(value, observe(k, twin, data(k))[0],
                                        "score under default float64", rtol=1e-9, atol=1e-9))

        add(kind, "default_dtype_float64_score_only", dtype_score,
            "e = {E}.{fit}; torch.set_default_dtype(torch.float64); e.{out}")

        def dtype_pickle(ctx, k=kind):
            import torch

            est = fit(k, make(k), data(k))
            reference, _ = observe(k, est, data(k))
            with default_dtype(torch.float64):
                blob = pickle.dumps(est)
            loaded = pickle.loads(blob)
            value, failure = observe(k, loaded, data(k))
            return first(failure, close(value, reference, "pickled under float64", rtol=1e-9,
                                        atol=1e-9))

        add(kind, "default_dtype_float64_pickle", dtype_pickle,
            "e = {E}.{fit}; under torch.set_default_dtype(torch.float64) pickle.dumps(e); "
            "loads under float32; .{out}")

        def meta_fit(ctx, k=kind):
            reference, _ = fit_observe(k, data(k))
            with default_device("meta"):
                value, failure = fit_observe(k, data(k))
            return first(failure, close(value, reference, "fit under default device meta",
                                        rtol=1e-6, atol=1e-6))

        add(kind, "default_device_meta_fit_and_score", meta_fit,
            "torch.set_default_device('meta'); {E}.{fit}.{out}", expect="either")

        def meta_score(ctx, k=kind):
            est = fit(k, make(k), data(k))
            twin = fit(k, make(k), data(k))
            with default_device("meta"):
                value, failure = observe(k, est, data(k))
            return first(failure, close(value, observe(k, twin, data(k))[0],
                                        "score under default device meta", rtol=1e-9, atol=1e-9))

        add(kind, "default_device_meta_score_only", meta_score,
            "e = {E}.{fit}; torch.set_default_device('meta'); e.{out}", expect="either")

        def meta_pickle(ctx, k=kind):
            est = fit(k, make(k), data(k))
            reference, _ = observe(k, est, data(k))
            with default_device("meta"):
                loaded = pickle.loads(pickle.dumps(est))
            value, failure = observe(k, loaded, data(k))
            return first(failure, close(value, reference, "pickled under device meta",
                                        rtol=1e-9, atol=1e-9))

        add(kind, "default_device_meta_pickle_round_trip", meta_pickle,
            "e = {E}.{fit}; under torch.set_default_device('meta'): "
            "e2 = pickle.loads(pickle.dumps(e)); then e2.{out}", expect="either")

        def no_grad(ctx, k=kind, mode="no_grad"):
            import torch

            reference, _ = fit_observe(k, data(k))
            with getattr(torch, mode)():
                value, failure = fit_observe(k, data(k))
            return first(failure, close(value, reference, f"fit inside torch.{mode}()",
                                        rtol=1e-6, atol=1e-6))

        add(kind, "fit_inside_torch_no_grad", no_grad,
            "with torch.no_grad(): {E}.{fit}.{out}", expect="either")
        def global_rng(ctx, k=kind):
            import torch

            torch.manual_seed(123)
            np.random.seed(123)
            torch_before, numpy_before = torch.get_rng_state(), np.random.get_state()[1].copy()
            est = fit(k, make(k), data(k))
            observe(k, est, data(k))
            if k in DENSITIES:
                est.sample(3, random_state=0)
            if not torch.equal(torch_before, torch.get_rng_state()):
                return "torch's global RNG state changed"
            if not np.array_equal(numpy_before, np.random.get_state()[1]):
                return "numpy's global RNG state changed"
            return None

        add(kind, "global_rng_untouched", global_rng,
            "torch.manual_seed(123); s = torch.get_rng_state(); {E}.{fit}.{out}; "
            "torch.get_rng_state() == s (numpy too)")

    return cases


# ------------------------------------------------------------------- tables
def table_cases():
    import pandas as pd

    cases = []

    def table_observe(kind, df_fit, df_out=None, **params):
        """Fit on the table, observe on ``df_out`` (the imputer: with holes in
        x and in the first non-numeric column); the check of the output."""
        est = make(kind, **params).fit(df_fit)
        df = df_fit if df_out is None else df_out
        if kind == NCE:
            s = est.score_samples(df)
            return None if s.shape == (len(df),) and np.isfinite(s).all() else \
                f"score_samples shape {s.shape}, non-finite {np.sum(~np.isfinite(s))}"
        if kind == OUT:
            d = est.decision_function(df)
            return None if d.shape == (len(df),) and np.isfinite(d).all() else \
                f"decision_function shape {d.shape}, non-finite {np.sum(~np.isfinite(d))}"
        holes = df.copy()
        if "x" in holes.columns:
            holes.loc[holes.index[::4], "x"] = np.nan
        other = [c for c in df.columns if c not in ("x", "z")]
        if other:
            holes[other[0]] = holes[other[0]].where(np.arange(len(df)) % 5 != 1)
        filled = np.asarray(est.transform(holes), dtype=object)
        if filled.shape != df.shape:
            return f"transform shape {filled.shape}, expected {df.shape}"
        if pd.isna(pd.DataFrame(filled)).to_numpy().any():
            return "transform left missing values"
        for j, name in enumerate(df.columns):
            observed = ~pd.isna(holes[name]).to_numpy()
            got = filled[:, j]
            want = holes[name].astype(object).to_numpy()
            if not all(_same(a, b) for a, b in zip(got[observed], want[observed])):
                return f"transform changed observed cells of column {name!r}"
            numeric = (pd.api.types.is_numeric_dtype(df[name])
                       and not pd.api.types.is_bool_dtype(df[name]))
            if not numeric:
                seen = {_key(v) for v in df[name].dropna()}
                new = {_key(v) for v in got[~observed]} - seen
                if new:
                    return f"column {name!r} filled with unseen values {sorted(map(str, new))[:3]}"
        return None

    def unseen_flagged(df_fit, df_out):
        """The outlier detector's rule for a value the density gives
        probability 0: its row is an outlier, every decision finite."""
        est = make(OUT).fit(df_fit)
        unseen = ~df_out["c"].astype(object).isin(set(df_fit["c"].astype(object))).to_numpy()
        decision = est.decision_function(df_out)
        if not np.isfinite(decision).all():
            return f"decision_function non-finite {np.sum(~np.isfinite(decision))}"
        if not np.all(est.predict(df_out)[unseen] == -1):
            return "a row with a value of probability 0 was not flagged"
        return None

    def add(kind, name, run, expect, body, message=None):
        cases.append(Case(kind, "tables", name, run, expect,
                          f"{FRAME_SRC}; {body.replace('{E}', src(kind))}", message=message))

    n = 120
    idx = np.arange(n)
    for kind in TABLE_KINDS:
        variants = [
            ("category_column", lambda: frame(c=pd.Categorical(colors())), "ok",
             "df['c'] = pd.Categorical(c)"),
            ("object_string_column", lambda: frame(c=colors().astype(object)), "ok",
             "df['c'] = c.astype(object)"),
            ("pandas_string_dtype_column", lambda: frame(c=pd.array(colors(), dtype="string")),
             "ok", "df['c'] = pd.array(c, dtype='string')"),
            ("bool_column", lambda: frame(c=colors() == "red"), "ok", "df['c'] = c == 'red'"),
            ("nullable_Int64_with_NA_many_levels", lambda: frame(c=pd.array(
                np.where(idx % 7 == 0, None, idx % 40), dtype="Int64")), "ok",
             "df['c'] = pd.array(np.where(np.arange(120) % 7 == 0, None, np.arange(120) % 40), "
             "dtype='Int64')"),
            ("nullable_Int64_with_NA_3_levels", lambda: frame(c=pd.array(
                np.where(idx % 7 == 0, None, idx % 3), dtype="Int64")), "ok",
             "df['c'] = pd.array(np.where(np.arange(120) % 7 == 0, None, np.arange(120) % 3), "
             "dtype='Int64')"),
            ("nullable_Float64_with_NA", lambda: frame(c=pd.array(
                np.where(idx % 7 == 0, None, np.sin(idx)), dtype="Float64")), "ok",
             "df['c'] = pd.array(np.where(np.arange(120) % 7 == 0, None, np.sin(np.arange(120)))"
             ", dtype='Float64')"),
            ("category_column_with_NaN", lambda: frame(c=pd.Categorical(
                np.where(idx % 6 == 0, None, colors()))), "ok",
             "df['c'] = pd.Categorical(np.where(np.arange(120) % 6 == 0, None, c))"),
            ("string_column_with_None", lambda: frame(c=np.where(idx % 6 == 0, None,
                                                                 colors()).astype(object)),
             "ok", "df['c'] = np.where(np.arange(120) % 6 == 0, None, c).astype(object)"),
            ("row_all_NaN_at_fit", lambda: frame(c=pd.Categorical(colors())).assign(
                x=np.where(idx == 5, np.nan, frame()["x"]),
                z=np.where(idx == 5, np.nan, frame()["z"]),
                c=pd.Categorical(np.where(idx == 5, None, colors()))), "ok",
             "row 5 of df (x, z, categorical c) all missing"),
        ]
        for name, make_df, expect, body in variants:
            if kind == OUT and name not in OUTLIER_TABLE_VARIANTS:
                continue
            add(kind, name, lambda ctx, k=kind, f=make_df: table_observe(k, f()), expect,
                f"{body}; {{E}}.fit(df) then score/decision/transform on it")

        # refusals that must name the column
        refusals = [
            ("all_NaN_numeric_column", lambda: (frame(empty=np.full(n, np.nan)), None), "empty",
             "df['empty'] = np.nan; {E}.fit(df)"),
            ("all_missing_category_column", lambda: (frame(empty=pd.Categorical([None] * n,
                                                     categories=["a"])), None), "empty",
             "df['empty'] = pd.Categorical([None] * 120, categories=['a']); {E}.fit(df)"),
            ("unseen_category_at_score", lambda: (
                frame(c=pd.Categorical(colors())),
                frame(c=pd.Categorical(np.where(idx == 3, "violet", colors())))), "'c'|\"c\"|c",
             "{E}.fit(df.assign(c=pd.Categorical(c))) then score on c[3] = 'violet'"),
            ("unseen_string_at_score", lambda: (
                frame(c=colors().astype(object)),
                frame(c=np.where(idx == 3, "violet", colors()).astype(object))), "'c'|\"c\"",
             "{E}.fit(df.assign(c=c)) then score on c[3] = 'violet'"),
            ("strings_in_numeric_column_at_score", lambda: (
                frame(), frame().assign(x=frame()["x"].astype(object).where(idx != 3, "abc"))),
             "'x'|\"x\"", "{E}.fit(df) then score on df with x[3] = 'abc'"),
            ("numbers_in_category_column_at_score", lambda: (
                frame(c=colors().astype(object)), frame(c=idx % 3)), "'c'|\"c\"",
             "{E}.fit(df.assign(c=c)) then score on c = np.arange(120) % 3"),
            ("mixed_types_in_category_column", lambda: (
                frame(c=np.array(["a" if i % 2 else 1 for i in idx], dtype=object)),
                None), "'c'|\"c\"", "df['c'] = ['a' if i % 2 else 1 for i in range(120)]; "
                                    "{E}.fit(df)"),
            ("inf_in_few_level_column_at_fit", lambda: (
                frame(k=np.where(idx % 3 == 0, np.inf, (idx % 2).astype(float))), None),
             "inf|finite", "df['k'] = np.where(np.arange(120) % 3 == 0, np.inf, "
                           "np.arange(120) % 2 * 1.0); {E}.fit(df)"),
            ("inf_cell_at_score", lambda: (
                frame(), frame().assign(x=np.where(idx == 3, np.inf, frame()["x"]))),
             "inf|finite", "{E}.fit(df) then score on df with x[3] = np.inf"),
            ("columns_reordered_at_score", lambda: (
                frame(c=pd.Categorical(colors())),
                frame(c=pd.Categorical(colors()))[["c", "z", "x"]]), None,
             "{E}.fit(df) then score on df[['c', 'z', 'x']]"),
        ]
        for name, make_pair, pattern, body in refusals:
            if kind == OUT and name in UNSEEN_VALUES:
                add(kind, name, lambda ctx, f=make_pair: unseen_flagged(*f()), "ok",
                    body + "; the rows with it are outliers (decision_function finite)")
                continue

            def run(ctx, k=kind, f=make_pair):
                df_fit, df_out = f()
                failure = table_observe(k, df_fit, df_out)
                return failure or "accepted"

            add(kind, name, run, "error", body, message=pattern)

        # a row all missing at score time: a finite score, or a full imputation
        def all_missing_row(ctx, k=kind):
            df = frame(c=pd.Categorical(colors()))
            df_out = df.copy()
            df_out.loc[3, ["x", "z"]] = np.nan
            df_out["c"] = df_out["c"].where(idx != 3)
            return table_observe(k, df, df_out)

        add(kind, "row_all_NaN_at_score", all_missing_row, "ok",
            "{E}.fit(df.assign(c=pd.Categorical(c))) then score on it with row 3 all missing")

        def numeric_row_all_nan(ctx, k=kind):
            X = data(k)
            X_out = X.copy()
            X_out[3] = np.nan
            est = make(k).fit(X)
            if k == IMP:
                return imputation_failure(X_out, est.transform(X_out))[1]
            value = est.score_samples(X_out) if k == NCE else est.decision_function(X_out)
            return None if np.isfinite(value).all() else "non-finite output for an all-NaN row"

        cases.append(Case(kind, "tables", "ndarray_row_all_NaN_at_score", numeric_row_all_nan,
                          "ok", repro(kind, "X2 = X.copy(); X2[3] = np.nan; {E}.fit(X); "
                                            "then .{out} on X2")))

        if kind == NCE:
            extra_nce_tables(cases, table_observe)
        if kind == IMP:
            extra_imputer_tables(cases)
    return cases


def _same(a, b):
    try:
        if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
            return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0))
    except (TypeError, ValueError):
        pass
    return _key(a) == _key(b)


def _key(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.number)):
        return float(value)
    return value


def extra_nce_tables(cases, table_observe):
    import pandas as pd

    def sample_table(ctx):
        df = frame(c=pd.Categorical(colors()))
        est = make(NCE).fit(df)
        drawn = est.sample(20, random_state=0)
        if not hasattr(drawn, "columns") or list(drawn.columns) != ["x", "z", "c"]:
            return (f"sample gave {type(drawn).__name__} with columns "
                    f"{getattr(drawn, 'columns', None)}")
        if not set(drawn["c"]) <= {"red", "green", "blue"}:
            return f"sampled categories {set(drawn['c'])}"
        return None if np.isfinite(drawn[["x", "z"]].to_numpy(dtype=float)).all() else \
            "non-finite sampled numbers"

    cases.append(Case(NCE, "tables", "sample_from_table", sample_table, "ok",
                      f"{FRAME_SRC}; {TINY_SRC[NCE]}.fit(df.assign(c=pd.Categorical(c)))"
                      ".sample(20, random_state=0)"))

    def conditional_table(ctx):
        df = frame(c=pd.Categorical(colors()))
        est = make(NCE).fit(df)
        holes = df.copy()
        holes["c"] = holes["c"].where(np.arange(120) % 3 != 0)
        holes.loc[holes.index[1::3], "x"] = np.nan
        completed = est.sample_conditional(holes, random_state=0)
        completed = pd.DataFrame(completed, columns=df.columns) if not hasattr(
            completed, "columns") else completed
        if completed.isna().to_numpy().any():
            return "missing cells left"
        if not set(completed["c"]) <= {"red", "green", "blue"}:
            return f"categories drawn {set(completed['c'])}"
        return None

    cases.append(Case(NCE, "tables", "sample_conditional_on_table", conditional_table, "ok",
                      f"{FRAME_SRC}; {TINY_SRC[NCE]}.fit(df.assign(c=pd.Categorical(c)))"
                      ".sample_conditional(df with c and x partly missing)"))

    def conditional_mean_table(ctx):
        df = frame(c=colors().astype(object))
        est = make(NCE).fit(df)
        holes = df.copy()
        holes["c"] = holes["c"].where(np.arange(120) % 3 != 0, None)
        filled = est.conditional_mean(holes, random_state=0)
        filled = pd.DataFrame(filled, columns=df.columns) if not hasattr(filled, "columns") \
            else filled
        if filled.isna().to_numpy().any():
            return "missing cells left"
        return None if set(filled["c"]) <= {"red", "green", "blue"} else \
            f"categories filled {set(filled['c'])}"

    cases.append(Case(NCE, "tables", "conditional_mean_on_table", conditional_mean_table, "ok",
                      f"{FRAME_SRC}; {TINY_SRC[NCE]}.fit(df.assign(c=c)).conditional_mean("
                      "df with c[::3] = None)"))

    for spec in (["c"], [2], "from_dtype"):
        cases.append(Case(
            NCE, "tables", f"categorical_features={spec!r}_is_categorical_",
            lambda ctx, spec=spec: None if list(make(NCE, categorical_features=spec).fit(
                frame(c=pd.Categorical(colors()))).is_categorical_) == [False, False, True]
            else "is_categorical_ wrong", "ok",
            f"{FRAME_SRC}; {TINY_SRC[NCE]}.set_params(categorical_features={spec!r})"
            ".fit(df.assign(c=pd.Categorical(c))).is_categorical_"))

    def none_spec_with_strings(ctx):
        make(NCE, categorical_features=None).fit(frame(c=colors().astype(object)))
        return "a string column accepted as continuous"

    cases.append(Case(NCE, "tables", "categorical_features=None_with_string_column",
                      none_spec_with_strings, "error",
                      f"{FRAME_SRC}; {TINY_SRC[NCE]}.set_params(categorical_features=None)"
                      ".fit(df.assign(c=c))", message="'c'|\"c\""))


def extra_imputer_tables(cases):
    import pandas as pd

    def pandas_output(ctx):
        df = frame(c=pd.Categorical(colors()))
        est = make(IMP).set_output(transform="pandas").fit(df)
        holes = df.copy()
        holes.loc[holes.index[::4], "x"] = np.nan
        out = est.transform(holes)
        if not hasattr(out, "columns"):
            return f"set_output('pandas') gave {type(out).__name__}"
        if list(out.columns) != ["x", "z", "c"] or out.isna().to_numpy().any():
            return f"columns {list(out.columns)}, missing {int(out.isna().sum().sum())}"
        return None

    cases.append(Case(IMP, "tables", "set_output_pandas", pandas_output, "ok",
                      f"{FRAME_SRC}; {TINY_SRC[IMP]}.set_output(transform='pandas')"
                      ".fit(df.assign(c=pd.Categorical(c))).transform(df with x[::4] = NaN)"))

    def indicator_table(ctx):
        df = frame(c=pd.Categorical(colors()))
        holes = df.copy()
        holes.loc[holes.index[::4], "x"] = np.nan
        out = make(IMP, add_indicator=True).fit(holes).transform(holes)
        names = list(make(IMP, add_indicator=True).fit(holes).get_feature_names_out())
        if np.shape(out) != (120, 4) or names[-1] != "missingindicator_x":
            return f"shape {np.shape(out)}, names {names}"
        return None

    cases.append(Case(IMP, "tables", "add_indicator_on_table", indicator_table, "ok",
                      f"{FRAME_SRC}; {TINY_SRC[IMP]}.set_params(add_indicator=True)"
                      ".fit(dfh).transform(dfh)"))


# -------------------------------------------------------------- defaults
def default_cases():
    import skebm

    cases = []
    defaults = {
        NCE: (lambda: skebm.NCEDensity(random_state=0), "NCEDensity(random_state=0)"),
        RBM: (lambda: skebm.PCDRestrictedBoltzmann(random_state=0),
              "PCDRestrictedBoltzmann(random_state=0)"),
        SR: (lambda: skebm.ShortRunEBM(random_state=0), "ShortRunEBM(random_state=0)"),
        CLF: (lambda: skebm.NCESoftmaxClassifier(random_state=0),
              "NCESoftmaxClassifier(random_state=0)"),
        OUT: (lambda: skebm.DensityOutlierDetector(skebm.NCEDensity(random_state=0)),
              "DensityOutlierDetector(NCEDensity(random_state=0))"),
        IMP: (lambda: skebm.DensityImputer(random_state=0), "DensityImputer(random_state=0)"),
    }
    for kind, (factory, source) in defaults.items():
        def run(ctx, k=kind, factory=factory):
            X = data(k, n=200)
            est = fit(k, factory(), X, labels(200) if k == CLF else _DEFAULT)
            return observe(k, est, X)[1]

        cases.append(Case(kind, "defaults", "default_parameters_200_rows", run, "ok",
                          X_SRC[kind].replace("120", "200") + "; " +
                          (Y_SRC + "; " if kind == CLF else "") +
                          f"{source}.{fit_src(kind)}.{out_src(kind)}"))
    return cases


def build_cases():
    cases = (bad_value_cases() + shape_cases() + dtype_cases() + hyperparameter_cases()
             + huge_cases() + scale_cases() + state_cases() + interrupt_cases()
             + thread_cases() + torch_cases() + table_cases() + default_cases())
    ids = collections.Counter(case.id for case in cases)
    duplicates = [case_id for case_id, count in ids.items() if count > 1]
    assert not duplicates, f"duplicate case ids: {duplicates}"
    return cases


# --------------------------------------------------------------- the runner
def _origin(exc):
    """Which package the innermost frame of ``exc``'s traceback is in."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return "?"
    path = last.tb_frame.f_code.co_filename.replace(os.sep, "/")
    if path == os.path.abspath(__file__).replace(os.sep, "/") or path.endswith(
            "benchmarks/fault_matrix.py"):
        return "sweep"
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/skebm/" in path:
        return "skebm"
    return path.rsplit("/", 2)[-2] if "/" in path else path


def _describe(exc):
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message[:100]}"


def classify(case, failure, exc, caught, elapsed, ctx):
    """(outcome, detail, note) of a case that returned ``failure`` or raised ``exc``."""
    note = ""
    warned = [f"{w.category.__name__}: {' '.join(str(w.message).split())[:80]}" for w in caught]
    if exc is None:
        if case.expect == "error":
            if warned:
                return "crash", f"only a warning where an error was needed: {warned[0]}", note
            return "silent wrong", f"no error: {failure or 'accepted'}", note
        if failure:
            return "silent wrong", failure, note
        return "correct", ("warned: " + warned[0]) if warned else "", note
    origin = _origin(exc)
    detail = f"{_describe(exc)} [from {origin}]"
    if ctx.guard_tripped:
        return "crash", f"allocated instead of refusing (hit the memory guard): {detail}", note
    if origin == "sweep" and not isinstance(exc, KeyboardInterrupt):
        detail = "HARNESS? " + detail
    if isinstance(exc, REFUSALS) and (origin in ("skebm", "sklearn") or case.expect == "error"):
        if case.message and not re.search(case.message, str(exc)):
            note = f"message does not match /{case.message}/"
        if case.quick and elapsed > QUICK_S:
            note = (note + "; " if note else "") + f"refused after {elapsed:.1f} s"
        if case.expect == "ok":
            note = (note + "; " if note else "") + "refused where success was expected"
        if case.error_type and not isinstance(exc, case.error_type):
            note = (note + "; " if note else "") + f"not a {case.error_type.__name__}"
        return "clear error", detail, note
    return "crash", detail, note


def _global_state():
    import torch
    from threadpoolctl import threadpool_info

    return (torch.get_num_threads(), torch.get_default_dtype(), str(torch.empty(0).device),
            tuple(pool["num_threads"] for pool in threadpool_info()))


def _leak_check(before):
    """What a case changed of the process-wide state (put back), or None."""
    import torch
    from threadpoolctl import threadpool_limits

    after = _global_state()
    if after == before:
        return None
    torch.set_num_threads(before[0])
    torch.set_default_dtype(before[1])
    torch.set_default_device(None)
    threadpool_limits(limits=max(before[3]))
    return f"leaked global state {before} -> {after}"


def run_case(case):
    global_before = _global_state()
    failure = exc = None
    tb = []
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = Context(caught)
        try:
            failure = case.run(ctx)
        except BaseException as error:  # noqa: BLE001 - every outcome is recorded
            exc = error
            tb = traceback.format_exception(type(error), error, error.__traceback__)
    elapsed = time.perf_counter() - started
    outcome, detail, note = classify(case, failure, exc, caught, elapsed, ctx)
    leak = _leak_check(global_before)
    if leak:
        note = (note + "; " if note else "") + leak
        if outcome == "correct":
            outcome, detail = "silent wrong", leak
    return {"id": case.id, "estimator": case.estimator, "category": case.category,
            "name": case.name, "expect": case.expect, "outcome": outcome, "detail": detail,
            "note": note, "elapsed_s": round(elapsed, 3), "repro": case.repro,
            "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:120]}"
                                for w in caught})[:5],
            "traceback": "".join(tb[-6:]) if exc is not None else ""}


def worker_main(conn):
    """A worker: runs the cases whose ids it is sent, one at a time."""
    warnings.simplefilter("ignore")
    cases = {case.id: case for case in build_cases()}
    conn.send(("ready", None))
    while True:
        case_id = conn.recv()
        if case_id is None:
            return
        conn.send(("start", case_id))
        conn.send(("done", run_case(cases[case_id])))


class Worker:
    def __init__(self, context):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.case = None
        self.sent_at = self.started_at = None
        self.ready = False

    def send(self, case):
        self.case = case
        self.sent_at = time.monotonic()
        self.started_at = None
        self.conn.send(case.id)

    def stop(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


def run_all(cases, timeout, n_workers=2, on_result=print):
    context = multiprocessing.get_context("spawn")
    pending = collections.deque(cases)
    workers = [Worker(context) for _ in range(min(n_workers, len(cases)))]
    results = []
    startup = 300.0

    def record(case, outcome, detail):
        result = {"id": case.id, "estimator": case.estimator, "category": case.category,
                  "name": case.name, "expect": case.expect, "outcome": outcome, "detail": detail,
                  "note": "", "elapsed_s": None, "repro": case.repro, "warnings": [],
                  "traceback": ""}
        results.append(result)
        on_result(result, len(results), len(cases))

    def replace(worker):
        worker.stop()
        workers[workers.index(worker)] = Worker(context)

    while pending or any(w.case for w in workers):
        for worker in workers:
            if worker.ready and worker.case is None and pending:
                worker.send(pending.popleft())
        now = time.monotonic()
        deadlines = []
        for w in workers:
            if w.case is not None:
                deadlines.append((w.started_at + timeout) if w.started_at else
                                 (w.sent_at + startup))
        wait_for = max(0.05, min(deadlines) - now) if deadlines else 1.0
        ready = multiprocessing.connection.wait([w.conn for w in workers], timeout=wait_for)
        for worker in list(workers):
            if worker.conn not in ready:
                continue
            try:
                kind, payload = worker.conn.recv()
            except (EOFError, OSError):
                code = worker.process.exitcode
                worker.process.join(1)
                code = worker.process.exitcode if code is None else code
                if worker.case is not None:
                    record(worker.case, "crash", f"worker died (exit code {code})")
                replace(worker)
                continue
            if kind == "ready":
                worker.ready = True
            elif kind == "start":
                worker.started_at = time.monotonic()
            else:
                case = worker.case
                results.append(payload)
                on_result(payload, len(results), len(cases))
                worker.case = None
                if case.isolate:
                    replace(worker)
        now = time.monotonic()
        for worker in list(workers):
            if worker.case is None:
                continue
            limit = (worker.started_at + timeout) if worker.started_at else (
                worker.sent_at + startup)
            if now > limit:
                record(worker.case, "hang", f"no result after {timeout:g} s" if
                       worker.started_at else "the worker did not start the case")
                replace(worker)
    for worker in workers:
        try:
            worker.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        worker.stop()
    order = {case.id: i for i, case in enumerate(cases)}
    return sorted(results, key=lambda r: order[r["id"]])


OUTCOMES = ("correct", "clear error", "silent wrong", "crash", "hang")


def print_line(result, done, total):
    note = f"  [{result['note']}]" if result["note"] else ""
    print(f"[{done:4d}/{total}] {result['estimator']:<24} {result['category']:<16} "
          f"{result['name'][:48]:<48} {result['outcome']:<13} {result['detail'][:140]}{note}",
          flush=True)


def report(results):
    print("\n" + "=" * 100)
    print(f"{'estimator':<24} {'category':<16} {'case':<48} {'outcome':<13} detail")
    print("-" * 100)
    for r in results:
        note = f"  [{r['note']}]" if r["note"] else ""
        print(f"{r['estimator']:<24} {r['category']:<16} {r['name'][:48]:<48} {r['outcome']:<13} "
              f"{r['detail'][:140]}{note}")
    print("=" * 100)
    counts = collections.Counter(r["outcome"] for r in results)
    print("summary: " + ", ".join(f"{counts.get(o, 0)} {o}" for o in OUTCOMES)
          + f" ({len(results)} cases)")
    by_estimator = collections.defaultdict(collections.Counter)
    for r in results:
        by_estimator[r["estimator"]][r["outcome"]] += 1
    for estimator, c in by_estimator.items():
        print(f"  {estimator:<24} " + ", ".join(f"{c.get(o, 0)} {o}" for o in OUTCOMES))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run the cases whose id contains this")
    parser.add_argument("--json", default=None, help="write every result to this file")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--workers", type=int, default=2, help="child processes (at most 2)")
    args = parser.parse_args(argv)
    cases = [c for c in build_cases() if args.only.lower() in c.id.lower()]
    if not cases:
        sys.exit(f"no case matches {args.only!r}")
    print(f"{len(cases)} cases, timeout {args.timeout:g} s, {min(args.workers, 2)} workers",
          flush=True)
    started = time.time()
    results = run_all(cases, args.timeout, n_workers=max(1, min(args.workers, 2)),
                      on_result=print_line)
    report(results)
    print(f"wall time {time.time() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"timeout_s": args.timeout, "results": results}, f, indent=1)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
