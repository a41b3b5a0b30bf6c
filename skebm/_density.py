"""A normalized likelihood over an estimator's unnormalized log-density."""

import math

import numpy as np
import torch
from sklearn.base import DensityMixin

from ._runtime import PARALLEL_WORK, make_generator

__all__ = ["LikelihoodDensityMixin"]


class LikelihoodDensityMixin(DensityMixin):
    """A normalized ``score_samples``, its mean as ``score``, and log Z on demand.

    log Z is estimated the first time it is needed (``score_samples``,
    ``score``, ``log_partition_``), not in ``fit``: a model used only for
    ``transform`` or ``sample`` never pays for it, and ``partial_fit`` does not
    redo it at every call. The estimate draws from a generator seeded at fit
    time, so it does not depend on when it is made or how often it is asked
    for; once made it is kept with the fitted model (and pickled with it).
    scikit-learn's ``DensityMixin.score`` does nothing; this one is the mean
    log-likelihood, so model selection compares held-out likelihoods.
    """

    #: Parameters of the log Z estimate. Their values at fit are kept with the
    #: fitted model (the estimate is made later, on first use, and must not
    #: follow a set_params since) and given to the two hooks below by name.
    _log_partition_parameters = ()

    # ----------------------------------------------------------- the hooks
    def _unnormalized_log_density(self, module, Z):
        """``log p(z) + log Z`` of standardized rows ``Z`` (a float64 tensor),
        one value per row."""
        raise NotImplementedError

    def _estimate_log_partition(self, module, generator, **settings):
        """``(log Z, standard error)`` of ``_unnormalized_log_density``, drawing
        from ``generator`` (called once per fitted model, without gradients);
        ``settings``: the fitted values of ``_log_partition_parameters``."""
        raise NotImplementedError

    def _log_partition_multiply_adds(self, **settings):
        """Rough work of the log Z estimate, for the thread policy."""
        return 10 * PARALLEL_WORK

    # ------------------------------------------------------ the public face
    def score_samples(self, X):
        """Normalized log-likelihood of each row of X, in nats.

        ``log p(x)`` of the rows in the units given, the standardization's
        log-Jacobian included; log Z is estimated on first use (see
        ``log_partition_``). Where the estimator takes tables, a row with
        missing cells (NaN) gets the log-density of its observed cells, and
        a categorical cell contributes the log-probability of its category.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,), float64
        """
        def log_likelihood(module, Z):  # called once the model is known to be fitted
            value = self._unnormalized_log_density(module, Z) + self._log_density_offset()
            missing = torch.isnan(Z)
            if missing.any():  # the standardization's Jacobian of the observed entries only
                log_scale = torch.as_tensor(np.log(self.scale_), device=Z.device)
                value = value + (missing * log_scale).sum(1)
                # Nothing observed is certain: log 1, not an estimate of it.
                value = torch.where(missing.all(1), 0.0, value)
            return value

        return self._map_fitted(X, log_likelihood)

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

    # ---------------------------------------------------------- machinery
    def _log_density_offset(self):
        """What turns an unnormalized log-density of ``Z`` into a normalized
        one of ``X``: the standardization's log-Jacobian less log Z."""
        return -float(np.log(self.scale_).sum()) - self._log_partition()[0]

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
            settings = memo["settings"]
            work = self._log_partition_multiply_adds(**settings)
            with self._torch_settings(work, device), torch.no_grad():
                log_z, log_z_std = self._estimate_log_partition(module, generator, **settings)
            if not math.isfinite(log_z):
                raise ValueError(
                    f"{type(self).__name__}: the estimate of log Z is not finite; the fitted "
                    "model is degenerate. Refit with a lower learning_rate."
                )
            memo["estimate"] = (float(log_z), float(log_z_std))
        return memo["estimate"]
