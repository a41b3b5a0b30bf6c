"""GridSearchCV of NCEDensity on a Dask cluster, through joblib's Dask backend.

Users who outgrow one machine tune skebm estimators on a Dask cluster the way
they tune any scikit-learn estimator: inside ``joblib.parallel_backend("dask")``,
``GridSearchCV(n_jobs=-1)`` sends each (candidate, fold) fit to a worker. Here
a ``LocalCluster`` of two worker processes stands in for the cluster; on a real
one, connect with ``Client("tcp://scheduler-address:8786")`` instead. The
results equal a serial run's (each worker runs torch on one thread, the limit
dask sets; the seeds do the rest).

Needs ``pip install "skebm[dask]"``. About a minute on 2 CPU cores.
"""

import time

import joblib
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV

from skebm import NCEDensity
from skebm.datasets import make_toy_2d


def main():
    X = make_toy_2d("rings", 4000, random_state=0)
    X_train, X_test = X[:2000], X[2000:]
    grid = {"hidden_layer_sizes": [(64, 64), (128, 128, 128)], "noise_ratio": [4, 8]}
    search = GridSearchCV(NCEDensity(max_iter=30, random_state=0), grid, cv=3, n_jobs=-1)

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


if __name__ == "__main__":
    main()
