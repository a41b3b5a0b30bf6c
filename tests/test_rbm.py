import itertools
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix
from sklearn.base import clone
from sklearn.datasets import load_digits, load_wine, make_moons
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import BernoulliRBM
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import skebm._rbm_model
from skebm import ConvergenceDivergedError, PCDRestrictedBoltzmann
from skebm._rbm_model import (
    ContrastiveDivergence,
    bernoulli,
    block_gibbs,
    rbm_ais_log_partition,
    rbm_exact_log_partition,
    rbm_free_energy,
    rbm_pseudo_likelihood,
    rbm_sample_visible,
)
from skebm.partition import grid_log_integral

QUICK = dict(n_components=8, n_iter=5, random_state=0)


#: The checks below whose made-up data leaves [0, 1] (values up to 3, or
#: around 100), and only those.
_CHECKS_WITH_DATA_OUTSIDE_UNIT_INTERVAL = [
    "check_dict_unchanged", "check_dont_overwrite_parameters", "check_estimators_dtypes",
    "check_estimators_fit_returns_self", "check_estimators_overwrite_params",
    "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_fit2d_1feature",
    "check_fit2d_predict1d", "check_fit_check_is_fitted", "check_fit_idempotent",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_n_features_in", "check_n_features_in_after_fitting", "check_pipeline_consistency",
    "check_positive_only_tag_during_fit", "check_readonly_memmap_input",
    "check_transformer_data_not_an_array", "check_transformer_general",
    "check_transformer_preserve_dtypes",
]


def _expected_failed_checks(estimator):
    if isinstance(estimator, Pipeline):
        reason = "a Pipeline fits the estimators in its steps parameter in place, any Pipeline"
        return {name: reason for name in ("check_estimators_overwrite_params",
                                          "check_dont_overwrite_parameters")}
    if estimator.visible_units != "bernoulli":
        return {}
    reason = ("data outside [0, 1], which Bernoulli visible units refuse (the same checks "
              "pass behind MinMaxScaler below)")
    return {name: reason for name in _CHECKS_WITH_DATA_OUTSIDE_UNIT_INTERVAL}


@parametrize_with_checks([
    PCDRestrictedBoltzmann(**QUICK),
    PCDRestrictedBoltzmann(**QUICK, persistent=False, n_gibbs_steps=2, momentum=0.5,
                           weight_decay=1e-3),
    PCDRestrictedBoltzmann(**QUICK, visible_units="gaussian", learning_rate=0.01),
    # Every check, Bernoulli units included, on data scaled into [0, 1].
    make_pipeline(MinMaxScaler(clip=True), PCDRestrictedBoltzmann(**QUICK)),
], expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# -- helpers ------------------------------------------------------------------------
def random_rbm(n_visible, n_hidden, scale, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
        for shape in ((n_visible, n_hidden), (n_visible,), (n_hidden,))
    )


def all_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def brute_force_log_partition(weights, visible_bias, hidden_bias):
    """log sum over every (v, h) of exp(v.W.h + b.v + c.h), Bernoulli units."""
    v, h = all_states(len(visible_bias)), all_states(len(hidden_bias))
    minus_energy = (v @ weights @ h.T) + (v @ visible_bias)[:, None] + (h @ hidden_bias)[None, :]
    return torch.logsumexp(minus_energy.flatten(), 0).item()


def total_variation(draws, probabilities):
    """TV between the empirical distribution of binary rows and exact
    probabilities of all_states (same order)."""
    n = draws.shape[1]
    codes = (draws.astype(int) * (2 ** np.arange(n - 1, -1, -1))).sum(1)
    empirical = np.bincount(codes, minlength=2**n) / len(draws)
    return 0.5 * np.abs(empirical - probabilities).sum()


@pytest.fixture(scope="module")
def digits():
    X = load_digits().data / 16.0
    return train_test_split(X, test_size=0.25, random_state=0)


@pytest.fixture(scope="module")
def two_prototypes():
    """Binary data with strong correlations: two prototypes, 10% of bits flipped."""
    rng = np.random.RandomState(0)
    prototypes = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=float)
    X = prototypes[rng.randint(2, size=3000)]
    flips = rng.uniform(size=X.shape) < 0.1
    return np.abs(X - flips)


@pytest.fixture(scope="module")
def small_fitted(two_prototypes):
    return PCDRestrictedBoltzmann(n_components=4, learning_rate=0.05, n_iter=20,
                                  momentum=0.5, random_state=0).fit(two_prototypes)


