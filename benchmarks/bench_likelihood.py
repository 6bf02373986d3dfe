"""P1: exact log-likelihoods through the probability-flow ODE, scoreflow against the peers.

Problem (shared/bench/PROBLEMS.md): 1000 points drawn from p_{t0} (seed below), truth = exact log p_{t0}(x) in
float64; vp: t0 = 1e-5, t1 = 1; edm: t0 = 0.002, t1 = 80. Every runner uses the same closed-form isotropic
mixture score (float32) and the exact trace of its Jacobian. For each runner a tolerance sweep (rtol = atol)
gives mean / max |error| in nats with the exact prior p_{t1} (solver error only) and with the standard prior
N(0, prior_std^2 I), the number of score evaluations (NFE), first-call (compile) and steady wall time.

Runners:
- `scoreflow`: `sf.log_likelihood(..., solver, divergence=sf.ExactTrace(), prior=..., time_variable=...)`.
- `diffrax`: plain diffrax as in sbgm: per-example `diffeqsolve(Tsit5, PIDController)` on (x, delta) with the
  default RMS error norm over the whole augmented state, trace of `jax.jacfwd`.
- `scipy`: score_sde's algorithm: `scipy.integrate.solve_ivp(RK45)` on the flattened batch (one ODE for the
  whole batch, shared step control) with a jitted drift.
- `torchdiffeq`: `odeint(method="dopri5")` on the batch, exact trace by `torch.func.vmap(jacfwd)`.

Run: `python benchmarks/bench_likelihood.py [--quick]` with the peers' environment (see benchmarks/README.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as C  # noqa: E402


C.set_threads()

import numpy as np  # noqa: E402


SEED = 0
N_FULL, N_QUICK = 1000, 100
INF = float("inf")  # jitted runners: always separate the compiling first call from a steady one
TOLS_FULL = [1e-3, 1e-4, 1e-5, 1e-6]
TOLS_QUICK = [1e-4]


def problem(mix: str, proc: str, n: int):
    m = C.MIXTURES[mix]()
    p = C.PROCESSES[proc]
    x = C.sample_marginal_np(m, p, p.t0, n, SEED).astype(np.float32)
    a0, s0 = p.alpha_sigma(p.t0)
    truth = C.log_prob_np(m, float(a0), float(s0), x)
    return m, p, x, truth


def prior_logps(m, p, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exact log p_{t1}(z), standard-prior log N(z; 0, prior_std^2 I)), float64."""
    z = np.asarray(z, np.float64)
    a1, s1 = p.alpha_sigma(p.t1)
    exact = C.log_prob_np(m, float(a1), float(s1), z)
    s = p.prior_std
    std = -0.5 * np.sum((z / s) ** 2, axis=1) - z.shape[1] * (np.log(s) + 0.5 * np.log(2 * np.pi))
    return exact, std


def errors(est: np.ndarray, truth: np.ndarray) -> dict:
    e = np.abs(np.asarray(est, np.float64) - truth)
    return {"mean_err": float(np.mean(e)), "max_err": float(np.max(e))}


# ---------------------------------------------------------------------------------------------------------------


def run_scoreflow(mix, proc, n, tols, variant):
    import diffrax
    import jax

    import scoreflow as sf

    m, p, x, truth = problem(mix, proc, n)
    model = C.make_sf_model(m, proc)
    sde = C.sf_sde(proc)
    # variant = "<solver>-<time variable>[-w<log-density weight of the error norm>]"
    solver_name, tv_name, *rest = variant.split("-")
    weight = float(rest[0][1:]) if rest else 1.0
    solver = {"tsit5": diffrax.Tsit5(), "dopri5": diffrax.Dopri5(), "dopri8": diffrax.Dopri8()}[solver_name]
    tv = {"t": sf.TimeVariable(), "logsnr": sf.LogSNRVariable(), "sigma": sf.SigmaVariable()}[tv_name]
    exact_prior = sf.marginal(C.sf_mixture(m), sde, sde.T)
    xj = jax.numpy.asarray(x)
    rows = []
    for tol in tols:

        def go(prior, tol=tol):
            res = sf.log_likelihood(
                model,
                sde,
                xj,
                solver=solver,
                rtol=tol,
                atol=tol,
                divergence=sf.ExactTrace(),
                prior=prior,
                time_variable=tv,
                error_norm=sf.StateDensityNorm(weight),
            )
            return jax.block_until_ready(res)

        res, first, steady, reps = C.timed(lambda: go(exact_prior), slow_s=INF)
        res_std = go(None)
        nfe = np.asarray(res.nfe)
        rows.append(
            {
                "framework": "scoreflow",
                "variant": f"{solver_name}, u={tv_name}" + (f", norm weight {weight:g}" if rest else ""),
                "problem": f"{mix}-{proc}",
                "tol": tol,
                "n": n,
                "nfe_mean": float(nfe.mean()),
                "nfe_max": int(nfe.max()),
                **errors(res.log_prob, truth),
                **{k + "_stdprior": v for k, v in errors(res_std.log_prob, truth).items()},
                "first_s": first,
                "steady_s": steady,
                "repeats": reps,
            }
        )
    return rows


