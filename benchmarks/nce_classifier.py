"""NCESoftmaxClassifier's losses against each other, SGDClassifier and fastText.

Measured as a user runs them: one process, not pinned, every second of
``fit`` counted (fastText: every second of ``train_supervised``, which reads
its training file and builds its vocabulary; the vectorizer that makes our
sparse X is timed on its own row).

Part ``corpus``: next-word prediction on the King James Bible
(:func:`skebm.datasets.load_kjv_next_word`: the previous three words,
position-tagged, first 90% of the words train: 711,797 rows, 11,862 classes;
79,089 test rows). Features: ``CountVectorizer(token_pattern=r"\\S+")`` over
the tagged context words, the exact vocabulary fastText builds from the same
tokens (``minCount=1``, no n-grams, no subwords). For each row:

- training throughput: training rows x epochs / fit time;
- held-out perplexity with the full softmax, ``exp(-mean log p(y | x))``,
  over the test rows whose word occurs in the training text (test words never
  seen in training can be given no probability by any of these models; they
  are left out, for every model, and counted under the table). ``all`` is
  over every such test row; ``subset`` over a fixed random 5,000 of them,
  the rows fastText's probabilities are read for (its Python binding returns
  a row's probabilities of every class as a list, slow at 12k classes);
- top-1 accuracy on the same rows.

Our rows: each loss with ``max_iter=EPOCHS, early_stopping=False`` (the same
epochs for all, 5 by default, fastText's default), everything else default;
then an extra row tuned for speed (``batch_size=1024, n_noise=128``), and
``NCESoftmaxClassifier()`` with nothing set (early stopping on 10% of the
training rows decides the epochs). fastText (``pip install
fasttext-numpy2-wheel``, a benchmark-only dependency): ``dim=128,
epoch=EPOCHS, thread=2`` with ``loss="hs"``, ``"ns"`` and ``"softmax"``,
the rest default. ``SGDClassifier(loss="log_loss")``, scikit-learn's own
answer (one-vs-rest: a binary model per class), runs in a child process with
a time limit; not finishing within it is its result.

Part ``synthetic``: 100,000 classes of Zipf frequencies, sparse rows of 3
hashed features out of 2**16 (2 of the class's own 4, 1 at random). Training
throughput of each loss for one epoch (``loss="full"`` on 20,000 rows, the
others on 200,000) and the held-out accuracy after it.

Usage::

    python benchmarks/nce_classifier.py [--part corpus synthetic] [--epochs 5]
        [--sgd-minutes 5] [--rows full nce ... fasttext-hs ... sgd]

Prints markdown tables for benchmarks/RESULTS.md.
"""

import argparse
import multiprocessing
import os
import platform
import tempfile
import time

import numpy as np
import scipy.sparse as sp
import sklearn
import torch
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import SGDClassifier

from skebm import NCESoftmaxClassifier
from skebm.datasets import load_kjv_next_word

SUBSET_ROWS = 5_000
ROWS = ["full", "nce", "sampled", "in_batch", "tuned", "defaults", "fasttext-hs", "fasttext-ns",
        "fasttext-softmax", "sgd"]


def target_log_proba(clf, X, targets, chunk=5_000):
    """log p(target) of each row with the full softmax, and whether the most
    probable class is the target (a chunk of rows at a time: 79,089 rows x
    11,862 classes would be 7.5 GB at once)."""
    log_p, hits = [], []
    for start in range(0, X.shape[0], chunk):
        log_proba = clf.predict_log_proba(X[start:start + chunk])
        rows = np.arange(log_proba.shape[0])
        log_p.append(log_proba[rows, targets[start:start + chunk]])
        hits.append(log_proba.argmax(1) == targets[start:start + chunk])
    return np.concatenate(log_p), np.concatenate(hits)


def perplexity(log_p):
    return float(np.exp(-np.mean(log_p)))


def fit_ours(params, X, y):
    clf = NCESoftmaxClassifier(random_state=0, **params)
    start = time.perf_counter()
    clf.fit(X, y)
    return clf, time.perf_counter() - start


def _sgd_child(X, y, queue):
    start = time.perf_counter()
    SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0).fit(X, y)
    queue.put(time.perf_counter() - start)


def run_sgd(X, y, minutes):
    """SGDClassifier's fit time, or None when it did not finish in ``minutes``."""
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_sgd_child, args=(X, y, queue))
    child.start()
    child.join(minutes * 60)
    if child.is_alive():
        child.terminate()
        child.join()
        return None
    return queue.get()


def ratio(throughput, full_throughput):
    """Throughput against loss="full"'s in the same run (blank when it did not run)."""
    return f"{throughput / full_throughput:.2f}x" if full_throughput else ""


