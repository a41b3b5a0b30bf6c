import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn import config_context
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.estimator_checks import parametrize_with_checks

from skebm import ConvergenceDivergedError, NCESoftmaxClassifier
from skebm.datasets import load_kjv_next_word

QUICK = dict(max_iter=30, random_state=0)


# As scikit-learn's SGDClassifier: a stochastic minibatch fit. A row weighing
# 2 is one row of a minibatch, its repeats fall into other minibatches, and
# rows weighing 0 still shift which rows share a batch and the random stream.
_REPEAT_REASON = "sample_weight is not equivalent to removing/repeating samples."


@parametrize_with_checks([NCESoftmaxClassifier(**QUICK),
                          NCESoftmaxClassifier(loss="nce", n_noise=2, **QUICK)],
                         expected_failed_checks=lambda estimator: {
                             "check_sample_weight_equivalence_on_dense_data": _REPEAT_REASON,
                             "check_sample_weight_equivalence_on_sparse_data": _REPEAT_REASON})
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:1400] / 16, y[:1400], X[1400:] / 16, y[1400:]


def _make_classes(n_classes, n_rows, n_features, random_state):
    """A sparse problem with classes of Zipf-like frequencies (exponent 0.5):
    each class has a few features of its own, each row shows two of them and
    one at random."""
    rng = np.random.default_rng(random_state)
    frequencies = 1.0 / np.sqrt(np.arange(1, n_classes + 1))
    y = rng.choice(n_classes, n_rows, p=frequencies / frequencies.sum())
    own = rng.integers(n_features, size=(n_classes, 4))
    columns = np.concatenate([own[y[:, None], rng.integers(4, size=(n_rows, 2))],
                              rng.integers(n_features, size=(n_rows, 1))], 1)
    X = sp.csr_matrix((np.ones(columns.size), columns.ravel(), np.arange(0, columns.size + 1, 3)),
                      shape=(n_rows, n_features))
    return X, y


@pytest.mark.parametrize("loss", ["nce", "sampled", "in_batch"])
def test_sampled_losses_reach_the_full_softmax_accuracy(loss):
    X, y = _make_classes(400, 12_000, 2_000, random_state=0)
    settings = dict(max_iter=10, early_stopping=False, n_noise=64, batch_size=256,
                    learning_rate=0.01, random_state=0)
    full = NCESoftmaxClassifier(loss="full", **settings).fit(X[:10_000], y[:10_000])
    sampled = NCESoftmaxClassifier(loss=loss, **settings).fit(X[:10_000], y[:10_000])
    full_accuracy = full.score(X[10_000:], y[10_000:])
    assert full_accuracy > 0.5  # a problem with something to learn
    assert sampled.score(X[10_000:], y[10_000:]) >= full_accuracy - 0.01


def test_auto_loss_and_string_labels(digits):
    X, y, X_test, y_test = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    clf = NCESoftmaxClassifier(random_state=0).fit(X, names[y])
    assert clf.loss_ == "full"  # 10 classes, n_noise=256: sampling would save nothing
    np.testing.assert_array_equal(clf.classes_, np.sort(names))
    assert clf.score(X_test, names[y_test]) > 0.85
    assert set(clf.predict(X_test)) <= set(names)
    assert NCESoftmaxClassifier(n_noise=4).set_params(random_state=0).fit(X, y).loss_ == "nce"


def test_probabilities_are_the_normalized_softmax(digits):
    X, y, X_test, _ = digits
    clf = NCESoftmaxClassifier(loss="nce", n_noise=4, max_iter=5, random_state=0).fit(X, y)
    proba = clf.predict_proba(X_test)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.log(proba), clf.predict_log_proba(X_test), rtol=1e-10)
    scores = clf.decision_function(X_test)
    np.testing.assert_allclose(proba, np.exp(scores - scores.max(1, keepdims=True))
                               / np.exp(scores - scores.max(1, keepdims=True)).sum(1, keepdims=True),
                               rtol=1e-10)
    np.testing.assert_array_equal(clf.predict(X_test), clf.classes_[proba.argmax(1)])
    # Two classes: the decision function is the second score minus the first.
    binary = NCESoftmaxClassifier(max_iter=5, random_state=0).fit(X, y % 2)
    logit = np.log(binary.predict_proba(X_test)[:, 1] / binary.predict_proba(X_test)[:, 0])
    np.testing.assert_allclose(binary.decision_function(X_test), logit, rtol=1e-8, atol=1e-10)


def test_predict_proba_memory_is_bounded_by_working_memory():
    """Chunks of rows whose scores fit in working_memory, and at most
    _SCORES_AT_ONCE scores (the cache's worth: 963 rows of 3,113 classes)."""
    from skebm.classifier import _SCORES_AT_ONCE

    X, y = _make_classes(5_000, 6_000, 500, random_state=0)
    clf = NCESoftmaxClassifier(loss="nce", embedding_dim=8, max_iter=1, early_stopping=False,
                               random_state=0).fit(X, y)
    chunks = []
    inner = clf._inference_rows

    def counted(X, rows, mean, scale, device):
        chunks.append(rows.stop - rows.start)
        return inner(X, rows, mean, scale, device)

    clf._inference_rows = counted
    whole = clf.predict_proba(X[:1200])[:500]
    cap = _SCORES_AT_ONCE // len(clf.classes_)
    assert len(clf.classes_) > 1000 and chunks == [cap, 1200 - cap]
    chunks.clear()
    with config_context(working_memory=1):  # 1 MiB, a few rows of float64 scores
        chunked = clf.predict_proba(X[:500])
    assert max(chunks) <= 2**20 // (3 * 8 * len(clf.classes_))
    assert len(chunks) > 10
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)


def test_sparse_and_dense_input_give_the_same_model(digits):
    X, y, X_test, _ = digits
    settings = dict(loss="nce", n_noise=8, max_iter=3, early_stopping=False, random_state=0)
    dense = NCESoftmaxClassifier(**settings).fit(X, y)
    sparse = NCESoftmaxClassifier(**settings).fit(sp.csr_matrix(X), y)
    assert dense.n_iter_ == 3
    for name, value in dense.module_.state_dict().items():
        torch.testing.assert_close(sparse.module_.state_dict()[name], value)
    np.testing.assert_allclose(sparse.predict_proba(sp.csr_matrix(X_test)),
                               dense.predict_proba(X_test), rtol=1e-12)


