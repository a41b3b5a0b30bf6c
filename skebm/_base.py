"""The torch machinery that every skebm estimator shares.

An estimator file (``nce.py``, ...) says *what* is learned: the energy, the
loss, how to sample.  This module says *how* it is run, once for all of them:

- ``device="auto"`` resolved into ``device_``, a private ``torch.Generator``
  seeded from ``random_state`` (never the global torch seed);
- a thread policy, so torch does not fight joblib for two cores;
- the minibatch training loop: Adam (or an estimator's own update rule), a
  progress bar when ``verbose``,
  ``history_``, ``n_iter_``, early stopping on a validation fraction,
  ``warm_start``, and a divergence guard;
- chunked inference with bounded memory, in float64;
- input standardization with its log-Jacobian;
- pickling that moves every tensor to the CPU, so that a model fitted on a GPU
  unpickles and predicts on a machine without one.
"""

import contextlib
import copy
import math
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "ConvergenceDivergedError",
    "LikelihoodDensityMixin",
    "TorchEstimator",
    "make_generator",
    "resolve_device",
]

#: Rows per forward pass in inference; keeps memory bounded for any n_samples.
INFERENCE_CHUNK_SIZE = 65536


class ConvergenceDivergedError(FloatingPointError, ValueError):
    """Raised when training produces a NaN or infinite loss or parameter.

    It derives from ``ValueError`` so that model selection tools treat it like
    any other bad combination of parameters (``GridSearchCV`` records
    ``error_score`` for that candidate and goes on).
    """


