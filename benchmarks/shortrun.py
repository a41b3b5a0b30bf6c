"""ShortRunEBM on the 2-D toy densities and on digits images.

(a) ``--part toys``: for each 2-D data set, 5000 points split 50/50; held-out
    mean log-likelihood (nats per point) and fit time of ShortRunEBM
    (default parameters), NCEDensity (default parameters), KernelDensity
    (bandwidth by 5-fold GridSearchCV) and GaussianMixture (1 to 30
    components by BIC), and ShortRunEBM's grid-integrated mass (1 is
    perfect). Every fit is timed whole (selection included).

(b) ``--part digits``: ``load_digits().data / 16`` split 50/50 (seeded);
    ShortRunEBM with ``image_shape=(1, 8, 8)`` and otherwise default
    parameters. Sample quality is the MMD^2 (Gaussian kernel,
    median-heuristic bandwidth) between 800 samples and the held-out half,
    beside the MMD^2 of 800 samples of GaussianMixture (full covariances,
    1 to 20 components by BIC), of PCDRestrictedBoltzmann (256 hidden
    units, 50 epochs, 1000 Gibbs steps per sample), and the floor
    MMD^2(800 training rows, test), the mean over 5 random sets of rows.
    Ratios to the floor use the biased MMD^2 (the V-statistic, always
    positive): the unbiased one averages 0 for a perfect sampler, so its
    floor can be 0 or negative (it was -0.0004 on seed 1's split) and a
    ratio to it means nothing; its excess over the floor is printed too. Also: held-out log-likelihoods where
    defined, and the fit time.
    Saves a grid of samples and an inpainting picture (lower half of test
    digits erased, completed by ShortRunEBM and by the RBM) as PNG.

Usage (from the repository root)::

    python benchmarks/shortrun.py --part toys [--datasets 8gaussians ...] [--seed 0]
    python benchmarks/shortrun.py --part digits [--seed 0] [--figures docs/]
    ... [--param NAME=VALUE ...]   (ShortRunEBM parameters, both parts)

Prints markdown tables for benchmarks/RESULTS.md.
"""

import argparse
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture

from _common import mmd2, parse_params
from density_2d import DATASETS, fit_gmm, fit_kde, timed
from skebm import NCEDensity, PCDRestrictedBoltzmann, ShortRunEBM
from skebm.datasets import make_toy_2d
from skebm.partition import grid_log_integral