# -- log Z --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 4), (3, 6)])  # enumerates hidden, then visible
def test_exact_log_partition_matches_brute_force(shape):
    params = random_rbm(*shape, scale=1.5)
    assert rbm_exact_log_partition(*params) == pytest.approx(
        brute_force_log_partition(*params), abs=1e-10)


def test_exact_log_partition_gaussian_matches_numerical_integral():
    weights, visible_bias, hidden_bias = random_rbm(2, 3, scale=0.8)
    log_density = lambda V: -rbm_free_energy(
        torch.as_tensor(V), weights, visible_bias, hidden_bias, "gaussian").numpy()
    numerical = grid_log_integral(log_density, ((-12, 12), (-12, 12)), n_points=600)
    exact = rbm_exact_log_partition(weights, visible_bias, hidden_bias, "gaussian")
    assert exact == pytest.approx(numerical, abs=1e-6)


def test_exact_log_partition_refuses_too_many_units():
    with pytest.raises(ValueError, match="at most 20"):
        rbm_exact_log_partition(*random_rbm(21, 22, scale=0.1))


@pytest.fixture(scope="module")
def twelve_hidden(digits):
    X_train, _ = digits
    return PCDRestrictedBoltzmann(n_components=12, learning_rate=0.05, n_iter=10,
                                  random_state=0).fit(X_train)


def test_ais_matches_exact_log_partition(twelve_hidden):
    module = twelve_hidden.module_
    params = (module.weights, module.visible_bias, module.hidden_bias)
    exact = rbm_exact_log_partition(*params)
    assert twelve_hidden.log_partition_ == exact and twelve_hidden.log_partition_method_ == "exact"
    estimate, std = rbm_ais_log_partition(
        *params, base_visible_bias=module.base_visible_bias, n_chains=100,
        n_temperatures=1000, generator=torch.Generator(twelve_hidden.device_).manual_seed(0))
    assert abs(estimate - exact) < 0.1
    assert 0 < std < 0.1
    # Annealing is what makes it precise: over five seeds, 1000 temperatures
    # err by far less than 3 (plain importance sampling from the base).
    def rms_error(n_temperatures):
        errors = [rbm_ais_log_partition(
            *params, base_visible_bias=module.base_visible_bias, n_chains=100,
            n_temperatures=n_temperatures,
            generator=torch.Generator(twelve_hidden.device_).manual_seed(seed))[0]
            - exact for seed in range(5)]
        return float(np.sqrt(np.mean(np.square(errors))))

    assert rms_error(1000) < 0.02 and rms_error(3) > 3 * rms_error(1000)


def test_ais_is_finite_with_large_weights_and_steps():
    """Pre-activations of hundreds and big temperature steps: the increments
    (differences of softplus) must neither overflow nor round to infinity."""
    weights, visible_bias, hidden_bias = random_rbm(100, 15, scale=3.0, seed=2)
    exact = rbm_exact_log_partition(weights, visible_bias, hidden_bias)
    for n_temperatures in (3, 30):
        estimate, std = rbm_ais_log_partition(
            weights, visible_bias, hidden_bias, n_temperatures=n_temperatures,
            generator=torch.Generator().manual_seed(0))
        assert math.isfinite(estimate) and math.isfinite(std)
        assert estimate < exact + 3 * std  # AIS errs low, not high


def test_ais_gaussian_matches_exact():
    weights, visible_bias, hidden_bias = random_rbm(30, 10, scale=0.3, seed=3)
    exact = rbm_exact_log_partition(weights, visible_bias, hidden_bias, "gaussian")
    estimate, _ = rbm_ais_log_partition(
        weights, visible_bias, hidden_bias, "gaussian", base_visible_bias=torch.zeros(30),
        n_temperatures=1000, generator=torch.Generator().manual_seed(0))
    assert abs(estimate - exact) < 0.1


def test_fit_uses_ais_for_large_layers(digits):
    X_train, X_test = digits
    model = PCDRestrictedBoltzmann(n_components=32, n_iter=2, n_ais_temperatures=500,
                                   random_state=0).fit(X_train)
    assert model.log_partition_method_ == "ais"
    assert 0 < model.log_partition_std_ < 0.2
    assert np.all(model.score_samples(X_test) < 0)


