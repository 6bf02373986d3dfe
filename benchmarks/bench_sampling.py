"""P2: sampling quality against NFE, scoreflow's samplers against the peers.

Problem (shared/bench/PROBLEMS.md): 10,000 samples from each sampler driven by the exact (closed-form) score of
`gmm2` / `gmm64`; metric = sliced Wasserstein-2 against 10,000 fresh exact samples of p_0 (256 random unit
projections, the same projections for every sampler); the noise floor is the same metric between two
independent exact sample sets. NFE budgets 10, 20, 50, 100 (a Heun step costs 2 NFE, the last Euler step 1).

Runners:
- `scoreflow` (vp and edm): DPMSolverPP (2M, log-SNR-uniform and Karras grids), EDMHeun, DDIM,
  ProbabilityFlow with fixed Heun steps on the Karras grid, PredictorCorrector (reverse diffusion, with and
  without Langevin), and the adaptive ProbabilityFlow(Tsit5) for reference.
- `diffusers` DPMSolverMultistepScheduler (DPM-Solver++ 2M, linear betas 1e-4..0.02 over 1000 steps = vp),
  fed the exact eps of the discrete chain's marginals.
- `kdiffusion` sample_dpmpp_2m and sample_heun on Karras sigmas (rho 7, sigma in [0.002, 80] = edm), fed the
  exact denoiser.
- `diffusionjax` DDIMVP (eta 0), DDPM and EDMHeun with their own time grids (failures are results).

Run: `python benchmarks/bench_sampling.py [--quick]` with the peers' environment (see benchmarks/README.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as C  # noqa: E402


C.set_threads()

import numpy as np  # noqa: E402


N_FULL, N_QUICK = 10_000, 2_000
BUDGETS_FULL = [10, 20, 50, 100]
BUDGETS_QUICK = [10]
REF_SEED, FLOOR_SEED, PROJ_SEED = 1, 2, 0
FLOOR_DRAWS = 10
INF = float("inf")  # jitted runners: always separate the compiling first call from a steady one
DENOISE_FROM = {
    "vp": 0.05,
    "edm": 0.174,
}  # t with sigma/alpha = 0.174 (chosen on gmm2/gmm64 at 10 NFE)


def reference(mix: str, n: int) -> np.ndarray:
    return C.sample_np(C.MIXTURES[mix](), n, REF_SEED)


def metric(mix: str, samples: np.ndarray) -> float:
    return C.sliced_w2(np.asarray(samples), reference(mix, samples.shape[0]), 256, PROJ_SEED)


def row(framework, variant, mix, proc, budget, nfe, samples, first, steady, **extra):
    samples = np.asarray(samples)
    return {
        "framework": framework,
        "variant": variant,
        "problem": mix,
        "process": proc,
        "budget": budget,
        "nfe": float(nfe),
        "sw2": metric(mix, samples),
        "finite": bool(np.all(np.isfinite(samples))),
        "first_s": first,
        "steady_s": steady,
        **extra,
    }


# ---------------------------------------------------------------------------------------------------------------


def sf_samplers(proc: str, budget: int):
    """(name, sampler) pairs that spend `budget` NFE (or budget - 1 for EDM's final Euler step)."""
    import diffrax

    import scoreflow as sf

    half = max(budget // 2, 1)
    out = [
        ("DPMSolverPP 2M, log-SNR grid", sf.DPMSolverPP(steps=budget, order=2)),
        (
            "DPMSolverPP 2M, Karras grid",
            sf.DPMSolverPP(steps=budget, order=2, discretisation=sf.KarrasTime()),
        ),
        (
            "DPMSolverPP 2M, uniform t",
            sf.DPMSolverPP(steps=budget, order=2, discretisation=sf.UniformTime()),
        ),
        ("EDMHeun (Karras rho 7)", sf.EDMHeun(steps=half)),
        ("DDIM eta=0, uniform t", sf.DDIM(steps=budget)),
        (
            "ProbabilityFlow Heun, Karras grid",
            sf.ProbabilityFlow(solver=diffrax.Heun(), steps=half, discretisation=sf.KarrasTime()),
        ),
        (
            "PC reverse-diffusion, no corrector",
            sf.PredictorCorrector(sf.ReverseDiffusion(), sf.NoCorrector(), steps=budget),
        ),
        (
            "PC reverse-diffusion + Langevin",
            sf.PredictorCorrector(sf.ReverseDiffusion(), sf.Langevin(), steps=half),
        ),
    ]
    return out


QUICK_SF = ("DPMSolverPP 2M, log-SNR grid", "DPMSolverPP 2M, uniform t", "EDMHeun (Karras rho 7)")


def run_scoreflow(mix, proc, n, budgets):
    import diffrax
    import equinox as eqx
    import jax

    import scoreflow as sf

    m = C.MIXTURES[mix]()
    model = C.make_sf_model(m, proc)
    sde = C.sf_sde(proc)
    key = jax.random.key(3)

    @eqx.filter_jit
    def draw(sampler):
        out = sf.sample(model, sde, key, (n, m.dim), sampler=sampler)
        return out.samples, out.nfe

    rows = []
    for budget in budgets:
        for name, sampler in sf_samplers(proc, budget):
            if n == N_QUICK and name not in QUICK_SF:
                continue
            try:
                (xs, nfe), first, steady, _ = C.timed(
                    lambda: jax.block_until_ready(draw(sampler)), repeats=1, slow_s=INF
                )
                rows.append(
                    row("scoreflow", name, mix, proc, budget, np.mean(nfe), xs, first, steady)
                )
            except Exception as e:  # a sampler that fails is a result
                rows.append(
                    {
                        "framework": "scoreflow",
                        "variant": name,
                        "problem": mix,
                        "process": proc,
                        "budget": budget,
                        "nfe": float("nan"),
                        "sw2": float("nan"),
                        "finite": False,
                        "note": f"{type(e).__name__}: {str(e)[:200]}",
                    }
                )
    # Composed from the public API, to show what a final denoising step would give DPMSolverPP: N - 1 steps of
    # 2M on the log-SNR grid down to sigma/alpha = 0.174 (not to t0), then one Tweedie step x0 = E[x0 | x_t].
    t_end = DENOISE_FROM[proc]

    @eqx.filter_jit
    def draw_denoised(sampler):
        out = sf.sample(model, sde, key, (n, m.dim), sampler=sampler, t0=t_end)
        return jax.vmap(lambda x: model.denoise(t_end, x))(out.samples), out.nfe + 1

    for budget in budgets:
        sampler = sf.DPMSolverPP(steps=budget - 1, order=2)
        name = "DPMSolverPP 2M, log-SNR grid to sigma/alpha=0.174 + final denoise (composed)"
        (xs, nfe), first, steady, _ = C.timed(
            lambda: jax.block_until_ready(draw_denoised(sampler)), repeats=1, slow_s=INF
        )
        rows.append(row("scoreflow", name, mix, proc, budget, np.mean(nfe), xs, first, steady))
    for tol in [] if n == N_QUICK else [1e-3, 1e-5]:
        sampler = sf.ProbabilityFlow(solver=diffrax.Tsit5(), rtol=tol, atol=tol)
        (xs, nfe), first, steady, _ = C.timed(
            lambda: jax.block_until_ready(draw(sampler)), repeats=1, slow_s=INF
        )
        rows.append(
            row(
                "scoreflow",
                f"ProbabilityFlow Tsit5 adaptive rtol=atol={tol:g}",
                mix,
                proc,
                "adaptive",
                np.mean(nfe),
                xs,
                first,
                steady,
                nfe_max=int(np.max(nfe)),
            )
        )
    return rows


def run_diffusers(mix, proc, n, budgets):
    import torch
    from diffusers import DPMSolverMultistepScheduler

    C.torch_threads()
    m = C.MIXTURES[mix]()
    score = C.torch_iso_score(m)
    rows = []
    for budget in budgets:
        sched = DPMSolverMultistepScheduler(
            num_train_timesteps=1000,
            beta_start=1e-4,
            beta_end=0.02,
            beta_schedule="linear",
            algorithm_type="dpmsolver++",
            solver_order=2,
        )
        acp = sched.alphas_cumprod.to(torch.float32)

        def go():
            sched.set_timesteps(budget)
            g = torch.Generator().manual_seed(3)
            x = torch.randn(n, m.dim, generator=g) * sched.init_noise_sigma
            count = 0
            with torch.no_grad():
                for t in sched.timesteps:
                    a, s = acp[t].sqrt(), (1 - acp[t]).sqrt()
                    eps = -s * score(a, s, x)
                    count += 1
                    x = sched.step(eps, t, x).prev_sample
            return x, count

        (xs, nfe), first, steady, _ = C.timed(go, repeats=1)
        rows.append(
            row(
                "diffusers",
                "DPMSolverMultistep dpmsolver++ 2M",
                mix,
                "vp (discrete)",
                budget,
                nfe,
                xs.numpy(),
                first,
                steady,
            )
        )
    return rows


def run_kdiffusion(mix, proc, n, budgets):
    import diffusers  # noqa: F401  (probes torchvision before the stub goes in)
    import torch

    ks = C.import_k_diffusion_sampling()
    C.torch_threads()
    m = C.MIXTURES[mix]()
    score = C.torch_iso_score(m)
    count = [0]

    def denoiser(x, sigma):
        count[0] += 1
        s = sigma.reshape(-1)[0]
        return x + s**2 * score(1.0, s, x)

    rows = []
    for budget in budgets:
        for name, fn, steps in [
            ("sample_dpmpp_2m, Karras rho 7", ks.sample_dpmpp_2m, budget),
            ("sample_heun, Karras rho 7", ks.sample_heun, max(budget // 2, 1)),
        ]:

            def go():
                count[0] = 0
                sigmas = ks.get_sigmas_karras(steps, 0.002, 80.0, rho=7.0)
                g = torch.Generator().manual_seed(3)
                x = torch.randn(n, m.dim, generator=g) * sigmas[0]
                with torch.no_grad():
                    out = fn(denoiser, x, sigmas, disable=True)
                return out, count[0]

            (xs, nfe), first, steady, _ = C.timed(go, repeats=1)
            rows.append(
                row("k-diffusion", name, mix, "edm", budget, nfe, xs.numpy(), first, steady)
            )
    return rows


def run_diffusionjax(mix, proc, n, budgets):
    import jax
    import jax.numpy as jnp
    from diffusionjax import solvers, utils

    m = C.MIXTURES[mix]()
    score1 = C.jax_iso_score(m)
    vp_as, _ = C.jax_process(C.PROCESSES["vp"])

    def vp_score(x, t):  # batch x, vector t
        a, s = vp_as(t[0])
        return jax.vmap(lambda xi: score1(a, s, xi))(x)

    def vp_eps(x, t):
        _, s = vp_as(t[0])
        return -s * vp_score(x, t)

    def edm_denoise(x, sigma):
        s = jnp.reshape(sigma, (-1,))[0]
        return x + s**2 * jax.vmap(lambda xi: score1(1.0, s, xi))(x)

    rows = []
    for budget in budgets:
        configs = [
            (
                "DDIMVP eta=0",
                "vp",
                lambda: solvers.DDIMVP(vp_eps, eta=0.0, ts=utils.get_times(num_steps=budget)[0]),
            ),
            (
                "DDPM (ancestral)",
                "vp",
                lambda: solvers.DDPM(vp_score, ts=utils.get_times(num_steps=budget)[0]),
            ),
            (
                "EDMHeun",
                "edm",
                lambda: solvers.EDMHeun(
                    edm_denoise, ts=utils.get_times(num_steps=max(budget // 2, 1), t0=0.0)[0]
                ),
            ),
        ]
        for name, p, make in configs:
            try:
                solver = make()
                sampler = jax.jit(utils.get_sampler((n, m.dim), solver, denoise=True))

                def go():
                    xs, nfe = sampler(jax.random.PRNGKey(3))
                    return jax.block_until_ready(xs), int(nfe)

                (xs, nfe), first, steady, _ = C.timed(go, repeats=1, slow_s=INF)
                # EDMHeun evaluates the denoiser twice per step (its count says once)
                nfe = 2 * nfe if name == "EDMHeun" else nfe
                rows.append(row("diffusionjax", name, mix, p, budget, nfe, xs, first, steady))
            except Exception as e:
                rows.append(
                    {
                        "framework": "diffusionjax",
                        "variant": name,
                        "problem": mix,
                        "process": p,
                        "budget": budget,
                        "nfe": float("nan"),
                        "sw2": float("nan"),
                        "finite": False,
                        "note": f"{type(e).__name__}: {str(e)[:200]}",
                    }
                )
    return rows


def run_floor(mix, proc, n, budgets):
    """The metric between independent exact sample sets: it varies a lot with the seed, so report the mean
    and standard deviation over FLOOR_DRAWS draws (the same spread applies to every sampler's number)."""
    m = C.MIXTURES[mix]()
    vals = [metric(mix, C.sample_np(m, n, FLOOR_SEED + i)) for i in range(FLOOR_DRAWS)]
    return [
        {
            "framework": "exact",
            "variant": f"noise floor: exact vs exact (mean of {FLOOR_DRAWS} draws)",
            "problem": mix,
            "process": "-",
            "budget": 0,
            "nfe": 0.0,
            "sw2": float(np.mean(vals)),
            "sw2_std": float(np.std(vals, ddof=1)),
            "sw2_draws": vals,
            "finite": True,
        }
    ]


def worker(args: list[str]) -> None:
    runner, mix, proc, quick = args[0], args[1], args[2], args[3] == "quick"
    n = N_QUICK if quick else N_FULL
    budgets = BUDGETS_QUICK if quick else BUDGETS_FULL
    fn = {
        "scoreflow": run_scoreflow,
        "diffusers": run_diffusers,
        "kdiffusion": run_kdiffusion,
        "diffusionjax": run_diffusionjax,
        "floor": run_floor,
    }[runner]
    C.emit(fn(mix, proc, n, budgets))


def jobs(quick: bool) -> list[list[str]]:
    q = "quick" if quick else "full"
    out = []
    for mix in ["gmm2"] if quick else ["gmm2", "gmm64"]:
        out.append(["floor", mix, "-", q])
        for proc in ["vp"] if quick else ["vp", "edm"]:
            out.append(["scoreflow", mix, proc, q])
        out += [["diffusers", mix, "vp", q], ["kdiffusion", mix, "edm", q]]
        if not quick:
            out.append(["diffusionjax", mix, "vp", q])
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = sorted({r["problem"] for r in rows})
    fig, axes = plt.subplots(1, len(mixes), figsize=(6 * len(mixes), 4.5), squeeze=False)
    for ax, mix in zip(axes[0], mixes, strict=False):
        sub = [
            r
            for r in rows
            if r["problem"] == mix and isinstance(r["budget"], int) and r["budget"] > 0
        ]
        for key in sorted({(r["framework"], r["variant"], r["process"]) for r in sub}):
            rs = sorted(
                [r for r in sub if (r["framework"], r["variant"], r["process"]) == key],
                key=lambda r: r["nfe"],
            )
            rs = [r for r in rs if np.isfinite(r["sw2"])]
            if rs:
                ax.loglog(
                    [r["nfe"] for r in rs],
                    [r["sw2"] for r in rs],
                    "o-" if key[0] == "scoreflow" else "s--",
                    label=f"{key[0]} {key[2]}: {key[1]}",
                    lw=1.5 if key[0] == "scoreflow" else 1,
                )
        floor = [r["sw2"] for r in rows if r["problem"] == mix and r["framework"] == "exact"]
        if floor:
            ax.axhline(floor[0], color="k", ls=":", lw=1, label="noise floor")
        ax.axhline(0.045, color="r", ls=":", lw=1, label="target 0.045 @ 10 NFE")
        ax.set_title(f"P2 sampling {mix}")
        ax.set_xlabel("NFE")
        ax.set_ylabel("sliced W2")
        ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def summary(rows: list[dict]) -> str:
    out = "\n**Targets** (measured, not hard-coded): sliced W2 <= 0.045 at 10 NFE; within 0.005 of the floor at 20 NFE.\n\n"
    out += "| problem | floor | best scoreflow @10 (sampler) | best scoreflow @20 (sampler) | best peer @10 | best peer @20 |\n"
    out += "|---|---|---|---|---|---|\n"
    for mix in sorted({r["problem"] for r in rows}):
        floor = next(
            (r["sw2"] for r in rows if r["problem"] == mix and r["framework"] == "exact"),
            float("nan"),
        )

        def best(fw_is_sf, budget):
            rs = [
                r
                for r in rows
                if r["problem"] == mix
                and r["budget"] == budget
                and np.isfinite(r["sw2"])
                and (r["framework"] == "scoreflow") == fw_is_sf
                and r["framework"] != "exact"
            ]
            if not rs:
                return "-"
            b = min(rs, key=lambda r: r["sw2"])
            return f"{b['sw2']:.4f} ({b['framework']} {b['process']}: {b['variant']}, {b['nfe']:.0f} NFE)"

        out += (
            f"| {mix} | {floor:.4f} | {best(True, 10)} | {best(True, 20)} | {best(False, 10)} | "
            f"{best(False, 20)} |\n"
        )
    return out


def main() -> None:
    ap = C.base_parser(__doc__)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    t = time.perf_counter()
    load = C.load_avg()
    rows = C.run_isolated(__file__, jobs(args.quick))
    name = "sampling_quick" if args.quick else "sampling"
    payload = {
        "problem": "P2",
        "n": N_QUICK if args.quick else N_FULL,
        "seeds": {
            "reference": REF_SEED,
            "floor": FLOOR_SEED,
            "projections": PROJ_SEED,
            "samplers": 3,
        },
        "versions": C.versions(),
        "threads": C.NUM_THREADS,
        "load_avg_before": load,
        "load_avg_after": C.load_avg(),
        "wall_s": time.perf_counter() - t,
        "rows": rows,
    }
    good = [r for r in rows if "error" not in r]
    cols = [
        ("problem", "problem", ""),
        ("framework", "runner", ""),
        ("process", "process", ""),
        ("variant", "sampler", ""),
        ("budget", "budget", ""),
        ("nfe", "NFE", ".0f"),
        ("sw2", "sliced W2", ".4f"),
        ("sw2_std", "floor std", ".4f"),
        ("finite", "finite", ""),
        ("first_s", "first call s", ".2f"),
        ("steady_s", "steady s", ".3f"),
        ("note", "note", ""),
    ]
    failed = "".join(f"\n- FAILED {' '.join(r['job'])}: {r['error']}" for r in rows if "error" in r)
    table = (
        f"# P2 sampling ({'quick' if args.quick else 'full'} run, n = {payload['n']})\n\nthreads = "
        f"{C.NUM_THREADS}; load average before / after: {load} / {C.load_avg()}; versions: "
        f"{payload['versions']}\n\n" + C.md_table(good, cols) + summary(good) + failed + "\n"
    )
    C.write_results(name, payload, table)
    plot(good, C.RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