def toys(datasets, seed, params):
    print("| data | ShortRunEBM | NCEDensity | KDE | GMM (k) | ShortRun - NCE | grid mass "
          "| fit s (ShortRun / NCE / KDE / GMM) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in datasets:
        X = make_toy_2d(name, 5000, random_state=seed)
        train, test = X[:2500], X[2500:]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ebm, t_ebm = timed(lambda: ShortRunEBM(random_state=seed, **params).fit(train))
        nce, t_nce = timed(lambda: NCEDensity(random_state=seed).fit(train))
        kde, t_kde = timed(lambda: fit_kde(train))
        gmm, t_gmm = timed(lambda: fit_gmm(train, seed))
        low, high = X.min(0) - 1.5, X.max(0) + 1.5
        mass = np.exp(grid_log_integral(ebm.score_samples, list(zip(low, high)), 400))
        # Mean of score_samples: KernelDensity.score is a sum.
        scores = [np.mean(model.score_samples(test)) for model in (ebm, nce, kde, gmm)]
        flag = " (warned)" if caught else ""
        print(f"| {name} | {scores[0]:.3f}{flag} | {scores[1]:.3f} | {scores[2]:.3f} | "
              f"{scores[3]:.3f} ({gmm.n_components}) | {scores[0] - scores[1]:+.3f} | "
              f"{mass:.3f} | {t_ebm:.1f} / {t_nce:.1f} / {t_kde:.1f} / {t_gmm:.1f} |",
              flush=True)


def digits(seed, params, figures):
    X = load_digits().data / 16
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(X))
    half = len(X) // 2
    train, test = X[order[:half]], X[order[half:]]
    # The floor: 800 training rows against the test half, mean over 5 draws.
    subsets = [train[rng.choice(half, 800, replace=False)] for _ in range(5)]
    floor = {biased: np.mean([mmd2(rows, test, biased=biased) for rows in subsets])
             for biased in (False, True)}

    ebm, t_ebm = timed(lambda: ShortRunEBM(image_shape=(1, 8, 8), random_state=seed,
                                           **params).fit(train))
    gmm, t_gmm = timed(lambda: min(
        (GaussianMixture(k, covariance_type="full", random_state=seed).fit(train)
         for k in range(1, 21)), key=lambda model: model.bic(train)))
    rbm, t_rbm = timed(lambda: PCDRestrictedBoltzmann(256, learning_rate=0.05, n_iter=50,
                                                      random_state=seed).fit(train))
    samples = {
        "ShortRunEBM (sample)": ebm.sample(800, random_state=seed + 1),
        f"GaussianMixture ({gmm.n_components} components by BIC)": gmm.sample(800)[0],
        "PCDRestrictedBoltzmann (1000 Gibbs steps)": rbm.sample(800, random_state=seed + 1),
        "another 800 training rows": train[rng.choice(half, 800, replace=False)],
    }
    times = {"ShortRunEBM (sample)": t_ebm, "PCDRestrictedBoltzmann (1000 Gibbs steps)": t_rbm}
    times[f"GaussianMixture ({gmm.n_components} components by BIC)"] = t_gmm
    print(f"floor MMD^2: unbiased {floor[False]:.5f}, biased {floor[True]:.5f}; ShortRunEBM "
          f"fit {t_ebm:.0f} s, last epoch "
          f"{ {k: round(v, 4) for k, v in ebm.history_[-1].items()} }")
    print("| samples | MMD^2 (biased) | / floor | MMD^2 (unbiased) - floor | fit s |")
    print("|---|---|---|---|---|")
    for name, rows in samples.items():
        biased, unbiased = mmd2(rows, test, biased=True), mmd2(rows, test)
        print(f"| {name} | {biased:.5f} | {biased / floor[True]:.2f} | "
              f"{unbiased - floor[False]:.5f} | {times.get(name, float('nan')):.0f} |",
              flush=True)
    start = time.perf_counter()
    print(f"held-out log-likelihood (nats per image of 64 grey levels in [0, 1]): "
          f"ShortRunEBM {ebm.score(test):.2f} (log Z std {ebm.log_partition_std_:.2f}, "
          f"{time.perf_counter() - start:.0f} s), GaussianMixture {gmm.score(test):.2f}")
    if figures:
        save_figures(figures, samples["ShortRunEBM (sample)"], ebm, rbm, test, seed)


def save_figures(folder, samples, ebm, rbm, test, seed):
    import matplotlib

    matplotlib.use("Agg")
    from skebm.plotting import plot_inpainting, plot_samples_grid

    figure = plot_samples_grid(samples[:128], image_shape=(1, 8, 8), n_cols=16, vmin=0, vmax=1,
                               title="ShortRunEBM samples (digits, default parameters)")
    figure.savefig(f"{folder}/shortrun_digit_samples.png", dpi=100, bbox_inches="tight")

    rows = test[:12]
    mask = np.zeros_like(rows, dtype=bool)
    mask[:, 32:] = True  # the lower half of each 8x8 image
    figure = plot_inpainting(rows, mask, {
        "ShortRunEBM": ebm.sample_conditional(rows, mask, random_state=seed),
        "PCDRestrictedBoltzmann": rbm.sample_conditional(rows, mask, random_state=seed)},
        image_shape=(1, 8, 8), vmin=0, vmax=1)
    figure.savefig(f"{folder}/inpainting_digits.png", dpi=100, bbox_inches="tight")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["toys", "digits"], required=True)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figures", default=None, help="folder for the PNGs (digits)")
    parser.add_argument("--param", nargs="*", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    params = parse_params(args.param)
    print(f"{platform.node()}, {torch.get_num_threads()} torch threads, torch "
          f"{torch.__version__}, {time.strftime('%Y-%m-%d')}, seed {args.seed}, params {params}")
    if args.part == "toys":
        toys(args.datasets, args.seed, params)
    else:
        digits(args.seed, params, args.figures)


if __name__ == "__main__":
    main()
