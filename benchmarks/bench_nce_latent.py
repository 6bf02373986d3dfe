"""Latent-variable generator on 8x8 digits: the adaptive multi-stage NCE prior (Xiao & Han 2022) vs the MCMC-trained
latent EBM prior (Pang et al. 2020), single-stage NCE and the fixed N(0, I) prior, at an equal number of joint steps.

Model: x = g(z) + 0.3 eps, z in R^16, g an MLP (2 x 128, SiLU); posterior z | x by 20 steps of short-run Langevin
(s = 0.1) from N(0, I); Adam 1e-3 on g. Priors p_0 prod r_k with r_k = exp(MLP 2 x 64):
  fixed   -- p_0 = N(0, I) only (alternating back-propagation);
  mcmc    -- one MLP energy learned by maximum likelihood with 60 short-run Langevin steps (s = 0.4) from N(0, I)
             per step for the prior samples (Pang et al.), Adam 1e-4 on the prior;
  nce-K1  -- single-stage NCE against p_0 over all steps (Adam 1e-3 on the ratio);
  nce-K4  -- 4 stages of steps/4 each; stage k's NCE reference: 5000 samples of the frozen p_{k-1}, by 200 MALA steps
             (s = 0.5) from the previous stage's samples.

Metrics (test split, 297 images; train split 1500):
  recon MSE   -- mean squared error per pixel of g(z) with z from 100 posterior Langevin steps, on the test images
                 (data in [-1, 1]);
  FD          -- Frechet distance of the digit classifier's features (`scoreflow.metrics.frechet_feature_distance`,
                 the digits analogue of FID) between 750 samples x = g(z), z from 500 MALA steps (s = 0.5) on the
                 prior, and 750 training images; the floor row is the FD between the two halves of the training set;
  train s     -- wall time of the joint training (the machine is shared, so compare within this run).

    python benchmarks/bench_nce_latent.py           # default: 1600 joint steps per method
    python benchmarks/bench_nce_latent.py --quick   # 40 steps (smoke run)

Writes benchmarks/results/nce_latent.json and nce_latent.md (nce_latent_quick.* with --quick).
"""

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


_common.set_threads()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import scoreflow as sf  # noqa: E402
from scoreflow._energy import latent  # noqa: E402
from scoreflow.data import load_digits  # noqa: E402


LATENT = 16
SIGMA = 0.3
BATCH = 100
METHODS = ("fixed", "mcmc", "nce-K1", "nce-K4")


def training_for(method: str):
    if method == "fixed":
        return latent.FixedPriorTraining(), 1
    if method == "mcmc":
        return latent.MCMCPriorTraining(step_size=0.4, num_steps=60), 1
    return latent.NCEPriorTraining(), int(method.split("K")[1])


@eqx.filter_jit
def _step(model, opt_state, x, reference, training, optimiser, key):
    return latent.train_latent_step(model, opt_state, x, reference, training=training, optimiser=optimiser, key=key)


@eqx.filter_jit
def _reference(prior, init, key):
    return sf.ChainSampling(sf.MALA(0.5), num_steps=200)(prior, init, key=key)


def train(method: str, data: np.ndarray, steps: int, seed: int):
    key = jax.random.key(seed)
    k_gen, k_stage, key = jax.random.split(key, 3)
    gen = latent.MLPGenerator(LATENT, data.shape[1:], 128, 2, key=k_gen)
    training, stages = training_for(method)
    model = latent.LatentModel(gen, sf.MultiStagePrior(LATENT), None, SIGMA)
    if method != "fixed":
        model = latent.add_latent_stage(model, key=k_stage)
    prior_lr = 1e-4 if method == "mcmc" else 1e-3
    reference = jax.random.normal(jax.random.fold_in(key, 7), (5000, LATENT))
    x_all = jnp.asarray(data)
    log = []
    t0 = time.perf_counter()
    per_stage = steps // stages
    for stage in range(stages):
        if stage > 0:
            model = latent.add_latent_stage(model, key=jax.random.fold_in(k_stage, stage))
            reference, acc = _reference(model.prior, reference, jax.random.fold_in(key, 10_000 + stage))
            log.append({"stage": stage, "reference_acceptance": float(acc)})
        opt, opt_state = latent.init_latent_optimiser(model, optax.adam(1e-3), optax.adam(prior_lr))
        for i in range(per_stage):
            k = jax.random.fold_in(key, stage * per_stage + i)
            idx = jax.random.randint(jax.random.fold_in(k, 1), (BATCH,), 0, x_all.shape[0])
            model, opt_state, info = _step(model, opt_state, x_all[idx], reference, training, opt, k)
            if i % 200 == 0 or i == per_stage - 1:
                row = {
                    "step": stage * per_stage + i,
                    "generator_loss": float(info.generator_loss),
                    "prior_loss": float(info.prior_loss),
                    "posterior_norm": float(info.posterior_norm),
                }
                log.append(row)
                print(f"  {method} {row}", flush=True)
    jax.block_until_ready(model)
    return model, time.perf_counter() - t0, log


