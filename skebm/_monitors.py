"""Epoch monitors: what the training loop tells, checks and stops on.

The loop (:meth:`TorchEstimator._train`) runs epochs and sends each monitor
the same events, in the order the estimator lists them
(:meth:`TorchEstimator._monitors`):

- ``on_train_begin(run)``: before the first epoch;
- ``on_epoch_end(run, record)``: after each epoch, with its ``history_``
  record (a dict a monitor may add entries to); True asks the loop to stop;
- ``on_train_end(run)``: after the last epoch, when training went through;
- ``close(run)``: always, last, even when training failed.

``run`` is the :class:`TrainingRun`: the estimator, the module being
trained, the training and validation rows, and the loop's counters.
"""

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from sklearn.exceptions import ConvergenceWarning

__all__ = ["ConvergenceDivergedError", "DivergenceGuard", "EarlyStopping", "EpochMonitor",
           "PlateauDecay", "ProgressBar", "TrainingRun"]


class ConvergenceDivergedError(FloatingPointError, ValueError):
    """Raised when training produces a NaN or infinite loss or parameter.

    It derives from ``ValueError`` so that model selection tools treat it like
    any other bad combination of parameters (``GridSearchCV`` records
    ``error_score`` for that candidate and goes on).
    """


@dataclass
class TrainingRun:
    """What the monitors of one call of the training loop see."""

    estimator: object
    module: torch.nn.Module
    Z_train: object
    Z_val: object  #: the held-out rows, as the estimator's ``_validation_set`` made them
    n_epochs: int
    epoch_steps: int = 1  #: training steps an epoch takes
    epoch: int = 0
    #: the first step's loss, or the first epoch's (steps that return none,
    #: weighted rows)
    first_loss: float = None
    history: list = field(default_factory=list)
    notes: list = field(default_factory=list)  #: lines for the progress bar to write
    rule: object = None  #: the update rule (``.optimizer``), for monitors that set the rate
    stopped: bool = False  #: whether a monitor ended training (on the last epoch, too)
    started: float = None  #: when the fit began, ``time.monotonic()``


class EpochMonitor:
    """A monitor that does nothing; subclasses override the events they need."""

    def on_train_begin(self, run):
        pass

    def on_epoch_end(self, run, record):
        return False

    def on_train_end(self, run):
        pass

    def close(self, run):
        pass


class DivergenceGuard(EpochMonitor):
    """A clear error instead of a NaN or exploded model.

    A non-finite loss or parameter is divergence; so is, for an estimator
    whose loss is positive and falls (``_loss_growth_is_divergence``), a loss
    grown :attr:`FACTOR` times above its first value; and whatever the
    estimator's ``_divergence_reason`` finds.
    """

    #: A loss this many times its first value (and above it by more than 1).
    FACTOR = 100.0

    def on_epoch_end(self, run, record):
        estimator, loss = run.estimator, record["loss"]
        bad = None
        if not math.isfinite(loss):
            bad = f"the training loss is {loss}"
        elif estimator._loss_growth_is_divergence and (
            loss > run.first_loss + max(1.0, (self.FACTOR - 1) * abs(run.first_loss))
        ):
            bad = f"the training loss grew from {run.first_loss:.4g} to {loss:.4g}"
        else:
            bad = next((f"parameter {name!r} is not finite"
                        for name, param in run.module.named_parameters()
                        if not _finite(param)), None)
            bad = bad or estimator._divergence_reason(run.module, run.Z_train)
        if bad is not None:
            raise ConvergenceDivergedError(
                f"{type(estimator).__name__} diverged in epoch {run.epoch}: {bad}. Lower "
                f"learning_rate (now {estimator._learning_rate():g}) or raise batch_size (now "
                f"{estimator.batch_size}). The estimator was left as it was before fit."
            )
        return False