def run_diffrax(mix, proc, n, tols):
    """Plain diffrax, as sbgm does it: per-example Tsit5 + PIDController, default RMS norm, jacfwd trace."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    m, p, x, truth = problem(mix, proc, n)
    score = C.jax_iso_score(m)
    alpha_sigma, f_g2 = C.jax_process(p)

    def vf(t, state, args):
        y, _ = state
        a, s = alpha_sigma(t)
        f, g2 = f_g2(t)
        fn = lambda z: f * z - 0.5 * g2 * score(a, s, z)
        return fn(y), jnp.trace(jax.jacfwd(fn)(y))

    @eqx.filter_jit
    def solve(x, rtol, atol):
        def one(xi):
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(vf),
                diffrax.Tsit5(),
                p.t0,
                p.t1,
                None,
                (xi, jnp.zeros((), xi.dtype)),
                stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                max_steps=16384,
            )
            return sol.ys[0][-1], sol.ys[1][-1], sol.stats["num_steps"]

        return jax.vmap(one)(x)

    rows = []
    xj = jnp.asarray(x)
    for tol in tols:
        tt = jnp.asarray(tol, jnp.float32)
        (z, delta, steps), first, steady, reps = C.timed(
            lambda tt=tt: jax.block_until_ready(solve(xj, tt, tt)), slow_s=INF
        )
        exact, std = prior_logps(m, p, np.asarray(z))
        delta = np.asarray(delta, np.float64)
        nfe = 6 * np.asarray(steps) + 1  # Tsit5 is FSAL: 6 per step + 1 at init (diffrax 0.7.2 picks dt0 without calls)
        rows.append(
            {
                "framework": "diffrax",
                "variant": "Tsit5 (sbgm-style)",
                "problem": f"{mix}-{proc}",
                "tol": tol,
                "n": n,
                "nfe_mean": float(nfe.mean()),
                "nfe_max": int(nfe.max()),
                **errors(exact + delta, truth),
                **{k + "_stdprior": v for k, v in errors(std + delta, truth).items()},
                "first_s": first,
                "steady_s": steady,
                "repeats": reps,
            }
        )
    return rows


def run_scipy(mix, proc, n, tols):
    """score_sde's likelihood: one RK45 ODE for the flattened batch, jitted drift (exact trace here)."""
    import jax
    import jax.numpy as jnp
    from scipy import integrate

    m, p, x, truth = problem(mix, proc, n)
    score = C.jax_iso_score(m)
    alpha_sigma, f_g2 = C.jax_process(p)
    shape = x.shape

    @jax.jit
    def drift(t, y):
        a, s = alpha_sigma(t)
        f, g2 = f_g2(t)

        def one(yi):
            fn = lambda z: f * z - 0.5 * g2 * score(a, s, z)
            return fn(yi), jnp.trace(jax.jacfwd(fn)(yi))

        return jax.vmap(one)(y)

    def ode(t, flat):
        y = jnp.asarray(flat[: np.prod(shape)].reshape(shape), jnp.float32)
        dy, ddelta = drift(jnp.asarray(t, jnp.float32), y)
        return np.concatenate([np.asarray(dy).reshape(-1), np.asarray(ddelta)]).astype(np.float64)

    init = np.concatenate([x.reshape(-1), np.zeros(shape[0])]).astype(np.float64)
    rows = []
    for tol in tols:
        sol, first, steady, reps = C.timed(
            lambda tol=tol: integrate.solve_ivp(ode, (p.t0, p.t1), init, rtol=tol, atol=tol, method="RK45"),
            slow_s=30.0,
        )
        end = sol.y[:, -1]
        z, delta = end[: np.prod(shape)].reshape(shape), end[np.prod(shape) :]
        exact, std = prior_logps(m, p, z)
        rows.append(
            {
                "framework": "scipy",
                "variant": "RK45, flattened batch (score_sde)",
                "problem": f"{mix}-{proc}",
                "tol": tol,
                "n": n,
                "nfe_mean": float(sol.nfev),
                "nfe_max": int(sol.nfev),
                **errors(exact + delta, truth),
                **{k + "_stdprior": v for k, v in errors(std + delta, truth).items()},
                "first_s": first,
                "steady_s": steady,
                "repeats": reps,
            }
        )
    return rows


