import math
import pickle
import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import skebm.nce as nce_module
from skebm import ConvergenceDivergedError, NCEDensity
from skebm._runtime import make_generator
from skebm.base_density import MarginalGaussianization
from skebm.datasets import make_toy_2d
from skebm.partition import grid_log_integral

# Small and quick: the checks fit dozens of times on tiny data.
QUICK = dict(hidden_layer_sizes=(32, 32), fourier_features=16, max_iter=20,
             n_importance_samples=4096, random_state=0)


@parametrize_with_checks([NCEDensity(**QUICK)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def fitted(eight_gaussians):
    X_train, _ = eight_gaussians
    return NCEDensity(max_iter=60, random_state=0).fit(X_train)


BOUNDS = ((-5.0, 5.0), (-5.0, 5.0))  # 8gaussians lives in radius ~3.5


def test_density_integrates_to_one(fitted):
    log_integral = grid_log_integral(fitted.score_samples, BOUNDS, n_points=300)
    assert abs(np.exp(log_integral) - 1) < 0.05


def test_learns_the_density(fitted, eight_gaussians):
    _, X_test = eight_gaussians
    from skebm.datasets import eight_gaussians_log_density

    # A model that did not learn (the initial Gaussian) scores about -4.0.
    assert fitted.score(X_test) > eight_gaussians_log_density(X_test).mean() - 0.15
    assert fitted.log_partition_std_ < 0.05
    assert fitted.history_[-1]["loss"] < fitted.history_[0]["loss"]


def test_log_partition_stops_drawing_once_precise(fitted, monkeypatch):
    """log Z's draws stop once its standard error is under the target (after
    the minimum), and that estimate agrees with the one from every draw."""
    module = fitted._inference_module()
    drawn, sample = [], module.proposal.sample
    monkeypatch.setattr(module.proposal, "sample",
                        lambda n, generator: drawn.append(n) or sample(n, generator))
    with torch.no_grad():
        log_z, log_z_std = fitted._estimate_log_partition(
            module, make_generator(0, fitted.device_), n_importance_samples=100_000)
    assert nce_module.LOG_Z_MIN_DRAWS <= sum(drawn) < 100_000
    assert log_z_std < nce_module.LOG_Z_TARGET_ERROR
    monkeypatch.setattr(nce_module, "LOG_Z_TARGET_ERROR", 0.0)  # every draw
    drawn.clear()
    with torch.no_grad():
        every_z, every_std = fitted._estimate_log_partition(
            module, make_generator(1, fitted.device_), n_importance_samples=100_000)
    assert sum(drawn) == 100_000 and every_std < log_z_std
    assert abs(log_z - every_z) < 4 * math.hypot(log_z_std, every_std)


def test_samples_come_from_the_model(fitted):
    """Histogram of sample() against the model's mass in the same 2-D bins."""
    samples = fitted.sample(20000, random_state=1)
    edges = np.linspace(-5, 5, 21)
    counts, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=[edges, edges])
    empirical = counts / len(samples)
    # Model mass per bin: fine midpoint grid inside each bin.
    fine = 10
    xs = np.linspace(-5, 5, 20 * fine, endpoint=False) + 5 / (20 * fine)
    grid = np.stack(np.meshgrid(xs, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(fitted.score_samples(grid)).reshape(20 * fine, 20 * fine)
    mass = density.reshape(20, fine, 20, fine).sum(axis=(1, 3)) * (10 / (20 * fine)) ** 2
    model_mass = mass / mass.sum()
    # 20000 exact draws give a total variation of about 0.03 from binning noise.
    assert 0.5 * np.abs(empirical - model_mass).sum() < 0.05
    # A sampler that returned the proposal's draws (the starting points) would
    # fail the bound above by a margin: over seeds 0-3 of the fit, on one and
    # two threads, the proposal stands 0.064-0.104 from the model (on another
    # host 0.063-0.109), the sampler's draws 0.030-0.033.
    module = fitted.module_
    with torch.no_grad():
        noise = module.from_latent(module.proposal.sample(
            20000, torch.Generator(fitted.device_).manual_seed(0)))
    noise = noise.cpu().numpy() * fitted.scale_ + fitted.mean_
    noise_counts, _, _ = np.histogram2d(noise[:, 0], noise[:, 1], bins=[edges, edges])
    assert 0.5 * np.abs(noise_counts / len(noise) - model_mass).sum() > 0.055


def test_same_seed_same_model(eight_gaussians):
    X, X_test = eight_gaussians
    a = NCEDensity(**QUICK).fit(X).score_samples(X_test)
    b = NCEDensity(**QUICK).fit(X).score_samples(X_test)
    c = NCEDensity(**{**QUICK, "random_state": 1}).fit(X).score_samples(X_test)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fit_leaves_global_torch_state_alone(eight_gaussians):
    X, _ = eight_gaussians
    rng_state = torch.get_rng_state()
    threads = torch.get_num_threads()
    NCEDensity(**QUICK).fit(X).sample(5, random_state=0)
    assert torch.equal(rng_state, torch.get_rng_state())
    assert torch.get_num_threads() == threads


def test_score_is_mean_of_score_samples(fitted, eight_gaussians):
    _, X_test = eight_gaussians
    scores = fitted.score_samples(X_test)
    assert scores.dtype == np.float64
    assert fitted.score(X_test) == pytest.approx(scores.mean())


def test_pickle_round_trip(fitted, eight_gaussians):
    _, X_test = eight_gaussians
    before = fitted.score_samples(X_test)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.score_samples(X_test), before)
    # Pickling does not change the pickled estimator.
    assert isinstance(fitted.device_, torch.device)
    np.testing.assert_array_equal(fitted.score_samples(X_test), before)


def test_gpu_pickle_loads_on_cpu_only_machine(fitted, eight_gaussians, monkeypatch):
    """A model whose device_ is CUDA unpickles onto the CPU where CUDA is absent."""
    _, X_test = eight_gaussians
    scores = fitted.score_samples(X_test)  # log Z estimated, wherever it was fitted
    state = fitted.__getstate__()
    assert all(
        value.device.type == "cpu"
        for value in state.values()
        if isinstance(value, (torch.Tensor, torch.nn.Module)) and not isinstance(value, torch.nn.Module)
    )
    assert all(p.device.type == "cpu" for p in state["module_"].parameters())
    state["device_"] = "cuda:0"  # as written by a GPU-fitted model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = NCEDensity.__new__(NCEDensity)
    restored.__setstate__(state)
    assert restored.device_ == torch.device("cpu")
    np.testing.assert_allclose(restored.score_samples(X_test), scores)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_gpu_score_on_cpu(eight_gaussians, unpickled_without_cuda):
    """A GPU-fitted model scores the same on a machine without CUDA (float64
    inference on both; log Z, estimated on the GPU, travels in the pickle)."""
    X, X_test = eight_gaussians
    model = NCEDensity(**{**QUICK, "device": "cuda"}).fit(X)
    assert model.device_.type == "cuda"
    assert next(model.module_.parameters()).is_cuda
    scores = model.score_samples(X_test)
    restored = unpickled_without_cuda(model)
    assert restored.device_.type == "cpu" and not next(restored.module_.parameters()).is_cuda
    np.testing.assert_allclose(restored.score_samples(X_test), scores, rtol=1e-6)
    assert model.sample(3, random_state=0).shape == (3, 2)


def test_explicit_cuda_without_cuda_is_a_clear_error(eight_gaussians, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cannot use CUDA"):
        NCEDensity(**{**QUICK, "device": "cuda"}).fit(eight_gaussians[0])


def test_sklearn_tools(eight_gaussians):
    X, X_test = eight_gaussians
    X, X_test = X[:600], X_test[:600]
    quick = NCEDensity(**QUICK)
    assert clone(quick).get_params() == quick.get_params()
    pipe = make_pipeline(StandardScaler(), NCEDensity(**QUICK)).fit(X)
    assert np.isfinite(pipe.score(X_test))
    scores = cross_val_score(NCEDensity(**QUICK), X, cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    search = GridSearchCV(
        NCEDensity(**QUICK), {"base_components": [1, 16]}, cv=2
    ).fit(X)
    # Selection is by held-out log-likelihood: eight modes need more than one
    # Gaussian under a small network trained for 20 epochs.
    assert search.best_params_["base_components"] == 16
    assert np.diff(search.cv_results_["mean_test_score"])[0] > 0.1
    assert search.best_score_ == pytest.approx(
        max(search.cv_results_["mean_test_score"])
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[np.nan, 0.0], [np.nan, 2.0], [np.nan, 1.0]]), "Column 0 has no observed"),
        (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 1.0]]), "infinity"),
        (np.array([[0.0, 1.0]]), "1 sample"),
        (np.array([["a", 1.0], ["c", 2.0]], dtype=object), "Column 0 is not numeric"),
        (np.zeros((0, 2)), "0 sample"),
    ],
)
def test_bad_training_input(bad, message):
    with pytest.raises(ValueError, match=message):
        NCEDensity(**QUICK, categorical_features=None).fit(bad)