def test_a_tables_rows_are_a_dense_matrix_and_a_texts_are_bags(digits):
    """Rows with a non-zero entry in one cell of 8 or more (digits) are kept
    and multiplied as a dense matrix, sparser ones (a bag of a few words
    among 100) as embedding bags: the same features, up to rounding, and
    the same gradient."""
    from skebm._softmax_model import bags_from_rows, dense_enough

    X = digits[0]
    words, _ = _make_classes(20, 200, 100, random_state=0)
    assert dense_enough(X) and dense_enough(sp.csr_matrix(X)) and not dense_enough(words)
    clf = NCESoftmaxClassifier(max_iter=1, random_state=0).fit(X, digits[1])
    assert isinstance(clf._training_rows(X, 0.0, 1.0, torch.device("cpu")), torch.Tensor)
    assert not isinstance(clf._training_rows(words, 0.0, 1.0, torch.device("cpu")),
                          torch.Tensor)
    module = clf.module_.double()
    for rows in (X[:300], words[:300].toarray()):
        module.input_weight = torch.nn.Parameter(
            torch.randn(rows.shape[1], clf.embedding_dim, dtype=torch.float64))
        results = []
        for inputs in (torch.as_tensor(rows, dtype=torch.float64),
                       bags_from_rows(rows, torch.device("cpu"), torch.float64)):
            module.zero_grad(set_to_none=True)
            features = module.features(inputs)
            features.square().sum().backward()
            results.append((features.detach(), module.input_weight.grad.to_dense()))
        (dense, dense_gradient), (bags, bags_gradient) = results
        torch.testing.assert_close(bags, dense)
        torch.testing.assert_close(bags_gradient, dense_gradient)


@pytest.mark.parametrize("binary", [False, True])
def test_the_callers_sparse_matrix_is_left_as_it_was(digits, binary):
    """A CSR matrix with explicit zeros and repeated, unsorted columns (as
    built by hand) is read as its canonical form, and left as it was; also
    0/1 values, which are not rescaled but made float32, a copy of the values
    that shares the column indices with the caller's matrix."""
    X, y, X_test, _ = digits
    X = sp.csr_matrix(X > 0.5 if binary else X, dtype=np.float64)
    X_test = X_test > 0.5 if binary else X_test
    explicit = sp.csr_matrix((np.r_[X.data, 0.0, 0.0], np.r_[X.indices, 5, 5],
                              np.r_[X.indptr[:-1], X.nnz + 2]), shape=X.shape)
    explicit.indices[:3] = explicit.indices[:3][::-1]  # unsorted
    given = explicit.indptr.copy(), explicit.indices.copy(), explicit.data.copy()
    settings = dict(max_iter=2, early_stopping=False, random_state=0)
    clf = NCESoftmaxClassifier(**settings).fit(explicit, y)
    clf.predict_proba(explicit)
    for array, before in zip((explicit.indptr, explicit.indices, explicit.data), given):
        np.testing.assert_array_equal(array, before)
    canonical = explicit.copy()
    canonical.sum_duplicates()
    canonical.eliminate_zeros()
    np.testing.assert_allclose(NCESoftmaxClassifier(**settings).fit(canonical, y).predict_proba(
        X_test), clf.predict_proba(X_test), rtol=1e-6)


def test_a_fitted_model_sizes_its_inference_by_its_fitted_layers(digits):
    """set_params after fit changes nothing until the next fit: predict does
    not read embedding_dim or hidden_layer_sizes as they are now."""
    X, y, X_test, _ = digits
    clf = NCESoftmaxClassifier(max_iter=2, random_state=0).fit(X, y)
    expected = clf.predict_proba(X_test)
    clf.set_params(hidden_layer_sizes=(0,), embedding_dim=10**9)
    np.testing.assert_array_equal(clf.predict_proba(X_test), expected)


def test_a_batch_larger_than_the_data_is_sized_as_the_data(digits):
    """Training steps take at most every row; the memory estimate too."""
    X, y, _, _ = digits
    assert NCESoftmaxClassifier(batch_size=10**8, max_iter=2).fit(X, y).n_iter_ == 2


def test_a_model_too_big_for_memory_is_refused_before_allocation(monkeypatch):
    """Refused before the per-feature scales (arrays of n_features) are made."""
    columns = np.random.default_rng(0).integers(2**24, size=(20, 5))
    X = sp.csr_matrix((np.ones(100), columns.ravel(), np.arange(0, 101, 5)), shape=(20, 2**24))
    y = np.arange(20) % 2

    def too_late(self, X):
        raise AssertionError("the scales were computed before the memory check")

    monkeypatch.setattr(NCESoftmaxClassifier, "_input_standardization", too_late)
    clf = NCESoftmaxClassifier(embedding_dim=2**16)  # 2**40 weights: 16 TiB to train
    with pytest.raises(ValueError, match="embedding_dim=65536.*Lower embedding_dim"):
        clf.fit(X, y)
    assert not hasattr(clf, "module_")


def test_the_memory_estimate_counts_early_stoppings_copies(monkeypatch, digits):
    """Early stopping keeps the best epoch's parameters and the plateau
    rule's: 24 bytes a parameter, not 16. With free memory between the two
    estimates, a fit with early stopping is refused and one without is not;
    partial_fit, which holds no rows out, is not either."""
    import skebm.classifier

    X, y, _, _ = digits
    X = sp.hstack([X, sp.csr_matrix((len(X), 2**16))]).tocsr()  # hashed features, say
    settings = dict(embedding_dim=64, hidden_layer_sizes=(), max_iter=1, random_state=0)
    n_parameters = X.shape[1] * 64 + 64 + 10 * (64 + 1)
    free = 20 * n_parameters / 0.8  # 20 bytes a parameter (a step's rows: under 1%)
    monkeypatch.setattr(skebm.classifier, "available_memory", lambda device: free)
    with pytest.raises(ValueError, match="would need about"):
        NCESoftmaxClassifier(**settings).fit(X, y)
    assert NCESoftmaxClassifier(**settings, early_stopping=False).fit(X, y).n_iter_ == 1
    NCESoftmaxClassifier(**settings).partial_fit(X, y, classes=np.arange(10))


