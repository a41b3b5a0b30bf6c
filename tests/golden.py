"""Outputs of fixed small fits of every estimator, to hold a refactoring to.

``python tests/golden.py --record`` writes them to ``tests/golden.npz`` with
the versions and CPU they were made on; ``--check`` recomputes them and
compares (``test_golden.py`` runs it). Every fit runs on one torch thread and
one BLAS thread, so the numbers depend on the code, the library versions and
the CPU's instruction set, not on the machine's load; and in a fresh process,
because vectorized float32 sums round by the alignment of their memory, which
the allocations of earlier work in the same process shift.
"""

import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from skebm import (DensityOutlierDetector, NCEDensity, NCESoftmaxClassifier,
                   PCDRestrictedBoltzmann, ShortRunEBM)
from skebm.datasets import make_toy_2d

PATH = Path(__file__).with_name("golden.npz")


def fingerprint():
    """What the recorded numbers depend on besides skebm's code: two CPUs
    with the same instruction set (an AMD EPYC and the machine recorded
    before it) still round float32 kernels differently."""
    return "|".join([torch.__version__, np.__version__, sklearn.__version__,
                     torch.backends.cpu.get_cpu_capability(), platform.machine(),
                     _cpu_model()])


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def _half_masked(X, seed):
    mask = np.random.default_rng(seed).random(X.shape) < 0.3
    return np.where(mask, np.nan, X)


def _density_outputs(name, model, X_test, *, sample=True, conditional=False):
    outputs = {f"{name}.score_samples": model.score_samples(X_test),
               f"{name}.log_partition": np.array([model.log_partition_,
                                                  model.log_partition_std_]),
               f"{name}.loss": np.array([record["loss"] for record in model.history_])}
    if sample:
        outputs[f"{name}.sample"] = model.sample(7, random_state=1)
    if conditional:
        outputs[f"{name}.sample_conditional"] = model.sample_conditional(
            _half_masked(X_test[:6], 2), random_state=3)
    return outputs