def test_noise_narrower_than_the_base_is_refused(eight_gaussians):
    """A proposal narrower than the base gives log Z's importance weights no
    finite variance (on 6-D data, log Z erred -0.29 against a standard error
    of 0.05, with no warning): refused before any fit."""
    with pytest.raises(ValueError, match="noise_scale.*range \\[1"):
        NCEDensity(**{**QUICK, "noise_scale": 0.5}).fit(eight_gaussians[0])


def test_bad_scoring_input(fitted):
    with pytest.raises(ValueError, match="features"):
        fitted.score_samples(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="infinity"):
        fitted.score_samples(np.array([[0.0, np.inf]]))
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)


def test_divergence_is_an_error_and_loses_nothing(eight_gaussians):
    X, X_test = eight_gaussians
    model = NCEDensity(**QUICK).fit(X)
    before = model.score_samples(X_test)
    model.set_params(learning_rate=1e8, warm_start=False)
    with pytest.raises(ConvergenceDivergedError, match=r"NCEDensity diverged in epoch \d+.*learning_rate"):
        model.fit(X)
    np.testing.assert_array_equal(model.score_samples(X_test), before)
    with pytest.raises(ValueError, match="diverged"):
        NCEDensity(**{**QUICK, "learning_rate": 1e8}).fit(X)


