"""The torch machinery that every skebm estimator shares.

An estimator file (``nce.py``, ...) says *what* is learned: the energy, the
loss, how to sample.  This module says *how* it is run, once for all of them:

- ``device="auto"`` resolved into ``device_``, a private ``torch.Generator``
  seeded from ``random_state`` (never the global torch seed);
- the thread policy (:meth:`TorchEstimator._cpu_threads`), so torch uses the
  cores that are free and does not fight joblib for them;
- the minibatch training loop over dense or sparse rows: Adam (or an
  estimator's own update rule), a progress bar when ``verbose``,
  ``history_``, ``n_iter_``, early stopping on a validation fraction,
  ``warm_start``, and a divergence guard;
- chunked inference in float64, chunks sized by scikit-learn's
  ``working_memory``;
- a normalized ``score_samples`` over an estimator's unnormalized
  log-density, with log Z estimated on first use (:class:`LikelihoodDensityMixin`);
- input standardization with its log-Jacobian;
- pickling that moves every tensor to the CPU, so that a model fitted on a GPU
  unpickles and predicts on a machine without one.
"""

import contextlib
import copy
import math
import numbers
import os

import numpy as np
import scipy.sparse as sp
import torch
from sklearn import get_config
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.sparsefuncs import mean_variance_axis
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "ConvergenceDivergedError",
    "LikelihoodDensityMixin",
    "TorchEstimator",
    "make_generator",
    "resolve_device",
]

#: Multiply-adds per training step (or per inference chunk) from which skebm
#: uses more than one torch thread. Measured on 2 idle cores, 2 threads
#: against 1 (``benchmarks/threads.py``): NCEDensity's small autograd steps
#: of 15 million run 0.82-0.86x as fast (many small ops, each synchronised),
#: its default step of 344 million 1.31x; RBM steps, a few large products,
#: gain from 4 million (1.17x) to 196 million (1.60x). Below this line one
#: thread loses at most ~1.3x; above it, two threads never lost.
PARALLEL_WORK = 20_000_000


class ConvergenceDivergedError(FloatingPointError, ValueError):
    """Raised when training produces a NaN or infinite loss or parameter.

    It derives from ``ValueError`` so that model selection tools treat it like
    any other bad combination of parameters (``GridSearchCV`` records
    ``error_score`` for that candidate and goes on).
    """