def golden_outputs():
    """Every recorded output, by name. The fits are few epochs by design:
    their ConvergenceWarnings are not shown."""
    warnings.simplefilter("ignore", ConvergenceWarning)
    moons = make_toy_2d("moons", 400, random_state=0)
    iris = load_iris().data
    digits, labels = load_digits(return_X_y=True)
    binary = (digits[:300] > 8).astype(np.float64)
    outputs = {}
    with threadpool_limits(1):
        nce = NCEDensity(hidden_layer_sizes=(16, 16), fourier_features=8, max_iter=4,
                         n_importance_samples=4096, n_threads=1, random_state=0)
        outputs.update(_density_outputs("nce", nce.fit(moons[:300]), moons[300:]))
        nce_table = NCEDensity(hidden_layer_sizes=(16,), max_iter=5, n_importance_samples=4096,
                               base_components=4, n_threads=1, random_state=0)
        outputs.update(_density_outputs("nce_table", nce_table.fit(iris[::2]), iris[1::2]))
        nce_self = NCEDensity(hidden_layer_sizes=(16,), fourier_features=4, noise="self",
                              noise_update_interval=2, max_iter=3, early_stopping=False,
                              n_importance_samples=4096, n_threads=1, random_state=0)
        outputs.update(_density_outputs("nce_self", nce_self.fit(moons[:300]), moons[300:]))

        rbm = PCDRestrictedBoltzmann(n_components=8, n_iter=3, n_threads=1, random_state=0)
        rbm.fit(binary[:200])
        outputs.update(_density_outputs("rbm", rbm, binary[200:], conditional=True))
        outputs["rbm.transform"] = rbm.transform(binary[200:])
        outputs["rbm.pseudo_likelihood"] = rbm.pseudo_likelihood(binary[200:])
        outputs["rbm.gibbs"] = rbm.gibbs(binary[200:210], random_state=4)
        rbm_ais = PCDRestrictedBoltzmann(n_components=24, n_iter=2, momentum=0.5,
                                         weight_decay=1e-3, n_ais_chains=10,
                                         n_ais_temperatures=50, n_threads=1, random_state=0)
        outputs.update(_density_outputs("rbm_ais", rbm_ais.fit(binary[:200]), binary[200:]))
        rbm_gauss = PCDRestrictedBoltzmann(n_components=6, n_iter=3, learning_rate=0.01,
                                           visible_units="gaussian", persistent=False,
                                           n_threads=1, random_state=0)
        outputs.update(_density_outputs("rbm_gauss", rbm_gauss.fit(iris[::2]), iris[1::2]))

        shortrun = ShortRunEBM(hidden_layer_sizes=(16, 16), fourier_features=8, max_iter=3,
                               n_steps=5, buffer_size=100, n_threads=1, random_state=0)
        outputs.update(_density_outputs("shortrun", shortrun.fit(moons[:300]), moons[300:],
                                        conditional=True))
        outputs["shortrun.energy_gap"] = np.array(
            [record["energy_gap"] for record in shortrun.history_])
        shortrun_table = ShortRunEBM(hidden_layer_sizes=(16,), max_iter=2, n_steps=5,
                                     persistent=False, n_ais_chains=10, n_ais_temperatures=20,
                                     n_threads=1, random_state=0)
        outputs.update(_density_outputs("shortrun_table", shortrun_table.fit(iris[::2]),
                                        iris[1::2]))
        image = ShortRunEBM(image_shape=(1, 8, 8), hidden_layer_sizes=(4, 8), max_iter=2,
                            n_steps=3, buffer_size=100, n_ais_chains=10, n_ais_temperatures=20,
                            n_threads=1, random_state=0)
        outputs.update(_density_outputs("shortrun_image", image.fit(digits[:200] / 16),
                                        digits[200:260] / 16))

        X, y = digits[:600] / 16, labels[:600]
        for loss in ("nce", "sampled", "full", "in_batch"):
            classifier = NCESoftmaxClassifier(loss=loss, n_noise=4, embedding_dim=8,
                                              max_iter=3, batch_size=64, n_threads=1,
                                              random_state=0).fit(X[:400], y[:400])
            outputs[f"classifier_{loss}.predict_proba"] = classifier.predict_proba(X[400:])
            outputs[f"classifier_{loss}.loss"] = np.array(
                [record["loss"] for record in classifier.history_])
        streamed = NCESoftmaxClassifier(n_noise=4, embedding_dim=8, batch_size=64, n_threads=1,
                                        random_state=0)
        for rows in (slice(0, 200), slice(200, 400)):
            streamed.partial_fit(X[rows], y[rows], classes=np.arange(10))
        outputs["classifier_partial.predict_proba"] = streamed.predict_proba(X[400:])

        detector = DensityOutlierDetector(
            NCEDensity(hidden_layer_sizes=(8,), max_iter=2, n_importance_samples=2048,
                       n_threads=1, random_state=0), contamination=0.1).fit(iris)
        outputs["outlier.decision_function"] = detector.decision_function(iris)
    return outputs


def record():
    np.savez(PATH, fingerprint=np.array(fingerprint()), **golden_outputs())
    print(f"recorded {PATH} on {fingerprint()}")


def check():
    """Exit status 0 when every output equals the recorded one to 1e-12, 2
    when they were recorded on another fingerprint; mismatches are printed."""
    recorded = np.load(PATH)
    if str(recorded["fingerprint"]) != fingerprint():
        print(f"recorded on {recorded['fingerprint']}, this is {fingerprint()}")
        return 2
    outputs = golden_outputs()
    names = sorted(name for name in recorded.files if name != "fingerprint")
    bad = sorted(set(outputs) ^ set(names))
    for name in sorted(set(outputs) & set(names)):
        if not np.allclose(outputs[name], recorded[name], rtol=1e-12, atol=1e-12):
            difference = np.max(np.abs(outputs[name] - recorded[name]))
            bad.append(f"{name} (largest difference {difference:.3g})")
    print("\n".join(bad) or f"all {len(names)} outputs as recorded")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:] not in (["--record"], ["--check"]):
        sys.exit("usage: python tests/golden.py --record | --check")
    sys.exit(record() if sys.argv[1] == "--record" else check())