def test_warm_start_continues(eight_gaussians):
    X, _ = eight_gaussians
    model = NCEDensity(**{**QUICK, "max_iter": 5, "warm_start": True}).fit(X)
    first_module = model.module_
    model.fit(X)
    assert model.n_iter_ == 10 and len(model.history_) == 10
    assert model.module_ is not first_module  # trained on a copy, swapped in at the end
    cold = NCEDensity(**{**QUICK, "max_iter": 5}).fit(X)
    cold.fit(X)
    assert cold.n_iter_ == 5


def test_early_stopping(eight_gaussians):
    X, _ = eight_gaussians
    model = NCEDensity(
        **{**QUICK, "max_iter": 300, "early_stopping": True, "n_iter_no_change": 3, "tol": 0.0}
    ).fit(X)
    assert model.n_iter_ < 300
    assert all("validation_score" in record for record in model.history_)
    # The kept parameters are those of the best validation epoch, not the last:
    # rebuild the held-out rows (the split is the generator's first draw).
    best = max(record["validation_score"] for record in model.history_)
    assert model.history_[-1]["validation_score"] < best
    order = torch.randperm(len(X), generator=make_generator(QUICK["random_state"], model.device_),
                           device=model.device_)
    Z = torch.as_tensor((X - model.mean_) / model.scale_, dtype=torch.float32,
                        device=model.device_)
    Z_val = Z[order[: int(np.ceil(0.1 * len(X)))]]
    with torch.no_grad():
        kept = model._validation_score(model.module_,
                                       model._validation_set(model.module_, Z_val))
        # The best trained epoch, or epoch 0 (the base, E = 0) when it scored better.
        if kept != pytest.approx(best, abs=1e-5):
            assert kept > best and torch.count_nonzero(model.module_.energy(Z_val)) == 0
    # Too few rows to hold any out: trained on all of them, no validation.
    tiny = NCEDensity(**{**QUICK, "validation_fraction": 0.9}).fit(X[:3])
    assert "validation_score" not in tiny.history_[0]
    full = NCEDensity(**{**QUICK, "early_stopping": False}).fit(X)
    assert full.n_iter_ == QUICK["max_iter"] and "validation_score" not in full.history_[0]


def test_any_number_of_features():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 5)) @ rng.standard_normal((5, 5)) + 3.0
    model = NCEDensity(**{**QUICK, "max_iter": 40}).fit(X)
    assert model.sample(7, random_state=0).shape == (7, 5)
    # On Gaussian data the model should be near the true Gaussian log-likelihood.
    from scipy.stats import multivariate_normal

    truth = multivariate_normal(X.mean(0), np.cov(X.T)).logpdf(X).mean()
    assert model.score(X) > truth - 0.3


