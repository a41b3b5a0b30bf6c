"""The base class of the skebm estimators: the hooks they fill, the loop that
runs them.

An estimator file (``nce.py``, ...) says *what* is learned by filling the
hooks at the top of :class:`TorchEstimator`; this module says *how* it is run,
once for all of them: validation at the door, the device and the private
generator, the thread policy, the minibatch loop with its epoch monitors
(:mod:`skebm._monitors`), chunked float64 inference, and pickles that load on a
machine without the fitting device. A fit changes the estimator only when it
succeeds.
"""

import contextlib
import copy
import math
import numbers
import time
from abc import ABCMeta, abstractmethod
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
# torch imports torch._dynamo, and sympy with it, when the first optimizer is
# made (``torch.optim.Optimizer.add_param_group``) or ``skip_init`` first
# builds a layer: a second-long import that a Ctrl-C in a first fit would
# leave half done, breaking every later fit in the process. Done at import.
import torch._dynamo  # noqa: F401
from sklearn import get_config
from sklearn.base import BaseEstimator
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (_check_sample_weight, check_array, check_is_fitted,
                                      validate_data)

from ._checks import (check_n_samples, input_attributes_restored_on_failure,
                      refuse_inexact_integers)
from ._monitors import DivergenceGuard, EarlyStopping, ProgressBar, TrainingRun
from ._pickling import DevicePickleMixin
from ._rows import LabelledRows, SparseRows, dense_rows, standardization, take
from ._runtime import (cpu_threads, deterministic_kernels, draw_seed, make_generator,
                       refuse_beyond_memory, resolve_device, thread_limit, watched)
from ._table import TableColumns, UnseenCategoryError, _column_name, blanked
from .optim import adam, load_state

__all__ = ["Step", "TorchEstimator", "UpdateRule"]

#: Seconds of training after which ``verbose=0`` shows a progress bar where a
#: person watches: a default fit should take seconds, and one that does not
#: should say so rather than look hung.
QUIET_BAR_DELAY = 10.0
#: Most standard deviations from its training mean an input value may lie:
#: further out, its square (in any density's quadratic form, summed over
#: features and scaled by a precision) overflows float64.
LARGEST_STANDARDIZED = 1e100
#: Most rows an inference chunk holds, whatever memory allows: the chunks of
#: a long call (scoring many rows with missing cells, say) count its progress.
INFERENCE_CHUNK_ROWS = 16_384


class Step(NamedTuple):
    """What a training step returns: its ``loss`` (a tensor; detached once the
    step is taken; None for an update rule that computes none) and
    ``diagnostics``, numbers about the step that ``history_`` averages over
    the epoch's rows."""

    loss: object
    diagnostics: dict = {}