# -- sampling -----------------------------------------------------------------------
def test_block_gibbs_samples_the_exact_distribution():
    """A tiny RBM with strong weights, enumerated: 20000 chains of 100 steps
    match p(v) to binning noise; the starting distribution does not."""
    weights, visible_bias, hidden_bias = random_rbm(4, 3, scale=2.0, seed=1)
    states = all_states(4)
    log_p = -rbm_free_energy(states, weights, visible_bias, hidden_bias) - \
        rbm_exact_log_partition(weights, visible_bias, hidden_bias)
    probabilities = log_p.exp().numpy()
    assert probabilities.sum() == pytest.approx(1.0)
    generator = torch.Generator().manual_seed(0)
    start = bernoulli(torch.full((20000, 4), 0.5, dtype=torch.float64), generator)
    draws = block_gibbs(start, weights, visible_bias, hidden_bias, 100, generator).numpy()
    # 20000 exact draws over 16 states: TV of about 0.01 from sampling noise.
    assert total_variation(draws, probabilities) < 0.025
    assert total_variation(start.numpy(), probabilities) > 0.2
    one_step = block_gibbs(start, weights, visible_bias, hidden_bias, 1, generator).numpy()
    assert total_variation(one_step, probabilities) > 0.05


def test_sample_matches_the_fitted_distribution(small_fitted):
    states = all_states(6).numpy()
    probabilities = np.exp(small_fitted.score_samples(states))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-9)  # exact log Z
    draws = small_fitted.sample(20000, n_steps=200, random_state=0)
    assert set(np.unique(draws)) <= {0.0, 1.0}
    assert total_variation(draws, probabilities) < 0.03
    # Without Gibbs steps sample() returns its independent starting points.
    start = small_fitted.sample(20000, n_steps=0, random_state=0)
    assert total_variation(start, probabilities) > 0.2


def test_gibbs_is_one_step(small_fitted, two_prototypes):
    v = two_prototypes[:5]
    once = small_fitted.gibbs(v, random_state=3)
    assert once.shape == v.shape and set(np.unique(once)) <= {0.0, 1.0}
    np.testing.assert_array_equal(once, small_fitted.gibbs(v, random_state=3))
    # Against the module's own step with the same stream.
    module = small_fitted._inference_module()
    device = module.weights.device
    generator = skebm._runtime.make_generator(np.random.RandomState(3), device)
    expected = block_gibbs(torch.as_tensor(v, device=device), module.weights,
                           module.visible_bias, module.hidden_bias, 1, generator)
    np.testing.assert_array_equal(once, expected.cpu().numpy())


# -- free energy, gradient, likelihoods ----------------------------------------------
def test_free_energy_matches_brute_force(small_fitted):
    module = small_fitted._inference_module()
    states, hidden = (all_states(n).to(module.weights.device) for n in (6, 4))
    minus_energy = (states @ module.weights @ hidden.T + (states @ module.visible_bias)[:, None]
                    + (hidden @ module.hidden_bias)[None, :])
    brute = -torch.logsumexp(minus_energy, 1).cpu().numpy()
    np.testing.assert_allclose(small_fitted.free_energy(states.cpu().numpy()), brute, rtol=1e-12)


@pytest.mark.parametrize("persistent, momentum, weight_decay",
                         [(True, 0.0, 0.0), (False, 0.0, 0.0), (True, 0.7, 0.01)])