def test_jacobian_of_the_standardization(eight_gaussians):
    """Scaling the data by 10 shifts the log-density by -2 log 10. One thread
    for both fits: with the thread policy's choice, a busy machine could fit
    them on different thread counts, whose sums round differently."""
    X, X_test = eight_gaussians
    fits = [NCEDensity(max_iter=20, n_threads=1, random_state=0).fit(X * scale)
            for scale in (1, 10)]
    np.testing.assert_allclose(
        fits[1].score_samples(X_test * 10), fits[0].score_samples(X_test) - 2 * np.log(10),
        atol=1e-3,
    )


@pytest.mark.parametrize("scale", [1e-30, 1e30, 1e-200, 1e200])
def test_extreme_scales_shift_the_log_density_by_the_jacobian(scale):
    """A density of c X is the density of X shifted by -d log c, however
    small or large c: columns of tiny values are not taken for constant, and
    values whose squares overflow or underflow float64 (beyond about 1e154,
    below about 1e-154) are standardized all the same (their variance was
    inf, every score -inf; or 0, a constant column)."""
    X = make_toy_2d("moons", 600, random_state=0)
    fits = [NCEDensity(hidden_layer_sizes=(16,), max_iter=5, n_importance_samples=4096,
                       n_threads=1, random_state=0).fit(X * c) for c in (1.0, scale)]
    np.testing.assert_allclose(fits[1].score_samples(X[:50] * scale),
                               fits[0].score_samples(X[:50]) - 2 * np.log(scale), atol=1e-3)


def test_tiny_data_is_refused_or_scored_sanely():
    """3 rows of 2 features leave 2 training rows beside a validation row: no
    full covariance exists for them, a clear refusal; 4 rows score near a
    GaussianMixture's (3 rows used to score -1.17e6 nats on their own rows)."""
    from sklearn.mixture import GaussianMixture

    X = np.random.default_rng(0).normal(size=(4, 2))
    with pytest.raises(ValueError, match="more training rows than features"):
        NCEDensity(random_state=0).fit(X[:3])
    model = NCEDensity(max_iter=5, random_state=0).fit(X)
    assert abs(model.score(X) - GaussianMixture().fit(X).score(X)) < 2


def test_verbose_shows_progress(eight_gaussians, capsys):
    X, _ = eight_gaussians
    NCEDensity(**{**QUICK, "max_iter": 3, "early_stopping": False, "verbose": 1}).fit(X[:300])
    err = capsys.readouterr().err
    assert "NCEDensity" in err and "3/3" in err and "loss" in err
    assert "stopped early" not in err


def test_verbose_shows_the_base_search_before_training(capsys):
    """The base search, most of a wide table's fit, has its own bar: the
    marginal map column by column, then the mixtures, before the epochs."""
    X = np.random.RandomState(0).gamma(2.0, size=(300, 4))
    NCEDensity(**{**QUICK, "max_iter": 2, "early_stopping": False, "verbose": 1}).fit(X)
    err = capsys.readouterr().err
    base = err.index("NCEDensity base density")
    assert "mixtures of" in err and base < err.index("2/2")
    # The map's notes come before the mixtures' and may be overwritten in the
    # bar before it redraws: they are asked of the map itself.
    notes = []
    MarginalGaussianization.fit_together(X, [np.arange(200)], np.random.RandomState(0),
                                         progress=notes.append)
    assert notes == [f"marginal map, column {j} of 4" for j in (1, 2, 3, 4)]


@pytest.mark.parametrize("verbose, watching, shown", [
    (0, True, True), (0, False, False), (-1, True, False)])
def test_default_shows_a_bar_only_for_long_fits_someone_watches(
        eight_gaussians, capsys, monkeypatch, verbose, watching, shown):
    """verbose=0: a bar once training passes QUIET_BAR_DELAY seconds (here 0)
    where a person watches; erased at the end, so a finished fit leaves a
    carriage return, not a bar, as its last output; verbose < 0: nothing."""
    import skebm._base

    monkeypatch.setattr(skebm._base, "QUIET_BAR_DELAY", 0.0)
    monkeypatch.setattr(skebm._base, "watched", lambda: watching)
    X, _ = eight_gaussians
    NCEDensity(**{**QUICK, "max_iter": 3, "early_stopping": False,
                  "verbose": verbose}).fit(X[:300])
    err = capsys.readouterr().err
    assert ("NCEDensity" in err) == shown
    if shown:
        assert not err.rstrip("\r ").endswith("loss")


