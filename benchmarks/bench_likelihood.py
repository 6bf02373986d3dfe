"""P1: exact log-likelihoods through the probability-flow ODE, scoreflow's default call against the peers.

Problem (shared/bench/PROBLEMS.md): 1000 points drawn from p_{t0} (seed below), truth = exact log p_{t0}(x) in
float64; vp: t0 = 1e-5, t1 = 1; edm: t0 = 0.002, t1 = 80; mixtures gmm2 and gmm64. Every runner uses the same
closed-form isotropic mixture score (float32) and the exact trace of its Jacobian. For each runner a tolerance
sweep (rtol = atol) gives mean / max |error| in nats with the exact prior p_{t1} (solver error only) and with the
standard prior N(0, prior_std^2 I), the NFE per example (max over the batch: what a vmapped adaptive solve pays;
and the mean), first-call (compile) and steady wall time.

Runners:
- `scoreflow:default`: `sf.log_likelihood(model, sde, x, prior=...)`, nothing else passed (the headline).
- `scoreflow:default-sweep`: the default error control with rtol = atol swept.
- `scoreflow:tsit5-t-w1`: the previous default (Tsit5, u = t, `StateDensityNorm(1)`).
- `diffrax`: plain diffrax as in sbgm: per-example `diffeqsolve(Tsit5, PIDController)` on (x, delta) with the
  default RMS error norm over the whole augmented state, trace of `jax.jacfwd`.
- `scipy`: score_sde's algorithm: `scipy.integrate.solve_ivp(RK45)` on the flattened batch (one ODE for the
  whole batch, shared step control) with a jitted drift.
- `torchdiffeq`: `odeint(method="dopri5")` on the batch, exact trace by `torch.func.vmap(jacfwd)` (gmm2 only).
- `h2h`: wall time of the default call against each peer at its cheapest sweep point with max error <= 1e-3,
  in one process with the calls interleaved.

Run: `python benchmarks/bench_likelihood.py [--quick] [--problems P,...] [--merge PART.json ...]` with the peers'
environment (see benchmarks/README.md).
"""

from __future__ import annotations