def test_the_best_epoch_is_kept_in_one_copy():
    """A new best epoch is written over the copy held, not beside it."""
    from skebm._monitors import kept_state

    module = torch.nn.Linear(3, 2)
    held = kept_state(module)
    first = held["weight"]
    with torch.no_grad():
        module.weight.add_(1.0)
    assert kept_state(module, held)["weight"] is first
    torch.testing.assert_close(first, module.weight.detach())
    assert first.data_ptr() != module.weight.data_ptr()


def test_the_finiteness_check_sees_every_nan_and_infinity_and_no_overflow():
    """The divergence guard's check by a sum: a NaN or an infinity anywhere
    is seen, opposite infinities too, and finite values whose sum
    overflows are not taken for divergence."""
    from skebm._monitors import _finite

    values = torch.zeros(1000)
    assert _finite(values)
    for bad in ([float("nan")], [float("inf")], [float("inf"), -float("inf")]):
        spoiled = values.clone()
        spoiled[: len(bad)] = torch.tensor(bad)
        assert not _finite(spoiled)
    assert _finite(torch.full((10,), 3e38))


def test_a_stream_of_many_labels_is_not_taken_for_a_regression():
    """scikit-learn warns when a y has more distinct labels than half its
    rows (a regression target, maybe); a chunk of a stream whose classes
    were declared is no such sign, while fit still hears the warning."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), np.arange(60)
    with pytest.warns(UserWarning, match="unique classes is greater than 50%"):
        NCESoftmaxClassifier(max_iter=1, early_stopping=False).fit(X, y)
    stream = NCESoftmaxClassifier()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        stream.partial_fit(X[:30], y[:30], classes=np.arange(60))
        stream.partial_fit(X[30:], y[30:])
    assert stream.n_iter_ == 2


def test_max_iter_reached_while_improving_warns_and_a_stopped_fit_does_not():
    """As scikit-learn's MLP: epochs that run out while the validation score
    still improves give a ConvergenceWarning; a fit that early stopping
    ended (labels that are noise stop improving at once) gives none."""
    from sklearn.exceptions import ConvergenceWarning

    X, y = load_wine(return_X_y=True)
    with pytest.warns(ConvergenceWarning, match="max_iter ran out before early stopping"):
        NCESoftmaxClassifier(max_iter=3, random_state=0).fit(X, y)
    noise = np.random.default_rng(0).integers(0, 3, len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        stopped = NCESoftmaxClassifier(max_iter=1000, random_state=0).fit(X, noise)
    assert stopped.n_iter_ < 1000


def test_a_small_table_gets_the_steps_it_needs_by_default():
    """max_iter="auto": an epoch of iris is one step, and 100 of them ended
    while the held-out log-loss still improved (a ConvergenceWarning in each
    fold). The default allows 1,000 steps; early stopping ends the fit well
    before them. A table whose epochs hold 10 steps or more keeps 100 epochs."""
    from sklearn.exceptions import ConvergenceWarning

    X, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = NCESoftmaxClassifier(random_state=0).fit(X, y)
    assert 100 < clf.n_iter_ < 1000
    assert NCESoftmaxClassifier(early_stopping=False, random_state=0).fit(
        X[::4], y[::4]).n_iter_ == 1000
    assert NCESoftmaxClassifier()._n_epochs(10) == 100
    assert NCESoftmaxClassifier()._n_epochs(3) == 334
    assert NCESoftmaxClassifier(max_iter=7)._n_epochs(3) == 7


def test_sample_weight_moves_the_optimum_to_the_weighted_conditional():
    """Where a class is as frequent as the other but each of its rows weighs
    3, the fitted probability is 3/4, the weighted data's conditional; the
    same weights on every row change nothing (Adam's steps do not scale)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 2))
    y = rng.integers(0, 2, 4000)
    weights = np.where(y == 1, 3.0, 1.0)
    settings = dict(max_iter=20, early_stopping=False, random_state=0)
    plain = NCESoftmaxClassifier(**settings).fit(X, y)
    weighted = NCESoftmaxClassifier(**settings).fit(X, y, sample_weight=weights)
    X_test = rng.normal(size=(500, 2))
    assert plain.predict_proba(X_test)[:, 1].mean() == pytest.approx(0.5, abs=0.05)
    assert weighted.predict_proba(X_test)[:, 1].mean() == pytest.approx(0.75, abs=0.05)
    streams = [NCESoftmaxClassifier(random_state=0), NCESoftmaxClassifier(random_state=0)]
    for _ in range(5):
        for rows in np.array_split(np.arange(4000), 4):
            streams[0].partial_fit(X[rows], y[rows], classes=[0, 1])
            streams[1].partial_fit(X[rows], y[rows], classes=[0, 1],
                                   sample_weight=weights[rows])
    plain_stream, weighted_stream = (clf.predict_proba(X_test)[:, 1].mean() for clf in streams)
    assert weighted_stream > plain_stream + 0.1


def test_balanced_weights_of_a_rare_class_are_not_divergence():
    """With weighted rows the loss-growth check starts from the first
    epoch's loss: a first minibatch without the rare class weighs half as
    much as its rows' count, and the epoch, whose rare rows weigh a hundred
    times more, had hundreds of times that batch's loss (the fit was
    stopped as diverged)."""
    rng = np.random.RandomState(0)
    X = rng.rand(5000, 5)
    y = (X[:, 0] > 0.995).astype(int)  # 24 rows of class 1
    weights = compute_sample_weight("balanced", y)
    clf = NCESoftmaxClassifier(embedding_dim=8, batch_size=64, max_iter=5,
                               random_state=0).fit(X, y, sample_weight=weights)
    proba = clf.predict_proba(X)[:, 1]
    assert proba[y == 1].mean() > 0.5 > proba[y == 0].mean()


def test_early_stopping_scores_held_out_rows_by_their_weight():
    """The held-out log-loss weighs each row: a row of weight 0 does not
    count, and the score is the weighted mean of the rows' own scores."""
    from skebm._rows import LabelledRows

    X, y = load_wine(return_X_y=True)
    clf = NCESoftmaxClassifier(max_iter=2, random_state=0).fit(X, y)
    device = clf.device_
    targets = torch.as_tensor(np.searchsorted(clf.classes_, y[::45]), device=device)  # 4 rows
    held_out = lambda rows, weights=None: LabelledRows(
        clf._training_rows(X[::45][rows], clf.mean_, clf.scale_, device), targets[rows], {},
        weights)
    scores = [clf._validation_score(clf.module_, held_out([i])) for i in range(4)]
    weighted = clf._validation_score(clf.module_, held_out(
        list(range(4)), torch.tensor([2.0, 0.0, 1.0, 1.0], device=device)))
    assert weighted == pytest.approx((2 * scores[0] + scores[2] + scores[3]) / 4, rel=1e-5)


def test_rows_of_weight_zero_are_never_held_out():
    """Weights used as a mask (most rows 0): the held-out rows are drawn
    among the weighted ones, so early stopping scores something and the
    model trains; weights of 1 split the rows as no weights do."""
    X, y = load_iris(return_X_y=True)
    weights = np.where(np.arange(len(y)) % 10 == 0, 1.0, 0.0)
    # 15 weighted rows, 2 held out, which may score worse for many steps
    # before they improve: at 15 steps of patience, seeds 1 and 4 stopped at
    # the class prior (accuracy 1/3).
    for seed in range(6):
        clf = NCESoftmaxClassifier(random_state=seed).fit(X, y, sample_weight=weights)
        assert all(record["validation_score"] < 0 for record in clf.history_)
        assert clf.score(X[weights > 0], y[weights > 0]) > 0.8
    ones = NCESoftmaxClassifier(max_iter=3, random_state=0).fit(X, y, sample_weight=np.ones(150))
    plain = NCESoftmaxClassifier(max_iter=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(ones.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("weights, message", [
    (-np.ones(20), "Negative values in data passed to .sample_weight"),
    (np.zeros(20), "at least one non-zero"),
    (np.ones(19), "sample_weight.shape"),
])
def test_bad_sample_weight_is_refused_and_the_fit_kept(weights, message):
    X, y = load_wine(return_X_y=True)
    clf = NCESoftmaxClassifier(max_iter=1, random_state=0).fit(X[::9], y[::9])
    before = clf.n_features_in_, clf.n_iter_
    with pytest.raises(ValueError, match=message):
        clf.fit(X[::9, :5], y[::9], sample_weight=weights)
    assert (clf.n_features_in_, clf.n_iter_) == before


def test_partial_fit_refuses_too_many_classes_before_reading_them():
    """The model's size comes from len(classes): a billion classes are
    refused before any copy of them is made (np.unique would sort them)."""

    class Billion:
        def __len__(self):
            return 10**9

        def __array__(self, *args, **kwargs):
            raise AssertionError("classes were read before the memory check")

    clf = NCESoftmaxClassifier()
    with pytest.raises(ValueError, match="1,000,000,000 classes"):
        clf.partial_fit(np.zeros((4, 3)), [0, 1, 0, 1], classes=Billion())
    assert not hasattr(clf, "module_")


def test_labels_and_partial_fit(digits):
    X, y, X_test, y_test = digits
    with pytest.raises(ValueError, match="at least 2 classes; the data has only"):
        NCESoftmaxClassifier().fit(X[:10], np.zeros(10))
    with pytest.raises(ValueError, match="at least 2 classes; classes has only"):
        NCESoftmaxClassifier().partial_fit(X[:10], np.zeros(10), classes=[0])
    stream = NCESoftmaxClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        stream.partial_fit(X[:100], y[:100])
    # The first chunk lacks classes 5-9; they were declared.
    stream.partial_fit(X[y < 5], y[y < 5], classes=np.arange(10))
    assert list(stream.class_count_[5:]) == [0] * 5
    for _ in range(30):
        stream.partial_fit(X, y)
    np.testing.assert_array_equal(stream.class_count_, np.bincount(y) * 30 + np.bincount(
        y[y < 5], minlength=10))
    assert stream.n_iter_ == 31
    assert stream.score(X_test, y_test) > 0.8
    with pytest.raises(ValueError, match=r"labels not in classes \[11\]"):
        stream.partial_fit(X[:3], [1, 2, 11])
    # partial_fit holds nothing out, early_stopping or not.
    assert "validation_score" not in NCESoftmaxClassifier().partial_fit(
        X, y, classes=np.arange(10)).history_[0]
    with pytest.raises(ValueError, match="labels not in classes"):
        NCESoftmaxClassifier().partial_fit(X, y, classes=np.arange(5))


@pytest.mark.parametrize("loss", ["nce", "sampled", "in_batch"])
def test_sampled_losses_learn_the_true_conditional(loss):
    """Four one-hot contexts, each with its own distribution over 300
    classes, 0.6 on one of them: a sampled loss's optimum is the true
    conditional, so the fitted top probability is near 0.6 (with accidental
    hits removed it was 0.78-0.975: overconfident)."""
    rng = np.random.RandomState(0)
    P = rng.dirichlet(np.full(300, 0.5), size=4) * 0.4
    P[np.arange(4), rng.choice(300, 4, replace=False)] += 0.6
    contexts = rng.randint(4, size=30000)
    y = np.array([rng.choice(300, p=P[c]) for c in contexts])
    # 590 steps of 512 rows: NCE nears its optimum more slowly than the others
    clf = NCESoftmaxClassifier(loss=loss, n_noise=64, embedding_dim=16, max_iter=10,
                               batch_size=512, early_stopping=False,
                               random_state=0).fit(np.eye(4)[contexts], y)
    top = clf.predict_proba(np.eye(4)).max(1)
    np.testing.assert_allclose(top, P.max(1), atol=0.08)


def test_nce_gradient_matches_its_derivation():
    """d/ds of NCE's loss is sigmoid(Delta) - 1 for the target and sigmoid(Delta)
    for each noise class, with Delta = s - log(k q) - norm_term (Mnih & Teh 2012)."""
    X, y = _make_classes(12, 64, 40, random_state=0)
    clf = NCESoftmaxClassifier(loss="nce", n_noise=16, remove_accidental_hits=False,
                               max_iter=1, early_stopping=False, random_state=0,
                               device="cpu").fit(X, y)
    module = clf.module_.double()
    module.zero_grad(set_to_none=True)  # the last training step's are still there
    batch = clf._training_rows(X, 0.0, 1.0, torch.device("cpu"))[torch.arange(64)]
    targets = torch.as_tensor(np.searchsorted(clf.classes_, y))
    generator = torch.Generator().manual_seed(3)
    loss = clf._training_loss(module, (batch, targets, None), generator).loss
    loss.backward()
    noise = module.noise.sample(16, torch.Generator().manual_seed(3))
    with torch.no_grad():
        features = module.features(batch)
        scores = module.scores(features)
        log_kq = np.log(16) + module.noise.log_probabilities
        delta = scores - log_kq - module.norm_term
        # The loss as a function of the scores: d loss / d scores, by hand.
        d_scores = torch.zeros_like(scores)
        rows = torch.arange(64)
        d_scores[rows, targets] += torch.sigmoid(delta[rows, targets]) - 1
        for n in noise:
            d_scores[:, n] += torch.sigmoid(delta[:, n])
        d_scores /= 64
    # scores = features @ W.T (the last column of features is 1: W's last is the bias).
    torch.testing.assert_close(module.output_weight.grad.to_dense(), d_scores.T @ features)


@pytest.mark.parametrize("loss", ["nce", "sampled", "in_batch"])
def test_a_step_gives_sparse_gradients_only_where_it_touches_few_rows_of_a_table(loss):
    """A lookup naming fewer entries than its table has rows gives a sparse
    gradient, a larger one a dense gradient, and both are the same numbers:
    a batch repeated until it names more entries than the tables hold has
    the dense gradient of the repeats' sum."""
    X, y = _make_classes(60, 200, 100, random_state=0)
    clf = NCESoftmaxClassifier(loss=loss, n_noise=8, max_iter=1, early_stopping=False,
                               random_state=0, device="cpu").fit(X, y)
    module = clf.module_.double()
    rows = clf._training_rows(X, 0.0, 1.0, torch.device("cpu"))
    targets = torch.as_tensor(np.searchsorted(clf.classes_, y))

    def gradients(index):
        module.zero_grad(set_to_none=True)
        batch = (rows[index], targets[index], None)
        clf._training_loss(module, batch, torch.Generator().manual_seed(3)).loss.backward()
        return module.input_weight.grad, module.output_weight.grad

    few = gradients(torch.arange(4))  # 12 entries of 100 features, 4 + 8 of 60 classes
    many = gradients(torch.arange(4).repeat(40))  # 480 entries, 160 + 8 lookups
    assert [grad.is_sparse for grad in few] == [True, True]
    assert [grad.is_sparse for grad in many] == [False, False]
    for sparse, dense in zip(few, many):  # the loss is a mean: the repeats' is the same
        torch.testing.assert_close(dense, sparse.to_dense())


def test_fit_is_reproducible_pickles_and_fails_cleanly(digits):
    X, y, X_test, _ = digits
    settings = dict(loss="sampled", n_noise=4, max_iter=3, random_state=0)
    first = NCESoftmaxClassifier(**settings).fit(X, y)
    second = NCESoftmaxClassifier(**settings).fit(X, y)
    np.testing.assert_array_equal(first.predict_proba(X_test), second.predict_proba(X_test))
    restored = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(restored.predict_proba(X_test), first.predict_proba(X_test))
    assert restored.module_.input_weight.device.type == first.device_.type
    assert [h["epoch"] for h in first.history_] == [1, 2, 3]
    assert all("validation_score" in h for h in first.history_)
    # A learning rate that blows up: a clear error, and the fitted model untouched.
    before = first.predict_proba(X_test)
    with pytest.raises(ConvergenceDivergedError, match="learning_rate"):
        first.set_params(learning_rate=1e12, warm_start=True).fit(X * 1e6, y)
    np.testing.assert_array_equal(first.predict_proba(X_test), before)
    assert not hasattr(clone(first), "classes_")


def test_early_stopping_stops_after_patience_on_the_validation_log_loss(digits, monkeypatch):
    X, y, _, _ = digits
    # Patience in plain epochs here; its floor in steps has a test of its own.
    monkeypatch.setattr(NCESoftmaxClassifier, "_min_patience_steps", 0)
    clf = NCESoftmaxClassifier(max_iter=200, n_iter_no_change=3, tol=0.0, learning_rate=0.05,
                               random_state=0).fit(X, y)
    scores = [h["validation_score"] for h in clf.history_]
    assert clf.n_iter_ < 200 and all(score < 0 for score in scores)  # minus a log-loss
    # With tol=0, patience counts from the best epoch (history_[i] is epoch i + 1);
    # the plateau after the last decay of the rate may stop it sooner.
    best = int(np.argmax(scores)) + 1
    assert best < clf.n_iter_ <= best + 3
    # The rate halves every HALVING_STEPS steps (an epoch has fewer here),
    # and is divided by PLATEAU_FACTOR on each stall.
    rates = [h["learning_rate"] for h in clf.history_]
    steps = int(np.ceil((len(X) - int(np.ceil(0.1 * len(X)))) / clf.batch_size))
    per_epoch = 0.5 ** (steps / clf.HALVING_STEPS)
    assert rates[0] == 0.05
    n_stalls = 0
    for epoch in range(1, clf.n_iter_):
        stalled = scores[epoch - 1] <= max(scores[:epoch - 1], default=-np.inf)
        n_stalls += stalled
        assert rates[epoch] == pytest.approx(
            rates[epoch - 1] * per_epoch / (clf.PLATEAU_FACTOR if stalled else 1.0))
    assert n_stalls <= clf.PLATEAU_DECAYS


@pytest.mark.parametrize("loss", ["nce", "full"])
def test_a_new_model_predicts_the_class_prior(loss):
    """The output biases start at the log of the smoothed class frequencies
    and the output weights at 0: before training, every row gets the prior."""
    X, y = _make_classes(30, 600, 50, random_state=0)
    clf = NCESoftmaxClassifier(loss=loss, n_noise=8, max_iter=1, learning_rate=1e-12,
                               early_stopping=False, random_state=0).fit(X, y)
    smoothed = (np.bincount(y, minlength=30) + 1.0) / (len(y) + 30)
    np.testing.assert_allclose(clf.predict_proba(X[:5]), np.tile(smoothed, (5, 1)), rtol=1e-5)
    assert float(clf.module_.norm_term) == 0.0  # "auto": that start is normalized
    for norm_term, start in [("learned", 0.0), (2.5, 2.5)]:
        module = clone(clf).set_params(norm_term=norm_term).fit(X, y).module_
        assert float(module.norm_term.detach()) == pytest.approx(start, abs=1e-6)
    assert isinstance(module.norm_term, torch.Tensor) and not module.norm_term.requires_grad


def test_a_stream_may_start_with_one_row():
    """As SGDClassifier.partial_fit: a stream fed a row at a time (the first
    call refused one row)."""
    X, y = load_iris(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    stream = NCESoftmaxClassifier(random_state=0)
    for row in order[:30]:
        stream.partial_fit(X[[row]], y[[row]], classes=[0, 1, 2])
    np.testing.assert_array_equal(stream.class_count_, np.bincount(y[order[:30]], minlength=3))
    proba = stream.predict_proba(X)
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1)
    with pytest.raises(ValueError, match="minimum of 2 is required"):
        NCESoftmaxClassifier().fit(X[:1], y[:1])


def test_warm_start_and_partial_fit_keep_their_learned_biases():
    X, y = _make_classes(30, 600, 50, random_state=0)
    clf = NCESoftmaxClassifier(n_noise=8, max_iter=5, random_state=0).fit(X, y)
    learned = clf.module_.output_weight[:, -1].detach().clone()
    assert not torch.allclose(learned, clf.module_.log_frequency, atol=1e-3)
    for refit in (lambda: clf.set_params(warm_start=True, learning_rate=1e-12, max_iter=1).fit(X, y),
                  lambda: clf.partial_fit(X, y)):
        torch.testing.assert_close(refit().module_.output_weight[:, -1], learned)
    # A warm-started fit keeps its classes, and says so of a new label.
    with pytest.raises(ValueError, match=r"labels not in classes \[99\].*warm_start=True keeps"):
        clf.fit(X[:3], [y[0], y[1], 99])


def test_a_warm_start_refuses_a_changed_network_and_predicts_as_fitted():
    X, y = _make_classes(30, 600, 50, random_state=0)
    clf = NCESoftmaxClassifier(n_noise=8, max_iter=2, random_state=0).fit(X, y)
    proba = clf.predict_proba(X[:20])
    clf.set_params(embedding_dim=4, hidden_layer_sizes=(8,), warm_start=True)
    np.testing.assert_array_equal(clf.predict_proba(X[:20]), proba)
    with pytest.raises(ValueError, match=r"embedding_dim=128, hidden_layer_sizes=\(\)"
                                         r".* now say embedding_dim=4"):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X[:20]), proba)


def test_every_epoch_beats_the_prior_on_the_held_out_rows():
    X, y = _make_classes(400, 12_000, 2_000, random_state=0)
    clf = NCESoftmaxClassifier(loss="nce", n_noise=64, max_iter=3, random_state=0).fit(X, y)
    prior = np.bincount(y) / len(y)
    prior_log_loss = -np.mean(np.log(prior[y]))  # the prior's, all rows (held-out ones ~ the same)
    assert all(h["validation_score"] > -prior_log_loss + 0.1 for h in clf.history_)


def test_early_stopping_holds_out_at_most_its_cap_of_rows(monkeypatch, digits):
    X, y, _, _ = digits
    held_out = []
    score = NCESoftmaxClassifier._validation_score
    monkeypatch.setattr(NCESoftmaxClassifier, "_validation_score",
                        lambda self, module, Z_val: held_out.append(len(Z_val))
                        or score(self, module, Z_val))
    fit = lambda: NCESoftmaxClassifier(  # noqa: E731
        max_iter=2, validation_fraction=0.5, random_state=0).fit(X, y)
    monkeypatch.setattr(NCESoftmaxClassifier, "_max_validation_rows", 100)
    assert fit().n_iter_ == 2 and set(held_out) == {100}
    held_out.clear()
    monkeypatch.setattr(NCESoftmaxClassifier, "_max_validation_rows", None)
    fit()
    assert set(held_out) == {len(X) // 2}


class _FakeRule:
    def __init__(self, rate):
        self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=rate)


def test_plateau_decay_lowers_the_rate_on_a_stall_and_stops_after_its_decays():
    from skebm._monitors import PlateauDecay, TrainingRun

    run = TrainingRun(None, None, None, None, n_epochs=100, rule=_FakeRule(1.0))
    monitor = PlateauDecay(tol=0.01, patience=2, factor=10.0, max_decays=2)
    lr = lambda: run.rule.optimizer.param_groups[0]["lr"]  # noqa: E731

    def epoch(score):
        record = {"validation_score": score}
        return monitor.on_epoch_end(run, record), record["learning_rate"]

    # Improving by more than tol: the rate stays.
    assert [epoch(s) for s in (-3.0, -2.0, -1.5)] == [(False, 1.0)] * 3
    # Improving by less than tol for 2 epochs (patience): divided by 10.
    assert epoch(-1.495) == (False, 1.0) and lr() == 1.0
    assert epoch(-1.6) == (False, 1.0) and lr() == pytest.approx(0.1)
    # The count starts again after a decay; an improvement resets it.
    assert epoch(-1.2) == (False, pytest.approx(0.1))
    assert epoch(-1.3) == (False, pytest.approx(0.1)) and lr() == pytest.approx(0.1)
    # The max_decays-th decay puts the rate factor ** max_decays below its start: it stops.
    assert epoch(-1.25) == (True, pytest.approx(0.1)) and lr() == pytest.approx(0.01)
    assert monitor.n_decays == 2


@pytest.mark.parametrize("epoch_steps, decays_after", [(1, 15), (4, 4), (20, 1)])
def test_a_plateau_spans_at_least_min_steps(epoch_steps, decays_after):
    """On a table of a few hundred rows an epoch is one step: a plateau (and
    early stopping's patience) then waits enough epochs for min_steps steps."""
    from skebm._monitors import PlateauDecay, TrainingRun

    run = TrainingRun(None, None, None, None, n_epochs=100, epoch_steps=epoch_steps,
                      rule=_FakeRule(1.0))
    monitor = PlateauDecay(tol=0.0, patience=1, factor=10.0, max_decays=2, min_steps=15)
    monitor.on_train_begin(run)
    monitor.on_epoch_end(run, {"validation_score": -1.0})
    rates = []
    for _ in range(20):
        monitor.on_epoch_end(run, {"validation_score": -2.0})
        rates.append(run.rule.optimizer.param_groups[0]["lr"])
    assert rates.index(pytest.approx(0.1)) == decays_after - 1


def test_plateau_decay_without_a_rate_stops_at_its_last_plateau():
    from skebm._monitors import PlateauDecay, TrainingRun

    run = TrainingRun(None, None, None, None, n_epochs=100)
    monitor = PlateauDecay(tol=0.0, patience=1, factor=10.0, max_decays=2)
    stops = [monitor.on_epoch_end(run, {"validation_score": s}) for s in (-2.0, -3.0, -1.0, -4.0)]
    assert stops == [False, False, False, True]


def test_plateau_decay_multiplies_the_rate_each_epoch_and_stops_once_it_is_low():
    from skebm._monitors import PlateauDecay, TrainingRun

    run = TrainingRun(None, None, None, None, n_epochs=100, rule=_FakeRule(1.0))
    monitor = PlateauDecay(tol=0.0, patience=1, factor=10.0, max_decays=2, epoch_factor=0.5)
    rates, stops = [], []
    for score in (-3.0, -2.0, -2.5, -1.0):
        stops.append(monitor.on_epoch_end(run, record := {"validation_score": score}))
        rates.append(record["learning_rate"])
    # Halved each epoch, and divided by 10 more on the stall (epoch 3).
    assert rates == pytest.approx([1.0, 0.5, 0.25, 0.0125])
    # After epoch 4 the rate is over factor ** max_decays below its start: though the
    # score still improves and only one decay was spent, training stops.
    assert stops == [False, False, False, True] and monitor.n_decays == 1

    halving = PlateauDecay(tol=0.0, patience=1, factor=10.0, max_decays=2, epoch_factor=0.5)
    halving_run = TrainingRun(None, None, None, None, n_epochs=100, rule=_FakeRule(1.0))
    stops = [halving.on_epoch_end(halving_run, {"validation_score": float(score)})
             for score in range(10)]
    assert stops.index(True) == 6  # 0.5 ** 7 is the first power of 2 below 1 / 100


def test_plateau_decay_restores_the_best_epoch_when_it_lowers_the_rate():
    from skebm._monitors import PlateauDecay, TrainingRun

    module = torch.nn.Linear(1, 1, bias=False)
    run = TrainingRun(None, module, None, None, n_epochs=100, rule=_FakeRule(1.0))
    monitor = PlateauDecay(tol=0.0, patience=1, factor=10.0, restore_best=True)
    for weight, score in [(1.0, -2.0), (2.0, -1.0), (3.0, -1.5)]:
        module.weight.data.fill_(weight)
        assert not monitor.on_epoch_end(run, {"validation_score": score})
    assert float(module.weight.detach()) == 2.0  # the stalled epoch 3 went back to epoch 2
    assert run.rule.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_kjv_pipeline():
    try:
        data = load_kjv_next_word()
    except OSError as exc:
        pytest.skip(str(exc))
    assert (len(data.y_train), len(np.unique(data.y_train)), len(data.y_test)) == (
        711_797, 11_862, 79_089)
    assert (data.contexts_train[0], data.y_train[0]) == ("-3:genesis -2:in -1:the", "beginning")
    model = make_pipeline(
        HashingVectorizer(n_features=2**16, token_pattern=r"\S+", alternate_sign=False,
                          norm=None),
        NCESoftmaxClassifier(loss="nce", max_iter=1, early_stopping=False, random_state=0))
    model.fit(data.contexts_train[:100_000], data.y_train[:100_000])
    head = model.predict(data.contexts_test[:2000])
    # Better than always saying the commonest word.
    commonest = np.mean(data.y_test[:2000] == "the")
    assert np.mean(head == data.y_test[:2000]) > commonest + 0.02


def test_nce_without_accidental_hits_is_the_masked_loss():
    """Removing accidental hits by taking the hit terms back out of each row's
    sum gives the loss (and gradient) of masking them in the full matrix."""
    X, y = _make_classes(6, 64, 40, random_state=0)  # 6 classes: many hits
    clf = NCESoftmaxClassifier(loss="nce", n_noise=16, max_iter=1, early_stopping=False,
                               remove_accidental_hits=True, random_state=0,
                               device="cpu").fit(X, y)
    module = clf.module_.double()
    batch = clf._training_rows(X, 0.0, 1.0, torch.device("cpu"))[torch.arange(64)]
    targets = torch.as_tensor(np.searchsorted(clf.classes_, y))
    loss = clf._training_loss(module, (batch, targets, None), torch.Generator().manual_seed(3)).loss
    gradient, = torch.autograd.grad(loss, module.output_weight)
    noise = module.noise.sample(16, torch.Generator().manual_seed(3))
    scores = module.scores(module.features(batch))
    delta = scores - np.log(16) - module.noise.log_probabilities - module.norm_term
    hits = noise[None, :] == targets[:, None]
    assert hits.any(1).float().mean() > 0.5
    rows = torch.arange(64)
    masked = (F.softplus(-delta[rows, targets])
              + F.softplus(delta[:, noise]).masked_fill(hits, 0).sum(1)).mean()
    masked_gradient, = torch.autograd.grad(masked, module.output_weight)
    torch.testing.assert_close(loss, masked)
    torch.testing.assert_close(gradient.to_dense(), masked_gradient)


def test_partial_fit_carries_lazy_adam_across_calls():
    """Each call continues the optimizer: its step count is every step taken
    so far, and the rate stays at learning_rate (no schedule restarts)."""
    X, y = _make_classes(6, 300, 40, random_state=0)
    clf = NCESoftmaxClassifier(n_noise=4, batch_size=64, random_state=0)
    for rows in (slice(0, 100), slice(100, 200), slice(200, 300)):
        clf.partial_fit(X[rows], y[rows], classes=np.unique(y))
    state = clf._partial_optimizer_state
    assert {entry["step"] for entry in state["state"].values()} == {3 * 2}
    assert state["param_groups"][0]["lr"] == clf.learning_rate


@pytest.mark.parametrize("sizes", [(0,), (-3,), (8, 0), (2.5,), (True,)])
def test_bad_hidden_layer_sizes_are_a_clear_value_error(digits, sizes):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match="hidden_layer_sizes must be positive integers"):
        NCESoftmaxClassifier(hidden_layer_sizes=sizes).fit(X[:50], y[:50])