def test_long_inference_shows_a_bar_and_quick_inference_none(eight_gaussians, capsys,
                                                              monkeypatch):
    """Scoring, drawing and completing rows count their chunks on a bar once
    the call passes QUIET_BAR_DELAY where a person watches (verbose=1
    included: a bar for every quick score would drown a cross-validation's
    output); quick calls show nothing. The results do not depend on it."""
    import skebm._base

    X, _ = eight_gaussians
    model = NCEDensity(**{**QUICK, "max_iter": 2, "verbose": 1}).fit(X[:300])
    capsys.readouterr()
    monkeypatch.setattr(skebm._base, "watched", lambda: True)
    quick = model.score_samples(X[:300]), model.sample(300, random_state=0)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(skebm._base, "QUIET_BAR_DELAY", 0.0)
    monkeypatch.setattr(skebm._base, "INFERENCE_CHUNK_ROWS", 100)
    np.testing.assert_allclose(model.score_samples(X[:300]), quick[0], rtol=1e-12)
    assert "NCEDensity rows" in capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    monkeypatch.setattr(nce_module, "_SAMPLE_CHUNK", 100)
    model.sample(300, random_state=0)
    assert "3/3" in capsys.readouterr().err
    holes = np.where(np.arange(600).reshape(300, 2) % 3 == 0, np.nan, X[:300])
    model.sample_conditional(holes, random_state=0)
    assert "5/5" in capsys.readouterr().err  # 64 rows a chunk


def test_a_quiet_bar_draws_nothing_before_its_delay(eight_gaussians, capsys, monkeypatch):
    """verbose=0 where a person watches, a fit shorter than the delay: no
    bar, no note (a bar drawn before its delay would not be erased)."""
    import skebm._base

    monkeypatch.setattr(skebm._base, "QUIET_BAR_DELAY", 1000.0)
    monkeypatch.setattr(skebm._base, "watched", lambda: True)
    X, _ = eight_gaussians
    NCEDensity(**{**QUICK, "max_iter": 3}).fit(X[:300])
    assert capsys.readouterr() == ("", "")


def test_the_quiet_bar_counts_the_time_before_training():
    """A base search of 100 s leaves no delay before the bar; a fresh fit
    waits the whole delay."""
    import time

    from skebm._monitors import ProgressBar, TrainingRun

    for started, expected in [(time.monotonic() - 100, 0.0), (time.monotonic(), 10.0)]:
        bar = ProgressBar(delay=10.0, leave=False)
        bar.on_train_begin(TrainingRun(NCEDensity(), None, None, None, 3, started=started))
        assert bar.bar.delay == pytest.approx(expected, abs=0.5)
        bar.close(None)


def test_nobody_watches_a_worker_thread_or_pytest():
    from concurrent.futures import ThreadPoolExecutor

    from skebm._runtime import watched

    assert not watched()  # pytest captures stderr: no terminal
    with ThreadPoolExecutor(1) as pool:
        assert not pool.submit(watched).result()


def test_verbose_says_when_early_stopping_ended_the_fit(eight_gaussians, capsys):
    """The bar used to stop at "36/100", which looks like an abort."""
    X, _ = eight_gaussians
    model = NCEDensity(**{**QUICK, "max_iter": 100, "n_iter_no_change": 2, "tol": 0.0,
                          "verbose": 1}).fit(X[:300])
    assert model.n_iter_ < 100
    scores = [record["validation_score"] for record in model.history_]
    out = capsys.readouterr()
    message = out.out + out.err
    assert f"stopped early after epoch {model.n_iter_} of 100" in message
    kept, kept_score = re.search(
        r"Kept the parameters of epoch (\d+) \(validation score (\S+)\)", message).groups()
    # The best trained epoch, or epoch 0 (the base before training) when it was better.
    if int(kept) > 0:
        assert int(kept) == 1 + int(np.argmax(scores))
    assert float(kept_score) >= float(f"{max(scores):.4g}")


def test_hidden_layer_sizes_may_be_an_int(eight_gaussians):
    """As scikit-learn's MLP estimators: 64 means one layer of 64 units."""
    model = NCEDensity(**{**QUICK, "hidden_layer_sizes": 64, "max_iter": 2}).fit(eight_gaussians[0])
    widths = [layer.out_features for layer in model.module_.energy.layers
              if isinstance(layer, torch.nn.Linear)]
    assert widths == [64, 1]
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        NCEDensity(**{**QUICK, "hidden_layer_sizes": (8, 0)}).fit(eight_gaussians[0])


