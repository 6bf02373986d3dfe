"""Multi-stage vs single-stage NCE priors (Xiao & Han 2022) against closed forms, and NCE vs MCMC latent priors.

Part `kl`: p_0 = N(0, I_2), target q = N(mu, I_2), mu = |mu| (1, 1)/sqrt 2, from a pool of samples. The prior
p_K = p_0 prod_k r_k is fitted by `scoreflow.fit_multistage`; the residual is computed exactly as

    KL(q || p_K) = E_q[log q - log p_0 - sum_k log r_k] + log Z_K,   Z_K = int p_0 prod_k r_k dz,

both terms by midpoint-rule quadrature on a grid of spacing 0.1 over the box [min(0, mu) - 10, max(0, mu) + 10]^2
(exact q density as the E_q weights). The mass of p_K on the box's outer 1-unit rim is reported (it bounds what the
box leaves out), and log Z_K is cross-checked by importance sampling from the mixture (p_0 + q)/2 (+- s.e.). With
linear ratios p_K is Gaussian, and the closed-form Gaussian KL is reported next to the quadrature.

    |mu| = 8:  linear log-ratios (the true ratio's family), exact Gaussian sampling of p_{k-1}; K = 1 vs K = 8
    |mu| = 12: MLP log-ratios (2 x 64 SiLU), p_{k-1} sampled by MALA chains started at the previous stage's samples;
               K = 8 vs single stage with 8x the steps

Every stage: Adam, fixed budget of `--steps` minibatch steps of 500 + 500 from pools of `--pool` samples.
Medians over 5 seeds.

Part `latent`: see `bench_nce_latent.py`.

    python benchmarks/bench_nce.py              # all rows (~25 min on 2 loaded cores)
    python benchmarks/bench_nce.py --quick      # 1 seed, 100 steps per stage (smoke run)

Writes benchmarks/results/nce.json and nce.md (nce_quick.* with --quick).
"""

import argparse
import json
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


GRID_H = 0.1


def grid(mu: np.ndarray):
    lo = float(min(0.0, mu.min())) - 10.0
    hi = float(max(0.0, mu.max())) + 10.0
    g = np.arange(lo, hi, GRID_H) + GRID_H / 2
    zz = np.stack(np.meshgrid(g, g, indexing="ij"), -1)
    rim = (zz[..., 0] < lo + 1) | (zz[..., 0] > hi - 1) | (zz[..., 1] < lo + 1) | (zz[..., 1] > hi - 1)
    return zz.reshape(-1, 2), rim.reshape(-1)


@eqx.filter_jit
def _log_p_tilde(prior, z):
    return jax.vmap(prior.unnormalised_log_prob)(z)


def residual_kl(prior: sf.MultiStagePrior, mu: np.ndarray, key) -> dict:
    zs, rim = grid(mu)
    lp = np.concatenate(
        [np.asarray(_log_p_tilde(prior, jnp.asarray(c, jnp.float32)), np.float64) for c in np.array_split(zs, 16)]
    )
    m = lp.max()
    mass = np.exp(lp - m)
    log_z = m + np.log(mass.sum() * GRID_H**2)
    rim_mass = float(mass[rim].sum() / mass.sum())
    log_q = -0.5 * np.sum((zs - mu) ** 2, 1) - np.log(2 * np.pi)
    w = np.exp(log_q) * GRID_H**2
    kl = float(np.sum(w * (log_q - lp)) / np.sum(w) + log_z)
    # importance sampling of Z_K from the defensive mixture (p_0 + q)/2
    n = 200_000
    k1, k2, k3 = jax.random.split(key, 3)
    pick = np.asarray(jax.random.bernoulli(k1, 0.5, (n, 1)))
    x = np.asarray(jax.random.normal(k2, (n, 2)), np.float64) + np.where(pick, mu[None], 0.0)
    log_mix = np.logaddexp(-0.5 * np.sum(x**2, 1), -0.5 * np.sum((x - mu) ** 2, 1)) - np.log(2) - np.log(2 * np.pi)
    lw = np.asarray(_log_p_tilde(prior, jnp.asarray(x, jnp.float32)), np.float64) - log_mix
    mw = lw.max()
    r = np.exp(lw - mw)
    log_z_is = float(mw + np.log(r.mean()))
    se_is = float(r.std(ddof=1) / np.sqrt(n) / r.mean())
    out = {"kl": kl, "log_z": float(log_z), "log_z_is": log_z_is, "log_z_is_se": se_is, "rim_mass": rim_mass}
    if all(isinstance(r, sf.LinearLogRatio) for r in prior.ratios):
        mean, cov, _ = prior.gaussian()
        mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
        prec = np.linalg.inv(cov)
        d = mean - mu
        out["kl_closed_form"] = float(0.5 * (np.trace(prec) + d @ prec @ d - 2 + np.linalg.slogdet(cov)[1]))
    return out