import json
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
TOLS_FULL = [1e-4, 5e-5, 3e-5, 2e-5, 1e-5, 5e-6, 3e-6, 2e-6, 1e-6]  # peers: the best point is picked after the fact
TOLS_SF = [1e-4, 3e-5, 1e-5, 3e-6, 1e-6]
TOLS_SCIPY = [1e-4, 1e-5, 3e-6, 1e-6]
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
    """`variant`: "default" (`sf.log_likelihood(model, sde, x, prior=...)`, nothing else passed; one row),
    "default-sweep" (only rtol = atol swept, every other setting the default), or
    "<solver>-<time variable>[-w<log-density weight of the error norm>]" (explicit settings, swept)."""
    import diffrax
    import jax

    import scoreflow as sf

    m, p, x, truth = problem(mix, proc, n)
    model = C.make_sf_model(m, proc)
    sde = C.sf_sde(proc)
    exact_prior = sf.marginal(C.sf_mixture(m), sde, sde.T)
    xj = jax.numpy.asarray(x)
    if variant.startswith("default"):
        kwargs, label = {}, "default" if variant == "default" else "default error control, rtol = atol swept"
        if variant == "default":
            tols = [None]
    else:
        solver_name, tv_name, *rest = variant.split("-")
        weight = float(rest[0][1:]) if rest else 1.0
        solver = {"tsit5": diffrax.Tsit5(), "dopri5": diffrax.Dopri5(), "dopri8": diffrax.Dopri8()}[solver_name]
        tv = {"t": sf.TimeVariable(), "logsnr": sf.LogSNRVariable(), "sigma": sf.SigmaVariable()}[tv_name]
        kwargs = {
            "solver": solver,
            "divergence": sf.ExactTrace(),
            "time_variable": tv,
            "error_norm": sf.StateDensityNorm(weight),
        }
        label = f"{solver_name}, u={tv_name}, norm weight {weight:g}"
    rows = []
    for tol in tols:
        tol_kw = {} if tol is None else {"rtol": tol, "atol": tol}

        def go(prior, tol_kw=tol_kw):
            return jax.block_until_ready(sf.log_likelihood(model, sde, xj, prior=prior, **tol_kw, **kwargs))

        res, first, steady, reps = C.timed(lambda: go(exact_prior), slow_s=INF)
        res_std = go(None)
        nfe = np.asarray(res.nfe)
        rows.append(
            {
                "framework": "scoreflow",
                "variant": label,
                "problem": f"{mix}-{proc}",
                "tol": "default" if tol is None else tol,
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


def diffrax_solve(m, p):
    """Plain diffrax, as sbgm does it: per-example Tsit5 + PIDController, default RMS norm, jacfwd trace.
    Returns a jitted `solve(x, rtol, atol) -> (x_T, delta, num_steps)`."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp

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

    return solve


def run_diffrax(mix, proc, n, tols):
    import jax
    import jax.numpy as jnp

    m, p, x, truth = problem(mix, proc, n)
    solve = diffrax_solve(m, p)
    rows = []
    xj = jnp.asarray(x)
    for tol in tols:
        tt = jnp.asarray(tol, jnp.float32)
        (z, delta, steps), first, steady, reps = C.timed(
            lambda tt=tt: jax.block_until_ready(solve(xj, tt, tt)), slow_s=INF
        )
        exact, std = prior_logps(m, p, np.asarray(z))
        delta = np.asarray(delta, np.float64)
        # Tsit5 is FSAL: 6 evaluations per step + 1 at the start. diffrax 0.7.2 with dt0=None starts at a step of
        # 0.01 without evaluating the vector field (counted with a host callback: 6 * num_steps + 1 exactly).
        nfe = 6 * np.asarray(steps) + 1
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


def scipy_solve(m, p, x):
    """score_sde's likelihood: one RK45 ODE for the flattened batch, jitted drift (exact trace here).
    Returns `solve(tol) -> scipy OdeResult`."""
    import jax
    import jax.numpy as jnp
    from scipy import integrate

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
    return lambda tol: integrate.solve_ivp(ode, (p.t0, p.t1), init, rtol=tol, atol=tol, method="RK45")


def run_scipy(mix, proc, n, tols):
    m, p, x, truth = problem(mix, proc, n)
    shape = x.shape
    solve = scipy_solve(m, p, x)
    rows = []
    for tol in tols:
        sol, first, steady, reps = C.timed(lambda tol=tol: solve(tol), slow_s=30.0)
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


def run_h2h(mix, proc, n, peer_tols: dict, rounds: int):
    """Wall time in one process, calls interleaved: scoreflow's default call against each peer at the cheapest
    sweep point that reached max |error| <= 1e-3 (`peer_tols`: runner -> tol). Median and min over `rounds`
    steady calls each (first, compiling call excluded)."""
    import jax
    import jax.numpy as jnp

    import scoreflow as sf

    m, p, x, _ = problem(mix, proc, n)
    model = C.make_sf_model(m, proc)
    sde = C.sf_sde(proc)
    prior = sf.marginal(C.sf_mixture(m), sde, sde.T)
    xj = jnp.asarray(x)
    calls = {"scoreflow default": lambda: jax.block_until_ready(sf.log_likelihood(model, sde, xj, prior=prior))}
    if "diffrax" in peer_tols:
        solve, tt = diffrax_solve(m, p), jnp.asarray(peer_tols["diffrax"], jnp.float32)
        calls["diffrax"] = lambda: jax.block_until_ready(solve(xj, tt, tt))
    if "scipy" in peer_tols:
        solve_s, tol_s = scipy_solve(m, p, x), peer_tols["scipy"]
        calls["scipy"] = lambda: solve_s(tol_s)
    for fn in calls.values():
        fn()
    times = {k: [] for k in calls}
    for _ in range(rounds):
        for k, fn in calls.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return [
        {
            "framework": "h2h",
            "runner": k,
            "problem": f"{mix}-{proc}",
            "tol": peer_tols.get(k, "default"),
            "median_s": float(np.median(v)),
            "min_s": float(np.min(v)),
            "rounds": rounds,
        }
        for k, v in times.items()
    ]


def worker(args: list[str]) -> None:
    runner, mix, proc, quick = args[0], args[1], args[2], args[3] == "quick"
    C.REPEATS = 1  # the sweep's times are one steady call; wall-time ratios come from the interleaved h2h job
    n = N_QUICK if quick else N_FULL
    tols = TOLS_QUICK if quick else TOLS_FULL
    if runner == "h2h":
        rows = run_h2h(mix, proc, n, json.loads(args[4]), int(args[5]))
    elif runner.startswith("scoreflow:"):
        variant = runner.split(":")[1]
        if not quick:
            tols = TOLS_PREVIOUS if variant == "tsit5-t-w1" else TOLS_SF
        rows = run_scoreflow(mix, proc, n, tols, variant)
    else:
        if runner == "torchdiffeq" and not quick:
            tols = TOLS_TORCH  # tens of seconds per solve on 2 cores
        if runner == "scipy" and not quick:
            tols = TOLS_SCIPY  # host-driven: 5-20 s per 64-d solve on 2 busy cores
        rows = {"diffrax": run_diffrax, "scipy": run_scipy, "torchdiffeq": run_torchdiffeq}[runner](mix, proc, n, tols)
    C.emit(rows)


PROBLEMS_FULL = [("gmm64", "vp"), ("gmm2", "vp"), ("gmm64", "edm"), ("gmm2", "edm")]
TOLS_PREVIOUS = [1e-5, 1e-6]  # the previous default (1e-5) and one tighter point
TOLS_TORCH = [1e-3, 1e-4, 1e-5]
TARGET = 1e-3
PEERS = ("diffrax", "scipy", "torchdiffeq")


def jobs(quick: bool, problems: list[tuple[str, str]] | None = None) -> list[list[str]]:
    """Per problem: scoreflow's default call (no settings passed), its default error control with rtol = atol
    swept, the previous default (Tsit5, u = t, norm weight 1) on three tolerances, and the peers. torchdiffeq runs
    on gmm2 only: on gmm64 one solve takes 25-85 s on 2 cores and its batch-shared RMS control never reached
    1e-3 nats there (results before this run: 5.0e-2 at rtol 1e-5)."""
    q = "quick" if quick else "full"
    problems = problems or ([("gmm2", "vp")] if quick else PROBLEMS_FULL)
    out = []
    for mix, proc in problems:
        variants = ["default"] if quick else ["default", "default-sweep", "tsit5-t-w1"]
        out += [[f"scoreflow:{v}", mix, proc, q] for v in variants]
        out += [[r, mix, proc, q] for r in PEERS if r != "torchdiffeq" or mix == "gmm2"]
    return out


def cheapest(rows: list[dict]) -> dict | None:
    """The sweep point with max |error| <= TARGET and the fewest NFE paid by the batch (max), then the fastest."""
    ok = [r for r in rows if r["max_err"] <= TARGET]
    return min(ok, key=lambda r: (r["nfe_max"], r["steady_s"])) if ok else None


def peer_tols(rows: list[dict], prob: str) -> dict:
    out = {}
    for peer in ("diffrax", "scipy"):
        c = cheapest([r for r in rows if r.get("problem") == prob and r["framework"] == peer])
        if c is not None:
            out[peer] = c["tol"]
    return out


def summary(rows: list[dict]) -> str:
    """Per problem: each runner's cheapest sweep point reaching max |error| <= 1e-3 nats, by NFE max (what the
    vmapped batch pays); the default call; the interleaved wall times; and the P1 verdicts."""
    out = ""
    sweep = [r for r in rows if r.get("framework") != "h2h"]
    h2h = [r for r in rows if r.get("framework") == "h2h"]
    for prob in sorted({r["problem"] for r in sweep}):
        sub = [r for r in sweep if r["problem"] == prob]
        out += f"\n**{prob}** (exact prior): the cheapest point with max |error| <= 1e-3 nats, by NFE max\n\n"
        out += "| runner | rtol=atol | NFE max | NFE mean | max err | mean err | steady s (one call) |\n"
        out += "|---|---|---|---|---|---|---|\n"
        best_peer = None
        for key in sorted({(r["framework"], r["variant"]) for r in sub}):
            c = cheapest([r for r in sub if (r["framework"], r["variant"]) == key])
            name = f"{key[0]} {key[1]}"
            if c is None:
                best = min((r for r in sub if (r["framework"], r["variant"]) == key), key=lambda r: r["max_err"])
                out += f"| {name} | not reached (best {best['max_err']:.2e} at {best['tol']:.0e}) | | | | | |\n"
                continue
            tol = c["tol"] if isinstance(c["tol"], str) else f"{c['tol']:.0e}"
            out += (
                f"| {name} | {tol} | **{c['nfe_max']}** | {c['nfe_mean']:.1f} | {c['max_err']:.2e} | "
                f"{c['mean_err']:.2e} | {c['steady_s']:.3f} |\n"
            )
            if key[0] in PEERS and (best_peer is None or c["nfe_max"] < best_peer["nfe_max"]):
                best_peer = c
        default = next((r for r in sub if r["framework"] == "scoreflow" and r["variant"] == "default"), None)
        if default is None:
            continue
        ok_err = default["max_err"] <= TARGET
        if best_peer is None:
            out += f"\nNFE: no peer reaches 1e-3 nats; the default reaches {default['max_err']:.2e}.\n"
        else:
            met = ok_err and default["nfe_max"] < best_peer["nfe_max"]
            out += (
                f"\nNFE target {'met' if met else 'MISSED'}: the default call pays {default['nfe_max']} NFE (max; "
                f"mean {default['nfe_mean']:.1f}) for max error {default['max_err']:.2e}; the fewest any peer needs "
                f"for max error <= 1e-3 is {best_peer['nfe_max']} ({best_peer['framework']} at rtol "
                f"{best_peer['tol']:.0e}, ratio {default['nfe_max'] / best_peer['nfe_max']:.2f}).\n"
            )
        hh = {r["runner"]: r for r in h2h if r["problem"] == prob}
        if "scoreflow default" in hh and len(hh) > 1:
            sfm = hh["scoreflow default"]["median_s"]
            peers = {k: v for k, v in hh.items() if k != "scoreflow default"}
            bk = min(peers, key=lambda k: peers[k]["median_s"])
            ratio = sfm / peers[bk]["median_s"]
            parts = ", ".join(f"{k} at rtol {v['tol']:.0e} {v['median_s']:.3f} s" for k, v in peers.items())
            out += (
                f"Wall target {'met' if ratio <= 0.7 else 'MISSED'} (<= 0.7x the best peer): interleaved in one "
                f"process, median of {hh['scoreflow default']['rounds']} steady calls: scoreflow default "
                f"{sfm:.3f} s; {parts}; ratio to the fastest ({bk}) {ratio:.2f}.\n"
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
                key=lambda r: r["nfe_max"],
            )
            ax.loglog(
                [r["nfe_max"] for r in rs],
                [r["max_err"] for r in rs],
                "*" if key[1] == "default" else "o-",
                ms=14 if key[1] == "default" else 4,
                label=f"{key[0]}: {key[1]}",
                lw=2 if key[0] == "scoreflow" else 1,
            )
        ax.axhline(1e-3, color="k", ls=":", lw=1)
        ax.set_title(f"P1 likelihood {prob} (exact prior)")
        ax.set_xlabel("NFE (max over the batch: what a vmapped solve pays)")
        ax.set_ylabel("max |error| (nats)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    ap = C.base_parser(__doc__)
    ap.add_argument("--problems", help="comma-separated subset, e.g. gmm64-vp,gmm64-edm; writes likelihood_part_<...>")
    ap.add_argument("--merge", nargs="*", help="merge part JSON files into likelihood.md/.json (no sweeps rerun)")
    ap.add_argument("--h2h-rounds", type=int, help="with --merge: rerun the wall-time (h2h) jobs with this many rounds")
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    q = "quick" if args.quick else "full"
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        if args.h2h_rounds:
            load = C.load_avg()
            for part in parts:
                part["rows"] = [r for r in part["rows"] if r.get("framework") != "h2h"]
                good = [r for r in part["rows"] if "error" not in r]
                for prob in sorted({r["problem"] for r in good}):
                    if tols := peer_tols(good, prob):
                        mix, proc = prob.split("-")
                        job = ["h2h", mix, proc, q, json.dumps(tols), str(args.h2h_rounds)]
                        part["rows"] += C.run_isolated(__file__, [job])
                part["h2h_rerun"] = {"rounds": args.h2h_rounds, "load_avg_before": load, "load_avg_after": C.load_avg()}
        payload = {
            **parts[0],
            "rows": [r for part in parts for r in part["rows"]],
            "parts": [{k: v for k, v in part.items() if k != "rows"} for part in parts],
            "wall_s": max(part["wall_s"] for part in parts),
            "load_avg_before": [part["load_avg_before"] for part in parts],
            "load_avg_after": [part["load_avg_after"] for part in parts],
        }
        return write(payload, "likelihood", q, note=f"merged from {len(parts)} parts run side by side")
    t = time.perf_counter()
    load = C.load_avg()
    probs = [tuple(p.split("-")) for p in args.problems.split(",")] if args.problems else None
    rows = C.run_isolated(__file__, jobs(args.quick, probs))
    good = [r for r in rows if "error" not in r]
    # wall time: the default call against the peers at their cheapest passing sweep point, in one process
    for prob in sorted({r["problem"] for r in good}):
        tols = peer_tols(good, prob)
        if tols:
            mix, proc = prob.split("-")
            rounds = "3" if args.quick else ("3" if mix == "gmm64" else "7")
            rows += C.run_isolated(__file__, [["h2h", mix, proc, q, json.dumps(tols), rounds]])
    name = "likelihood_quick" if args.quick else "likelihood"
    if args.problems:
        name = "likelihood_part_" + args.problems.replace(",", "_")
    payload = {"problem": "P1", "seed": SEED, "target_max_err": TARGET, **C.run_record(load, t, rows)}
    write(payload, name, q)


def write(payload: dict, name: str, q: str, note: str = "") -> None:
    good = [r for r in payload["rows"] if "error" not in r]
    cols = [
        ("framework", "runner", ""),
        ("variant", "variant", ""),
        ("problem", "problem", ""),
        ("tol", "rtol=atol", ".0e"),
        ("nfe_max", "NFE max", "d"),
        ("nfe_mean", "NFE mean", ".1f"),
        ("mean_err", "mean err", ".2e"),
        ("max_err", "max err", ".2e"),
        ("mean_err_stdprior", "mean err (std prior)", ".2e"),
        ("max_err_stdprior", "max err (std prior)", ".2e"),
        ("first_s", "first call s", ".2f"),
        ("steady_s", "steady s", ".3f"),
    ]
    sweep = [r for r in good if r.get("framework") != "h2h"]
    title = f"P1 likelihood ({q} run{'; ' + note if note else ''})"
    table = C.report(title, {**payload, "rows": sweep}, cols, summary(good))
    C.write_results(name, payload, table)
    plot(sweep, C.RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