# -- the base, the marginal map and self-adapting noise (issue 7) ---------------


def _blobs(n_rows, n_features, seed):
    rng = np.random.RandomState(seed)
    centres = rng.normal(scale=4, size=(3, n_features))
    return centres[rng.randint(3, size=n_rows)] + rng.normal(size=(n_rows, n_features))


def test_early_stopping_keeps_the_base_when_training_only_hurts():
    """A learning rate that wrecks the network: epoch 0 (the base alone, E = 0)
    has the best validation score and is what the fit keeps."""
    X = _blobs(600, 4, 0)
    model = NCEDensity(**{**QUICK, "learning_rate": 0.3, "n_iter_no_change": 3}).fit(X)
    energy = model.module_.energy(torch.as_tensor((X - model.mean_) / model.scale_,
                                                  dtype=torch.float32, device=model.device_))
    assert torch.count_nonzero(energy) == 0
    assert model.log_partition_ == pytest.approx(0.0, abs=1e-9)
    # The kept model is the base mixture: three components for three blobs.
    assert model.base_n_components_ == 3


def test_never_behind_a_mixture_on_mixture_data():
    """On data a Gaussian mixture generates, the model is at least as good as
    scikit-learn's mixture with the true number of components (held out)."""
    from sklearn.mixture import GaussianMixture

    X = _blobs(3000, 5, 1)
    X_train, X_test = X[:1500], X[1500:]
    model = NCEDensity(**{**QUICK, "max_iter": 10}).fit(X_train)
    reference = GaussianMixture(3, random_state=0).fit(X_train).score(X_test)
    assert model.score(X_test) > reference - 0.02


def test_training_noise_is_drawn_ahead_and_none_is_kept_after_fit(fitted):
    """Training takes its proposal noise from draws made NOISE_RESERVE_STEPS
    steps at a time: consecutive steps get consecutive rows of one draw, the
    next step a new draw. The fitted module (and so its pickle, which may
    move devices) holds none of it."""
    from skebm._nce_model import NOISE_RESERVE_STEPS

    module = fitted.module_
    assert module._noise_reserve is None
    generator = torch.Generator(fitted.device_).manual_seed(3)
    steps = [module.sample_noise(50, generator) for _ in range(NOISE_RESERVE_STEPS)]
    reference = module.proposal.sample(NOISE_RESERVE_STEPS * 50,
                                       torch.Generator(fitted.device_).manual_seed(3))
    torch.testing.assert_close(torch.cat(steps), reference, rtol=0, atol=0)
    assert module._noise_reserve is not None and len(module._noise_reserve) == 0
    assert module.sample_noise(50, generator).shape == (50, 2)
    assert len(module._noise_reserve) == (NOISE_RESERVE_STEPS - 1) * 50
    module.eval()
    assert module._noise_reserve is None


@pytest.fixture(scope="module")
def skewed_2d():
    """2-D data with a skewed and a bounded feature (the marginal map's use)."""
    rng = np.random.RandomState(0)
    X = np.column_stack([rng.exponential(size=3000), rng.uniform(size=3000)])
    X[:, 1] += 0.5 * X[:, 0]
    return X[:1500], X[1500:]


def test_training_rows_mapped_once_train_the_same_model(skewed_2d, monkeypatch):
    """The rows are mapped through the marginal map once per fit, not at
    every step; the map is the same every epoch, so the fitted energy is
    the one mapping each minibatch afresh gives."""
    X, _ = skewed_2d
    settings = dict(QUICK, marginals="kde", max_iter=3)
    once = NCEDensity(**settings).fit(X)
    from skebm._rows import RowsWith

    monkeypatch.setattr(NCEDensity, "_training_set",  # no image: each step maps its rows
                        lambda self, module, Z_train: RowsWith(Z_train))
    every_step = NCEDensity(**settings).fit(X)
    for cached, fresh in zip(once.module_.energy.parameters(),
                             every_step.module_.energy.parameters()):
        torch.testing.assert_close(cached, fresh, rtol=1e-5, atol=1e-6)