def test_probabilities_beyond_memory_are_refused_and_predict_still_works(monkeypatch):
    import skebm._runtime

    X, y = _make_classes(6, 300, 40, random_state=0)
    clf = NCESoftmaxClassifier(max_iter=2, random_state=0).fit(X, y)
    monkeypatch.setattr(skebm._runtime, "available_memory", lambda device: 1000)
    with pytest.raises(ValueError, match="Scores of 300 rows over 6 classes"):
        clf.predict_proba(X)
    assert clf.predict(X).shape == (300,)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_a_fit_is_the_same_whatever_the_columns_units(scale):
    """Features x 1e30 or x 1e-30 gave every row the same probabilities;
    each column is now divided by its largest magnitude, so columns in any
    units (here each its own) fit as the originals do."""
    X, y = _make_classes(6, 200, 40, random_state=0)
    units = scale * np.logspace(-3, 3, X.shape[1])
    reference = NCESoftmaxClassifier(max_iter=3, random_state=0).fit(X, y)
    rescaled = NCESoftmaxClassifier(max_iter=3, random_state=0).fit(X @ sp.diags(units), y)
    np.testing.assert_allclose(rescaled.predict_proba(X @ sp.diags(units)),
                               reference.predict_proba(X), atol=1e-4)
    np.testing.assert_allclose(rescaled.scale_, units * reference.scale_, rtol=1e-12)