def run_torchdiffeq(mix, proc, n, tols):
    import torch
    from torch.func import jacfwd, vmap
    from torchdiffeq import odeint

    C.torch_threads()
    m, p, x, truth = problem(mix, proc, n)
    score = C.torch_iso_score(m)
    nfe = [0]

    def coeffs(t):
        t = float(t)
        a, s = p.alpha_sigma(t)
        f, g2 = p.f_g2(t)
        return float(a), float(s), float(f), float(g2)

    def func(t, state):
        nfe[0] += 1
        y, _ = state
        a, s, f, g2 = coeffs(t)
        one = lambda z: f * z - 0.5 * g2 * score(a, s, z[None])[0]
        with torch.no_grad():
            dy = f * y - 0.5 * g2 * score(a, s, y)
            jac = vmap(jacfwd(one))(y)
        return dy, torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1)

    xt = torch.tensor(x)
    ts = torch.tensor([p.t0, p.t1], dtype=torch.float32)
    rows = []
    for tol in tols:

        def go(tol=tol):
            nfe[0] = 0
            ys = odeint(func, (xt, torch.zeros(n)), ts, rtol=tol, atol=tol, method="dopri5")
            return ys, nfe[0]

        (ys, count), first, steady, reps = C.timed(go)
        z, delta = ys[0][-1].numpy(), ys[1][-1].numpy().astype(np.float64)
        exact, std = prior_logps(m, p, z)
        rows.append(
            {
                "framework": "torchdiffeq",
                "variant": "dopri5, batch",
                "problem": f"{mix}-{proc}",
                "tol": tol,
                "n": n,
                "nfe_mean": float(count),
                "nfe_max": int(count),
                **errors(exact + delta, truth),
                **{k + "_stdprior": v for k, v in errors(std + delta, truth).items()},
                "first_s": first,
                "steady_s": steady,
                "repeats": reps,
            }
        )
    return rows


def worker(args: list[str]) -> None:
    runner, mix, proc, quick = args[0], args[1], args[2], args[3] == "quick"
    if quick:
        C.REPEATS = 1
    n = N_QUICK if quick else N_FULL
    tols = TOLS_QUICK if quick else TOLS_FULL
    if runner.startswith("scoreflow:dopri8") and not quick:
        tols = tols[:3]  # in float32 Dopri8 at 1e-6 needs ~850 NFE and ~45 s per solve for no better error
    if runner == "torchdiffeq" and not quick:
        tols = tols[:3]  # tens of seconds per solve on 2 cores; 1e-6 adds minutes and no information
    if runner.startswith("scoreflow:"):
        rows = run_scoreflow(mix, proc, n, tols, runner.split(":")[1])
    else:
        rows = {"diffrax": run_diffrax, "scipy": run_scipy, "torchdiffeq": run_torchdiffeq}[runner](mix, proc, n, tols)
    C.emit(rows)


SF_VARIANTS_FULL = ["tsit5-t", "tsit5-t-w0.1", "tsit5-sigma", "dopri8-t"]
SF_VARIANTS_ALL = ["tsit5-t", "tsit5-logsnr", "tsit5-sigma", "dopri8-t", "dopri8-logsnr"]
SF_VARIANTS_QUICK = ["tsit5-t"]
SF_VARIANTS_EDM = ["tsit5-t", "tsit5-logsnr"]


def jobs(quick: bool, full_grid: bool = False) -> list[list[str]]:
    """quick: gmm2-vp, scoreflow Tsit5 and the three peers. Default: the issue's problems (gmm64-vp, gmm2-vp)
    with scoreflow Tsit5 in t and in sigma, Dopri8 in t, and the three peers. `--all` adds the log-SNR
    variable, Dopri8 in log-SNR and the edm process (scoreflow and plain diffrax): about an hour on 2 cores."""
    q = "quick" if quick else "full"
    if quick:
        problems, variants = [("gmm2", "vp")], {"vp": SF_VARIANTS_QUICK}
    elif full_grid:
        problems = [("gmm64", "vp"), ("gmm2", "vp"), ("gmm64", "edm"), ("gmm2", "edm")]
        variants = {"vp": SF_VARIANTS_ALL, "edm": SF_VARIANTS_EDM}
    else:
        problems, variants = [("gmm64", "vp"), ("gmm2", "vp")], {"vp": SF_VARIANTS_FULL}
    out = []
    for mix, proc in problems:
        for v in variants[proc]:
            if mix == "gmm2" and not full_grid and v != "tsit5-t":
                continue
            out.append([f"scoreflow:{v}", mix, proc, q])
        # the batch peers are slow; the peer figures are for vp, so edm gets plain diffrax only
        peers = ["diffrax", "scipy", "torchdiffeq"] if proc == "vp" else ["diffrax"]
        for r in peers:
            out.append([r, mix, proc, q])
    return out