def test_far_outliers_score_lower_the_further_they_lie(skewed_2d):
    """Through the marginal map, a value 300, 1e3 or 1e12 standard
    deviations out scored the same (the map was clamped beyond its grid),
    and the outlier detector could not rank them."""
    X, _ = skewed_2d
    model = NCEDensity(**dict(QUICK, marginals="kde", max_iter=2)).fit(X)
    far = np.array([[1.0, v] for v in (30.0, 300.0, 1e3, 1e6, 1e12)]) * X.std(0) + X.mean(0)
    scores = model.score_samples(far)
    assert np.isfinite(scores).all() and (np.diff(scores) < 0).all()


@pytest.mark.parametrize("noise", ["base", "self"])
def test_marginal_map_keeps_the_density_normalized_and_sampled(skewed_2d, noise):
    X, X_test = skewed_2d
    # Every epoch trained, on every row, so that the two models below differ
    # by the map alone, not by which epoch early stopping kept.
    trained = dict(QUICK, noise=noise, early_stopping=False)
    model = NCEDensity(**trained, marginals="kde", noise_update_interval=5).fit(X)
    assert model.base_marginals_ == "kde"
    bounds = ((-2.0, 10.0), (-2.0, 6.0))
    assert abs(np.exp(grid_log_integral(model.score_samples, bounds, n_points=600)) - 1) < 0.05
    # Samples: the share in four quadrants around the medians matches the model's mass.
    samples = model.sample(8000, random_state=0)
    median = np.median(X_test, axis=0)
    xs = np.linspace(-2, 10, 600, endpoint=False) + 0.01
    ys = np.linspace(-2, 6, 400, endpoint=False) + 0.01
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
    mass = np.exp(model.score_samples(grid)) * 0.02 * 0.02
    for right in (False, True):
        for top in (False, True):
            in_grid = ((grid[:, 0] > median[0]) == right) & ((grid[:, 1] > median[1]) == top)
            in_samples = ((samples[:, 0] > median[0]) == right) & ((samples[:, 1] > median[1]) == top)
            assert in_samples.mean() == pytest.approx(mass[in_grid].sum(), abs=0.02)
    # The map is worth having here: better than the mixture on the raw features,
    # by 0.04 nats on the mean of seeds 0-13, 0.006-0.07 on each. On the mean of
    # two seeds: one alone came within 4e-4 on a GPU (whose stream is another seed).
    def gain(seed):
        settings = {**trained, "random_state": seed}
        mapped = model if seed == 0 else NCEDensity(**settings, marginals="kde",
                                                    noise_update_interval=5).fit(X)
        plain = NCEDensity(**settings, marginals="none").fit(X)
        return mapped.score(X_test) - plain.score(X_test)

    assert gain(0) + gain(1) > 0


def test_self_adapting_noise_tracks_the_model(eight_gaussians):
    """The snapshot is refreshed, its tracked log Z follows the model's, and
    the fitted density is normalized."""
    X, X_test = eight_gaussians
    # Every epoch trained: on this toy the validation score moves by 0.01 nats,
    # and early stopping may keep the start, whose snapshot is the zero energy.
    settings = {**QUICK, "noise": "self", "noise_update_interval": 10, "early_stopping": False}
    model = NCEDensity(**settings).fit(X)
    assert all("noise_log_partition" in record and "noise_ess" in record
               for record in model.history_)
    snapshot = model.module_.snapshot
    assert snapshot.steps.item() <= 10
    # The frozen energy is no longer the initial zero network.
    with torch.no_grad():
        frozen = snapshot.energy(torch.as_tensor((X_test - model.mean_) / model.scale_,
                                                 dtype=torch.float32, device=model.device_))
    assert frozen.abs().max() > 0
    # The tracked log Z of the last snapshot and the model's own are close.
    assert abs(snapshot.log_partition.item() - model.log_partition_) < 0.1
    assert abs(np.exp(grid_log_integral(model.score_samples, BOUNDS, n_points=300)) - 1) < 0.05
    again = NCEDensity(**settings).fit(X)
    np.testing.assert_array_equal(again.score_samples(X_test), model.score_samples(X_test))


def test_fit_under_a_meta_default_device():
    """The base's marginal map made its tables on torch's default device."""
    X = np.random.default_rng(0).normal(size=(120, 3))
    expected = NCEDensity(max_iter=2, random_state=0).fit(X).score_samples(X[:5])
    torch.set_default_device("meta")
    try:
        model = NCEDensity(max_iter=2, random_state=0).fit(X)
    finally:
        torch.set_default_device(None)
    np.testing.assert_allclose(model.score_samples(X[:5]), expected, rtol=1e-6)
