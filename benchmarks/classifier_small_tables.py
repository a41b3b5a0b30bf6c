"""NCESoftmaxClassifier on scikit-learn's small tables, as a user runs it.

``NCESoftmaxClassifier(random_state=seed).fit(X_train, y_train)`` on the raw
columns of iris, wine, breast cancer and digits: stratified 50/50 splits
(``random_state`` 0-5 by default), and the first 30 training rows alone
(where early stopping holds out 3 rows). Each row: mean held-out accuracy,
the worst split's, the mean held-out log-loss, the mean fit time and the
fits that ended with a ``ConvergenceWarning``, beside
``LogisticRegression(max_iter=1000)``.

``--min-patience-steps N`` sets the floor of early stopping's patience in
steps (``NCESoftmaxClassifier._min_patience_steps``), and ``--max-iter N``
the classifier's ``max_iter`` (100 was the default before "auto"), to
compare a change in one process.

Usage::

    python benchmarks/classifier_small_tables.py [--splits 6] [--min-patience-steps N]
        [--max-iter N]
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

from skebm import NCESoftmaxClassifier

TABLES = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer,
          "digits": load_digits}


def held_out(make, X, y, splits, n_rows):
    """(held-out accuracy of each split, mean held-out log-loss, mean fit
    seconds, fits that warned of non-convergence)."""
    scores, losses, seconds, warned = [], [], [], 0
    for seed in range(splits):
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.5, random_state=seed, stratify=y)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            start = time.perf_counter()
            model = make(seed).fit(X_train[:n_rows], y_train[:n_rows])
            seconds.append(time.perf_counter() - start)
        warned += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        scores.append(model.score(X_test, y_test))
        # 30 training rows may miss a class: it gets probability 0 (log_loss clips it).
        labels = np.unique(y)
        proba = np.zeros((len(X_test), len(labels)))
        proba[:, np.searchsorted(labels, model.classes_)] = model.predict_proba(X_test)
        losses.append(log_loss(y_test, proba, labels=labels))
    return np.array(scores), float(np.mean(losses)), float(np.mean(seconds)), warned


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=6)
    parser.add_argument("--min-patience-steps", type=int, default=None)
    parser.add_argument("--max-iter", type=int, default=None)
    args = parser.parse_args()
    if args.min_patience_steps is not None:
        NCESoftmaxClassifier._min_patience_steps = args.min_patience_steps
    settings = {} if args.max_iter is None else {"max_iter": args.max_iter}
    print(f"patience floor: {NCESoftmaxClassifier._min_patience_steps} steps, "
          f"{settings or 'default max_iter'}, {args.splits} splits\n")
    print("| table | training rows | NCESoftmaxClassifier() accuracy mean, worst; log-loss; "
          "fit s; warned | LogisticRegression() accuracy mean, worst; log-loss |")
    print("|---|---|---|---|")
    for name, load in TABLES.items():
        X, y = load(return_X_y=True)
        for n_rows in (None, 30):
            ours, loss, seconds, warned = held_out(
                lambda seed: NCESoftmaxClassifier(random_state=seed, **settings),
                X, y, args.splits, n_rows)
            peer, peer_loss, _, _ = held_out(lambda seed: LogisticRegression(max_iter=1000),
                                             X, y, args.splits, n_rows)
            print(f"| {name} | {n_rows or len(X) // 2} | {ours.mean():.3f}, {ours.min():.3f}; "
                  f"{loss:.3f}; {seconds:.2f}; {warned} | {peer.mean():.3f}, {peer.min():.3f}; "
                  f"{peer_loss:.3f} |", flush=True)


if __name__ == "__main__":
    main()