def fasttext_lines(contexts, targets):
    return "".join(f"__label__{t} {c}\n" for c, t in zip(contexts, targets))


#: fastText's predict() leaves out the classes below this probability (its
#: tree search stops at log(threshold + 1e-5) even at threshold 0).
FASTTEXT_FLOOR = 1e-5


def fasttext_target_log_proba(model, contexts, targets, *, normalize):
    """log p(target) of each context under a fastText model, whether its most
    probable label is the target, and how many targets it left out.

    A target fastText leaves out gets ``FASTTEXT_FLOOR``, more than the
    probability it had: the perplexity is a lower bound, in fastText's
    favour. ``normalize=True`` (loss="ns", whose outputs are one sigmoid per
    class, not a distribution): the full softmax of its scores, the logits of
    those sigmoids, as skebm's are evaluated.
    """
    log_p, hits, missing = [], [], 0
    for context, target in zip(contexts, targets):
        labels, probabilities = model.predict(context, k=-1, threshold=0.0)
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if normalize:
            logits = np.log(probabilities) - np.log1p(-np.minimum(probabilities, 1 - 1e-12))
            probabilities = np.exp(logits - logits.max())
            probabilities /= probabilities.sum()
        found = np.flatnonzero(np.asarray(labels) == f"__label__{target}")
        missing += not len(found)
        log_p.append(np.log(probabilities[found[0]] if len(found) else FASTTEXT_FLOOR))
        hits.append(labels[0] == f"__label__{target}")
    return np.array(log_p), np.array(hits), missing


def corpus(args):
    data = load_kjv_next_word()
    start = time.perf_counter()
    vectorizer = CountVectorizer(token_pattern=r"\S+", lowercase=False)
    X_train = vectorizer.fit_transform(data.contexts_train)
    X_test = vectorizer.transform(data.contexts_test)
    vectorize = time.perf_counter() - start
    classes = np.unique(data.y_train)
    seen = np.isin(data.y_test, classes)
    test_rows = np.flatnonzero(seen)
    in_subset = np.isin(test_rows, np.random.default_rng(0).choice(
        test_rows, SUBSET_ROWS, replace=False))
    targets = np.searchsorted(classes, data.y_test[test_rows])
    prior = DummyClassifier(strategy="prior").fit(X_train, data.y_train).class_prior_
    n_rows = X_train.shape[0]
    print(f"KJV next word: {n_rows:,} training rows x {X_train.shape[1]:,} features "
          f"({X_train.nnz / n_rows:.0f} non-zero a row), {len(classes):,} classes; "
          f"{len(data.y_test):,} test rows, {(~seen).sum():,} of them ({(~seen).mean():.2%}) "
          f"with a word never seen in training, left out. CountVectorizer: {vectorize:.1f} s "
          f"(not in the fit times). The class prior (DummyClassifier(strategy='prior')): "
          f"perplexity {perplexity(np.log(prior[targets])):.1f}.\n")
    print("| model | epochs | fit (s) | rows/s | vs full | perplexity all | perplexity subset "
          "| accuracy all (subset) |")
    print("|---|---|---|---|---|---|---|---|")
    runs = [(loss, f"loss={loss!r}", dict(loss=loss, max_iter=args.epochs, early_stopping=False))
            for loss in ("full", "nce", "sampled", "in_batch")]
    runs.append(("tuned", "loss='nce', batch_size=1024, n_noise=128 (tuned for speed)",
                 dict(loss="nce", max_iter=args.epochs, early_stopping=False, batch_size=1024,
                      n_noise=128)))
    runs.append(("defaults", "NCESoftmaxClassifier() (defaults: early stopping)", {}))
    full_throughput = None
    for key, name, params in runs:
        if key not in args.rows:
            continue
        clf, seconds = fit_ours(params, X_train, data.y_train)
        throughput = n_rows * clf.n_iter_ / seconds
        if key == "full":  # runs first
            full_throughput = throughput
        log_p, hits = target_log_proba(clf, X_test[test_rows], targets)
        print(f"| {name} | {clf.n_iter_} | {seconds:.1f} | {throughput:,.0f} | "
              f"{ratio(throughput, full_throughput)} | {perplexity(log_p):.1f} | "
              f"{perplexity(log_p[in_subset]):.1f} | {hits.mean():.3f} "
              f"({hits[in_subset].mean():.3f}) |", flush=True)

    try:
        import fasttext
    except ImportError:
        print("| fastText | not installed (pip install fasttext-numpy2-wheel) |")
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "train.txt")
            with open(path, "w") as f:
                f.write(fasttext_lines(data.contexts_train, data.y_train))
            losses = [loss for loss in ("hs", "ns", "softmax") if f"fasttext-{loss}" in args.rows]
            for loss in losses:
                epochs = args.epochs if loss != "softmax" else 1
                # fastText's two threads update the model without locks and now
                # and then stop with "Encountered NaN": a user runs it again.
                # The row counts the failed runs; the time is the run that finished.
                failures = []
                while len(failures) < 5:
                    start = time.perf_counter()
                    try:
                        model = fasttext.train_supervised(
                            input=path, dim=128, epoch=epochs, thread=2, loss=loss,
                            minCount=1, wordNgrams=1, minn=0, maxn=0, verbose=0,
                            seed=len(failures))
                    except RuntimeError as exc:
                        failures.append(f"{exc} after {time.perf_counter() - start:.0f} s")
                        continue
                    break
                else:
                    print(f"| fastText loss={loss!r} | {epochs} | failed 5 times: "
                          f"{'; '.join(failures)} | | | | | |", flush=True)
                    continue
                seconds = time.perf_counter() - start
                failed = f" (after {len(failures)} failed: {'; '.join(failures)})" if failures else ""
                log_p, hits, missing = fasttext_target_log_proba(
                    model, [data.contexts_test[i] for i in test_rows[in_subset]],
                    data.y_test[test_rows[in_subset]], normalize=loss == "ns")
                print(f"| fastText loss={loss!r}{failed} | {epochs} | {seconds:.1f} | "
                      f"{n_rows * epochs / seconds:,.0f} | "
                      f"{ratio(n_rows * epochs / seconds, full_throughput)} | - | "
                      f"{perplexity(log_p):.1f} ({missing} targets below its floor) | "
                      f"({hits.mean():.3f}) |", flush=True)
    if "sgd" in args.rows:
        seconds = run_sgd(X_train, data.y_train, args.sgd_minutes)
        if seconds is None:
            print(f"| SGDClassifier(loss='log_loss', max_iter=5) | 5 | did not finish in "
                  f"{args.sgd_minutes} min | < {n_rows * 5 / (args.sgd_minutes * 60):,.0f} "
                  "| | | | |")
        else:
            print(f"| SGDClassifier(loss='log_loss', max_iter=5) | 5 | {seconds:.1f} | "
                  f"{n_rows * 5 / seconds:,.0f} | | | | |")
    print()


