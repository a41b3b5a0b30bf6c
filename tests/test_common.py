"""Properties of the shared core, tested once over every estimator.

Each case is an estimator with small settings and data it accepts.
"""

import pickle

import numpy as np
import pytest
import torch
from sklearn import config_context
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

import skebm._runtime
from skebm import NCEDensity, NCESoftmaxClassifier, PCDRestrictedBoltzmann, ShortRunEBM
from skebm._runtime import PARALLEL_WORK, resolve_device
from skebm.datasets import make_toy_2d


def _binary_digits():
    return (load_digits().data[:400] > 8).astype(np.float64)


CASES = {
    "nce": (lambda: NCEDensity(hidden_layer_sizes=(16, 16), fourier_features=8, max_iter=4,
                               n_importance_samples=4096, random_state=0),
            lambda: make_toy_2d("moons", 400, random_state=0)),
    "rbm-exact": (lambda: PCDRestrictedBoltzmann(n_components=8, n_iter=3, random_state=0),
                  _binary_digits),
    "rbm-ais": (lambda: PCDRestrictedBoltzmann(n_components=32, n_iter=3,
                                               n_ais_temperatures=200, random_state=0),
                _binary_digits),
    "shortrun-grid": (lambda: ShortRunEBM(hidden_layer_sizes=(16, 16), fourier_features=8,
                                          max_iter=3, n_steps=5, buffer_size=100,
                                          random_state=0),
                      lambda: make_toy_2d("moons", 400, random_state=0)),
    "shortrun-image-ais": (lambda: ShortRunEBM(image_shape=(1, 8, 8), hidden_layer_sizes=(4, 8),
                                               max_iter=2, n_steps=3, buffer_size=100,
                                               n_ais_chains=10, n_ais_temperatures=20,
                                               random_state=0),
                           lambda: load_digits().data[:400] / 16),
}


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request):
    make_estimator, make_data = CASES[request.param]
    X = make_data()
    return make_estimator, X[:300], X[300:]


def test_log_partition_is_estimated_on_first_use_and_does_not_depend_on_when(case):
    make_estimator, X_train, X_test = case
    first = make_estimator().fit(X_train)
    assert "estimate" not in first._log_partition_memo  # fit did not pay for it
    keys = set(vars(first))
    scores = first.score_samples(X_test)
    assert set(vars(first)) == keys  # memoized inside, no new state on the estimator
    log_z, log_z_std = first.log_partition_, first.log_partition_std_
    np.testing.assert_array_equal(first.score_samples(X_test), scores)
    # A second fit with the same seed, sampled from and pickled before it is
    # asked for log Z, estimates the same value.
    second = make_estimator().fit(X_train)
    second.sample(5, random_state=1)
    second = pickle.loads(pickle.dumps(second))
    assert (second.log_partition_, second.log_partition_std_) == (log_z, log_z_std)
    # Once made, the estimate travels with the pickle.
    third = pickle.loads(pickle.dumps(first))
    assert third._log_partition_memo["estimate"] == (log_z, log_z_std)
    # A refit draws a new seed from its own stream: a warm refit re-estimates.
    assert not hasattr(clone(first), "_log_partition_memo")


def test_score_samples_is_normalized_mean_is_score(case):
    make_estimator, X_train, X_test = case
    model = make_estimator().fit(X_train)
    scores = model.score_samples(X_test)
    assert scores.dtype == np.float64 and scores.shape == (len(X_test),)
    assert model.score(X_test) == pytest.approx(scores.mean())
    unnormalized = model._map_rows(
        lambda Z: model._unnormalized_log_density(model._inference_module(), Z), X_test)
    np.testing.assert_allclose(
        scores, unnormalized - np.log(model.scale_).sum() - model.log_partition_, rtol=1e-12)


def test_inference_chunks_follow_working_memory(case):
    """Chunks are sized by scikit-learn's working_memory; results do not depend on it."""
    make_estimator, X_train, X_test = case
    model = make_estimator().fit(X_train)
    whole = model.score_samples(X_test)
    features = model.transform(X_test) if hasattr(model, "transform") else None
    assert model._chunk_rows(len(X_test)) == len(X_test)
    with config_context(working_memory=2 * model._inference_row_bytes() / 2**20):
        assert model._chunk_rows(len(X_test)) == 2
        np.testing.assert_allclose(model.score_samples(X_test), whole, rtol=1e-12)
        if features is not None:
            np.testing.assert_allclose(model.transform(X_test), features, rtol=1e-12)


