"""GridSearchCV of NCEDensity on a Dask cluster
==============================================

Through joblib's Dask backend.

Users who outgrow one machine tune skebm estimators on a Dask cluster the way
they tune any scikit-learn estimator: inside ``joblib.parallel_backend("dask")``,
``GridSearchCV(n_jobs=-1)`` sends each (candidate, fold) fit to a worker. Here
a ``LocalCluster`` of two worker processes stands in for the cluster; on a real
one, connect with ``Client("tcp://scheduler-address:8786")`` instead. The
results equal a serial run's (each worker runs torch on one thread, the limit
dask sets; the seeds do the rest).

Needs ``pip install "skebm[dask,plot]"`` (matplotlib draws the scores). About two minutes on 2 idle CPU
cores (242 s of CPU time over the two workers, measured under ``nice``
beside busy processes); with ``SKEBM_FAST_EXAMPLES=1`` (the
documentation build) 400 rows, a base of at most 2 mixture components and 2
epochs per fit.
"""

import os
import time

import joblib
import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV

from skebm import NCEDensity
from skebm.datasets import make_toy_2d


FAST = os.environ.get("SKEBM_FAST_EXAMPLES") == "1"


def main():
    n_rows, max_iter, base_components = (400, 2, 2) if FAST else (4000, 30, 32)
    print(f"{n_rows} rows, {max_iter} epochs per fit, base_components={base_components}"
          + (" (SKEBM_FAST_EXAMPLES=1)" if FAST else ""))
    X = make_toy_2d("rings", n_rows, random_state=0)
    X_train, X_test = X[: n_rows // 2], X[n_rows // 2:]
    grid = {"hidden_layer_sizes": [(64, 64), (128, 128, 128)], "noise_ratio": [4, 8]}
    search = GridSearchCV(NCEDensity(max_iter=max_iter, base_components=base_components,
                                     random_state=0), grid, cv=3, n_jobs=-1)

    # On a cluster: client = Client("tcp://scheduler-address:8786")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        print(f"{len(client.scheduler_info()['workers'])} workers")
        start = time.perf_counter()
        with joblib.parallel_backend("dask"):
            search.fit(X_train)
        print(f"grid search of {len(search.cv_results_['params'])} candidates x 3 folds: "
              f"{time.perf_counter() - start:.1f} s")

    print("best parameters:", search.best_params_)
    print(f"held-out log-likelihood: {search.score(X_test):.3f} nats per point")
    plot_scores(search)


def plot_scores(search):
    """Each candidate's mean cross-validated log-likelihood, +- one standard deviation."""
    results = search.cv_results_
    labels = [f"{params['hidden_layer_sizes']}, noise_ratio={params['noise_ratio']}"
              for params in results["params"]]
    figure, ax = plt.subplots(figsize=(6, 2.5))
    ax.errorbar(results["mean_test_score"], np.arange(len(labels)),
                xerr=results["std_test_score"], fmt="o", capsize=3)
    ax.set_yticks(np.arange(len(labels)), labels)
    ax.set_xlabel("held-out log-likelihood (nats per point, 3-fold CV)")
    ax.set_title("GridSearchCV on the Dask cluster")
    figure.tight_layout()


if __name__ == "__main__":
    main()
