"""Diffusion recovery likelihood on the 2-D ring of 8 Gaussians (scoreflow's `ring8`: radius 2, std 0.15, equal
weights), trained with the library's defaults, then checked against what is known exactly.

Measured: non-finite losses / skipped updates / non-finite parameters over all iterations (target: none over
20k); the energy gap g(y+) - g(y-) per level (last 1000 iterations); from 20k progressive samples of the EMA model
(and of the raw model): the fraction within 3 std (0.45) of a mode (the reference TF2 port reached 33%) and each
mode's weight among those, relative to 1/8 (target +-15%); log Z of the level-0 energy by adaptive tempered SMC
(MALA moves, 8 independent runs for the standard error) against grid quadrature (target 0.05 nats); the model's
normalised test log-likelihood against the exact mixture's (their difference estimates KL(p || p_model)).

    python benchmarks/bench_ebm.py                          # T = 6 levels, 20k iterations (~25 min on 2 busy cores)
    python benchmarks/bench_ebm.py --levels 30 --tag T30    # the longer chain
    python benchmarks/bench_ebm.py --step paper --tag paper # the reference code's step sizes (b^2 = 2e-4)
    python benchmarks/bench_ebm.py --quick                  # smoke run
    python benchmarks/bench_ebm.py --part digits --width 16 --budget-s 1000 --vdm-run runs/main_job
                                                            # digits: bits/dim next to the main job's VDM bound
    python benchmarks/bench_ebm.py --part kernels           # short-run ULA vs blackjax MALA

`--part digits` (results `ebm_digits.*`): log Z_0 by SMC through the recovery stages (`recovery_log_normaliser`)
with its standard error, the test images' bins by uniform importance sampling, and the main job's VDM bound on the
same test set, from `--vdm-run RUN` (a finished `scoreflow train` run) or trained here, recomputed from its
checkpoint.
"""

import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


C.set_threads()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402
from scoreflow.data.toy import load_toy, toy_mixture  # noqa: E402


STD, RADIUS = 0.15, 2.0
GRID_H, GRID_LIM = 0.01, 4.0


def make_chunk(opt, batch, chunk, ema_decay):
    @eqx.filter_jit
    def run(model, ema, opt_state, data, key):
        def body(carry, k):
            model, ema, opt_state = carry
            k1, k2 = jax.random.split(k)
            x = data[jax.random.randint(k1, (batch,), 0, data.shape[0])]
            model, opt_state, loss, info = sf.recovery_update(model, opt_state, opt, x, key=k2)
            e, static = eqx.partition(ema, eqx.is_inexact_array)
            p = eqx.filter(model, eqx.is_inexact_array)
            ema = eqx.combine(jax.tree.map(lambda a, b: a + (1 - ema_decay) * (b - a), e, p), static)
            gap = jnp.where(info.count > 0, info.gap, 0.0)
            return (model, ema, opt_state), (loss, gap, info.count)

        (model, ema, opt_state), out = jax.lax.scan(body, (model, ema, opt_state), jax.random.split(key, chunk))
        return model, ema, opt_state, out

    return run