def test_unavailable_devices_are_clear_value_errors(case):
    make_estimator, X_train, _ = case
    names = [name for name, available in (
        ("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available()))
        if not available]
    if not names:
        pytest.skip("this machine has both CUDA and MPS")
    for name in names:
        with pytest.raises(ValueError, match=f"cannot use {name.upper()}"):
            make_estimator().set_params(device=name).fit(X_train)
    with pytest.raises(ValueError, match="not a device torch knows"):
        resolve_device("tpu-of-dreams")


def test_thread_policy(case, monkeypatch):
    make_estimator, X_train, _ = case
    model = make_estimator()
    cpu = torch.device("cpu")
    monkeypatch.setattr(skebm._runtime, "idle_cores", lambda: 2)
    with threadpool_limits(2):
        assert model._cpu_threads(PARALLEL_WORK - 1, cpu) == 1  # small work
        assert model._cpu_threads(PARALLEL_WORK, cpu) == 2  # large, two idle cores
        monkeypatch.setattr(skebm._runtime, "idle_cores", lambda: 1)
        assert model._cpu_threads(PARALLEL_WORK, cpu) == 1  # another process is busy
        monkeypatch.setattr(skebm._runtime, "idle_cores", lambda: 8)
        assert model._cpu_threads(PARALLEL_WORK, cpu) == 2  # never past the allowed 2
    with threadpool_limits(1):  # OMP_NUM_THREADS, joblib's workers, threadpoolctl
        assert model._cpu_threads(10 * PARALLEL_WORK, cpu) == 1
    assert model._cpu_threads(10 * PARALLEL_WORK, torch.device("cuda")) is None
    assert model.set_params(n_threads=3)._cpu_threads(1, cpu) == 3
    # A fit leaves torch's thread count as it found it.
    before = torch.get_num_threads()
    model.set_params(n_threads=None).fit(X_train)
    assert torch.get_num_threads() == before


def test_idle_cores_counts_others_running_tasks(monkeypatch, tmp_path):
    import builtins

    n_cores = len(skebm._runtime.os.sched_getaffinity(0))
    real_open = builtins.open

    def fake_loadavg(running):
        path = tmp_path / f"loadavg{running}"
        path.write_text(f"0.50 0.40 0.30 {running}/300 12345\n")
        monkeypatch.setattr(builtins, "open", lambda name, *a, **k: real_open(
            path if name == "/proc/loadavg" else name, *a, **k))

    fake_loadavg(1)  # only this process
    assert skebm._runtime.idle_cores() == n_cores
    # Every core busy elsewhere: more running tasks than this process's own
    # threads can account for (torch's workers may still be spinning from the
    # previous test, and they count as this process's).
    fake_loadavg(64 + n_cores)
    assert skebm._runtime.idle_cores() == 1


def test_same_seed_same_model_refit_is_idempotent(case):
    make_estimator, X_train, X_test = case
    a = make_estimator().fit(X_train)
    b = make_estimator().fit(X_train)
    np.testing.assert_array_equal(a.score_samples(X_test), b.score_samples(X_test))
    np.testing.assert_array_equal(a.sample(4, random_state=0), b.sample(4, random_state=0))
    assert a.sample(4, random_state=0).shape == (4, X_train.shape[1])


def test_partial_fit_continues_the_model_and_its_optimizer(case):
    """A loop of partial_fit over chunks is one run: every call one epoch at
    the constant learning_rate, Adam's step count going on across calls (the
    RBM's update keeps its momentum in module_ instead); a fit starts afresh."""
    make_estimator, X_train, X_test = case
    streamed = make_estimator()
    chunks = np.array_split(X_train, 3)
    for chunk in chunks:
        streamed.partial_fit(chunk)
    assert streamed.n_iter_ == 3 and len(streamed.history_) == 3
    assert np.isfinite(streamed.score_samples(X_test)).all()
    state = streamed._partial_optimizer_state
    if not isinstance(streamed, PCDRestrictedBoltzmann):
        steps = sum(-(-len(chunk) // streamed.batch_size) for chunk in chunks)
        assert {int(entry["step"]) for entry in state["state"].values()} == {steps}
        assert state["param_groups"][0]["lr"] == streamed.learning_rate
        restarted = make_estimator().fit(chunks[0]).partial_fit(chunks[1])
        first = -(-len(chunks[1]) // streamed.batch_size)
        assert {int(entry["step"]) for entry in
                restarted._partial_optimizer_state["state"].values()} == {first}
    assert streamed.fit(X_train)._partial_optimizer_state is None
    # A stream's later chunk may hold one row (SGDClassifier takes it too); a
    # new model still needs two.
    epochs = streamed.n_iter_
    assert streamed.partial_fit(X_train[:1]).n_iter_ == epochs + 1
    with pytest.raises(ValueError, match="minimum of 2"):
        make_estimator().partial_fit(X_train[:1])


def test_mps_model_infers_in_float64_on_the_cpu(case):
    """MPS has no float64: a model trained there scores and samples on the CPU.
    Simulated here by marking a CPU-fitted model as fitted on MPS."""
    make_estimator, X_train, X_test = case
    model = make_estimator().set_params(device="cpu").fit(X_train)
    scores = model.score_samples(X_test)
    model.device_ = torch.device("mps")
    assert model._inference_device() == torch.device("cpu")
    np.testing.assert_array_equal(model.score_samples(X_test), scores)
    assert model.sample(3, random_state=0).shape == (3, X_train.shape[1])


def test_the_second_argument_of_sample_is_the_seed(case):
    """sample(n_samples, random_state), as DESIGN.md and KernelDensity have
    it; chain lengths are keywords."""
    make_estimator, X_train, _ = case
    model = make_estimator().fit(X_train)
    np.testing.assert_array_equal(model.sample(3, 7), model.sample(3, random_state=7))
    with pytest.raises(TypeError):
        model.sample(3, 7, 5)


def test_sample_wants_integers(case):
    """n_samples and n_steps of sample and sample_conditional are checked
    first, with a ValueError that names them (a bool is no integer)."""
    make_estimator, X_train, X_test = case
    model = make_estimator().fit(X_train)
    assert model.sample(np.int64(2), random_state=0).shape == (2, X_train.shape[1])
    for bad in (0, 2.0, -1, "5", None, True, np.bool_(True)):
        with pytest.raises(ValueError, match="n_samples must be a positive integer"):
            model.sample(bad)
    mask = np.zeros(X_test[:2].shape, dtype=bool)
    for bad in (-1, 2.0, "5", True):
        with pytest.raises(ValueError, match="n_steps must be an integer >= 0"):
            model.sample(2, n_steps=bad)
        if hasattr(model, "sample_conditional"):
            with pytest.raises(ValueError, match="n_steps must be an integer >= 0"):
                model.sample_conditional(X_test[:2], mask, n_steps=bad)


def test_same_seed_same_model_whatever_threads_the_policy_picks():
    """The policy picks 1 or 2 threads by load; the fitted model must not
    depend on it beyond rounding. Sizes where the products do run on two
    threads. Two threads split a float32 product's sums in another order, so
    the models agree to rounding, not bit for bit: the RBM's weights 3e-8
    apart were seen, and two epochs of NCE carry the rounding to scores 1e-4
    apart on an Intel host (1e-5 on an AMD one). The tolerances are far
    below what a seed makes (NCE's scores 0.1 nats apart on average, 0.3 at
    most)."""
    X = (np.random.RandomState(0).rand(600, 784) > 0.6).astype(float)
    rbm = [PCDRestrictedBoltzmann(200, batch_size=100, n_iter=1, random_state=0,
                                  n_threads=n).fit(X) for n in (1, 2)]
    np.testing.assert_allclose(rbm[0].components_, rbm[1].components_, rtol=0, atol=1e-5)
    T = make_toy_2d("8gaussians", 1000, random_state=0)
    nce = [NCEDensity(max_iter=2, n_importance_samples=4096, random_state=0,
                      n_threads=n).fit(T) for n in (1, 2)]
    np.testing.assert_allclose(nce[0].score_samples(T[:50]), nce[1].score_samples(T[:50]),
                               rtol=0, atol=1e-3)


def _named(X):
    """X as a DataFrame with string column names, as scikit-learn records them."""
    import pandas as pd

    return pd.DataFrame(X, columns=[f"x{index}" for index in range(X.shape[1])])


def _failed_fits_change_nothing(model, X, y, output, monkeypatch):
    """After a fit on named columns, fits that fail (interrupted in training,
    or refused by a check; on another number of features, on unnamed
    columns) leave the fitted attributes, the feature names included, and
    the outputs as they were; a failed first fit leaves the estimator unfitted."""
    targets = () if y is None else (y,)
    model.fit(_named(X), *targets)
    before = output(model)(_named(X))
    wider = np.hstack([X, X[:, :1]])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "_train", interrupted)
    for rows in (wider, X):
        with pytest.raises((KeyboardInterrupt, ValueError)):
            model.fit(rows, *targets)
        assert model.n_features_in_ == X.shape[1]
        np.testing.assert_array_equal(model.feature_names_in_, _named(X).columns)
        np.testing.assert_array_equal(output(model)(_named(X)), before)
    fresh = clone(model)
    classes = () if y is None else (np.unique(y),)
    for first_fit in (lambda: fresh.fit(wider, *targets),
                      lambda: fresh.partial_fit(wider, *targets, *classes)):
        with pytest.raises((KeyboardInterrupt, ValueError)):
            first_fit()
        assert not hasattr(fresh, "n_features_in_") and not hasattr(fresh, "feature_names_in_")


def test_a_failed_fit_changes_nothing(case, monkeypatch):
    make_estimator, X_train, _ = case
    _failed_fits_change_nothing(make_estimator(), X_train, None,
                                lambda model: model.score_samples, monkeypatch)


def test_a_failed_fit_of_the_classifier_changes_nothing(monkeypatch):
    X, y = load_digits(return_X_y=True)
    model = NCESoftmaxClassifier(embedding_dim=8, max_iter=2, random_state=0)
    _failed_fits_change_nothing(model, X[:300] / 16, y[:300],
                                lambda model: model.predict_proba, monkeypatch)


#: torch's global defaults that skebm must not depend on.
TORCH_DEFAULTS = {
    "default-dtype-float64": lambda: torch.set_default_dtype(torch.float64),
    "default-device-meta": lambda: torch.set_default_device("meta"),
}


def _unchanged_by_torch_defaults(setting, fit, outputs):
    """``outputs`` of a model fitted under torch's own defaults are those,
    under ``setting``, of its unpickled copy and of a new fit: every tensor
    skebm makes has its dtype and device said."""
    model = fit()
    pickled = pickle.dumps(model)  # before its first score: log Z is estimated after loading
    expected = outputs(model)
    try:
        setting()
        for model in (pickle.loads(pickled), fit()):
            for got, want in zip(outputs(model), expected):
                np.testing.assert_array_equal(got, want)
    finally:
        torch.set_default_dtype(torch.float32)
        torch.set_default_device(None)


@pytest.mark.parametrize("setting", TORCH_DEFAULTS.values(), ids=TORCH_DEFAULTS.keys())
def test_torch_global_defaults_do_not_leak_in(case, setting):
    make_estimator, X_train, X_test = case
    _unchanged_by_torch_defaults(
        setting, lambda: make_estimator().fit(X_train),
        lambda model: (model.score_samples(X_test), model.sample(3, random_state=0)))


@pytest.mark.parametrize("setting", TORCH_DEFAULTS.values(), ids=TORCH_DEFAULTS.keys())
def test_torch_global_defaults_do_not_leak_into_the_classifier(setting):
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]
    model = NCESoftmaxClassifier(loss="nce", n_noise=3, norm_term="learned", embedding_dim=8,
                                 hidden_layer_sizes=(4,), learning_rate=0.03, max_iter=2,
                                 early_stopping=False, random_state=0)
    _unchanged_by_torch_defaults(setting, lambda: clone(model).fit(X, y),
                                 lambda model: (model.predict_proba(X),))


def test_requests_beyond_memory_are_refused_before_allocating(case):
    """sample(10**12) would need terabytes, as would log Z from 10**13
    importance draws or AIS chains: a ValueError with the size, at once."""
    make_estimator, X_train, _ = case
    model = make_estimator().fit(X_train)
    with pytest.raises(ValueError, match=r"sample\(1000000000000\) would need about .* GiB"):
        model.sample(10**12)
    if getattr(model, "log_partition_method_", "ais") == "exact":
        return
    name = model._log_partition_parameters[0]
    model = make_estimator().set_params(**{name: 10**13}).fit(X_train)
    with pytest.raises(ValueError, match=f"{name}=.*GiB.*Refit with a lower {name}"):
        model.score_samples(X_train[:2])


def test_scores_before_fit_are_not_fitted_errors(case):
    make_estimator, _, X_test = case
    with pytest.raises(NotFittedError):
        make_estimator().score_samples(X_test)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_fit_and_sample_inside_torch_no_grad(case, context):
    """A caller's torch.no_grad() or torch.inference_mode() does not reach
    training or Langevin steps."""
    make_estimator, X_train, X_test = case
    with context():
        model = make_estimator().fit(X_train)
        assert np.isfinite(model.score_samples(X_test)).all()
        assert np.isfinite(model.sample(2, random_state=0)).all()


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_the_classifier_fits_inside_torch_no_grad(context):
    X, y = load_digits(return_X_y=True)
    with context():
        model = NCESoftmaxClassifier(embedding_dim=8, max_iter=2, random_state=0).fit(
            X[:300] / 16, y[:300])
    assert model.score(X[300:600] / 16, y[300:600]) > 0.15  # chance: 0.1


@pytest.mark.parametrize("make, X", [
    (lambda: NCEDensity(hidden_layer_sizes=(100_000, 100_000)), np.zeros((50, 2))),
    (lambda: NCEDensity(fourier_features=10**7), np.zeros((50, 2))),
    (lambda: ShortRunEBM(buffer_size=10**11), np.zeros((50, 2))),
    (lambda: PCDRestrictedBoltzmann(n_components=10**6), np.zeros((50, 10_000))),
], ids=["hidden_layer_sizes", "fourier_features", "buffer_size", "n_components"])
def test_models_beyond_memory_are_refused_before_allocating(make, X):
    X = X + np.random.default_rng(0).random(X.shape) * 0.5  # varied, in [0, 1]
    with pytest.raises(ValueError, match="would need about .* GiB"):
        make().fit(X)


def test_a_fitted_model_answers_from_its_fit_not_from_set_params(case):
    """Parameters take effect at the next fit: set_params after fit changes no
    score and no sample (scikit-learn's convention)."""
    make_estimator, X_train, X_test = case
    fitted = pickle.dumps(make_estimator().fit(X_train))  # log Z not yet estimated
    model = pickle.loads(fitted)
    scores, samples = model.score_samples(X_test), model.sample(3, random_state=0)
    changed = ({"n_components": 1, "visible_units": "gaussian"}
               if isinstance(model, PCDRestrictedBoltzmann) else
               {"hidden_layer_sizes": (0,), "fourier_features": 0})
    if model.__dict__.get("image_shape"):
        changed["image_shape"] = (1, 2, 2)  # 4 values an image, not X's 64
    changed.update({name: 3 for name in model._log_partition_parameters})
    model = pickle.loads(fitted).set_params(**changed)
    np.testing.assert_array_equal(model.score_samples(X_test), scores)
    np.testing.assert_array_equal(model.sample(3, random_state=0), samples)
    # A warm start would continue a model the parameters no longer describe;
    # the refusal names only the parameters the estimator has.
    has_warm_start = "warm_start" in model.get_params()
    warm_fits = [lambda: model.partial_fit(X_train)]
    if has_warm_start:
        warm_fits.append(lambda: model.set_params(warm_start=True).fit(X_train))
    for warm_fit in warm_fits:
        with pytest.raises(ValueError, match="continues the fitted model") as refusal:
            warm_fit()
        assert ("warm_start" in str(refusal.value)) == has_warm_start
    np.testing.assert_array_equal(model.score_samples(X_test), scores)
    model.set_params(**{name: getattr(make_estimator(), name) for name in changed})
    model.partial_fit(X_train)  # back as fitted: it continues