def test_binary_features_are_used_as_they_are():
    """Columns of 0 and 1 have scale 1: the rows go to torch unchanged, in
    fit and in predict (which crashed on such data when first written)."""
    X, y = _make_classes(6, 200, 40, random_state=0)
    X.sum_duplicates()
    X.data[:] = 1.0  # a repeated feature counted once
    clf = NCESoftmaxClassifier(max_iter=2, random_state=0).fit(X, y)
    assert np.all(clf.scale_ == 1)
    np.testing.assert_allclose(clf.predict_proba(X).sum(1), 1.0)
    np.testing.assert_allclose(clf.predict_proba(X.toarray()), clf.predict_proba(X), atol=1e-12)


def test_raw_measurements_train_as_scaled_ones_do():
    """Wine's raw columns (proline in the hundreds) ended every fit at the
    class prior (held-out accuracy 0.40); scaled by their largest magnitude
    they train."""
    X, y = load_wine(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.5, stratify=y,
                                                        random_state=0)
    clf = NCESoftmaxClassifier(random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) > 0.9


def test_labels_of_mixed_types_are_a_clear_error():
    """A mix of ints and strings failed in numpy's sort ("'<' not supported")."""
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = np.array([1, "a"], dtype=object)[(X[:, 0] > 0).astype(int)]
    with pytest.raises(ValueError, match="y mixes labels of types.*int, str"):
        NCESoftmaxClassifier(max_iter=1).fit(X, y)
    # Labels of one type scikit-learn refuses get scikit-learn's own message.
    with pytest.raises(TypeError, match="labels represented as bytes is not supported"):
        NCESoftmaxClassifier(max_iter=1).fit(X, np.array([b"a", b"b"])[(X[:, 0] > 0).astype(int)])