def _finite(tensor):
    """Whether every value of ``tensor`` is finite. A NaN or an infinity
    makes the sum non-finite, so the sum answers for nearly every tensor, in
    one pass without a mask (an embedding of millions of rows is checked
    every epoch); a sum that overflowed gets the exact check."""
    with torch.no_grad():
        return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def kept_state(module, held=None):
    """A copy of ``module``'s state, written over ``held`` (an earlier copy
    of it) where there is one: a large model's best epoch is kept in one
    copy, never two while the new one is made."""
    state = module.state_dict()
    if held is None or any(not torch.is_tensor(value) or name not in held
                           or held[name].shape != value.shape or held[name].dtype != value.dtype
                           for name, value in state.items()):
        return copy.deepcopy(state)
    for name, value in state.items():
        held[name].copy_(value)
    return held


def patience_in_epochs(patience, min_steps, run):
    """``patience`` epochs, or more when they would hold fewer than
    ``min_steps`` training steps: on small data an epoch is a step or two,
    too little training to judge a plateau by."""
    return max(patience, math.ceil(min_steps / max(run.epoch_steps, 1)))


class EarlyStopping(EpochMonitor):
    """Scores the validation rows after every epoch (``validation_score`` in
    ``history_``) and stops when ``patience`` epochs in a row (at least
    ``min_steps`` steps' worth, see :func:`patience_in_epochs`) have not
    beaten the best by ``tol``, as scikit-learn's MLP; the parameters kept are
    the best epoch's. Epoch 0, the model before training, is a candidate too:
    a model built on a base density keeps the base when training does not beat it.
    When the epochs run out before any monitor stopped training, a
    ``ConvergenceWarning`` says so, as scikit-learn's MLP does at
    ``max_iter``.
    """

    def __init__(self, tol, patience, min_steps=0):
        self.tol, self.patience, self.min_steps = tol, patience, min_steps
        self.best_score, self.best_state, self.best_epoch = -math.inf, None, None
        self.epochs_since_best = 0

    def on_train_begin(self, run):
        self.patience = patience_in_epochs(self.patience, self.min_steps, run)
        self._update(run.estimator._scored_validation(run.module, run.Z_val), run.module, 0)

    def on_epoch_end(self, run, record):
        record["validation_score"] = run.estimator._scored_validation(run.module, run.Z_val)
        run.module.train()
        return self._update(record["validation_score"], run.module, run.epoch)

    def on_train_end(self, run):
        if self.best_state is not None:
            run.module.load_state_dict(self.best_state)
        if not run.stopped:
            warnings.warn(
                f"{type(run.estimator).__name__}: the {run.n_epochs} epochs of max_iter ran "
                "out before early stopping ended training (it waits for n_iter_no_change "
                f"epochs without an improvement of tol={self.tol} in the validation score); "
                f"the parameters of epoch {self.best_epoch} of this fit were kept (0: the "
                "model it started from). Raise max_iter to train further.", ConvergenceWarning)
        if run.epoch < run.n_epochs:
            why = (f": the validation score did not improve by tol={self.tol} for "
                   f"{self.patience} epochs" if self.epochs_since_best >= self.patience else "")
            run.notes.append(
                f"{type(run.estimator).__name__}: stopped early after epoch {run.epoch} of "
                f"{run.n_epochs}{why}. Kept the parameters of epoch {self.best_epoch} "
                f"(validation score {self.best_score:.4g})"
                + (", the model before training." if self.best_epoch == 0 else "."))

    def _update(self, score, module, epoch):
        self.epochs_since_best = 0 if score > self.best_score + self.tol else (
            self.epochs_since_best + 1)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = kept_state(module, self.best_state)
        return self.epochs_since_best >= self.patience