def sample_metrics(model, n, key, means):
    draw = eqx.filter_jit(jax.vmap(lambda k: sf.recovery_sample(model, (2,), key=k, dtype=jnp.float32)[0]))
    t0 = time.perf_counter()
    s = np.concatenate([np.asarray(draw(jax.random.split(k, 2000))) for k in jax.random.split(key, n // 2000)])
    wall = time.perf_counter() - t0
    finite = np.all(np.isfinite(s), axis=1)
    d = np.linalg.norm(s[:, None, :] - means[None], axis=-1)
    near = finite & (d.min(1) < 3 * STD)
    counts = np.bincount(d.argmin(1)[near], minlength=len(means))
    w = counts / max(near.sum(), 1) * len(means)
    return s, {
        "nan_samples": int((~finite).sum()),
        "frac_3std": float(near.mean()),
        "mode_weight_min": float(w.min()),
        "mode_weight_max": float(w.max()),
        "mode_weight_maxdev": float(np.max(np.abs(w - 1))),
        "mode_weights": [float(v) for v in w],
        "sample_s": wall,
    }


def grid_log_z(model):
    a = model.schedule.scale(0)
    g = np.arange(-GRID_LIM, GRID_LIM, GRID_H) + GRID_H / 2
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    f = eqx.filter_jit(jax.vmap(lambda v: -model(0, a * v)))
    lp = np.concatenate([np.asarray(f(jnp.asarray(c, jnp.float64)), np.float64) for c in np.array_split(pts, 16)])
    m = lp.max()
    # Mass beyond the grid: the boundary row's share, reported so that truncation is visible.
    edge = np.exp(lp.reshape(len(g), len(g)) - m)
    edge_frac = (edge[0].sum() + edge[-1].sum() + edge[:, 0].sum() + edge[:, -1].sum()) / edge.sum()
    return float(m + np.log(np.exp(lp - m).sum()) + 2 * np.log(GRID_H)), float(edge_frac)


class _Quadratic(sf.AbstractEnergy):
    """g(y, t) = theta_t s_t^2 |y|^2 / 2: the exact level energies of Gaussian data N(0, v I)."""

    theta: jax.Array
    s2: jax.Array

    def __call__(self, t, x, cond=None, *, key=None):
        i = jnp.asarray(t).astype(jnp.int32)
        return self.theta[i] * self.s2[i] * 0.5 * jnp.sum(x**2)


def kernels_part(a, t_start, load_before):
    """Short-run ULA (the training negatives) against blackjax MALA on the exact tethered conditionals of Gaussian
    data (v = 0.5), per level: the conditional mean offset in units of the conditional std and the variance ratio,
    each chain started at x_{t+1} like the training chains; and the time per step."""
    jax.config.update("jax_enable_x64", True)
    v, n = 0.5, 2000
    rows = []
    for d in (2, 64):
        sc = sf.RecoverySchedule.paper(6)
        vt = sc.alphas_cum[:-1] ** 2 * v + sc.sigmas_cum[:-1] ** 2
        scale = jnp.asarray([sc.scale(t) for t in range(6)])
        theta = 1.0 / (scale**2 * vt)
        probe = sf.RecoveryEBM(_Quadratic(theta, jnp.ones(6)), sc)
        model = sf.RecoveryEBM(_Quadratic(theta, probe.step_sizes_squared()), sc)
        for t in range(6):
            key = jax.random.fold_in(jax.random.key(11), 100 * d + t)
            x = jnp.sqrt(v) * jax.random.normal(key, (n, d))
            _, x_next = jax.vmap(lambda xx, kk, sc=sc, t=t: sf.recovery_pair(sc, t, xx, key=kk))(
                x, jax.random.split(key, n)
            )
            prec = theta[t] + sc.tether(t) / sc.sigmas[t + 1] ** 2
            mean = sc.tether(t) * x_next / (sc.sigmas[t + 1] ** 2 * prec)
            s = float(jnp.sqrt(model.step_sizes_squared()[t]))
            for name, kernel, steps in (
                ("ULA", sf.UnadjustedLangevin(s), 30),
                ("MALA", sf.MALA(s), 30),
                ("MALA", sf.MALA(s), 1000),
            ):
                f = jax.jit(
                    jax.vmap(
                        lambda xn, kk, kernel=kernel, steps=steps, m=model, t=t: sf.mcmc(
                            kernel, lambda y, xn=xn: m.conditional_log_prob(t, y, xn), xn, num_steps=steps, key=kk
                        )
                    )
                )
                keys = jax.random.split(jax.random.fold_in(key, 7), n)
                res = jax.block_until_ready(f(x_next, keys))
                t0 = time.perf_counter()
                res = jax.block_until_ready(f(x_next, keys))
                wall = time.perf_counter() - t0
                z = np.asarray((res.position - mean) * jnp.sqrt(prec))
                rows.append(
                    {
                        "framework": f"{name} x{steps}",
                        "dim": d,
                        "level": t,
                        "mean_offset_sd": float(np.mean(z)),
                        "var_ratio": float(np.mean(z**2) - np.mean(z) ** 2),
                        "acceptance": float(res.acceptance_rate.mean()),
                        "us_per_chain_step": 1e6 * wall / (n * steps),
                    }
                )
                print(C.summarise(rows[-1]), flush=True)
    payload = C.run_record(load_before, t_start, rows)
    payload["command"] = "python benchmarks/bench_ebm.py " + " ".join(sys.argv[1:])
    payload["setup"] = (
        "Gaussian data N(0, 0.5 I_d), exact level energies, RelativeStepSize(0.3), paper schedule T = 6; 2000 chains "
        "per level started at x_{t+1}; z = (y - exact conditional mean) * sqrt(conditional precision)"
    )
    cols = [
        ("framework", "kernel", ""),
        ("dim", "d", "d"),
        ("level", "level", "d"),
        ("mean_offset_sd", "mean of z", ".3f"),
        ("var_ratio", "var of z (exact 1)", ".3f"),
        ("acceptance", "acceptance", ".3f"),
        ("us_per_chain_step", "us / chain step", ".2f"),
    ]
    summary = f"\n\n{payload['setup']}.\n\nReproduce: `{payload['command']}`\n"
    C.write_results(
        "ebm_kernels", payload, C.report("Short-run ULA vs blackjax MALA on exact conditionals", payload, cols, summary)
    )


def main_job_vdm(a, workdir: Path) -> dict:
    """The main job's VDM bound on the digits test set, from `--vdm-run RUN` (a finished `scoreflow train` run of
    the main job) or from the main job trained here (`scoreflow train`, `--vdm-steps` if not its 2000), recomputed
    from the run's last checkpoint (EMA model, the main job's own evaluation key) as a check that it is the same
    model and test set."""
    import json
    import subprocess

    from scoreflow._cli import continuous as cont
    from scoreflow._cli.datasets import load_data
    from scoreflow._cli.run import Run

    if a.vdm_run:
        run = Path(a.vdm_run)
        how = f"reused the finished main-job run {a.vdm_run}"
    else:
        run = workdir / "vdm"
        cmd = [sys.executable, "-m", "scoreflow", "train", "--out", str(run), "--nll-examples", "0", "--no-progress"]
        if a.vdm_steps:
            cmd += ["--steps", str(a.vdm_steps)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        shown = " ".join(["scoreflow", *cmd[3:]]).replace(str(run), "RUN")
        how = f"trained here: `{shown}` ({time.perf_counter() - t0:.0f} s)"
    res = json.loads((run / "results.json").read_text())
    r = Run(str(run))
    c = r.read_config()["config"]
    ds = load_data(c)
    state, _ = cont.build_state(c, ds.shape)
    state, _ = r.restore(state, cont.CONTINUOUS, c)
    model = state.ema if state.ema is not None else state.model
    again = cont.vlb_bpd(model, ds, c, cont.eval_key(c["seed"]))
    return {
        "vdm_bound_bpd": float(res["test_vlb_bpd"]),
        "vdm_bound_recomputed": float(again),
        "vdm_steps": int(c["steps"]),
        "vdm_trained_steps": int(state.step),
        "vdm_eval_repeats": int(c["eval_repeats"]),
        "vdm_how": how,
    }


def _scrub_paths(args: list[str]) -> list[str]:
    """The command line with the scratch files of --save-model / --load-model shown as FILE (no machine paths)."""
    out = list(args)
    for i, v in enumerate(out[:-1]):
        if v in ("--save-model", "--load-model"):
            out[i + 1] = "FILE"
    return out


def digits_train_row(a, model, opt_state, losses, iters_planned, chunk, train_s, compile_s) -> dict:
    iters = len(losses)
    params_finite = all(
        bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    )
    return {
        "framework": f"recovery T={a.levels} digits",
        "levels": a.levels,
        "iters": iters,
        "iters_planned": iters_planned,
        "nonfinite_losses": int((~np.isfinite(losses)).sum()),
        "skipped_updates": int(opt_state.total_notfinite),
        "params_finite": params_finite,
        "train_s": train_s,
        "compile_s": compile_s,
        "ms_per_iter": 1000 * (train_s - compile_s) / max(iters - chunk, 1),
        "parameters": int(sum(p.size for p in jax.tree.leaves(eqx.filter(model.network, eqx.is_inexact_array)))),
    }


def digits_part(a, t_start, load_before):
    """Recovery likelihood on the 8x8 digits (17 levels in [-1, 1]); test bits/dim of the normalised level-0
    density, log Z_0 by SMC through the recovery stages, next to the main job's VDM bound on the same 297 images."""
    import tempfile

    from scoreflow import data as sfd

    with tempfile.TemporaryDirectory() as tmp:
        vdm = main_job_vdm(a, Path(tmp))  # first: it runs in float32 like the main job
    print(C.summarise(vdm), flush=True)
    ds = sfd.load_digits()
    shape, dim = ds.shape, int(np.prod(ds.shape))
    width_bin = 2.0 / (ds.num_levels - 1)
    iters = a.iters or (100 if a.quick else 6000)
    chunk = min(50, iters)
    iters = (iters // chunk) * chunk
    batch, ema_decay = a.batch or 32, 0.999 if iters >= 2000 else 0.99
    data = jnp.asarray(ds.train, jnp.float32)
    net = sf.ConvEnergy(shape[0], shape[1], a.width, key=jax.random.key(0))
    step = sf.RelativeStepSize() if a.step == "relative" else sf.PaperStepSize()
    model = sf.RecoveryEBM(net, sf.RecoverySchedule.paper(a.levels), step, a.langevin_steps)
    opt = sf.recovery_optimiser(a.lr, warmup_steps=min(500, iters // 10))
    opt_state = sf.init_recovery_optimiser(model, opt)
    ema = model
    run = make_chunk(opt, batch, chunk, ema_decay)
    key = jax.random.key(1)
    losses, curve, compile_s = [], [], None
    t0 = time.perf_counter()
    for i in range(0 if a.load_model else iters // chunk):
        key, sub = jax.random.split(key)
        model, ema, opt_state, (loss, _, _) = run(model, ema, opt_state, data, sub)
        losses.append(np.asarray(loss))
        if compile_s is None:
            compile_s = time.perf_counter() - t0
        if (i + 1) % max(1, (iters // chunk) // 20) == 0:
            curve.append(
                {"iter": (i + 1) * chunk, "loss": float(np.nanmean(losses[-1])), "s": time.perf_counter() - t0}
            )
            print(
                f"  iter {(i + 1) * chunk}: loss {np.nanmean(losses[-1]):.4g}, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        if a.budget_s is not None and time.perf_counter() - t0 > a.budget_s:
            print(f"  time budget reached after {(i + 1) * chunk} iterations", flush=True)
            break
    train_s = time.perf_counter() - t0
    if a.load_model:  # evaluation only, of a model saved by --save-model (its training row comes with it)
        import json

        ema = eqx.tree_deserialise_leaves(a.load_model, ema)
        row = json.loads(Path(a.load_model + ".json").read_text())
        params_finite = row["params_finite"]
        iters = row["iters"]
    else:
        row = digits_train_row(a, model, opt_state, np.concatenate(losses), iters, chunk, train_s, compile_s)
        params_finite, iters = row["params_finite"], row["iters"]
        row["curve"] = curve
    if a.save_model:
        import json

        eqx.tree_serialise_leaves(a.save_model, ema)
        Path(a.save_model + ".json").write_text(json.dumps(row))
    print(C.summarise({k: v for k, v in row.items() if k != "curve"}), flush=True)
    curve = row.pop("curve", [])
    m32 = ema
    n_particles, n_repeats = (32, 2) if a.quick else (a.smc_particles, a.smc_repeats)
    n_direct, r_direct = (32, 2) if a.quick else (a.direct_particles, a.direct_repeats)
    max_temp = 20 if a.quick else a.max_tempering
    # log Z_0 through the recovery stages (the estimate used), and by one tempering from a Gaussian (a check).
    t0 = time.perf_counter()
    staged = jax.jit(
        lambda k: sf.recovery_log_normaliser(
            m32,
            shape,
            key=k,
            num_particles=n_particles,
            num_repeats=n_repeats,
            max_tempering_steps=max_temp,
            dtype=jnp.float32,
        )
    )(jax.random.key(3))
    staged_s = time.perf_counter() - t0
    print(f"  staged SMC: log Z {float(staged.log_z):.4f} +- {float(staged.stderr):.4f} ({staged_s:.0f} s)", flush=True)
    mean = jnp.asarray(np.mean(ds.train, axis=0), jnp.float32)
    std = float(np.std(ds.train)) * 1.5
    t0 = time.perf_counter()
    lp = lambda v: -m32(0, m32.schedule.scale(0).astype(v.dtype) * v)
    direct = jax.jit(
        lambda k: sf.smc_log_normaliser(
            lp,
            base_mean=mean,
            base_std=std,
            key=k,
            kernel=sf.MALA(0.1 * std),
            num_particles=n_direct,
            num_repeats=r_direct,
            max_tempering_steps=max_temp * 5,
        )
    )(jax.random.key(4))
    direct_s = time.perf_counter() - t0
    print(
        f"  one-stage SMC: log Z {float(direct.log_z):.4f} +- {float(direct.stderr):.4f} ({direct_s:.0f} s)", flush=True
    )
    log_z, log_z_se = float(staged.log_z), float(staged.stderr)
    # Test bits/dim of the 17-level bins. P(bin) = vol * E_u[p(x + u)], u ~ U(bin): with K draws the estimate's
    # log is a lower bound on log P(bin) in expectation (K = 1: the uniform dequantisation bound), so the bits/dim
    # are an upper bound like the VDM bound; and the midpoint rule, density at the bin centre x bin volume.
    x = jnp.asarray(ds.test, jnp.float32)
    f = jax.jit(jax.vmap(lp))
    centre = np.asarray(f(x), np.float64) - log_z
    k_draws = 8 if a.quick else 64
    u = jax.random.uniform(jax.random.key(5), (k_draws, *x.shape), jnp.float32, -width_bin / 2, width_bin / 2)
    deq = np.stack([np.asarray(f(x + u[k]), np.float64) for k in range(k_draws)]) - log_z  # (K, n)
    mx = deq.max(0)
    log_pk = mx + np.log(np.mean(np.exp(deq - mx), axis=0))
    to_bpd = lambda ll: -(ll + dim * np.log(width_bin)) / (dim * np.log(2))
    se = lambda v: float(np.std(v, ddof=1) / np.sqrt(len(v)) / (dim * np.log(2)))
    z_se_bpd = log_z_se / (dim * np.log(2))
    # Samples (progressive sampling from noise) for the figure and the count of non-finite ones.
    draw = eqx.filter_jit(jax.vmap(lambda k: sf.recovery_sample(ema, shape, key=k, dtype=jnp.float32)[0]))
    samples = np.asarray(draw(jax.random.split(jax.random.key(6), 64)))
    row.update(
        {
            "log_z_staged": log_z,
            "log_z_staged_stderr": log_z_se,
            "log_z_staged_runs": [float(v) for v in staged.log_z_runs],
            "staged_tempering_steps_per_stage": [int(v) for v in np.max(np.asarray(staged.num_tempering_steps), 0)],
            "staged_acceptance_per_stage": [float(v) for v in np.mean(np.asarray(staged.acceptance), 0)],
            "staged_s": staged_s,
            "log_z_direct": float(direct.log_z),
            "log_z_direct_stderr": float(direct.stderr),
            "direct_tempering_steps": int(np.max(direct.num_tempering_steps)),
            "direct_s": direct_s,
            "smc_particles": n_particles,
            "smc_repeats": n_repeats,
            "bpd_dequant_k1": float(np.mean(to_bpd(deq[0]))),
            "bpd_dequant_k1_se_examples": se(deq[0]),
            f"bpd_is_k{k_draws}": float(np.mean(to_bpd(log_pk))),
            "bpd_is_se_examples": se(log_pk),
            "bpd_is_draws": k_draws,
            "bpd_midpoint": float(np.mean(to_bpd(centre))),
            "bpd_midpoint_se_examples": se(centre),
            "bpd_log_z_se": z_se_bpd,
            "nan_samples": int((~np.isfinite(samples)).any(axis=(1, 2, 3)).sum()),
        }
    )
    row["bpd"] = row[f"bpd_is_k{k_draws}"]
    row["bpd_se"] = float(np.hypot(row["bpd_is_se_examples"], z_se_bpd))
    row.update(vdm)
    row["target_no_nan"] = row["nonfinite_losses"] == 0 and params_finite and row["nan_samples"] == 0
    print(C.summarise(row), flush=True)

    tag = ("_" + a.tag) if a.tag else ""
    name = ("ebm_digits_quick" if a.quick else "ebm_digits") + tag
    from scoreflow import plots

    try:  # the numbers are written whatever happens to the figure
        plots.save_samples(
            str(C.RESULTS / f"{name}.png"),
            np.clip((samples + 1) / 2, 0, 1),
            title=f"{row['framework']}, {iters} it: 64 samples",
        )
        row["figure"] = f"{name}.png"
    except Exception as e:  # noqa: BLE001
        print(f"  figure failed: {e!r}", flush=True)
    payload = C.run_record(load_before, t_start, [row])
    payload.update(
        {
            "data": f"sklearn digits 8x8, 17 levels in [-1, 1]: {len(ds.train)} train / {len(ds.test)} test images",
            "network": f"ConvEnergy(1, 8, width {a.width}), no spectral norm",
            "batch": batch,
            "lr": a.lr,
            "ema_decay": ema_decay,
            "curve": curve,
            "log_z_method": (
                f"recovery_log_normaliser (float32): SMC from N(0, I) through the model's level marginals gamma_t(x) "
                f"= exp(-E(a'_t x, t)), t = {a.levels - 1}..0, each stage by adaptive tempering (ESS 0.5, at most "
                f"{max_temp} steps) with blackjax MALA x 10 (step tuned to acceptance 0.6), {n_particles} particles, "
                f"{n_repeats} independent runs (standard error by the delta method); check: one adaptive tempering "
                f"from N(train mean, (1.5 std)^2 I), MALA(0.1 x 1.5 std) x 10, {n_direct} particles, {r_direct} runs"
            ),
            "bpd_method": (
                f"-log2 P(bin) / 64 with P(bin) = vol * mean_k p(x + u_k), u_k ~ U(bin), K = {k_draws} (an upper "
                "bound in expectation, like the VDM bound; K = 1 is the uniform dequantisation bound); midpoint: "
                "density at the bin centre x vol (an estimate, not a bound)"
            ),
            "command": "python benchmarks/bench_ebm.py " + " ".join(_scrub_paths(sys.argv[1:])),
        }
    )
    cols = [
        ("framework", "run", ""),
        ("iters", "iterations", "d"),
        ("nonfinite_losses", "non-finite losses", "d"),
        ("skipped_updates", "skipped updates", "d"),
        ("log_z_staged", "log Z staged SMC", ".3f"),
        ("log_z_staged_stderr", "s.e.", ".3f"),
        ("log_z_direct", "log Z one-stage SMC", ".3f"),
        ("log_z_direct_stderr", "s.e.", ".3f"),
        ("bpd", "test bits/dim (EBM)", ".4f"),
        ("bpd_se", "s.e.", ".4f"),
        ("bpd_dequant_k1", "dequant. bound K=1", ".4f"),
        ("bpd_midpoint", "midpoint", ".4f"),
        ("vdm_bound_bpd", "main job VDM bound", ".4f"),
        ("ms_per_iter", "ms/iter", ".0f"),
        ("train_s", "train s", ".0f"),
    ]
    summary = (
        f"\n\nlog Z method: {payload['log_z_method']}.\n\nbits/dim: {payload['bpd_method']}. The s.e. combines the "
        f"spread over the {len(ds.test)} test images and log Z's standard error.\n\nVDM bound: "
        f"{row['vdm_how']}; {row['vdm_trained_steps']} steps, mean over {row['vdm_eval_repeats']} draws of t and "
        f"noise; recomputed here from its last checkpoint: {row['vdm_bound_recomputed']:.4f}.\n\n"
        f"Per stage (top level first): tempering steps {row['staged_tempering_steps_per_stage']}, MALA acceptance "
        f"{', '.join(f'{v:.2f}' for v in row['staged_acceptance_per_stage'])}.\n\nReproduce: `{payload['command']}`\n"
    )
    C.write_results(name, payload, C.report("Diffusion recovery likelihood on the digits", payload, cols, summary))


def main():
    ap = C.base_parser((__doc__ or "").splitlines()[0])
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--levels", type=int, default=6)
    ap.add_argument("--step", choices=("relative", "paper"), default="relative")
    ap.add_argument("--langevin-steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tag", default="")
    ap.add_argument(
        "--budget-s", type=float, default=None, help="stop training after this many seconds (loaded machine)"
    )
    ap.add_argument("--part", choices=("ring", "digits", "kernels"), default="ring")
    ap.add_argument("--width", type=int, default=32, help="digits: ConvEnergy width")
    ap.add_argument("--batch", type=int, default=None, help="digits: batch size (32)")
    ap.add_argument("--smc-particles", type=int, default=256, help="digits: particles per staged SMC run")
    ap.add_argument("--smc-repeats", type=int, default=8, help="digits: independent staged SMC runs")
    ap.add_argument("--direct-particles", type=int, default=128, help="digits: particles of the one-stage check")
    ap.add_argument("--direct-repeats", type=int, default=4, help="digits: runs of the one-stage check")
    ap.add_argument("--max-tempering", type=int, default=100, help="digits: tempering steps per stage at most")
    ap.add_argument("--save-model", default=None, help="digits: save the trained EMA model (and its row) here")
    ap.add_argument("--load-model", default=None, help="digits: evaluate a model saved by --save-model")
    ap.add_argument("--vdm-run", default=None, help="digits: a finished main-job run folder to read the VDM bound from")
    ap.add_argument("--vdm-steps", type=int, default=None, help="digits: steps of the main job trained here (2000)")
    a = ap.parse_args()
    t_start, load_before = time.perf_counter(), C.load_avg()
    if a.part == "kernels":
        return kernels_part(a, t_start, load_before)
    if a.part == "digits":
        return digits_part(a, t_start, load_before)
    iters = a.iters or (200 if a.quick else 20_000)
    chunk = 100 if iters >= 100 else iters
    iters = (iters // chunk) * chunk
    batch, ema_decay, n_samples = 256, 0.999, (4000 if a.quick else 20_000)

    data = jnp.asarray(load_toy("ring8", n_train=50_000).train)
    gmm = toy_mixture("ring8")
    means = np.asarray(gmm.means, np.float64)
    step = sf.RelativeStepSize() if a.step == "relative" else sf.PaperStepSize()
    net = sf.EnergyMLP(2, 128, 3, key=jax.random.key(0))
    model = sf.RecoveryEBM(net, sf.RecoverySchedule.paper(a.levels), step, a.langevin_steps)
    opt = sf.recovery_optimiser(a.lr, warmup_steps=min(1000, iters // 10))
    opt_state = sf.init_recovery_optimiser(model, opt)
    ema = model
    run = make_chunk(opt, batch, chunk, ema_decay)

    key = jax.random.key(1)
    losses, gaps, counts, curve = [], [], [], []
    t0 = time.perf_counter()
    compile_s = None
    for i in range(iters // chunk):
        key, sub = jax.random.split(key)
        model, ema, opt_state, (loss, gap, cnt) = run(model, ema, opt_state, data, sub)
        loss = np.asarray(loss)
        if compile_s is None:
            compile_s = time.perf_counter() - t0
        losses.append(loss)
        gaps.append(np.asarray(gap))
        counts.append(np.asarray(cnt))
        if (i + 1) % max(1, (iters // chunk) // 40) == 0:
            curve.append({"iter": (i + 1) * chunk, "loss": float(np.nanmean(loss)), "s": time.perf_counter() - t0})
            print(
                f"  iter {(i + 1) * chunk}: loss {np.nanmean(loss):.4g}, {time.perf_counter() - t0:.0f} s", flush=True
            )
        if a.budget_s is not None and time.perf_counter() - t0 > a.budget_s:
            print(f"  time budget reached after {(i + 1) * chunk} iterations", flush=True)
            break
    train_s = time.perf_counter() - t0
    losses, gaps, counts = np.concatenate(losses), np.concatenate(gaps), np.concatenate(counts)
    iters_planned, iters = iters, len(losses)
    tail = slice(-min(1000, iters), None)
    gap_level = (gaps[tail] * counts[tail]).sum(0) / np.maximum(counts[tail].sum(0), 1)
    skipped = int(opt_state.total_notfinite)
    params_finite = all(
        bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    )

    row = {
        "framework": f"recovery T={a.levels} {a.step}",
        "levels": a.levels,
        "step_rule": type(step).__name__,
        "langevin_steps": a.langevin_steps,
        "iters": iters,
        "iters_planned": iters_planned,
        "nonfinite_losses": int((~np.isfinite(losses)).sum()),
        "skipped_updates": skipped,
        "params_finite": params_finite,
        "train_s": train_s,
        "compile_s": compile_s,
        "ms_per_iter": 1000 * (train_s - compile_s) / max(iters - chunk, 1),
        "gap_per_level": [float(v) for v in gap_level],
    }
    rows = [row]
    jax.config.update("jax_enable_x64", True)
    for name, m in (("ema", ema), ("raw", model)):
        samples, sm = sample_metrics(m, n_samples, jax.random.key(2), means)
        row.update({f"{name}_{k}": v for k, v in sm.items()})
        if name == "ema":
            ema_samples = samples
    # log Z of the EMA model's level-0 energy (float64): SMC vs quadrature.
    m64 = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, ema)
    t0 = time.perf_counter()
    lz_grid, edge = grid_log_z(m64)
    grid_s = time.perf_counter() - t0
    a0 = m64.schedule.scale(0)
    t0 = time.perf_counter()
    res = jax.jit(
        lambda k: sf.smc_log_normaliser(
            lambda v: -m64(0, a0 * v),
            base_mean=jnp.zeros(2),
            base_std=2.0,
            key=k,
            kernel=sf.MALA(0.15),
            num_particles=500 if a.quick else 2000,
            num_mcmc_steps=10,
            num_repeats=8,
        )
    )(jax.random.key(3))
    smc_s = time.perf_counter() - t0
    test = jnp.asarray(load_toy("ring8", n_train=10, n_test=5000, seed=7).test, jnp.float64)
    model_lp = np.asarray(jax.vmap(lambda v: -m64(0, a0 * v))(test)) - float(res.log_z)
    true_lp = np.asarray(gmm.log_prob(test))
    row.update(
        {
            "log_z_smc": float(res.log_z),
            "log_z_stderr": float(res.stderr),
            "log_z_grid": lz_grid,
            "grid_edge_fraction": edge,
            "log_z_err": abs(float(res.log_z) - lz_grid),
            "smc_tempering_steps": int(np.max(res.num_tempering_steps)),
            "smc_s": smc_s,
            "grid_s": grid_s,
            "test_loglik_model": float(model_lp.mean()),
            "test_loglik_model_se": float(model_lp.std(ddof=1) / np.sqrt(len(model_lp))),
            "test_loglik_true": float(true_lp.mean()),
            "kl_estimate": float((true_lp - model_lp).mean()),
        }
    )
    row["target_no_nan"] = row["nonfinite_losses"] == 0 and row["params_finite"] and row["ema_nan_samples"] == 0
    row["target_mode_weights"] = row["ema_mode_weight_maxdev"] <= 0.15
    row["target_log_z"] = row["log_z_err"] <= 0.05
    print(C.summarise(row), flush=True)

    tag = ("_" + a.tag) if a.tag else ""
    name = ("ebm_quick" if a.quick else "ebm") + tag
    try:
        from scoreflow._cli.ebm import save_landscape

        save_landscape(str(C.RESULTS / f"{name}.png"), m64, ema_samples[:4000], title=f"{row['framework']}, {iters} it")
        row["figure"] = f"{name}.png"
    except ImportError:
        pass
    payload = C.run_record(load_before, t_start, rows)
    payload.update(
        {
            "data": "ring8 (radius 2, std 0.15, 8 equal weights), 50k training points",
            "network": "EnergyMLP(2, width 128, depth 3), no spectral norm",
            "batch": batch,
            "lr": a.lr,
            "ema_decay": ema_decay,
            "n_samples": n_samples,
            "curve": curve,
            "smc": "adaptive tempered SMC, base N(0, 2^2 I), MALA(0.15) x 10 moves, 2000 particles, 8 runs",
            "grid": f"midpoint rule, h = {GRID_H}, [-{GRID_LIM}, {GRID_LIM}]^2",
            "command": "python benchmarks/bench_ebm.py " + " ".join(sys.argv[1:]),
        }
    )
    cols = [
        ("framework", "run", ""),
        ("iters", "iterations", "d"),
        ("nonfinite_losses", "non-finite losses", "d"),
        ("skipped_updates", "skipped updates", "d"),
        ("ema_frac_3std", "within 3 std (EMA)", ".3f"),
        ("raw_frac_3std", "within 3 std (raw)", ".3f"),
        ("ema_mode_weight_min", "min mode weight x8", ".3f"),
        ("ema_mode_weight_max", "max mode weight x8", ".3f"),
        ("log_z_smc", "log Z SMC", ".4f"),
        ("log_z_stderr", "s.e.", ".4f"),
        ("log_z_grid", "log Z grid", ".4f"),
        ("log_z_err", "abs error", ".4f"),
        ("test_loglik_model", "test loglik model", ".4f"),
        ("test_loglik_true", "test loglik exact", ".4f"),
        ("ms_per_iter", "ms/iter", ".1f"),
        ("train_s", "train s", ".0f"),
    ]
    summary = (
        f"\n\nEnergy gap g(y+) - g(y-) per level (mean of the last 1000 iterations): "
        f"{', '.join(f'{v:.4f}' for v in row['gap_per_level'])}\n\nEMA mode weights x8: "
        f"{', '.join(f'{v:.3f}' for v in row['ema_mode_weights'])}\n\nReproduce: `{payload['command']}`\n"
    )
    C.write_results(name, payload, C.report("Diffusion recovery likelihood on ring8", payload, cols, summary))


if __name__ == "__main__":
    main()