def test_hand_written_update_is_the_likelihood_gradient(persistent, momentum, weight_decay):
    """Two (P)CD steps against autograd on mean F(data) - mean F(negatives)
    (whose gradient is the CD estimate of minus the log-likelihood's)."""
    torch.manual_seed(0)  # only for this test's data
    estimator = PCDRestrictedBoltzmann(n_components=5, learning_rate=0.3, persistent=persistent,
                                       momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(0)
    data = bernoulli(torch.full((12, 7), 0.4), generator)
    module = estimator._build(data, generator, np.ones(7))
    with torch.no_grad():
        module.weights.normal_(0, 0.5, generator=generator)
        module.chain_hidden.uniform_(generator=generator)
    update = ContrastiveDivergence(estimator, module)
    params = [p.detach().clone() for p in (module.weights, module.visible_bias, module.hidden_bias)]
    velocity = [torch.zeros_like(p) for p in params]
    chain = module.chain_hidden.clone()
    for batch in (data[:6], data[6:]):
        replay = generator.get_state()
        update.step(batch, generator)
        # Replay the negatives with the same random numbers.
        draw = torch.Generator().manual_seed(0)
        draw.set_state(replay)
        W, b, c = params
        start = chain if persistent else torch.sigmoid(c + batch @ W)
        negatives = rbm_sample_visible(bernoulli(start, draw), W, b, "bernoulli", draw)
        leaves = [p.clone().requires_grad_(True) for p in params]
        loss = (rbm_free_energy(batch, *leaves).mean() - rbm_free_energy(negatives, *leaves).mean())
        grads = torch.autograd.grad(loss, leaves)
        grads = [grads[0] + weight_decay * params[0], grads[1], grads[2]]
        velocity = [momentum * vel - 0.3 * g for vel, g in zip(velocity, grads)]
        params = [p + vel for p, vel in zip(params, velocity)]
        chain = torch.sigmoid(c + negatives @ W)  # P(h | negatives) at the weights before the step
        for expected, actual in zip(params, (module.weights, module.visible_bias, module.hidden_bias)):
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
        if persistent:
            torch.testing.assert_close(module.chain_hidden, chain, rtol=1e-5, atol=1e-6)


def test_score_samples_is_normalized_and_score_is_mean(small_fitted, two_prototypes):
    scores = small_fitted.score_samples(two_prototypes[:50])
    assert scores.dtype == np.float64
    assert small_fitted.score(two_prototypes[:50]) == pytest.approx(scores.mean())
    np.testing.assert_allclose(
        scores, -small_fitted.free_energy(two_prototypes[:50]) - small_fitted.log_partition_)
    # It learned: better than the independent (base-rate) model on its own data.
    rates = two_prototypes.mean(0)
    independent = (two_prototypes * np.log(rates) + (1 - two_prototypes) * np.log(1 - rates)).sum(1)
    assert small_fitted.score(two_prototypes) > independent.mean() + 0.5


def test_gaussian_visible_units_give_a_normalized_density():
    X, _ = make_moons(1000, noise=0.1, random_state=0)
    X = X * 3 + 10  # the standardization's Jacobian must be accounted for
    model = PCDRestrictedBoltzmann(n_components=10, visible_units="gaussian", learning_rate=0.01,
                                   n_iter=20, momentum=0.5, random_state=0).fit(X)
    assert model.log_partition_method_ == "exact"
    bounds = ((X[:, 0].min() - 8, X[:, 0].max() + 8), (X[:, 1].min() - 8, X[:, 1].max() + 8))
    assert abs(grid_log_integral(model.score_samples, bounds, n_points=300)) < 1e-3
    draws = model.sample(2000, n_steps=50, random_state=0)
    np.testing.assert_allclose(draws.mean(0), X.mean(0), atol=0.5)


def test_pseudo_likelihood_is_sklearns_without_randomness(small_fitted, two_prototypes):
    v = two_prototypes[:20]
    ours = small_fitted.pseudo_likelihood(v)
    # The definition, flip by flip, through the public free energy.
    F = small_fitted.free_energy(v)
    terms = []
    for i in range(v.shape[1]):
        flipped = v.copy()
        flipped[:, i] = 1 - flipped[:, i]
        terms.append(-np.logaddexp(0, -(small_fitted.free_energy(flipped) - F)))
    np.testing.assert_allclose(ours, np.sum(terms, axis=0), rtol=1e-10)
    # BernoulliRBM with the same weights estimates the same thing at random.
    sk = BernoulliRBM(n_components=4, random_state=0).fit(v)
    sk.components_ = small_fitted.components_
    sk.intercept_hidden_ = small_fitted.intercept_hidden_
    sk.intercept_visible_ = small_fitted.intercept_visible_
    repeated = sk.score_samples(np.repeat(v[:1], 20000, axis=0))
    assert repeated.mean() == pytest.approx(ours[0], abs=4 * repeated.std() / np.sqrt(20000))
    with pytest.raises(ValueError, match="Bernoulli"):
        PCDRestrictedBoltzmann(**QUICK, visible_units="gaussian").fit(v).pseudo_likelihood(v)


def test_pseudo_likelihood_in_float32_agrees(digits):
    X_train, X_test = digits
    params = random_rbm(64, 50, scale=0.3)
    exact = rbm_pseudo_likelihood(torch.as_tensor(X_test[:50]), *params)
    fast = rbm_pseudo_likelihood(torch.as_tensor(X_test[:50], dtype=torch.float32),
                                 *(p.float() for p in params))
    np.testing.assert_allclose(fast.double(), exact, rtol=1e-5)


# -- the scikit-learn side ---------------------------------------------------------
def test_pipeline_features_as_good_as_bernoulli_rbm(digits):
    """scikit-learn's example "Restricted Boltzmann Machine features for digit
    classification", both RBMs with the same parameters, in the same run; ours
    adds momentum 0.5 (Hinton's 2010 guide). Without it the two are level
    within seed noise (0.907 and 0.911 averaged over 4 seeds)."""
    X_train, X_test = digits
    y = load_digits().target
    y_train, y_test = train_test_split(y, test_size=0.25, random_state=0)
    params = dict(n_components=100, learning_rate=0.06, n_iter=10, random_state=0)
    scores = {}
    for rbm in (BernoulliRBM(**params), PCDRestrictedBoltzmann(**params, momentum=0.5)):
        pipe = Pipeline([("rbm", rbm), ("logistic", LogisticRegression(C=100, max_iter=2000))])
        scores[type(rbm).__name__] = pipe.fit(X_train, y_train).score(X_test, y_test)
    assert scores["PCDRestrictedBoltzmann"] >= scores["BernoulliRBM"], scores
    assert scores["PCDRestrictedBoltzmann"] > 0.9, scores


def test_transform_is_hidden_probabilities(small_fitted, two_prototypes):
    v = two_prototypes[:10]
    expected = 1 / (1 + np.exp(-(v @ small_fitted.components_.T + small_fitted.intercept_hidden_)))
    np.testing.assert_allclose(small_fitted.transform(v), expected, rtol=1e-12)
    assert small_fitted.transform(v.astype(np.float32)).dtype == np.float32
    assert small_fitted.get_feature_names_out()[0] == "pcdrestrictedboltzmann0"


def test_history_and_progress_bar(two_prototypes, capsys):
    model = PCDRestrictedBoltzmann(**{**QUICK, "n_iter": 8, "verbose": 1}).fit(two_prototypes)
    assert [record["epoch"] for record in model.history_] == list(range(1, 9))
    assert model.n_iter_ == 8
    # Reconstruction error: 0.25 for a model that reconstructs every bit as
    # 1/2, about 0.09 for one that knows the prototypes (10% of bits flipped).
    assert model.history_[-1]["loss"] <= model.history_[0]["loss"]
    assert model.history_[-1]["loss"] < 0.1
    assert "PCDRestrictedBoltzmann" in capsys.readouterr().err


def test_partial_fit(two_prototypes):
    model = PCDRestrictedBoltzmann(n_components=4, batch_size=10, random_state=0)
    assert model.partial_fit(two_prototypes[:10]) is model
    first = model.components_.copy()
    model.partial_fit(two_prototypes[10:20])
    assert model.n_iter_ == 2 and not np.array_equal(model.components_, first)
    with pytest.raises(ValueError, match="features"):
        model.partial_fit(two_prototypes[:10, :3])
    # A fit after partial fits starts over.
    model.fit(two_prototypes)
    assert model.n_iter_ == model.n_iter


def test_persistent_chains_travel_with_the_model(small_fitted, two_prototypes):
    assert small_fitted.module_.chain_hidden.shape == (small_fitted.batch_size, 4)
    restored = pickle.loads(pickle.dumps(small_fitted))
    torch.testing.assert_close(restored.module_.chain_hidden, small_fitted.module_.chain_hidden)
    np.testing.assert_array_equal(restored.score_samples(two_prototypes[:30]),
                                  small_fitted.score_samples(two_prototypes[:30]))
    assert restored.log_partition_ == small_fitted.log_partition_
    assert clone(small_fitted).get_params() == small_fitted.get_params()
    assert not hasattr(clone(small_fitted), "module_")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_gpu_score_on_cpu(two_prototypes, unpickled_without_cuda):
    """A GPU-fitted model scores the same on a machine without CUDA. (Fits
    on the two devices draw different streams: like two seeds, whose scores
    here spread over a nat, so they are not compared.)"""
    model = PCDRestrictedBoltzmann(**QUICK, device="cuda").fit(two_prototypes)
    assert model.device_.type == "cuda" and model.module_.chain_hidden.is_cuda
    scores = model.score_samples(two_prototypes)
    restored = unpickled_without_cuda(model)
    assert restored.device_.type == "cpu" and not restored.module_.chain_hidden.is_cuda
    np.testing.assert_allclose(restored.score_samples(two_prototypes), scores, rtol=1e-6)
    assert model.sample(3, random_state=0).shape == (3, 6)


def test_same_seed_same_model_and_global_state_untouched(two_prototypes):
    rng_state = torch.get_rng_state()
    a = PCDRestrictedBoltzmann(**QUICK).fit(two_prototypes)
    b = PCDRestrictedBoltzmann(**QUICK).fit(two_prototypes)
    c = PCDRestrictedBoltzmann(**{**QUICK, "random_state": 1}).fit(two_prototypes)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert not np.allclose(a.components_, c.components_)
    a.sample(3, random_state=0)
    assert torch.equal(rng_state, torch.get_rng_state())


@pytest.mark.parametrize("bad, message", [
    (np.array([[0.0, np.nan], [1.0, 0.0], [1.0, 1.0]]), "NaN"),
    (np.array([[0.0, np.inf], [1.0, 0.0], [1.0, 1.0]]), "infinity"),
    (np.array([[0.0, 1.0]]), "1 sample"),
])
def test_bad_input(bad, message, small_fitted):
    with pytest.raises(ValueError, match=message):
        PCDRestrictedBoltzmann(**QUICK).fit(bad)
    if len(bad) > 1:
        with pytest.raises(ValueError, match=message):
            small_fitted.score_samples(np.c_[bad, bad, bad])
    with pytest.raises(ValueError, match="n_samples"):
        small_fitted.sample(0)


def test_bernoulli_units_refuse_unscaled_input(small_fitted):
    """Raw digits (0-16, the forgotten / 16) gave a "log-probability" of
    +1.1e8; now a clear error that says what to do, at fit and after."""
    X = load_digits().data[:200]
    for fit in (PCDRestrictedBoltzmann(**QUICK).fit, PCDRestrictedBoltzmann(**QUICK).partial_fit):
        with pytest.raises(ValueError, match=r"\[0, 1\].*0.0 to 16.0.*MinMaxScaler\(clip=True\).*gaussian"):
            fit(X)
    with pytest.raises(ValueError, match=r"needs X in \[0, 1\].*-1.0 to"):
        small_fitted.score_samples(np.full((2, 6), -1.0))
    with pytest.raises(ValueError, match=r"needs X in \[0, 1\]"):
        small_fitted.transform(csr_matrix(np.full((2, 6), 2.0)))
    # Gaussian visible units take any real; scaled grey levels are fine.
    PCDRestrictedBoltzmann(**QUICK, visible_units="gaussian", learning_rate=0.01).fit(X)
    scores = PCDRestrictedBoltzmann(**QUICK).fit(X / 16).score_samples(X / 16)
    assert np.all(scores < 0)


def test_sparse_input_gives_the_dense_model_and_stays_sparse(digits, monkeypatch):
    X_train, X_test = digits
    X_train, X_test = X_train[:400], X_test[:100]
    dense = PCDRestrictedBoltzmann(n_components=16, n_iter=3, random_state=0).fit(X_train)
    densified_rows = []
    original_toarray = csr_matrix.toarray

    def recording_toarray(self, *args, **kwargs):
        densified_rows.append(self.shape[0])
        return original_toarray(self, *args, **kwargs)

    monkeypatch.setattr(csr_matrix, "toarray", recording_toarray)
    sparse = PCDRestrictedBoltzmann(n_components=16, n_iter=3, random_state=0).fit(
        csr_matrix(X_train))
    # Only minibatches, and the first rows (at most 1024) that the reported
    # loss and the divergence guard read, are ever dense.
    assert set(densified_rows) == {10, len(X_train)}
    np.testing.assert_array_equal(sparse.components_, dense.components_)
    for method in ("transform", "score_samples", "free_energy", "pseudo_likelihood"):
        np.testing.assert_allclose(getattr(sparse, method)(csr_matrix(X_test)),
                                   getattr(dense, method)(X_test), rtol=1e-12)
    # Gaussian visible units: standardized one minibatch at a time.
    gaussian = dict(n_components=8, n_iter=2, visible_units="gaussian", learning_rate=0.01,
                    random_state=0)
    a = PCDRestrictedBoltzmann(**gaussian).fit(X_train * 3)
    b = PCDRestrictedBoltzmann(**gaussian).fit(csr_matrix(X_train * 3))
    np.testing.assert_allclose(b.components_, a.components_, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.score_samples(csr_matrix(X_test * 3)),
                               a.score_samples(X_test * 3), rtol=1e-5)


def test_every_row_is_used_every_epoch(monkeypatch):
    """15 rows at batch 10: two updates per epoch, the second on 5 rows, as
    BernoulliRBM does (the shared loop used to drop the ragged minibatch)."""
    batches = []
    original_step = ContrastiveDivergence.step

    def recording_step(self, batch, generator):
        batches.append(len(batch))
        return original_step(self, batch, generator)

    monkeypatch.setattr(ContrastiveDivergence, "step", recording_step)
    X = (np.random.RandomState(0).uniform(size=(15, 6)) > 0.5).astype(float)
    PCDRestrictedBoltzmann(n_components=4, batch_size=10, n_iter=3, random_state=0).fit(X)
    assert batches == [10, 5] * 3
    batches.clear()
    PCDRestrictedBoltzmann(n_components=4, batch_size=10, random_state=0).partial_fit(X)
    assert batches == [10, 5]


def test_log_partition_is_not_paid_for_in_fit_or_partial_fit(digits, monkeypatch):
    """A pipeline that only transforms never runs AIS; partial_fit never does."""
    X_train, X_test = digits
    calls = []
    original = skebm._rbm_model.rbm_ais_log_partition
    monkeypatch.setattr(skebm._rbm_model, "rbm_ais_log_partition",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    model = PCDRestrictedBoltzmann(n_components=32, n_iter=2, n_ais_temperatures=300,
                                   random_state=0)
    labels = X_train.sum(1) > np.median(X_train.sum(1))  # any labels will do
    pipe = make_pipeline(model, LogisticRegression(max_iter=200)).fit(X_train, labels)
    pipe.predict(X_test)
    for start in range(0, 100, 10):
        model.partial_fit(X_train[start : start + 10])
    assert calls == []
    score = model.score(X_test)
    assert calls == [1] and model.log_partition_method_ == "ais"
    assert model.score(X_test) == score and calls == [1]  # estimated once


@pytest.mark.parametrize("learning_rate", [1e3, 1e6])
def test_bernoulli_divergence_without_a_nan_is_caught(digits, learning_rate):
    """lr=1e6 used to finish with weights of 1e6 and a score of -5.8 million."""
    X_train, _ = digits
    model = PCDRestrictedBoltzmann(n_components=64, n_iter=2, learning_rate=learning_rate,
                                   random_state=0)
    with pytest.raises(ConvergenceDivergedError,
                       match=r"diverged in epoch 1: the inputs of the hidden units reach"):
        model.fit(X_train)
    assert not hasattr(model, "module_")
    # The largest sane rates of the benchmarks and BernoulliRBM's examples pass.
    PCDRestrictedBoltzmann(n_components=64, n_iter=2, learning_rate=1.0,
                           random_state=0).fit(X_train)


def test_the_default_rate_suits_each_kind_of_visible_unit(digits):
    """learning_rate="auto" is BernoulliRBM's 0.1 for Bernoulli units. A
    Gaussian RBM diverges at 0.1 in the first epoch on wine as it comes
    (standardized inside); the default, 0.001, fits it."""
    X_train, _ = digits
    params = dict(n_components=16, n_iter=2, random_state=0)
    np.testing.assert_allclose(PCDRestrictedBoltzmann(**params).fit(X_train).components_,
                               PCDRestrictedBoltzmann(**params, learning_rate=0.1)
                               .fit(X_train).components_, rtol=1e-6, atol=1e-9)
    wine = load_wine().data
    gaussian = dict(visible_units="gaussian", n_iter=3, random_state=0)
    with pytest.raises(ConvergenceDivergedError, match=r"learning_rate \(now 0\.1\)"):
        PCDRestrictedBoltzmann(**gaussian, learning_rate=0.1).fit(wine)
    model = PCDRestrictedBoltzmann(**gaussian).fit(wine)
    assert model.n_iter_ == 3 and np.isfinite(model.score_samples(wine)).all()
    np.testing.assert_allclose(model.components_, PCDRestrictedBoltzmann(
        **gaussian, learning_rate=1e-3).fit(wine).components_, rtol=1e-6, atol=1e-9)


def test_divergence_is_an_error_and_loses_nothing():
    X, _ = make_moons(300, noise=0.1, random_state=0)
    model = PCDRestrictedBoltzmann(**QUICK, visible_units="gaussian", learning_rate=0.01).fit(X)
    before = model.score_samples(X)
    model.set_params(learning_rate=1e4)
    with pytest.raises(ConvergenceDivergedError,
                       match=r"PCDRestrictedBoltzmann diverged in epoch \d+.*learning_rate"):
        model.fit(X)
    np.testing.assert_array_equal(model.score_samples(X), before)
    assert model.learning_rate == 1e4 and math.isfinite(model.log_partition_)


def test_sample_conditional_draws_the_exact_conditional(small_fitted):
    """Two units clamped: the four free ones follow p(v_free | v_0, v_1),
    enumerated from the exact p(v). The clamped values are those whose
    conditional differs most from the free units' marginal, which the draws
    must then not follow."""
    states = all_states(6).numpy()
    probabilities = np.exp(small_fitted.score_samples(states))
    free_marginal = probabilities.reshape(4, 16).sum(0)  # states are in binary order

    def conditional(values):
        clamped = (states[:, 0] == values[0]) & (states[:, 1] == values[1])
        return probabilities[clamped] / probabilities[clamped].sum()

    values = max(([0, 0], [0, 1], [1, 0], [1, 1]),
                 key=lambda v: np.abs(conditional(v) - free_marginal).sum())
    X = np.full((20000, 6), np.nan)
    X[:, :2] = values
    draws = small_fitted.sample_conditional(X, n_steps=200, random_state=0)
    np.testing.assert_array_equal(draws[:, :2], X[:, :2])  # kept exactly
    assert set(np.unique(draws)) <= {0.0, 1.0}
    # 20000 exact draws over 16 states: TV of about 0.01 from sampling noise.
    assert total_variation(draws[:, 2:], conditional(values)) < 0.03
    assert total_variation(draws[:, 2:], free_marginal) > 0.05
    # Rows with their own masks; known values outside [0, 1] are refused.
    mask = np.array([[True] * 6, [False] * 6])
    rows = small_fitted.sample_conditional(np.full((2, 6), 1.0), mask, random_state=0)
    np.testing.assert_array_equal(rows[1], 1.0)
    with pytest.raises(ValueError, match=r"needs X in \[0, 1\]"):
        small_fitted.sample_conditional(np.full((1, 6), 2.0), np.zeros((1, 6), dtype=bool))


def test_a_scalers_rounding_beyond_1_is_accepted():
    """MinMaxScaler's largest value is 1.0000000000000002 in some columns
    (in one of these three): a few units in the last place beyond [0, 1] are
    rounding, taken as they are; a value truly beyond is refused, shown in
    full (not rounded back to "1")."""
    X = MinMaxScaler().fit_transform(np.random.RandomState(7).randn(50, 3) * 7 + 3)
    assert X.max() > 1
    PCDRestrictedBoltzmann(n_components=2, n_iter=1, random_state=0).fit(X)
    X[0, 0] = 1 + 1e-9
    with pytest.raises(ValueError, match=r"values from 0.0 to 1.000000001\. Scale it"):
        PCDRestrictedBoltzmann(n_components=2, n_iter=1, random_state=0).fit(X)


def test_the_pipeline_the_error_recommends_cross_validates():
    """MinMaxScaler(clip=True) before the RBM: held-out digits beyond the
    training range stay in [0, 1], so no fold of cross_val_score fails
    (a plain MinMaxScaler gave NaN for every fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(MinMaxScaler(clip=True),
                         PCDRestrictedBoltzmann(n_components=64, n_iter=5, random_state=0),
                         LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, X[:600], y[:600], cv=3, error_score="raise")
    assert np.all(scores > 0.5), scores


def test_a_fitted_model_checks_inputs_and_names_outputs_as_fitted():
    """After set_params, the fitted model still reads its own units (real
    values, not [0, 1]) and names as many outputs as it transforms to."""
    X = np.random.RandomState(0).normal(size=(120, 3))
    model = PCDRestrictedBoltzmann(**{**QUICK, "visible_units": "gaussian"}).fit(X)
    scores = model.score_samples(X[:5])
    model.set_params(visible_units="bernoulli", n_components=3)
    np.testing.assert_array_equal(model.score_samples(X[:5]), scores)
    names = model.get_feature_names_out()
    assert len(names) == model.transform(X[:2]).shape[1] == QUICK["n_components"]
    frame = model.set_output(transform="pandas").transform(X[:2])
    assert list(frame.columns) == list(names)


def test_a_score_above_zero_warns_that_ais_underestimated_log_z(two_prototypes):
    """-F is convex, so no row of [0, 1]^d scores above 0 with the true
    log Z; a log Z too low (as AIS gives for large hidden layers with too
    few temperatures) makes rows do so, and that is said."""
    model = PCDRestrictedBoltzmann(**QUICK).fit(two_prototypes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.score_samples(two_prototypes).max() <= 0
    log_z, std = model._log_partition_memo["estimate"]
    model._log_partition_memo["estimate"] = (log_z - 1000.0, std)
    with pytest.warns(UserWarning, match="AIS estimate of log Z .* is too low"):
        model.score_samples(two_prototypes)