def test_text_in_a_dataframe_is_refused_with_advice_at_fit_and_predict():
    """A text column gets skebm's message at fit (with y) as at predict,
    and a classifier is not pointed at densities."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=60), "word": rng.choice(["a", "b"], 60)})
    y = rng.integers(0, 3, 60)
    clf = NCESoftmaxClassifier(max_iter=2, random_state=0).fit(frame[["x"]].assign(w=1.0), y)
    for call, column in ((lambda: NCESoftmaxClassifier(max_iter=2).fit(frame, y), "word"),
                         (lambda: clf.predict(frame.rename(columns={"word": "w"})), "w"),
                         # DensityImputer's output keeps text as text, in an object array
                         (lambda: clf.predict(frame.to_numpy(dtype=object)), "column 1")):
        with pytest.raises(ValueError, match=r"does not take text .*'[ab]'.*Put a OneHotEncoder "
                           rf"for the text columns \({column}, in a ColumnTransformer\)"
                           ) as caught:
            call()
        assert "NCEDensity" not in str(caught.value)
        assert "Imputer" not in str(caught.value)
    with pytest.raises(ValueError, match=r"does not take missing values \(NaN\)\. Put "
                       r"skebm.DensityImputer before"):
        clf.predict(frame[["x"]].assign(w=np.nan))
