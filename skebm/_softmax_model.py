"""The classifier's model: a bag of feature embeddings and a score per class,
the sparse rows it reads (a text's never made dense; a table's dense, see
:func:`dense_enough`), and its training losses."""

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from ._rows import as_tensor
from .nets import ACTIVATIONS, _linear
from .samplers import AliasSampler

__all__ = ["LOSSES", "Bags", "SoftmaxModel", "SparseBagRows", "bags_from_rows",
           "dense_enough"]

class Bags:
    """Sparse rows as torch's ``embedding_bag`` takes them: ``indices`` (the
    columns of the non-zero entries, row after row), ``offsets`` (where each
    row starts) and ``weights`` (the entries' values)."""

    def __init__(self, indices, offsets, weights, n_features):
        self.indices, self.offsets, self.weights = indices, offsets, weights
        self.shape = (len(offsets), n_features)

    def __len__(self):
        return len(self.offsets)


def bags_from_rows(X, device, dtype, scale=None):
    """:class:`Bags` of the rows of X (scipy sparse or numpy), never dense,
    each column's values divided by its ``scale`` (None: as they are).

    Explicit zeros are dropped, and columns come in increasing order within
    a row, so a dense array and its sparse copy give the same bags.
    """
    # float32 rows stay float32 unless scaled (a copy at twice the size for
    # a large corpus otherwise); scaling divides in float64.
    exact = scale is not None or dtype == torch.float64
    rows = sp.csr_matrix(X, dtype=np.float64 if exact else np.float32)
    if not rows.has_canonical_format or not rows.data.all():
        if sp.issparse(X):
            # The caller's matrix stays as it was: a new dtype copies the
            # values but may share the column indices, which sorting moves.
            rows = rows.copy()
        rows.sum_duplicates()  # sorts each row's columns, merges repeats
        rows.eliminate_zeros()
    weights = rows.data if scale is None else rows.data / scale[rows.indices]
    return Bags(as_tensor(rows.indices, device, torch.long),
                as_tensor(rows.indptr[:-1], device, torch.long),
                as_tensor(weights, device, dtype), rows.shape[1])


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


class SoftmaxModel(nn.Module):
    """Scores of every class: a bag of feature embeddings, optional hidden
    layers, then one row of ``output_weight`` per class (its last column is
    the class's bias). A new model's output weights are 0 and its biases the
    log class frequencies: it starts predicting the class prior.

    The input and output tables are looked up by index, so a training step
    that scores a few sampled classes reads and updates only their rows
    (sparse gradients, see :func:`_sparse_lookup`). The class frequencies,
    the noise distribution (an alias table) and, for
    ``norm_term="learned"``, the normalizing term live here too, so they
    move and pickle with the model.
    """

    def __init__(self, n_features, class_count, embedding_dim, hidden_layer_sizes,
                 activation, noise_power, norm_term, generator):
        super().__init__()
        n_classes = len(class_count)
        device = generator.device
        float32 = dict(dtype=torch.float32, device=device)
        self.input_weight = nn.Parameter(
            torch.randn(n_features, embedding_dim, generator=generator, **float32)
            / math.sqrt(embedding_dim))
        self.input_bias = nn.Parameter(torch.zeros(embedding_dim, **float32))
        sizes = [embedding_dim, *hidden_layer_sizes]
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [_linear(n_in, n_out, generator), ACTIVATIONS[activation]()]
        self.hidden = nn.Sequential(*layers)
        self.output_weight = nn.Parameter(torch.zeros(n_classes, sizes[-1] + 1, **float32))
        self.noise_power = noise_power
        self.loss = None  # the estimator's loss_, set before each fit
        self.set_class_count(class_count)
        with torch.no_grad():  # the biases start at the log prior: a new model predicts it
            self.output_weight[:, -1] = self.log_frequency
        # That start is normalized (its scores are log-probabilities), so
        # NCE's estimate of the log normalizer starts at 0.
        initial = 0.0 if norm_term in ("auto", "learned") else float(norm_term)
        if norm_term == "learned":
            self.norm_term = nn.Parameter(torch.tensor(initial, **float32))
        else:
            self.register_buffer("norm_term", torch.tensor(initial, **float32))

    def set_class_count(self, class_count):
        """Class frequencies (counts + 1, so that a class not seen yet keeps a
        little mass) and the noise: frequencies to the power ``noise_power``."""
        smoothed = np.asarray(class_count, dtype=np.float64) + 1.0
        device = self.output_weight.device
        self.noise = AliasSampler(smoothed**self.noise_power).to(device)
        self.register_buffer("log_frequency", torch.as_tensor(
            np.log(smoothed / smoothed.sum()), dtype=self.output_weight.dtype, device=device))

    def features(self, rows):
        """The last hidden layer of each of ``rows`` (:class:`Bags`, or a dense
        tensor where :func:`dense_enough`), with a column of ones that
        multiplies the output biases."""
        if isinstance(rows, torch.Tensor):
            embedded = rows.to(self.input_weight.dtype) @ self.input_weight
        else:
            embedded = F.embedding_bag(
                rows.indices, self.input_weight, rows.offsets, mode="sum",
                per_sample_weights=rows.weights.to(self.input_weight.dtype),
                sparse=_sparse_lookup(rows.indices, self.input_weight))
        hidden = self.hidden(embedded + self.input_bias)
        return torch.cat([hidden, torch.ones_like(hidden[:, :1])], 1)

    def scores(self, features):
        """Every class's score, ``(n_rows, n_classes)``."""
        return features @ self.output_weight.T

    def class_scores(self, features, classes):
        """Every row's scores of ``classes``, ``(n_rows, len(classes))``."""
        return features @ F.embedding(
            classes, self.output_weight, sparse=_sparse_lookup(classes, self.output_weight)).T

    def sampled_logits(self, features, targets, classes, offset):
        """Each row's score of its own target, ``(n_rows,)``, and every row's
        scores of ``classes``, ``(n_rows, len(classes))``, each less the
        ``offset`` of its class (``offset``: one value per entry of
        ``targets`` then ``classes``). One lookup, which reads (and
        differentiates) only those classes' rows; the noise classes' offsets
        are added inside their matrix product."""
        looked_up = torch.cat([targets, classes])
        weight = F.embedding(looked_up, self.output_weight,
                             sparse=_sparse_lookup(looked_up, self.output_weight))
        n_rows = len(targets)
        return ((features * weight[:n_rows]).sum(1) - offset[:n_rows],
                torch.addmm(-offset[n_rows:], features, weight[n_rows:].T))