def resolve_device(device):
    """Turn the ``device`` parameter into a ``torch.device``.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise. An
    explicit CUDA device on a machine without one is an error, not a silent
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
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but CUDA is not available here.")
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


@contextlib.contextmanager
def torch_threads(n_threads):
    """Run the block with ``n_threads`` intra-op torch threads, then restore.

    ``n_threads=None`` leaves torch's setting alone.
    """
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _standardization(X):
    """Mean and scale of each column; constant columns get scale 1."""
    X = X.astype(np.float64, copy=False)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))] = 1.0
    return mean, scale


class LikelihoodDensityMixin(DensityMixin):
    """scikit-learn's DensityMixin with a ``score`` that means something:
    the mean of ``score_samples``, so model selection compares held-out
    log-likelihoods. (DensityMixin's own ``score`` does nothing.)"""

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


class TorchEstimator(BaseEstimator):
    """Base class of the skebm estimators: runs their torch work.

    A subclass provides

    - ``_build(Z, generator)``: the trainable ``torch.nn.Module`` for a new
      fit, given the standardized training data as a float32 tensor;
    - ``_training_loss(module, batch, generator)``: the minibatch loss;
    - optionally ``_validation_score(module, Z_val)``: a higher-is-better
      score used for early stopping (default: minus the mean training loss);
    - optionally ``_after_training(module, Z, generator)``: work done once
      after the loop (an estimate of log Z, say); returns a dict of fitted
      attributes;
    - optionally, where gradient descent on a loss is not how the model
      learns (an RBM's contrastive-divergence update, say):
      ``_make_optimizer(module, n_steps)``, ``_training_step(module, batch,
      generator, optimizer, scheduler)`` (return None when the step computes
      no loss) and ``_epoch_loss(module, Z)`` (the loss reported per epoch
      when the steps return None);
    - optionally ``_input_standardization(X)`` (default: each column's mean
      and standard deviation) and ``_n_epochs()`` (default: ``max_iter``).

    and calls ``self._fit_module(X)`` from ``fit`` (``partial=True`` from
    ``partial_fit``: one epoch, continuing the fitted model).  Every fitted
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
        "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
    }

    # ------------------------------------------------------------------ fit
    def _fit_module(self, X, *, partial=False):
        """Validate X, train (or keep training) the module, set fitted state.

        ``partial=True`` (``partial_fit``) runs one epoch and continues the
        fitted model, whatever ``warm_start`` says.
        """
        fitted = hasattr(self, "module_")
        warm = fitted and (partial or getattr(self, "warm_start", False))
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], ensure_min_samples=2, reset=not warm
        )
        device = resolve_device(self.device)
        generator = make_generator(self.random_state, device)
        if warm:
            # Each continued fit draws a stream of its own, still reproducible.
            generator.manual_seed(generator.initial_seed() + self.n_iter_)
        with torch_threads(self._n_threads_for(device)):
            if warm:
                mean, scale = self.mean_, self.scale_
            else:
                mean, scale = self._input_standardization(X)
            identity = not mean.any() and (scale == 1).all()
            Z = self._to_tensor(X if identity else (X - mean) / scale, device, torch.float32)
            Z_train, Z_val = self._split_validation(Z, generator)
            if warm:
                module = copy.deepcopy(self.module_).to(device)
            else:
                module = self._build(Z_train, generator).to(device)
            n_epochs = 1 if partial else self._n_epochs()
            epochs_run, history = self._train(module, Z_train, Z_val, generator, n_epochs)
            extra = self._after_training(module, Z_train, generator)

        # Success: only now does the estimator change.
        previous_history = self.history_ if warm else []
        self.mean_, self.scale_ = mean, scale
        self.module_ = module.eval()
        self.device_ = device
        self.history_ = previous_history + history
        self.n_iter_ = (self.n_iter_ if warm else 0) + epochs_run
        for name, value in extra.items():
            setattr(self, name, value)
        return self

    def _n_threads_for(self, device):
        """torch intra-op threads for this fit: ``n_threads``, or 1 on the CPU.

        Measured on 2 cores (``benchmarks/threads.py``): a second thread makes a
        lone NCEDensity fit 2.3x faster on an idle machine, but two parallel
        fits (``GridSearchCV(n_jobs=2)``) 10x slower, and a fit beside a busy
        process 18x slower: torch's threads wait actively for each other. One
        thread is never far from the best and never a disaster.
        """
        if self.n_threads is not None:
            return self.n_threads
        return 1 if device.type == "cpu" else None

    def _input_standardization(self, X):
        """(mean, scale) that the inputs are standardized with before torch."""
        return _standardization(X)

    def _n_epochs(self):
        """Epochs a full fit runs (at most, with early stopping)."""
        return self.max_iter

    def _split_validation(self, Z, generator):
        """(training rows, validation rows or None). Data too small to leave two
        training rows and one validation row is trained on whole."""
        if not getattr(self, "early_stopping", False):
            return Z, None
        n_val = int(math.ceil(self.validation_fraction * len(Z)))
        if len(Z) - n_val < 2:
            return Z, None
        order = torch.randperm(len(Z), generator=generator, device=generator.device)
        return Z[order[n_val:]], Z[order[:n_val]]

    def _make_optimizer(self, module, n_steps):
        """(optimizer, scheduler or None) for ``n_steps`` minibatch steps:
        Adam with a cosine schedule to 0."""
        optimizer = torch.optim.Adam(
            module.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_steps)

    def _training_step(self, module, batch, generator, optimizer, scheduler):
        """One minibatch update; returns the detached loss (or None)."""
        loss = self._training_loss(module, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss.detach()

    def _epoch_loss(self, module, Z_train):
        raise NotImplementedError(
            f"{type(self).__name__}._training_step returned no loss: define _epoch_loss."
        )

    def _train(self, module, Z_train, Z_val, generator, n_epochs):
        """The minibatch loop. Returns (epochs run, per-epoch history)."""
        name = type(self).__name__
        batch_size = min(self.batch_size, len(Z_train))
        n_batches = len(Z_train) // batch_size  # drop the ragged last batch
        optimizer, scheduler = self._make_optimizer(module, n_epochs * n_batches)
        history = []
        best_score, best_state, epochs_since_best = -math.inf, None, 0
        epochs = range(n_epochs)
        if self.verbose:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc=name, unit="epoch")
        module.train()
        epoch, first_loss = -1, None
        for epoch in epochs:
            order = torch.randperm(len(Z_train), generator=generator, device=generator.device)
            epoch_loss = torch.zeros((), device=Z_train.device)
            for start in range(0, n_batches * batch_size, batch_size):
                batch = Z_train[order[start : start + batch_size]]
                loss = self._training_step(module, batch, generator, optimizer, scheduler)
                if loss is None:
                    continue
                epoch_loss += loss
                if first_loss is None:
                    first_loss = loss.item()
            if loss is None:
                mean_loss = float(self._epoch_loss(module, Z_train))
                first_loss = mean_loss if first_loss is None else first_loss
            else:
                mean_loss = epoch_loss.item() / n_batches
            record = {"epoch": epoch + 1, "loss": mean_loss}
            self._check_divergence(module, record["loss"], first_loss, epoch + 1)
            if Z_val is not None:
                module.eval()
                with torch.no_grad():
                    record["validation_score"] = float(self._validation_score(module, Z_val))
                module.train()
            history.append(record)
            if self.verbose:
                epochs.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
            if Z_val is None:
                continue
            # As scikit-learn's MLP: patience counts epochs that do not beat the
            # best by tol; the kept parameters are the best epoch's, whatever tol.
            score = record["validation_score"]
            epochs_since_best = 0 if score > best_score + self.tol else epochs_since_best + 1
            if score > best_score:
                best_score, best_state = score, copy.deepcopy(module.state_dict())
            if epochs_since_best >= self.n_iter_no_change:
                break
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        return epoch + 1, history

    #: A training loss this many times its first value (and above it by more
    #: than 1) means the optimizer has blown the model up.
    DIVERGENCE_FACTOR = 100.0

    def _check_divergence(self, module, loss, first_loss, epoch):
        """The divergence guard: a clear error instead of a NaN or exploded model."""
        bad = None
        if not math.isfinite(loss):
            bad = f"the training loss is {loss}"
        elif loss > first_loss + max(1.0, (self.DIVERGENCE_FACTOR - 1) * abs(first_loss)):
            bad = f"the training loss grew from {first_loss:.4g} to {loss:.4g}"
        else:
            for param_name, param in module.named_parameters():
                if not torch.isfinite(param).all():
                    bad = f"parameter {param_name!r} is not finite"
                    break
        if bad is not None:
            raise ConvergenceDivergedError(
                f"{type(self).__name__} diverged in epoch {epoch}: {bad}. Lower "
                f"learning_rate (now {self.learning_rate}) or raise batch_size (now "
                f"{self.batch_size}). The estimator was left as it was before fit."
            )

    def _validation_score(self, module, Z_val):
        return -float(self._training_loss(module, Z_val, make_generator(0, Z_val.device)))

    def _after_training(self, module, Z, generator):
        return {}

    # ------------------------------------------------------------ inference
    def _standardized(self, X, *, reset=False):
        """Validate X at predict time and return it standardized, float64."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=reset)
        return (X.astype(np.float64) - self.mean_) / self.scale_

    def _log_scale_jacobian(self):
        """log |dZ/dX| of the standardization, added to log-densities of Z."""
        return -float(np.log(self.scale_).sum())

    def _inference_module(self):
        """A float64 copy of the fitted module on ``device_``, in eval mode.

        Inference runs in float64: results do not depend on how rows are
        batched (float32 differs by ~1e-7 between batch sizes), and a
        log-likelihood keeps its digits.
        """
        return copy.deepcopy(self.module_).to(device=self.device_, dtype=torch.float64).eval()

    def _apply_in_chunks(self, function, Z, *, grad=False):
        """Apply ``function`` to float64 tensors of at most INFERENCE_CHUNK_SIZE
        rows of the numpy array ``Z``; return the concatenated float64 numpy
        result. Memory stays bounded whatever ``len(Z)``."""
        outputs = []
        with torch_threads(self._n_threads_for(self.device_)):
            for start in range(0, len(Z), INFERENCE_CHUNK_SIZE):
                chunk = self._to_tensor(Z[start : start + INFERENCE_CHUNK_SIZE], self.device_)
                with torch.set_grad_enabled(grad):
                    out = function(chunk)
                outputs.append(out.detach().cpu().numpy())
        if not outputs:
            return np.zeros((0,), dtype=np.float64)
        return np.concatenate(outputs).astype(np.float64, copy=False)

    @staticmethod
    def _to_tensor(array, device, dtype=torch.float64):
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # torch warns about read-only memory
            array = array.copy()
        return torch.as_tensor(array, dtype=dtype, device=device)

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
        device = torch.device(state["device_"])
        if device.type == "cuda" and not torch.cuda.is_available():
            device = torch.device("cpu")
        self.device_ = device
        for key, value in list(vars(self).items()):
            if isinstance(value, (torch.nn.Module, torch.Tensor)):
                setattr(self, key, value.to(device))
