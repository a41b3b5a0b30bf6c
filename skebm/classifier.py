"""A classifier over many classes, trained by noise-contrastive estimation or
sampled softmax and predicting with the full softmax."""

import math
import numbers
import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn import get_config
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.sparsefuncs import min_max_axis
from sklearn.utils.validation import _num_samples

from ._base import Step, TorchEstimator
from ._monitors import EarlyStopping, PlateauDecay
from ._runtime import available_memory, refuse_beyond_memory, resolve_device
from ._softmax_model import LOSSES, SoftmaxModel, SparseBagRows, bags_from_rows, dense_enough
from .nets import ACTIVATIONS, layer_sizes
from .optim import LazyAdam

__all__ = ["NCESoftmaxClassifier"]

#: Bytes a parameter costs in training: its value, its gradient and Adam's
#: two moments, float32.
_TRAINING_BYTES_PER_PARAMETER = 16
#: And with early stopping: the best epoch's copy, and the plateau rule's.
_EARLY_STOPPING_BYTES_PER_PARAMETER = 8
#: Part of the memory the device has free that a model may plan to use.
_MEMORY_SHARE = 0.8
#: Most class scores (rows x classes) made at once, in prediction and in
#: early stopping's held-out log-loss: the softmax then reads them back from
#: the cache the product wrote them to (a few hundred rows of 11,862
#: classes; benchmarks/RESULTS.md), where working_memory alone would allow
#: thousands of rows.
_SCORES_AT_ONCE = 3_000_000