class UpdateRule(NamedTuple):
    """The default update rule: a torch optimizer and its learning-rate schedule."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


class TorchEstimator(DevicePickleMixin, BaseEstimator, metaclass=ABCMeta):
    """Base class of the skebm estimators: runs their torch work.

    ``fit`` (and ``partial_fit``) call :meth:`_fit_module`, which validates X
    (and y), trains the module the hooks below describe, and sets the fitted
    attributes only when training went through. Rows reach the hooks
    standardized (see ``_input_standardization``) as a float32 tensor or a
    container of rows (:mod:`skebm._rows`); with y, as :class:`LabelledRows`
    whose minibatches are ``(rows, targets)``.
    """

    # ---------------------------------------------------- required hooks
    @abstractmethod
    def _build(self, Z, generator, scale):
        """The trainable ``torch.nn.Module`` of a new fit, given the training
        rows ``Z`` and the standardization's ``scale`` of each feature (a
        table's integers lie ``1 / scale`` apart on ``Z``); its random start
        comes from ``generator`` only."""

    def _training_loss(self, module, batch, generator):
        """The minibatch loss (mean over the rows of ``batch``) as a
        :class:`Step`. Required unless ``_training_step`` is overridden."""
        raise NotImplementedError

    @abstractmethod
    def _multiply_adds_per_step(self, n_features, target_attributes):
        """Rough work of one training step, for the thread policy
        (``target_attributes``: what ``_encode_targets`` returned, or {})."""

    @abstractmethod
    def _multiply_adds_per_row(self, n_features):
        """Rough work of one row of inference, for the thread policy."""

    @abstractmethod
    def _inference_row_bytes(self):
        """Working memory of one row of inference, in bytes: sets the chunks."""

    # ---------------------------------------------- hooks with a default
    #: Whether a training loss far above its first value means divergence:
    #: true for losses that stay positive and fall (NCE's).
    _loss_growth_is_divergence = False
    #: Whether the estimator has the early-stopping parameters.
    _supports_early_stopping = False
    #: Rows the first call of ``partial_fit`` needs (``fit`` needs 2): a
    #: spread to standardize by, a base to fit.
    _first_chunk_rows = 2
    #: Most rows one epoch visits (None: all); with a cap, an epoch costs the
    #: same however large the data, and each draws a fresh random subset.
    _max_epoch_rows = None
    #: Most rows early stopping holds out (None: ``validation_fraction`` of
    #: them, however many): for estimators whose validation score costs
    #: more per row than a training step does.
    _max_validation_rows = None
    #: Fewest training steps that early stopping's patience spans: with
    #: epochs of fewer steps, it waits more epochs (0: ``n_iter_no_change``
    #: epochs, however short).
    _min_patience_steps = 0
    #: Whether X may be a table (:mod:`skebm._table`): categorical columns
    #: (``categorical_features``), integer ones (``integer_features``) and
    #: missing cells (NaN). The hooks then see category codes and NaN among
    #: the standardized rows.
    _accepts_tables = False
    #: Whether X may have missing cells (NaN) though not a table: the hooks
    #: then see NaN among the standardized rows (a column never observed is
    #: refused at fit).
    _accepts_missing = False

    def _learning_rate(self):
        """The step size ``learning_rate`` sets, a number (an estimator with
        an ``"auto"`` rate resolves it here)."""
        return self.learning_rate

    def _make_optimizer(self, module):
        """The torch optimizer of ``module``'s parameters: Adam with
        ``learning_rate`` and ``weight_decay`` (fused where torch can)."""
        return adam(module.parameters(), lr=self._learning_rate(), weight_decay=self.weight_decay)

    def _make_update_rule(self, module, n_steps):
        """What ``_training_step`` updates with: an :class:`UpdateRule`, the
        rate on a cosine to 0 over ``n_steps`` steps, or constant when
        ``n_steps`` is None (``partial_fit``, whose calls never end)."""
        optimizer = self._make_optimizer(module)
        if n_steps is None:
            return UpdateRule(optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0, 0))
        return UpdateRule(optimizer,
                          torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_steps))

    def _training_step(self, module, batch, generator, rule):
        """One minibatch update; returns a :class:`Step` with the loss
        detached. Default: a gradient step on ``_training_loss``."""
        step = self._training_loss(module, batch, generator)
        rule.optimizer.zero_grad(set_to_none=True)
        step.loss.backward()
        rule.optimizer.step()
        rule.scheduler.step()
        return Step(step.loss.detach(), step.diagnostics)

    def _epoch_loss(self, module, Z_train):
        """The loss ``history_`` reports for an epoch whose steps return none."""
        raise NotImplementedError(f"{type(self).__name__}: a step returned no loss.")

    def _training_set(self, module, Z_train):
        """What the epochs draw their minibatches from, made once per call of
        the training loop (default: the training rows as they are); the
        monitors still see the rows as they are."""
        return Z_train

    def _validation_set(self, module, Z_val):
        """What ``_validation_score`` reads after every epoch, made once per
        call of the training loop (default: the held-out rows as they are)."""
        return Z_val

    def _validation_score(self, module, Z_val):
        """Higher-is-better score of the held-out rows (as ``_validation_set``
        made them) for early stopping (default: minus the training loss)."""
        return -float(self._training_loss(module, Z_val, make_generator(0, Z_val.device)).loss)

    def _monitors(self, validation):
        """The epoch monitors of a fit, in order (``validation``: whether rows
        are held out): the divergence guard, early stopping, the progress bar
        (``verbose`` > 0: from the first epoch; 0: only once the fit passes
        :data:`QUIET_BAR_DELAY` seconds where a person watches, erased at its
        end; below 0: never)."""
        monitors = [DivergenceGuard()]
        if validation:
            monitors.append(EarlyStopping(self.tol, self.n_iter_no_change,
                                          min_steps=self._min_patience_steps))
        bar = self._bar_settings()
        if bar is not None:
            monitors.append(ProgressBar(**bar))
        return monitors

    def _bar_settings(self, *, inference=False):
        """``delay`` and ``leave`` of a progress bar as ``verbose`` asks for
        it, or None for no bar. An ``inference`` bar (scoring, drawing or
        completing rows) waits :data:`QUIET_BAR_DELAY` seconds whatever
        ``verbose`` says: a bar for every call of ``score`` in a
        cross-validation would drown the output it is in."""
        if self.verbose > 0:
            return {"delay": QUIET_BAR_DELAY if inference else 0.0, "leave": True}
        if self.verbose == 0 and watched():
            return {"delay": QUIET_BAR_DELAY, "leave": False}
        return None

    @contextlib.contextmanager
    def _progress(self, total, description, *, inference=False):
        """A progress bar of ``total`` steps (None: a count without an end)
        for long work outside the training loop (the base density's search,
        log Z on first use, ``inference`` in chunks), shown as
        :meth:`_bar_settings` says. Yields the callable that counts a step,
        with an optional note of what the step was (None when no bar is to
        be shown); the bar starts at the first step, so work that counts
        none (log Z known at once) shows none."""
        settings = self._bar_settings(inference=inference)
        if settings is None:
            yield None
            return
        from tqdm.auto import tqdm

        bars, entered = [], time.monotonic()

        def step(note=None):
            if not bars:  # its delay counts from the start of the work, not the first step
                waited = time.monotonic() - entered
                bars.append(tqdm(total=total, desc=f"{type(self).__name__} {description}",
                                 unit=" steps", leave=settings["leave"],
                                 delay=max(0.0, settings["delay"] - waited)))
            if note is not None:  # drawn with the update, not before the bar's delay
                bars[0].set_postfix_str(note, refresh=False)
            bars[0].update()

        try:
            yield step
        finally:
            for bar in bars:
                bar.close()

    def _epoch_diagnostics(self, module):
        """Extra entries of an epoch's ``history_`` record, as a dict."""
        return {}

    def _divergence_reason(self, module, Z_train):
        """What is wrong with a model blown up without a non-finite value, or None."""
        return None

    def _after_training(self, module, Z, generator):
        """Fitted attributes computed once after the loop, as a dict (``Z``:
        every training row, held-out ones included); may update ``module``."""
        return {}

    def _encode_targets(self, y, *, warm, **options):
        """A supervised estimator's integer codes of ``y`` and the fitted
        attributes that come with them (``classes_``, ...)."""
        raise NotImplementedError

    def _check_model_size(self, n_features, n_rows, target_attributes, device, partial):
        """Refuse a new model too large for ``device``, before anything of the
        fit is allocated (the per-feature standardization included): the
        shape of X and what ``_encode_targets`` returned are known
        (``partial``: for ``partial_fit``, which holds no rows out)."""

    def _check_input_values(self, X, settings):
        """Estimator-specific checks of validated X (a range, say) against
        ``settings``, the values of ``_model_parameters`` the model has or is
        about to have (:meth:`_model_settings`)."""

    def _check_values(self, X, *, reset):
        """The checks of every validated X: the estimator's own
        (``_check_input_values``), then, for rows a fitted model reads
        (not ``reset``), no value :data:`LARGEST_STANDARDIZED` standard
        deviations or more from the training mean, which would come out as
        an infinite score or a NaN deep in torch: an
        :class:`~skebm.UnseenCategoryError` instead, whose rows an outlier
        detector flags."""
        self._check_input_values(X, self._model_settings(fitting=reset))
        if reset or not hasattr(self, "mean_") or sp.issparse(X) or not len(X):
            return
        # Each column's extremes first (NaN aside, and no temporary of X's size).
        reach = LARGEST_STANDARDIZED * self.scale_
        with np.errstate(invalid="ignore", over="ignore"):
            columns = np.flatnonzero((np.fmax.reduce(X, axis=0) - self.mean_ >= reach)
                                     | (self.mean_ - np.fmin.reduce(X, axis=0) >= reach))
        if not len(columns):
            return
        far = np.abs(X[:, columns] - self.mean_[columns]) >= reach[columns]
        rows = far.any(1)
        row = np.flatnonzero(rows)[0]
        column = columns[np.flatnonzero(far[row])[0]]
        name = _column_name(getattr(self, "feature_names_in_", None), column)
        raise UnseenCategoryError(
            f"Column {name} holds {X[row, column]:.3g} (row {row}), "
            f"{abs(X[row, column] - self.mean_[column]) / self.scale_[column]:.3g} standard "
            f"deviations from its training mean; {rows.sum()} of {len(X)} rows hold a value "
            f"beyond {LARGEST_STANDARDIZED:g}, where float64 cannot score it (its square "
            "overflows), and the model gives it probability 0. Drop or cap such values (a "
            "sentinel that stands for a missing value should be NaN).", rows)

    def _input_standardization(self, X):
        """(mean, scale) the inputs are standardized with before torch; a
        table's category codes are left as they are."""
        mean, scale = standardization(X)
        table = getattr(self, "_table", None)
        if table is not None:
            mean[table.is_categorical], scale[table.is_categorical] = 0.0, 1.0
        return mean, scale

    def _training_rows(self, X, mean, scale, device):
        """The standardized training rows: a float32 tensor on ``device``, or
        :class:`SparseRows` that densify one minibatch at a time."""
        mean, scale = self._nonidentity(mean, scale)
        if sp.issparse(X):
            return SparseRows(X, mean, scale, device)
        return dense_rows(X, slice(None), mean, scale, device, torch.float32)

    def _inference_rows(self, X, rows, mean, scale, device):
        """``X[rows]`` as the module takes it in inference: dense,
        standardized (unless ``mean`` is None), float64, on ``device``."""
        return dense_rows(X, rows, mean, scale, device, torch.float64)

    def _warm_module(self, Z_train, device):
        """The module a warm fit continues from: a copy of the fitted one."""
        return copy.deepcopy(self.module_).to(device)

    def _inference_module(self):
        """A float64 copy of the fitted module on the inference device, in eval
        mode: results then do not depend on how rows are batched. Made
        outside a caller's torch.inference_mode(), whose tensors autograd
        (the chains' gradients) refuses."""
        with torch.inference_mode(False):
            return copy.deepcopy(self.module_).to(
                device=self._inference_device(), dtype=torch.float64).eval()

    def _n_epochs(self, epoch_steps):
        """Epochs a full fit runs (at most, with early stopping), when an
        epoch is ``epoch_steps`` minibatches."""
        return self.max_iter

    # ----------------------------------------------------------- fitting
    #: Parameters the fitted model is built from (its layers, the form of its
    #: inputs). A fitted model answers from the values it was fitted with
    #: (:meth:`_model_settings`), whatever ``set_params`` said since, and a
    #: warm start that changes one is refused: the model it would continue
    #: keeps its own.
    _model_parameters = ()

    def _model_settings(self, *, fitting=False):
        """The values of ``_model_parameters``: the parameters' own for a fit
        that builds a new model (``fitting``), the fitted model's otherwise."""
        settings = {name: getattr(self, name) for name in self._model_parameters}
        return settings if fitting else {**settings, **getattr(self, "_fitted_settings", {})}

    def _refuse_changed_model(self):
        """Before a warm start: refuse parameters that no longer describe the
        fitted model."""
        fitted = self._model_settings()
        changed = [name for name in fitted if not _same(fitted[name], getattr(self, name))]
        if changed:
            was = ", ".join(f"{name}={fitted[name]!r}" for name in changed)
            now = ", ".join(f"{name}={getattr(self, name)!r}" for name in changed)
            warm = "warm_start" in self.get_params(deep=False)
            raise ValueError(
                f"{type(self).__name__}: "
                + ("a warm start (warm_start=True, or partial_fit)" if warm else "partial_fit")
                + f" continues the fitted model, which has {was}; the parameters now say "
                f"{now}. Set them back, or "
                + ("fit with warm_start=False" if warm else "call fit") + " for a new model.")

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
        "verbose": ["verbose", Interval(numbers.Integral, None, 0, closed="neither")],
        "random_state": ["random_state"],
        "device": [StrOptions({"auto", "cpu", "cuda", "mps"}), str, torch.device],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
    }

    def _fit_module(self, X, y=None, *, partial=False, sample_weight=None, **target_options):
        """Validate X (and y), train (or keep training) the module, set fitted state.

        ``partial=True`` (``partial_fit``) runs one epoch at a constant rate,
        holding no rows out, and continues the fitted model, whatever
        ``warm_start`` says, and the optimizer state of a previous partial fit
        (its moments and step count), so a loop over chunks trains as one run.
        A fit that fails, however, leaves every attribute as it was, the
        input attributes validation sets at the door included.
        ``sample_weight`` (with y): each row's weight, which the minibatches
        carry to ``_training_loss`` and ``_validation_score``.
        """
        with input_attributes_restored_on_failure(self):
            return self._fit_validated(X, y, partial=partial, sample_weight=sample_weight,
                                       **target_options)

    def _fit_validated(self, X, y, *, partial, sample_weight=None, **target_options):
        """``_fit_module``'s work; on failure it may have set ``n_features_in_``
        and ``feature_names_in_`` (only)."""
        started = time.monotonic()
        fitted = hasattr(self, "module_")
        warm = fitted and (partial or getattr(self, "warm_start", False))
        if y is None and self.__sklearn_tags__().target_tags.required:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None.")
        if warm:
            self._refuse_changed_model()
        target_attributes = {}
        # A new model needs two rows (a spread, a base), a stream's first chunk
        # _first_chunk_rows; its later chunks, one.
        least = 2 if not partial else 1 if warm else self._first_chunk_rows
        if y is None:
            X = self._validated(X, reset=not warm, ensure_min_samples=least)
            if self._accepts_tables or self._accepts_missing:
                X = _without_empty_rows(X, least)
        else:
            X, y = self._validated(X, y, reset=not warm, ensure_min_samples=least)
            codes, target_attributes = self._encode_targets(y, warm=warm, **target_options)
            weights = _row_weights(sample_weight, X)
        device = resolve_device(self.device)
        if not warm:
            self._check_model_size(X.shape[1], X.shape[0], target_attributes, device, partial)
        generator = make_generator(self.random_state, device)
        if warm:  # each continued fit draws a stream of its own, still reproducible
            generator.manual_seed(generator.initial_seed() + self.n_iter_)
        work = self._multiply_adds_per_step(X.shape[1], target_attributes)
        # Gradients on, even inside a caller's torch.no_grad() or
        # torch.inference_mode().
        with self._torch_settings(work, device), torch.inference_mode(False), torch.enable_grad():
            mean, scale = (self.mean_, self.scale_) if warm else self._input_standardization(X)
            Z = self._training_rows(X, mean, scale, device)
            if y is not None:
                Z = LabelledRows(Z, torch.as_tensor(codes, dtype=torch.long, device=device),
                                 target_attributes, weights=None if weights is None else
                                 torch.as_tensor(weights, dtype=torch.float32, device=device))
            Z_train, Z_val = (Z, None) if partial else self._split_validation(Z, generator)
            module = (self._warm_module(Z_train, device) if warm
                      else self._build(Z_train, generator, scale).to(device))
            optimizer_state = (getattr(self, "_partial_optimizer_state", None)
                               if warm and partial else None)
            epochs_run, history, rule = self._train(module, Z_train, Z_val, generator,
                                                    partial=partial,
                                                    optimizer_state=optimizer_state,
                                                    started=started)
            extra = self._after_training(module, Z, generator)
            log_partition_seed = draw_seed(generator)

        # Success: only now does the estimator change.
        self.history_ = (self.history_ if warm else []) + history
        self.n_iter_ = (self.n_iter_ if warm else 0) + epochs_run
        self.mean_, self.scale_ = mean, scale
        if not warm:
            self._fitted_settings = copy.deepcopy(self._model_settings(fitting=True))
        self.module_ = module.eval()
        self.device_ = device
        self._log_partition_memo = {"seed": log_partition_seed, "settings": {
            name: getattr(self, name) for name in getattr(self, "_log_partition_parameters", ())}}
        self._partial_optimizer_state = _cpu_state(rule) if partial else None
        for name, value in {**target_attributes, **extra}.items():
            setattr(self, name, value)
        return self

    def _cpu_threads(self, multiply_adds, device):
        """torch threads for work of this size (:func:`skebm._runtime.cpu_threads`)."""
        return cpu_threads(self.n_threads, multiply_adds, device)

    @contextlib.contextmanager
    def _torch_settings(self, multiply_adds, device):
        """The process's settings for a call of ``multiply_adds`` a step on
        ``device`` (fit, inference, log Z), restored after it: the thread
        policy's counts, and on CUDA deterministic kernels."""
        with thread_limit(self._cpu_threads(multiply_adds, device)), deterministic_kernels(device):
            yield

    def _split_validation(self, Z, generator):
        """(training rows, validation rows or None). Data too small to leave two
        training rows and one validation row is trained on whole. Rows of
        weight 0 are never held out: they score nothing, and a held-out set
        of them alone would score every epoch 0 and keep the untrained model."""
        if not (self._supports_early_stopping and self.early_stopping):
            return Z, None
        weights = getattr(Z, "weights", None)
        device = generator.device
        weighted = (torch.ones(len(Z), dtype=torch.bool, device=device) if weights is None
                    else (weights > 0).to(device))
        candidates = torch.nonzero(weighted).squeeze(1)
        n_val = int(math.ceil(self.validation_fraction * len(candidates)))
        if self._max_validation_rows is not None:
            n_val = min(n_val, self._max_validation_rows)
        if len(Z) - n_val < 2 or len(candidates) - n_val < 1:
            return Z, None
        order = candidates[torch.randperm(len(candidates), generator=generator, device=device)]
        weightless = torch.nonzero(~weighted).squeeze(1)
        return take(Z, torch.cat([order[n_val:], weightless])), take(Z, order[:n_val])

    def _train(self, module, Z_train, Z_val, generator, *, partial, optimizer_state=None,
               started=None):
        """The minibatch loop, its events sent to the monitors. Returns
        (epochs run, per-epoch history, the update rule). ``started``: when
        the fit began (``time.monotonic()``; None: now)."""
        batch_size = min(self.batch_size, len(Z_train))
        epoch_steps = math.ceil(self._epoch_rows(len(Z_train)) / batch_size)
        n_epochs = 1 if partial else self._n_epochs(epoch_steps)
        rule = self._make_update_rule(module, None if partial else n_epochs * epoch_steps)
        if optimizer_state is not None:
            load_state(rule.optimizer, optimizer_state)
        with torch.no_grad():
            batches = self._training_set(module, Z_train)
            if Z_val is not None:
                Z_val = self._validation_set(module, Z_val)
        run = TrainingRun(self, module, Z_train, Z_val, n_epochs, epoch_steps, rule=rule,
                          started=time.monotonic() if started is None else started)
        monitors = self._monitors(validation=Z_val is not None)
        try:
            for monitor in monitors:
                monitor.on_train_begin(run)
            module.train()
            for run.epoch in range(1, n_epochs + 1):
                loss, first_step_loss, diagnostics = self._run_epoch(
                    module, batches, generator, rule, batch_size)
                if run.first_loss is None:  # the reference of the growth check
                    # With row weights, the first epoch's: one minibatch's weights may
                    # be nothing like the rest's (balanced class weights put a rare
                    # class at a hundred times the others), and so may its loss.
                    weighted = getattr(Z_train, "weights", None) is not None
                    run.first_loss = (loss if first_step_loss is None or weighted
                                      else first_step_loss)
                record = {"epoch": run.epoch, "loss": loss, **diagnostics,
                          **self._epoch_diagnostics(module)}
                run.history.append(record)
                stop = False
                for monitor in monitors:  # every monitor hears every epoch
                    stop = monitor.on_epoch_end(run, record) or stop
                if stop:
                    run.stopped = True
                    break
            for monitor in monitors:
                monitor.on_train_end(run)
        finally:
            for monitor in monitors:
                monitor.close(run)
        module.eval()
        return run.epoch, run.history, rule

    def _epoch_rows(self, n_rows):
        """Rows one epoch visits: all, or at most ``_max_epoch_rows``."""
        return n_rows if self._max_epoch_rows is None else min(n_rows, self._max_epoch_rows)

    def _run_epoch(self, module, Z_train, generator, rule, batch_size):
        """One pass over the rows in a random order, the last minibatch
        possibly smaller. Returns (mean loss per row, loss of the first step
        or None, mean step diagnostics)."""
        n_rows = self._epoch_rows(len(Z_train))
        order = torch.randperm(len(Z_train), generator=generator, device=generator.device)
        losses, diagnostics = [], {}
        for rows in gen_batches(n_rows, batch_size):
            n_batch = rows.stop - rows.start
            step = self._training_step(module, Z_train[order[rows]], generator, rule)
            for name, value in step.diagnostics.items():
                diagnostics[name] = diagnostics.get(name, 0.0) + float(value) * n_batch
            if step.loss is not None:
                losses.append(step.loss * n_batch)
        diagnostics = {name: total / n_rows for name, total in diagnostics.items()}
        if not losses:
            return float(self._epoch_loss(module, Z_train)), None, diagnostics
        first_batch = min(batch_size, n_rows)
        return (torch.stack(losses).sum().item() / n_rows, losses[0].item() / first_batch,
                diagnostics)

    def _scored_validation(self, module, Z_val):
        """The validation score, in eval mode without gradients."""
        module.eval()
        with torch.no_grad():
            return float(self._validation_score(module, Z_val))

    # ------------------------------------------------------ validation
    def _validated(self, X, y=None, *, reset=False, ensure_min_samples=1):
        """scikit-learn's validation at the door, plus ``_check_values``.

        Sparse X is accepted where the estimator's tags say so (and kept
        sparse); integers and float16 become float64, float32 stays float32,
        and integers float64 cannot hold exactly are refused.
        """
        refuse_inexact_integers(X)
        if self._accepts_tables and y is None:
            return self._validated_table(X, reset=reset, ensure_min_samples=ensure_min_samples)
        sparse = self.__sklearn_tags__().input_tags.sparse
        kwargs = dict(dtype=[np.float64, np.float32], accept_sparse="csr" if sparse else False,
                      ensure_min_samples=ensure_min_samples, reset=reset,
                      ensure_all_finite="allow-nan" if self._accepts_missing else True)
        try:
            if y is None:
                X = validate_data(self, X, **kwargs)
            else:
                X, y = validate_data(self, X, y, **kwargs)
        except ValueError as error:  # X's NaN or text, not y's
            what = ("missing values (NaN)" if "X contains NaN" in str(error) else
                    f"text ({error})" if "convert string" in str(error) else None)
            if what is None:
                raise
            name = type(self).__name__
            densities = ("Put" if self.__sklearn_tags__().target_tags.required else
                         "NCEDensity models tables with missing cells and categorical columns "
                         "as they come; or put")
            if what.startswith("missing"):
                remedy = "skebm.DensityImputer"
            else:  # DensityImputer keeps a text column's values as text
                remedy = f"a OneHotEncoder for the text columns{_text_columns(X)}"
            raise ValueError(f"{name} does not take {what}. {densities} {remedy} before "
                             f"{name} in a Pipeline.") from error
        if reset and self._accepts_missing:
            unobserved = np.flatnonzero(np.isnan(X).all(0))
            if len(unobserved):
                name = _column_name(getattr(self, "feature_names_in_", None), unobserved[0])
                raise ValueError(f"Column {name} has no observed value; drop it.")
        self._check_values(X, reset=reset)
        return X if y is None else (X, y)

    def _validated_table(self, X, *, reset, ensure_min_samples):
        """A table at the door: numbers as ``_validated`` takes them, NaN
        allowed; with categorical columns (resolved at fit from
        ``categorical_features``, kept in ``_table``), the float64 array of
        values and category codes."""
        frame = hasattr(X, "columns") and hasattr(X, "dtypes")
        numbers = not frame and (sp.issparse(X) or np.asarray(X).dtype.kind not in "OUS")
        if numbers:  # scikit-learn's checks in one pass, as _validated makes them
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=reset,
                              ensure_all_finite="allow-nan",
                              ensure_min_samples=ensure_min_samples)
        else:
            if len(X) < ensure_min_samples:  # before any column is judged empty
                raise ValueError(f"Found a table with {len(X)} sample(s) while a minimum of "
                                 f"{ensure_min_samples} is required.")
            validate_data(self, X, skip_check_array=True, reset=reset)
        if reset:
            self._table = TableColumns.fit(X, self.categorical_features, self.integer_features,
                                           owner=type(self).__name__)
        if self._table.needs_encoding or not numbers:
            X = check_array(self._table.encode(X), ensure_all_finite="allow-nan",
                            ensure_min_samples=ensure_min_samples)
        else:  # encode() refuses what has probability 0; numbers alone, here
            self._table.refuse_impossible(X)
        self._check_values(X, reset=reset)
        return X

    def _decoded(self, rows, means=None):
        """Drawn rows (values and category codes) as the table they model;
        ``means``: True where a cell is a conditional mean."""
        table = getattr(self, "_table", None)
        return rows if table is None else table.decode(rows, means)

    def _snapped(self, rows):
        """Drawn rows with a table's integer columns rounded and its point
        masses put back (:meth:`TableColumns.snapped`)."""
        table = getattr(self, "_table", None)
        return rows if table is None else table.snapped(rows)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._accepts_tables or self._accepts_missing
        tags.input_tags.categorical = self._accepts_tables
        return tags

    def _check_fitted(self):
        check_is_fitted(self, "module_")

    @staticmethod
    def _nonidentity(mean, scale):
        """(mean, scale), or (None, None) when they would change nothing."""
        if not np.any(mean) and np.all(scale == 1):
            return None, None
        return mean, scale

    # ------------------------------------------------------- inference
    def _inference_device(self):
        """``device_``, except that MPS (no float64) hands inference to the CPU."""
        return torch.device("cpu") if self.device_.type == "mps" else self.device_

    def _chunk_rows(self, n_rows):
        """Rows per inference chunk: what fits in scikit-learn's
        ``working_memory`` (``sklearn.set_config``, 1 GiB by default)."""
        budget = get_config()["working_memory"] * 2**20
        return int(max(1, min(n_rows, budget // self._inference_row_bytes())))

    def _map_fitted(self, X, function, *, keep_dtype=False):
        """``function(module, Z)`` of the rows of X, checked against the fitted
        model, with the float64 inference module: the float64 numpy result
        (X's dtype, float32 or float64, with ``keep_dtype``)."""
        self._check_fitted()
        X = self._validated(X)
        module = self._inference_module()
        result = self._map_rows(lambda Z: function(module, Z), X)
        return result.astype(X.dtype, copy=False) if keep_dtype else result

    def _map_rows(self, function, X, *, grad=False):
        """``function`` of the standardized rows of validated ``X``, a float64
        tensor chunk at a time; memory stays bounded by ``working_memory``."""
        device = self._inference_device()
        mean, scale = self._nonidentity(self.mean_, self.scale_)
        chunk = min(self._chunk_rows(X.shape[0]), INFERENCE_CHUNK_ROWS)
        result = np.zeros((0,), dtype=np.float64)
        work = chunk * self._multiply_adds_per_row(X.shape[1])
        with self._inference_loop(work, device, X.shape[0], chunk) as progress:
            for rows in gen_batches(X.shape[0], chunk):
                Z = self._inference_rows(X, rows, mean, scale, device)
                with torch.set_grad_enabled(grad):
                    output = function(Z).detach().cpu().numpy()
                if rows.start == 0:  # filled in place: no second copy of a large result
                    result = np.empty((X.shape[0], *output.shape[1:]), dtype=np.float64)
                result[rows] = output
                progress()
        return result

    @contextlib.contextmanager
    def _inference_loop(self, work, device, n_rows, chunk_rows):
        """The frame of an inference loop over ``n_rows`` rows in chunks of
        ``chunk_rows``: the thread limit for ``work`` multiply-adds a chunk,
        and the callable that counts a chunk done (a bar's step where a long
        call is to show one, otherwise nothing)."""
        with self._torch_settings(work, device):
            with self._progress(-(-n_rows // chunk_rows), "rows", inference=True) as step:
                yield step or (lambda: None)

    def _sample_rows(self, draw, n_samples, random_state, *, chunk_rows=1024):
        """``n_samples`` rows of ``draw(n, generator)`` (standardized rows on
        the inference device), ``chunk_rows`` at a time, in the data's units."""
        check_n_samples(n_samples)
        refuse_beyond_memory(16 * n_samples * self.n_features_in_,
                             f"{type(self).__name__}.sample({n_samples})",
                             "Draw fewer rows at a time.")
        device = self._inference_device()
        generator = make_generator(random_state, device)
        work = chunk_rows * self._multiply_adds_per_row(self.n_features_in_)
        chunks = []
        with self._inference_loop(work, device, int(n_samples), chunk_rows) as progress:
            for rows in gen_batches(int(n_samples), chunk_rows):
                chunks.append(draw(rows.stop - rows.start, generator).detach().cpu().numpy())
                progress()
        return self._decoded(self._snapped(
            np.concatenate(chunks).astype(np.float64) * self.scale_ + self.mean_))

    def _complete_rows(self, X, mask, complete, random_state, *, chunk_rows=1024, draws=True,
                       passes_per_row=1):
        """``sample_conditional``'s frame: ``complete(Z, free, generator)`` gets
        standardized rows (free entries arbitrary) and a boolean tensor, True
        where a value is to be drawn (``mask``, or X's NaN); the known entries
        come back exactly as given. Free entries are ``draws`` (a table's
        integers rounded, its point masses put back) or, if not, estimates
        (means, as they are).
        ``passes_per_row``: the model's passes a row costs, for the thread
        policy."""
        index = X.index if hasattr(X, "columns") and hasattr(X, "index") else None
        X, free = self._conditional_inputs(X, mask)
        device = self._inference_device()
        generator = make_generator(random_state, device)
        mean, scale = self._nonidentity(self.mean_, self.scale_)
        work = chunk_rows * passes_per_row * self._multiply_adds_per_row(self.n_features_in_)
        chunks = []
        with self._inference_loop(work, device, X.shape[0], chunk_rows) as progress:
            for rows in gen_batches(X.shape[0], chunk_rows):
                Z = dense_rows(X, rows, mean, scale, device, torch.float64)
                completed = complete(Z, torch.as_tensor(free[rows], device=device), generator)
                chunks.append(completed.detach().cpu().numpy())
                progress()
        completed = np.concatenate(chunks).astype(np.float64) * self.scale_ + self.mean_
        if draws:
            completed = self._snapped(completed)
        completed = self._decoded(np.where(free, completed, X), means=None if draws else free)
        if index is not None and hasattr(completed, "index"):  # rows stay where they were
            completed.index = index
        return completed

    def _conditional_inputs(self, X, mask):
        """``(X, free)`` for ``sample_conditional``, validated: free entries of
        X may hold anything and come back as 0; the known ones must be finite
        and pass ``_check_values``."""
        self._check_fitted()
        refuse_inexact_integers(X)  # before blanked() turns its integers to floats
        if mask is not None:  # the cells to draw are no input, whatever they hold
            X = blanked(X, mask)
        X = (self._validated_table(X, reset=False, ensure_min_samples=1) if self._accepts_tables
             else validate_data(self, X, dtype=[np.float64, np.float32], reset=False,
                                ensure_all_finite="allow-nan"))
        free = np.isnan(X) if mask is None else np.asarray(mask)
        if free.dtype != bool or free.shape != X.shape:
            raise ValueError(
                f"mask must be a boolean array of X's shape {X.shape} (True where a "
                f"value is to be drawn), got dtype {free.dtype} and shape {free.shape}.")
        known = np.where(free, 0.0, X).astype(X.dtype, copy=False)
        if not np.isfinite(known).all():
            raise ValueError(
                "X has NaN or infinite values where mask is False: the known values must "
                "be finite (NaN may mark the values to draw when mask is None).")
        self._check_values(known, reset=False)
        return known, free


def _text_columns(X):
    """' (their names, in a ColumnTransformer)' for the columns of a frame
    that hold no numbers, or of an object array that hold text; else ''."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "items"):
        names = [str(name) for name, dtype in dtypes.items() if dtype.kind not in "biuf"]
    elif getattr(X, "dtype", None) == object and X.ndim == 2:
        names = [f"column {j}" for j in range(X.shape[1])
                 if any(isinstance(value, str) for value in X[:, j])]
    else:
        names = []
    return f" ({', '.join(names)}, in a ColumnTransformer)" if names else ""


def _without_empty_rows(X, least):
    """X without its rows of no observed cell (at least ``least`` rows must
    remain): every density gives such a row probability 1, so it teaches a
    fit nothing, where it would cost a completion at each step and, in a
    table, a sum over every combination of its categories."""
    empty = np.isnan(X).all(1)
    if not empty.any():
        return X
    if len(X) - empty.sum() < least:
        raise ValueError(f"X has {len(X) - empty.sum()} row(s) with an observed cell; a fit "
                         f"needs {least}. A row of missing cells alone says nothing of the data.")
    return X[~empty]


def _row_weights(sample_weight, X):
    """``sample_weight`` checked against X by scikit-learn's rules (one
    non-negative weight a row, not all 0), or None."""
    if sample_weight is None:
        return None
    return _check_sample_weight(sample_weight, X, ensure_non_negative=True)


def _same(a, b):
    """Whether two parameter values are equal: sequences and arrays entry by
    entry (a list and a tuple of the same sizes are the same)."""
    sequence = lambda v: isinstance(v, (list, tuple, np.ndarray))
    if sequence(a) or sequence(b):
        return (sequence(a) and sequence(b) and np.shape(a) == np.shape(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    return bool(a == b)


def _cpu_state(rule):
    """The optimizer state of an :class:`UpdateRule` on the CPU, for the next
    ``partial_fit`` to continue from; None for other update rules."""
    if not isinstance(rule, UpdateRule):
        return None

    def to_cpu(value):
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().clone()
        if isinstance(value, dict):
            return {key: to_cpu(item) for key, item in value.items()}
        if isinstance(value, list):
            return [to_cpu(item) for item in value]
        return value

    return to_cpu(rule.optimizer.state_dict())
