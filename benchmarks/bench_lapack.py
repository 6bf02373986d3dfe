"""What the jaxlib-0.10 CPU LAPACK deadlock workarounds cost (issue 9).

jaxlib 0.10.0-0.10.2 split a large batched LAPACK call (Cholesky, triangular solve) into chunks on the XLA CPU
worker pool and block a worker until its chunks finish; with as many such calls in flight as workers, nothing is
left to run the chunks and the process hangs. Three ways round it, measured here side by side:

1. `score`: scoreflow's fix. `GaussianMixture` factorises each covariance once (eigendecomposition) and evaluates
   log-densities and scores of every marginal by matrix products. Compared with the old way (Cholesky factor and
   solve of $\\alpha^2\\Sigma_k + \\sigma^2 I$ at every call) inside a compiled loop, at batch sizes where the old way
   still finishes (below ~1,600 examples on 2 cores).
2. `NPROC=1`: the environment variable that makes jaxlib use one worker (avoids the hang for any code, but takes
   the intra-op parallelism from everything else): the main job's U-Net training step and few-step sampling
   with it, with and without it.
3. another jax: `--other-python PATH` repeats 2. under another interpreter (e.g. a venv with jax 0.9.2, which has
   no chunked path).

Each configuration runs in its own process, alternated round by round (a busy machine slows all alike); medians
are reported. Writes `benchmarks/results/lapack.json` and `.md`.

    python benchmarks/bench_lapack.py [--rounds 3] [--other-python .venv-jax092/bin/python]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


RESULTS = Path(__file__).resolve().parent / "results"


def _worker_score(n: int, iters: int) -> dict:
    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg as jsl

    import scoreflow as sf

    jax.config.update("jax_enable_x64", True)
    k, d = 3, 5
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    a = jax.random.normal(k1, (k, d, d)) * 0.5
    covs = jnp.einsum("kij,klj->kil", a, a) + 0.3 * jnp.eye(d)[None]
    gmm = sf.GaussianMixture(jnp.ones(k), 2.0 * jax.random.normal(k2, (k, d)), covs)
    sde = sf.VPSDE(sf.LinearSchedule())
    x = gmm.sample(seed=k3, sample_shape=(n,))
    ts = jnp.linspace(0.05, 0.95, n)  # per-example times, as inside a vmapped adaptive solve

    def old_score(t, xi):  # the pre-fix implementation: refactorise alpha^2 S + sigma^2 I at every call
        al, s = sde.alpha_sigma(t)
        c = al**2 * covs + s**2 * jnp.eye(d)[None]
        cho = jax.vmap(lambda ci: jsl.cho_factor(ci, lower=True)[0])(c)
        diff = xi[None] - al * gmm.means
        z = jax.vmap(lambda L, v: jsl.solve_triangular(L, v, lower=True))(cho, diff)
        logdet = 2 * jnp.sum(jnp.log(jax.vmap(jnp.diagonal)(cho)), -1)
        r = jax.nn.softmax(jnp.log(gmm.weights) - 0.5 * (jnp.sum(z**2, -1) + logdet))
        pd = jax.vmap(lambda L, v: jsl.cho_solve((L, True), v))(cho, diff)
        return -r @ pd

    model = sf.AnalyticScore(gmm, sde)
    out = {}
    for name, fn in (("cholesky per call", old_score), ("eigendecomposition once", lambda t, xi: model(t, xi))):
        @jax.jit
        def loop(x0, fn=fn):
            def body(i, y):
                return y - 1e-3 * jax.vmap(fn)(ts, y)

            return jax.lax.fori_loop(0, iters, body, x0)

        jax.block_until_ready(loop(x))
        t0 = time.perf_counter()
        jax.block_until_ready(loop(x))
        out[name] = (time.perf_counter() - t0) / iters
    return out


def _worker_main_job(steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    import scoreflow as sf
    import scoreflow.data as sfd
    import scoreflow.train as sft

    ds = sfd.load_digits()
    net = sf.UNet(8, 1, channels=(32, 64), num_res_blocks=1, attention_resolutions=(), key=jax.random.key(0))
    model = sf.ScoreModel(net, sf.VPSDE(sf.LearnedSchedule(hidden=64, key=jax.random.key(1))), sf.EpsPrediction())
    model = sft.state.strong_types(model)

    def objective(m, x, key):
        loss, grads = sf.vdm_loss_and_grads(m, x, key=key, num_levels=17)
        return (loss, {"bpd": loss}), grads

    opt = sft.make_optimiser(2e-3, total_steps=10_000, warmup_steps=100)
    state = sft.init_state(model, opt, key=jax.random.key(2), ema=True)
    step = sft.make_train_step(sft.CustomGradient(objective), opt, ema_decay=0.999)
    batches = [jnp.asarray(ds.train[sft.batch_indices(len(ds.train), 64, s, seed=0)]) for s in range(steps + 1)]
    state, m = step(state, batches[0][None])
    jax.block_until_ready(m["loss"])
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        state, m = step(state, batches[i][None])
    jax.block_until_ready(m["loss"])
    train_step = (time.perf_counter() - t0) / steps

    # few-step sampling of 64 images with the (briefly trained) model: U-Net evaluations inside a scan
    def draw():
        return sf.sample(state.model, state.model.sde, jax.random.key(3), (64, 1, 8, 8),
                         sampler=sf.DPMSolverPP(steps=10)).samples

    jax.block_until_ready(draw())
    t0 = time.perf_counter()
    jax.block_until_ready(draw())
    return {"train step": train_step, "DPM-Solver++ 10 steps, 64 images": time.perf_counter() - t0}


def worker(kind: str) -> None:
    import jax

    res = _worker_score(1000, 50) if kind == "score" else _worker_main_job(20)
    print(json.dumps({"jax": jax.__version__, "times": res}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--other-python", default=None, help="interpreter of another jax version (e.g. a jax 0.9.2 venv)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker)
        return
    configs = [("jax default threads", sys.executable, {}), ("NPROC=1", sys.executable, {"NPROC": "1"})]
    if a.other_python:
        configs.append(("other python", a.other_python, {}))
    runs: dict[str, list[dict]] = {}
    here = Path(__file__).resolve()
    for r in range(a.rounds):
        jobs = [("score (jax default threads)", sys.executable, {}, "score")]
        jobs += [(f"main job ({name})", py, env, "main") for name, py, env in configs]
        for label, py, env, kind in jobs:
            e = {k: v for k, v in os.environ.items() if k != "NPROC"} | env
            t0 = time.perf_counter()
            out = subprocess.run([py, str(here), "--worker", kind], env=e, capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                raise SystemExit(f"{label} failed:\n{out.stderr[-3000:]}")
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            rec["wall_s"] = time.perf_counter() - t0
            runs.setdefault(label, []).append(rec)
            print(f"round {r + 1}: {label}: {rec}", flush=True)
    med = {
        label: {k: statistics.median(rec["times"][k] for rec in recs) for k in recs[0]["times"]}
        for label, recs in runs.items()
    }
    payload = {"rounds": a.rounds, "median_s": med, "runs": runs, "cpu_count": os.cpu_count(),
               "load_average": os.getloadavg()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lapack.json").write_text(json.dumps(payload, indent=2))
    lines = [f"Medians over {a.rounds} alternated rounds, {os.cpu_count()} CPUs.", ""]
    sc = med["score (jax default threads)"]
    old, new = sc["cholesky per call"], sc["eigendecomposition once"]
    lines += [
        "| analytic score, 1000 examples x 3 components x d=5, per loop iteration | ms |",
        "| --- | --- |",
        f"| Cholesky factor + solve per call (old) | {1e3 * old:.2f} |",
        f"| eigendecomposition once, products per call (scoreflow) | {1e3 * new:.2f} ({old / new:.1f}x faster) |",
        "",
        "| main job configuration | jax | U-Net train step (ms) | DPM-Solver++ 10 steps, 64 images (s) |",
        "| --- | --- | --- | --- |",
    ]
    for label, recs in runs.items():
        if label.startswith("main job"):
            m = med[label]
            lines.append(f"| {label[10:-1]} | {recs[0]['jax']} | {1e3 * m['train step']:.1f} | "
                         f"{m['DPM-Solver++ 10 steps, 64 images']:.2f} |")
    (RESULTS / "lapack.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