def run_one(case: dict, seed: int, a) -> dict:
    mu = np.full(2, case["mu"] / np.sqrt(2))
    key = jax.random.key(seed)
    k_data, k_fit, k_kl = jax.random.split(key, 3)
    target = jnp.asarray(mu, jnp.float32)[None] + jax.random.normal(k_data, (a.pool, 2), jnp.float32)
    if case["ratio"] == "linear":
        make = lambda k: sf.LinearLogRatio(2, dtype=jnp.float32)
        sampling = sf.ExactGaussianSampling()
    else:
        make = lambda k: sf.MLPLogRatio(2, 64, 2, key=k)
        sampling = sf.ChainSampling(sf.MALA(step_size=a.mala_step), num_steps=a.mala_steps)
    steps = case["step_factor"] * a.steps
    t = time.perf_counter()
    prior, infos = sf.fit_multistage(
        sf.MultiStagePrior(2),
        make,
        target,
        num_stages=case["K"],
        sampling=sampling,
        optimiser=optax.adam(case["lr"]),
        num_steps=steps,
        batch_size=500,
        key=k_fit,
    )
    jax.block_until_ready(prior)
    fit_s = time.perf_counter() - t
    row = {
        "case": case["name"],
        "mu": case["mu"],
        "ratio": case["ratio"],
        "K": case["K"],
        "steps_per_stage": steps,
        "seed": seed,
        "fit_s": fit_s,
        "last_loss": [float(jnp.mean(i.losses[-100:])) for i in infos],
        "acceptance": [float(i.acceptance_rate) for i in infos],
        "reference_mean": [np.asarray(jnp.mean(i.reference, 0)).round(3).tolist() for i in infos],
    }
    row |= residual_kl(prior, mu, k_kl)
    return row