def synthetic_classes(n_classes, n_rows, n_features, seed):
    rng = np.random.default_rng(seed)
    frequencies = 1.0 / np.arange(1, n_classes + 1)
    y = rng.choice(n_classes, n_rows, p=frequencies / frequencies.sum())
    own = rng.integers(n_features, size=(n_classes, 4))
    columns = np.concatenate([own[y[:, None], rng.integers(4, size=(n_rows, 2))],
                              rng.integers(n_features, size=(n_rows, 1))], 1)
    X = sp.csr_matrix((np.ones(columns.size), columns.ravel(),
                       np.arange(0, columns.size + 1, 3)), shape=(n_rows, n_features))
    return X, y


def synthetic(args):
    n_classes = 100_000
    X, y = synthetic_classes(n_classes, 220_000, 2**16, seed=0)
    X_test, y_test = X[200_000:], y[200_000:]
    print(f"Synthetic: {n_classes:,} classes (Zipf), 3 of 2**16 features a row, one epoch; "
          f"accuracy on 20,000 held-out rows.\n")
    print("| loss | training rows | fit (s) | rows/s | vs full | accuracy |")
    print("|---|---|---|---|---|---|")
    results = {}
    for loss in ("full", "nce", "sampled", "in_batch"):
        n = 20_000 if loss == "full" else 200_000
        # partial_fit: one epoch, with every class declared (fit would know only
        # the classes of its rows).
        clf = NCESoftmaxClassifier(loss=loss, early_stopping=False, random_state=0)
        start = time.perf_counter()
        clf.partial_fit(X[:n], y[:n], classes=np.arange(n_classes))
        seconds = time.perf_counter() - start
        results[loss] = (n, seconds, n / seconds, clf.score(X_test, y_test))
        print(f"| {loss} | {n:,} | {seconds:.1f} | {n / seconds:,.0f} | "
              f"{n / seconds / results['full'][2]:.1f}x | {results[loss][3]:.3f} |", flush=True)
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", nargs="+", default=["corpus", "synthetic"],
                        choices=["corpus", "synthetic"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sgd-minutes", type=float, default=5)
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS,
                        help="the corpus part's rows to run (default: all)")
    args = parser.parse_args()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
          f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    if "corpus" in args.part:
        corpus(args)
    if "synthetic" in args.part:
        synthetic(args)


if __name__ == "__main__":
    main()