def resolve_device(device):
    """Turn the ``device`` parameter into a ``torch.device``.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise. An
    explicit device this machine cannot use (``"cuda"`` without a GPU,
    ``"mps"`` off Apple silicon, a typo) is a ``ValueError``, not a silent
    fall-back.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device torch knows.") from exc
    if resolved.type == "cpu":
        return resolved
    try:  # each backend says in its own way that it is missing; ask it for a tensor
        torch.empty(0, device=resolved)
        torch.Generator(device=resolved)
    except (RuntimeError, AssertionError, AttributeError) as exc:
        raise ValueError(
            f"device={device!r} was asked for, but torch {torch.__version__} cannot use "
            f"{resolved.type.upper()} on this machine. Use device='auto' or 'cpu'."
        ) from exc
    return resolved


def make_generator(random_state, device):
    """A private ``torch.Generator`` on ``device``, seeded from ``random_state``.

    ``random_state`` follows scikit-learn's convention: None, an int or a
    ``numpy.random.RandomState``. The global torch seed is never touched.
    """
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def draw_seed(generator):
    """An int drawn from ``generator``, to seed a later, separate stream."""
    return int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))


@contextlib.contextmanager
def torch_threads(n_threads):
    """Run the block with ``n_threads`` intra-op torch threads, then restore.

    ``n_threads=None`` leaves torch's setting alone.
    """
    if n_threads is None or n_threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def idle_cores():
    """Cores of this process not busy with other processes' work at this moment.

    The cores the process may run on, less the tasks the kernel has running
    (``/proc/loadavg``) that are not this process's own threads (torch's
    worker threads spin for a while after each parallel region and must not
    count as a neighbour). Linux; elsewhere, or when ``/proc`` cannot be
    read, every core counts as idle.
    """
    n_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_cores = n_cores or 1
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        tasks = os.listdir("/proc/self/task")
    except (OSError, ValueError, IndexError):
        return n_cores
    own = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                own += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):  # the thread ended meanwhile
            continue
    return max(1, n_cores - max(0, running - max(own, 1)))


def _standardization(X):
    """Mean and scale of each column (dense or sparse X); constant columns get scale 1."""
    if sp.issparse(X):
        mean, variance = mean_variance_axis(X.astype(np.float64), axis=0)
        scale = np.sqrt(variance)
    else:
        X = X.astype(np.float64, copy=False)
        mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))] = 1.0
    return mean, scale


def _as_tensor(array, device, dtype):
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch warns about read-only memory
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype, device=device)


def _dense_rows(X, rows, mean, scale, device, dtype):
    """``X[rows]`` (numpy or scipy sparse), densified, standardized, as a tensor."""
    block = X[rows]
    block = block.toarray() if sp.issparse(block) else block
    if mean is not None:
        block = (block.astype(np.float64) - mean) / scale
    return _as_tensor(block, device, dtype)


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
        return _dense_rows(self.X, index, self.mean_, self.scale_, self.device, torch.float32)

    def subset(self, index):
        return SparseRows(self.X[index.cpu().numpy()], self.mean_, self.scale_, self.device)

    def mean(self, dim):
        if dim != 0:
            raise ValueError("SparseRows.mean takes dim=0 only.")
        means = np.asarray(self.X.mean(axis=0)).ravel()
        if self.mean_ is not None:
            means = (means - self.mean_) / self.scale_
        return torch.as_tensor(means, dtype=torch.float32, device=self.device)


class Bags:
    """Sparse rows as torch's ``embedding_bag`` takes them: ``indices`` (the
    columns of the non-zero entries, row after row), ``offsets`` (where each
    row starts) and ``weights`` (the entries' values)."""

    def __init__(self, indices, offsets, weights, n_features):
        self.indices, self.offsets, self.weights = indices, offsets, weights
        self.shape = (len(offsets), n_features)

    def __len__(self):
        return len(self.offsets)


def bags_from_rows(X, device, dtype):
    """:class:`Bags` of the rows of X (scipy sparse or numpy), never dense.

    Explicit zeros are dropped, and columns come in increasing order within
    a row, so a dense array and its sparse copy give the same bags.
    """
    X = sp.csr_matrix(X, dtype=np.float64 if dtype == torch.float64 else np.float32)
    X.sum_duplicates()  # sorts each row's columns, merges repeats
    X.eliminate_zeros()
    return Bags(_as_tensor(X.indices, device, torch.long),
                _as_tensor(X.indptr[:-1], device, torch.long),
                _as_tensor(X.data, device, dtype), X.shape[1])


class SparseBagRows:
    """Training rows kept as CSR arrays on the device, gathered into
    :class:`Bags` one minibatch at a time, in torch (no Python loop over
    rows, no dense copy)."""

    def __init__(self, bags):
        self.indices, self.weights, self.shape = bags.indices, bags.weights, bags.shape
        end = torch.as_tensor([len(bags.indices)], device=bags.offsets.device)
        self.starts = torch.cat([bags.offsets, end])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        starts = self.starts[rows]
        counts = self.starts[rows + 1] - starts
        offsets = torch.cumsum(counts, 0) - counts
        n_entries = int(counts.sum())
        positions = (torch.repeat_interleave(starts - offsets, counts, output_size=n_entries)
                     + torch.arange(n_entries, device=starts.device))
        return Bags(self.indices[positions], offsets, self.weights[positions], self.shape[1])

    def subset(self, rows):
        return SparseBagRows(self[rows])


class LabelledRows:
    """Training rows with their targets, shuffled and split by one index.

    ``rows`` is what ``_training_rows`` made (a tensor, :class:`SparseRows`,
    or an estimator's own row container); ``targets`` is a tensor of integer
    codes on the same device. Indexing gives the minibatch ``(rows,
    targets)`` that the training hooks unpack; ``attributes`` are the fitted
    attributes that come with the targets (a classifier's ``classes_``), for
    the hooks to read before they are set on the estimator.
    """

    def __init__(self, rows, targets, attributes):
        self.rows, self.targets, self.attributes = rows, targets, attributes

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.rows[index], self.targets[index]

    def subset(self, index):
        return LabelledRows(_take(self.rows, index), self.targets[index], self.attributes)


def _take(rows, index):
    """The rows at ``index`` (a tensor), in a container of the same kind."""
    return rows.subset(index) if hasattr(rows, "subset") else rows[index]


class LikelihoodDensityMixin(DensityMixin):
    """A normalized ``score_samples``, its mean as ``score``, and log Z on demand.

    An estimator provides ``_unnormalized_log_density(module, Z)`` (of
    standardized rows, a tensor) and ``_estimate_log_partition(module,
    generator)``, which returns ``(log Z, standard error)`` of that density.

    log Z is estimated the first time it is needed (``score_samples``,
    ``score``, ``log_partition_``), not in ``fit``: a model used only for
    ``transform`` or ``sample`` never pays for it, and ``partial_fit`` does not
    redo it at every call. The estimate draws from a generator seeded at fit
    time, so it does not depend on when it is made or how often it is asked
    for; it is kept with the fitted model (and pickled with it) once made.
    (scikit-learn's DensityMixin ``score`` does nothing; this one is the mean
    log-likelihood, so model selection compares held-out likelihoods.)
    """

    def score_samples(self, X):
        """Normalized log-likelihood of each row of X, in nats.

        ``log p(x)`` of the rows in the units given, the standardization's
        log-Jacobian included; log Z is estimated on first use (see
        ``log_partition_`` and the class docstring for how).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,), float64
        """
        self._check_fitted()
        X = self._validated(X)
        log_z, _ = self._log_partition()
        offset = self._log_scale_jacobian() - log_z
        module = self._inference_module()
        return self._map_rows(lambda Z: self._unnormalized_log_density(module, Z) + offset, X)

    def score(self, X, y=None):
        """Mean log-likelihood of the rows of X (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_samples(X)))

    @property
    def log_partition_(self):
        """log Z that ``score_samples`` uses (estimated on first access)."""
        return self._log_partition()[0]

    @property
    def log_partition_std_(self):
        """Standard error of ``log_partition_`` (estimated on first access)."""
        return self._log_partition()[1]

    def _log_partition(self):
        """(log Z, standard error), estimated once from the seed fit drew.

        Two threads asking at once both compute the same value; no lock needed.
        """
        self._check_fitted()
        memo = self._log_partition_memo
        if "estimate" not in memo:
            device = self._inference_device()
            generator = make_generator(memo["seed"], device)
            module = self._inference_module()
            with torch_threads(self._cpu_threads(self._log_partition_multiply_adds(), device)):
                with torch.no_grad():
                    log_z, log_z_std = self._estimate_log_partition(module, generator)
            if not math.isfinite(log_z):
                raise ValueError(
                    f"{type(self).__name__}: the estimate of log Z is not finite; the fitted "
                    "model is degenerate. Refit with a lower learning_rate."
                )
            memo["estimate"] = (float(log_z), float(log_z_std))
        return memo["estimate"]

    def _log_partition_multiply_adds(self):
        """Rough work of the log Z estimate, for the thread policy."""
        return 10 * PARALLEL_WORK


class _EarlyStopping:
    """Patience over a higher-is-better validation score, as scikit-learn's
    MLP: patience counts epochs that do not beat the best by ``tol``; the
    parameters kept are the best epoch's, whatever ``tol``."""

    def __init__(self, tol, patience):
        self.tol, self.patience = tol, patience
        self.best_score, self.best_state, self.best_epoch = -math.inf, None, None
        self.epochs_since_best = 0

    def should_stop(self, score, module, epoch):
        self.epochs_since_best = 0 if score > self.best_score + self.tol else self.epochs_since_best + 1
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(module.state_dict())
        return self.epochs_since_best >= self.patience

    def restore_best(self, module):
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


class TorchEstimator(BaseEstimator):
    """Base class of the skebm estimators: runs their torch work.

    A subclass provides

    - ``_build(Z, generator)``: the trainable ``torch.nn.Module`` for a new
      fit, given the standardized training rows (a float32 tensor, or
      :class:`SparseRows` for sparse input);
    - ``_training_loss(module, batch, generator)``: the minibatch loss (mean
      over the rows of ``batch``), or ``(loss, diagnostics)`` with a dict of
      numbers about the step that ``history_`` averages per epoch;
    - ``_multiply_adds_per_step(n_features)`` and
      ``_multiply_adds_per_row(n_features)``: rough work of a training step
      and of one row of inference, for the thread policy;
    - ``_inference_row_bytes()``: working memory of one row of inference;

    and optionally

    - ``_validation_score(module, Z_val)``: a higher-is-better score used for
      early stopping (default: minus the training loss);
    - ``_after_training(module, Z, generator)``: fitted attributes computed
      once after the loop, as a dict (``Z``: every training row, the
      validation rows included; it may also update ``module``);
    - ``_epoch_diagnostics(module)``: extra entries of an epoch's
      ``history_`` record, as a dict;
    - ``_divergence_reason(module, Z_train)``: what is wrong with a model
      that has blown up without a non-finite value (None when nothing is);
    - where gradient descent on a loss is not how the model learns (an RBM's
      contrastive-divergence update, say): ``_make_update_rule(module,
      n_steps)`` and ``_training_step(module, batch, generator, rule)``
      (returns the step's loss, or None when it computes none, or
      ``(loss, diagnostics)`` whose per-step numbers ``history_`` averages
      over the epoch), with
      ``_epoch_loss(module, Z)`` for the loss reported per epoch then;
    - ``_input_standardization(X)`` (default: each column's mean and standard
      deviation), ``_check_input_values(X)`` (extra checks on valid X) and
      ``_n_epochs()`` (default: ``max_iter``);
    - ``_training_rows(X, mean, scale, device)`` and ``_inference_rows(X,
      rows, mean, scale, device)``: how rows reach the module (default:
      dense, standardized; an estimator that takes sparse rows as they are
      overrides both);
    - ``_warm_module(Z_train, device)``: the module a warm fit continues from
      (default: a copy of the fitted one).

    A supervised estimator calls ``self._fit_module(X, y, **options)`` and
    provides ``_encode_targets(y, warm, **options)``, which returns the
    integer codes of ``y`` and the fitted attributes that go with them (set
    on the estimator with the others when the fit succeeds). Its hooks get
    :class:`LabelledRows` (``Z.attributes`` holds those attributes) and
    ``(rows, targets)`` minibatches, shuffled and split by one index, and
    ``_multiply_adds_per_step(n_features, targets=attributes)``.

    It calls ``self._fit_module(X)`` from ``fit`` (``partial=True`` from
    ``partial_fit``: one epoch, continuing the fitted model). Every fitted
    attribute is set at the very end of a successful fit, so a failed fit
    leaves the estimator as it was.
    """

    _parameter_constraints = {
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "device": [StrOptions({"auto", "cpu", "cuda", "mps"}), str, torch.device],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
    }

    #: Whether a training loss far above its first value means divergence:
    #: true for losses that stay positive and fall (NCE's); an estimator whose
    #: loss hovers around 0 or is no loss at all leaves it off.
    _loss_growth_is_divergence = False

    #: Early stopping is offered by the estimator (it has the parameters).
    _supports_early_stopping = False

    #: Most rows one epoch visits (None: all). With a cap, the epoch (the
    #: unit of ``max_iter``, of early stopping's checks and of its patience)
    #: stays the same size however large the data, and every epoch draws a
    #: fresh random subset.
    _max_epoch_rows = None

    # ------------------------------------------------------------------ fit
    def _fit_module(self, X, y=None, *, partial=False, **target_options):
        """Validate X (and y), train (or keep training) the module, set fitted state.

        ``partial=True`` (``partial_fit``) runs one epoch and continues the
        fitted model, whatever ``warm_start`` says. With ``y``, the estimator's
        ``_encode_targets(y, warm=..., **target_options)`` turns it into
        integer codes and the fitted attributes that go with them; the hooks
        then get :class:`LabelledRows` and ``(rows, targets)`` minibatches.
        """
        fitted = hasattr(self, "module_")
        warm = fitted and (partial or getattr(self, "warm_start", False))
        target_attributes = {}
        if y is None and self.__sklearn_tags__().target_tags.required:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None.")
        if y is None:
            X = self._validated(X, reset=not warm, ensure_min_samples=2)
        else:
            X, y = self._validated(X, y, reset=not warm, ensure_min_samples=2)
            codes, target_attributes = self._encode_targets(y, warm=warm, **target_options)
        device = resolve_device(self.device)
        generator = make_generator(self.random_state, device)
        if warm:
            # Each continued fit draws a stream of its own, still reproducible.
            generator.manual_seed(generator.initial_seed() + self.n_iter_)
        work = self._multiply_adds_per_step(
            X.shape[1], **({} if y is None else {"targets": target_attributes}))
        with torch_threads(self._cpu_threads(work, device)):
            if warm:
                mean, scale = self.mean_, self.scale_
            else:
                mean, scale = self._input_standardization(X)
            Z = self._training_rows(X, mean, scale, device)
            if y is not None:
                Z = LabelledRows(Z, torch.as_tensor(codes, dtype=torch.long, device=device),
                                 target_attributes)
            # A partial fit learns from every row it is given (as scikit-learn's
            # MLP, which refuses early stopping there): no rows are held out.
            Z_train, Z_val = (Z, None) if partial else self._split_validation(Z, generator)
            if warm:
                module = self._warm_module(Z_train, device)
            else:
                module = self._build(Z_train, generator).to(device)
            n_epochs = 1 if partial else self._n_epochs()
            epochs_run, history = self._train(module, Z_train, Z_val, generator, n_epochs)
            extra = self._after_training(module, Z, generator)
            log_partition_seed = draw_seed(generator)

        # Success: only now does the estimator change.
        previous_history = self.history_ if warm else []
        self.mean_, self.scale_ = mean, scale
        self.module_ = module.eval()
        self.device_ = device
        self.history_ = previous_history + history
        self.n_iter_ = (self.n_iter_ if warm else 0) + epochs_run
        self._log_partition_memo = {"seed": log_partition_seed}
        for name, value in {**target_attributes, **extra}.items():
            setattr(self, name, value)
        return self

    def _cpu_threads(self, multiply_adds, device):
        """torch intra-op threads for work of this size; None off the CPU.

        The policy (measured on 2 cores, ``benchmarks/threads.py``):

        - ``n_threads``, when set, decides;
        - never more threads than torch has at the call, which is the limit
          the environment sets: ``OMP_NUM_THREADS``, a ``threadpoolctl``
          limit, the one thread per worker that joblib's loky backend (as
          under ``GridSearchCV(n_jobs=...)``) and dask's workers give each
          process;
        - one thread for small work (under :data:`PARALLEL_WORK`
          multiply-adds a step): a second would cost more in synchronisation
          than it saves;
        - otherwise, as many as there are idle cores: torch's threads wait
          actively for each other, so a thread on a core that another
          process keeps busy slows every step down (a two-thread fit beside
          a busy process ran 18x slower than a one-thread one).
        """
        if device.type != "cpu":
            return None
        if self.n_threads is not None:
            return self.n_threads
        allowed = torch.get_num_threads()
        if allowed <= 1 or multiply_adds < PARALLEL_WORK:
            return 1
        return max(1, min(allowed, idle_cores()))

    def _validated(self, X, y=None, *, reset=False, ensure_min_samples=1):
        """scikit-learn's validation at the door, plus the estimator's own checks.

        Sparse X is accepted where the estimator's tags say so (and kept
        sparse); integers and float16 become float64, float32 stays float32.
        With ``y`` (a 1-D target of X's length), returns ``(X, y)``.
        """
        sparse = self.__sklearn_tags__().input_tags.sparse
        kwargs = dict(dtype=[np.float64, np.float32], accept_sparse="csr" if sparse else False,
                      ensure_min_samples=ensure_min_samples, reset=reset)
        if y is None:
            X = validate_data(self, X, **kwargs)
        else:
            X, y = validate_data(self, X, y, **kwargs)
        self._check_input_values(X)
        return X if y is None else (X, y)

    def _check_input_values(self, X):
        """Estimator-specific checks of validated X (a range, say)."""

    def _conditional_inputs(self, X, mask):
        """``(X, free)`` for ``sample_conditional``, validated.

        ``free`` is a boolean array of X's shape, True where a value is to be
        drawn: ``mask`` itself, or X's NaN entries when ``mask`` is None.
        Free entries of X may hold anything (NaN included) and come back as
        0; the known ones must be finite and pass the estimator's own checks.
        """
        self._check_fitted()
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False,
                          ensure_all_finite="allow-nan")
        if mask is None:
            free = np.isnan(X)
        else:
            free = np.asarray(mask)
            if free.dtype != bool or free.shape != X.shape:
                raise ValueError(
                    f"mask must be a boolean array of X's shape {X.shape} (True where a "
                    f"value is to be drawn), got dtype {free.dtype} and shape {free.shape}."
                )
        known = np.where(free, 0.0, X).astype(X.dtype, copy=False)
        if not np.isfinite(known).all():
            raise ValueError(
                "X has NaN or infinite values where mask is False: the known values must "
                "be finite (NaN may mark the values to draw when mask is None)."
            )
        self._check_input_values(known)
        return known, free

    def _input_standardization(self, X):
        """(mean, scale) that the inputs are standardized with before torch."""
        return _standardization(X)

    def _is_identity(self, mean, scale):
        return not np.any(mean) and np.all(scale == 1)

    def _training_rows(self, X, mean, scale, device):
        """The standardized training rows: a float32 tensor on ``device``, or
        :class:`SparseRows` that densify one minibatch at a time."""
        if self._is_identity(mean, scale):
            mean = scale = None
        if sp.issparse(X):
            return SparseRows(X, mean, scale, device)
        return _dense_rows(X, slice(None), mean, scale, device, torch.float32)

    def _warm_module(self, Z_train, device):
        """The module a warm fit (``warm_start`` or ``partial_fit``) continues
        from: a copy of the fitted one on ``device``."""
        return copy.deepcopy(self.module_).to(device)

    def _n_epochs(self):
        """Epochs a full fit runs (at most, with early stopping)."""
        return self.max_iter

    def _split_validation(self, Z, generator):
        """(training rows, validation rows or None). Data too small to leave two
        training rows and one validation row is trained on whole."""
        if not (self._supports_early_stopping and self.early_stopping):
            return Z, None
        n_val = int(math.ceil(self.validation_fraction * len(Z)))
        if len(Z) - n_val < 2:
            return Z, None
        order = torch.randperm(len(Z), generator=generator, device=generator.device)
        return _take(Z, order[n_val:]), _take(Z, order[:n_val])

    def _make_update_rule(self, module, n_steps):
        """Adam with a cosine schedule to 0 over ``n_steps`` minibatch steps,
        as ``(optimizer, scheduler)``."""
        optimizer = torch.optim.Adam(
            module.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_steps)

    def _training_step(self, module, batch, generator, rule):
        """One minibatch update by gradient descent; returns the detached loss
        (with the step's diagnostics when ``_training_loss`` gives
        ``(loss, diagnostics)``)."""
        optimizer, scheduler = rule
        loss = self._training_loss(module, batch, generator)
        loss, diagnostics = loss if isinstance(loss, tuple) else (loss, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.detach() if diagnostics is None else (loss.detach(), diagnostics)

    def _epoch_loss(self, module, Z_train):
        raise NotImplementedError(
            f"{type(self).__name__}._training_step returned no loss: define _epoch_loss."
        )

    def _epoch_rows(self, n_rows):
        """Rows one epoch visits: all of them, or at most
        ``_max_epoch_rows`` (a fresh random subset each epoch)."""
        return n_rows if self._max_epoch_rows is None else min(n_rows, self._max_epoch_rows)

    def _run_epoch(self, module, Z_train, generator, rule, batch_size):
        """One pass over the rows in a random order, the last minibatch
        possibly smaller (every row is seen every epoch, unless the
        estimator caps an epoch's rows with ``_max_epoch_rows``).

        A step returns its loss (or None), or ``(loss, diagnostics)`` with a
        dict of per-step numbers (a sampler's, say), which are averaged over
        the epoch's rows as the loss is.

        Returns (mean loss per row, loss of the first step or None, mean
        step diagnostics).
        """
        n_rows = self._epoch_rows(len(Z_train))
        order = torch.randperm(len(Z_train), generator=generator, device=generator.device)
        losses, diagnostics = [], {}
        for rows in gen_batches(n_rows, batch_size):
            batch = Z_train[order[rows]]
            n_batch = rows.stop - rows.start
            loss = self._training_step(module, batch, generator, rule)
            if isinstance(loss, tuple):
                loss, step_diagnostics = loss
                for name, value in step_diagnostics.items():
                    diagnostics[name] = diagnostics.get(name, 0.0) + float(value) * n_batch
            if loss is not None:
                losses.append(loss * n_batch)
        diagnostics = {name: total / n_rows for name, total in diagnostics.items()}
        if not losses:
            return float(self._epoch_loss(module, Z_train)), None, diagnostics
        first_batch = min(batch_size, n_rows)
        return (torch.stack(losses).sum().item() / n_rows, losses[0].item() / first_batch,
                diagnostics)

    def _train(self, module, Z_train, Z_val, generator, n_epochs):
        """The minibatch loop. Returns (epochs run, per-epoch history)."""
        batch_size = min(self.batch_size, len(Z_train))
        n_steps = n_epochs * math.ceil(self._epoch_rows(len(Z_train)) / batch_size)
        rule = self._make_update_rule(module, n_steps)
        stopping = _EarlyStopping(self.tol, self.n_iter_no_change) if Z_val is not None else None
        history, first_loss, epoch = [], None, 0
        progress = None
        if self.verbose:
            from tqdm.auto import tqdm

            progress = tqdm(total=n_epochs, desc=type(self).__name__, unit="epoch")
        if stopping is not None:
            # Epoch 0, the model as built (or warm-started), is a candidate too: a
            # model built on a base density keeps the base when training does not
            # beat it.
            stopping.should_stop(self._scored_validation(module, Z_val), module, 0)
        module.train()
        try:
            for epoch in range(1, n_epochs + 1):
                loss, first_step_loss, step_diagnostics = self._run_epoch(
                    module, Z_train, generator, rule, batch_size)
                if first_loss is None:  # the reference of the growth check
                    first_loss = loss if first_step_loss is None else first_step_loss
                self._check_divergence(module, Z_train, loss, first_loss, epoch)
                record = {"epoch": epoch, "loss": loss, **step_diagnostics,
                          **self._epoch_diagnostics(module)}
                if Z_val is not None:
                    record["validation_score"] = self._scored_validation(module, Z_val)
                    module.train()
                history.append(record)
                if progress is not None:
                    progress.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
                    progress.update()
                if stopping is not None and stopping.should_stop(
                    record["validation_score"], module, epoch
                ):
                    break
            if stopping is not None:
                stopping.restore_best(module)
                if progress is not None and epoch < n_epochs:
                    progress.set_description(f"{type(self).__name__} (stopped early)")
                    progress.write(
                        f"{type(self).__name__}: stopped early after epoch {epoch} of "
                        f"{n_epochs}: the validation score did not improve by tol={self.tol} "
                        f"for {self.n_iter_no_change} epochs. Kept the parameters of epoch "
                        f"{stopping.best_epoch} (validation score {stopping.best_score:.4g})"
                        + (", the model before training." if stopping.best_epoch == 0 else ".")
                    )
        finally:
            if progress is not None:
                progress.close()
        module.eval()
        return epoch, history

    #: A training loss this many times its first value (and above it by more
    #: than 1) means the optimizer has blown the model up (for estimators
    #: with ``_loss_growth_is_divergence``).
    DIVERGENCE_FACTOR = 100.0

    def _check_divergence(self, module, Z_train, loss, first_loss, epoch):
        """The divergence guard: a clear error instead of a NaN or exploded model."""
        bad = None
        if not math.isfinite(loss):
            bad = f"the training loss is {loss}"
        elif self._loss_growth_is_divergence and (
            loss > first_loss + max(1.0, (self.DIVERGENCE_FACTOR - 1) * abs(first_loss))
        ):
            bad = f"the training loss grew from {first_loss:.4g} to {loss:.4g}"
        else:
            for param_name, param in module.named_parameters():
                if not torch.isfinite(param).all():
                    bad = f"parameter {param_name!r} is not finite"
                    break
            else:
                bad = self._divergence_reason(module, Z_train)
        if bad is not None:
            raise ConvergenceDivergedError(
                f"{type(self).__name__} diverged in epoch {epoch}: {bad}. Lower "
                f"learning_rate (now {self.learning_rate}) or raise batch_size (now "
                f"{self.batch_size}). The estimator was left as it was before fit."
            )

    def _divergence_reason(self, module, Z_train):
        return None

    def _scored_validation(self, module, Z_val):
        """The validation score, computed in eval mode without gradients
        (the module is left in eval mode)."""
        module.eval()
        with torch.no_grad():
            return float(self._validation_score(module, Z_val))

    def _epoch_diagnostics(self, module):
        """Extra per-epoch entries of ``history_`` (a dict)."""
        return {}

    def _validation_score(self, module, Z_val):
        return -float(self._training_loss(module, Z_val, make_generator(0, Z_val.device)))

    def _after_training(self, module, Z, generator):
        return {}

    # ------------------------------------------------------------ inference
    def _log_scale_jacobian(self):
        """log |dZ/dX| of the standardization, added to log-densities of Z."""
        return -float(np.log(self.scale_).sum())

    def _inference_device(self):
        """Where inference runs: ``device_``, except that MPS (no float64)
        hands inference to the CPU."""
        return torch.device("cpu") if self.device_.type == "mps" else self.device_

    def _inference_module(self):
        """A float64 copy of the fitted module on the inference device, in eval mode.

        Inference runs in float64: results do not depend on how rows are
        batched (float32 differs by ~1e-7 between batch sizes), and a
        log-likelihood keeps its digits.
        """
        return copy.deepcopy(self.module_).to(
            device=self._inference_device(), dtype=torch.float64).eval()

    def _chunk_rows(self, n_rows):
        """Rows per inference chunk: what fits in scikit-learn's
        ``working_memory`` (``sklearn.set_config``, 1 GiB by default)."""
        budget = get_config()["working_memory"] * 2**20
        return int(max(1, min(n_rows, budget // self._inference_row_bytes())))

    def _inference_row_bytes(self):
        """Working memory of one row in inference (float64 activations)."""
        return 32 * self.n_features_in_

    def _inference_rows(self, X, rows, mean, scale, device):
        """``X[rows]`` as the module takes it in inference: by default dense,
        standardized (unless ``mean`` is None), float64, on ``device``."""
        return _dense_rows(X, rows, mean, scale, device, torch.float64)

    def _map_rows(self, function, X, *, grad=False):
        """``function`` of the standardized rows of validated ``X`` (numpy or
        sparse), a float64 tensor chunk at a time; the float64 numpy result.
        Memory stays bounded by ``working_memory`` whatever ``len(X)``."""
        device = self._inference_device()
        mean, scale = (None, None) if self._is_identity(self.mean_, self.scale_) else (
            self.mean_, self.scale_)
        chunk = self._chunk_rows(X.shape[0])
        work = chunk * self._multiply_adds_per_row(X.shape[1])
        outputs = []
        with torch_threads(self._cpu_threads(work, device)):
            for rows in gen_batches(X.shape[0], chunk):
                Z = self._inference_rows(X, rows, mean, scale, device)
                with torch.set_grad_enabled(grad):
                    outputs.append(function(Z).detach().cpu().numpy())
        if not outputs:
            return np.zeros((0,), dtype=np.float64)
        return np.concatenate(outputs).astype(np.float64, copy=False)

    @staticmethod
    def _check_n_steps(n_steps):
        """A chain length given to ``sample`` or ``sample_conditional``."""
        if not isinstance(n_steps, numbers.Integral) or n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}.")

    def _sample_rows(self, draw, n_samples, random_state, *, chunk_rows=1024):
        """``n_samples`` rows from ``draw(n, generator)`` (standardized rows, a
        tensor on the inference device), ``chunk_rows`` at a time, returned as
        float64 numpy in the units of the data."""
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        device = self._inference_device()
        generator = make_generator(random_state, device)
        work = chunk_rows * self._multiply_adds_per_row(self.n_features_in_)
        chunks = []
        with torch_threads(self._cpu_threads(work, device)):
            for rows in gen_batches(int(n_samples), chunk_rows):
                chunks.append(draw(rows.stop - rows.start, generator).detach().cpu().numpy())
        return np.concatenate(chunks).astype(np.float64) * self.scale_ + self.mean_

    def _complete_rows(self, X, mask, complete, random_state, *, chunk_rows=1024):
        """``sample_conditional``'s frame: validated ``X`` with its free
        entries (``mask``, or X's NaN) drawn by ``complete(Z, free,
        generator)``, which gets standardized rows (a tensor on the inference
        device, free entries arbitrary) and a boolean tensor of the same
        shape, and returns the rows completed. The known entries come back
        exactly as given."""
        X, free = self._conditional_inputs(X, mask)
        device = self._inference_device()
        generator = make_generator(random_state, device)
        mean, scale = (None, None) if self._is_identity(self.mean_, self.scale_) else (
            self.mean_, self.scale_)
        work = chunk_rows * self._multiply_adds_per_row(self.n_features_in_)
        chunks = []
        with torch_threads(self._cpu_threads(work, device)):
            for rows in gen_batches(X.shape[0], chunk_rows):
                Z = _dense_rows(X, rows, mean, scale, device, torch.float64)
                completed = complete(Z, torch.as_tensor(free[rows], device=device), generator)
                chunks.append(completed.detach().cpu().numpy())
        completed = np.concatenate(chunks).astype(np.float64) * self.scale_ + self.mean_
        return np.where(free, completed, X)

    def _check_fitted(self):
        check_is_fitted(self, "module_")

    # -------------------------------------------------------------- pickle
    def __getstate__(self):
        """Store every torch object on the CPU, whatever device it lives on."""
        state = dict(super().__getstate__())  # object's is self.__dict__ itself
        for key, value in state.items():
            if isinstance(value, (torch.nn.Module, torch.Tensor)):
                state[key] = copy.deepcopy(value).cpu()
        if "device_" in state:
            state["device_"] = str(state["device_"])
        return state

    def __setstate__(self, state):
        """Put the torch objects back on the fitted device when this machine
        has it, on the CPU otherwise (a GPU-fitted model scores anywhere)."""
        super().__setstate__(state)
        if "device_" not in state:
            return
        try:
            device = resolve_device(state["device_"])
        except ValueError:
            device = torch.device("cpu")
        self.device_ = device
        for key, value in list(vars(self).items()):
            if isinstance(value, (torch.nn.Module, torch.Tensor)):
                setattr(self, key, value.to(device))