class NCESoftmaxClassifier(ClassifierMixin, TorchEstimator):
    """Classifier over many classes, trained by NCE or sampled softmax.

    A softmax classifier whose training costs O(``n_noise``) per row instead
    of O(``n_classes``): each minibatch scores its rows' own classes against
    ``n_noise`` classes drawn from the class frequencies raised to
    ``noise_power``, shared by the whole minibatch. The scores come from a
    bag of feature embeddings (fastText's design; sparse X is never made
    dense), optional hidden layers, then one output row per class.
    Predictions use the full, normalized softmax over every class. Each
    feature is divided by its largest magnitude in the training rows, as
    ``MaxAbsScaler`` does: sparse X stays sparse and 0/1 counts are
    unchanged, while raw measurements (in the hundreds, say) come to the
    range Adam's step suits, where unscaled each step moved their rows'
    scores too far.

    Read more in the :ref:`User Guide <nce_classifier>`.

    Parameters
    ----------
    loss : {"auto", "nce", "sampled", "full", "in_batch"}, default="auto"
        What training minimizes.

        - ``"nce"``: noise-contrastive estimation (Gutmann & Hyvarinen 2010,
          Mnih & Teh 2012): logistic regression of each row's class against
          the ``n_noise`` noise classes, on the logit ``s(y) - log(n_noise
          q(y)) - norm_term``.
        - ``"sampled"``: sampled softmax (Jean et al. 2015): a softmax over
          the row's class and the noise classes, each score corrected by
          ``- log(n_noise q)``.
        - ``"full"``: the cross-entropy of the full softmax, O(n_classes)
          per row; the exact reference.
        - ``"in_batch"``: a softmax over the minibatch's own targets (the
          other rows' classes are the negatives), corrected by the log of
          their frequency; no noise is drawn.
        - ``"auto"``: ``"full"`` when there are no more classes than
          ``n_noise`` (sampling would save nothing), ``"nce"`` otherwise.
    n_noise : int, default=128
        Noise classes drawn per minibatch (shared by its rows).
    noise_power : float in [0, 1], default=0.75
        The noise distribution is the class frequencies (plus one) raised to
        this power: 1 follows the frequencies, 0 is uniform; word2vec used
        0.75.
    norm_term : "auto", "learned" or float, default="auto"
        NCE's estimate of each row's log normalizer: ``"auto"`` is 0 (a
        new model is the class prior, its output biases the log class
        frequencies, already normalized); ``"learned"`` starts at 0 and is
        trained; a float is fixed. Only for ``loss="nce"``; predictions
        always normalize exactly.
    remove_accidental_hits : bool, default=False
        Drop a noise class from a row's loss when it is that row's own class
        (for ``"nce"``, ``"sampled"`` and, duplicates of the row's class
        among the minibatch's targets, ``"in_batch"``). Off by default: with
        them dropped, nothing pushes a class's score down on its own rows, so
        the losses' optimum is no longer the true conditional and the
        predictions come out overconfident (see the user guide).
    embedding_dim : int, default=128
        Width of the feature embedding (the bottleneck).
    hidden_layer_sizes : tuple of int, default=()
        Hidden layers after the embedding (linear then ``activation``
        each). The default, none, is a low-rank linear model, as fastText.
    activation : {"relu", "leaky_relu", "silu", "elu", "softplus", "tanh"}, default="relu"
        Non-linearity of the hidden layers.
    learning_rate : float, default=0.004
        Adam's step size (lazy: a step moves only the table rows it
        touches, :class:`~skebm.optim.LazyAdam`). With early stopping it
        halves after every epoch (every 500 steps, when an epoch has fewer
        minibatches), and is divided by 10 after each epoch whose held-out
        log-loss did not improve on the best by ``tol``, training going on
        from the best epoch. Training ends once the rate is 100 times below
        ``learning_rate`` (after seven epochs of halving, two plateaus, or a
        mix), since later epochs would hardly move the model. Without early
        stopping the rate is annealed to 0 over ``max_iter`` epochs by a
        cosine schedule. Adam moves a rare feature's embedding as far as a
        common one's, so a larger rate overfits sparse data within a few
        epochs (see the user guide).
    batch_size : int, default=1024
        Rows per minibatch. Larger batches train more rows per second (the
        noise classes are shared by the batch) and fit worse per epoch (see
        the user guide).
    max_iter : int or "auto", default="auto"
        Epochs (passes over the training rows), at most. "auto": 100, or as
        many as make 1,000 minibatch steps where an epoch has fewer than 10
        (tables of up to about 10,000 rows at the default ``batch_size``):
        a step, not an epoch, is what moves the model, and 100 one-step
        epochs end before the held-out log-loss of a small table stops
        improving.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the rows and stop when their
        log-loss (full softmax) has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, or once the rate is 100 times below its
        start (see ``learning_rate``), keeping the best epoch's model.
    validation_fraction : float, default=0.1
        Share of the rows held out for early stopping, at most 5,000 rows:
        every epoch scores them with the full softmax, which costs about
        ``n_classes / n_noise`` times a training row, and 5,000 rows, the
        same every epoch, are enough to compare epochs (a difference between
        two epochs' scores is of the same rows).
    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs, counted from the best epoch;
        the rate's plateau rule (see ``learning_rate``) may stop sooner. Both
        wait at least 50 training steps: where an epoch is a step or two (a
        few hundred rows), they wait that many more epochs.
    tol : float, default=1e-4
        Improvement of the validation log-loss that counts.
    warm_start : bool, default=False
        Continue from the fitted model in ``fit`` (same classes).
    verbose : int, default=0
        0 shows a progress bar only once the fit passes 10 seconds, in
        the main thread of the main process with a terminal or notebook
        (never in ``GridSearchCV``'s parallel workers), and erases it at the
        end; a positive value shows it from the first epoch and keeps it; a
        negative one shows nothing.
    random_state : int, RandomState instance or None, default=None
        Seeds initialization, shuffling and noise (a private generator).
    device : {"auto", "cpu", "cuda", "mps"} or torch.device, default="auto"
        Where to train; ``"auto"`` picks CUDA when available.
    n_threads : int or None, default=None
        torch threads on the CPU; None lets skebm choose by the work's size
        and the idle cores. A seed gives the same model at the same thread
        count; at another count the models differ in the last digits (the
        matrix products sum in another order). Set ``n_threads`` for
        bit-identical refits on a busy machine.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (any sortable labels: strings, integers).
    class_count_ : ndarray of shape (n_classes,)
        Training rows seen per class (summed over ``partial_fit`` calls),
        unweighted: the noise classes follow them.
    module_ : torch.nn.Module
        The fitted model.
    loss_ : str
        The loss ``loss="auto"`` resolved to.
    history_ : list of dict
        Per epoch: ``loss`` (the training objective: with ``sample_weight``,
        the mean over rows of each row's loss times its weight, so in the
        weights' units) and, with early stopping, ``validation_score`` (minus
        the held-out log-loss, its weighted mean) and ``learning_rate`` (the
        rate the epoch trained at).
    n_iter_ : int
        Epochs run.
    scale_ : ndarray of shape (`n_features_in_`,)
        What each feature is divided by: its largest magnitude in the
        training rows (of the first call, for ``partial_fit`` and
        ``warm_start``; 1 for a column of zeros).
    n_features_in_ : int
    device_ : torch.device

    See Also
    --------
    sklearn.linear_model.SGDClassifier : linear classifier, one-vs-rest.
    sklearn.neural_network.MLPClassifier : full-softmax neural network.

    References
    ----------
    .. [1] Gutmann, M. and Hyvarinen, A. "Noise-contrastive estimation: A new
       estimation principle for unnormalized statistical models." AISTATS 2010.
    .. [2] Mnih, A. and Teh, Y. W. "A fast and simple algorithm for training
       neural probabilistic language models." ICML 2012.
    .. [3] Jean, S., Cho, K., Memisevic, R. and Bengio, Y. "On using very large
       target vocabulary for neural machine translation." ACL 2015.
    .. [4] Mikolov, T. et al. "Distributed representations of words and
       phrases and their compositionality." NeurIPS 2013 (noise power 0.75).
    .. [5] Joulin, A. et al. "Bag of tricks for efficient text
       classification." EACL 2017 (fastText).
    .. [6] Walker, A. J. (1977); Vose, M. D. (1991): the alias method.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skebm import NCESoftmaxClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = NCESoftmaxClassifier(random_state=0).fit(X[:1500] / 16, y[:1500])
    >>> clf.loss_
    'full'
    >>> bool(clf.score(X[1500:] / 16, y[1500:]) > 0.9)
    True
    """

    _parameter_constraints = {
        **{name: constraint for name, constraint in TorchEstimator._parameter_constraints.items()
           if name != "weight_decay"},
        "loss": [StrOptions({"auto", "nce", "sampled", "full", "in_batch"})],
        "n_noise": [Interval(numbers.Integral, 1, None, closed="left")],
        "noise_power": [Interval(numbers.Real, 0, 1, closed="both")],
        "norm_term": [StrOptions({"auto", "learned"}), Interval(numbers.Real, None, None,
                                                                closed="neither")],
        "remove_accidental_hits": ["boolean"],
        "embedding_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_layer_sizes": ["array-like"],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
    }

    _loss_growth_is_divergence = True
    _supports_early_stopping = True
    _max_validation_rows = 5_000  # see validation_fraction
    _first_chunk_rows = 1  # a column's scale is its largest magnitude: one row has one
    _model_parameters = ("embedding_dim", "hidden_layer_sizes", "activation", "noise_power",
                         "norm_term")

    def __init__(
        self,
        *,
        loss="auto",
        n_noise=128,
        noise_power=0.75,
        norm_term="auto",
        remove_accidental_hits=False,
        embedding_dim=128,
        hidden_layer_sizes=(),
        activation="relu",
        learning_rate=0.004,
        batch_size=1024,
        max_iter="auto",
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=5,
        tol=1e-4,
        warm_start=False,
        verbose=0,
        random_state=None,
        device="auto",
        n_threads=None,
    ):
        self.loss = loss
        self.n_noise = n_noise
        self.noise_power = noise_power
        self.norm_term = norm_term
        self.remove_accidental_hits = remove_accidental_hits
        self.embedding_dim = embedding_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.verbose = verbose
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the classifier.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training rows, at least 2; sparse X stays sparse.
        y : array-like of shape (n_samples,)
            Class labels, at least two distinct ones.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each row: its loss, in training and in
            early stopping's held-out score, counts this many times. The
            noise classes still follow the rows' class counts (any noise
            distribution gives the same optimum; the counts are the usual
            one). None: every row weighs 1.

        Returns
        -------
        self : NCESoftmaxClassifier
        """
        return self._fit_module(X, y, sample_weight=sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing the fitted model and its optimizer.

        For streams that do not fit in memory at once, as
        ``SGDClassifier.partial_fit``; the noise follows the class counts
        seen so far. Every row trains (``early_stopping`` does not apply
        here), at the constant ``learning_rate``, Adam's state carried from
        call to call.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Any number of rows, one included, as ``SGDClassifier.partial_fit``
            takes them.
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            Every class of the stream; required on the first call, and
            the same as ``classes_`` if given later.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each row, as in ``fit``.

        Returns
        -------
        self : NCESoftmaxClassifier
        """
        if not hasattr(self, "module_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            # The model's size from the classes as given, before any copy of them is sorted.
            n_classes, n_features = len(classes), np.shape(X)[1] if np.ndim(X) == 2 else 0
            self._check_memory(n_features, n_classes, self._resolved_loss(n_classes),
                               resolve_device(self.device), self.batch_size,
                               early_stopping=False)
        return self._fit_module(X, y, partial=True, classes=classes,
                                sample_weight=sample_weight)

    # -- targets -------------------------------------------------------------
    def _encode_targets(self, y, *, warm, classes=None):
        """Integer codes of ``y`` in ``classes_``, with ``classes_`` and
        ``class_count_`` (counts of a warm fit add to the earlier ones)."""
        try:
            with warnings.catch_warnings():
                if warm or classes is not None:  # declared: a chunk of many labels is no sign
                    warnings.filterwarnings("ignore", "The number of unique classes is greater",
                                            UserWarning)
                check_classification_targets(y)
        except TypeError as error:  # numpy's sort of labels that do not compare
            types = sorted({type(label).__name__ for label in np.ravel(y)})
            if len(types) < 2:  # one type scikit-learn refuses (bytes): its own message
                raise
            raise ValueError(f"y mixes labels of types that do not compare ({', '.join(types)}): "
                             "give every label one type, all strings or all numbers.") from error
        if warm:
            known = self.classes_
            if classes is not None and not np.array_equal(np.unique(classes), known):
                raise ValueError(
                    f"classes={classes!r} is not classes_ of the earlier fit ({known!r}).")
        else:
            known = np.unique(y if classes is None else classes)
            if len(known) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs at least 2 classes; "
                    f"{'the data' if classes is None else 'classes'} has only "
                    f"{known.tolist()!r}.")
        codes = np.clip(np.searchsorted(known, y), 0, len(known) - 1)
        unseen = known[codes] != y
        if unseen.any():
            raise ValueError(
                f"y contains labels not in classes {np.unique(y[unseen])[:5].tolist()} "
                "(partial_fit: pass every class in classes= on the first call; a fit with "
                "warm_start=True keeps the classes of the fit it continues).")
        counts = np.bincount(codes, minlength=len(known))
        if warm:
            counts = counts + self.class_count_
        return codes, {"classes_": known, "class_count_": counts, "loss_": self._resolved_loss(
            len(known))}

    def _resolved_loss(self, n_classes):
        if self.loss != "auto":
            return self.loss
        return "full" if n_classes <= self.n_noise else "nce"

    # -- the pieces the shared training loop calls ------------------------------
    def _input_standardization(self, X):
        """No centring (sparse rows stay sparse); each column's scale is its
        largest magnitude."""
        if sp.issparse(X):
            smallest, largest = min_max_axis(X, axis=0)
            scale = np.maximum(np.abs(smallest), np.abs(largest)).astype(np.float64)
        else:
            scale = np.abs(X).max(axis=0).astype(np.float64)
        scale[scale == 0] = 1.0
        return np.zeros_like(scale), scale

    def _training_rows(self, X, mean, scale, device):
        if dense_enough(X):  # a table: dense rows
            return super()._training_rows(X, mean, scale, device)
        _, scale = self._nonidentity(mean, scale)  # None when it would change nothing
        return SparseBagRows(bags_from_rows(X, device, torch.float32, scale))

    def _inference_rows(self, X, rows, mean, scale, device):
        chunk = X[rows]
        if dense_enough(chunk):  # this chunk's: the paths differ by float64 rounding only
            return super()._inference_rows(X, rows, mean, scale, device)
        return bags_from_rows(chunk, device, torch.float64, scale)

    def _check_model_size(self, n_features, n_rows, target_attributes, device, partial):
        self._check_memory(n_features, len(target_attributes["classes_"]),
                           target_attributes["loss_"], device, min(self.batch_size, n_rows),
                           early_stopping=self.early_stopping and not partial)

    def _build(self, Z, generator, scale):
        class_count = Z.attributes["class_count_"]
        module = SoftmaxModel(
            Z.shape[1], class_count, self.embedding_dim, self._layer_widths(fitting=True)[1:],
            self.activation, self.noise_power, self.norm_term, generator)
        module.loss = Z.attributes["loss_"]
        return module

    def _warm_module(self, Z_train, device):
        module = super()._warm_module(Z_train, device)
        module.set_class_count(Z_train.attributes["class_count_"])
        module.loss = Z_train.attributes["loss_"]
        return module

    def _training_loss(self, module, batch, generator):
        bags, targets, weights = batch
        losses = LOSSES[module.loss](module, module.features(bags), targets, generator,
                                     self.n_noise, self.remove_accidental_hits)
        return Step(losses.mean() if weights is None else (weights * losses).mean())

    def _validation_score(self, module, Z_val):
        """Minus the held-out log-loss with the full softmax, a chunk at a time.
        (MLPClassifier scores accuracy; the log-loss is what the softmax is
        fitted to, and moves more smoothly.)"""
        n_classes = len(module.output_weight)
        chunk = min(self._rows_per_chunk(n_classes, 4), max(1, _SCORES_AT_ONCE // n_classes))
        total = 0.0
        for start in range(0, len(Z_val), chunk):
            rows = torch.arange(start, min(start + chunk, len(Z_val)),
                                device=Z_val.targets.device)
            bags, targets, weights = Z_val[rows]
            losses = F.cross_entropy(module.scores(module.features(bags)), targets,
                                     reduction="none")
            total += float(losses.sum() if weights is None else (weights * losses).sum())
        weight = len(Z_val) if Z_val.weights is None else float(Z_val.weights.sum())
        return -total / max(weight, np.finfo(np.float32).tiny)

    def _make_optimizer(self, module):
        """Adam that moves only the rows of the tables a step touches
        (:class:`~skebm.optim.LazyAdam`)."""
        return LazyAdam(module.parameters(), lr=self.learning_rate)

    #: With early stopping: the rate is divided by PLATEAU_FACTOR after
    #: PLATEAU_PATIENCE epochs without improvement, training going on from the
    #: best epoch's parameters (measured on the King James Bible next-word
    #: task; see the user guide). Besides, it halves every epoch, or every
    #: HALVING_STEPS steps when an epoch has fewer (small data keeps a
    #: near-constant rate). Training ends once the rate is PLATEAU_FACTOR **
    #: PLATEAU_DECAYS below its start, however it got there.
    PLATEAU_PATIENCE, PLATEAU_FACTOR, PLATEAU_DECAYS = 1, 10.0, 2
    HALVING_STEPS = 500
    #: Both patiences span at least this many steps: on a table of a few
    #: hundred rows an epoch is one step, and a held-out set of a few rows
    #: that a few steps did not improve stopped fits at the class prior (see
    #: the user guide).
    _min_patience_steps = 50

    #: max_iter="auto": AUTO_EPOCHS epochs, or as many as make AUTO_STEPS steps.
    AUTO_EPOCHS, AUTO_STEPS = 100, 1000

    def _n_epochs(self, epoch_steps):
        if self.max_iter != "auto":
            return self.max_iter
        return max(self.AUTO_EPOCHS, math.ceil(self.AUTO_STEPS / epoch_steps))

    def _epoch_factor(self, run):
        """What the rate is multiplied by after an epoch (see HALVING_STEPS)."""
        return 0.5 ** (run.epoch_steps / max(run.epoch_steps, self.HALVING_STEPS))

    def _make_update_rule(self, module, n_steps):
        """With early stopping, a rate that :class:`PlateauDecay` halves
        every epoch and lowers on plateaus; otherwise the base's cosine over
        the epochs (constant in ``partial_fit``)."""
        return super()._make_update_rule(module, None if self.early_stopping else n_steps)

    def _monitors(self, validation):
        monitors = super()._monitors(validation)
        if validation:  # after EarlyStopping, whose validation_score it reads
            after = 1 + next(i for i, m in enumerate(monitors) if isinstance(m, EarlyStopping))
            monitors.insert(after, PlateauDecay(self.tol, self.PLATEAU_PATIENCE,
                                            self.PLATEAU_FACTOR, self.PLATEAU_DECAYS,
                                            restore_best=True,
                                            epoch_factor=self._epoch_factor,
                                            min_steps=self._min_patience_steps))
        return monitors

    # -- memory and work -------------------------------------------------------
    def _layer_widths(self, *, fitting=False):
        """The widths of the embedding and the hidden layers: the fitted
        model's, or, for a fit that builds one (``fitting``), the
        parameters'."""
        settings = self._model_settings(fitting=fitting)
        return [settings["embedding_dim"],
                *layer_sizes(settings["hidden_layer_sizes"], allow_empty=True)]

    def _check_memory(self, n_features, n_classes, loss, device, batch_size, early_stopping):
        """Refuse, before allocating, a model that cannot be trained in the
        memory ``device`` has free (``batch_size``: the rows of a step;
        ``early_stopping``: whether copies of the model are kept)."""
        widths = self._layer_widths(fitting=True)
        n_parameters = (n_features * widths[0] + widths[0]
                        + sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
                        + n_classes * (widths[-1] + 1))
        scored = n_classes if loss == "full" else (
            batch_size if loss == "in_batch" else self.n_noise + 1)
        per_parameter = _TRAINING_BYTES_PER_PARAMETER + (
            _EARLY_STOPPING_BYTES_PER_PARAMETER if early_stopping else 0)
        needed = (per_parameter * n_parameters
                  + 3 * 4 * batch_size * (scored + sum(widths)))
        free = available_memory(device)
        if needed > _MEMORY_SHARE * free:
            raise ValueError(
                f"{type(self).__name__} would need about {needed / 2**30:.1f} GiB to train "
                f"({n_parameters:,} parameters: {n_features:,} features x embedding_dim="
                f"{widths[0]} in, {n_classes:,} classes x {widths[-1]} out), more than the "
                f"{free / 2**30:.1f} GiB free on {device}. Lower embedding_dim, the number of "
                "input features (n_features of a HashingVectorizer, say) or "
                "hidden_layer_sizes" + (", or batch_size (loss='full' holds a batch_size x "
                                        "n_classes matrix)" if loss == "full" else "") + ".")

    def _multiply_adds_per_step(self, n_features, target_attributes):
        n_classes = len(target_attributes["classes_"])
        loss = target_attributes["loss_"]
        scored = n_classes if loss == "full" else (
            self.batch_size if loss == "in_batch" else self.n_noise + 1)
        widths = self._layer_widths(fitting=True)
        per_row = sum(a * b for a, b in zip(widths[:-1], widths[1:])) + scored * widths[-1]
        return 3 * self.batch_size * per_row  # forward and backward

    def _multiply_adds_per_row(self, n_features):
        widths = self._layer_widths()
        return (sum(a * b for a, b in zip(widths[:-1], widths[1:]))
                + len(self.classes_) * widths[-1])

    def _inference_row_bytes(self):
        # float64 scores, their softmax and a temporary, per row.
        return 3 * 8 * (len(self.classes_) + sum(self._layer_widths()))

    def _chunk_rows(self, n_rows):
        return min(super()._chunk_rows(n_rows), max(1, _SCORES_AT_ONCE // len(self.classes_)))

    def _rows_per_chunk(self, n_classes, bytes_per_value):
        """Rows whose scores fit in scikit-learn's ``working_memory``."""
        budget = get_config()["working_memory"] * 2**20
        return max(1, int(budget // (3 * bytes_per_value * (n_classes + sum(self._layer_widths())))))

    # -- prediction ------------------------------------------------------------
    def _map_scores(self, function, X, *, per_class=True):
        """``function(scores)`` of the rows of X, where ``scores`` are every
        class's scores (float64), a chunk of rows at a time; ``per_class``:
        the result has a column per class, and must fit in memory."""
        self._check_fitted()
        n_rows = _num_samples(X) if per_class else 0
        refuse_beyond_memory(8 * n_rows * len(self.classes_),
                             f"Scores of {n_rows:,} rows over {len(self.classes_):,} classes",
                             "Predict fewer rows at a time (predict needs no such room).")
        return self._map_fitted(X, lambda module, bags: function(
            module.scores(module.features(bags))))

    def decision_function(self, X):
        """Each class's score (an unnormalized log-probability).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,)
            For two classes, the second class's score minus the first's, as
            scikit-learn's binary classifiers return it.
        """
        scores = self._map_scores(lambda s: s, X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict_log_proba(self, X):
        """Log-probability of each class, from the full softmax.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes), float64
        """
        return self._map_scores(lambda s: torch.log_softmax(s, 1), X)

    def predict_proba(self, X):
        """Probability of each class, from the full softmax (rows sum to 1).

        Memory stays within scikit-learn's ``working_memory`` per chunk of
        rows, besides the result itself (``n_samples x n_classes``).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), float64
        """
        return self._map_scores(lambda s: torch.softmax(s, 1), X)

    def predict(self, X):
        """The most probable class of each row.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        best = self._map_scores(lambda s: s.argmax(1).to(s.dtype), X, per_class=False)
        return self.classes_[best.astype(np.intp)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
