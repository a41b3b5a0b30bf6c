"""GridSearchCV over a Dask cluster, through joblib's Dask backend.

Two worker processes on this machine stand in for a cluster; the grid run
there must give exactly the serial results.
"""

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skebm import NCEDensity, PCDRestrictedBoltzmann
from skebm.datasets import make_toy_2d

distributed = pytest.importorskip("distributed", reason='needs pip install "skebm[dask]"')


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster, timeout="60s") as client:
            yield client


CASES = [
    (NCEDensity(max_iter=5, n_importance_samples=4096, random_state=0),
     {"hidden_layer_sizes": [(16,), (32, 32)], "noise_ratio": [1, 4]},
     lambda: make_toy_2d("moons", 400, random_state=0)),
    (PCDRestrictedBoltzmann(n_components=8, n_iter=3, random_state=0),
     {"learning_rate": [0.01, 0.1]},
     lambda: (load_digits().data[:300] > 8).astype(float)),
]


@pytest.mark.parametrize("estimator, grid, make_data", CASES)
def test_grid_search_on_dask_equals_serial(client, estimator, grid, make_data):
    X = make_data()
    serial = GridSearchCV(estimator, grid, cv=2, n_jobs=1).fit(X)
    with distributed.get_task_stream(client) as tasks, joblib.parallel_backend("dask"):
        on_dask = GridSearchCV(estimator, grid, cv=2, n_jobs=-1).fit(X)
    # The fits ran on the cluster's worker processes, not here.
    workers = set(client.scheduler_info()["workers"])
    assert tasks.data and {task["worker"] for task in tasks.data} <= workers
    # Equal to rounding, not bit for bit: another process may round float32
    # sums differently (vectorized sums depend on memory alignment).
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_allclose(on_dask.cv_results_[key], serial.cv_results_[key], rtol=1e-6)
    assert on_dask.best_params_ == serial.best_params_
    # The refit (here, in the client) is the serial one.
    np.testing.assert_allclose(on_dask.score_samples(X[:20]), serial.score_samples(X[:20]),
                               rtol=1e-6)