class PlateauDecay(EpochMonitor):
    """Divides the learning rate by ``factor`` each time the validation score
    (the record's ``validation_score``: list it after :class:`EarlyStopping`)
    has not beaten its best by ``tol`` for ``patience`` epochs (at least
    ``min_steps`` steps' worth, see :func:`patience_in_epochs`), as torch's
    ``ReduceLROnPlateau``. With ``restore_best``, each division also puts
    back the parameters of the best epoch so far. Besides, every epoch
    multiplies the rate by ``epoch_factor`` (a number, or a function of the
    run that returns it; 1: none). Training stops once the rate is
    ``factor ** max_decays`` times below its first value, however it got
    there: epochs at such a rate move the model too little to pay for
    themselves. Each record gets ``learning_rate``, the rate its epoch ran
    at. The rate is that of ``run.rule.optimizer``; without a rule the
    monitor only counts, and the ``max_decays``-th plateau stops."""

    def __init__(self, tol, patience=1, factor=10.0, max_decays=2, restore_best=False,
                 epoch_factor=1.0, min_steps=0):
        self.tol, self.patience, self.factor, self.max_decays = tol, patience, factor, max_decays
        self.min_steps = min_steps
        self.epoch_factor, self.first_rate = epoch_factor, None
        self.restore_best, self.best_state = restore_best, None
        self.best_score, self.epochs_since_best, self.n_decays = -math.inf, 0, 0
        self.spent = False

    def on_train_begin(self, run):
        self.patience = patience_in_epochs(self.patience, self.min_steps, run)

    def on_epoch_end(self, run, record):
        groups = run.rule.optimizer.param_groups if run.rule is not None else []
        if groups:
            record["learning_rate"] = groups[0]["lr"]
            self.first_rate = self.first_rate or groups[0]["lr"]
        epoch_factor = (self.epoch_factor(run) if callable(self.epoch_factor)
                        else self.epoch_factor)
        score = record["validation_score"]
        self.epochs_since_best = 0 if score > self.best_score + self.tol else (
            self.epochs_since_best + 1)
        if score > self.best_score:
            self.best_score = score
            if self.restore_best:
                self.best_state = kept_state(run.module, self.best_state)
        factor = epoch_factor
        if self.epochs_since_best >= self.patience:
            self.n_decays += 1
            self.epochs_since_best = 0
            if self.best_state is not None:  # go on from the best epoch, more slowly
                run.module.load_state_dict(self.best_state)
            factor /= self.factor
        for group in groups:
            group["lr"] *= factor
        if not groups:
            return self.n_decays >= self.max_decays
        floor = self.first_rate / self.factor**self.max_decays
        self.spent = groups[0]["lr"] <= floor * (1 + 1e-9)  # 0.1 * 0.1 is not 0.01 in floats
        return self.spent

    def on_train_end(self, run):
        name = type(run.estimator).__name__
        if self.n_decays:
            run.notes.append(f"{name}: lowered the learning rate {self.n_decays} times by a "
                             f"factor of {self.factor:g} on validation plateaus.")
        if self.spent:
            run.notes.append(f"{name}: stopped once the learning rate was "
                             f"{self.factor**self.max_decays:g} times below its start.")


class ProgressBar(EpochMonitor):
    """A ``tqdm`` bar over epochs, with the last record's numbers; shown
    only once the fit has run ``delay`` seconds (what came before training,
    NCEDensity's base search say, counted), and erased at the end unless
    ``leave``."""

    def __init__(self, delay=0.0, leave=True):
        self.delay, self.leave = delay, leave

    def on_train_begin(self, run):
        from tqdm.auto import tqdm

        waited = 0.0 if run.started is None else time.monotonic() - run.started
        self.bar = tqdm(total=run.n_epochs, desc=type(run.estimator).__name__, unit="epoch",
                        delay=max(0.0, self.delay - waited), leave=self.leave)

    def on_epoch_end(self, run, record):
        # No refresh here: a refresh draws the bar before its delay has passed
        # (and one drawn so is not erased); update draws it once it has.
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"},
                             refresh=False)
        self.bar.update()
        return False

    def on_train_end(self, run):
        bar = self.bar
        if bar.last_print_t >= bar.start_t + bar.delay:  # drawn: tqdm's own test
            for note in run.notes:
                bar.write(note)

    def close(self, run):
        if hasattr(self, "bar"):
            self.bar.close()