def summary(rows: list[dict]) -> str:
    """Per problem: each runner's best max error (exact prior) and the NFE / time it took; and, at the 1e-3 nats
    target, the cheapest sweep point of each runner that reaches it."""
    out = ""
    for prob in sorted({r["problem"] for r in rows if "problem" in r}):
        sub = [r for r in rows if r.get("problem") == prob]
        out += (
            f"\n**{prob}** (exact prior): best max |error| per runner, and the cheapest point with max |error| "
            "<= 1e-3\n\n"
        )
        out += "| runner | best max err | at tol | NFE (mean) | steady s | cheapest <= 1e-3: tol | NFE | steady s |\n"
        out += "|---|---|---|---|---|---|---|---|\n"
        for key in sorted({(r["framework"], r["variant"]) for r in sub}):
            rs = [r for r in sub if (r["framework"], r["variant"]) == key]
            best = min(rs, key=lambda r: (r["max_err"], r["nfe_mean"]))
            ok = [r for r in rs if r["max_err"] <= 1e-3]
            cheap = min(ok, key=lambda r: r["steady_s"]) if ok else None
            c = (
                f"{cheap['tol']:.0e} | {cheap['nfe_mean']:.0f} | {cheap['steady_s']:.3f}"
                if cheap
                else "not reached | | "
            )
            out += (
                f"| {key[0]} {key[1]} | {best['max_err']:.2e} | {best['tol']:.0e} | {best['nfe_mean']:.0f} | "
                f"{best['steady_s']:.3f} | {c} |\n"
            )
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = sorted({r["problem"] for r in rows if "problem" in r})
    fig, axes = plt.subplots(1, len(probs), figsize=(4.5 * len(probs), 4), squeeze=False)
    for ax, prob in zip(axes[0], probs, strict=False):
        sub = [r for r in rows if r.get("problem") == prob]
        for key in sorted({(r["framework"], r["variant"]) for r in sub}):
            rs = sorted(
                [r for r in sub if (r["framework"], r["variant"]) == key],
                key=lambda r: r["nfe_mean"],
            )
            ax.loglog(
                [r["nfe_mean"] for r in rs],
                [r["max_err"] for r in rs],
                "o-",
                label=f"{key[0]}: {key[1]}",
                lw=2 if key[0] == "scoreflow" else 1,
            )
        ax.axhline(1e-3, color="k", ls=":", lw=1)
        ax.set_title(f"P1 likelihood {prob} (exact prior)")
        ax.set_xlabel("NFE (mean per example)")
        ax.set_ylabel("max |error| (nats)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    ap = C.base_parser(__doc__)
    ap.add_argument("--all", action="store_true", help="also log-SNR variants and the edm process (slow)")
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    t = time.perf_counter()
    load = C.load_avg()
    rows = C.run_isolated(__file__, jobs(args.quick, args.all))
    name = "likelihood_quick" if args.quick else "likelihood_all" if args.all else "likelihood"
    payload = {
        "problem": "P1",
        "seed": SEED,
        **C.run_record(load, t, rows),
    }
    good = [r for r in rows if "error" not in r]
    cols = [
        ("framework", "runner", ""),
        ("variant", "variant", ""),
        ("problem", "problem", ""),
        ("tol", "rtol=atol", ".0e"),
        ("nfe_mean", "NFE mean", ".1f"),
        ("nfe_max", "NFE max", "d"),
        ("mean_err", "mean err", ".2e"),
        ("max_err", "max err", ".2e"),
        ("mean_err_stdprior", "mean err (std prior)", ".2e"),
        ("max_err_stdprior", "max err (std prior)", ".2e"),
        ("first_s", "first call s", ".2f"),
        ("steady_s", "steady s", ".3f"),
    ]
    table = C.report(f"P1 likelihood ({'quick' if args.quick else 'full'} run)", payload, cols, summary(good))
    C.write_results(name, payload, table)
    plot(good, C.RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