CASES = [
    {"name": "mu8-K1", "mu": 8.0, "ratio": "linear", "K": 1, "step_factor": 1, "lr": 1e-2, "target": ("gt", 15.0)},
    {"name": "mu8-K1-8x", "mu": 8.0, "ratio": "linear", "K": 1, "step_factor": 8, "lr": 1e-2, "target": None},
    {"name": "mu8-K8", "mu": 8.0, "ratio": "linear", "K": 8, "step_factor": 1, "lr": 1e-2, "target": ("lt", 0.1)},
    {"name": "mu12-K8", "mu": 12.0, "ratio": "mlp", "K": 8, "step_factor": 1, "lr": 1e-3, "target": ("lt", 1.0)},
    {"name": "mu12-K1-8x", "mu": 12.0, "ratio": "mlp", "K": 1, "step_factor": 8, "lr": 1e-3, "target": ("gt", 20.0)},
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=1000, help="Adam steps per stage (x8 for the 8x rows)")
    p.add_argument("--pool", type=int, default=10_000, help="target samples, and prior samples per stage")
    p.add_argument("--mala-step", type=float, default=1.0, help="MALA step size s (drift s^2/2)")
    p.add_argument("--mala-steps", type=int, default=100, help="MALA steps per stage")
    p.add_argument("--cases", default=",".join(c["name"] for c in CASES))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rewrite", action="store_true", help="rebuild the markdown from the committed JSON only")
    a = p.parse_args()
    if a.rewrite:
        name = "nce_quick" if a.quick else "nce"
        write(json.loads((_common.RESULTS / f"{name}.json").read_text()), a.quick)
        return
    if a.quick:
        a.seeds, a.steps = 1, 100
    names = [c.strip() for c in a.cases.split(",") if c.strip()]
    unknown = set(names) - {c["name"] for c in CASES}
    if unknown:
        p.error(f"--cases: unknown {sorted(unknown)}; expected names from {[c['name'] for c in CASES]}")
    load_before = _common.load_avg()
    t0 = time.perf_counter()
    rows, summary = [], []
    for case in [c for c in CASES if c["name"] in names]:
        kls = []
        for seed in range(a.seeds):
            row = run_one(case, seed, a)
            rows.append(row)
            kls.append(row["kl"])
            print(_common.summarise({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
        med = float(np.median(kls))
        met = None
        if case["target"] is not None:
            op, thr = case["target"]
            met = bool(med > thr) if op == "gt" else bool(med < thr)
        summary.append(
            {
                "case": case["name"],
                "mu": case["mu"],
                "ratio": case["ratio"],
                "K": case["K"],
                "steps_per_stage": case["step_factor"] * a.steps,
                "median_kl": med,
                "kl_range": f"{min(kls):.4g} .. {max(kls):.4g}",
                "true_kl_q_p0": case["mu"] ** 2 / 2,
                "target": ""
                if case["target"] is None
                else f"{'>' if case['target'][0] == 'gt' else '<'} {case['target'][1]:g}",
                "met": "" if met is None else ("met" if met else "MISSED"),
                "median_fit_s": float(np.median([r["fit_s"] for r in rows if r["case"] == case["name"]])),
            }
        )
    payload = _common.run_record(load_before, t0, rows)
    payload["summary"] = summary
    payload["config"] = vars(a) | {"grid_spacing": GRID_H, "batch": 500}
    write(payload, a.quick)


def write(payload: dict, quick: bool) -> None:
    """The markdown table and the JSON of a run (`--rewrite` rebuilds the table from the JSON alone)."""
    rows, summary = payload["rows"], payload["summary"]
    cols = [
        ("case", "case", ""),
        ("mu", "abs(mu)", "g"),
        ("ratio", "log-ratio", ""),
        ("K", "K", "d"),
        ("steps_per_stage", "steps/stage", "d"),
        ("true_kl_q_p0", "KL(q ‖ p_0)", "g"),
        ("median_kl", "median KL(q ‖ p_K)", ".4g"),
        ("kl_range", "range (5 seeds)", ""),
        ("target", "target", ""),
        ("met", "", ""),
        ("median_fit_s", "fit s (median)", ".1f"),
    ]
    detail = [
        ("case", "case", ""),
        ("seed", "seed", "d"),
        ("kl", "KL quadrature", ".4g"),
        ("kl_closed_form", "KL closed form", ".4g"),
        ("log_z", "log Z_K quadrature", ".4f"),
        ("log_z_is", "log Z_K IS", ".4f"),
        ("log_z_is_se", "IS s.e.", ".2g"),
        ("rim_mass", "p_K mass on rim", ".1e"),
        ("fit_s", "fit s", ".1f"),
    ]
    text = _common.report(
        "Multi-stage vs single-stage NCE: residual KL(q || p_0 prod r_k), exact by quadrature",
        {**payload, "rows": summary},
        cols,
        "\n\nPer seed (quadrature vs closed form where p_K is Gaussian; log Z_K by quadrature vs importance sampling):"
        "\n\n" + _common.md_table(rows, detail) + f"\n\nReproduce: `python benchmarks/bench_nce.py`"
        f"{' --quick' if quick else ''} (config: {payload['config']}).\n",
    )
    _common.write_results("nce_quick" if quick else "nce", payload, text)


if __name__ == "__main__":
    main()
