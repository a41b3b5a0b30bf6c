"""NCESoftmaxClassifier on scikit-learn's small tables, as a user runs it.

``NCESoftmaxClassifier(random_state=seed).fit(X_train, y_train)`` on the raw
columns of iris, wine, breast cancer and digits: stratified 50/50 splits
(``random_state`` 0-5 by default), and the first 30 training rows alone
(where early stopping holds out 3 rows). Each row: mean held-out accuracy,
the worst split's, and the mean fit time, beside ``LogisticRegression()``.

``--min-patience-steps N`` sets the floor of early stopping's patience in
steps (``NCESoftmaxClassifier._min_patience_steps``), to compare a change of
it in one process.

Usage::

    python benchmarks/classifier_small_tables.py [--splits 6] [--min-patience-steps N]
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from skebm import NCESoftmaxClassifier

TABLES = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer,
          "digits": load_digits}


def accuracies(make, X, y, splits, n_rows):
    """(held-out accuracy of each split, mean fit seconds)."""
    scores, seconds = [], []
    for seed in range(splits):
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.5, random_state=seed, stratify=y)
        start = time.perf_counter()
        model = make(seed).fit(X_train[:n_rows], y_train[:n_rows])
        seconds.append(time.perf_counter() - start)
        scores.append(model.score(X_test, y_test))
    return np.array(scores), float(np.mean(seconds))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=6)
    parser.add_argument("--min-patience-steps", type=int, default=None)
    args = parser.parse_args()
    if args.min_patience_steps is not None:
        NCESoftmaxClassifier._min_patience_steps = args.min_patience_steps
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    print(f"patience floor: {NCESoftmaxClassifier._min_patience_steps} steps, "
          f"{args.splits} splits\n")
    print("| table | training rows | NCESoftmaxClassifier() mean, worst, fit s "
          "| LogisticRegression() mean, worst |")
    print("|---|---|---|---|")
    for name, load in TABLES.items():
        X, y = load(return_X_y=True)
        for n_rows in (None, 30):
            ours, seconds = accuracies(lambda seed: NCESoftmaxClassifier(random_state=seed),
                                       X, y, args.splits, n_rows)
            peer, _ = accuracies(lambda seed: LogisticRegression(max_iter=1000),
                                 X, y, args.splits, n_rows)
            print(f"| {name} | {n_rows or len(X) // 2} | {ours.mean():.3f}, {ours.min():.3f}, "
                  f"{seconds:.2f} | {peer.mean():.3f}, {peer.min():.3f} |", flush=True)


if __name__ == "__main__":
    main()