@eqx.filter_jit
def _recon(model, x, key):
    return latent.latent_reconstruction_error(model, x, num_steps=100, key=key)


@eqx.filter_jit
def _samples(model, num, key):
    z = latent.latent_prior_samples(model.full_prior, num, step_size=0.5, num_steps=500, key=key, exact_kernel=True)
    return jax.vmap(model.generator)(z)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.steps = 40
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    if set(methods) - set(METHODS):
        p.error(f"--methods: unknown {sorted(set(methods) - set(METHODS))}; expected some of {METHODS}")
    load_before = _common.load_avg()
    t0 = time.perf_counter()
    data = load_digits()
    train_x, test_x = data.train, data.test
    try:
        from scoreflow.metrics import digit_classifier, frechet_feature_distance

        clf = digit_classifier()
        fd = lambda imgs, ref: frechet_feature_distance(clf, np.asarray(imgs, np.float32), ref)
        fd_name = "Frechet distance of digit-classifier features (scoreflow.metrics)"
    except ImportError:  # the metrics edge is not there: Frechet distance of raw pixels
        fd = lambda imgs, ref: _pixel_fd(np.asarray(imgs).reshape(len(imgs), -1), ref.reshape(len(ref), -1))
        fd_name = "Frechet distance of raw pixels"
    half = train_x.shape[0] // 2
    rows = [{"method": "floor: train half vs half", "fd": fd(train_x[:half], train_x[half:])}]
    for method in methods:
        model, train_s, log = train(method, train_x, a.steps, a.seed)
        key = jax.random.key(1000 + a.seed)
        recon = float(_recon(model, jnp.asarray(test_x), key))
        samples = np.asarray(_samples(model, half, jax.random.fold_in(key, 1)))
        row = {
            "method": method,
            "stages": model.full_prior.num_stages,
            "recon_mse": recon,
            "fd": fd(np.clip(samples, -1, 1), train_x[half:]),
            "train_s": train_s,
            "final_generator_loss": log[-1]["generator_loss"],
            "log": log,
        }
        rows.append(row)
        print(_common.summarise({k: v for k, v in row.items() if k != "log"}), flush=True)
        _save_samples(samples[:64], method, a.quick)
    payload = _common.run_record(load_before, t0, rows)
    payload["config"] = vars(a) | {"latent_dim": LATENT, "noise_std": SIGMA, "batch": BATCH, "fd": fd_name}
    cols = [
        ("method", "prior", ""),
        ("stages", "stages", "d"),
        ("recon_mse", "test recon MSE", ".4f"),
        ("fd", "FD", ".2f"),
        ("train_s", "train s", ".0f"),
        ("final_generator_loss", "final gen. loss / pixel", ".3f"),
    ]
    text = _common.report(
        f"Latent generator on digits: NCE priors vs the MCMC prior ({a.steps} joint steps each)",
        payload,
        cols,
        f"\n\nFD = {fd_name}, 750 samples vs 750 training images. Reproduce: `python benchmarks/bench_nce_latent.py"
        f"{' --quick' if a.quick else ''}` (config: {payload['config']}).\n",
    )
    _common.write_results("nce_latent_quick" if a.quick else "nce_latent", payload, text)


def _pixel_fd(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.linalg import sqrtm

    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a.T), np.cov(b.T)
    return float(np.sum((ma - mb) ** 2) + np.trace(ca + cb - 2 * np.real(sqrtm(ca @ cb))))


def _save_samples(samples: np.ndarray, method: str, quick: bool) -> None:
    from PIL import Image

    imgs = ((np.clip(samples[:, 0], -1, 1) + 1) * 127.5).astype(np.uint8)  # (64, 8, 8)
    grid = imgs.reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(64, 64)
    name = f"nce_latent{'_quick' if quick else ''}_samples_{method}.png"
    Image.fromarray(grid).resize((256, 256), Image.NEAREST).save(_common.RESULTS / name)


if __name__ == "__main__":
    main()