#: Rows with a non-zero entry in at least one cell of DENSE_SHARE are dense enough.
DENSE_SHARE = 8


def dense_enough(X):
    """Whether the rows of X (numpy or scipy sparse) are a table's rather
    than a text's: a non-zero entry in at least one cell of
    :data:`DENSE_SHARE`. Such rows are multiplied as a dense matrix, several
    times faster than ``embedding_bag``'s scatter of their entries and its
    backward (measured in benchmarks/RESULTS.md)."""
    n_entries = X.nnz if sp.issparse(X) else np.count_nonzero(X)
    return n_entries * DENSE_SHARE >= X.shape[0] * X.shape[1]


def _sparse_lookup(indices, table):
    """Whether a lookup of ``indices`` in ``table`` should give a sparse
    gradient: only when it names fewer entries than the table has rows. A
    sparse gradient holds one row per entry, repeats included, and the
    optimizer sorts and sums them; a table smaller than that (a dense table
    of a few dozen pixels, each looked up in every row of the step) is
    cheaper to update whole. The optimizer takes either kind at any step."""
    return len(indices) < len(table)


# -- the training losses, each row's loss in a minibatch, from the rows' last
# hidden layer (``features``) and their class codes.
def full_loss(module, features, targets, generator, n_noise, remove_hits):
    return F.cross_entropy(module.scores(features), targets, reduction="none")


def in_batch_loss(module, features, targets, generator, n_noise, remove_hits):
    logits = (module.class_scores(features, targets)
              - module.log_frequency[targets] - math.log(len(targets)))
    if remove_hits:
        hits = (targets[None, :] == targets[:, None]) & ~torch.eye(
            len(targets), dtype=torch.bool, device=targets.device)
        logits = logits.masked_fill(hits, -math.inf)
    return F.cross_entropy(logits, torch.arange(len(targets), device=targets.device),
                           reduction="none")


def _draw_noise(module, features, targets, generator, n_noise):
    """``n_noise`` noise classes, and ``log(n_noise q)`` (their expected
    count) of each target then each noise class."""
    noise = module.noise.sample(n_noise, generator)
    offset = math.log(n_noise) + module.noise.log_prob(
        torch.cat([targets, noise])).to(features.dtype)
    return noise, offset


def sampled_loss(module, features, targets, generator, n_noise, remove_hits):
    noise, offset = _draw_noise(module, features, targets, generator, n_noise)
    target_logits, noise_logits = module.sampled_logits(features, targets, noise, offset)
    if remove_hits:
        noise_logits = noise_logits.masked_fill(noise[None, :] == targets[:, None],
                                                -math.inf)
    logits = torch.cat([target_logits[:, None], noise_logits], 1)
    return torch.logsumexp(logits, 1) - target_logits


def nce_loss(module, features, targets, generator, n_noise, remove_hits):
    """Each row's class against each noise class: logistic regressions on
    Delta = s - log(n_noise q) - norm_term."""
    noise, offset = _draw_noise(module, features, targets, generator, n_noise)
    target_delta, noise_delta = module.sampled_logits(
        features, targets, noise, offset + module.norm_term)
    noise_term = F.softplus(noise_delta).sum(1)
    if remove_hits:
        # A row's own class drawn as noise has the row's target Delta:
        # take its terms back out (cheaper than masking the whole matrix).
        hits = torch.bincount(noise, minlength=len(module.output_weight))[targets]
        noise_term = noise_term - hits * F.softplus(target_delta)
    return F.softplus(-target_delta) + noise_term


LOSSES = {"full": full_loss, "in_batch": in_batch_loss, "sampled": sampled_loss, "nce": nce_loss}
